"""The experiment grid and the path scheme: which runs every experiment group needs, and where
every artifact of the workflow lives.

One place for both, read by the workflow (``workflow/rules/common.smk``), ``icepick cost`` and
the reports. It imports neither torch nor pandas, so that ``snakemake -n`` and the workflow's
configuration checks never pay for them (a test holds this).

Paths (every wildcard of a run is in its path; ``{model}`` is :func:`model_slug`'s folder name,
which holds no colon: ``resnet110``, ``torchvision-resnet18``, ``python-my_nets-make_net``)::

    results/{model}/pretrained.pt, pretrain.json, pretrain_epochs.csv
    results/{model}/trace/r{ratio}/seed{seed}.json                freeze trace
    results/{model}/weight_shift.csv                               Section 4.1
    results/{model}/runs/{method}-{lr_policy}-r{ratio}-eta{eta}-theta{theta}/seed{seed}/
        summary.json, steps.csv, pruned.pt                         one pruning run (criterion l1)
    results/{model}/runs/{method}-{lr_policy}-r{ratio}-eta{eta}-theta{theta}-{criterion}/seed{seed}/
                                                                   the same under another criterion
    results/{model}/tune/r{ratio}/seed{seed}/best.json, trials.csv, study.db, trials/, *.png
                                                                   icepick tune (config tune:, off by default)
    results/{model}/tune/r{ratio}/seed{seed}/final/tuned.json, summary.json, steps.csv, pruned.pt
                                                                   the tuned setting run on all the data
    results/summary/{group}/{runs,steps}.csv                       one experiment group
    results/summary/{runs,steps,pretrain,weight_shift}.csv         everything

Example::

    >>> cfg = {"experiments": {"fig3": {"ratios": [0.4], "etas": [0, 0.3], "theta": 1.5, "baseline": True}}}
    >>> [spec.experiment for spec in group_runs(cfg, "fig3", "resnet110")]
    ['icepick-icepick-r0.4-eta0-theta1.5', 'icepick-icepick-r0.4-eta0.3-theta1.5', 'baseline-fixed-r0.4-eta0-theta0']
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GROUPS",
    "ABLATION_ARMS",
    "DEFAULT_CRITERION",
    "CRITERION_NAMES",
    "NO_THRESHOLD",
    "PAPER_MODELS",
    "MODEL_NAMES",
    "SPEC_PREFIXES",
    "is_model_spec",
    "is_model_name",
    "is_weights_file",
    "model_slug",
    "model_slugs",
    "model_spec",
    "RunSpec",
    "num",
    "experiment_name",
    "group_runs",
    "active_groups",
    "ablation_arm",
    "table1_ratio",
    "model_runs",
    "trace_ratios",
    "RUN_DIR",
    "RUN_NAME",
    "RUN_DIR_CRITERION",
    "RUN_NAME_CRITERION",
    "TRACE",
    "pretrained_path",
    "pretrain_summary_path",
    "pretrain_epochs_path",
    "weight_shift_path",
    "trace_path",
    "run_path",
    "group_run_files",
    "group_summary_path",
    "TUNE_DIR",
    "TUNE_NAME",
    "tune_dir",
    "tune_targets",
]

#: The experiment groups: Figure 3 and the time savings; Table 1; the threshold sweep; the
#: ablation of ICE-Pick's parts (with the one-shot baseline); the pruning criteria.
GROUPS = ("fig3", "table1", "thresholds", "ablation", "criteria")
#: The arms of the ablation besides ICE-Pick itself, in display order: ICE-Pick without the
#: threshold (fine-tune at every step), without freezing (eta 0), without Eq. 1 (the fixed
#: rate), the iterative baseline, and the one-shot baseline.
ABLATION_ARMS = ("no_threshold", "no_freezing", "fixed_lr", "baseline", "oneshot")
#: A threshold every accuracy drop reaches: ICE-Pick fine-tunes (a full fine-tuning) at every step.
NO_THRESHOLD = -100.0
#: The paper's pruning criterion; runs under it keep the paths without a criterion suffix.
DEFAULT_CRITERION = "l1"
#: The criteria of ``icepick.criteria.CRITERIA`` (a test holds the two equal), here so that
#: configuration checks need no torch.
CRITERION_NAMES = ("l1", "l2", "random", "bn_scale", "taylor", "fpgm", "mean_activation", "entropy")
#: The paper's three models.
PAPER_MODELS = ("resnet110", "resnet152", "mobilenetv2")
#: The names of the model registry (``icepick.models.MODELS``; a test holds the two equal),
#: here so that configuration checks need no torch.
MODEL_NAMES = (
    "mobilenetv2", "mobilenetv2_w025", "mobilenetv2_w050", "resnet110", "resnet110_w050", "resnet14",
    "resnet152", "resnet152_w050", "resnet20", "resnet32", "resnet56", "resnet56_w050",
)

#: Prefixes of the model specs: models from outside the registry (``icepick.models``).
SPEC_PREFIXES = ("torchvision:", "python:")


def is_model_spec(name: str) -> bool:
    """Whether ``name`` is a model spec (``torchvision:<builder>``, ``python:<module>:<factory>``)."""
    return isinstance(name, str) and name.startswith(SPEC_PREFIXES)


def is_weights_file(weights: str) -> bool:
    """Whether a ``pretrained:`` entry names a file (a path), not torchvision's named weights
    (``IMAGENET1K_V1``, ``DEFAULT``: upper-case words without a path separator or suffix)."""
    return "/" in weights or "." in weights or not weights.replace("_", "").isalnum() or not weights.isupper()


def is_model_name(name: str) -> bool:
    """A registry name or a well-formed model spec (whether the spec builds is known only by building it)."""
    if not is_model_spec(name):
        return name in MODEL_NAMES
    kind, _, rest = name.partition(":")
    parts = rest.split(":")
    return all(parts) and len(parts) == (1 if kind == "torchvision" else 2)


def model_slug(model: str) -> str:
    """The folder name of ``model`` under results/, logs/ and results/benchmarks/, and the
    workflow's ``{model}`` wildcard: a registry name as it is (``resnet110``), a spec with its
    colons as dashes (``python:my_nets:make_net`` -> ``python-my_nets-make_net``,
    ``torchvision:resnet18`` -> ``torchvision-resnet18``): colons in paths break scp, macOS and
    Windows tools. A slug is its own slug. One-to-one over the names the workflow's schema
    allows (no name there holds a dash); :func:`model_slugs` checks a configuration's models."""
    return model.replace(":", "-")


