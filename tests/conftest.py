"""Shared fixtures and helpers: one small generated CIFAR-format data set per test session, random
splits, a model with its teacher, and a copy of the workflow to run Snakemake in."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch

from icepick.data import Split, load_split, synth_cifar10

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "profiles", "environment.yml")
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


def _random_split(n: int = 64, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return Split(images, labels)


@pytest.fixture(scope="session")
def random_split():
    """A function ``(n=64, seed=0) -> Split`` of random uint8 images and labels on the CPU."""
    return _random_split


def _model_and_teacher(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    from icepick.models import build_model

    torch.manual_seed(0)
    model = build_model(name)
    teacher = copy.deepcopy(model).train()
    with torch.no_grad():
        for _ in range(2):
            teacher(torch.randn(32, 3, 32, 32) * 2 + 0.5)
    return model, teacher.eval()


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module: tiny tensors run much faster so than with two
    contending threads on a busy CPU (test_algorithm took 32 minutes at two threads on a shared
    2-core machine). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_and_teacher():
    """A function ``(name) -> (model, teacher)``: a fresh model and a teacher copy whose BN
    statistics are not the identity."""
    return _model_and_teacher


def copy_workflow(dest: Path, **overlays: str) -> Path:
    """The workflow's own files (not the library, results or data) copied into ``dest``, plus
    each ``name=text`` of ``overlays`` written there as ``name.yaml`` (a configuration overlay
    for ``--configfile config/test.yaml name.yaml``). Tests import it: ``from conftest import
    copy_workflow``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        elif src.exists():
            shutil.copy2(src, dest / name)
    for name, text in overlays.items():
        (dest / f"{name}.yaml").write_text(text)
    return dest
