"""Shared fixtures: one small generated CIFAR-format data set per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from icepick.data import Split, load_split, synth_cifar10

SYNTH_TRAIN = 256  # images in the shared generated training split
SYNTH_TEST = 128  # ... and test split
SYNTH_SEED = 0


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding a small generated data set (cifar-10-batches-py/); treat it as read-only."""
    root = tmp_path_factory.mktemp("synth_cifar10")
    synth_cifar10(root, n_train=SYNTH_TRAIN, n_test=SYNTH_TEST, seed=SYNTH_SEED)
    return root


@pytest.fixture(scope="session")
def synth_splits(synth_root: Path) -> tuple[Split, Split]:
    """The shared generated data set's (train, test) splits on the CPU; do not modify them."""
    return load_split(synth_root, "train", "cpu"), load_split(synth_root, "test", "cpu")
