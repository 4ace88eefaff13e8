"""The experiment grid and the path scheme: which runs every experiment group needs, and where
every artifact of the workflow lives.

One place for both, read by the workflow (``workflow/rules/common.smk``), ``icepick cost`` and
the reports. It imports neither torch nor pandas, so that ``snakemake -n`` and the workflow's
configuration checks never pay for them (a test holds this).

Paths (every wildcard of a run is in its path)::

    results/{model}/pretrained.pt, pretrain.json, pretrain_epochs.csv
    results/{model}/trace/r{ratio}/seed{seed}.json                freeze trace
    results/{model}/weight_shift.csv                               Section 4.1
    results/{model}/runs/{method}-{lr_policy}-r{ratio}-eta{eta}-theta{theta}/seed{seed}/
        summary.json, steps.csv, pruned.pt                         one pruning run
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
    "PAPER_MODELS",
    "MODEL_NAMES",
    "SPEC_PREFIXES",
    "is_model_spec",
    "is_model_name",
    "RunSpec",
    "num",
    "experiment_name",
    "group_runs",
    "table1_ratio",
    "model_runs",
    "trace_ratios",
    "RUN_DIR",
    "RUN_NAME",
    "TRACE",
    "pretrained_path",
    "pretrain_summary_path",
    "pretrain_epochs_path",
    "weight_shift_path",
    "trace_path",
    "run_path",
    "group_run_files",
    "group_summary_path",
]

#: The experiment groups: Figure 3 and the time savings; Table 1; the threshold sweep.
GROUPS = ("fig3", "table1", "thresholds")
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


def is_model_name(name: str) -> bool:
    """A registry name or a well-formed model spec (whether the spec builds is known only by building it)."""
    if not is_model_spec(name):
        return name in MODEL_NAMES
    kind, _, rest = name.partition(":")
    parts = rest.split(":")
    return all(parts) and len(parts) == (1 if kind == "torchvision" else 2)


RUN_DIR = "results/{model}/runs/{method}-{lr_policy}-r{ratio}-eta{eta}-theta{theta}/seed{seed}"
RUN_NAME = "{model}/runs/{method}-{lr_policy}-r{ratio}-eta{eta}-theta{theta}/seed{seed}"  # logs/, benchmarks/
TRACE = "results/{model}/trace/r{ratio}/seed{seed}.json"


def num(x: Any) -> str:
    """A number as it appears in paths and labels: 0.4, 0, 1.5 ('na' for a missing value)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "na"
    return f"{float(x):g}"


def experiment_name(method: str, lr_policy: str, ratio: float, eta: float, theta: float) -> str:
    """The configuration part of a run's path: ``icepick-icepick-r0.4-eta0.3-theta1.5``."""
    return f"{method}-{lr_policy}-r{num(ratio)}-eta{num(eta)}-theta{num(theta)}"


@dataclass(frozen=True)
class RunSpec:
    """One pruning configuration of the grid; every seed runs it."""

    model: str
    method: str  # 'icepick' | 'baseline'
    lr_policy: str  # 'icepick' (Eq. 1) | 'fixed'
    ratio: float
    eta: float
    theta: float

    @property
    def experiment(self) -> str:
        """The configuration part of its path."""
        return experiment_name(self.method, self.lr_policy, self.ratio, self.eta, self.theta)

    def wildcards(self, seed: int) -> dict[str, str]:
        """The workflow's wildcards of this run at ``seed``."""
        return {"model": self.model, "method": self.method, "lr_policy": self.lr_policy, "ratio": num(self.ratio),
                "eta": num(self.eta), "theta": num(self.theta), "seed": str(seed)}


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
    else:
        raise ConfigError(f"group: {group!r} is not an experiment group; one of {', '.join(GROUPS)}")
    return list(dict.fromkeys(runs))


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
    return f"results/{model}/pretrained.pt"


def pretrain_summary_path(model: str) -> str:
    """The pretraining summary (JSON) of ``model``."""
    return f"results/{model}/pretrain.json"


def pretrain_epochs_path(model: str) -> str:
    """The per-epoch pretraining CSV of ``model``."""
    return f"results/{model}/pretrain_epochs.csv"


def weight_shift_path(model: str) -> str:
    """Section 4.1's weight-shift table of ``model``."""
    return f"results/{model}/weight_shift.csv"


def trace_path(model: str, ratio: float | str, seed: int | str, trace_ratio: float | None = None) -> str:
    """The freeze trace a run of ``ratio`` uses: made at its own ratio, or at ``trace_ratio`` when set."""
    return TRACE.format(model=model, ratio=num(ratio if trace_ratio is None else trace_ratio), seed=seed)


def run_path(spec: RunSpec, seed: int, filename: str) -> str:
    """A file (summary.json, steps.csv, pruned.pt) of the run of ``spec`` at ``seed``."""
    return f"{RUN_DIR}/{filename}".format(**spec.wildcards(seed))


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
