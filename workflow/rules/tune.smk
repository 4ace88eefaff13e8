# Beyond the paper (config `tune:`, off by default): choose ICE-Pick's settings per model with
# an Optuna study on a subset of the data (icepick tune; docs/tuning.md), then run the chosen
# setting on all the data. The study (rule tune) writes best.json; rule tuned_run reads it and
# runs that setting (the same command with --final: the finished study runs no trial again).
# A killed study resumes (its SQLite storage is in the study folder).


rule tune:
    input:
        model=PRETRAINED,
        data=data_ready(),
    output:
        best=f"{grid.TUNE_DIR}/best.json",
        trials=f"{grid.TUNE_DIR}/trials.csv",
    log:
        f"logs/{grid.TUNE_NAME}.log",
    benchmark:
        f"results/benchmarks/{grid.TUNE_NAME}.tsv"
    params:
        model=model_of,
        data=data_dir,
        out=lambda wildcards, output: str(Path(output.best).parent),
        options=tune_options(),
        device=device_options(),
    threads: THREADS
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick tune --pretrained {input.model} --model {params.model} --data {params.data}"
        " --out {params.out} --ratio {wildcards.ratio} --seed {wildcards.seed} {params.options}"
        " {params.device} --threads {threads} > {log} 2>&1"


rule tuned_run:
    input:
        best=f"{grid.TUNE_DIR}/best.json",
        model=PRETRAINED,
        data=data_ready(),
    output:
        tuned=f"{grid.TUNE_DIR}/final/tuned.json",
        summary=f"{grid.TUNE_DIR}/final/summary.json",
        steps=f"{grid.TUNE_DIR}/final/steps.csv",
        model=f"{grid.TUNE_DIR}/final/pruned.pt",
    log:
        f"logs/{grid.TUNE_NAME}-final.log",
    benchmark:
        f"results/benchmarks/{grid.TUNE_NAME}-final.tsv"
    params:
        model=model_of,
        data=data_dir,
        out=lambda wildcards, input: str(Path(input.best).parent),
        options=tune_options(),
        device=device_options(),
    threads: THREADS
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick tune --pretrained {input.model} --model {params.model} --data {params.data}"
        " --out {params.out} --ratio {wildcards.ratio} --seed {wildcards.seed} {params.options} --final"
        " {params.device} --threads {threads} > {log} 2>&1"
