# Run records -> tidy tables under results/summary/. One aggregate per experiment group, so a
# table or figure depends on its own runs only; then everything in one place.


rule aggregate_group:
    input:
        unpack(group_aggregate_inputs),
    output:
        runs="results/summary/{group}/runs.csv",
        steps="results/summary/{group}/steps.csv",
    log:
        "logs/summary/{group}.log",
    benchmark:
        "results/benchmarks/summary/{group}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick aggregate runs --group {wildcards.group} --summaries {input.summaries}"
        " --steps {input.steps} --runs-out {output.runs} --steps-out {output.steps} > {log} 2>&1"


rule aggregate_all:
    input:
        runs=expand("results/summary/{group}/runs.csv", group=ACTIVE_GROUPS),
        steps=expand("results/summary/{group}/steps.csv", group=ACTIVE_GROUPS),
    output:
        runs=report("results/summary/runs.csv", caption="../report/runs.rst", category="Data"),
        steps="results/summary/steps.csv",
    log:
        "logs/summary/all.log",
    benchmark:
        "results/benchmarks/summary/all.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick aggregate merge --runs {input.runs} --steps {input.steps}"
        " --runs-out {output.runs} --steps-out {output.steps} > {log} 2>&1"


rule aggregate_pretrain:
    input:
        per_model(grid.pretrain_summary_path("{model}")),
    output:
        report("results/summary/pretrain.csv", caption="../report/pretrain.rst", category="Data"),
    log:
        "logs/summary/pretrain.log",
    benchmark:
        "results/benchmarks/summary/pretrain.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick aggregate pretrain --summaries {input} --out {output} > {log} 2>&1"


rule aggregate_weight_shift:
    input:
        per_model(grid.weight_shift_path("{model}")),
    output:
        "results/summary/weight_shift.csv",
    log:
        "logs/summary/weight_shift.log",
    benchmark:
        "results/benchmarks/summary/weight_shift.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick aggregate weight-shift --inputs {input} --out {output} > {log} 2>&1"
