"""The data of one pruning experiment: the training split, the test split and the split the
threshold is decided on, on the device, with the data set's identity."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from icepick.config import ConfigError
from icepick.data.manifest import DatasetInfo, dataset_info
from icepick.data.split import Split, as_split, load_split, split_bytes, split_validation
from icepick.data.stream import cpu_chunks, memory_cap, plan_storage

__all__ = ["ExperimentData", "load_experiment_data", "in_memory_data", "check_classes", "resolve_normalization"]


@dataclass
class ExperimentData:
    """The splits of one experiment, on the device: train, the test split, and the decision split
    (the test split itself, or images held out of training); ``info`` says which data set."""

    train: Split
    test: Split
    decision: Split
    info: DatasetInfo | None = None

    @property
    def normalization(self) -> dict[str, Any] | None:
        """The normalisation the model sees: ``{"mean": [...], "std": [...]}``, or None (0..1 values)."""
        if self.train.mean is None:
            return None
        return {"mean": list(self.train.mean), "std": list(self.train.std)}  # type: ignore[arg-type]


def load_experiment_data(
    data_dir: str | os.PathLike,
    device: torch.device,
    decision_split: str = "test",
    val_size: int = 5000,
    val_seed: int = 0,
    normalization: Any = "data",
    data_memory: int | None = None,
) -> ExperimentData:
    """Load a data set; with decision_split 'val', decide on its stored validation split, or hold
    ``val_size`` images out of training when it has none.

    ``data_memory``: bytes of images the experiment may hold in memory (None: a share of the
    memory, :func:`icepick.data.stream.memory_cap`); the largest splits of an import are
    streamed from disk until the rest fits (:func:`icepick.data.stream.plan_storage`), which
    the data record says (``storage``, ``streamed``). The batches are the same either way.

    ``normalization``: 'data' (the data set's statistics), None (0..1 values, for a model that
    normalises its inputs itself) or ``{"mean": [...], "std": [...]}`` / ``(mean, std)``: what
    the model expects (:func:`resolve_normalization`).
    """
    info = dataset_info(data_dir)
    mean, std = resolve_normalization(normalization, info.mean, info.std, info.image_shape[0])
    names = ["train", "test"] + (["val"] if decision_split == "val" and info.n_val else [])
    plan = plan_storage({name: split_bytes(info, name) for name in names}, memory_cap(device, data_memory),
                        names if info.layout == "npy" else [])
    streamed = tuple(name for name in names if plan[name] == "stream")
    info = dataclasses.replace(info, storage="stream" if streamed else "memory", streamed=streamed)
    splits = {name: _normalized(load_split(data_dir, name, device, plan[name]), mean, std) for name in names}
    if "val" in splits:
        return ExperimentData(splits["train"], splits["test"], splits["val"], info)
    return _with_decision_split(splits["train"], splits["test"], info, decision_split, val_size, val_seed)


def _normalized(split: Split, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> Split:
    return Split(split.images, split.labels, mean, std, split.flip, split.augmentation)


def resolve_normalization(
    normalization: Any, data_mean: tuple[float, ...] | None, data_std: tuple[float, ...] | None, channels: int
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``(mean, std)`` from a normalisation setting: 'data' (the data's statistics), None (none:
    0..1 values), ``(mean, std)`` or ``{"mean": ..., "std": ...}`` with one number per channel."""
    if isinstance(normalization, str):
        if normalization != "data":
            raise ConfigError(f"normalize: {normalization!r} is not allowed; use 'data', None or (mean, std)")
        return data_mean, data_std
    if normalization is None:
        return None, None
    if isinstance(normalization, dict):
        normalization = (normalization.get("mean"), normalization.get("std"))
    try:
        mean, std = normalization
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise ConfigError(f"normalize: {normalization!r} is not (mean, std) with one number per channel") from None
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise ConfigError(f"normalize: mean {list(mean)} and std {list(std)} must be {channels} number(s) each, one "
                          f"per channel of the images, std > 0")
    return mean, std


