# All of the workflow's Python: the experiment grid, input functions, command-line options
# built from the configuration, wildcard constraints and local rules. Rule files stay thin.
#
# Paths (every wildcard of a run is in its path):
#   results/{model}/pretrained.pt, pretrain.json, pretrain_epochs.csv
#   results/{model}/trace/seed{seed}.json                      freeze trace per (model, seed)
#   results/{model}/weight_shift.csv                           Section 4.1
#   results/{model}/runs/{method}-{lr}-r{ratio}-eta{eta}-theta{theta}/seed{seed}/
#       summary.json, steps.csv, pruned.pt                     one pruning run
#   results/summary/{group}/{runs,steps}.csv                   per experiment group
#   results/summary/{runs,steps,pretrain,weight_shift}.csv     everything
#   paper_figures/...                                          tables, figures, claims.md
#   logs/... and results/benchmarks/... mirror the output paths.

from pathlib import Path

GROUPS = ("fig3", "table1", "thresholds")
PAPER_MODELS = ("resnet110", "resnet152", "mobilenetv2")
RUN_DIR = "results/{model}/runs/{method}-{lr}-r{ratio}-eta{eta}-theta{theta}/seed{seed}"
RUN_NAME = "{model}/runs/{method}-{lr}-r{ratio}-eta{eta}-theta{theta}/seed{seed}"
DATA_FETCH_MARKER = f"{config['data']['root']}/cifar-10-batches-py/test_batch"
DATA_SYNTH_MARKER = f"{config['data']['root']}/cifar-10-batches-py/icepick_synthetic.json"
THREADS = config["threads"]


wildcard_constraints:
    model="|".join(config["models"]),
    method="icepick|baseline",
    lr="icepick|fixed",
    ratio=r"\d+(\.\d+)?",
    eta=r"\d+(\.\d+)?",
    theta=r"\d+(\.\d+)?",
    seed=r"\d+",
    group="|".join(GROUPS),


# Aggregation, tables and figures are quick: on a cluster they run where Snakemake runs.
localrules:
    all,
    data_fetch,
    data_synth,
    aggregate_group,
    aggregate_all,
    aggregate_pretrain,
    aggregate_weight_shift,
    fig2_weight_shift,
    fig3_accuracy,
    fig_thresholds,
    fig_lr_schedule,
    table1,
    table_time_savings,
    claims,


def num(x):
    """A number as it appears in paths and on command lines: 0.4, 0, 1.5 (no trailing zeros)."""
    return f"{float(x):g}"


def _check_config():
    """Checks the schema cannot express: known model names, a Table 1 ratio for every model,
    and Eq. 1's delta below its base (each would otherwise fail every job, one by one)."""
    try:
        from icepick.models import model_names
    except ImportError:  # icepick lives in a conda environment only: the jobs check the names
        model_names = None
    if model_names is not None:
        unknown = [m for m in config["models"] if m not in model_names()]
        if unknown:
            raise ValueError(
                f"models: unknown model(s) {', '.join(unknown)}; known: {', '.join(model_names())}"
            )
    missing = [m for m in config["models"] if m not in config["experiments"]["table1"]["ratios"]]
    if missing:
        raise ValueError(
            f"experiments.table1.ratios: no ratio for model(s) {', '.join(missing)}; "
            "add one per model (the paper: 0.6 for the ResNets, 0.4 for MobileNetV2)"
        )
    s = config["schedule"]
    if not s["delta"] < s["base"]:
        raise ValueError(
            f"schedule.delta: {s['delta']} must be below schedule.base ({s['base']}); "
            "Eq. 1's learning rate base - delta must stay positive"
        )


_check_config()


# ---------------------------------------------------------------- the experiment grid


