# Pretraining from scratch with the published recipes: one model per name, shared by every
# seed, trace and run of that model.


rule pretrain:
    input:
        data=data_ready(),
    output:
        model=PRETRAINED,
        epochs=grid.pretrain_epochs_path("{model}"),
        summary=grid.pretrain_summary_path("{model}"),
    log:
        "logs/{model}/pretrain.log",
    benchmark:
        "results/benchmarks/{model}/pretrain.tsv"
    params:
        data=data_dir,
        options=pretrain_options(),
        device=device_options(),
    threads: THREADS
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick pretrain --model {wildcards.model} --data {params.data}"
        " --out {output.model} --epochs-csv {output.epochs} --summary {output.summary}"
        " {params.options} {params.device} --threads {threads} > {log} 2>&1"
