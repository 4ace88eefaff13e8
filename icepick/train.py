"""Pretraining from scratch with the published CIFAR-10 recipes, resumable after a kill.

Recipes (docs/method.md): ResNets: SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128, 200
epochs, lr x0.1 after epochs 100 and 150. MobileNetV2: the same but weight decay 5e-4 and a
cosine schedule over the 200 epochs. Augmentation: random crop (padding 4) and flip.

After every epoch a checkpoint (model, optimizer, epochs done, the CSV rows so far) is
written atomically to ``<out_model>.ckpt``; a rerun with the same configuration continues
from it. Each epoch's data order and augmentation come from a seed that is a function of
``(seed, epoch)``, and the global torch RNG is reseeded from it too, so a resumed run
carries no RNG state and ends, on the CPU, with the same weights as an uninterrupted one.

Example::

    cfg = PretrainConfig(model="resnet20", epochs=15, schedule="cosine")
    summary = pretrain(cfg, "data/synthetic", "pretrained.pt", "epochs.csv", "pretrain.json")
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from icepick.config import ConfigError, check_choice, check_int, check_positive, check_range
from icepick.grid import is_model_spec
from icepick.data import Split, dataset_info, load_split, subset, train_batches
from icepick.evaluate import accuracy
from icepick.models import main_output
from icepick.records import atomic_path, provenance, write_csv, write_json
from icepick.runtime import (PRECISIONS, autocast, configure_backends, grad_scaler, resolve_device, set_threads,
                             synchronize, to_memory_format)

__all__ = [
    "PretrainConfig",
    "SCHEDULES",
    "NORMALIZE",
    "WARMUPS",
    "EPOCH_COLUMNS",
    "learning_rate",
    "epoch_seed",
    "checkpoint_path",
    "pretrain",
]

log = logging.getLogger(__name__)

SCHEDULES = ("auto", "step", "cosine")
NORMALIZE = ("auto", "data", "none")
WARMUPS = ("auto", "on", "off")
EPOCH_COLUMNS = ["epoch", "lr", "warmup_batches", "train_loss", "train_acc", "test_acc", "seconds"]
_WARMUP_WINDOW = 20  # batches whose mean training error ends the warm-up
_WARMUP_AUTO_DEPTH = 110  # 'auto': ResNets at least this deep warm up (He et al. 2016, Sec. 4.2)
_CKPT_FORMAT = "icepick-pretrain-checkpoint-2"
_SUBSET_SEED = 0  # --n-train picks the same images whatever the training seed
_RECIPE_WD = {"resnet": 1e-4, "mobilenetv2": 5e-4}  # published weight decays by family
_RECIPE_SCHEDULE = {"resnet": "step", "mobilenetv2": "cosine"}


def _family(model: str) -> str:
    return "mobilenetv2" if model.startswith("mobilenetv2") else "resnet"


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining hyper-parameters; the defaults are the published recipes.

    ``weight_decay=None`` and ``schedule='auto'`` pick the model family's recipe (ResNets:
    1e-4, step; MobileNetV2: 5e-4, cosine). ``milestones`` are epochs after which the step
    schedule multiplies the lr by ``gamma``: a value in (0, 1) is a fraction of ``epochs``
    (the default 0.5, 0.75 gives 100 and 150 of 200), an integer >= 1 an absolute epoch.

    Warm-up (He et al. 2016, Sec. 4.2: for the 110-layer net lr 0.1 is too large to start
    converging): train at ``warmup_factor * lr`` until the training error over the last 20
    batches is below ``warmup_error`` percent (about 400 iterations on CIFAR-10), then at the
    schedule's rate. ``warmup='auto'`` turns it on for ResNets of 110 layers or more
    (ResNet-110, ResNet-152 and their half-width variants), ``'on'``/``'off'`` for any model.
    """

    model: str
    epochs: int = 200
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9
    weight_decay: float | None = None  # None = the family's recipe
    schedule: str = "auto"  # 'auto' | 'step' | 'cosine' (per epoch)
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    batch_size: int = 128
    seed: int = 0  # initialisation, data order and augmentation
    device: str = "auto"
    threads: int | None = None
    n_train: int | None = None  # train on a fixed random subset of this many images
    precision: str = "fp32"  # 'fp32' strict (the paper), 'tf32', 'bf16' or 'fp16' (icepick.runtime)
    warmup: str = "auto"  # 'auto' (ResNets of >= 110 layers), 'on' or 'off'
    warmup_factor: float = 0.1  # warm-up rate / lr (He et al.: 0.01 / 0.1)
    warmup_error: float = 80.0  # percent: the warm-up ends once the training error is below it
    init: str | None = None  # start from these weights (a file, or torchvision's IMAGENET1K_V1): transfer learning
    normalize: str = "auto"  # 'auto' (the --init weights' own, else the data's), 'data' or 'none'

    def __post_init__(self) -> None:
        from icepick.models import check_model_name

        check_model_name(self.model)
        check_int("epochs", self.epochs, 0 if self.init is not None else 1)
        check_choice("normalize", self.normalize, NORMALIZE)
        check_positive("lr", self.lr)
        check_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        if self.weight_decay is not None:
            check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_choice("schedule", self.schedule, SCHEDULES)
        object.__setattr__(self, "milestones", tuple(self.milestones))
        for m in self.milestones:
            check_range("milestones", m, 0.0, math.inf, low_open=True, high_open=True)
            if m >= 1 and m != int(m):
                raise ConfigError(f"milestones: {m} is neither a fraction in (0, 1) nor a whole epoch")
            if m >= 1 and m > self.epochs:
                raise ConfigError(f"milestones: epoch {int(m)} is beyond the {self.epochs} epochs")
        if list(self.milestone_epochs()) != sorted(self.milestone_epochs()):
            raise ConfigError(f"milestones: {list(self.milestones)} must be in increasing order")
        check_range("gamma", self.gamma, 0.0, 1.0, low_open=True)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        if self.threads is not None:
            check_int("threads", self.threads, 1)
        if self.n_train is not None:
            check_int("n_train", self.n_train, 1)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("warmup", self.warmup, WARMUPS)
        check_range("warmup_factor", self.warmup_factor, 0.0, 1.0, low_open=True)
        check_range("warmup_error", self.warmup_error, 0.0, 100.0, low_open=True)

    @property
    def uses_warmup(self) -> bool:
        """Whether training starts with the warm-up ('auto' resolved by depth)."""
        if self.warmup != "auto":
            return self.warmup == "on"
        if _family(self.model) != "resnet" or is_model_spec(self.model):
            return False
        from icepick.models import build_model
        from icepick.pruning import prunable_blocks

        return 2 * len(prunable_blocks(build_model(self.model))) + 2 >= _WARMUP_AUTO_DEPTH

    @property
    def resolved_weight_decay(self) -> float:
        """The weight decay in use (the family's recipe when ``weight_decay`` is None)."""
        return self.weight_decay if self.weight_decay is not None else _RECIPE_WD[_family(self.model)]

    @property
    def resolved_schedule(self) -> str:
        """'step' or 'cosine' ('auto' resolved by model family)."""
        return _RECIPE_SCHEDULE[_family(self.model)] if self.schedule == "auto" else self.schedule

    def milestone_epochs(self) -> tuple[int, ...]:
        """The milestones as numbers of completed epochs (fractions rounded, at least 1).

        Fractions of a short run may round to the same epoch; the lr is then multiplied by
        ``gamma`` once per milestone, as torch's MultiStepLR does with repeated milestones.
        """
        return tuple(max(1, math.floor(m * self.epochs + 0.5)) if m < 1 else int(m) for m in self.milestones)