def model_slugs(models: Iterable[str]) -> dict[str, str]:
    """``{slug: model}`` for the configured ``models``, in order. Raises ConfigError (one line)
    where two of them would share a folder, also where their slugs differ only in case (one
    folder on macOS and Windows)."""
    from icepick.config import ConfigError

    out: dict[str, str] = {}
    folded: dict[str, str] = {}
    for model in models:
        slug = model_slug(model)
        other = folded.get(slug.casefold())
        if other is not None and other != model:
            raise ConfigError(
                f"models: {other} and {model} would share the folder results/{slug}/ (folder names hold no colon, "
                "and ignore case on macOS and Windows); keep one of them, or give one of them another name")
        folded[slug.casefold()] = model
        out[slug] = model
    return out


def model_spec(slug: str, models: Iterable[str]) -> str:
    """The model of ``models`` whose folder name (:func:`model_slug`) is ``slug``: what a command's
    ``--model`` takes. Raises ConfigError naming the configured models when none is."""
    from icepick.config import ConfigError

    models = list(models)
    for model in models:
        if model_slug(model) == slug:
            return model
    raise ConfigError(f"models: no configured model has the folder name {slug}; configured: {', '.join(models)}")


RUN_DIR = "results/{model}/runs/{method}-{lr_policy}-r{ratio}-eta{eta}-theta{theta}/seed{seed}"
RUN_NAME = "{model}/runs/{method}-{lr_policy}-r{ratio}-eta{eta}-theta{theta}/seed{seed}"  # logs/, benchmarks/
RUN_DIR_CRITERION = "results/{model}/runs/{method}-{lr_policy}-r{ratio}-eta{eta}-theta{theta}-{criterion}/seed{seed}"
RUN_NAME_CRITERION = "{model}/runs/{method}-{lr_policy}-r{ratio}-eta{eta}-theta{theta}-{criterion}/seed{seed}"
TRACE = "results/{model}/trace/r{ratio}/seed{seed}.json"


