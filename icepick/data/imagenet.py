"""ImageNet-1k (ILSVRC2012) and Tiny-ImageNet in their official layouts, read into the pipeline's format.

Both are too large to hold in memory as one array (ImageNet's 1,281,167 training images at
224x224 are 193 GB), so each split is decoded image by image, in worker processes, and written
straight into its ``.npy`` file (``numpy.lib.format.open_memmap``); memory stays bounded by
the workers' queues, whatever the split's size.

Layouts (the official ones):

* **ImageNet-1k**: ``PATH/train/<wnid>/*.JPEG``; the validation images either as class folders
  ``PATH/val/<wnid>/*.JPEG`` or flat, ``PATH/val/ILSVRC2012_val_00000001.JPEG`` ..., labelled by
  the official devkit: ``PATH/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt``
  (one ILSVRC2012 id, 1..1000, per image, in the images' order) and ``.../data/meta.mat``
  (the synsets: id -> wnid; read with scipy). Classes are the training folders' wnids in sorted
  order, as torchvision's ImageNet dataset has them, so the class indices of torchvision's
  pretrained weights hold. The validation set (50,000 images) is the test split: the
  decisions and reported accuracies are on it.
* **Tiny-ImageNet** (tiny-imagenet-200): ``PATH/wnids.txt``, ``PATH/train/<wnid>/images/*.JPEG``,
  ``PATH/val/images/*.JPEG`` with ``PATH/val/val_annotations.txt`` (file, wnid, bounding box;
  tab-separated). 64x64, 200 classes (sorted wnids); the labelled validation set (10,000 images)
  is the test split. The official ``test/`` images have no labels and are not read.

Every image is made RGB and, at ``size``, resized (shorter side, bilinear) and centre-cropped
(:func:`icepick.data.importing._fit_image`). ``train_fraction`` keeps a seeded, stratified
share of the training images (the follow-up's 10% fine-tuning set), in file order.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DEVKIT",
    "GROUND_TRUTH",
    "META",
    "IMAGENET_SIZE",
    "TINY_SIZE",
    "Listing",
    "imagenet_listing",
    "tinyimagenet_listing",
    "train_subset",
    "subset_size",
    "write_split",
    "default_workers",
]

log = logging.getLogger(__name__)

DEVKIT = "ILSVRC2012_devkit_t12"
GROUND_TRUTH = f"{DEVKIT}/data/ILSVRC2012_validation_ground_truth.txt"
META = f"{DEVKIT}/data/meta.mat"
IMAGENET_SIZE = 224  # torchvision's ImageNet models' input size
TINY_SIZE = 64  # Tiny-ImageNet's own size
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.[A-Za-z]+")
_WNID = re.compile(r"n\d{8}")
MAX_WORKERS = 8


class _SourceError(ValueError):
    """Raised here; :mod:`icepick.data.importing` turns it into its DataSourceError."""


@dataclass(frozen=True)
class Listing:
    """What to read: the classes (sorted wnids) and every split's ``(file, label)`` pairs, in file order."""

    classes: list[str]
    splits: dict[str, list[tuple[Path, int]]]
    labels_from: str  # how the test split was labelled (for the manifest)


# ---------------------------------------------------------------- listing the files