def learning_rate(cfg: PretrainConfig, epoch: int) -> float:
    """The learning rate of 0-based ``epoch`` (constant within the epoch).

    step: ``lr * gamma**k`` with k the milestones already passed (``epoch >= milestone``),
    as torch's MultiStepLR. cosine: ``lr * (1 + cos(pi * epoch / epochs)) / 2``, as
    CosineAnnealingLR with ``T_max=epochs`` stepped per epoch.
    """
    if cfg.resolved_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    passed = sum(epoch >= m for m in cfg.milestone_epochs())
    return cfg.lr * cfg.gamma**passed


def epoch_seed(seed: int, epoch: int) -> int:
    """The data/RNG seed of 0-based ``epoch`` of a run with ``seed`` (distinct per pair)."""
    return seed * 1_000_003 + epoch


def checkpoint_path(out_model: str | os.PathLike) -> Path:
    """Where :func:`pretrain` keeps its resumable state: ``<out_model>.ckpt``."""
    return Path(os.fspath(out_model) + ".ckpt")


def _resume_key(cfg: PretrainConfig, train: Split, test: Split) -> dict[str, Any]:
    """What must match for a checkpoint to be continued (device and threads may change)."""
    key = json.loads(json.dumps(dataclasses.asdict(cfg)))
    key.pop("device")
    key.pop("threads")
    key["train_images"], key["test_images"] = len(train), len(test)
    key["data_fingerprint"] = _data_fingerprint(train, test)
    return key