def num(x: Any) -> str:
    """A number as it appears in paths and labels: 0.4, 0, 1.5 ('na' for a missing value)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "na"
    return f"{float(x):g}"


def experiment_name(method: str, lr_policy: str, ratio: float, eta: float, theta: float,
                    criterion: str = DEFAULT_CRITERION) -> str:
    """The configuration part of a run's path: ``icepick-icepick-r0.4-eta0.3-theta1.5``, with
    ``-{criterion}`` appended under any criterion but the paper's (``...-theta1.5-fpgm``)."""
    suffix = "" if criterion == DEFAULT_CRITERION else f"-{criterion}"
    return f"{method}-{lr_policy}-r{num(ratio)}-eta{num(eta)}-theta{num(theta)}{suffix}"


@dataclass(frozen=True)
class RunSpec:
    """One pruning configuration of the grid; every seed runs it."""

    model: str
    method: str  # 'icepick' | 'baseline' | 'oneshot'
    lr_policy: str  # 'icepick' (Eq. 1) | 'fixed'
    ratio: float
    eta: float
    theta: float
    criterion: str = DEFAULT_CRITERION

    @property
    def experiment(self) -> str:
        """The configuration part of its path."""
        return experiment_name(self.method, self.lr_policy, self.ratio, self.eta, self.theta, self.criterion)

    def wildcards(self, seed: int) -> dict[str, str]:
        """The workflow's wildcards of this run at ``seed`` (``model`` as its folder name,
        :func:`model_slug`; ``criterion`` only under a criterion other than the paper's: the
        paper's runs keep the paths without it)."""
        out = {"model": model_slug(self.model), "method": self.method, "lr_policy": self.lr_policy, "ratio": num(self.ratio),
               "eta": num(self.eta), "theta": num(self.theta), "seed": str(seed)}
        if self.criterion != DEFAULT_CRITERION:
            out["criterion"] = self.criterion
        return out


def group_runs(config: Mapping[str, Any], group: str, model: str) -> list[RunSpec]:
    """The configurations of one experiment group for one model, deduplicated, in order.

    ``config`` is the workflow's configuration (config/config.yaml's keys; only
    ``experiments`` is read).
    """
    from icepick.config import ConfigError

    exp = config["experiments"]
    runs: list[RunSpec] = []
    if group == "fig3":
        f = exp["fig3"]
        for ratio in f["ratios"]:
            runs += [RunSpec(model, "icepick", "icepick", float(ratio), float(eta), float(f["theta"])) for eta in f["etas"]]
            if f.get("baseline", True):
                runs.append(RunSpec(model, "baseline", "fixed", float(ratio), 0.0, 0.0))
    elif group == "table1":
        t = exp["table1"]
        ratio = table1_ratio(config, model)
        runs += [RunSpec(model, "icepick", lr, ratio, float(eta), float(t["theta"]))
                 for eta in t["etas"] for lr in t["lr_policies"]]
    elif group == "thresholds":
        t = exp["thresholds"]
        ratio = table1_ratio(config, model)  # at the model's Table 1 ratio
        runs += [RunSpec(model, "icepick", t["lr_policy"], ratio, float(t["eta"]), float(theta)) for theta in t["thetas"]]
    elif group == "ablation":  # a configuration without the section runs none of it
        a = exp.get("ablation") or {"arms": []}
        runs += _ablation_runs(a, model, table1_ratio(config, model) if a["arms"] else 0.0)
    elif group == "criteria":
        c = exp.get("criteria") or {"criteria": []}
        runs += _criteria_runs(c, model, table1_ratio(config, model) if c["criteria"] else 0.0)
    else:
        raise ConfigError(f"group: {group!r} is not an experiment group; one of {', '.join(GROUPS)}")
    return list(dict.fromkeys(runs))


