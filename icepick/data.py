"""CIFAR-10 on disk, a generated CIFAR-format stand-in, and device-resident batch iterators.

Three layers:

* **On disk.** The real CIFAR-10 is downloaded through torchvision's ``CIFAR10`` class
  (:func:`fetch_cifar10`) and read from its pickled batches after the official md5 check
  (:func:`load_cifar10`): the same format, keys and md5 sums as torchvision's reader (a test
  holds the two readers equal), without importing torchvision, whose import costs every job
  about three seconds of start-up on a CPU. A generated data set in exactly the same on-disk
  format (:func:`synth_cifar10`) lets the whole pipeline run without the real files (offline
  machines, CI); it carries a marker file with its own md5 sums, which the reader checks.
* **On the device.** A :class:`Split` holds a whole split as uint8 tensors on the training
  device (CIFAR-10 is 180 MB as uint8), so no DataLoader, worker process or PIL image sits on
  the hot path.
* **Batches.** :func:`train_batches` shuffles, random-crops (zero padding 4) and flips on
  the device, vectorised over the batch, fully determined by a seed; :func:`eval_batches`
  only normalises.

Example::

    synth_cifar10("data/synth", n_train=4000, n_test=1000, seed=0)
    train = load_split("data/synth", "train", "cpu")
    for x, y in train_batches(train, batch_size=128, seed=epoch):
        ...
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icepick.config import ConfigError, check_choice, check_int
from icepick.records import atomic_path, read_json, write_json

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_CLASSES",
    "BASE_FOLDER",
    "MARKER",
    "DataIntegrityError",
    "fetch_cifar10",
    "synth_cifar10",
    "load_cifar10",
    "is_synthetic",
    "Split",
    "load_split",
    "split_validation",
    "subset",
    "train_batches",
    "num_train_batches",
    "eval_batches",
    "normalize",
]

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

BASE_FOLDER = "cifar-10-batches-py"
MARKER = "icepick_synthetic.json"
_TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
_TEST_FILES = ["test_batch"]
_META_FILE = "batches.meta"
_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_TGZ = "cifar-10-python.tar.gz"
_TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"
_DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation; an offline machine fails at DNS at once
_PAD = 4  # random-crop zero padding (pixels), the published CIFAR recipe



class DataIntegrityError(ValueError):
    """A data file exists but its md5 sum is wrong (damaged, truncated or not the expected file).

    A ValueError, so the command line reports it as one line (like every bad input).
    """


# --------------------------------------------------------------------------------------------
# On disk: the real CIFAR-10
# --------------------------------------------------------------------------------------------


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _missing_message(root: Path, reason: str) -> str:
    return (
        f"CIFAR-10 not found under {root / BASE_FOLDER} and {reason}. Download {_URL} "
        f"(md5 {_TGZ_MD5}) and place it at {root / _TGZ}, or extract it so that "
        f"{root / BASE_FOLDER / 'data_batch_1'} exists (`python -m icepick data fetch --root {root}` extracts "
        f"and checks a placed archive without downloading). Without network access, "
        f"`python -m icepick data synth --out {root} ...` writes a generated stand-in instead."
    )


#: The official files and md5 sums (the same list as torchvision's ``CIFAR10``; a test checks).
OFFICIAL_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


def _check_official(root: Path) -> None:
    """Raise FileNotFoundError / DataIntegrityError unless every official file is intact."""
    base = root / BASE_FOLDER
    for name, md5 in OFFICIAL_MD5.items():
        path = base / name
        if not path.is_file():
            raise FileNotFoundError(_missing_message(root, f"{path} is missing"))
        actual = _md5(path)
        if actual != md5:
            raise DataIntegrityError(
                f"{path} is damaged or is not the official CIFAR-10 file (md5 {actual}, expected {md5}). "
                f"Delete {base} and extract {_URL} (md5 {_TGZ_MD5}) there again, or run "
                f"`python -m icepick data fetch --root {root}`. (A generated data set carries {base / MARKER}; "
                f"if this folder was generated, regenerate it with `python -m icepick data synth`.)"
            )


def fetch_cifar10(root: str | os.PathLike) -> None:
    """Make sure the real CIFAR-10 is under ``root``, downloading it when possible.

    Args:
        root: data folder; the files end up in ``<root>/cifar-10-batches-py``.

    Raises:
        FileNotFoundError: the files are missing and the download failed; the message says
            which file to place where.
        DataIntegrityError: ``root`` holds a generated data set, or the download was damaged.
    """
    from torchvision.datasets import CIFAR10

    root = Path(root)
    if (root / BASE_FOLDER / MARKER).exists():
        raise DataIntegrityError(
            f"{root / BASE_FOLDER} holds a generated data set ({MARKER}); fetch the real CIFAR-10 into another folder"
        )
    try:
        _check_official(root)
        return
    except (FileNotFoundError, DataIntegrityError):
        pass
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        root.mkdir(parents=True, exist_ok=True)
        CIFAR10(str(root), train=True, download=True)
    except Exception as err:  # noqa: BLE001 - any failure means: tell the user what to place where
        raise FileNotFoundError(_missing_message(root, f"the download failed ({err!r})")) from err
    finally:
        socket.setdefaulttimeout(previous)
    _check_official(root)


# --------------------------------------------------------------------------------------------
# On disk: the generated stand-in
# --------------------------------------------------------------------------------------------

# The generated images: each class is a conjunction of a texture (oriented colour grating)
# and a shape. There are 5 textures and 5 shapes, and each texture and each shape belongs to
# two classes, so neither cue alone tells the class: the net needs both, at two scales.
# Per-sample phase, orientation, frequency, position, size, colour and contrast jitter,
# a distractor shape from another class, a coloured background gradient and pixel noise
# make it learnable but not trivial; the wide contrast ranges give easy samples (learnt in
# the first epochs) and faint, ambiguous ones (an accuracy ceiling well below 100%).
# Measured (CPU, 2 threads): resnet20, 4000 train / 1000 test images, SGD 0.1, momentum
# 0.9, wd 1e-4, batch 128, cosine over 15 epochs: 81.3% test accuracy in 181 s.
# Bump _SYNTH_VERSION whenever the generator's output changes.
_SYNTH_VERSION = 1
# grating orientation (rad); each sample takes +angle or -angle at random, so a horizontal
# flip (an augmentation) maps every class onto itself
_TEX_ANGLE = np.deg2rad([0.0, 25.0, 50.0, 70.0, 90.0])
_TEX_FREQ = np.array([0.22, 0.12, 0.20, 0.10, 0.16])  # cycles per pixel
_TEX_COLOUR = np.array(  # RGB direction of the grating's modulation
    [[1.0, 0.2, -0.4], [-0.3, 1.0, 0.1], [0.1, -0.4, 1.0], [0.8, 0.8, -0.6], [-0.6, 0.5, 0.9]]
)
_CLASS_TEX = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
_CLASS_SHAPE = np.array([0, 1, 2, 3, 4, 2, 3, 4, 0, 1])  # shapes: disk, square, triangle, ring, cross
_SYNTH_HYP: dict[str, float] = {
    "tex_amp_low": 0.03, "tex_amp_high": 0.25,  # grating amplitude (image in [0, 1])
    "shape_amp_low": 0.06, "shape_amp_high": 0.5,  # shape brightness offset
    "distractor_prob": 0.6, "distractor_rel": 0.8,  # distractor shape: probability, amplitude vs. main
    "angle_jitter": 0.2, "freq_jitter": 0.25, "colour_jitter": 0.5,  # rad (std); relative; std
    "noise": 0.10,  # pixel noise std
    "position_jitter": 7.0,  # shape centre offset from the image centre (pixels, max)
}
#: Presets of the generator. 'standard' is the one measured above; 'easy' (fainter noise and
#: distractors, no near-invisible samples) is learnt in a few CPU epochs, for the smoke run.
SYNTH_DIFFICULTIES: dict[str, dict[str, float]] = {
    "standard": _SYNTH_HYP,
    "easy": {**_SYNTH_HYP, "tex_amp_low": 0.12, "shape_amp_low": 0.25, "distractor_prob": 0.3,
             "distractor_rel": 0.5, "noise": 0.05, "position_jitter": 5.0},
}


def _shape_masks(kind: np.ndarray, cy: np.ndarray, cx: np.ndarray, size: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Soft masks [N, 32, 32] in [0, 1] of the given shapes (vectorised over samples)."""
    grid = np.arange(32, dtype=np.float32) + 0.5
    dy = grid[None, :, None] - cy[:, None, None]
    dx = grid[None, None, :] - cx[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # rotated coordinates
    s = size[:, None, None]
    r = np.sqrt(u * u + v * v)
    soft = 0.8  # edge softness (pixels)

    def inside(distance: np.ndarray) -> np.ndarray:  # signed distance < 0 inside
        return 1.0 / (1.0 + np.exp(np.clip(distance / soft * 2.0, -30, 30)))

    disk = inside(r - s)
    square = inside(np.maximum(np.abs(u), np.abs(v)) - 0.85 * s)
    # equilateral-ish triangle: intersection of three half planes
    tri = np.maximum.reduce([
        v - 0.6 * s,
        -0.866 * u - 0.5 * v - 0.6 * s,
        0.866 * u - 0.5 * v - 0.6 * s,
    ])
    triangle = inside(tri)
    ring = inside(np.abs(r - 0.8 * s) - 0.3 * s)
    cross = inside(np.minimum(np.maximum(np.abs(u) - 0.3 * s, np.abs(v) - s), np.maximum(np.abs(v) - 0.3 * s, np.abs(u) - s)))
    stack = np.stack([disk, square, triangle, ring, cross])  # [5, N, 32, 32]
    return stack[kind, np.arange(len(kind))].astype(np.float32)


def _synth_images(labels: np.ndarray, rng: np.random.Generator, hyp: dict[str, float] = _SYNTH_HYP) -> np.ndarray:
    """Generated images [N, 3, 32, 32] uint8 for ``labels``, with generator settings ``hyp``."""
    n = len(labels)
    grid = np.arange(32, dtype=np.float32)
    yy, xx = grid[:, None], grid[None, :]

    # background: a random colour with a gentle random gradient
    base = rng.uniform(0.25, 0.75, size=(n, 3, 1, 1))
    g_angle = rng.uniform(0, 2 * np.pi, size=n)
    g_amp = rng.uniform(0.0, 0.25, size=(n, 3, 1, 1))
    ramp = ((np.cos(g_angle)[:, None, None] * (xx - 15.5) + np.sin(g_angle)[:, None, None] * (yy - 15.5)) / 32.0)
    img = base + g_amp * ramp[:, None]

    # class texture: an oriented colour grating with random phase and jittered angle/frequency
    tex = _CLASS_TEX[labels]
    angle = rng.choice([-1.0, 1.0], size=n) * _TEX_ANGLE[tex] + rng.normal(0, hyp["angle_jitter"], size=n)
    freq = _TEX_FREQ[tex] * (1 + rng.uniform(-hyp["freq_jitter"], hyp["freq_jitter"], size=n))
    phase = rng.uniform(0, 2 * np.pi, size=n)
    proj = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy
    wave = np.sin(2 * np.pi * freq[:, None, None] * proj + phase[:, None, None])
    colour = _TEX_COLOUR[tex] + rng.normal(0, hyp["colour_jitter"], size=(n, 3))
    colour /= np.linalg.norm(colour, axis=1, keepdims=True)
    tex_amp = rng.uniform(hyp["tex_amp_low"], hyp["tex_amp_high"], size=n)
    img = img + (tex_amp[:, None] * colour)[:, :, None, None] * wave[:, None]

    # class shape at a jittered position, size and rotation, brighter or darker than the background
    def place(kind: np.ndarray, amp: np.ndarray, scale: float) -> np.ndarray:
        jitter = hyp["position_jitter"]
        cy = 16 + rng.uniform(-jitter, jitter, size=n)
        cx = 16 + rng.uniform(-jitter, jitter, size=n)
        size = scale * rng.uniform(5.5, 9.0, size=n)
        rot = rng.uniform(-0.35, 0.35, size=n)
        mask = _shape_masks(kind, cy, cx, size, rot)
        sign = rng.choice([-1.0, 1.0], size=n)
        tint = 1.0 + rng.normal(0, 0.3, size=(n, 3))
        return (sign * amp)[:, None, None, None] * tint[:, :, None, None] * mask[:, None]

    shape_amp = rng.uniform(hyp["shape_amp_low"], hyp["shape_amp_high"], size=n)
    main = place(_CLASS_SHAPE[labels], shape_amp, 1.0)
    # distractor: a different, smaller and fainter shape at an independent position
    other = (_CLASS_SHAPE[labels] + rng.integers(1, 5, size=n)) % 5
    has = rng.random(n) < hyp["distractor_prob"]
    distractor = place(other, shape_amp * hyp["distractor_rel"] * rng.uniform(0.4, 1.0, size=n), 0.8)
    img = img + main + has[:, None, None, None] * distractor

    img = img + rng.normal(0, hyp["noise"], size=img.shape)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _balanced_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % 10).astype(np.int64)


