"""The imported data sets' on-disk format: one uint8 ``.npy`` of images and one int64 ``.npy``
of labels per split, at any image size and channel count.

``<root>/train_images.npy`` holds uint8 ``[N, C, H, W]`` (channel-major, as the models read
them), ``<root>/train_labels.npy`` int64 ``[N]``; the same for ``test`` and, when the source
has one, ``val``. Plain NumPy files (``numpy.save``, no pickle), so any tool reads them and a
split larger than memory can be memory-mapped (``numpy.load(..., mmap_mode="r")``). The
image size, channels, classes and md5 sums are in the data set's ``manifest.json``
(:mod:`icepick.data.manifest`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icepick.data.layout import MANIFEST, DataIntegrityError, IncompleteDataError, md5
from icepick.records import atomic_path

__all__ = ["SPLITS", "array_files", "write_arrays", "read_arrays", "images_file", "labels_file",
           "check_not_orphaned"]

SPLITS = ("train", "val", "test")


def images_file(split: str) -> str:
    """The file name of a split's images (``train_images.npy``)."""
    return f"{split}_images.npy"


def labels_file(split: str) -> str:
    """The file name of a split's labels (``train_labels.npy``)."""
    return f"{split}_labels.npy"


def array_files(splits: tuple[str, ...] | list[str]) -> list[str]:
    """Every file of the given splits, images then labels per split, in ``SPLITS`` order."""
    return [name for split in SPLITS if split in splits for name in (images_file(split), labels_file(split))]


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def write_arrays(root: Path, split: str, images: np.ndarray, labels: np.ndarray) -> dict[str, str]:
    """Write one split (uint8 ``[N, C, H, W]`` images, int labels) into ``root``; return ``{file: md5}``."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"write_arrays: images {images.shape} and labels {labels.shape} are not [N, C, H, W] and [N]")
    root.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, array in ((images_file(split), images), (labels_file(split), labels)):
        _save(root / name, array)
        sums[name] = md5(root / name)
    return sums


def _load(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataIntegrityError(f"{path}: cannot read it as a NumPy array ({' '.join(str(err).split())[:120]}); "
                                 f"import the data set again") from err


def read_arrays(
    root: Path, split: str, shape: tuple[int, int, int], num_classes: int, mmap: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One split's ``(images, labels)`` as written by :func:`write_arrays`, checked against the manifest's
    image ``shape`` ``(C, H, W)`` and class count (md5 sums are checked before, by the reader).

    ``mmap``: memory-map the images instead of reading them into memory.
    """
    images = _load(root / images_file(split), mmap)
    labels = _load(root / labels_file(split), False)
    where = root / images_file(split)
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
        raise DataIntegrityError(f"{where}: holds {images.dtype} {list(images.shape)}, but the manifest says uint8 "
                                 f"[N, {', '.join(map(str, shape))}]; import the data set again")
    if labels.dtype != np.int64 or labels.shape != (len(images),):
        raise DataIntegrityError(f"{root / labels_file(split)}: holds {labels.dtype} {list(labels.shape)}, not int64 "
                                 f"[{len(images)}] (one label per image); import the data set again")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise DataIntegrityError(f"{root / labels_file(split)}: label {bad} is out of range for {num_classes} classes; "
                                 f"import the data set again")
    return images, labels


def check_not_orphaned(root: Path) -> None:
    """Raise :class:`IncompleteDataError` when ``root`` holds an import's ``.npy`` files but no
    ``manifest.json``: an interrupted import (or one whose manifest was removed), whose files
    nothing vouches for."""
    found = [name for name in array_files(SPLITS) if (Path(root) / name).is_file()]
    if found and not (Path(root) / MANIFEST).is_file():
        raise IncompleteDataError(
            f"{Path(root) / found[0]} belongs to an import, but {root} has no {MANIFEST}: the import is incomplete "
            f"(interrupted, or its manifest was removed): redo it with `python -m icepick data import --source SOURCE "
            f"--out {root} ...`"
        )