def _images_in(folder: Path, extensions: set[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in extensions)


def _class_files(root: Path, classes: Sequence[str], extensions: set[str], inner: str = "") -> list[tuple[Path, int]]:
    """``(file, label)`` of every image of ``root/<wnid>/<inner>``, class by class; an empty class folder is an error."""
    out = []
    for label, wnid in enumerate(classes):
        folder = root / wnid / inner if inner else root / wnid
        if not folder.is_dir():
            raise _SourceError(f"{folder}: missing; every class of wnids.txt needs its training images there")
        files = _images_in(folder, extensions)
        if not files:
            raise _SourceError(f"{folder}: class folder '{wnid}' holds no image (*.JPEG); copy its images again or "
                               f"remove the folder")
        out += [(f, label) for f in files]
    return out


def _folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_meta(path: Path) -> dict[int, str]:
    """The devkit's ``meta.mat``: ILSVRC2012 id -> wnid of the 1,000 leaf classes (synsets without children)."""
    try:
        from scipy.io import loadmat
    except ImportError as err:
        raise ImportError("scipy") from err
    try:
        synsets = loadmat(str(path), squeeze_me=True)["synsets"]
        ids = [int(s) for s in synsets["ILSVRC2012_ID"]]
        wnids = [str(s) for s in synsets["WNID"]]
        children = [int(s) for s in synsets["num_children"]]
    except (ValueError, KeyError, TypeError, OSError, IndexError) as err:
        raise _SourceError(f"{path}: not the devkit's meta.mat (a 'synsets' struct with ILSVRC2012_ID, WNID and "
                           f"num_children: {' '.join(str(err).split())[:100]}); extract the devkit again") from err
    return {i: w for i, w, c in zip(ids, wnids, children) if c == 0}


def read_ground_truth(path: Path) -> list[int]:
    """The devkit's validation ground truth: one ILSVRC2012 id per line, in the images' order."""
    ids = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            ids.append(int(line))
        except ValueError:
            raise _SourceError(f"{path}: line {n} is {line.strip()[:40]!r}, not an ILSVRC2012 id (1..1000); extract "
                               f"the devkit again") from None
    return ids


def _flat_val(path: Path, files: list[Path], classes: list[str]) -> list[tuple[Path, int]]:
    """Flat ``val/`` images labelled by the devkit (ground truth and meta.mat)."""
    truth, meta = path / GROUND_TRUTH, path / META
    for needed in (truth, meta):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} is missing: the flat val/ images are labelled by the ILSVRC2012 devkit; "
                                    f"extract ILSVRC2012_devkit_t12.tar.gz into {path}, or sort val/ into class "
                                    f"folders val/<wnid>/")
    id_to_wnid = read_meta(meta)
    known = set(id_to_wnid.values())
    strangers = [w for w in classes if w not in known]
    if strangers:
        raise _SourceError(f"{path / 'train'}: class folder {strangers[0]} is not a wnid of {meta} "
                           f"({len(strangers)} such folder{'s' if len(strangers) > 1 else ''}); remove it, or give the "
                           f"devkit of these images")
    ids = read_ground_truth(truth)
    if len(ids) != len(files):
        raise _SourceError(f"{truth}: {len(ids)} labels for the {len(files)} images of {path / 'val'}; the ground truth "
                           f"has one line per validation image: copy every val image, or give the matching devkit")
    index = {w: c for c, w in enumerate(classes)}
    out = []
    for n, (file, ilsvrc_id) in enumerate(zip(files, ids), 1):
        match = _VAL_NAME.fullmatch(file.name)
        if match is None or int(match.group(1)) != n:
            raise _SourceError(f"{file}: expected ILSVRC2012_val_{n:08d} at this place; the ground truth labels the "
                               f"official file names in order: rename nothing in val/")
        wnid = id_to_wnid.get(ilsvrc_id)
        if wnid is None:
            raise _SourceError(f"{truth}: line {n} is id {ilsvrc_id}, which {meta} does not list as a class; give the "
                               f"devkit's own files")
        if wnid not in index:
            raise _SourceError(f"{file}: labelled {wnid} by the devkit, but {path / 'train'} has no folder {wnid}; "
                               f"copy that class's training images")
        out.append((file, index[wnid]))
    return out


