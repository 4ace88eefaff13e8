"""Projected work of the paper's sweep: training and evaluation MACs, and GPU hours.

Everything is counted from the architectures, not measured: each pruning step's model is
rebuilt with the widths pruning leaves (``ceil(r * C)`` filters fewer per pruned block) and
its per-layer MACs are counted (``icepick.pruning.layer_macs``). Per image:

* fine-tuning: the student's training MACs (``icepick.freezing.training_macs_per_sample``:
  forward, weight gradients of trainable layers, input gradients behind the first trainable
  layer) plus the teacher's forward pass (the unpruned model) of the KD loss;
* evaluation: the forward MACs of the layers a pass runs. Runs evaluate incrementally
  (``eval_cache``, on by default; :class:`icepick.evaluate.Evaluator`), so the pass right
  after pruning block k costs only the MACs from block k on: the previous step's last pass
  (after a skipped step, or after its fine-tuning) kept the input of block k. A held-out
  decision split (``decision.split: val``) is not evaluated again after a fine-tuning, so its
  pass after a prune counts in full from the second step on (exact for the baseline and the
  upper bound, which fine-tune at every step; an upper bound at the paper's counts). Every
  cache is assumed to fit (it does on a GPU: at most 1.3 GB per 10,000 images). The
  unpruned model's pass, the tests after fine-tunings and the early-halt checks are full
  passes. ``eval_cache: false`` counts every pass in full. The output's format is unchanged.

A run of the baseline is exact: a full fine-tuning after every step; so is one of the one-shot
baseline (one fine-tuning of one epoch per block, after every block is pruned). The few
training batches a data criterion (``taylor``, ``mean_activation``) reads per step are not
counted. A run of ICE-Pick is
given twice: as an upper bound (it fine-tunes a full epoch at every step, all early-halt
checks run, and freezing saves only the weight gradients of the ceil(eta * N) cheapest
layers, never a prefix), and at the paper's reported fine-tuning counts (Table 1's mean
#Ft per run for the same model, eta, lr policy and theta, each fine-tuning costing the
mean over the run's steps; runs the paper gives no count for keep the upper bound).

The configuration is the workflow's: :func:`workflow_config` lays the given files over
``config/config.yaml`` as Snakemake's ``--configfile`` does (nested mappings merged, later files
win) and fills every key still missing with the schema's default
(``workflow/schemas/config.schema.yaml``). The images are the data set's
(:func:`data_facts`): the official counts of CIFAR-10/100 (50,000 / 10,000) and Fashion-MNIST /
MNIST (60,000 / 10,000), the generated set's ``synthetic_train`` / ``synthetic_test``, and for
digits and an image folder the import's manifest under ``data.root`` (import the data first);
every MAC is counted at the data's image shape and class count.

GPU hours = MACs / throughput. The default throughputs (:data:`H100_TRAIN_TMACS`,
:data:`H100_EVAL_TMACS`) are assumptions for one H100 running these small CIFAR networks in
fp32/TF32 at batch 128 (training) and 1000 (evaluation); see docs/performance.md for why,
and pass your own measured figures (``benchmarks.finetune`` prints images/s on a GPU:
TMAC/s = images/s x the MACs per training image printed here / 1e12).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from icepick import grid
from icepick.config import ConfigError
from icepick.grid import RunSpec, is_model_spec

__all__ = [
    "H100_TRAIN_TMACS",
    "H100_EVAL_TMACS",
    "Work",
    "DataFacts",
    "data_facts",
    "workflow_config",
    "step_macs",
    "run_work",
    "sweep_costs",
    "format_costs",
]

#: Assumed effective training throughput of one H100 on CIFAR ResNets/MobileNetV2 at batch
#: 128, fp32 with TF32 convolutions, in tera-MACs per second (8 TFLOP/s; docs/performance.md).
H100_TRAIN_TMACS = 4.0
#: Assumed effective evaluation (inference, batch 1000) throughput, tera-MACs per second.
H100_EVAL_TMACS = 8.0

#: Sources with an official split: (training images, test images, image shape before data.size / data.channels, classes).
OFFICIAL_DATA = {
    "cifar10": (50_000, 10_000, (3, 32, 32), 10),
    "cifar100": (50_000, 10_000, (3, 32, 32), 100),
    "fashion-mnist": (60_000, 10_000, (1, 28, 28), 10),
    "mnist": (60_000, 10_000, (1, 28, 28), 10),
    # ILSVRC2012: 1,281,167 training and 50,000 validation images (the test split), at 224x224 by default
    "imagenet": (1_281_167, 50_000, (3, 224, 224), 1000),
    # Tiny-ImageNet: 500 training images per class and 10,000 labelled validation images, 64x64
    "tinyimagenet": (100_000, 10_000, (3, 64, 64), 200),
}
#: Sources whose import can keep a share of the training images (data.train_fraction).
_SUBSET_SOURCES = ("imagenet", "tinyimagenet")
#: Sources whose images keep their official shape (data.size and data.channels do not apply).
_FIXED_SHAPE = ("cifar10", "cifar100")
DEFAULT_SHAPE = (3, 32, 32)

#: The workflow's files, looked for in the working directory, then beside the icepick package.
BASE_CONFIG = Path("config") / "config.yaml"
SCHEMA = Path("workflow") / "schemas" / "config.schema.yaml"


# ---------------------------------------------------------------- the configuration


def _project_file(rel: Path) -> Path | None:
    """``rel`` in the working directory, else in the project that holds this package, else None."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (root / rel).is_file():
            return root / rel
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such configuration file (--configfile)")
    config = yaml.safe_load(Path(path).read_text())
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: not a workflow configuration (a YAML mapping of keys)")
    return config


