# ICE-Pick: Iterative Cost-Efficient Pruning for DNNs (Hu, Gibson, Cano; ICML 2023 workshop),
# reproduced end to end: data -> pretraining -> freeze traces -> pruning runs -> tables,
# figures and claims.md. Every step is `python -m icepick ...`; the logic is in icepick/.
#
#   snakemake                                    the paper (config/config.yaml, profiles/default)
#   snakemake paper_figures/table1.tex           one table and only what it needs
#   snakemake --workflow-profile profiles/smoke  the small CPU configuration (config/smoke.yaml)
#   snakemake --report report.html               every figure and table with its caption
#
# Rerun one model and everything downstream of it (and nothing of the other models):
#   snakemake --forcerun results/resnet110/pretrained.pt
# See results/README.md for the layout of the outputs.

import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir)))  # icepick/ beside the Snakefile, installed or not
from icepick import workflow_config


configfile: "config/config.yaml"


# A mistake in the configuration stops here with one line naming the key and what is allowed
# (a misspelt key with the nearest valid one), before `validate`, which fills in the defaults.
workflow_config.exit_on_errors(
    workflow_config.schema_errors(
        config, workflow_config.load_schema(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
    )
)


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/tune.smk"


rule all:
    input:
        all_targets(),
    default_target: True
