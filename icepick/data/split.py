"""Splits on the device and their batches.

A :class:`Split` holds a whole split as uint8 tensors on the training device (CIFAR-10 is
180 MB as uint8), so no DataLoader, worker process or PIL image sits on the hot path, with
its data set's normalisation and whether horizontal flips suit it. :func:`train_batches`
shuffles, random-crops (zero padding 4) and flips on the device, vectorised over the batch,
fully determined by a seed; :func:`eval_batches` only normalises.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from icepick.config import ConfigError, check_choice, check_int
from icepick.data.layout import CIFAR10_MEAN, CIFAR10_STD
from icepick.data.manifest import CROP_PADDING, channel_stats, dataset_info
from icepick.data.reader import load_cifar10

__all__ = [
    "as_split",
    "as_uint8_images",
    "Split",
    "load_split",
    "subset",
    "split_validation",
    "normalize",
    "num_train_batches",
    "train_batches",
    "eval_batches",
]

_PAD = CROP_PADDING  # random-crop zero padding (pixels), the published CIFAR recipe


@dataclass
class Split:
    """A whole split on one device: uint8 images ``[N, 3, 32, 32]`` and int64 labels ``[N]``.

    ``mean``/``std``: the data set's per-channel normalisation (on 0..1 values; CIFAR-10's by
    default); ``flip``: whether random horizontal flips suit the data set (not for digits).
    """

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD
    flip: bool = True

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1:] != (3, 32, 32):
            raise ValueError(f"Split.images must be uint8 [N, 3, 32, 32], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"Split.labels must be int64 [N], got {self.labels.dtype} {tuple(self.labels.shape)}")
        if self.images.device != self.labels.device:
            raise ValueError("Split.images and Split.labels must be on the same device")
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"Split.mean and Split.std must be 3 numbers (std > 0), got {self.mean} and {self.std}")

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
        return Split(self.images.to(device), self.labels.to(device), self.mean, self.std, self.flip)


def as_uint8_images(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 32, 32]`` images as uint8: uint8 as they are, floats read as 0..1 values."""
    if images.dim() != 4 or tuple(images.shape[1:]) != (3, 32, 32):
        raise ValueError(
            f"images: {tuple(images.shape)} is not [N, 3, 32, 32]; resize or crop to 32x32 first "
            "(icepick data import --source imagefolder does this for a folder of images)"
        )
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise ValueError(f"images: dtype {images.dtype} is neither uint8 (0..255) nor a float type (0..1)")
    return (images.detach().float() * 255).round().clamp(0, 255).to(torch.uint8)


def as_split(
    data: "Split | tuple[torch.Tensor, torch.Tensor] | torch.utils.data.Dataset",
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    flip: bool = True,
) -> Split:
    """A :class:`Split` from tensors ``(images, labels)`` or a torch ``Dataset`` of ``(image, label)``.

    Images are ``[3, 32, 32]`` each, uint8 (0..255) or float (0..1). ``mean``/``std`` default
    to the images' own per-channel statistics (:func:`icepick.data.manifest.channel_stats`);
    a Split is returned as it is.
    """
    if isinstance(data, Split):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
    else:
        items = [data[i] for i in range(len(data))]
        if not items:
            raise ValueError("data: the Dataset is empty")
        images = torch.stack([torch.as_tensor(x) for x, _ in items])
        labels = torch.as_tensor([int(y) for _, y in items])
    images = as_uint8_images(torch.as_tensor(images)).cpu().contiguous()
    labels = torch.as_tensor(labels).long().cpu()
    if mean is None or std is None:
        stats = channel_stats(images.reshape(len(images), -1).numpy())
        mean, std = (stats[0] if mean is None else mean), (stats[1] if std is None else std)
    return Split(images, labels, mean, std, flip)


def load_split(root: str | os.PathLike, name: str, device: str | torch.device = "cpu") -> Split:
    """Load the 'train' or 'test' split of the data set under ``root`` onto ``device``.

    Every file is checked first (see :func:`icepick.data.load_cifar10`); the split carries the
    data set's normalisation and flip setting (:func:`icepick.data.dataset_info`).
    """
    check_choice("split", name, ("train", "test"))
    images, labels = load_cifar10(root, train=name == "train")
    info = dataset_info(root)
    return Split(images, labels, info.mean, info.std, info.flip).to(device)


def subset(split: Split, indices: torch.Tensor) -> Split:
    """The samples of ``split`` at ``indices`` (in that order)."""
    indices = indices.to(split.device)
    return Split(split.images[indices].contiguous(), split.labels[indices].contiguous(), split.mean, split.std,
                 split.flip)


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


def _norm_constants(
    device: torch.device, mean: Sequence[float], std: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return 1.0 / (255.0 * std_t), -mean_t / std_t


def normalize(
    images: torch.Tensor,
    memory_format: torch.memory_format = torch.contiguous_format,
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
) -> torch.Tensor:
    """uint8 images -> float32, per-channel normalised with ``mean`` and ``std`` (of 0..1 values;
    CIFAR-10's by default).

    The layout change happens on the uint8 images (a quarter of the bytes); the float
    conversion and the in-place arithmetic keep it.
    """
    scale, shift = _norm_constants(images.device, mean, std)
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
    zero-padded by 4, and a horizontal flip with probability 1/2 when the data set suits it
    (``split.flip``; the crops are the same either way); then normalisation with the split's
    statistics.

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
        if not split.flip:  # drawn all the same, so the order and crops do not depend on it
            flips.zero_()
    for b in range(num_train_batches(n, batch_size, drop_last)):
        idx = order[b * batch_size : (b + 1) * batch_size]
        images = split.images[idx]
        if augment:
            sl = slice(b * batch_size, (b + 1) * batch_size)
            images = _crop_flip(images, offsets[0, sl], offsets[1, sl], flips[sl])
        yield normalize(images, memory_format, split.mean, split.std), split.labels[idx]


def eval_batches(
    split: Split, batch_size: int = 1000, memory_format: torch.memory_format = torch.contiguous_format
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The split in order, normalised with its statistics, without augmentation."""
    check_int("batch_size", batch_size, 1)
    for start in range(0, len(split), batch_size):
        yield (normalize(split.images[start : start + batch_size], memory_format, split.mean, split.std),
               split.labels[start : start + batch_size])
