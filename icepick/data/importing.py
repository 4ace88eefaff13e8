"""``icepick data import``: a labelled image set, written once into the pipeline's on-disk format.

Sources:

* ``cifar10``: the official files (torchvision's download, or ``--path`` holding
  ``cifar-10-batches-py/`` or the ``.tar.gz``), checked against the official md5 list, copied.
* ``cifar100``: the official ``cifar-100-python/{train,test,meta}`` (torchvision's download or
  ``--path``), checked against torchvision's md5 list, converted (100 fine labels).
* ``digits``: scikit-learn's ``load_digits()`` (1,797 real 8x8 greyscale digits), upscaled to
  32x32, split by class (the ``digits`` extra: ``pip install 'icepick[digits]'``).
* ``imagefolder``: ``--path`` with one sub-folder of images per class, resized and
  centre-cropped to 32x32, split by class.

The result is ``OUT/cifar-10-batches-py/`` in the CIFAR-10 python layout plus
``OUT/manifest.json`` (:mod:`icepick.data.manifest`), built in a temporary sibling folder and
moved into place with the manifest written last.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from icepick.config import ConfigError, check_choice, check_int, check_range
from icepick.data.cifar import DOWNLOAD_TIMEOUT_S, OFFICIAL_MD5, TGZ, TGZ_MD5, URL, official_digest
from icepick.data.destination import check_destination, staged_folder
from icepick.data.layout import (
    BASE_FOLDER,
    DATA_FILES,
    META_FILE,
    TEST_FILES,
    TRAIN_FILES,
    DataIntegrityError,
    md5,
    read_batches,
    read_label_names,
    write_batches,
)
from icepick.data.manifest import CROP_PADDING, FORMAT, DatasetInfo, channel_stats, dataset_info, write_manifest

__all__ = [
    "SOURCES",
    "CIFAR100_MD5",
    "DataSourceError",
    "MissingExtraError",
    "import_dataset",
    "stratified_split",
]

SOURCES = ("cifar10", "cifar100", "digits", "imagefolder")

CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_TGZ = "cifar-100-python.tar.gz"
CIFAR100_TGZ_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
#: The official CIFAR-100 files and md5 sums (torchvision's ``CIFAR100`` list; a test checks).
CIFAR100_MD5: dict[str, str] = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}

IMAGEFOLDER_TRANSFORM = ("convert to RGB, resize the shorter side to 32 (bilinear, antialiased) and "
                         "centre-crop 32x32")
DIGITS_TRANSFORM = ("scale the values 0..16 to 0..255 (rounded), upscale 8x8 to 32x32 (bilinear) and "
                    "repeat the grey channel 3 times")
CIFAR_TRANSFORM = "none (already 32x32 RGB)"
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0


class DataSourceError(ValueError):
    """The images to import are missing, empty or unreadable; the message names the folder or file."""


class MissingExtraError(DataSourceError):
    """An optional dependency a source needs is not installed; the message names the extra."""


@dataclass
class _Images:
    """What a source yields: the two splits as uint8 [N, 3072] rows, the classes, and provenance."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    origin: dict[str, Any]
    transform: str
    split: dict[str, Any]
    copied: dict[str, str] = field(default_factory=dict)  # files already written into the stage (name: md5)


# ---------------------------------------------------------------- splits


