"""An imported data set's record (``manifest.json``) and every data set's identity (:func:`dataset_info`).

``<root>/manifest.json`` (format ``icepick-dataset/2``) says where the images came from, what
was done to them (size, channels), how they were split, which augmentation suits them, their
normalisation statistics, how they are stored (``layout``: ``npy``, :mod:`icepick.data.arrays`;
or ``cifar-10-python``, the official CIFAR-10 files kept as they are) and the md5 sum of every
file. It holds no time stamp: identical imports write identical manifests, and the data set's
identity is the sha256 of its bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from icepick.data.arrays import check_not_orphaned
from icepick.data.augment import AUGMENTATIONS, describe
from icepick.data.cifar import OFFICIAL_MD5, missing_message, official_digest
from icepick.data.layout import (
    BASE_FOLDER,
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DATA_FILES,
    MANIFEST,
    MARKER,
    DataIntegrityError,
    md5,
)
from icepick.records import atomic_path, read_json

__all__ = [
    "FORMAT",
    "LAYOUTS",
    "CIFAR_SHAPE",
    "DatasetInfo",
    "dataset_info",
    "channel_stats",
    "manifest_bytes",
    "write_manifest",
    "read_manifest",
    "verify_manifest",
    "import_command",
]

FORMAT = "icepick-dataset/2"
LAYOUTS = ("npy", "cifar-10-python")
CIFAR_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class DatasetInfo:
    """What a run needs to know of its data set, and its identity.

    ``image_shape``: ``(C, H, W)`` of every image; ``augmentation``: the training augmentation
    that suits them (:mod:`icepick.data.augment`); ``mean``/``std``: one number per channel;
    ``n_val``: images of a validation split stored with the data set (0: none); ``digest``:
    sha256 of the data set's record (``manifest.json`` of an import, the marker of a generated
    set, the official md5 list for a plain CIFAR-10 folder). ``storage``: how a run holds the
    images, set by the loader (:mod:`icepick.data.stream`): 'memory', or 'stream' with the
    ``streamed`` splits read from disk a batch at a time; None: not loaded.
    """

    source: str
    num_classes: int
    classes: tuple[str, ...]
    n_train: int
    n_test: int
    flip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    digest: str
    image_shape: tuple[int, int, int] = CIFAR_SHAPE
    augmentation: str = "pad_crop"
    n_val: int = 0
    layout: str = "cifar-10-python"
    storage: str | None = None
    streamed: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        """The data set's identity for a run record: source, digest, classes, sizes, image shape,
        augmentation; and, once loaded, its storage ('memory', or 'stream' and the streamed splits)."""
        c, h, w = self.image_shape
        out = {"source": self.source, "digest": self.digest, "num_classes": self.num_classes,
               "n_train": self.n_train, "n_test": self.n_test, "n_val": self.n_val,
               "image_shape": list(self.image_shape), "augmentation": describe(self.augmentation, h, w, self.flip)}
        if self.storage is not None:
            out["storage"] = self.storage
            if self.streamed:
                out["streamed"] = list(self.streamed)
        return out


def channel_stats(images: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images ``[N, C, H, W]``, on 0..1 values
    (an array, memory-mapped or not, or a streamed split's :class:`~icepick.data.stream.DiskImages`,
    read a chunk at a time).

    Exact (integer sums over each channel's histogram, population std), rounded to 6
    decimals: the same images give the same numbers on every machine. A channel that never
    varies (a constant one) gets the std of one grey level, 1/255, so that normalising it
    divides by something.
    """
    from icepick.data.stream import DiskImages, cpu_chunks

    if isinstance(images, DiskImages):
        chunks = cpu_chunks(images)
    else:
        images = np.asarray(images, dtype=np.uint8)
        chunks = (images[start:start + 4096] for start in range(0, len(images), 4096))  # bounded memory
    if len(images.shape) != 4 or len(images) == 0:
        raise ValueError(f"channel_stats: images must be uint8 [N, C, H, W] with N > 0, not {list(images.shape)}")
    values = np.arange(256, dtype=np.int64)
    channels = int(images.shape[1])
    histograms = np.zeros((channels, 256), dtype=np.int64)
    for chunk in chunks:
        for c in range(channels):
            histograms[c] += np.bincount(chunk[:, c].ravel(), minlength=256)
    means, stds = [], []
    for counts in histograms:
        n = int(counts.sum())
        s1 = int((counts * values).sum())
        s2 = int((counts * values * values).sum())
        means.append(round(s1 / (n * 255), 6))
        stds.append(round(max(math.sqrt((s2 * n - s1 * s1) / (n * n)), 1.0) / 255, 6))
    return tuple(means), tuple(stds)


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The manifest as written: indented JSON, keys in the order given, a final newline."""
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()


def write_manifest(root: Path, manifest: dict[str, Any]) -> str:
    """Write ``root/manifest.json`` atomically; return its sha256 (the data set's identity)."""
    data = manifest_bytes(manifest)
    with atomic_path(root / MANIFEST) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def read_manifest(root: Path) -> tuple[dict[str, Any], bytes]:
    """``root/manifest.json`` and its bytes; a manifest of another format raises DataIntegrityError."""
    path = Path(root) / MANIFEST
    data = path.read_bytes()
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise DataIntegrityError(
            f"{path}: not an icepick data set manifest of this version (format {found!r}, expected {FORMAT!r}); "
            f"import the data set again with `python -m icepick data import ... --force`"
        )
    return manifest, data


def import_command(root: Path, manifest: dict[str, Any]) -> str:
    """The command that imports the data set ``manifest`` describes into ``root`` again."""
    source = manifest.get("source")
    origin = manifest.get("origin") or {}
    split = manifest.get("split") or {}
    options = manifest.get("options") or {}
    parts = [f"python -m icepick data import --source {source}"]
    if origin.get("path"):
        parts.append(f"--path {origin['path']}")
    elif source in ("cifar10", "cifar100", "fashion-mnist", "mnist"):
        parts.append("[--path DIR]")
    parts.append(f"--out {root}")
    if split.get("kind") == "stratified":
        parts.append(f"--seed {split.get('seed')} --test-fraction {split.get('test_fraction')}")
    for key in ("size", "channels", "fit"):
        if options.get(key) is not None:
            parts.append(f"--{key} {options[key]}")
    flip = (manifest.get("augmentation") or {}).get("flip")
    if flip is not None and options.get("flip") is not None:
        parts.append("--flip" if flip else "--no-flip")
    return " ".join(parts)


def _listed_files(manifest: dict[str, Any]) -> list[str]:
    """The files a manifest must list: its layout's data files."""
    from icepick.data.arrays import array_files

    if manifest.get("layout") == "cifar-10-python":
        return [f"{BASE_FOLDER}/{name}" for name in DATA_FILES]
    counts = manifest.get("counts") or {}
    return array_files([split for split in ("train", "val", "test") if split in counts])


def verify_manifest(root: Path) -> dict[str, Any]:
    """Check every file the manifest of ``root`` lists against its md5 sum; return the manifest.

    Raises:
        FileNotFoundError: a listed file is missing (named).
        DataIntegrityError: a file's md5 differs from the manifest's (named, with both sums),
            or the manifest does not list every data file.
    """
    root = Path(root)
    manifest, _ = read_manifest(root)
    redo = import_command(root, manifest)
    files = manifest.get("files") or {}
    for name in _listed_files(manifest):
        if name not in files:
            raise DataIntegrityError(f"{root / MANIFEST} lists no md5 for {name}; import the data set again: `{redo}`")
    for rel, expected in files.items():
        path = root / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the data set (its {MANIFEST} lists it); import the "
                                    f"data set again: `{redo}`")
        actual = md5(path)
        if actual != expected:
            raise DataIntegrityError(
                f"{path} does not match the data set's manifest (md5 {actual}, {root / MANIFEST} says {expected}): "
                f"the file is damaged or was replaced; import the data set again: `{redo}`"
            )
    return manifest


