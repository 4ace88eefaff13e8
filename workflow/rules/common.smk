# All of the workflow's Python: input functions, command-line options built from the
# configuration, wildcard constraints and local rules. Rule files stay thin. The experiment
# grid and the path scheme are icepick.grid's (torch-free: a dry run never imports torch);
# see its docstring for the layout of results/. logs/ and results/benchmarks/ mirror the
# output paths; paper_figures/ holds the tables, figures and claims.md. The {model} wildcard is
# a model's folder name (grid.model_slug: no colon, python:my_nets:make_net ->
# python-my_nets-make_net); the commands get the configured model itself (model_of).
# Every configuration error stops the workflow with one line naming the key (icepick.workflow_config).

import re

from icepick import grid, workflow_config
from icepick.grid import GROUPS, RUN_DIR, RUN_DIR_CRITERION, RUN_NAME, RUN_NAME_CRITERION, num, pretrained_path

DATA_IMPORT_MARKER = f"{config['data']['root']}/manifest.json"  # written last by `icepick data import`
DATA_SYNTH_MARKER = f"{config['data']['root']}/cifar-10-batches-py/icepick_synthetic.json"
THREADS = config["threads"]
PRETRAINED = pretrained_path("{model}")


def _errors_of(check):
    """The one-line message of a check's ConfigError (a ValueError), as a list; [] when it passes."""
    try:
        check()
    except ValueError as err:
        return [str(err)]
    return []


#: Folder name (the {model} wildcard) -> the configured model; two models sharing one fail here.
MODEL_OF = {}
workflow_config.exit_on_errors(_errors_of(lambda: MODEL_OF.update(grid.model_slugs(config["models"]))))


def model_of(wildcards):
    """The configured model of a job's {model} folder name: what `--model` of a command takes."""
    return MODEL_OF[wildcards.model]


wildcard_constraints:
    model="|".join(map(re.escape, MODEL_OF)),
    method="icepick|baseline|oneshot",
    lr_policy="icepick|fixed",
    ratio=r"\d+(\.\d+)?",
    eta=r"\d+(\.\d+)?",
    theta=r"-?\d+(\.\d+)?",  # negative: ICE-Pick without the threshold (the ablation)
    seed=r"\d+",
    group="|".join(GROUPS),
    criterion="|".join(c for c in grid.CRITERION_NAMES if c != grid.DEFAULT_CRITERION),  # l1 runs: no suffix


# Aggregation, tables and figures are quick: on a cluster they run where Snakemake runs.
localrules:
    all,
    data_import,
    data_synth,
    aggregate_group,
    aggregate_all,
    aggregate_pretrain,
    aggregate_weight_shift,
    fig2_weight_shift,
    fig3_accuracy,
    fig_thresholds,
    fig_lr_schedule,
    fig_ablation,
    fig_criteria,
    table1,
    table_time_savings,
    table_ablation,
    table_criteria,
    claims,


def _check_config():
    """Checks the schema cannot express: known model names, a Table 1 ratio for every model,
    and Eq. 1's delta below its base (each would otherwise fail every job, one by one)."""
    unknown = [m for m in config["models"] if not grid.is_model_name(m)]
    if unknown:
        raise ValueError(f"models: unknown model(s) {', '.join(unknown)}; known: {', '.join(grid.MODEL_NAMES)}, "
                         "torchvision:<builder>, python:<module>:<factory>")
    strangers = sorted(set(config.get("pretrained") or {}) - set(config["models"]))
    if strangers:
        raise ValueError(f"pretrained: {', '.join(strangers)} is not among models ({', '.join(config['models'])}); "
                         "give weights only for configured models")
    for model in config["models"]:
        grid.table1_ratio(config, model)  # a ratio for every model (its own, its paper role's, or default)
        for group in GROUPS:
            grid.group_runs(config, group, model)  # known ablation arms and criteria
    s = config["schedule"]
    if not s["delta"] < s["base"]:
        raise ValueError(
            f"schedule.delta: {s['delta']} must be below schedule.base ({s['base']}); "
            "Eq. 1's learning rate base - delta must stay positive"
        )


workflow_config.exit_on_errors(_errors_of(_check_config))


# ---------------------------------------------------------------- the experiment grid

ACTIVE_GROUPS = grid.active_groups(config)  # a group configured empty makes no aggregate, figure or table
#: The figure and table of each group that has its own (those of the paper's groups are always made).
GROUP_OUTPUTS = {
    "ablation": ["paper_figures/fig_ablation.pdf", "paper_figures/table_ablation.tex"],
    "criteria": ["paper_figures/fig_criteria.pdf", "paper_figures/table_criteria.tex"],
}


def group_aggregate_inputs(wildcards):
    """Every run record of one experiment group (every model and seed)."""
    if wildcards.group not in ACTIVE_GROUPS:
        raise ValueError(
            f"experiments.{wildcards.group}: the group has no runs in this configuration; "
            "configure its runs (config/config.yaml shows how) to make its aggregate, figure or table"
        )
    return {
        "summaries": grid.group_run_files(config, wildcards.group, "summary.json"),
        "steps": grid.group_run_files(config, wildcards.group, "steps.csv"),
    }