def group_experiments(group, model):
    """The run configurations of one experiment group for one model, as wildcard dicts."""
    exp = config["experiments"]
    runs = []
    if group == "fig3":
        for ratio in exp["fig3"]["ratios"]:
            for eta in exp["fig3"]["etas"]:
                runs.append(("icepick", "icepick", ratio, eta, exp["fig3"]["theta"]))
            if exp["fig3"]["baseline"]:
                runs.append(("baseline", "fixed", ratio, 0, 0))
    elif group == "table1":
        ratio = exp["table1"]["ratios"][model]
        for eta in exp["table1"]["etas"]:
            for lr in exp["table1"]["lr_policies"]:
                runs.append(("icepick", lr, ratio, eta, exp["table1"]["theta"]))
    elif group == "thresholds":
        ratio = exp["table1"]["ratios"][model]
        for theta in exp["thresholds"]["thetas"]:
            runs.append(("icepick", exp["thresholds"]["lr_policy"], ratio, exp["thresholds"]["eta"], theta))
    else:
        raise ValueError(f"unknown experiment group {group!r}; one of {', '.join(GROUPS)}")
    keys = ("method", "lr", "ratio", "eta", "theta")
    out = [dict(zip(keys, (m, lr, num(r), num(e), num(t)))) for m, lr, r, e, t in runs]
    return list({tuple(d.values()): d for d in out}.values())  # deduplicated, in order


def group_runs(group, filename, models=None):
    """Paths of ``filename`` (summary.json, steps.csv) of every run of a group, every seed."""
    paths = []
    for model in models or config["models"]:
        for wc in group_experiments(group, model):
            for seed in config["seeds"]:
                paths.append(f"{RUN_DIR}/{filename}".format(model=model, seed=seed, **wc))
    return list(dict.fromkeys(paths))


def group_aggregate_inputs(wildcards):
    return {
        "summaries": group_runs(wildcards.group, "summary.json"),
        "steps": group_runs(wildcards.group, "steps.csv"),
    }


def per_model(pattern):
    """``pattern`` filled in for every configured model."""
    return [pattern.format(model=m) for m in config["models"]]


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
        "paper_figures/claims.md",
    ]


# ---------------------------------------------------------------- inputs of the jobs


def data_ready(wildcards=None):
    """The file that marks the data set as present, for the configured source."""
    return DATA_FETCH_MARKER if config["data"]["source"] == "cifar10" else DATA_SYNTH_MARKER


def data_dir(wildcards, input):
    """The data folder (holding cifar-10-batches-py/) of a job's data input."""
    return str(Path(input.data).parent.parent)


def data_dir_out(wildcards, output):
    """The data folder a data rule writes (the parent of cifar-10-batches-py/)."""
    return str(Path(output[0]).parent.parent)


def run_inputs(wildcards):
    """A run needs the pretrained model and the data, and the freeze trace when it freezes."""
    inputs = {"model": f"results/{wildcards.model}/pretrained.pt", "data": data_ready()}
    if float(wildcards.eta) > 0:
        inputs["trace"] = f"results/{wildcards.model}/trace/seed{wildcards.seed}.json"
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
            ("--no-progress", True),
        ]),
    ])


def pretrain_options():
    p = config["pretrain"]
    return _flags([
        ("--epochs", p["epochs"]),
        ("--seed", p["seed"]),
        ("--batch-size", p["batch_size"]),
        ("--schedule", p["schedule"]),
        ("--lr", p["lr"]),
        ("--weight-decay", p["weight_decay"]),
        ("--n-train", p["n_train"]),
    ])


def trace_options():
    return " ".join([
        decision_options(),
        finetune_options(),
        _flags([("--ratio", num(config["trace_ratio"])), ("--base-lr", config["schedule"]["base"])]),
    ])


def weight_shift_options():
    w = config["weight_shift"]
    return " ".join([
        finetune_options(),
        _flags([("--steps", w["steps"]), ("--ratio", num(w["ratio"])), ("--lr", w["lr"]), ("--seed", w["seed"])]),
    ])


def device_options():
    """--device, and --gpu-slots when the configuration limits the GPUs jobs share out."""
    return _flags([("--device", config["device"]), ("--gpu-slots", config["gpu_slots"] or None)])


def report_options():
    """--models (in the configured order) and --paper-role for the report commands."""
    roles = " ".join(f"--paper-role {m}={r}" for m, r in config["paper_role"].items())
    return f"--models {' '.join(config['models'])} {roles}".strip()