def _generate(
    n: int, rng: np.random.Generator, hyp: dict[str, float] = _SYNTH_HYP, chunk: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    labels = _balanced_labels(n, rng)
    parts = [_synth_images(labels[i : i + chunk], rng, hyp) for i in range(0, n, chunk)]
    images = np.concatenate(parts) if parts else np.zeros((0, 3, 32, 32), np.uint8)
    return images.reshape(n, 3072), labels


def _write_pickle(path: Path, obj: dict[str, Any]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def synth_cifar10(
    out: str | os.PathLike, n_train: int, n_test: int, seed: int, difficulty: str = "standard"
) -> Path:
    """Write a generated data set in the real CIFAR-10 on-disk format; return its folder.

    ``<out>/cifar-10-batches-py/`` receives ``data_batch_1..5`` (the training images split
    over the five), ``test_batch`` and ``batches.meta``, pickled with the keys torchvision
    reads, and the marker ``icepick_synthetic.json`` with every file's md5 sum. Classes are
    balanced; the content is fully determined by ``seed``.

    Args:
        out: data folder (the ``root`` later given to :func:`load_cifar10`).
        n_train, n_test: numbers of training and test images (each >= 10).
        seed: generator seed.
        difficulty: a preset of :data:`SYNTH_DIFFICULTIES` ('standard' or 'easy').

    Returns:
        The folder ``<out>/cifar-10-batches-py``.
    """
    check_int("n_train", n_train, 10)
    check_int("n_test", n_test, 10)
    check_int("seed", seed, 0)
    check_choice("difficulty", difficulty, SYNTH_DIFFICULTIES)
    hyp = SYNTH_DIFFICULTIES[difficulty]
    base = Path(out) / BASE_FOLDER
    marker = base / MARKER
    first = base / _TRAIN_FILES[0]
    if first.is_file() and not marker.exists() and _md5(first) == OFFICIAL_MD5[first.name]:
        raise DataIntegrityError(f"{base} holds the real CIFAR-10; write the generated data set to another folder")
    base.mkdir(parents=True, exist_ok=True)
    if marker.exists():  # files are about to change: the old marker must not vouch for them
        marker.unlink()
    train_seq, test_seq = np.random.SeedSequence([seed, 0x1CE]).spawn(2)
    train_x, train_y = _generate(n_train, np.random.default_rng(train_seq), hyp)
    test_x, test_y = _generate(n_test, np.random.default_rng(test_seq), hyp)

    files: dict[str, str] = {}
    bounds = np.linspace(0, n_train, 6).round().astype(int)
    for i, name in enumerate(_TRAIN_FILES):
        lo, hi = bounds[i], bounds[i + 1]
        _write_pickle(base / name, {
            "batch_label": f"training batch {i + 1} of 5 (icepick synthetic)",
            "labels": train_y[lo:hi].tolist(),
            "data": train_x[lo:hi],
            "filenames": [f"synth_train_{j:06d}.png" for j in range(lo, hi)],
        })
    _write_pickle(base / _TEST_FILES[0], {
        "batch_label": "testing batch 1 of 1 (icepick synthetic)",
        "labels": test_y.tolist(),
        "data": test_x,
        "filenames": [f"synth_test_{j:06d}.png" for j in range(n_test)],
    })
    _write_pickle(base / _META_FILE, {
        "label_names": list(CIFAR10_CLASSES),
        "num_cases_per_batch": int(math.ceil(n_train / 5)),
        "num_vis": 3072,
    })
    for name in _TRAIN_FILES + _TEST_FILES + [_META_FILE]:
        files[name] = _md5(base / name)
    write_json(marker, {
        "generator": "icepick.data.synth_cifar10",
        "version": _SYNTH_VERSION,
        "difficulty": difficulty,
        "n_train": n_train,
        "n_test": n_test,
        "seed": seed,
        "files": files,
    })
    return base


def is_synthetic(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds a generated data set (its marker file exists)."""
    return (Path(root) / BASE_FOLDER / MARKER).is_file()


def _check_synthetic(root: Path) -> dict[str, Any]:
    base = root / BASE_FOLDER
    marker = read_json(base / MARKER)
    regen = (
        f"python -m icepick data synth --out {root} --train {marker.get('n_train')} "
        f"--test {marker.get('n_test')} --seed {marker.get('seed')}"
    )
    files = marker.get("files", {})
    for name in _TRAIN_FILES + _TEST_FILES + [_META_FILE]:
        path = base / name
        if name not in files:
            raise DataIntegrityError(f"{base / MARKER} lists no md5 for {name}; regenerate the data set: `{regen}`")
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the generated data set; regenerate it: `{regen}`")
        actual = _md5(path)
        if actual != files[name]:
            raise DataIntegrityError(
                f"{path} is damaged (md5 {actual}, the generated set's marker says {files[name]}); "
                f"regenerate the data set: `{regen}`"
            )
    return marker


def _read_batches(base: Path, names: list[str]) -> tuple[np.ndarray, list[int]]:
    """Concatenate pickled CIFAR batches: ``data`` uint8 [N, 3072] rows, ``labels`` lists.

    The format of the CIFAR-10 python version, read as torchvision reads it (latin1 pickles,
    ``labels`` or ``fine_labels``).
    """
    rows, labels = [], []
    for name in names:
        with open(base / name, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
        rows.append(np.asarray(entry["data"], dtype=np.uint8))
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    return np.vstack(rows), labels


def load_cifar10(root: str | os.PathLike, train: bool, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split of CIFAR-10 (real or generated) from ``root``.

    Real files get the official md5 check; a generated set (marker present) gets the md5
    sums from its marker. Every file is checked before reading, and a failure names the file
    and how to recover.

    Args:
        root: data folder holding ``cifar-10-batches-py``.
        train: the training split (50,000 real images) or the test split (10,000).
        download: try to download the real files when they are missing.

    Returns:
        ``(images, labels)``: uint8 ``[N, 3, 32, 32]`` and int64 ``[N]``, on the CPU.
    """
    root = Path(root)
    if is_synthetic(root):
        _check_synthetic(root)
    else:
        if download:
            fetch_cifar10(root)
        _check_official(root)
    try:
        rows, labels = _read_batches(root / BASE_FOLDER, _TRAIN_FILES if train else _TEST_FILES)
        images = torch.from_numpy(np.ascontiguousarray(rows.reshape(-1, 3, 32, 32)))
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:  # md5 passed: format problem
        raise DataIntegrityError(f"{root / BASE_FOLDER}: cannot read the batches ({err!r}); regenerate or re-extract them") from err
    return images, torch.as_tensor(labels, dtype=torch.int64)


# --------------------------------------------------------------------------------------------
# On the device
# --------------------------------------------------------------------------------------------


@dataclass
class Split:
    """A whole split on one device: uint8 images ``[N, 3, 32, 32]`` and int64 labels ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1:] != (3, 32, 32):
            raise ValueError(f"Split.images must be uint8 [N, 3, 32, 32], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"Split.labels must be int64 [N], got {self.labels.dtype} {tuple(self.labels.shape)}")
        if self.images.device != self.labels.device:
            raise ValueError("Split.images and Split.labels must be on the same device")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        """The device the split lives on."""
        return self.images.device

    def to(self, device: str | torch.device) -> "Split":
        """This split on ``device`` (self when it is already there)."""
        device = torch.device(device)
        if self.images.device == device:
            return self
        return Split(self.images.to(device), self.labels.to(device))


def load_split(root: str | os.PathLike, name: str, device: str | torch.device = "cpu") -> Split:
    """Load the 'train' or 'test' split of the data set under ``root`` onto ``device``."""
    check_choice("split", name, ("train", "test"))
    images, labels = load_cifar10(root, train=name == "train")
    return Split(images, labels).to(device)


def subset(split: Split, indices: torch.Tensor) -> Split:
    """The samples of ``split`` at ``indices`` (in that order)."""
    indices = indices.to(split.device)
    return Split(split.images[indices].contiguous(), split.labels[indices].contiguous())


def split_validation(train: Split, n_val: int, seed: int) -> tuple[Split, Split]:
    """Hold out ``n_val`` random training images: returns ``(train_rest, validation)``.

    Deterministic in ``seed`` whatever the device (the permutation is drawn on the CPU); both
    parts keep the original order of their samples.
    """
    check_int("n_val", n_val, 1)
    if n_val >= len(train):
        raise ConfigError(f"n_val: {n_val} is out of range; it must be below the {len(train)} training images")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    val_idx, _ = perm[:n_val].sort()
    rest_idx, _ = perm[n_val:].sort()
    return subset(train, rest_idx), subset(train, val_idx)


def _norm_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    std = torch.tensor(CIFAR10_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    mean = torch.tensor(CIFAR10_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return 1.0 / (255.0 * std), -mean / std


def normalize(images: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """uint8 images -> float32, per-channel normalised with the CIFAR-10 mean and std.

    The layout change happens on the uint8 images (a quarter of the bytes); the float
    conversion and the in-place arithmetic keep it.
    """
    scale, shift = _norm_constants(images.device)
    out = images.contiguous(memory_format=memory_format).to(torch.float32)
    return out.mul_(scale).add_(shift)


def num_train_batches(split: Split | int, batch_size: int = 128, drop_last: bool = False) -> int:
    """Number of batches :func:`train_batches` yields per epoch."""
    n = split if isinstance(split, int) else len(split)
    return n // batch_size if drop_last else -(-n // batch_size)


def _crop_flip(images: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Per-sample random crop (zero padding ``_PAD``) and horizontal flip, vectorised.

    ``oy``, ``ox`` in ``[0, 2 * _PAD]`` are the crop's top-left corner in the padded image.
    """
    b = images.shape[0]
    size = images.shape[-1]
    padded = images.new_zeros(b, 3, size + 2 * _PAD, size + 2 * _PAD)
    padded[:, :, _PAD : _PAD + size, _PAD : _PAD + size] = images
    ar = torch.arange(size, device=images.device)
    rows = oy[:, None] + ar  # [B, 32]
    cols = torch.where(flip[:, None], ox[:, None] + (size - 1) - ar, ox[:, None] + ar)  # [B, 32]
    bi = torch.arange(b, device=images.device)[:, None, None, None]
    ci = torch.arange(3, device=images.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def train_batches(
    split: Split,
    batch_size: int = 128,
    seed: int = 0,
    augment: bool = True,
    drop_last: bool = False,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One training epoch of ``(images, labels)`` batches, shuffled and augmented on the device.

    The order, crops and flips all come from a ``torch.Generator`` on the split's device
    seeded with ``seed``, so an epoch is a pure function of ``(split, seed)`` on a given
    device. Augmentation is the published CIFAR recipe: random 32x32 crop of the image
    zero-padded by 4, and a horizontal flip with probability 1/2; then normalisation.

    Yields:
        float32 images ``[B, 3, 32, 32]`` (in ``memory_format``) and int64 labels ``[B]``.
    """
    check_int("batch_size", batch_size, 1)
    device = split.device
    n = len(split)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    order = torch.randperm(n, generator=gen, device=device)
    if augment:  # drawn for the whole epoch up front, so they do not depend on the batch size
        offsets = torch.randint(0, 2 * _PAD + 1, (2, n), generator=gen, device=device)
        flips = torch.randint(0, 2, (n,), generator=gen, device=device).bool()
    for b in range(num_train_batches(n, batch_size, drop_last)):
        idx = order[b * batch_size : (b + 1) * batch_size]
        images = split.images[idx]
        if augment:
            sl = slice(b * batch_size, (b + 1) * batch_size)
            images = _crop_flip(images, offsets[0, sl], offsets[1, sl], flips[sl])
        yield normalize(images, memory_format), split.labels[idx]


def eval_batches(
    split: Split, batch_size: int = 1000, memory_format: torch.memory_format = torch.contiguous_format
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The split in order, normalised, without augmentation."""
    check_int("batch_size", batch_size, 1)
    for start in range(0, len(split), batch_size):
        yield normalize(split.images[start : start + batch_size], memory_format), split.labels[start : start + batch_size]