def stratified_split(
    labels: np.ndarray, num_classes: int, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``: each class split in proportion, at random by ``seed``.

    The test split has ceil(test_fraction * N) images, shared out over the classes in
    proportion to their sizes (largest remainders, ties to the lower class index); every class
    keeps at least one image in each split. Both index lists come back shuffled by ``seed``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    sizes = np.bincount(labels, minlength=num_classes)
    total = math.ceil(Fraction(repr(float(test_fraction))) * n)
    shares = [Fraction(int(s) * total, n) for s in sizes]
    take = [math.floor(s) for s in shares]
    for c in sorted(range(num_classes), key=lambda c: (-(shares[c] - take[c]), c))[: total - sum(take)]:
        take[c] += 1
    take = [min(max(k, 1), int(s) - 1) for k, s in zip(take, sizes)]
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[: take[c]])
        train.append(idx[take[c]:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _check_class_sizes(labels: np.ndarray, classes: list[str], where: str) -> None:
    sizes = np.bincount(labels, minlength=len(classes))
    for c, size in enumerate(sizes):
        if size < 2:
            raise DataSourceError(
                f"{where}: class '{classes[c]}' has {int(size)} image(s); a train and a test split need at least 2 "
                f"per class"
            )


def _stratified(images: np.ndarray, labels: np.ndarray, classes: list[str], test_fraction: float, seed: int,
                where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    _check_class_sizes(labels, classes, where)
    train_idx, test_idx = stratified_split(labels, len(classes), test_fraction, seed)
    split = {"kind": "stratified", "test_fraction": test_fraction, "seed": seed, "stratified": True}
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], split


# ---------------------------------------------------------------- archives and downloads


def _extract(archive: Path, folder: str, dest: Path) -> Path:
    """Extract the members under ``folder/`` of a .tar.gz into ``dest``; return ``dest/folder``."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = [m for m in tar.getmembers()
                       if (m.name == folder or m.name.startswith(folder + "/")) and (m.isfile() or m.isdir())]
            if not members:
                raise DataSourceError(f"{archive}: the archive holds no {folder}/ folder")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(dest, members=members)  # noqa: S202 - members are checked above
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataSourceError(f"{archive}: cannot extract it ({err}); download it again") from err
    return dest / folder


def _download(cls_name: str, work: Path, url: str, archive_md5: str) -> None:
    """Download a CIFAR archive through torchvision into ``work`` (its md5 checked by torchvision)."""
    from torchvision import datasets

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        getattr(datasets, cls_name)(str(work), train=True, download=True)
    except Exception as err:  # noqa: BLE001 - any failure means: tell the user what to place where
        raise FileNotFoundError(
            f"the download of {url} failed ({err!r}); download it yourself (md5 {archive_md5}) and give its path "
            f"with --path"
        ) from err
    finally:
        socket.setdefaulttimeout(previous)


def _locate(path: Path | None, folder: str, archive: str, work: Path) -> Path | None:
    """The folder holding the official files: ``path`` itself, ``path/folder``, or extracted from
    ``path`` (an archive) or ``path/archive`` into ``work``; None when ``path`` is None."""
    if path is None:
        return None
    if not path.exists():
        raise FileNotFoundError(f"path: {path} does not exist; give the folder holding {folder}/ or {archive}")
    if path.is_file():
        return _extract(path, folder, work)
    if (path / folder).is_dir():
        return path / folder
    if (path / archive).is_file():
        return _extract(path / archive, folder, work)
    if path.name == folder:
        return path
    if not any(path.iterdir()):
        raise DataSourceError(f"path: {path} is empty; it must hold {folder}/ or {archive}")
    raise DataSourceError(f"path: {path} holds neither {folder}/ nor {archive}")


def _check_md5(folder: Path, table: Mapping[str, str], what: str) -> dict[str, str]:
    sums = {}
    for name, expected in table.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; {folder} does not hold the whole {what}")
        actual = md5(path)
        if actual != expected:
            raise DataIntegrityError(
                f"{path} is damaged or is not the official {what} file (md5 {actual}, expected {expected}); "
                f"download or extract it again"
            )
        sums[name] = actual
    return sums


def _md5_origin(table: Mapping[str, str], official: Mapping[str, str]) -> str:
    if dict(table) == dict(official):
        return "the official md5 list"
    return f"an md5 list given by the caller (sha256 {official_digest(table)})"


# ---------------------------------------------------------------- the sources


def _cifar10_images(folder: Path, table: Mapping[str, str], sums: dict[str, str]) -> _Images:
    classes = read_label_names(folder / META_FILE)
    train_x, train_y = read_batches(folder, TRAIN_FILES, len(classes))
    test_x, test_y = read_batches(folder, TEST_FILES, len(classes))
    origin = {"url": URL, "archive_md5": TGZ_MD5, "checked_against": _md5_origin(table, OFFICIAL_MD5)}
    split = {"kind": "official", "test_fraction": None, "seed": None, "stratified": False}
    return _Images(train_x, np.asarray(train_y), test_x, np.asarray(test_y), classes, origin, CIFAR_TRANSFORM,
                   split, copied=sums)


def _cifar10(path: Path | None, stage: Path, table: Mapping[str, str]) -> _Images:
    folder = _locate(path, BASE_FOLDER, TGZ, stage / ".extract")
    if folder is None:
        _download("CIFAR10", stage / ".download", URL, TGZ_MD5)
        folder = stage / ".download" / BASE_FOLDER
    sums = _check_md5(folder, table, "CIFAR-10")
    dest = stage / BASE_FOLDER
    dest.mkdir(parents=True, exist_ok=True)
    for name in DATA_FILES:
        shutil.copyfile(folder / name, dest / name)
        if md5(dest / name) != sums[name]:
            raise DataIntegrityError(f"{dest / name}: the copy differs from {folder / name}; import again")
    return _cifar10_images(dest, table, sums)


def _cifar10_in_place(out: Path, table: Mapping[str, str]) -> _Images | None:
    """The official files where they belong (placed by hand, or by `data fetch`): checked and
    used where they are (extracted first from ``out``'s archive when only that is there);
    None when ``out`` holds neither."""
    base = out / BASE_FOLDER
    intact = all((base / name).is_file() for name in table)
    if intact:
        try:
            return _cifar10_images(base, table, _check_md5(base, table, "CIFAR-10"))
        except DataIntegrityError:
            if not (out / TGZ).is_file():
                return None
    if not (out / TGZ).is_file():
        return None
    _extract(out / TGZ, BASE_FOLDER, out)
    return _cifar10_images(base, table, _check_md5(base, table, "CIFAR-10"))


def _cifar100(path: Path | None, stage: Path, table: Mapping[str, str]) -> _Images:
    folder = _locate(path, CIFAR100_FOLDER, CIFAR100_TGZ, stage / ".extract")
    if folder is None:
        _download("CIFAR100", stage / ".download", CIFAR100_URL, CIFAR100_TGZ_MD5)
        folder = stage / ".download" / CIFAR100_FOLDER
    _check_md5(folder, table, "CIFAR-100")
    classes = read_label_names(folder / "meta", "fine_label_names")
    train_x, train_y = read_batches(folder, ["train"], len(classes))
    test_x, test_y = read_batches(folder, ["test"], len(classes))
    origin = {"url": CIFAR100_URL, "archive_md5": CIFAR100_TGZ_MD5,
              "checked_against": _md5_origin(table, CIFAR100_MD5), "labels": "fine_labels"}
    split = {"kind": "official", "test_fraction": None, "seed": None, "stratified": False}
    return _Images(train_x, np.asarray(train_y), test_x, np.asarray(test_y), classes, origin, CIFAR_TRANSFORM, split)


def _versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def _digits(test_fraction: float, seed: int) -> _Images:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise MissingExtraError(
            "source digits needs scikit-learn, which is not installed: pip install 'icepick[digits]'"
        ) from err
    from PIL import Image

    digits = load_digits()
    grey = np.rint(np.asarray(digits.images, dtype=np.float64) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    up = np.stack([np.asarray(Image.fromarray(img, mode="L").resize((32, 32), Image.Resampling.BILINEAR))
                   for img in grey])
    images = np.repeat(up[:, None], 3, axis=1).reshape(len(up), 3072)
    labels = np.asarray(digits.target, dtype=np.int64)
    classes = [str(c) for c in digits.target_names]
    train_x, train_y, test_x, test_y, split = _stratified(images, labels, classes, test_fraction, seed,
                                                          "scikit-learn digits")
    origin = {"loader": "sklearn.datasets.load_digits", "packages": _versions("scikit-learn", "pillow", "numpy")}
    return _Images(train_x, train_y, test_x, test_y, classes, origin, DIGITS_TRANSFORM, split)


def _image_extensions() -> set[str]:
    from PIL import Image

    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


def _to_32(image: Any) -> np.ndarray:
    """One PIL image -> uint8 [3072] (RGB, shorter side 32, centre crop), as torchvision's
    ``Resize(32)`` + ``CenterCrop(32)`` on a PIL image."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    if w <= h:
        size = (32, max(32, int(32 * h / w)))
    else:
        size = (max(32, int(32 * w / h)), 32)
    if size != (w, h):
        image = image.resize(size, Image.Resampling.BILINEAR)
    w, h = image.size
    left, top = int(round((w - 32) / 2.0)), int(round((h - 32) / 2.0))
    image = image.crop((left, top, left + 32, top + 32))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).reshape(3072)


def _imagefolder(path: Path, test_fraction: float, seed: int) -> _Images:
    from PIL import Image, UnidentifiedImageError

    if not path.is_dir():
        raise FileNotFoundError(
            f"path: {path} {'is not a folder' if path.exists() else 'does not exist'}; --source imagefolder needs a "
            f"folder with one sub-folder of images per class"
        )
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataSourceError(
            f"path: {path} holds no class folder; put each class's images in a sub-folder named after the class "
            f"({path}/CLASS/IMAGE.png)"
        )
    if len(classes) < 2:
        raise DataSourceError(f"path: {path} holds one class folder ({classes[0]}); a classifier needs at least two")
    extensions = _image_extensions()
    rows, labels = [], []
    for c, name in enumerate(classes):
        folder = path / name
        files = sorted(
            p for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in extensions
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not files:
            raise DataSourceError(
                f"{folder}: class folder '{name}' holds no image (png, jpg, jpeg, bmp, gif, webp, ...); add its "
                f"images or remove the folder"
            )
        for file in files:
            try:
                with Image.open(file) as image:
                    rows.append(_to_32(image))
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                reason = str(err).replace(str(file), "").replace("''", "").strip() or type(err).__name__
                raise DataSourceError(f"{file}: cannot read this image ({reason}); fix or remove it") from err
            labels.append(c)
    images, label_arr = np.stack(rows), np.asarray(labels, dtype=np.int64)
    train_x, train_y, test_x, test_y, split = _stratified(images, label_arr, classes, test_fraction, seed, str(path))
    origin = {"path": str(path.resolve()), "images": len(label_arr), "packages": _versions("pillow", "numpy")}
    return _Images(train_x, train_y, test_x, test_y, classes, origin, IMAGEFOLDER_TRANSFORM, split)


# ---------------------------------------------------------------- the import


def _options(source: str, path: Any, seed: int | None, test_fraction: float | None,
             flip: bool | None) -> tuple[Path | None, int, float, bool]:
    check_choice("source", source, SOURCES)
    if source == "imagefolder" and path is None:
        raise ConfigError("path: --source imagefolder needs --path DIR, a folder with one sub-folder of images per "
                          "class")
    if source == "digits" and path is not None:
        raise ConfigError("path: --source digits takes its images from scikit-learn; --path is for cifar10, "
                          "cifar100 and imagefolder")
    if source in ("cifar10", "cifar100"):
        for key, value in (("seed", seed), ("test_fraction", test_fraction)):
            if value is not None:
                raise ConfigError(f"{key}: {source} has its official test split; --seed and --test-fraction are for "
                                  f"digits and imagefolder")
    seed = DEFAULT_SPLIT_SEED if seed is None else seed
    test_fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
    check_int("seed", seed, 0)
    check_range("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    if flip is None:
        flip = source != "digits"  # a mirrored digit is another glyph
    return (None if path is None else Path(path)), seed, float(test_fraction), bool(flip)


def import_dataset(
    source: str,
    out: str | os.PathLike,
    path: str | os.PathLike | None = None,
    *,
    seed: int | None = None,
    test_fraction: float | None = None,
    flip: bool | None = None,
    force: bool = False,
    official_md5: Mapping[str, str] | None = None,
) -> DatasetInfo:
    """Import a labelled image set into ``out`` in the pipeline's on-disk format; return its info.

    Args:
        source: 'cifar10', 'cifar100', 'digits' or 'imagefolder' (see the module docstring).
        out: the data folder to write (``out/cifar-10-batches-py/`` and ``out/manifest.json``).
        path: cifar10/cifar100: a folder holding the official folder or archive, or the
            archive (downloaded through torchvision when None); imagefolder: the folder of
            class folders (required); digits: must be None.
        seed, test_fraction: the stratified split of digits and imagefolder (default 0 and
            0.2); cifar10 and cifar100 keep their official split (must be None).
        flip: whether random horizontal flips suit the images (default: yes, but not digits).
        force: write even where ``out`` holds other data (other files, a data set of another
            source); without it only a missing or empty folder, or an earlier import of the same
            source, is replaced.
        official_md5: the md5 list the cifar10 (file name -> md5 of the 7 CIFAR-10 files) or
            cifar100 (``train``, ``test``, ``meta``) files are checked against; the official
            list by default.

    Returns:
        The imported data set's :class:`~icepick.data.DatasetInfo` (its digest: the sha256 of
        ``out/manifest.json``).
    """
    path, seed, test_fraction, flip = _options(source, path, seed, test_fraction, flip)
    out = Path(out)
    check_destination(out, source, force, "data import")
    table = dict(official_md5) if official_md5 is not None else None
    if source == "cifar10" and not force and (path is None or (out.exists() and path.resolve() == out.resolve())):
        images = _cifar10_in_place(out, table or OFFICIAL_MD5)
        if images is not None:  # the official files are already where they belong: vouch for them, move nothing
            _write_manifest(out, source, images, flip)
            return dataset_info(out)
    if path is not None and (path.resolve() == out.resolve() or out.resolve() in path.resolve().parents):
        raise ConfigError(f"path: {path} lies inside --out {out}; the import replaces what --out holds, the images "
                          f"it reads included: choose another --out")
    with staged_folder(out) as stage:
        if source == "cifar10":
            images = _cifar10(path, stage, table or OFFICIAL_MD5)
        elif source == "cifar100":
            images = _cifar100(path, stage, table or CIFAR100_MD5)
        elif source == "digits":
            images = _digits(test_fraction, seed)
        else:
            images = _imagefolder(path, test_fraction, seed)  # type: ignore[arg-type]
        for scratch in (".extract", ".download"):
            shutil.rmtree(stage / scratch, ignore_errors=True)
        if not images.copied:
            write_batches(stage / BASE_FOLDER, images.train_x, images.train_y, images.test_x, images.test_y,
                          images.classes, f"icepick import of {source}", filename=source + "_{split}_{index:06d}.png")
        _write_manifest(stage, source, images, flip)  # last: a folder without it is an incomplete import
    return dataset_info(out)


def _write_manifest(root: Path, source: str, images: _Images, flip: bool) -> str:
    classes = images.classes
    train_counts = np.bincount(images.train_y, minlength=len(classes))
    test_counts = np.bincount(images.test_y, minlength=len(classes))
    mean, std = channel_stats(images.train_x)
    manifest = {
        "format": FORMAT,
        "source": source,
        "origin": images.origin,
        "classes": list(classes),
        "num_classes": len(classes),
        "image_size": [3, 32, 32],
        "transform": images.transform,
        "counts": {
            "train": int(len(images.train_y)),
            "test": int(len(images.test_y)),
            "per_class": {name: {"train": int(train_counts[c]), "test": int(test_counts[c])}
                          for c, name in enumerate(classes)},
        },
        "split": images.split,
        "augmentation": {"crop_padding": CROP_PADDING, "flip": flip},
        "normalization": {"mean": list(mean), "std": list(std),
                          "computed_from": "the training split, pixel values scaled to 0..1"},
        "files": {f"{BASE_FOLDER}/{name}": md5(root / BASE_FOLDER / name) for name in DATA_FILES},
    }
    return write_manifest(root, manifest)
