"""One place for defaults: the workflow's schema states the library's defaults, and every
configuration file has the same keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from icepick.algorithm import RunConfig
from icepick.analysis import WeightShiftConfig
from icepick.devices import DEFAULT_JOBS_PER_GPU
from icepick.finetune import FinetuneConfig
from icepick.train import PretrainConfig

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())

# schema key -> the dataclass default it states (None in the schema: "the dataclass's own")
RUN, FT, PRE, WS = RunConfig(), FinetuneConfig(), PretrainConfig(model="resnet110"), WeightShiftConfig()
SAME_DEFAULT = {
    "jobs_per_gpu": DEFAULT_JOBS_PER_GPU,
    "precision": FT.precision,
    "eval_cache": RUN.eval_cache,
    "decision.split": RUN.decision_split,
    "decision.val_size": RUN.val_size,
    "schedule.base": RUN.base,
    "schedule.delta": RUN.delta,
    "schedule.p": RUN.p,
    "schedule.beta": RUN.beta,
    "finetune.batch_size": FT.batch_size,
    "finetune.max_batches": FT.max_batches,
    "finetune.early_halt": FT.early_halt,
    "finetune.lr_shape": FT.lr_shape,
    "finetune.kd_temperature": FT.kd_temperature,
    "finetune.kd_weight": FT.kd_weight,
    "finetune.freeze_bn_stats": RUN.freeze_bn_stats,
    "finetune.freeze_layers": RUN.freeze_layers,
    "finetune.max_steps": RUN.max_steps,
    "pretrain.epochs": PRE.epochs,
    "pretrain.seed": PRE.seed,
    "pretrain.batch_size": PRE.batch_size,
    "pretrain.schedule": PRE.schedule,
    "pretrain.warmup": PRE.warmup,
    "pretrain.warmup_factor": PRE.warmup_factor,
    "pretrain.warmup_error": PRE.warmup_error,
    "weight_shift.steps": WS.steps,
    "weight_shift.ratio": WS.ratio,
    "weight_shift.lr": WS.lr,
    "weight_shift.seed": WS.seed,
    "experiments.fig3.theta": RUN.theta,
}


def _schema_default(key: str):
    node = SCHEMA
    for part in key.split("."):
        node = node["properties"][part]
    return node["default"]


def _keys(config: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in config.items():
        out.add(prefix + key)
        if isinstance(value, dict) and key not in ("paper_role", "ratios"):  # these two map names to values
            out |= _keys(value, f"{prefix}{key}.")
    return out


@pytest.mark.parametrize("key", sorted(SAME_DEFAULT))
def test_the_schema_states_the_librarys_default(key):
    assert _schema_default(key) == SAME_DEFAULT[key]


def test_the_recipe_defaults_are_left_to_the_library():
    """null in the schema means the recipe of the model family (PretrainConfig resolves it)."""
    assert _schema_default("pretrain.lr") is None and _schema_default("pretrain.weight_decay") is None
    assert PRE.lr == 0.1 and PRE.resolved_weight_decay == 1e-4


@pytest.mark.parametrize("name", ["smoke.yaml", "test.yaml", "mini.yaml"])
def test_every_configuration_has_the_same_keys(name):
    paper = _keys(yaml.safe_load((ROOT / "config/config.yaml").read_text()))
    other = _keys(yaml.safe_load((ROOT / "config" / name).read_text()))
    assert other == paper, f"only in config.yaml: {sorted(paper - other)}; only in {name}: {sorted(other - paper)}"