def per_model(pattern):
    """``pattern`` filled in for every configured model (its folder name)."""
    return [pattern.format(model=grid.model_slug(m)) for m in config["models"]]


def all_targets():
    """Everything the paper reports: `rule all`'s inputs."""
    return [
        "results/summary/runs.csv",
        "results/summary/steps.csv",
        "results/summary/pretrain.csv",
        "results/summary/weight_shift.csv",
        "paper_figures/table1.tex",
        "paper_figures/table_time_savings.tex",
        "paper_figures/fig2_weight_shift.pdf",
        "paper_figures/fig3_accuracy.pdf",
        "paper_figures/fig_thresholds.pdf",
        "paper_figures/fig_lr_schedule.pdf",
        *[path for group in ACTIVE_GROUPS for path in GROUP_OUTPUTS.get(group, [])],
        "paper_figures/claims.md",
        *grid.tune_targets(config),  # icepick tune (config tune:, off by default)
    ]


# ---------------------------------------------------------------- inputs of the jobs


def data_ready(wildcards=None):
    """The file that marks the data set as present, for the configured source: an import's
    manifest.json, or the generated set's marker."""
    return DATA_SYNTH_MARKER if config["data"]["source"] == "synthetic" else DATA_IMPORT_MARKER


def _data_root(marker):
    """The data folder of a data marker (manifest.json beside cifar-10-batches-py/, the
    generated set's marker inside it)."""
    path = Path(marker)
    return str(path.parent if path.name == "manifest.json" else path.parent.parent)


def data_dir(wildcards, input):
    """The data folder (holding cifar-10-batches-py/) of a job's data input."""
    return _data_root(input.data)


def data_dir_out(wildcards, output):
    """The data folder a data rule writes (holding cifar-10-batches-py/)."""
    return _data_root(output[0])


def data_import_options():
    """Options of `icepick data import` from the configuration: --path, and the split and flip
    settings where the source takes them."""
    d = config["data"]
    stratified = d["source"] in ("digits", "imagefolder")
    subset = d.get("train_fraction") if d["source"] in ("imagenet", "tinyimagenet") else None
    return _flags([
        ("--path", d["path"]),
        ("--seed", d["split_seed"] if stratified or subset else None),
        ("--train-fraction", subset),
        ("--test-fraction", d["test_fraction"] if stratified else None),
        ("--flip" if d["flip"] else "--no-flip", d["flip"] is not None),
        ("--size", d.get("size")),
        ("--channels", d.get("channels")),
        ("--fit", d.get("fit")),
    ])


def _check_data_config():
    """data.path where the source needs it, and only where it takes one."""
    d = config["data"]
    if d["source"] == "imagefolder" and not d["path"]:
        raise ValueError(
            "data.path: source imagefolder needs the image folder (one sub-folder of images per class)"
        )
    if d["source"] in ("imagenet", "tinyimagenet") and not d["path"]:
        raise ValueError(f"data.path: source {d['source']} needs the folder of the official files (nothing is "
                         f"downloaded): {workflow_config.PATH_SOURCES[d['source']]}")
    if d.get("train_fraction") is not None and d["source"] not in ("imagenet", "tinyimagenet"):
        raise ValueError(f"data.train_fraction: is for imagenet and tinyimagenet, not {d['source']}; set it to null")
    if d["source"] in ("digits", "synthetic") and d["path"]:
        raise ValueError(f"data.path: source {d['source']} takes no path; set data.path: null")


workflow_config.exit_on_errors(_errors_of(_check_data_config))
# What fails only when a job runs, found now: a python: model's module or factory, a
# torchvision: builder, data.path and the pretrained: weights files (one line each).
workflow_config.exit_on_errors(workflow_config.model_errors(config["models"]) + workflow_config.path_errors(config))


def run_inputs(wildcards):
    """A run needs the pretrained model and the data, and the freeze trace when it freezes."""
    inputs = {"model": pretrained_path(wildcards.model), "data": data_ready()}
    if float(wildcards.eta) > 0:
        inputs["trace"] = grid.trace_path(wildcards.model, wildcards.ratio, wildcards.seed, config["trace_ratio"])
    return inputs


def trace_option(wildcards, input):
    return f"--trace {input.trace}" if float(wildcards.eta) > 0 else ""


# ---------------------------------------------------------------- options from the config


def _flags(pairs):
    """'--key value' for every pair whose value is set; True booleans become bare flags."""
    out = []
    for flag, value in pairs:
        if value is None or value is False:
            continue
        out.append(flag if value is True else f"{flag} {value}")
    return " ".join(out)


def decision_options():
    d = config["decision"]
    return _flags([("--decision-split", d["split"]), ("--val-size", d["val_size"])])


def finetune_options():
    f = config["finetune"]
    return _flags([
        ("--batch-size", f["batch_size"]),
        ("--max-batches", f["max_batches"]),
        ("--kd-temperature", f["kd_temperature"]),
        ("--kd-weight", f["kd_weight"]),
        ("--precision", config["precision"]),
    ])


