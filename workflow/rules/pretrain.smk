# Pretraining from scratch with the published recipes: one model per name, shared by every
# seed, trace and run of that model. A model with weights of its own (`pretrained: {model:
# weights}`) is not trained: its weights become its pretrained.pt (`--init WEIGHTS --epochs 0`).


rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        model=PRETRAINED,
        epochs=grid.pretrain_epochs_path("{model}"),
        summary=grid.pretrain_summary_path("{model}"),
    log:
        "logs/{model}/pretrain.log",
    benchmark:
        "results/benchmarks/{model}/pretrain.tsv"
    params:
        model=model_of,
        data=data_dir,
        options=lambda wildcards: pretrain_options(model_of(wildcards)),
        device=device_options(),
    threads: THREADS
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick pretrain --model {params.model} --data {params.data}"
        " --out {output.model} --epochs-csv {output.epochs} --summary {output.summary}"
        " {params.options} {params.device} --threads {threads} > {log} 2>&1"