def _data_fingerprint(*splits: Split) -> str:
    """A cheap fingerprint of the data (labels and every 101st image): regenerated or replaced
    data must not resume a checkpoint trained on other images."""
    import hashlib

    digest = hashlib.sha256()
    for split in splits:
        digest.update(split.labels.cpu().numpy().tobytes())
        digest.update(split.images[::101].cpu().numpy().tobytes())
    return digest.hexdigest()


def _load_checkpoint(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged checkpoint only costs the epochs it held
        log.warning("%s: unreadable checkpoint (%s); starting from scratch", path, err)
        return None
    if not isinstance(state, dict) or state.get("format") != _CKPT_FORMAT or state.get("key") != key:
        log.warning("%s: checkpoint of a different configuration; starting from scratch", path)
        return None
    return state


@dataclass
class Warmup:
    """The warm-up's state: whether it still runs, the recent batch errors and its length so far.

    Plain data, saved in the checkpoint, so a resumed run warms up exactly as an uninterrupted one.
    """

    active: bool
    errors: list[float] = dataclasses.field(default_factory=list)  # percent, the last _WARMUP_WINDOW batches
    iterations: int = 0  # batches trained at the warm-up rate

    def observe(self, batch_error: float, threshold: float) -> None:
        """Count one warm-up batch; end the warm-up once a full window's mean error is below ``threshold``."""
        self.iterations += 1
        self.errors = (self.errors + [batch_error])[-_WARMUP_WINDOW:]
        if len(self.errors) == _WARMUP_WINDOW and sum(self.errors) / _WARMUP_WINDOW < threshold:
            self.active = False
            log.info("warm-up ended after %d iterations (training error %.1f%% < %g%%)",
                     self.iterations, sum(self.errors) / _WARMUP_WINDOW, threshold)


def _train_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    train: Split,
    cfg: PretrainConfig,
    seed: int,
    device: torch.device,
    lr: float | None = None,
    warmup: Warmup | None = None,
) -> tuple[float, float, int]:
    """One epoch of SGD at ``lr`` (or the warm-up rate while ``warmup`` is active).

    Returns (mean training loss, training accuracy in percent, batches at the warm-up rate).
    """
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    warm_batches = 0
    scaler = grad_scaler(device, cfg.precision)  # fp16: loss scaling (None otherwise)
    for x, y in train_batches(train, cfg.batch_size, seed=seed, augment=True):
        warming = warmup is not None and warmup.active
        if lr is not None:
            for group in opt.param_groups:
                group["lr"] = lr * cfg.warmup_factor if warming else lr
        with autocast(device, cfg.precision):
            out = main_output(model(x))
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        loss_sum += loss.detach().double() * y.shape[0]
        hits = (out.detach().argmax(dim=1) == y).sum()
        correct += hits
        if warming:  # one device sync per batch, during the warm-up only
            warm_batches += 1
            warmup.observe(100.0 * (1.0 - hits.item() / y.shape[0]), cfg.warmup_error)
    n = max(len(train), 1)
    return loss_sum.item() / n, 100.0 * correct.item() / n, warm_batches


