"""The generated data set: a learnable CIFAR-format stand-in, written in the real on-disk format.

It lets the whole pipeline run without the real files (offline machines, CI). It carries a
marker file (``cifar-10-batches-py/icepick_synthetic.json``) with its own md5 sums, which the
reader checks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from icepick.config import check_choice, check_int
from icepick.data.layout import (
    BASE_FOLDER,
    CIFAR10_CLASSES,
    DATA_FILES,
    MANIFEST,
    MARKER,
    DataIntegrityError,
    md5,
    write_batches,
)
from icepick.records import read_json, write_json

__all__ = ["SYNTH_DIFFICULTIES", "synth_cifar10", "is_synthetic", "check_synthetic", "regenerate_command"]

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


def synth_cifar10(
    out: str | os.PathLike, n_train: int, n_test: int, seed: int, difficulty: str = "standard",
    force: bool = False,
) -> Path:
    """Write a generated data set in the real CIFAR-10 on-disk format; return its folder.

    ``<out>/cifar-10-batches-py/`` receives ``data_batch_1..5`` (the training images split
    over the five), ``test_batch`` and ``batches.meta``, pickled with the keys torchvision
    reads, and the marker ``icepick_synthetic.json`` with every file's md5 sum. Classes are
    balanced; the content is fully determined by ``seed``.

    Args:
        out: data folder (the ``root`` later given to :func:`icepick.data.load_cifar10`).
        n_train, n_test: numbers of training and test images (each >= 10).
        seed: generator seed.
        difficulty: a preset of :data:`SYNTH_DIFFICULTIES` ('standard' or 'easy').
        force: write even where ``out`` holds other data (the real CIFAR-10, an imported set,
            other files); without it only a missing or empty folder, or an earlier generated set,
            is written over.

    Returns:
        The folder ``<out>/cifar-10-batches-py``.
    """
    from icepick.data.destination import check_destination

    check_int("n_train", n_train, 10)
    check_int("n_test", n_test, 10)
    check_int("seed", seed, 0)
    check_choice("difficulty", difficulty, SYNTH_DIFFICULTIES)
    hyp = SYNTH_DIFFICULTIES[difficulty]
    check_destination(Path(out), "synthetic", force, "data synth")
    base = Path(out) / BASE_FOLDER
    marker = base / MARKER
    base.mkdir(parents=True, exist_ok=True)
    for record in (marker, Path(out) / MANIFEST):  # files are about to change: no record may vouch for them
        if record.exists():
            record.unlink()
    train_seq, test_seq = np.random.SeedSequence([seed, 0x1CE]).spawn(2)
    train_x, train_y = _generate(n_train, np.random.default_rng(train_seq), hyp)
    test_x, test_y = _generate(n_test, np.random.default_rng(test_seq), hyp)
    files = write_batches(base, train_x, train_y, test_x, test_y, CIFAR10_CLASSES, "icepick synthetic",
                          filename="synth_{split}_{index:06d}.png")
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


def regenerate_command(root: Path, marker: dict[str, Any]) -> str:
    """The command that writes the generated set ``marker`` records into ``root`` again."""
    return (
        f"python -m icepick data synth --out {root} --train {marker.get('n_train')} "
        f"--test {marker.get('n_test')} --seed {marker.get('seed')} "
        f"--difficulty {marker.get('difficulty', 'standard')}"
    )


def check_synthetic(root: Path) -> dict[str, Any]:
    """Check every file of the generated set under ``root`` against its marker; return the marker."""
    base = root / BASE_FOLDER
    marker = read_json(base / MARKER)
    regen = regenerate_command(root, marker)
    files = marker.get("files", {})
    for name in DATA_FILES:
        path = base / name
        if name not in files:
            raise DataIntegrityError(f"{base / MARKER} lists no md5 for {name}; regenerate the data set: `{regen}`")
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the generated data set; regenerate it: `{regen}`")
        actual = md5(path)
        if actual != files[name]:
            raise DataIntegrityError(
                f"{path} is damaged (md5 {actual}, the generated set's marker says {files[name]}); "
                f"regenerate the data set: `{regen}`"
            )
    return marker
