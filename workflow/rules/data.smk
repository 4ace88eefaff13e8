# The data set on disk, only the one the configuration names: an import (data.source cifar10,
# cifar100, digits or imagefolder; `icepick data import` writes the images in the CIFAR-10
# on-disk format plus manifest.json, last) or the generated CIFAR-format set (synthetic).


rule data_import:
    output:
        DATA_IMPORT_MARKER,
    log:
        "logs/data/import.log",
    benchmark:
        "results/benchmarks/data/import.tsv"
    params:
        root=data_dir_out,
        source=config["data"]["source"],
        options=data_import_options(),
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick data import --source {params.source} --out {params.root} {params.options}"
        " > {log} 2>&1"


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
