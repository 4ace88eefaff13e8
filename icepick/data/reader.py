"""Reading any data set in the pipeline's on-disk format, after checking every file.

* ``<root>/manifest.json`` present (an import): every file against the manifest's md5 sums.
* the generated set's marker present: every file against the marker's md5 sums.
* neither: the official CIFAR-10 md5 list (files that are not CIFAR-10's: an incomplete
  import or generation, and the message says how to redo it).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from icepick.data.cifar import check_official, fetch_cifar10
from icepick.data.layout import BASE_FOLDER, MANIFEST, TEST_FILES, TRAIN_FILES, DataIntegrityError, read_batches
from icepick.data.manifest import verify_manifest
from icepick.data.synth import check_synthetic, is_synthetic

__all__ = ["load_cifar10"]


def load_cifar10(root: str | os.PathLike, train: bool, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split of the data set under ``root`` (CIFAR-10, generated or imported).

    Every file is checked before reading (see the module's docstring), and a failure names
    the file and how to recover.

    Args:
        root: data folder holding ``cifar-10-batches-py`` (and ``manifest.json`` for an import).
        train: the training split (50,000 real CIFAR-10 images) or the test split (10,000).
        download: try to download the real CIFAR-10 files when they are missing (a folder
            without manifest or marker only).

    Returns:
        ``(images, labels)``: uint8 ``[N, 3, 32, 32]`` and int64 ``[N]``, on the CPU.
    """
    root = Path(root)
    expected = None
    if (root / MANIFEST).is_file():
        manifest = verify_manifest(root)
        num_classes = int(manifest["num_classes"])
        expected = (manifest.get("counts") or {}).get("train" if train else "test")
    elif is_synthetic(root):
        check_synthetic(root)
        num_classes = 10
    else:
        if download:
            fetch_cifar10(root)
        check_official(root)
        num_classes = 10
    base = root / BASE_FOLDER
    try:
        rows, labels = read_batches(base, TRAIN_FILES if train else TEST_FILES, num_classes)
        images = torch.from_numpy(np.ascontiguousarray(rows.reshape(-1, 3, 32, 32)))
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:  # md5 passed: format problem
        if isinstance(err, DataIntegrityError):
            raise
        raise DataIntegrityError(f"{base}: cannot read the batches ({err!r}); regenerate or re-extract them") from err
    if expected is not None and len(labels) != int(expected):
        raise DataIntegrityError(
            f"{base}: {len(labels)} {'training' if train else 'test'} images, but {root / MANIFEST} counts "
            f"{expected}; import the data set again"
        )
    return images, torch.as_tensor(labels, dtype=torch.int64)
