"""The CIFAR-10 python version's on-disk layout: pickled batches.

``<root>/cifar-10-batches-py/`` holds ``data_batch_1..5`` (training images), ``test_batch``
and ``batches.meta``; each batch is a pickled dict with ``data`` (uint8 ``[N, 3072]``, one
image per row, channel-major: 1024 red, 1024 green, 1024 blue values) and ``labels``; the
meta file's ``label_names`` are the class names. The real CIFAR-10 (also when imported: its
files are kept as they are) and the generated set use it; the other imports are stored as
``.npy`` files (:mod:`icepick.data.arrays`).
"""

from __future__ import annotations

import hashlib
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from icepick.records import atomic_path

__all__ = [
    "BASE_FOLDER",
    "MARKER",
    "MANIFEST",
    "TRAIN_FILES",
    "TEST_FILES",
    "META_FILE",
    "DATA_FILES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_CLASSES",
    "DataIntegrityError",
    "IncompleteDataError",
    "md5",
    "write_pickle",
    "write_batches",
    "read_batches",
    "read_label_names",
]

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

BASE_FOLDER = "cifar-10-batches-py"
MARKER = "icepick_synthetic.json"  # the generated set's record, inside BASE_FOLDER
MANIFEST = "manifest.json"  # an imported data set's record, beside BASE_FOLDER
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
META_FILE = "batches.meta"
DATA_FILES = TRAIN_FILES + TEST_FILES + [META_FILE]


class DataIntegrityError(ValueError):
    """A data file exists but its md5 sum is wrong (damaged, truncated or not the expected file),
    or its content is not what the format says (labels out of range, unreadable batch).

    A ValueError, so the command line reports it as one line (like every bad input).
    """


class IncompleteDataError(DataIntegrityError):
    """A data folder whose files are neither the official CIFAR-10 nor vouched for by a
    manifest or marker: an interrupted import or generation."""


def md5(path: Path) -> str:
    """The md5 sum of a file (hex)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_pickle(path: Path, obj: dict[str, Any]) -> None:
    """Pickle ``obj`` to ``path`` atomically (protocol 2, as the CIFAR files)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_batches(
    base: Path,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    classes: list[str] | tuple[str, ...],
    label: str,
    filename: str = "{split}_{index:06d}.png",
) -> dict[str, str]:
    """Write a data set in the layout above into ``base``; return ``{file name: md5}``.

    ``train_x``/``test_x``: uint8 ``[N, 3072]`` rows; the training images are split over the
    five training batches. ``label`` goes into each batch's ``batch_label`` and ``filename``
    (formatted with ``split`` and ``index``) names each image, as in the CIFAR files.
    """
    n_train = len(train_y)
    bounds = np.linspace(0, n_train, 6).round().astype(int)
    for i, name in enumerate(TRAIN_FILES):
        lo, hi = bounds[i], bounds[i + 1]
        write_pickle(base / name, {
            "batch_label": f"training batch {i + 1} of 5 ({label})",
            "labels": [int(v) for v in train_y[lo:hi]],
            "data": np.ascontiguousarray(train_x[lo:hi], dtype=np.uint8),
            "filenames": [filename.format(split="train", index=j) for j in range(lo, hi)],
        })
    write_pickle(base / TEST_FILES[0], {
        "batch_label": f"testing batch 1 of 1 ({label})",
        "labels": [int(v) for v in test_y],
        "data": np.ascontiguousarray(test_x, dtype=np.uint8),
        "filenames": [filename.format(split="test", index=j) for j in range(len(test_y))],
    })
    write_pickle(base / META_FILE, {
        "label_names": list(classes),
        "num_cases_per_batch": int(math.ceil(n_train / 5)),
        "num_vis": 3072,
    })
    return {name: md5(base / name) for name in DATA_FILES}


def _text_keys(entry: Any, path: Path) -> dict[str, Any]:
    """A pickled dict with str keys (pickles written by Python 2 may have bytes keys)."""
    if not isinstance(entry, dict):
        raise DataIntegrityError(f"{path}: not a CIFAR batch (a pickled {type(entry).__name__}, not a dict)")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in entry.items()}


def load_pickle(path: Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with str keys, read as torchvision reads it (latin1)."""
    try:
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError, IndexError, TypeError) as err:
        raise DataIntegrityError(f"{path}: cannot read it as a CIFAR pickle ({err!r})") from err
    return _text_keys(entry, path)


def read_batches(
    base: Path, names: list[str], num_classes: int | None = None
) -> tuple[np.ndarray, list[int]]:
    """Concatenate pickled CIFAR batches: ``data`` uint8 [N, 3072] rows, ``labels`` lists.

    The format of the CIFAR python versions, read as torchvision reads it (latin1 pickles,
    ``labels`` or ``fine_labels``, str or bytes keys). With ``num_classes``, a label outside
    ``[0, num_classes)`` raises :class:`DataIntegrityError` naming the file.
    """
    rows, labels = [], []
    for name in names:
        path = base / name
        entry = load_pickle(path)
        key = "labels" if "labels" in entry else "fine_labels"
        if "data" not in entry or key not in entry:
            raise DataIntegrityError(f"{path}: not a CIFAR batch (keys {sorted(entry)}; expected 'data' and 'labels')")
        data = np.asarray(entry["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataIntegrityError(
                f"{path}: 'data' must be uint8 [N, 3072] rows, got {data.dtype} {list(data.shape)}"
            )
        these = [int(v) for v in entry[key]]
        if len(these) != len(data):
            raise DataIntegrityError(f"{path}: {len(these)} labels for {len(data)} images")
        if num_classes is not None:
            bad = [v for v in these if not 0 <= v < num_classes]
            if bad:
                raise DataIntegrityError(
                    f"{path}: label {bad[0]} is out of range for {num_classes} classes (labels must lie in "
                    f"0..{num_classes - 1}); the file does not belong to this data set: import or regenerate the "
                    f"data set"
                )
        rows.append(data)
        labels.extend(these)
    return (np.vstack(rows) if rows else np.zeros((0, 3072), np.uint8)), labels


def read_label_names(path: Path, key: str = "label_names") -> list[str]:
    """The class names of a CIFAR meta pickle (``label_names``, or ``fine_label_names`` for CIFAR-100)."""
    entry = load_pickle(path)
    if key not in entry:
        raise DataIntegrityError(f"{path}: no {key!r} in this meta file (keys {sorted(entry)})")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in entry[key]]
