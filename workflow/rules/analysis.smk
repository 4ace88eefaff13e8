# Section 4.1 (Figure 2): per-layer weight shift along iterative pruning with a full
# fine-tuning after every step.


rule weight_shift:
    input:
        model=PRETRAINED,
        data=data_ready(),
    output:
        grid.weight_shift_path("{model}"),
    log:
        "logs/{model}/weight_shift.log",
    benchmark:
        "results/benchmarks/{model}/weight_shift.tsv"
    params:
        model=model_of,
        data=data_dir,
        options=weight_shift_options(),
        device=device_options(),
    threads: THREADS
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick weight-shift --pretrained {input.model} --model {params.model} --data {params.data}"
        " --out {output} {params.options} {params.device} --threads {threads} > {log} 2>&1"
