"""Reading any data set in the pipeline's on-disk formats, after checking every file.

* ``<root>/manifest.json`` present (an import): every file against the manifest's md5 sums;
  the images from the ``.npy`` files (:mod:`icepick.data.arrays`), or from the official
  CIFAR-10 files for an import of CIFAR-10 (layout ``cifar-10-python``).
* the generated set's marker present: every file against the marker's md5 sums (the CIFAR-10
  python layout, :mod:`icepick.data.layout`).
* neither: the official CIFAR-10 md5 list (files that are not CIFAR-10's: an incomplete
  import or generation, and the message says how to redo it).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from icepick.data.arrays import check_not_orphaned, read_arrays
from icepick.data.cifar import check_official, fetch_cifar10
from icepick.data.layout import BASE_FOLDER, MANIFEST, TEST_FILES, TRAIN_FILES, DataIntegrityError, read_batches
from icepick.data.manifest import verify_manifest
from icepick.data.synth import check_synthetic, is_synthetic

__all__ = ["read_split", "load_cifar10"]


def read_split(
    root: str | os.PathLike, split: str, download: bool = False, mmap: bool = False
) -> tuple[torch.Tensor | np.ndarray, torch.Tensor]:
    """Read one split ('train', 'test', or 'val' where the data set stores one) of the data set under ``root``.

    Every file is checked before reading (see the module's docstring), and a failure names
    the file and how to recover.

    Args:
        root: the data folder (an import's, with ``manifest.json``; a generated set; CIFAR-10).
        split: 'train', 'test' or 'val'.
        download: try to download the real CIFAR-10 files when they are missing (a folder
            without manifest or marker only).

        mmap: leave the images of an import on disk: they come back as the read-only memory
            map of their ``.npy`` file (checked as when read); other layouts are read.

    Returns:
        ``(images, labels)``: uint8 ``[N, C, H, W]`` (a tensor, or with ``mmap`` a memory-mapped
        array where the layout allows) and int64 ``[N]``, on the CPU.
    """
    root = Path(root)
    expected, num_classes, manifest = None, 10, None
    if (root / MANIFEST).is_file():
        manifest = verify_manifest(root)
        num_classes = int(manifest["num_classes"])
        expected = (manifest.get("counts") or {}).get(split)
        if expected is None:
            raise FileNotFoundError(f"{root}: the data set has no {split} split (its {MANIFEST} counts "
                                    f"{', '.join(k for k in ('train', 'val', 'test') if k in manifest['counts'])})")
    elif is_synthetic(root):
        check_synthetic(root)
    else:
        check_not_orphaned(root)
        if download:
            fetch_cifar10(root)
        check_official(root)
    if manifest is not None and manifest.get("layout") == "npy":
        images, labels = read_arrays(root, split, tuple(manifest["image_shape"]), num_classes, mmap=mmap)
        images_t = images if mmap else torch.from_numpy(np.ascontiguousarray(images))
        labels_t = torch.from_numpy(labels.copy())
    else:
        if split == "val":
            raise FileNotFoundError(f"{root}: a CIFAR-10 folder has no val split")
        base = root / BASE_FOLDER
        try:
            rows, label_list = read_batches(base, TRAIN_FILES if split == "train" else TEST_FILES, num_classes)
            images_t = torch.from_numpy(np.ascontiguousarray(rows.reshape(-1, 3, 32, 32)))
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:  # md5 passed: format problem
            if isinstance(err, DataIntegrityError):
                raise
            raise DataIntegrityError(f"{base}: cannot read the batches ({err!r}); regenerate or re-extract them") from err
        labels_t = torch.as_tensor(label_list, dtype=torch.int64)
    if expected is not None and len(labels_t) != int(expected):
        raise DataIntegrityError(
            f"{root}: {len(labels_t)} {split} images, but {root / MANIFEST} counts {expected}; import the data set again"
        )
    return images_t, labels_t


def load_cifar10(root: str | os.PathLike, train: bool, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`read_split` of 'train' (``train=True``) or 'test', as torchvision's CIFAR10 names the choice."""
    return read_split(root, "train" if train else "test", download)
