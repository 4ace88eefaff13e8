# The pruning experiments: the freeze trace (once per model, seed and ratio) and the runs, one
# per model x configuration x seed, every setting in the path (a criterion other than the
# paper's L1 as a suffix: rule run_criterion). A run takes config gpus_per_run GPUs on each of
# nodes_per_run nodes: `python` for one, torchrun (and srun across nodes) for more
# (icepick.workflow_config.run_launcher; README "Several GPUs").

# The launcher is a param: Snakemake inserts it as it is (its braces and $ are shell text).
RUN_LAUNCH = workflow_config.run_launcher(config["gpus_per_run"], config["nodes_per_run"])
RUN_RESOURCES = workflow_config.run_resources(config["gpus_per_run"], config["nodes_per_run"])


rule trace:
    input:
        model=PRETRAINED,
        data=data_ready(),
    output:
        grid.TRACE,
    log:
        "logs/{model}/trace/r{ratio}/seed{seed}.log",
    benchmark:
        "results/benchmarks/{model}/trace/r{ratio}/seed{seed}.tsv"
    params:
        model=model_of,
        data=data_dir,
        options=trace_options(),
        device=device_options(),
    threads: THREADS
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick trace --pretrained {input.model} --model {params.model} --data {params.data} --out {output}"
        " --ratio {wildcards.ratio} --seed {wildcards.seed} {params.options} {params.device} --threads {threads} > {log} 2>&1"


rule run:
    input:
        unpack(run_inputs),
    output:
        summary=f"{RUN_DIR}/summary.json",
        steps=f"{RUN_DIR}/steps.csv",
        model=f"{RUN_DIR}/pruned.pt",
    log:
        f"logs/{RUN_NAME}.log",
    benchmark:
        f"results/benchmarks/{RUN_NAME}.tsv"
    params:
        model=model_of,
        data=data_dir,
        trace=trace_option,
        options=run_params,
        device=device_options(),
        launch=RUN_LAUNCH,
    threads: THREADS
    resources:
        **RUN_RESOURCES,
    conda:
        "../../environment.yml"
    shell:
        "{params.launch} -m icepick run --pretrained {input.model} --model {params.model} --data {params.data} {params.trace}"
        " --method {wildcards.method} --lr-policy {wildcards.lr_policy} --ratio {wildcards.ratio}"
        " --eta {wildcards.eta} --theta {wildcards.theta} --seed {wildcards.seed}"
        " --summary-out {output.summary} --steps-out {output.steps} --model-out {output.model}"
        " {params.options} {params.device} --threads {threads} > {log} 2>&1"


# The same run under another pruning criterion (the criteria group): the criterion ends the
# configuration's folder name; the freeze trace is the same as the L1 run's.
use rule run as run_criterion with:
    output:
        summary=f"{RUN_DIR_CRITERION}/summary.json",
        steps=f"{RUN_DIR_CRITERION}/steps.csv",
        model=f"{RUN_DIR_CRITERION}/pruned.pt",
    log:
        f"logs/{RUN_NAME_CRITERION}.log",
    benchmark:
        f"results/benchmarks/{RUN_NAME_CRITERION}.tsv"
