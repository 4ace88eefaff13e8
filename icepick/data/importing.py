"""``icepick data import``: a labelled image set, written once into the pipeline's on-disk format.

Sources:

* ``cifar10``: the official files (torchvision's download, or ``--path`` holding
  ``cifar-10-batches-py/`` or the ``.tar.gz``), checked against the official md5 list and kept
  as they are (layout ``cifar-10-python``).
* ``cifar100``: the official ``cifar-100-python/{train,test,meta}`` (torchvision's download or
  ``--path``), checked against torchvision's md5 list, converted (100 fine labels).
* ``fashion-mnist``, ``mnist``: the four official IDX files (``--path``: a folder holding them,
  gzipped or not, e.g. Debian's ``/usr/share/datasets/fashion-mnist``; else torchvision's
  download), each checked against the md5 of its official uncompressed content; the official
  60,000 / 10,000 split kept; 28x28 grey.
* ``digits``: scikit-learn's ``load_digits()`` (1,797 real 8x8 greyscale digits), upscaled to
  32x32 and made 3-channel by default, split by class (the ``digits`` extra).
* ``imagefolder``: ``--path`` with one sub-folder of images per class, split by class; or with
  ``train/``, ``test/`` (and ``val/``) sub-folders of class folders, whose split is kept.
* ``imagenet``, ``tinyimagenet``: ImageNet-1k (ILSVRC2012) and Tiny-ImageNet in their official
  layouts (:mod:`icepick.data.imagenet`), RGB, at 224x224 and 64x64 by default; the validation
  set is the test split. Written split by split into the ``.npy`` files with bounded memory,
  decoded in ``workers`` processes; ``train_fraction`` keeps a seeded, stratified share of the
  training images (``seed``, default 0).

Images keep their own size and channels unless told otherwise: ``--size N`` makes them NxN
(``--fit resize``: shorter side to N, centre crop, as torchvision's ``Resize(N)`` +
``CenterCrop(N)``; ``--fit pad``: centred on a black NxN canvas, no resampling);
``--channels 1`` or ``3`` makes them grey or RGB. The import's log line and the manifest say
what was done. Every source but cifar10 is written as ``.npy`` files
(:mod:`icepick.data.arrays`), with ``OUT/manifest.json`` (:mod:`icepick.data.manifest`), built
in a temporary sibling folder and moved into place with the manifest written last.
"""

from __future__ import annotations

import gzip
import json
import logging
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
from icepick.data.arrays import SPLITS, array_files, write_arrays
from icepick.data.augment import default_augmentation, describe
from icepick.data.cifar import DOWNLOAD_TIMEOUT_S, OFFICIAL_MD5, TGZ, TGZ_MD5, URL, official_digest
from icepick.data.destination import DestinationError, check_destination, staged_folder
from icepick.data.layout import (
    BASE_FOLDER,
    DATA_FILES,
    MANIFEST,
    META_FILE,
    TEST_FILES,
    TRAIN_FILES,
    DataIntegrityError,
    md5,
    read_batches,
    read_label_names,
)
from icepick.data.manifest import FORMAT, DatasetInfo, channel_stats, dataset_info, write_manifest

__all__ = [
    "SOURCES",
    "CIFAR100_MD5",
    "IDX_MD5",
    "FITS",
    "DataSourceError",
    "MissingExtraError",
    "import_dataset",
    "stratified_split",
    "read_idx",
]

log = logging.getLogger(__name__)

SOURCES = ("cifar10", "cifar100", "fashion-mnist", "mnist", "digits", "imagefolder", "imagenet", "tinyimagenet")
#: Sources read image by image into the .npy files (too large for memory).
STREAMED = ("imagenet", "tinyimagenet")
FITS = ("resize", "pad")

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
#: The official IDX files (uncompressed) and the md5 of their content. The gzipped files'
#: own md5 depends on how they were compressed (Debian's package recompresses them), so the
#: content is what is checked.
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_MD5: dict[str, dict[str, str]] = {
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
}
IDX_CLASSES: dict[str, list[str]] = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
    "mnist": [str(d) for d in range(10)],
}
IDX_URLS = {"fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/"}
IDX_TORCHVISION = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}

SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
FEW_IMAGES = 5  # a class with fewer images than this in a split gets a warning
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0
DIGITS_SIZE, DIGITS_CHANNELS = 32, 3  # the mini's choice: as the CIFAR models were built for


class DataSourceError(ValueError):
    """The images to import are missing, empty or unreadable; the message names the folder or file."""


class MissingExtraError(DataSourceError):
    """An optional dependency a source needs is not installed; the message names the extra."""


@dataclass(frozen=True)
class _Shape:
    """What the import does to every image: ``size`` (None: the images' own), ``channels``
    (None: the images' own), ``fit`` ('resize' or 'pad')."""

    size: int | None
    channels: int | None
    fit: str