def _merge(config: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Lay ``overlay`` over ``config`` in place, as Snakemake's ``update_config``: a mapping is
    merged key by key, anything else (a list included) replaces the value."""
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            _merge(config[key], value)
        else:
            config[key] = copy.deepcopy(value)
    return config


def with_schema_defaults(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with every key the schema gives a default for and ``config`` lacks,
    at every level (what Snakemake's ``validate(config, schema, set_default=True)`` fills in)."""
    out = copy.deepcopy(dict(config))
    for key, sub in (schema.get("properties") or {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if isinstance(out.get(key), dict) and sub.get("properties"):
            out[key] = with_schema_defaults(out[key], sub)
    return out


def _schema_error(config: Mapping[str, Any], schema: Mapping[str, Any]) -> str | None:
    """The first problem of ``config`` against the schema, on one line naming the key, or None:
    :func:`icepick.workflow_config.schema_errors` (a misspelt key with the nearest valid one,
    a wrong value with what is allowed), then jsonschema for anything else, as Snakemake's
    ``validate`` would find it."""
    from icepick.workflow_config import schema_errors

    errors = schema_errors(config, schema)
    if errors:
        return errors[0]
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - snakemake brings it
        return None
    found = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path))
    if not found:
        return None
    key = ".".join(str(part) for part in found[0].path) or "the configuration"
    return f"{key}: {' '.join(found[0].message.split())[:300]}"


def workflow_config(
    configfiles: Sequence[str | os.PathLike] = (),
    base: str | os.PathLike | None = None,
    schema: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The configuration the workflow would run with ``snakemake --configfile <configfiles>``.

    ``base`` (default ``config/config.yaml``: the Snakefile's ``configfile``), then each of
    ``configfiles`` laid over it in turn (nested mappings merged, later files win); then the
    the result checked against the schema (default ``workflow/schemas/config.schema.yaml``), and
    the schema's default for every key still missing. Both default files are looked for in the working
    directory, then in the project beside the icepick package; one that is absent is skipped.
    Raises FileNotFoundError for a missing configuration file and ConfigError (one line, naming
    the key) for a configuration the schema refuses.
    """
    base_path = Path(base) if base is not None else _project_file(BASE_CONFIG)
    config = _read_yaml(base_path) if base_path is not None else {}
    for path in configfiles:
        _merge(config, _read_yaml(Path(path)))
    schema_path = Path(schema) if schema is not None else _project_file(SCHEMA)
    if schema_path is None:
        return config
    import yaml

    rules = yaml.safe_load(schema_path.read_text())
    problem = _schema_error(config, rules)  # as the Snakefile: checked, then the defaults filled in
    if problem is not None:
        raise ConfigError(problem)
    return with_schema_defaults(config, rules)


# ---------------------------------------------------------------- the data


@dataclass(frozen=True)
class DataFacts:
    """What the cost needs of the data set: its images per split, classes and image shape (C, H, W)."""

    source: str
    n_train: int
    n_test: int
    n_val: int  # a stored validation split (an import with train/val/test folders); 0 = none
    num_classes: int
    image_shape: tuple[int, int, int]

    def record(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "image_shape": list(self.image_shape)}


def _import_hint(data: Mapping[str, Any]) -> str:
    """The ``icepick data import`` command that writes ``data.root`` from the configuration."""
    parts = [f"python -m icepick data import --source {data['source']}"]
    if data.get("path"):
        parts.append(f"--path {data['path']}")
    parts.append(f"--out {data.get('root')}")
    for key, option in (("size", "--size"), ("channels", "--channels"), ("fit", "--fit")):
        if data.get(key) is not None:
            parts.append(f"{option} {data[key]}")
    return " ".join(parts)


def data_facts(data: Mapping[str, Any]) -> DataFacts:
    """The images a configuration's ``data`` section trains and tests on.

    CIFAR-10/100, Fashion-MNIST, MNIST, ImageNet-1k and Tiny-ImageNet: their official counts
    (ImageNet's and Tiny-ImageNet's training images cut to ``data.train_fraction``), at their own
    image shape or ``data.size`` / ``data.channels``; the generated set:
    ``synthetic_train`` / ``synthetic_test`` images of 3x32x32; digits and an image folder: what
    the import under ``data.root`` holds (its manifest), or one line saying how to import it.
    """
    source = str(data.get("source", "cifar10"))
    if source in OFFICIAL_DATA:
        n_train, n_test, (c, h, w), classes = OFFICIAL_DATA[source]
        if source not in _FIXED_SHAPE:
            c = int(data.get("channels") or c)
            h = w = int(data.get("size") or h)
        if source in _SUBSET_SOURCES and data.get("train_fraction") is not None:
            from icepick.data.imagenet import subset_size

            n_train = subset_size(n_train, float(data["train_fraction"]))
        return DataFacts(source, n_train, n_test, 0, classes, (c, h, w))
    if source == "synthetic":
        return DataFacts(source, int(data["synthetic_train"]), int(data["synthetic_test"]), 0, 10, DEFAULT_SHAPE)
    return _imported_facts(data, source)


def _imported_facts(data: Mapping[str, Any], source: str) -> DataFacts:
    """Digits and image folders: counts and shape from the import's manifest under ``data.root``."""
    from icepick.data import MANIFEST, dataset_info

    root = Path(str(data.get("root")))
    if not (root / MANIFEST).is_file():
        raise ConfigError(f"data.root: {root} holds no imported {source} data set, whose images the cost counts "
                          f"(relative to {Path.cwd()}); import it first: {_import_hint(data)}")
    info = dataset_info(root)
    if info.source != source:
        raise ConfigError(f"data.root: {root} holds a {info.source} data set, not the configuration's data.source "
                          f"{source}; point data.root at the {source} import, or import it: {_import_hint(data)}")
    return DataFacts(source, info.n_train, info.n_test, info.n_val, info.num_classes, tuple(info.image_shape))


# ---------------------------------------------------------------- the work


@dataclass
class Work:
    """MACs of some part of the sweep: fine-tunings, training MACs and evaluation MACs."""

    runs: int = 0
    finetunes: float = 0.0
    train_macs: float = 0.0
    eval_macs: float = 0.0

    def add(self, other: "Work", times: float = 1.0) -> None:
        self.runs += int(other.runs * times)
        self.finetunes += other.finetunes * times
        self.train_macs += other.train_macs * times
        self.eval_macs += other.eval_macs * times

    def hours(self, train_tmacs: float, eval_tmacs: float) -> float:
        return (self.train_macs / (train_tmacs * 1e12) + self.eval_macs / (eval_tmacs * 1e12)) / 3600.0


Shape = tuple[int, int, int]


@lru_cache(maxsize=None)
def _layer_shapes(model: str, num_classes: int = 10, input_shape: Shape = DEFAULT_SHAPE
                  ) -> tuple[dict[str, int], dict[str, tuple[int, int, int]], dict[str, str], dict[str, int]]:
    """The unpruned model's per-layer MACs at ``input_shape``, (MACs per out-channel per
    input-channel-in-group, out channels, inputs per group) of every conv, each block's kind and width."""
    from torch import nn

    from icepick.models import InvertedResidual, build_model
    from icepick.pruning import layer_macs, model_widths, prunable_blocks

    net = build_model(model, num_classes, input_shape=input_shape)
    macs = layer_macs(net)
    shapes = {}
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            per_group = module.in_channels // module.groups
            shapes[name] = (macs[name] // (module.out_channels * per_group), module.out_channels, per_group)
    kinds = {name: "mbv2" if isinstance(block, InvertedResidual) else "resnet" for name, block in prunable_blocks(net)}
    return macs, shapes, kinds, model_widths(net)


#: Side of the images a torchvision model is pruned at when its MACs are counted for larger ones.
COUNT_SIDE = 32


@lru_cache(maxsize=None)
def _layer_macs_at(model: str, num_classes: int, input_shape: Shape) -> dict[str, int]:
    """The unpruned model's per-layer MACs per image of ``input_shape``."""
    from icepick.models import build_model
    from icepick.pruning import layer_macs

    return layer_macs(build_model(model, num_classes, input_shape=input_shape))


def _pruned_copy_macs(model: str, ratio: float, steps: int, num_classes: int, input_shape: Shape
                      ) -> tuple[dict[str, int], ...]:
    from icepick.models import build_model
    from icepick.pruning import layer_macs, prunable_blocks, prune_block

    net = build_model(model, num_classes, input_shape=input_shape)
    out = [layer_macs(net)]
    for block, _ in prunable_blocks(net)[:steps]:
        prune_block(net, block, ratio)
        out.append(layer_macs(net))
    return tuple(out)


def _pruned_step_macs(model: str, ratio: float, steps: int, num_classes: int, input_shape: Shape
                      ) -> tuple[dict[str, int], ...]:
    """Per-layer MACs of a model outside the paper's families, measured on a copy pruned step by step.

    A torchvision model (built the same for any image size) is pruned at :data:`COUNT_SIDE`
    pixels and each layer's MACs carried over to ``input_shape``: pruning changes channel counts
    only, so a layer's MACs are its channel part times its spatial part, and the pruned layer's
    MACs at ``input_shape`` are its MACs at the small size times the unpruned layer's ratio
    between the two sizes (exact in integers). A step of Wide-ResNet-101-2 at 224 pixels costs
    a 49th of the forward work this way. Where a layer has no output at the small size, the copy
    is pruned at ``input_shape`` itself.
    """
    c, h, w = input_shape
    if not model.startswith("torchvision:") or min(h, w) <= COUNT_SIDE:
        return _pruned_copy_macs(model, ratio, steps, num_classes, input_shape)
    small = (c, COUNT_SIDE, COUNT_SIDE)
    try:
        base, full = _layer_macs_at(model, num_classes, small), _layer_macs_at(model, num_classes, input_shape)
    except RuntimeError:  # too small for the model (a pooling larger than its input)
        return _pruned_copy_macs(model, ratio, steps, num_classes, input_shape)
    if set(base) != set(full) or min(base.values(), default=0) <= 0:
        return _pruned_copy_macs(model, ratio, steps, num_classes, input_shape)
    pruned = _pruned_copy_macs(model, ratio, steps, num_classes, small)
    return tuple({name: value * full[name] // base[name] for name, value in step.items()} for step in pruned)


@lru_cache(maxsize=None)
def step_macs(model: str, ratio: float, steps: int, num_classes: int = 10,
              input_shape: Shape = DEFAULT_SHAPE) -> tuple[dict[str, int], ...]:
    """Per-layer forward MACs per image of ``input_shape`` (C, H, W) of the unpruned model
    (index 0) and after each of ``steps`` prunes, for ``num_classes`` classes.

    Counted from the shapes: pruning block b from C to w filters scales ``b.conv1``'s outputs,
    ``b.conv2``'s inputs (ResNet) or ``b.conv2``'s channels and ``b.conv3``'s inputs
    (MobileNetV2) by w / C, and leaves every other layer alone (tests/test_cost.py checks this
    against ``layer_macs`` of the rebuilt pruned model).
    """
    input_shape = tuple(input_shape)  # type: ignore[assignment]
    if is_model_spec(model):
        return _pruned_step_macs(model, ratio, steps, num_classes, input_shape)
    macs, shapes, kinds, widths = _layer_shapes(model, num_classes, input_shape)
    current = dict(macs)
    out = [dict(current)]
    for block in list(widths)[:steps]:
        width = widths[block]
        kept = width - max(1, math.ceil(ratio * width - 1e-9))
        if kinds[block] == "resnet":
            scaled = {f"{block}.conv1": (kept, None), f"{block}.conv2": (None, kept)}
        else:  # depthwise conv2: one input per group, as many outputs as channels
            scaled = {f"{block}.conv1": (kept, None), f"{block}.conv2": (kept, None), f"{block}.conv3": (None, kept)}
        for layer, (out_ch, per_group) in scaled.items():
            unit, out0, per_group0 = shapes[layer]
            current[layer] = unit * (out_ch or out0) * (per_group or per_group0)
        out.append(dict(current))
    return tuple(out)


@lru_cache(maxsize=None)
def _conv_names(model: str) -> tuple[str, ...]:
    from icepick.models import build_model
    from icepick.pruning import conv_layers

    return tuple(name for name, _, _ in conv_layers(build_model(model)))


def frozen_for_bound(model: str, eta: float, layout: str = "worst", num_classes: int = 10,
                     input_shape: Shape = DEFAULT_SHAPE) -> set[str]:
    """The ceil(eta * N) layers assumed frozen: 'worst' = the cheapest (never the first), 'prefix'."""
    names = list(_conv_names(model))
    count = math.ceil(eta * len(names) - 1e-9)
    if count == 0:
        return set()
    if layout == "prefix":
        return set(names[:count])
    macs = _unpruned(model, num_classes, input_shape)
    return set(sorted(names[1:], key=lambda n: (macs[n], n))[:count])


def _train_per_image(macs: Mapping[str, int], frozen: set[str]) -> int:
    from icepick.freezing import training_macs_per_sample

    return training_macs_per_sample(macs, {name: name not in frozen for name in macs})


@dataclass
class _Setup:
    n_train: int  # images a fine-tuning epoch draws from
    n_test: int
    n_decision: int  # images of the decision split (= n_test on the paper's protocol)
    separate_decision: bool
    batch_size: int
    max_batches: int
    early_halt: int
    max_steps: int
    paper_counts: dict[tuple[str, float, str, float], float] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    layout: str = "worst"
    eval_cache: bool = True  # runs evaluate incrementally (the config's eval_cache)
    num_classes: int = 10
    input_shape: Shape = DEFAULT_SHAPE
    pretrain_images: int = 0  # the whole training split (pretraining reads it; 0 = n_train)
    data: DataFacts | None = None

    def macs(self, model: str, ratio: float, steps: int) -> tuple[dict[str, int], ...]:
        """:func:`step_macs` at this data's classes and image shape."""
        return step_macs(model, ratio, steps, self.num_classes, self.input_shape)

    def ft_samples(self) -> int:
        if self.max_batches:
            return min(self.n_train, self.max_batches * self.batch_size)
        return self.n_train

    def ft_batches(self) -> int:
        return -(-self.ft_samples() // self.batch_size)


def _setup(config: Mapping[str, Any], layout: str) -> _Setup:
    from icepick.reporting.paper import PAPER_RUNS, PAPER_TABLE1

    facts = data_facts(config["data"])
    n_train, n_test = facts.n_train, facts.n_test
    dec = config.get("decision", {"split": "test"})
    separate = dec.get("split", "test") == "val"
    stored_val = separate and facts.n_val > 0  # decided on the import's own validation split
    n_dec = (facts.n_val if stored_val else int(dec.get("val_size", 5000))) if separate else n_test
    held_out = n_dec if separate and not stored_val else 0  # held out of the training split
    ft = config["finetune"]
    theta1 = float(config["experiments"]["table1"]["theta"])
    counts = {(m, float(eta), lr, theta1): n / PAPER_RUNS for (m, eta, lr), (_, n) in PAPER_TABLE1.items()}
    return _Setup(
        n_train=n_train - held_out, n_test=n_test, n_decision=n_dec, separate_decision=separate,
        batch_size=int(ft["batch_size"]), max_batches=int(ft.get("max_batches", 0) or 0),
        early_halt=int(ft.get("early_halt", 0) or 0), max_steps=int(ft.get("max_steps", 0) or 0),
        paper_counts=counts, roles=dict(config.get("paper_role") or {}), layout=layout,
        eval_cache=bool(config.get("eval_cache", True)),
        num_classes=facts.num_classes, input_shape=facts.image_shape, pretrain_images=n_train, data=facts,
    )


def _n_blocks(model: str) -> int:
    return len(_step_names(model))


@lru_cache(maxsize=None)
def _step_names(model: str) -> tuple[str, ...]:
    from icepick.models import build_model
    from icepick.pruning import prunable_blocks

    return tuple(name for name, _ in prunable_blocks(build_model(model)))


def _unpruned(model: str, num_classes: int = 10, input_shape: Shape = DEFAULT_SHAPE) -> dict[str, int]:
    return step_macs(model, 0.5, 0, num_classes, input_shape)[0]


def _n_steps(model: str, setup: _Setup) -> int:
    blocks = _n_blocks(model)
    return min(blocks, setup.max_steps) if setup.max_steps else blocks


def run_work(spec: RunSpec, setup: _Setup) -> tuple[Work, Work]:
    """(upper bound, at the paper's counts) of one run of ``spec`` (one seed)."""
    steps = _n_steps(spec.model, setup)
    layers = setup.macs(spec.model, spec.ratio, steps)
    teacher = sum(layers[0].values())
    if spec.method == "oneshot":
        work = _oneshot_work(layers, steps, setup)
        return work, work
    frozen = (frozen_for_bound(spec.model, spec.eta, setup.layout, setup.num_classes, setup.input_shape)
              if spec.method == "icepick" else set())
    samples = setup.ft_samples()
    checks = 0
    if spec.method == "icepick" and setup.early_halt:
        checks = (setup.ft_batches() - 1) // setup.early_halt
    dec_extra = setup.n_decision if setup.separate_decision else 0
    base_eval = (setup.n_test + dec_extra) * teacher  # the unpruned model's accuracy
    prune_eval = ft_train = ft_eval = 0.0
    per_ft_train, per_ft_eval = [], []
    blocks = list(_step_names(spec.model))[:steps]
    if is_model_spec(spec.model):  # no partial forward passes: every evaluation is a full pass
        setup = dataclasses.replace(setup, eval_cache=False)
    for k, (block, macs) in enumerate(zip(blocks, layers[1:])):
        forward = sum(macs.values())
        prune_eval += _post_prune_eval(setup, macs, block, first=k == 0)
        per_ft_train.append(samples * (_train_per_image(macs, frozen) + teacher))
        per_ft_eval.append((setup.n_test + checks * setup.n_decision) * forward)
    ft_train, ft_eval = sum(per_ft_train), sum(per_ft_eval)
    upper = Work(1, float(steps), ft_train, base_eval + prune_eval + ft_eval)
    count = _paper_count(spec, setup, steps)
    if count is None:
        return upper, upper
    mean_train, mean_eval = ft_train / steps, ft_eval / steps
    reported = Work(1, count, count * mean_train, base_eval + prune_eval + count * mean_eval)
    return upper, reported


def _oneshot_work(layers: list[dict[str, int]], steps: int, setup: _Setup) -> Work:
    """The one-shot baseline (exact): one fine-tuning of ``steps`` epochs of the whole pruned
    model; the unpruned model's pass, the pruned model's (for the records) and the final test."""
    teacher, final = sum(layers[0].values()), layers[steps]
    dec_extra = setup.n_decision if setup.separate_decision else 0
    train = steps * setup.ft_samples() * (_train_per_image(final, set()) + teacher)
    evals = (setup.n_test + dec_extra) * teacher + 2 * setup.n_test * sum(final.values())
    return Work(1, 1.0 if steps else 0.0, float(train), float(evals))


def _post_prune_eval(setup: _Setup, macs: Mapping[str, int], block: str, first: bool) -> int:
    """MACs of the evaluations right after pruning ``block`` (``macs``: the pruned model's layers)."""
    forward = sum(macs.values())
    n_dec = setup.n_decision if setup.separate_decision else 0
    if not setup.eval_cache:
        return (setup.n_test + n_dec) * forward
    from icepick.evaluate import macs_before

    from_block = forward - macs_before(macs, block)  # the test split's cache holds the block's input
    return setup.n_test * from_block + n_dec * (from_block if first else forward)


def _paper_count(spec: RunSpec, setup: _Setup, steps: int) -> float | None:
    """Mean fine-tunings per run the paper reports for this setting (scaled for a stand-in model)."""
    if spec.method != "icepick":
        return None
    from icepick.reporting.paper import paper_model

    paper = paper_model(spec.model, setup.roles)
    if paper is None:
        return None
    count = setup.paper_counts.get((paper, spec.eta, spec.lr_policy, spec.theta))
    if count is None:
        return None
    if paper != spec.model or steps != _n_blocks(paper):  # a stand-in, or fewer steps: the same fraction
        count *= steps / _n_blocks(paper)
    return min(count, float(steps))


def _pretrain_work(model: str, config: Mapping[str, Any], setup: _Setup) -> Work:
    if model in (config.get("pretrained") or {}):  # its own weights: `pretrain --init WEIGHTS --epochs 0`
        return Work()
    p = config["pretrain"]
    macs = _unpruned(model, setup.num_classes, setup.input_shape)
    n = int(p.get("n_train") or setup.pretrain_images or setup.n_train)
    epochs = int(p["epochs"])
    return Work(0, 0.0, float(epochs * n * _train_per_image(macs, set())),
                float(epochs * setup.n_test * sum(macs.values())))


def _finetune_work(model: str, ratio: float, steps: int, setup: _Setup) -> Work:
    """``steps`` full fine-tunings after pruning the first blocks (freeze trace, weight shift)."""
    layers = setup.macs(model, ratio, steps)
    teacher = sum(layers[0].values())
    train = sum(setup.ft_samples() * (_train_per_image(m, set()) + teacher) for m in layers[1:])
    evals = 2 * setup.n_test * teacher
    return Work(0, float(steps), float(train), float(evals))


def sweep_costs(config: Mapping[str, Any], layout: str = "worst") -> dict[str, Any]:
    """Work of every part of the sweep described by a workflow ``config``: a whole configuration
    (:func:`workflow_config` makes one of overlay files, as the workflow would run it).

    Returns ``{"rows": [...], "totals": {...}}``: one row per model and part (pretrain, trace,
    weight_shift, and each experiment group with its runs x seeds), each with the upper bound
    and the paper-count figures; the totals count each distinct run once (groups share runs).
    """
    for key in ("models", "seeds", "experiments", "finetune", "data", "pretrain"):
        if key not in config:
            raise ConfigError(f"{key}: missing from the configuration")
    if layout not in ("worst", "prefix"):
        raise ConfigError(f"layout: {layout!r} is not allowed; choose 'worst' or 'prefix'")
    setup = _setup(config, layout)
    seeds = len(config["seeds"])
    rows: list[dict[str, Any]] = []
    total_upper, total_reported = Work(), Work()
    for model in config["models"]:
        pre = _pretrain_work(model, config, setup)
        rows.append(_row(model, "pretrain", pre, pre))
        total_upper.add(pre)
        total_reported.add(pre)
        distinct: dict[RunSpec, tuple[Work, Work]] = {}
        for group in grid.GROUPS:
            specs = grid.group_runs(config, group, model)
            if not specs and group not in ("fig3", "table1", "thresholds"):
                continue  # a group beyond the paper configured empty
            g_upper, g_reported = Work(), Work()
            for spec in specs:
                upper, reported = distinct.setdefault(spec, run_work(spec, setup))
                g_upper.add(upper, seeds)
                g_reported.add(reported, seeds)
            rows.append(_row(model, group, g_upper, g_reported))
        ratios = grid.trace_ratios(config, model)
        if ratios:  # one trace per (seed, ratio), or per seed at a fixed trace_ratio
            t = Work()
            for ratio in ratios:
                t.add(_finetune_work(model, ratio, 1, setup), seeds)
            rows.append(_row(model, "trace", t, t))
            total_upper.add(t)
            total_reported.add(t)
        ws = config.get("weight_shift")
        if ws:
            shift = _finetune_work(model, float(ws["ratio"]), int(ws["steps"]), setup)
            rows.append(_row(model, "weight_shift", shift, shift))
            total_upper.add(shift)
            total_reported.add(shift)
        for upper, reported in distinct.values():
            total_upper.add(upper, seeds)
            total_reported.add(reported, seeds)
    unpruned = {m: _unpruned(m, setup.num_classes, setup.input_shape) for m in config["models"]}
    macs_per_image = {m: {"forward": sum(macs.values()), "train_step": _train_per_image(macs, set()) + sum(macs.values())}
                      for m, macs in unpruned.items()}
    return {"rows": rows, "totals": {"upper": total_upper.__dict__, "reported": total_reported.__dict__},
            "macs_per_image": macs_per_image, "layout": layout, "seeds": seeds,
            "data": setup.data.record() if setup.data is not None else None}


def _row(model: str, part: str, upper: Work, reported: Work) -> dict[str, Any]:
    return {"model": model, "part": part, "upper": dict(upper.__dict__), "reported": dict(reported.__dict__)}


def _hours(work: Mapping[str, float], train_tmacs: float, eval_tmacs: float) -> float:
    return Work(**work).hours(train_tmacs, eval_tmacs)


def _data_line(data: Mapping[str, Any]) -> str:
    shape = "x".join(str(v) for v in data["image_shape"])
    val = f" / {data['n_val']:,} validation" if data.get("n_val") else ""
    return (f"Data: {data['source']}, {data['n_train']:,} training / {data['n_test']:,} test{val} images of "
            f"{shape}, {data['num_classes']} classes.")


def format_costs(costs: Mapping[str, Any], train_tmacs: float = H100_TRAIN_TMACS,
                 eval_tmacs: float = H100_EVAL_TMACS) -> str:
    """A markdown table of ``sweep_costs`` with GPU hours at the given throughputs (TMAC/s)."""
    peta = costs["totals"]["upper"]["train_macs"] >= 1e15
    unit, scale = ("PMAC", 1e15) if peta else ("TMAC", 1e12)

    def p(x: float) -> str:
        return f"{x / scale:,.1f}"

    def h(work: Mapping[str, float]) -> str:
        value = _hours(work, train_tmacs, eval_tmacs)
        return f"{value:,.2f}" if value >= 0.1 else f"{value:.2g}"

    lines = [
        f"Training at {train_tmacs:g} TMAC/s, evaluation at {eval_tmacs:g} TMAC/s; "
        f"{costs['seeds']} seed{'s' if costs['seeds'] != 1 else ''}; ICE-Pick upper bound with '{costs['layout']}' freezing. "
        f"{unit} = {scale:.0e} multiply-accumulates. 'reported' = at the paper's fine-tuning counts "
        "(where it gives them; else the upper bound).",
        *([_data_line(costs["data"])] if costs.get("data") else []),
        "",
        f"| model | part | runs | fine-tunings upper / reported | train {unit} upper / reported | "
        f"eval {unit} upper / reported | GPU h upper / reported |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in costs["rows"]:
        u, rep = r["upper"], r["reported"]
        lines.append(
            f"| {r['model']} | {r['part']} | {u['runs']} | {u['finetunes']:,.0f} / {rep['finetunes']:,.0f} | "
            f"{p(u['train_macs'])} / {p(rep['train_macs'])} | {p(u['eval_macs'])} / {p(rep['eval_macs'])} | "
            f"{h(u)} / {h(rep)} |"
        )
    u, rep = costs["totals"]["upper"], costs["totals"]["reported"]
    lines.append(
        f"| **all** | distinct runs | {u['runs']} | {u['finetunes']:,.0f} / {rep['finetunes']:,.0f} | "
        f"{p(u['train_macs'])} / {p(rep['train_macs'])} | {p(u['eval_macs'])} / {p(rep['eval_macs'])} | "
        f"**{h(u)} / {h(rep)}** |"
    )
    lines.append("")
    lines.append("MACs per image (unpruned): " + "; ".join(
        f"{m}: forward {v['forward'] / 1e6:,.1f} M, fine-tuning step (student training + teacher forward) "
        f"{v['train_step'] / 1e6:,.1f} M" for m, v in costs["macs_per_image"].items()))
    return "\n".join(lines) + "\n"