def _floats(values: Sequence[Any], key: str, channels: int, path: Path) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)) or len(values) != channels:
        raise DataIntegrityError(f"{path}: {key} must be {channels} number(s), one per channel, not {values!r}")
    return tuple(float(v) for v in values)


def _shape(value: Any, path: Path) -> tuple[int, int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise DataIntegrityError(f"{path}: image_shape must be [channels, height, width], not {value!r}")
    return int(value[0]), int(value[1]), int(value[2])


def dataset_info(root: str | os.PathLike) -> DatasetInfo:
    """The data set under ``root``: source, classes, sizes, image shape, augmentation, normalisation, identity.

    Cheap: it reads the manifest or marker only (no md5 of the image files; the reader checks
    those). A generated set: source 'synthetic', its marker's sha256, the CIFAR-10 classes and
    statistics. A plain CIFAR-10 folder: source 'cifar10', the sha256 of the official md5 list.
    """
    root = Path(root)
    base = root / BASE_FOLDER
    if (root / MANIFEST).is_file():
        manifest, data = read_manifest(root)
        path = root / MANIFEST
        try:
            shape = _shape(manifest["image_shape"], path)
            norm = manifest["normalization"]
            counts = manifest["counts"]
            augmentation = manifest["augmentation"]
            if augmentation["kind"] not in AUGMENTATIONS or manifest["layout"] not in LAYOUTS:
                raise DataIntegrityError(f"{path}: unknown augmentation {augmentation['kind']!r} or layout "
                                         f"{manifest['layout']!r}; import the data set again")
            return DatasetInfo(
                source=str(manifest["source"]),
                num_classes=int(manifest["num_classes"]),
                classes=tuple(str(c) for c in manifest["classes"]),
                n_train=int(counts["train"]),
                n_test=int(counts["test"]),
                flip=bool(augmentation["flip"]),
                mean=_floats(norm["mean"], "normalization.mean", shape[0], path),
                std=_floats(norm["std"], "normalization.std", shape[0], path),
                digest=hashlib.sha256(data).hexdigest(),
                image_shape=shape,
                augmentation=str(augmentation["kind"]),
                n_val=int(counts.get("val", 0)),
                layout=str(manifest["layout"]),
            )
        except (KeyError, TypeError) as err:
            raise DataIntegrityError(f"{path}: incomplete manifest (no {err}); import the data set again") from err
    if (base / MARKER).is_file():
        data = (base / MARKER).read_bytes()
        marker = read_json(base / MARKER)
        return DatasetInfo("synthetic", len(CIFAR10_CLASSES), CIFAR10_CLASSES, int(marker.get("n_train", 0)),
                           int(marker.get("n_test", 0)), True, CIFAR10_MEAN, CIFAR10_STD,
                           hashlib.sha256(data).hexdigest())
    check_not_orphaned(root)
    if not base.is_dir():
        raise FileNotFoundError(missing_message(root, f"{base / 'data_batch_1'} is missing"))
    return DatasetInfo("cifar10", len(CIFAR10_CLASSES), CIFAR10_CLASSES, 50_000, 10_000, True, CIFAR10_MEAN,
                       CIFAR10_STD, official_digest(OFFICIAL_MD5))