@dataclass
class _Images:
    """What a source yields: each split as uint8 [N, C, H, W] with labels, the classes, and provenance."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    classes: list[str]
    origin: dict[str, Any]
    transform: str
    split: dict[str, Any]
    copied: dict[str, str] = field(default_factory=dict)  # official files kept as they are (name: md5)
    written: bool = False  # the .npy files are already in the staged folder (splits memory-mapped from them)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.splits["train"][0].shape[1:])  # type: ignore[return-value]


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
                where: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    _check_class_sizes(labels, classes, where)
    train_idx, test_idx = stratified_split(labels, len(classes), test_fraction, seed)
    split = {"kind": "stratified", "test_fraction": test_fraction, "seed": seed, "stratified": True}
    return {"train": (images[train_idx], labels[train_idx]), "test": (images[test_idx], labels[test_idx])}, split


def _official_split(kind: str = "official") -> dict[str, Any]:
    return {"kind": kind, "test_fraction": None, "seed": None, "stratified": False}


# ---------------------------------------------------------------- what is done to each image


def _resize_box(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """torchvision's ``Resize(size)`` + ``CenterCrop(size)`` on a PIL image: the resized (w, h)
    (shorter side ``size``) and the crop box."""
    if width <= height:
        new = (size, max(size, int(size * height / width)))
    else:
        new = (max(size, int(size * width / height)), size)
    left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    return new, (left, top, left + size, top + size)


def _fit_image(image: Any, size: int | None, fit: str, where: str) -> Any:
    """One PIL image at ``size`` x ``size`` (None: as it is), resized and centre-cropped or padded."""
    from PIL import Image

    if size is None or image.size == (size, size):
        return image
    width, height = image.size
    if fit == "pad":
        if width > size or height > size:
            raise DataSourceError(f"{where}: a {width}x{height} image does not fit in {size}x{size}; --fit pad only "
                                  f"pads, use --fit resize or a larger --size")
        canvas = Image.new(image.mode, (size, size))
        canvas.paste(image, ((size - width) // 2, (size - height) // 2))
        return canvas
    new, box = _resize_box(width, height, size)
    if new != (width, height):
        image = image.resize(new, Image.Resampling.BILINEAR)
    return image.crop(box)


def _to_array(image: Any, channels: int) -> np.ndarray:
    """A PIL image (already converted to 'L' or 'RGB') as uint8 [C, H, W]."""
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _convert(image: Any, channels: int) -> Any:
    """A PIL image in 'L' (1 channel) or 'RGB' (3): PIL's conversions (RGB -> L: ITU-R 601-2 luma)."""
    mode = "L" if channels == 1 else "RGB"
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: scale to 8 bits, do not clip (also for RGB)
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        from PIL import Image

        image = Image.fromarray(np.rint(array * (255.0 / top)).clip(0, 255).astype(np.uint8))
    return image if image.mode == mode else image.convert(mode)


def _transform_text(own: tuple[int, int, int], shape: _Shape, out: tuple[int, int, int], before: str = "") -> str:
    """What the import did to the images, in words (the manifest's ``transform``, in the command's log line)."""
    steps = [before] if before else []
    c0, h0, w0 = own
    c1, h1, w1 = out
    if (h0, w0) != (h1, w1):
        if shape.fit == "pad":
            steps.append(f"pad {w0}x{h0} to {w1}x{h1} (centred, black)")
        else:
            steps.append(f"resize the shorter side to {h1} (bilinear, antialiased) and centre-crop {w1}x{h1}")
    if c0 != c1:
        steps.append("repeat the grey channel 3 times" if c1 == 3 else "convert to grey (ITU-R 601-2 luma)")
    if not steps:
        return f"none (kept at {w1}x{h1}, {c1} channel{'s' if c1 != 1 else ''})"
    return "; ".join(steps)