def imagenet_listing(path: Path, extensions: set[str]) -> Listing:
    """The files of ImageNet-1k in its official layout under ``path`` (see the module docstring)."""
    if not path.is_dir():
        raise FileNotFoundError(f"path: {path} {'is not a folder' if path.exists() else 'does not exist'}; give the "
                                f"ImageNet folder holding train/<wnid>/ and val/")
    train, val = path / "train", path / "val"
    for folder in (train, val):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is missing; --source imagenet needs {path}/train/<wnid>/*.JPEG and "
                                    f"{path}/val/ (class folders, or the flat images with the devkit)")
    classes = _folders(train)
    if len(classes) < 2:
        raise _SourceError(f"{train}: holds {len(classes)} class folder(s); ImageNet's training images are in one "
                           f"folder per wnid, train/<wnid>/*.JPEG")
    odd = [c for c in classes if not _WNID.fullmatch(c)]
    if odd:
        raise _SourceError(f"{train}: folder '{odd[0]}' is not a wnid (n########); train/ holds one folder per "
                           f"class, named by its wnid")
    splits = {"train": _class_files(train, classes, extensions)}
    val_folders = _folders(val)
    if val_folders:
        strangers = [w for w in val_folders if w not in set(classes)]
        if strangers:
            raise _SourceError(f"{val / strangers[0]}: no class of {train} has this wnid; every val/<wnid>/ needs its "
                               f"training folder")
        index = {w: c for c, w in enumerate(classes)}
        test = []
        for wnid in val_folders:
            files = _images_in(val / wnid, extensions)
            if not files:
                raise _SourceError(f"{val / wnid}: class folder '{wnid}' holds no image (*.JPEG); copy its images "
                                   f"again or remove the folder")
            test += [(f, index[wnid]) for f in files]
        labels_from = "class folders val/<wnid>/"
    else:
        files = _images_in(val, extensions)
        if not files:
            raise _SourceError(f"{val}: holds no image; copy the validation images (flat, with the devkit, or in "
                               f"class folders val/<wnid>/)")
        test = _flat_val(path, files, classes)
        labels_from = f"{GROUND_TRUTH} and {META}"
    splits["test"] = test
    return Listing(classes, splits, labels_from)


def tinyimagenet_listing(path: Path, extensions: set[str]) -> Listing:
    """The files of Tiny-ImageNet in its official layout under ``path`` (see the module docstring)."""
    if not path.is_dir():
        raise FileNotFoundError(f"path: {path} {'is not a folder' if path.exists() else 'does not exist'}; give the "
                                f"tiny-imagenet-200 folder (wnids.txt, train/, val/)")
    wnids_file = path / "wnids.txt"
    if not wnids_file.is_file():
        raise FileNotFoundError(f"{wnids_file} is missing; give the tiny-imagenet-200 folder, which holds wnids.txt, "
                                f"train/ and val/")
    wnids = [line.strip() for line in wnids_file.read_text().splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids) or len(wnids) < 2:
        raise _SourceError(f"{wnids_file}: lists {len(wnids)} wnids ({len(set(wnids))} distinct); it must list each "
                           f"class once, one per line")
    classes = sorted(wnids)
    splits = {"train": _class_files(path / "train", classes, extensions, inner="images")}
    images, notes = path / "val" / "images", path / "val" / "val_annotations.txt"
    if not images.is_dir():
        raise FileNotFoundError(f"{images} is missing; Tiny-ImageNet's labelled validation images are in "
                                f"val/images/ (the test split)")
    if not notes.is_file():
        raise FileNotFoundError(f"{notes} is missing; it labels the images of {images} (file, wnid, box per line)")
    index = {w: c for c, w in enumerate(classes)}
    label_of: dict[str, int] = {}
    for n, line in enumerate(notes.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2:
            raise _SourceError(f"{notes}: line {n} is {line.strip()[:60]!r}; each line is file, wnid and a box, "
                               f"tab-separated")
        name, wnid = fields[0], fields[1]
        if wnid not in index:
            raise _SourceError(f"{notes}: line {n} labels {name} as {wnid}, which {wnids_file} does not list; give "
                               f"the annotations of this data set")
        label_of[name] = index[wnid]
    files = _images_in(images, extensions)
    if not files:
        raise _SourceError(f"{images}: holds no image; copy Tiny-ImageNet's validation images")
    unlabelled = [f.name for f in files if f.name not in label_of]
    if unlabelled:
        raise _SourceError(f"{notes}: has no label for {unlabelled[0]} ({len(unlabelled)} image(s) of {images} "
                           f"unlabelled); give the annotations that came with these images")
    missing = sorted(set(label_of) - {f.name for f in files})
    if missing:
        raise _SourceError(f"{images}: {missing[0]} is missing ({len(missing)} image(s) that {notes.name} labels); "
                           f"copy the validation images again")
    splits["test"] = [(f, label_of[f.name]) for f in files]
    return Listing(classes, splits, "val/val_annotations.txt")


# ---------------------------------------------------------------- the training subset


def subset_size(n: int, fraction: float) -> int:
    """Images a stratified subset of ``fraction`` of ``n`` holds: ceil(fraction * n) (every class
    keeping at least one image and leaving one out, which ImageNet's classes never reach)."""
    from fractions import Fraction
    import math

    return math.ceil(Fraction(repr(float(fraction))) * n)


def train_subset(labels: np.ndarray, num_classes: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of ``fraction`` of the images, each class in proportion
    (:func:`icepick.data.importing.stratified_split`'s held-out share: largest remainders, at
    least one image per class)."""
    from icepick.data.importing import stratified_split

    _, chosen = stratified_split(np.asarray(labels), num_classes, fraction, seed)
    return np.sort(chosen)


# ---------------------------------------------------------------- decoding and writing


def default_workers() -> int:
    """Decoding processes: the CPUs this process may use, at most :data:`MAX_WORKERS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


@dataclass(frozen=True)
class _Decode:
    """How one image is decoded: RGB, at ``size`` x ``size`` (resize the shorter side, centre crop)."""

    size: int

    def __call__(self, file: Path) -> tuple[np.ndarray | None, str]:
        from PIL import Image, UnidentifiedImageError

        from icepick.data.importing import DataSourceError, _fit_image, _read_error

        try:
            with Image.open(file) as image:
                rgb = image.convert("RGB")
            out = _fit_image(rgb, self.size, "resize", str(file))
            array = np.asarray(out, dtype=np.uint8).transpose(2, 0, 1)
        except DataSourceError as err:
            return None, str(err)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            return None, str(_read_error(file, err))
        return np.ascontiguousarray(array), ""


def _decoded(files: Sequence[Path], decode: _Decode, workers: int) -> Iterator[tuple[np.ndarray | None, str]]:
    """Every file decoded, in order: in this process (``workers`` 1) or in a pool of ``workers``."""
    if workers <= 1:
        for file in files:
            yield decode(file)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn" if os.name != "posix" else "forkserver")
    with context.Pool(workers) as pool:
        yield from pool.imap(decode, files, chunksize=32)


def write_split(stage: Path, split: str, entries: Sequence[tuple[Path, int]], size: int, workers: int,
                progress: bool = True, on_error: Callable[[str], Exception] = _SourceError) -> np.ndarray:
    """Decode ``entries`` (file, label) into ``stage/<split>_images.npy`` (uint8 [N, 3, size, size]),
    one image at a time, and write ``stage/<split>_labels.npy``; return the labels.

    An image that cannot be read raises ``on_error(message)`` (the message names the file)."""
    from numpy.lib.format import open_memmap
    from tqdm import tqdm

    from icepick.data.arrays import images_file, labels_file

    labels = np.asarray([label for _, label in entries], dtype=np.int64)
    images = open_memmap(stage / images_file(split), mode="w+", dtype=np.uint8, shape=(len(entries), 3, size, size))
    bar = tqdm(total=len(entries), desc=f"{split} images", unit="img", disable=not progress, mininterval=2.0)
    try:
        for i, (array, problem) in enumerate(_decoded([f for f, _ in entries], _Decode(size), workers)):
            if array is None:
                raise on_error(problem)
            images[i] = array
            bar.update(1)
        images.flush()
    finally:
        bar.close()
        del images
    with open(stage / labels_file(split), "wb") as handle:
        np.save(handle, labels, allow_pickle=False)
    return labels
