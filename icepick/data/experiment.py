"""The data of one pruning experiment: the training split, the test split and the split the
threshold is decided on, on the device, with the data set's identity."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
from torch import nn

from icepick.config import ConfigError
from icepick.data.manifest import DatasetInfo, dataset_info
from icepick.data.split import Split, as_split, load_split, split_validation

__all__ = ["ExperimentData", "load_experiment_data", "in_memory_data", "check_classes"]


@dataclass
class ExperimentData:
    """The splits of one experiment, on the device: train, the test split, and the decision split
    (the test split itself, or images held out of training); ``info`` says which data set."""

    train: Split
    test: Split
    decision: Split
    info: DatasetInfo | None = None


def load_experiment_data(
    data_dir: str | os.PathLike,
    device: torch.device,
    decision_split: str = "test",
    val_size: int = 5000,
    val_seed: int = 0,
) -> ExperimentData:
    """Load a data set; with decision_split 'val', hold ``val_size`` images out of training."""
    info = dataset_info(data_dir)
    train = load_split(data_dir, "train", device)
    test = load_split(data_dir, "test", device)
    return _with_decision_split(train, test, info, decision_split, val_size, val_seed)


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
) -> ExperimentData:
    """An experiment's data from tensors or Datasets (:func:`icepick.data.split.as_split`), for the
    Python API. Both splits are normalised with the training split's statistics; the identity is
    the sha256 of the images and labels (source ``in-memory``)."""
    train_split = as_split(train, flip=flip)
    test_split = as_split(test, train_split.mean, train_split.std, flip)
    digest = hashlib.sha256()
    for tensor in (train_split.images, train_split.labels, test_split.images, test_split.labels):
        digest.update(tensor.cpu().numpy().tobytes())
    top = int(max(train_split.labels.max(), test_split.labels.max()))
    if top >= num_classes or int(min(train_split.labels.min(), test_split.labels.min())) < 0:
        raise ConfigError(f"labels: they must lie in 0..{num_classes - 1} for a model with {num_classes} classes")
    info = DatasetInfo("in-memory", num_classes, tuple(str(c) for c in range(num_classes)), len(train_split),
                       len(test_split), flip, train_split.mean, train_split.std, digest.hexdigest())
    return _with_decision_split(train_split.to(device), test_split.to(device), info, decision_split, val_size,
                                val_seed)


def check_classes(model: nn.Module, info: DatasetInfo | None, model_path: str | os.PathLike) -> None:
    """Raise ConfigError unless ``model`` has one output per class of the data set."""
    classes = getattr(model, "num_classes", None)
    if info is not None and classes is not None and classes != info.num_classes:
        raise ConfigError(
            f"pretrained: {model_path} has {classes} classes but the {info.source} data set has {info.num_classes}; "
            f"pretrain the model on this data set"
        )