@dataclasses.dataclass(frozen=True)
class _Start:
    """Where pretraining starts: from scratch, or from weights (their origin, the layers left new)."""

    origin: str
    replaced: list[str]
    normalization: Any


def _initial_model(cfg: PretrainConfig, info: Any) -> tuple[torch.nn.Module, _Start]:
    """The model to train: built fresh, or from ``cfg.init`` with a new classifier where the class count differs."""
    from icepick.models import build_model

    if cfg.init is None:
        return build_model(cfg.model, info.num_classes, input_shape=info.image_shape), _Start("scratch", [], None)
    from icepick.model_files import load_weights

    loaded = load_weights(cfg.init, cfg.model, info.num_classes, info.image_shape, allow_new_head=cfg.epochs > 0)
    log.info("starting from %s%s", loaded.origin,
             f" with a new {', '.join(loaded.replaced)} for {info.num_classes} classes" if loaded.replaced else "")
    return loaded.model, _Start(loaded.origin, loaded.replaced, loaded.normalization)


def _normalization(cfg: PretrainConfig, info: Any, start: _Start) -> Any:
    """What the model's inputs are normalised with: ``'none'`` or ``{"mean": [...], "std": [...]}``."""
    if cfg.normalize == "none":
        return "none"
    if cfg.normalize == "auto" and start.normalization is not None:
        if start.normalization == "none" or len(start.normalization["mean"]) == info.image_shape[0]:
            return start.normalization
    return {"mean": list(info.mean), "std": list(info.std)}


def _with_stats(split: Split, mean: Any, std: Any) -> Split:
    return Split(split.images, split.labels, mean, std, split.flip, split.augmentation)