def _ablation_runs(a: Mapping[str, Any], model: str, ratio: float) -> list[RunSpec]:
    """ICE-Pick (lr Eq. 1, ``a['eta']``, ``a['theta']``) and each of ``a['arms']`` at ``ratio``;
    nothing when no arm is listed."""
    from icepick.config import ConfigError

    unknown = [arm for arm in a["arms"] if arm not in ABLATION_ARMS]
    if unknown:
        raise ConfigError(f"experiments.ablation.arms: unknown arm(s) {', '.join(map(str, unknown))}; "
                          f"choose from {', '.join(ABLATION_ARMS)}")
    if not a["arms"]:
        return []
    eta, theta = float(a["eta"]), float(a["theta"])
    arms = {
        "no_threshold": RunSpec(model, "icepick", "icepick", ratio, eta, NO_THRESHOLD),
        "no_freezing": RunSpec(model, "icepick", "icepick", ratio, 0.0, theta),
        "fixed_lr": RunSpec(model, "icepick", "fixed", ratio, eta, theta),
        "baseline": RunSpec(model, "baseline", "fixed", ratio, 0.0, 0.0),
        "oneshot": RunSpec(model, "oneshot", "fixed", ratio, 0.0, 0.0),
    }
    return [RunSpec(model, "icepick", "icepick", ratio, eta, theta)] + [arms[arm] for arm in ABLATION_ARMS if arm in a["arms"]]


def _criteria_runs(c: Mapping[str, Any], model: str, ratio: float) -> list[RunSpec]:
    """ICE-Pick (lr Eq. 1, ``c['eta']``, ``c['theta']``) and the baseline at ``ratio`` under each
    criterion of ``c['criteria']``; nothing when none is listed."""
    from icepick.config import ConfigError

    unknown = [name for name in c["criteria"] if name not in CRITERION_NAMES]
    if unknown:
        raise ConfigError(f"experiments.criteria.criteria: unknown criterion(s) {', '.join(map(str, unknown))}; "
                          f"choose from {', '.join(CRITERION_NAMES)}")
    runs = []
    for name in c["criteria"]:
        runs.append(RunSpec(model, "icepick", "icepick", ratio, float(c["eta"]), float(c["theta"]), name))
        runs.append(RunSpec(model, "baseline", "fixed", ratio, 0.0, 0.0, name))
    return runs


def ablation_arm(method: str, lr_policy: str, eta: float, theta: float) -> str:
    """Which arm of the ablation a run is: 'oneshot', 'baseline', 'no_threshold' (a negative
    theta), 'fixed_lr', 'no_freezing' (eta 0), else 'icepick'."""
    if method in ("oneshot", "baseline"):
        return method
    if float(theta) < 0:
        return "no_threshold"
    if lr_policy == "fixed":
        return "fixed_lr"
    return "no_freezing" if float(eta) == 0 else "icepick"


def active_groups(config: Mapping[str, Any], models: Sequence[str] | None = None) -> list[str]:
    """The groups with at least one run (a group configured empty, such as an ablation with no
    arms, makes no aggregate, figure or table)."""
    return [g for g in GROUPS if any(group_runs(config, g, m) for m in models or config["models"])]


def table1_ratio(config: Mapping[str, Any], model: str) -> float:
    """The Table 1 (and thresholds) ratio of ``model``: its own entry in
    ``experiments.table1.ratios``, else that of the paper's model it stands for (``paper_role``),
    else the ``default`` entry. Raises ConfigError naming what to add."""
    from icepick.config import ConfigError

    ratios = config["experiments"]["table1"]["ratios"]
    for key in (model, (config.get("paper_role") or {}).get(model), "default"):
        if key is not None and key in ratios:
            return float(ratios[key])
    raise ConfigError(
        f"experiments.table1.ratios: no ratio for model {model}; add one for it, a 'default' entry, or a "
        f"paper_role naming the paper's model it stands for (the paper: 0.6 for the ResNets, 0.4 for MobileNetV2)"
    )