def _with_decision_split(
    train: Split, test: Split, info: DatasetInfo | None, decision_split: str, val_size: int, val_seed: int
) -> ExperimentData:
    if decision_split == "val":
        if val_size >= len(train):
            raise ConfigError(f"val_size: {val_size} must be smaller than the training set ({len(train)} images)")
        train, val = split_validation(train, val_size, val_seed)
        return ExperimentData(train, test, val, info)
    return ExperimentData(train, test, test, info)


def in_memory_data(
    train: object,
    test: object,
    device: torch.device,
    num_classes: int,
    flip: bool = True,
    decision_split: str = "test",
    val_size: int = 5000,
    val_seed: int = 0,
    normalization: Any = "data",
) -> ExperimentData:
    """An experiment's data from tensors, arrays or Datasets (:func:`icepick.data.split.as_split`),
    for the Python API. ``normalization`` 'data' normalises both splits with the training
    images' per-channel statistics; None passes 0..1 values; ``(mean, std)`` those numbers.
    The identity is the sha256 of the images and labels (source ``in-memory``)."""
    train_split = as_split(train, flip=flip, stats_from_images=False)
    test_split = as_split(test, flip=flip, stats_from_images=False)
    if train_split.image_shape != test_split.image_shape:
        raise ConfigError(f"test: its images are {list(test_split.image_shape)}, the training images "
                          f"{list(train_split.image_shape)}; both splits need one image shape")
    if isinstance(normalization, str) and normalization == "data":
        from icepick.data.manifest import channel_stats

        data_mean, data_std = channel_stats(train_split.images if train_split.storage == "stream"
                                            else train_split.images.cpu().numpy())
    else:
        data_mean = data_std = None
    mean, std = resolve_normalization(normalization, data_mean, data_std, train_split.image_shape[0])
    train_split, test_split = _normalized(train_split, mean, std), _normalized(test_split, mean, std)
    digest = hashlib.sha256()
    for split in (train_split, test_split):
        for chunk in cpu_chunks(split.images):  # the same bytes, in memory or streamed
            digest.update(chunk.tobytes())
        digest.update(split.labels.cpu().numpy().tobytes())
    top = int(max(train_split.labels.max(), test_split.labels.max()))
    if top >= num_classes or int(min(train_split.labels.min(), test_split.labels.min())) < 0:
        raise ConfigError(f"labels: they must lie in 0..{num_classes - 1} for a model with {num_classes} classes")
    info = DatasetInfo("in-memory", num_classes, tuple(str(c) for c in range(num_classes)), len(train_split),
                       len(test_split), flip, mean or (), std or (), digest.hexdigest(),
                       image_shape=train_split.image_shape, augmentation=train_split.augmentation or "pad_crop",
                       layout="in-memory", storage="memory")
    return _with_decision_split(train_split.to(device), test_split.to(device), info, decision_split, val_size,
                                val_seed)


def check_classes(model: nn.Module, info: DatasetInfo | None, model_path: str | os.PathLike) -> None:
    """Raise ConfigError unless ``model`` has one output per class of the data set and takes its image shape."""
    classes = getattr(model, "num_classes", None)
    if info is not None and classes is not None and classes != info.num_classes:
        raise ConfigError(
            f"pretrained: {model_path} has {classes} classes but the {info.source} data set has {info.num_classes}; "
            f"pretrain the model on this data set (icepick pretrain, with --init {model_path} to start from it)"
        )
    shape = getattr(model, "input_shape", None)
    if info is not None and shape is not None and tuple(shape) != tuple(info.image_shape):
        raise ConfigError(
            f"pretrained: {model_path} takes {'x'.join(map(str, shape))} images but the {info.source} data set holds "
            f"{'x'.join(map(str, info.image_shape))} ones; import the data at the model's size (--size, --channels) or "
            f"pretrain the model on this data set"
        )