def pretrain(
    cfg: PretrainConfig,
    data_dir: str | os.PathLike,
    out_model: str | os.PathLike,
    out_epochs_csv: str | os.PathLike,
    out_summary_json: str | os.PathLike,
    *,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``cfg.model`` from scratch on the data under ``data_dir``; write the artifacts.

    Args:
        cfg: the recipe.
        data_dir: folder holding ``cifar-10-batches-py`` (real or generated).
        out_model: model file (``icepick.pruning.save_model``); ``<out_model>.ckpt`` holds
            the resumable state while training runs and is deleted at the end.
        out_epochs_csv: one row per epoch: ``epoch, lr, train_loss, train_acc, test_acc, seconds``.
        out_summary_json: ``{model, epochs, final_test_acc, seconds, config, provenance}``.
        on_epoch_end: called as ``on_epoch_end(epoch, row)`` after each epoch's checkpoint
            (1-based epoch); for progress reporting and for tests that interrupt a run.

    Returns:
        The summary dict written to ``out_summary_json``.

    Raises:
        FloatingPointError: the training loss became NaN or infinite (no summary is written).
    """
    from icepick.model_files import image_hashes, save_model

    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    configure_backends(device, cfg.precision)
    info = dataset_info(data_dir)  # classes, image shape and normalisation, and the data set's identity
    torch.manual_seed(cfg.seed)
    model, start_from = _initial_model(cfg, info)
    normalization = _normalization(cfg, info, start_from)
    mean, std = (None, None) if normalization == "none" else (tuple(normalization["mean"]), tuple(normalization["std"]))
    train = _with_stats(load_split(data_dir, "train", device), mean, std)
    test = _with_stats(load_split(data_dir, "test", device), mean, std)
    if cfg.n_train is not None:
        if cfg.n_train > len(train):
            raise ConfigError(f"n_train: {cfg.n_train} is more than the {len(train)} training images in {data_dir}")
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(_SUBSET_SEED))[: cfg.n_train]
        train = subset(train, pick.sort().values)

    # The training layout from the first batch on: evaluation puts the model in channels_last,
    # so a run resumed from a checkpoint must train in it too to end with the same weights.
    model = to_memory_format(model.to(device))
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.resolved_weight_decay
    )
    ckpt = checkpoint_path(out_model)
    key = _resume_key(cfg, train, test)
    rows: list[dict[str, Any]] = []
    start, seconds = 0, 0.0
    warmup = Warmup(active=cfg.uses_warmup)
    state = _load_checkpoint(ckpt, key)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, rows, seconds = int(state["epoch"]), list(state["rows"]), float(state["seconds"])
        warmup = Warmup(**state["warmup"])
        log.info("resuming %s from %s after epoch %d of %d", cfg.model, ckpt, start, cfg.epochs)

    bar = tqdm(range(start, cfg.epochs), initial=start, total=cfg.epochs, desc=f"pretrain {cfg.model}", unit="epoch")
    for epoch in bar:
        lr = learning_rate(cfg, epoch)
        seed = epoch_seed(cfg.seed, epoch)
        torch.manual_seed(seed)  # any randomness inside the model is a function of (seed, epoch)
        synchronize(device)
        t0 = time.perf_counter()
        train_loss, train_acc, warm_batches = _train_epoch(model, opt, train, cfg, seed, device, lr, warmup)
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"pretrain {cfg.model}: the training loss became {train_loss} in epoch {epoch + 1} "
                f"(lr {lr:g}); training stopped. Try a lower --lr."
            )
        test_acc = accuracy(model, test)
        synchronize(device)
        took = time.perf_counter() - t0
        seconds += took
        row = {"epoch": epoch + 1, "lr": lr, "warmup_batches": warm_batches, "train_loss": train_loss,
               "train_acc": train_acc, "test_acc": test_acc, "seconds": took}
        rows.append(row)
        with atomic_path(ckpt) as tmp:
            torch.save({"format": _CKPT_FORMAT, "key": key, "epoch": epoch + 1, "rows": rows, "seconds": seconds,
                        "warmup": dataclasses.asdict(warmup), "model": model.state_dict(),
                        "optimizer": opt.state_dict()}, tmp)
        bar.set_postfix(loss=f"{train_loss:.3f}", test_acc=f"{test_acc:.2f}")
        log.info("%s epoch %d/%d: lr %.4g, train loss %.4f, train acc %.2f%%, test acc %.2f%%, %.1f s",
                 cfg.model, epoch + 1, cfg.epochs, lr, train_loss, train_acc, test_acc, took)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    bar.close()

    config = dataclasses.asdict(cfg)
    final_acc = rows[-1]["test_acc"] if rows else accuracy(model, test)
    trained = cfg.epochs > 0
    model.normalization = normalization
    model.trained_on = info.record() if trained else None
    save_model(model, out_model, {"source": "pretrain", "model": cfg.model, "epochs": cfg.epochs,
                                  "test_acc": final_acc, "config": config, "init": start_from.origin,
                                  "replaced": start_from.replaced},
               training_images=image_hashes(train.images) if trained else None)
    write_csv(out_epochs_csv, rows, EPOCH_COLUMNS)
    summary = {"model": cfg.model, "epochs": cfg.epochs, "final_test_acc": final_acc, "seconds": seconds,
               "train_images": len(train), "test_images": len(test), "init": start_from.origin,
               "replaced_layers": start_from.replaced, "normalization": normalization,
               "warmup_iterations": warmup.iterations if cfg.uses_warmup else None,
               "config": config, "provenance": provenance(device, cfg.precision, info.record())}
    write_json(out_summary_json, summary)
    ckpt.unlink(missing_ok=True)
    return summary