def _transform_arrays(images: np.ndarray, shape: _Shape, default_size: int | None, default_channels: int | None,
                      where: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """uint8 images [N, C, H, W] of a source held in memory (digits, IDX) at the import's size and
    channels; returns them and their shape before."""
    from PIL import Image

    own = tuple(int(v) for v in images.shape[1:])
    size = shape.size if shape.size is not None else default_size
    channels = shape.channels if shape.channels is not None else (default_channels or own[0])
    out = images
    if size is not None and own[1:] != (size, size):
        if shape.fit == "pad":
            if own[1] > size or own[2] > size:
                raise DataSourceError(f"{where}: {own[2]}x{own[1]} images do not fit in {size}x{size}; --fit pad only "
                                      f"pads, use --fit resize or a larger --size")
            top, left = (size - own[1]) // 2, (size - own[2]) // 2
            out = np.pad(images, ((0, 0), (0, 0), (top, size - own[1] - top), (left, size - own[2] - left)))
        else:
            rows = []
            for image in images:
                pil = Image.fromarray(image[0] if own[0] == 1 else image.transpose(1, 2, 0))
                rows.append(_to_array(_fit_image(pil, size, "resize", where), own[0]))
            out = np.stack(rows)
    if channels != out.shape[1]:
        if channels == 3 and out.shape[1] == 1:
            out = np.repeat(out, 3, axis=1)
        else:
            out = np.stack([_to_array(_convert(Image.fromarray(x.transpose(1, 2, 0)), channels), channels) for x in out])
    return np.ascontiguousarray(out, dtype=np.uint8), own  # type: ignore[return-value]

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


def _no_reshaping(source: str, shape: _Shape) -> None:
    for key, value in (("size", shape.size), ("channels", shape.channels)):
        if value is not None:
            raise ConfigError(f"{key}: {source} keeps its official 32x32 RGB images; --size, --channels and --fit are "
                              f"for fashion-mnist, mnist, digits and imagefolder")


def _cifar10_images(folder: Path, table: Mapping[str, str], sums: dict[str, str]) -> _Images:
    classes = read_label_names(folder / META_FILE)
    train_x, train_y = read_batches(folder, TRAIN_FILES, len(classes))
    test_x, test_y = read_batches(folder, TEST_FILES, len(classes))
    origin = {"url": URL, "archive_md5": TGZ_MD5, "checked_against": _md5_origin(table, OFFICIAL_MD5)}
    splits = {"train": (train_x.reshape(-1, 3, 32, 32), np.asarray(train_y)),
              "test": (test_x.reshape(-1, 3, 32, 32), np.asarray(test_y))}
    return _Images(splits, classes, origin, "none (the official files, 32x32 RGB)", _official_split(), copied=sums)


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
    splits = {"train": (train_x.reshape(-1, 3, 32, 32), np.asarray(train_y)),
              "test": (test_x.reshape(-1, 3, 32, 32), np.asarray(test_y))}
    return _Images(splits, classes, origin, "none (the official files, 32x32 RGB)", _official_split())


def read_idx(path: Path, dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes (``dims`` 3: images [N, H, W]; 1: labels [N]), gzipped or not.

    Raises DataSourceError naming the file when it is not such a file (magic number, sizes).
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataSourceError(f"{path}: cannot decompress it ({err}); download it again") from err
    header = 4 + 4 * dims
    if len(raw) < header or raw[:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != dims:
        raise DataSourceError(f"{path}: not an IDX file of unsigned bytes with {dims} dimension(s) (magic "
                              f"{raw[:4].hex() or 'missing'}, expected 0000080{dims}); download it again")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    if len(raw) - header != math.prod(shape):
        raise DataSourceError(f"{path}: holds {len(raw) - header} bytes of data where its header says "
                              f"{'x'.join(map(str, shape))}; the file is truncated or damaged: download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_file(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder / name}(.gz) is missing; the folder must hold the four official IDX files "
                            f"({', '.join(IDX_FILES)}, gzipped or not)")


def _idx_content_md5(path: Path) -> str:
    import hashlib

    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataSourceError(f"{path}: cannot decompress it ({err}); download it again") from err
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()


def _idx_split(source: str, images: np.ndarray, labels: np.ndarray, image_file: Path, label_file: Path,
               classes: list[str]) -> None:
    """Refuse one split's IDX arrays unless they are images with one label each, labels in range."""
    if len(images) == 0:
        raise DataIntegrityError(f"{image_file}: holds no images; download the {source} files again")
    if len(images) != len(labels):
        raise DataIntegrityError(f"{label_file}: {len(labels)} labels for the {len(images)} images of "
                                 f"{image_file.name}; download the {source} files again")
    if int(labels.max()) >= len(classes):
        raise DataIntegrityError(f"{label_file}: label {int(labels.max())} is out of range for {len(classes)} classes "
                                 f"(labels must lie in 0..{len(classes) - 1}); download the {source} files again")


def _idx(source: str, path: Path | None, stage: Path, table: Mapping[str, str], shape: _Shape) -> _Images:
    given = path
    if path is None:
        _download(IDX_TORCHVISION[source], stage / ".download", IDX_URLS[source], "torchvision's list")
        path = stage / ".download" / IDX_TORCHVISION[source] / "raw"
    elif not path.is_dir():
        raise FileNotFoundError(f"path: {path} {'is not a folder' if path.exists() else 'does not exist'}; give the "
                                f"folder holding the four IDX files (e.g. `dpkg -L dataset-{source}`)")
    files = {name: _idx_file(path, name) for name in IDX_FILES}
    for name, file in files.items():
        actual = _idx_content_md5(file)
        if actual != table[name]:
            raise DataIntegrityError(f"{file} is damaged or is not the official {source} file (md5 of its content "
                                     f"{actual}, expected {table[name]}); download it again")
    arrays = {name: read_idx(file, 3 if "images" in name else 1) for name, file in files.items()}
    classes = IDX_CLASSES[source]
    sizes = {tuple(arrays[name].shape[1:]) for name in IDX_FILES if "images" in name}
    if len(sizes) > 1:
        raise DataIntegrityError(f"{path}: the training and test images differ in size "
                                 f"({', '.join('x'.join(map(str, s)) for s in sorted(sizes))}); download the {source} "
                                 f"files again")
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        image_name, label_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
        images, labels = arrays[image_name], arrays[label_name]
        _idx_split(source, images, labels, files[image_name], files[label_name], classes)
        out, own = _transform_arrays(images[:, None], shape, None, None, str(files[image_name]))
        splits[split] = (out, labels.astype(np.int64))
    origin = {"url": IDX_URLS[source], "checked_against": _md5_origin(table, IDX_MD5[source])
              + " of the uncompressed IDX files"}
    if given is not None:  # a download's folder is a temporary one: not part of the record
        origin = {"path": str(given.resolve()), **origin}
    return _Images(splits, classes, origin, _transform_text(own, shape, splits["train"][0].shape[1:]), _official_split())


def _versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def _digits(test_fraction: float, seed: int, shape: _Shape) -> _Images:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise MissingExtraError(
            "source digits needs scikit-learn, which is not installed: pip install 'icepick[digits]'"
        ) from err
    digits = load_digits()
    grey = np.rint(np.asarray(digits.images, dtype=np.float64) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images, own = _transform_arrays(grey[:, None], shape, DIGITS_SIZE, DIGITS_CHANNELS, "scikit-learn digits")
    labels = np.asarray(digits.target, dtype=np.int64)
    classes = [str(c) for c in digits.target_names]
    splits, split = _stratified(images, labels, classes, test_fraction, seed, "scikit-learn digits")
    origin = {"loader": "sklearn.datasets.load_digits", "packages": _versions("scikit-learn", "pillow", "numpy")}
    text = _transform_text(own, shape if shape.size else _Shape(DIGITS_SIZE, shape.channels, shape.fit),
                           images.shape[1:], "scale the values 0..16 to 0..255 (rounded)")
    return _Images(splits, classes, origin, text, split)


def _image_extensions() -> set[str]:
    from PIL import Image

    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _class_folders(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and _visible(p))


def _split_layout(path: Path) -> dict[str, Path] | None:
    """``{split: folder}`` when ``path`` holds train/ and test/ (or val/) folders of class folders, else None."""
    found: dict[str, Path] = {}
    names = {p.name.lower(): p for p in path.iterdir() if p.is_dir() and _visible(p)}
    for split, aliases in SPLIT_FOLDERS.items():
        for alias in aliases:
            if alias in names:
                found[split] = names[alias]
                break
    if "train" not in found or len(found) < 2:
        return None
    others = sorted(set(names) - {p.name.lower() for p in found.values()})
    if others:
        raise DataSourceError(f"path: {path} holds the split folders {', '.join(p.name for p in found.values())} and "
                              f"also {', '.join(others)}; give a folder of class folders, or one holding only train/, "
                              f"val/ and test/")
    if "test" not in found:  # train/ and val/ only: the held-out split is the test split
        found["test"] = found.pop("val")
    return found


def _image_files(folder: Path, name: str, extensions: set[str]) -> list[Path]:
    nested = sorted(p.name for p in folder.iterdir() if p.is_dir() and _visible(p))
    if nested:
        raise DataSourceError(f"{folder}: class folder '{name}' holds sub-folders ({', '.join(nested[:3])}"
                              f"{', ...' if len(nested) > 3 else ''}); give the folder whose sub-folders are the "
                              f"classes, with the images directly inside them")
    files = sorted(p for p in folder.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in extensions)
    if not files:
        raise DataSourceError(
            f"{folder}: class folder '{name}' holds no image (png, jpg, jpeg, bmp, gif, webp, ...); add its images or "
            f"remove the folder"
        )
    return files


def _read_error(file: Path, err: BaseException) -> DataSourceError:
    reason = str(err).replace(str(file), "").replace("''", "").strip() or type(err).__name__
    return DataSourceError(f"{file}: cannot read this image ({reason}); fix or remove it")


def _scan(files: list[Path]) -> tuple[set[tuple[int, int]], bool, dict[tuple[int, int], Path]]:
    """The images' sizes (w, h), whether every one is grey, and an example file per size (headers only)."""
    from PIL import Image, UnidentifiedImageError

    sizes: dict[tuple[int, int], Path] = {}
    grey = True
    for file in files:
        try:
            with Image.open(file) as image:
                sizes.setdefault(image.size, file)
                grey &= image.mode in GREY_MODES
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise _read_error(file, err) from err
    return set(sizes), grey, sizes


def _imagefolder(path: Path, test_fraction: float | None, seed: int | None, shape: _Shape) -> _Images:
    from PIL import Image, UnidentifiedImageError

    if not path.is_dir():
        raise FileNotFoundError(
            f"path: {path} {'is not a folder' if path.exists() else 'does not exist'}; --source imagefolder needs a "
            f"folder with one sub-folder of images per class (or train/ and test/ folders of them)"
        )
    layout = _split_layout(path)
    roots = layout or {"all": path}
    if layout is not None and (seed is not None or test_fraction is not None):
        raise ConfigError(f"test_fraction: {path} keeps its own split ({', '.join(f'{k}/' for k in layout)}); "
                          f"--seed and --test-fraction are for a folder of class folders")
    per_root = {split: _class_folders(root) for split, root in roots.items()}
    classes = sorted(set().union(*per_root.values()))
    if not classes:
        raise DataSourceError(
            f"path: {path} holds no class folder; put each class's images in a sub-folder named after the class "
            f"({path}/CLASS/IMAGE.png)"
        )
    if len(classes) < 2:
        raise DataSourceError(f"path: {path} holds one class folder ({classes[0]}); a classifier needs at least two")
    for split, names in per_root.items():
        if layout is not None and not names:
            raise DataSourceError(f"{roots[split]}: holds no class folder; put the {split} images of each class in "
                                  f"{roots[split]}/CLASS/, or remove the folder")
        missing = sorted(set(classes) - set(names))
        if split != "val" and missing:
            raise DataSourceError(f"{roots[split]}: has no folder for class(es) {', '.join(missing[:3])} that another "
                                  f"split has; every class needs images in train/ and test/")
    extensions = _image_extensions()
    files = {split: [(c, f) for c, name in enumerate(classes) if name in per_root[split]
                     for f in _image_files(roots[split] / name, name, extensions)] for split in roots}
    every = [f for entries in files.values() for _, f in entries]
    sizes, grey, examples = _scan(every)
    channels = shape.channels or (1 if grey else 3)
    size = shape.size
    if size is None and len(sizes) > 1:
        (a, fa), (b, fb) = sorted(examples.items())[:2]
        raise DataSourceError(f"path: the images in {path} differ in size ({a[0]}x{a[1]} {fa.name}, {b[0]}x{b[1]} {fb.name}, ...); "
                              f"give --size N to make them all NxN (--fit resize or pad)")
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, entries in files.items():
        rows, labels = [], []
        for c, file in entries:
            try:
                with Image.open(file) as image:
                    image = _fit_image(_convert(image, channels), size, shape.fit, str(file))
                    rows.append(_to_array(image, channels))
            except DataSourceError:  # the image was read but does not fit: the message says so
                raise
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                raise _read_error(file, err) from err
            labels.append(c)
        splits[split] = (np.stack(rows), np.asarray(labels, dtype=np.int64))
    (w0, h0) = next(iter(sizes)) if len(sizes) == 1 else (0, 0)
    own = (1 if grey else 3, h0, w0) if len(sizes) == 1 else (channels, -1, -1)
    out_shape = tuple(splits[next(iter(splits))][0].shape[1:])
    if layout is None:
        images, labels = splits.pop("all")
        splits, split_record = _stratified(images, labels, classes,
                                           DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction,
                                           DEFAULT_SPLIT_SEED if seed is None else seed, str(path))
    else:
        split_record = {**_official_split("folders"), "folders": {k: v.name for k, v in layout.items()}}
    origin = {"path": str(path.resolve()), "images": len(every), "packages": _versions("pillow", "numpy")}
    if len(sizes) == 1:
        text = _transform_text(own, shape, out_shape)  # type: ignore[arg-type]
    else:
        how = (f"resize the shorter side to {size} (bilinear, antialiased) and centre-crop {size}x{size}"
               if shape.fit == "resize" else f"pad to {size}x{size} (centred, black)")
        text = f"images of {len(sizes)} sizes: {how}; {'grey' if channels == 1 else 'RGB'}"
    return _Images(splits, classes, origin, text, split_record)


def _streamed(source: str, path: Path, stage: Path, shape: _Shape, train_fraction: float | None, seed: int | None,
              workers: int | None) -> _Images:
    """ImageNet-1k or Tiny-ImageNet in the official layout, decoded split by split into ``stage``."""
    from icepick.data import imagenet

    listing_of = imagenet.imagenet_listing if source == "imagenet" else imagenet.tinyimagenet_listing
    try:
        listing = listing_of(path, _image_extensions())
    except imagenet._SourceError as err:
        raise DataSourceError(str(err)) from None
    except ImportError as err:
        raise MissingExtraError(f"{path / imagenet.META}: reading the ILSVRC2012 devkit needs scipy, which is not "
                                f"installed: pip install 'icepick[imagenet]'") from err
    size = shape.size or (imagenet.IMAGENET_SIZE if source == "imagenet" else imagenet.TINY_SIZE)
    entries = dict(listing.splits)
    split = _official_split()
    split["test_from"] = f"the validation images ({listing.labels_from})"
    if train_fraction is not None:
        seed = DEFAULT_SPLIT_SEED if seed is None else seed
        labels = np.asarray([label for _, label in entries["train"]], dtype=np.int64)
        _check_class_sizes(labels, listing.classes, str(path / "train"))
        keep = imagenet.train_subset(labels, len(listing.classes), train_fraction, seed)
        entries["train"] = [entries["train"][i] for i in keep]
        split.update({"train_fraction": train_fraction, "train_seed": seed, "train_images_of": len(labels)})
    n_workers = workers or imagenet.default_workers()
    splits = {}
    for name, pairs in entries.items():
        labels = imagenet.write_split(stage, name, pairs, size, n_workers, progress=log.isEnabledFor(logging.INFO),
                                      on_error=DataSourceError)
        images = np.load(stage / f"{name}_images.npy", mmap_mode="r")
        splits[name] = (images, labels)
    origin = {"path": str(path.resolve()), "images": sum(len(v) for v in listing.splits.values()),
              "packages": _versions("pillow", "numpy")}
    text = (f"RGB; resize the shorter side to {size} (bilinear, antialiased) and centre-crop {size}x{size} "
            f"(images already {size}x{size} kept as they are)")
    return _Images(splits, listing.classes, origin, text, split, written=True)


# ---------------------------------------------------------------- the import


def _streamed_options(source: str, path: Any, seed: int | None, train_fraction: float | None,
                      channels: int | None, fit: str | None, workers: int | None) -> None:
    """Options only ImageNet and Tiny-ImageNet take, and what they refuse."""
    if source not in STREAMED:
        for key, value in (("train_fraction", train_fraction), ("workers", workers)):
            if value is not None:
                raise ConfigError(f"{key}: --{key.replace('_', '-')} is for imagenet and tinyimagenet, not {source}")
        return
    if path is None:
        where = "train/<wnid>/ and val/" if source == "imagenet" else "wnids.txt, train/ and val/"
        raise ConfigError(f"path: --source {source} needs --path DIR, the folder holding {where} (no download)")
    if train_fraction is not None:
        check_range("train_fraction", train_fraction, 0.0, 1.0, low_open=True, high_open=True)
    elif seed is not None:
        raise ConfigError(f"seed: {source} keeps its official split; --seed chooses the --train-fraction subset, give "
                          f"that too")
    if channels not in (None, 3):
        raise ConfigError(f"channels: {source}'s images are RGB and its models take 3 channels; leave --channels out")
    if fit not in (None, "resize"):
        raise ConfigError(f"fit: {source}'s images are resized (shorter side) and centre-cropped; --fit {fit} is for "
                          f"imagefolder and the grey sets")
    if workers is not None:
        check_int("workers", workers, 1)


def _options(source: str, path: Any, seed: int | None, test_fraction: float | None, flip: bool | None,
             size: int | None, channels: int | None, fit: str | None, train_fraction: float | None = None,
             workers: int | None = None) -> tuple[Path | None, _Shape]:
    check_choice("source", source, SOURCES)
    if source == "imagefolder" and path is None:
        raise ConfigError("path: --source imagefolder needs --path DIR, a folder with one sub-folder of images per "
                          "class")
    _streamed_options(source, path, seed, train_fraction, channels, fit, workers)
    if source == "digits" and path is not None:
        raise ConfigError("path: --source digits takes its images from scikit-learn; --path is for cifar10, "
                          "cifar100, fashion-mnist, mnist and imagefolder")
    if source not in ("digits", "imagefolder"):
        for key, value in (("seed", seed if source not in STREAMED else None), ("test_fraction", test_fraction)):
            if value is not None:
                raise ConfigError(f"{key}: {source} has its official test split; --seed and --test-fraction are for "
                                  f"digits and imagefolder")
    if seed is not None:
        check_int("seed", seed, 0)
    if test_fraction is not None:
        check_range("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    if size is not None:
        check_int("size", size, 1)
    if channels is not None:
        check_choice("channels", channels, (1, 3))
    if fit is not None:
        check_choice("fit", fit, FITS)
    if flip is not None and not isinstance(flip, bool):
        raise ConfigError(f"flip: {flip!r} must be true or false")
    shape = _Shape(size, channels, fit or "resize")
    if source in ("cifar10", "cifar100"):
        _no_reshaping(source, shape)
        if fit is not None:
            raise ConfigError(f"fit: {source} keeps its official 32x32 RGB images; --fit is for resized images")
    if fit is not None and size is None and source not in ("digits", *STREAMED):  # digits: 32 by default
        raise ConfigError(f"fit: --fit {fit} says how the images reach --size N; give --size too (without it "
                          f"they keep their own size)")
    return (None if path is None else Path(path)), shape


def _check_table(source: str, table: Mapping[str, str] | None) -> None:
    """Refuse an ``official_md5`` list that does not name exactly the source's official files."""
    if table is None:
        return
    official = {"cifar10": OFFICIAL_MD5, "cifar100": CIFAR100_MD5, **IDX_MD5}.get(source)
    if official is None:
        raise ConfigError(f"official_md5: {source} has no official files to check; leave it out")
    if set(table) != set(official):
        raise ConfigError(f"official_md5: the list for {source} must give an md5 for each of its files "
                          f"({', '.join(official)}), not for {', '.join(sorted(table)) or 'none'}")


def _default_flip(source: str) -> bool:
    return source not in ("digits", "mnist")  # a mirrored digit is another glyph


def import_dataset(
    source: str,
    out: str | os.PathLike,
    path: str | os.PathLike | None = None,
    *,
    seed: int | None = None,
    test_fraction: float | None = None,
    flip: bool | None = None,
    size: int | None = None,
    channels: int | None = None,
    fit: str | None = None,
    force: bool = False,
    official_md5: Mapping[str, str] | None = None,
    train_fraction: float | None = None,
    workers: int | None = None,
) -> DatasetInfo:
    """Import a labelled image set into ``out`` in the pipeline's on-disk format; return its info.

    Args:
        source: one of :data:`SOURCES` (see the module docstring).
        out: the data folder to write (``out/manifest.json`` and the images).
        path: cifar10/cifar100: a folder holding the official folder or archive, or the
            archive (downloaded through torchvision when None); fashion-mnist/mnist: the folder
            holding the four IDX files (downloaded when None); imagefolder: the folder of class
            folders, or of train/ and test/ (and val/) folders of them (required); digits: None.
        seed, test_fraction: the stratified split of digits and of a folder of class folders
            (default 0 and 0.2); the other sources keep their official split (must be None),
            but imagenet and tinyimagenet take ``seed`` for their ``train_fraction`` subset.
        flip: whether random horizontal flips suit the images (default: yes, but not digits or mnist).
        size: make every image ``size`` x ``size`` (default: the images' own; digits: 32).
        channels: 1 (grey) or 3 (RGB) (default: the images' own; digits: 3).
        fit: how ``size`` is reached: 'resize' (shorter side, centre crop; default) or 'pad'.
        force: write even where ``out`` holds other data (other files, a data set of another
            source, or an earlier import of other images, split or settings); without it only a
            missing or empty folder, or the same import again, is written.
        official_md5: the md5 list the official files are checked against (cifar10: file name
            -> md5 of the 7 CIFAR-10 files; cifar100: ``train``, ``test``, ``meta``;
            fashion-mnist/mnist: the 4 IDX file names -> md5 of their uncompressed content);
            the official list by default.
        train_fraction: imagenet, tinyimagenet: keep this share of the training images, each
            class in proportion, chosen by ``seed`` (default 0); None keeps them all.
        workers: imagenet, tinyimagenet: processes that decode the images (default: the CPUs,
            at most 8; 1 decodes in this process).

    Returns:
        The imported data set's :class:`~icepick.data.DatasetInfo` (its digest: the sha256 of
        ``out/manifest.json``).
    """
    path, shape = _options(source, path, seed, test_fraction, flip, size, channels, fit, train_fraction, workers)
    flip_value = _default_flip(source) if flip is None else flip
    options = {"size": size, "channels": channels, "fit": fit, "flip": flip, "train_fraction": train_fraction}
    out = Path(out)
    check_destination(out, source, force, "data import")
    table = dict(official_md5) if official_md5 is not None else None
    _check_table(source, table)
    if source == "cifar10" and not force and (path is None or (out.exists() and path.resolve() == out.resolve())):
        images = _cifar10_in_place(out, table or OFFICIAL_MD5)
        if images is not None:  # the official files are already where they belong: vouch for them, move nothing
            _guard_reimport(out, _manifest(source, images, flip_value, options, out), force)
            write_manifest(out, _manifest(source, images, flip_value, options, out))
            return _announce(out, images)
    if path is not None and (path.resolve() == out.resolve() or out.resolve() in path.resolve().parents):
        raise ConfigError(f"path: {path} lies inside --out {out}; the import replaces what --out holds, the images "
                          f"it reads included: choose another --out")
    with staged_folder(out) as stage:
        if source == "cifar10":
            images = _cifar10(path, stage, table or OFFICIAL_MD5)
        elif source == "cifar100":
            images = _cifar100(path, stage, table or CIFAR100_MD5)
        elif source in IDX_MD5:
            images = _idx(source, path, stage, table or IDX_MD5[source], shape)
        elif source in STREAMED:
            images = _streamed(source, path, stage, shape, train_fraction, seed, workers)  # type: ignore[arg-type]
        elif source == "digits":
            images = _digits(DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction,
                             DEFAULT_SPLIT_SEED if seed is None else seed, shape)
        else:
            images = _imagefolder(path, test_fraction, seed, shape)  # type: ignore[arg-type]
        for scratch in (".extract", ".download"):
            shutil.rmtree(stage / scratch, ignore_errors=True)
        if not images.copied and not images.written:
            for split, (x, y) in images.splits.items():
                write_arrays(stage, split, x, y)
        manifest = _manifest(source, images, flip_value, options, stage)
        _guard_reimport(out, manifest, force)
        write_manifest(stage, manifest)  # last: a folder without it is an incomplete import
    return _announce(out, images)


def _announce(out: Path, images: _Images) -> DatasetInfo:
    """The imported data set's info, after warning about classes with very few images (what was
    done to the images is the manifest's ``transform``, which ``icepick data import`` logs)."""
    info = dataset_info(out)
    for split, (_, labels) in images.splits.items():
        counts = np.bincount(labels, minlength=len(images.classes))
        few = [f"'{images.classes[c]}' ({int(n)})" for c, n in enumerate(counts) if n < FEW_IMAGES]
        if few:
            log.warning("%s split: class%s %s hold%s fewer than %d images; accuracies on %s will be noisy",
                        split, "es" if len(few) > 1 else "", ", ".join(few[:5]), "" if len(few) > 1 else "s",
                        FEW_IMAGES, "them")
    return info


#: What makes two imports the same data set (the rest of a manifest is provenance: package
#: versions, the source's path, derived numbers).
_SAME_DATA = (("format", "format"), ("layout", "layout"), ("classes", "classes"), ("image_shape", "image size"),
              ("split", "split"), ("files", "images"), ("augmentation", "augmentation"))


def _guard_reimport(out: Path, manifest: dict[str, Any], force: bool) -> None:
    """Refuse to replace an import of the same source whose images, split or settings differ
    (models trained on it would meet test images they were trained on), unless ``force``.

    The same images, split and settings imported again are allowed, whatever the provenance
    (another pillow version, the source folder moved)."""
    old_path = out / MANIFEST
    if force or not old_path.is_file():
        return
    try:
        previous = json.loads(old_path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        previous = None
    if not isinstance(previous, dict):
        previous = {}
    what = [label for key, label in _SAME_DATA if previous.get(key) != manifest.get(key)]
    if not what:
        return
    if previous.get("format") != FORMAT:
        what = [f"format ({previous.get('format')!r})"]
    raise DestinationError(
        f"{out} holds an import of {manifest['source']} with another {', '.join(what[:3])}; models trained on it "
        f"would meet other (or their own test) images: import into another --out, or add --force to replace it"
    )


def _manifest(source: str, images: _Images, flip: bool, options: dict[str, Any], root: Path) -> dict[str, Any]:
    classes = images.classes
    c, h, w = images.image_shape
    kind = default_augmentation(h, w)
    mean, std = channel_stats(images.splits["train"][0])
    counts: dict[str, Any] = {split: int(len(images.splits[split][1])) for split in SPLITS if split in images.splits}
    counts["per_class"] = {name: {split: int(np.sum(images.splits[split][1] == i)) for split in SPLITS
                                  if split in images.splits} for i, name in enumerate(classes)}
    if images.copied:
        layout, files = "cifar-10-python", {f"{BASE_FOLDER}/{name}": images.copied[name] for name in DATA_FILES}
    else:
        layout = "npy"
        files = {name: md5(root / name) for name in array_files(list(images.splits))}
    return {
        "format": FORMAT,
        "source": source,
        "origin": images.origin,
        "classes": list(classes),
        "num_classes": len(classes),
        "layout": layout,
        "image_shape": [c, h, w],
        "transform": images.transform,
        "options": {k: v for k, v in options.items() if v is not None},
        "counts": counts,
        "split": images.split,
        "augmentation": describe(kind, h, w, flip),
        "normalization": {"mean": list(mean), "std": list(std),
                          "computed_from": "the training split, pixel values scaled to 0..1"},
        "files": files,
    }