def model_runs(config: Mapping[str, Any], model: str, groups: Iterable[str] = GROUPS) -> list[RunSpec]:
    """Every distinct configuration of ``model`` over ``groups`` (a run shared by groups once)."""
    return list(dict.fromkeys(spec for group in groups for spec in group_runs(config, group, model)))


def trace_ratios(config: Mapping[str, Any], model: str) -> list[float]:
    """The ratios of ``model``'s freeze traces: one per ratio with a freezing run, or the fixed
    ``trace_ratio`` when the configuration sets one."""
    freezing = sorted({spec.ratio for spec in model_runs(config, model) if spec.eta > 0})
    fixed = config.get("trace_ratio")
    return [float(fixed)] if freezing and fixed is not None else freezing


# ---------------------------------------------------------------- paths


def pretrained_path(model: str) -> str:
    """The pretrained model file of ``model``."""
    return f"results/{model_slug(model)}/pretrained.pt"


def pretrain_summary_path(model: str) -> str:
    """The pretraining summary (JSON) of ``model``."""
    return f"results/{model_slug(model)}/pretrain.json"


def pretrain_epochs_path(model: str) -> str:
    """The per-epoch pretraining CSV of ``model``."""
    return f"results/{model_slug(model)}/pretrain_epochs.csv"


def weight_shift_path(model: str) -> str:
    """Section 4.1's weight-shift table of ``model``."""
    return f"results/{model_slug(model)}/weight_shift.csv"


def trace_path(model: str, ratio: float | str, seed: int | str, trace_ratio: float | None = None) -> str:
    """The freeze trace a run of ``ratio`` uses: made at its own ratio, or at ``trace_ratio`` when set."""
    return TRACE.format(model=model_slug(model), ratio=num(ratio if trace_ratio is None else trace_ratio), seed=seed)


def run_path(spec: RunSpec, seed: int, filename: str) -> str:
    """A file (summary.json, steps.csv, pruned.pt) of the run of ``spec`` at ``seed``."""
    pattern = RUN_DIR if spec.criterion == DEFAULT_CRITERION else RUN_DIR_CRITERION
    return f"{pattern}/{filename}".format(**spec.wildcards(seed))


def group_run_files(config: Mapping[str, Any], group: str, filename: str, models: Sequence[str] | None = None) -> list[str]:
    """``filename`` of every run of ``group``, every model and seed of the configuration."""
    paths = [run_path(spec, seed, filename)
             for model in models or config["models"]
             for spec in group_runs(config, group, model)
             for seed in config["seeds"]]
    return list(dict.fromkeys(paths))


def group_summary_path(group: str | None, table: str) -> str:
    """An aggregate: ``results/summary/{group}/{table}.csv``, or everything's when group is None."""
    return f"results/summary/{table}.csv" if group is None else f"results/summary/{group}/{table}.csv"


TUNE_DIR = "results/{model}/tune/r{ratio}/seed{seed}"  # icepick tune's study folder
TUNE_NAME = "{model}/tune/r{ratio}/seed{seed}"  # logs/, benchmarks/


def tune_dir(model: str, ratio: float | str, seed: int | str) -> str:
    """The study folder of ``icepick tune`` for a model (its folder name), ratio and seed."""
    return TUNE_DIR.format(model=model_slug(model), ratio=num(ratio), seed=seed)


def tune_targets(config: Mapping[str, Any]) -> list[str]:
    """What ``tune:`` asks for when ``enabled``: each model's study (best.json) and the tuned run on
    all the data (final/tuned.json), at ``tune.ratio`` (null: the model's Table 1 ratio) and
    ``tune.seed`` (null: the first of ``seeds``); nothing when it is off."""
    t = config.get("tune") or {}
    if not t.get("enabled"):
        return []
    out = []
    for model in config["models"]:
        ratio = t.get("ratio") if t.get("ratio") is not None else table1_ratio(config, model)
        seed = t.get("seed") if t.get("seed") is not None else config["seeds"][0]
        folder = tune_dir(model, ratio, seed)
        out += [f"{folder}/best.json", f"{folder}/final/tuned.json"]
    return out
