# CIFAR-10 on disk: the real data set (config data.source: cifar10) or a generated set in
# the same format (synthetic). Only the one the configuration names is ever built.


rule data_fetch:
    output:
        DATA_FETCH_MARKER,
    log:
        "logs/data/fetch.log",
    benchmark:
        "results/benchmarks/data/fetch.tsv"
    params:
        root=data_dir_out,
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick data fetch --root {params.root} > {log} 2>&1"


rule data_synth:
    output:
        DATA_SYNTH_MARKER,
    log:
        "logs/data/synth.log",
    benchmark:
        "results/benchmarks/data/synth.tsv"
    params:
        root=data_dir_out,
        train=config["data"]["synthetic_train"],
        test=config["data"]["synthetic_test"],
        seed=config["data"]["synthetic_seed"],
        difficulty=config["data"]["synthetic_difficulty"],
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick data synth --out {params.root} --train {params.train}"
        " --test {params.test} --seed {params.seed} --difficulty {params.difficulty} > {log} 2>&1"