def run_params(wildcards):
    """Options of `icepick run` from the configuration, and --criterion for a run under a
    criterion other than the paper's (the paper's runs keep their command line as it was)."""
    criterion = getattr(wildcards, "criterion", None)
    return run_options() + (f" --criterion {criterion}" if criterion else "")


def run_options():
    """Options of `icepick run` that come from the configuration, not from the path."""
    f, s = config["finetune"], config["schedule"]
    return " ".join([
        decision_options(),
        finetune_options(),
        _flags([
            ("--base", s["base"]),
            ("--delta", s["delta"]),
            ("--p", s["p"]),
            ("--beta", s["beta"]),
            ("--lr-shape", f["lr_shape"]),
            ("--early-halt", f["early_halt"]),
            ("--max-steps", f["max_steps"]),
            ("--freeze-bn-stats", f["freeze_bn_stats"]),
            ("--freeze-layers", f["freeze_layers"]),
            ("--no-eval-cache", not config["eval_cache"]),  # only when off: the default leaves params as they were
            ("--no-progress", True),
        ]),
    ])


def own_weights(model):
    """The weights a model of the configuration comes with (`pretrained:`), or None."""
    return (config.get("pretrained") or {}).get(model)


def pretrain_inputs(wildcards):
    """The data, and a model's own weights file where it has one (torchvision's named weights are no file)."""
    inputs = {"data": data_ready()}
    weights = own_weights(model_of(wildcards))
    if weights is not None and grid.is_weights_file(weights):
        inputs["weights"] = weights
    return inputs


def pretrain_options(model=None):
    """Options of `icepick pretrain`: the recipe, or for a model with weights of its own `--init WEIGHTS --epochs 0`."""
    weights = own_weights(model) if model is not None else None
    if weights is not None:
        return f"--init {weights} --epochs 0"
    p = config["pretrain"]
    return _flags([
        ("--epochs", p["epochs"]),
        ("--seed", p["seed"]),
        ("--batch-size", p["batch_size"]),
        ("--schedule", p["schedule"]),
        ("--lr", p["lr"]),
        ("--weight-decay", p["weight_decay"]),
        ("--n-train", p["n_train"]),
        ("--warmup", p["warmup"]),
        ("--warmup-factor", p["warmup_factor"]),
        ("--warmup-error", p["warmup_error"]),
    ])


def trace_options():
    """Options of `icepick trace` from the configuration (its ratio comes from the path)."""
    return " ".join([
        decision_options(),
        finetune_options(),
        _flags([("--base-lr", config["schedule"]["base"])]),
    ])


def weight_shift_options():
    w = config["weight_shift"]
    return " ".join([
        finetune_options(),
        _flags([("--steps", w["steps"]), ("--ratio", num(w["ratio"])), ("--lr", w["lr"]), ("--seed", w["seed"])]),
    ])


def device_options():
    """--device; --gpu-slots when the configuration limits the GPUs jobs share out; --jobs-per-gpu
    when it lets several jobs share a GPU (other than 1, so the default leaves the command line,
    and Snakemake's params rerun trigger, as they were; 1 leaves it to $ICEPICK_JOBS_PER_GPU)."""
    return _flags([
        ("--device", config["device"]),
        ("--gpu-slots", config["gpu_slots"] or None),
        ("--jobs-per-gpu", config["jobs_per_gpu"] if config["jobs_per_gpu"] != 1 else None),
    ])


def report_options():
    """--models (in the configured order) and --paper-role for the report commands."""
    roles = " ".join(f"--paper-role {m}={r}" for m, r in config["paper_role"].items())
    return f"--models {' '.join(config['models'])} {roles}".strip()


def tune_options():
    """Options of `icepick tune` from the configuration (`tune:`; the run settings that are not
    tuned from decision, finetune and eval_cache, as for `icepick run`; its ratio and seed come
    from the path). The same for the study and the tuned run, so both name one study."""
    t, f = config["tune"], config["finetune"]
    return " ".join([
        decision_options(),
        finetune_options(),
        _flags([
            ("--n-trials", t["n_trials"]),
            ("--subset", t["subset"]),
            ("--subset-seed", t["subset_seed"]),
            ("--objective", t["objective"]),
            ("--cost", t["cost"]),
            ("--max-drop", t["max_drop"]),
            ("--sampler", t["sampler"]),
            ("--sampler-seed", t["sampler_seed"]),
            ("--pruner", t["pruner"]),
            ("--workers", t["workers"] if t["workers"] != 1 else None),
            ("--lr-shape", f["lr_shape"]),
            ("--early-halt", f["early_halt"]),
            ("--max-steps", f["max_steps"]),
            ("--freeze-bn-stats", f["freeze_bn_stats"]),
            ("--freeze-layers", f["freeze_layers"]),
            ("--no-eval-cache", not config["eval_cache"]),
            ("--no-progress", True),
        ]),
    ])
