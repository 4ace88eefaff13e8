"""Splits on the device and their batches.

A :class:`Split` holds a whole split as uint8 tensors on the training device (CIFAR-10 is
180 MB as uint8), so no DataLoader, worker process or PIL image sits on the hot path, or,
when the split is larger than the data memory cap (ImageNet at 224 is ~190 GB), leaves it
on disk and streams it (:mod:`icepick.data.stream`: its ``images`` are then a
:class:`~icepick.data.stream.DiskImages`, and batches are read ahead in background threads), with
its data set's normalisation, the training augmentation that suits its images
(:mod:`icepick.data.augment`) and whether horizontal flips suit them. Images have any size
and channel count. :func:`train_batches` shuffles and augments on the device, vectorised over
the batch, fully determined by a seed; :func:`eval_batches` only normalises. Both give the
same batches, bit for bit, whether the split is in memory or streamed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icepick.config import ConfigError, check_choice, check_int
from icepick.data import augment
from icepick.data.layout import CIFAR10_MEAN, CIFAR10_STD
from icepick.data.manifest import DatasetInfo, channel_stats, dataset_info
from icepick.data.reader import read_split
from icepick.data.stream import DiskImages, memory_cap, plan_storage, prefetched

__all__ = [
    "as_split",
    "as_uint8_images",
    "Split",
    "load_split",
    "split_bytes",
    "subset",
    "split_validation",
    "normalize",
    "num_train_batches",
    "train_batches",
    "eval_batches",
]

Stats = tuple[float, ...] | None


@dataclass
class Split:
    """A whole split on one device: uint8 images ``[N, C, H, W]`` and int64 labels ``[N]``.

    ``images`` is a uint8 tensor (storage 'memory') or, for a split left on disk, a
    :class:`~icepick.data.stream.DiskImages` delivering its batches to the device (storage
    'stream'); the labels are always a tensor on that device.

    ``mean``/``std``: the per-channel normalisation the model expects (of 0..1 values; one
    number per channel; CIFAR-10's by default; None for both: the model sees 0..1 values,
    for a model that normalises its inputs itself). ``flip``: whether random horizontal flips
    suit the images (not for digits). ``augmentation``: 'pad_crop' or 'random_resized_crop'
    (:mod:`icepick.data.augment`); None picks the one that suits the image size.
    """

    images: torch.Tensor | DiskImages
    labels: torch.Tensor
    mean: Stats = CIFAR10_MEAN
    std: Stats = CIFAR10_STD
    flip: bool = True
    augmentation: str | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or min(self.images.shape[1:], default=0) < 1:
            raise ValueError(f"Split.images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"Split.labels must be int64 [N], got {self.labels.dtype} {tuple(self.labels.shape)}")
        if self.images.device != self.labels.device:
            raise ValueError("Split.images and Split.labels must be on the same device")
        channels = self.images.shape[1]
        if (self.mean is None) != (self.std is None):
            raise ValueError("Split.mean and Split.std must both be given or both be None")
        if self.mean is not None:
            self.mean = tuple(float(v) for v in self.mean)
            self.std = tuple(float(v) for v in self.std)  # type: ignore[union-attr]
            if len(self.mean) != channels or len(self.std) != channels or min(self.std) <= 0:
                raise ValueError(f"Split.mean and Split.std must be {channels} number(s), one per channel (std > 0), "
                                 f"got {self.mean} and {self.std}")
        if self.augmentation is None:
            self.augmentation = augment.default_augmentation(*self.images.shape[2:])
        check_choice("augmentation", self.augmentation, augment.AUGMENTATIONS)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def storage(self) -> str:
        """'memory' (the images are a tensor on the device) or 'stream' (read from disk per batch)."""
        return "stream" if isinstance(self.images, DiskImages) else "memory"

    @property
    def device(self) -> torch.device:
        """The device the split lives on."""
        return self.images.device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of its images."""
        return tuple(int(v) for v in self.images.shape[1:])  # type: ignore[return-value]

    def to(self, device: str | torch.device) -> "Split":
        """This split on ``device`` (self when it is already there)."""
        device = torch.device(device)
        if self.images.device == device:
            return self
        return self.with_images(self.images.to(device), self.labels.to(device))

    def with_images(self, images: torch.Tensor | DiskImages, labels: torch.Tensor) -> "Split":
        """Other images and labels with this split's normalisation, flip setting and augmentation."""
        return Split(images, labels, self.mean, self.std, self.flip, self.augmentation)


# ---------------------------------------------------------------- images from the user


def _describe_range(images: torch.Tensor) -> str:
    return f"min {float(images.min()):.3g}, max {float(images.max()):.3g}"


def as_uint8_images(images: Any) -> torch.Tensor:
    """Images as uint8 ``[N, C, H, W]``: from uint8 (0..255) or floats in 0..1, channel-first
    ``[N, C, H, W]``, channel-last ``[N, H, W, C]`` (NumPy's and PIL's order, as
    ``torchvision.datasets.CIFAR10.data``) or grey ``[N, H, W]``; tensors or NumPy arrays.

    A float image outside 0..1 (a 0..255 float image, or one already normalised) raises
    ValueError: it would otherwise be clamped or binarised without a word.
    """
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if images.dim() == 3:
        images = images[:, None]
    if images.dim() != 4:
        raise ValueError(f"images: {tuple(images.shape)} is not [N, C, H, W], [N, H, W, C] or [N, H, W]")
    if images.shape[1] not in (1, 3, 4) and images.shape[-1] in (1, 3, 4):
        images = images.permute(0, 3, 1, 2)  # channel-last -> channel-first
    elif images.shape[1] not in (1, 3, 4):
        raise ValueError(f"images: {tuple(images.shape)} has neither 1, 3 or 4 channels first ([N, C, H, W]) nor "
                         f"last ([N, H, W, C])")
    if images.dtype == torch.uint8:
        return images.contiguous()
    if images.dtype == torch.bool or not (images.is_floating_point() or images.dtype in (torch.int16, torch.int32,
                                                                                          torch.int64)):
        raise ValueError(f"images: dtype {images.dtype} is neither uint8 (0..255) nor a float type (0..1)")
    if not images.is_floating_point():
        if images.numel() and (int(images.min()) < 0 or int(images.max()) > 255):
            raise ValueError(f"images: integer values must lie in 0..255 ({_describe_range(images)})")
        return images.to(torch.uint8).contiguous()
    values = images.detach().float()
    if values.numel() and not bool(torch.isfinite(values).all()):
        raise ValueError("images: they hold NaN or infinite values")
    if values.numel() and (float(values.min()) < 0.0 or float(values.max()) > 1.0):
        raise ValueError(f"images: float images must hold values in 0..1 ({_describe_range(values)}); pass uint8 "
                         f"0..255 or floats scaled to 0..1, not normalised tensors (icepick normalises them, see "
                         f"normalize=)")
    return (values * 255).round().to(torch.uint8).contiguous()


_PIL_GREY = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L"}  # PIL modes read as one grey channel


def _pil_array(image: Any) -> np.ndarray:
    """A PIL image as uint8 HWC: grey modes as 'L' (16-bit scaled, not clipped), 'RGB' kept, every
    other mode (palette, RGBA, CMYK, ...) converted to 'RGB', as the image folder import does."""
    from icepick.data.importing import _convert

    channels = 1 if image.mode in _PIL_GREY else 3
    array = np.asarray(_convert(image, channels), dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def _item_image(item: Any) -> torch.Tensor:
    """One image of a Dataset: a PIL image (HWC), a NumPy array (HWC or CHW) or a tensor (CHW)."""
    if hasattr(item, "getbands"):  # a PIL image: its bands become channels (a palette's colours, not its indices)
        return torch.from_numpy(_pil_array(item).copy()).permute(2, 0, 1)
    tensor = torch.as_tensor(np.asarray(item)) if not isinstance(item, torch.Tensor) else item
    if tensor.dim() == 2:
        return tensor[None]
    if tensor.dim() == 3 and tensor.shape[0] not in (1, 3, 4) and tensor.shape[-1] in (1, 3, 4):
        return tensor.permute(2, 0, 1)
    return tensor


def _from_dataset(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise ValueError(f"data: {type(data).__name__} is neither (images, labels) nor a Dataset of (image, label)")
    if len(data) == 0:
        raise ValueError("data: the Dataset is empty")
    images, labels = [], []
    for i in range(len(data)):
        image, label = data[i]
        images.append(_item_image(image))
        labels.append(int(label))
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise ValueError(f"data: the Dataset's images differ in shape ({', '.join(map(str, sorted(shapes)[:3]))}); "
                         f"give it a transform that resizes them to one size")
    return torch.stack(images), torch.as_tensor(labels)


def _is_item(value: Any) -> bool:
    """Whether ``value`` is one Dataset item ``(image, label)`` (a scalar label), not a batch of images."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        return False
    label = value[1]
    return isinstance(label, (int, np.integer)) or (isinstance(label, (torch.Tensor, np.ndarray)) and label.ndim == 0)


def _as_labels(labels: Any) -> torch.Tensor:
    """Labels as int64 on the CPU; floats only with whole values (a 1.7 is no class index)."""
    tensor = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).cpu()
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise ValueError(f"labels: dtype {tensor.dtype} is not a class index type (integers 0..num_classes-1)")
    if tensor.is_floating_point() and tensor.numel() and not bool((tensor == tensor.round()).all()):
        raise ValueError("labels: they hold fractional values; give class indices (integers 0..num_classes-1)")
    return tensor.long()


def as_split(
    data: "Split | tuple[Any, Any] | torch.utils.data.Dataset",
    mean: Stats = None,
    std: Stats = None,
    flip: bool = True,
    stats_from_images: bool = True,
) -> Split:
    """A :class:`Split` from ``(images, labels)`` (tensors or NumPy arrays, see :func:`as_uint8_images`)
    or a torch ``Dataset`` of ``(image, label)`` pairs (PIL images, arrays or tensors).

    ``mean``/``std``: the normalisation; None with ``stats_from_images``: the images' own
    per-channel statistics (:func:`icepick.data.manifest.channel_stats`); None without it: none
    (the model sees 0..1 values). A Split is returned as it is.
    """
    if isinstance(data, Split):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and not _is_item(data[0]):
        images, labels = data
    else:
        images, labels = _from_dataset(data)
    images = as_uint8_images(images).cpu().contiguous()
    labels = _as_labels(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"labels: {tuple(labels.shape)} is not one label per image ({len(images)} images)")
    if mean is None and std is None and stats_from_images:
        mean, std = channel_stats(images.numpy())
    return Split(images, labels, mean, std, flip)


# ---------------------------------------------------------------- splits of a data set on disk


def split_bytes(info: DatasetInfo, name: str) -> int:
    """Bytes the images of split ``name`` take in memory (uint8), from the data set's record."""
    count = {"train": info.n_train, "test": info.n_test, "val": info.n_val}[name]
    return int(count) * int(np.prod(info.image_shape))


def load_split(
    root: str | os.PathLike,
    name: str,
    device: str | torch.device = "cpu",
    storage: str = "auto",
    data_memory: int | None = None,
) -> Split:
    """Load the 'train', 'test' (or a stored 'val') split of the data set under ``root`` onto ``device``.

    Every file is checked first (:func:`icepick.data.reader.read_split`); the split carries the
    data set's normalisation, flip setting and augmentation (:func:`icepick.data.dataset_info`).

    ``storage``: 'memory' (read whole onto the device), 'stream' (left on disk, read a batch
    at a time; an import's ``.npy`` files only) or 'auto': streamed when its images are larger
    than the cap (:func:`icepick.data.stream.memory_cap`: ``data_memory`` bytes, or a share of
    the memory) and its files allow it.
    """
    check_choice("split", name, ("train", "val", "test"))
    check_choice("storage", storage, ("auto", "memory", "stream"))
    images, labels = read_split(root, name, mmap=True)  # an import's .npy memory-mapped, other layouts read
    info = dataset_info(root)
    if not isinstance(images, np.ndarray):
        if storage == "stream":
            raise ConfigError(f"data: {root} is stored as {info.layout} files, which cannot be streamed; import it "
                              f"(icepick data import) to stream it, or hold it in memory")
        return Split(images, labels, info.mean, info.std, info.flip, info.augmentation).to(device)
    if storage == "auto":
        storage = plan_storage({name: int(images.nbytes)}, memory_cap(device, data_memory))[name]
    if storage == "stream":
        from icepick.data.arrays import images_file

        disk = DiskImages(images, device, path=Path(root) / images_file(name))
        return Split(disk, labels.to(device), info.mean, info.std, info.flip, info.augmentation)
    return Split(torch.from_numpy(np.array(images)), labels, info.mean, info.std, info.flip,
                 info.augmentation).to(device)


def subset(split: Split, indices: torch.Tensor) -> Split:
    """The samples of ``split`` at ``indices`` (in that order); a streamed split's subset stays on disk."""
    indices = indices.to(split.device)
    if isinstance(split.images, DiskImages):
        return split.with_images(split.images.take(indices), split.labels[indices].contiguous())
    return split.with_images(split.images[indices].contiguous(), split.labels[indices].contiguous())


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


# ---------------------------------------------------------------- batches


def _norm_constants(
    device: torch.device, mean: Sequence[float], std: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return 1.0 / (255.0 * std_t), -mean_t / std_t


def normalize(
    images: torch.Tensor,
    memory_format: torch.memory_format = torch.contiguous_format,
    mean: Stats = CIFAR10_MEAN,
    std: Stats = CIFAR10_STD,
) -> torch.Tensor:
    """Images of 0..255 values (uint8, or floats from an augmentation) -> float32, per-channel
    normalised with ``mean`` and ``std`` (of 0..1 values; CIFAR-10's by default); None for both:
    only scaled to 0..1.

    The layout change happens before the float conversion (on uint8 images, a quarter of
    the bytes); the conversion and the in-place arithmetic keep it.
    """
    out = images.contiguous(memory_format=memory_format).to(torch.float32)
    if mean is None:
        return out.mul_(1.0 / 255.0)
    scale, shift = _norm_constants(images.device, mean, std)  # type: ignore[arg-type]
    return out.mul_(scale).add_(shift)


def num_train_batches(split: Split | int, batch_size: int = 128, drop_last: bool = False) -> int:
    """Number of batches :func:`train_batches` yields per epoch."""
    n = split if isinstance(split, int) else len(split)
    return n // batch_size if drop_last else -(-n // batch_size)


def train_batches(
    split: Split,
    batch_size: int = 128,
    seed: int = 0,
    augment: bool = True,
    drop_last: bool = False,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One training epoch of ``(images, labels)`` batches, shuffled and augmented on the device.

    The order and every augmentation draw come from a ``torch.Generator`` on the split's
    device seeded with ``seed``, so an epoch is a pure function of ``(split, seed)`` on a
    given device. Augmentation: the split's (:mod:`icepick.data.augment`; at 32x32 the
    published CIFAR recipe: random crop of the image zero-padded by 4, and a horizontal flip
    with probability 1/2 where the data set suits it); then normalisation with the split's
    statistics.

    A streamed split (:mod:`icepick.data.stream`) gives the same batches: each batch's
    images are gathered from disk in the same order (read ahead in the background) and the
    same augmentation draws are applied to them on the device.

    Yields:
        float32 images ``[B, C, H, W]`` (in ``memory_format``) and int64 labels ``[B]``.
    """
    from icepick.data import augment as aug

    check_int("batch_size", batch_size, 1)
    device = split.device
    n = len(split)
    _, height, width = split.image_shape
    gen = torch.Generator(device=device).manual_seed(int(seed))
    order = torch.randperm(n, generator=gen, device=device)
    if augment:  # drawn for the whole epoch up front, so they do not depend on the batch size
        draws = aug.draw(split.augmentation, n, height, width, split.flip, gen, device)  # type: ignore[arg-type]
    slices = [slice(b * batch_size, (b + 1) * batch_size) for b in range(num_train_batches(n, batch_size, drop_last))]
    if isinstance(split.images, DiskImages):
        host_order = order.cpu().numpy()
        sources: Iterator[torch.Tensor] = prefetched(split.images, (host_order[sl] for sl in slices))
    else:
        sources = (split.images[order[sl]] for sl in slices)
    for sl, images in zip(slices, sources):
        idx = order[sl]
        if augment:
            images = aug.apply(split.augmentation, images, {k: v[sl] for k, v in draws.items()})  # type: ignore[arg-type]
        yield normalize(images, memory_format, split.mean, split.std), split.labels[idx]


def eval_batches(
    split: Split, batch_size: int = 1000, memory_format: torch.memory_format = torch.contiguous_format
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The split in order, normalised with its statistics, without augmentation (a streamed
    split's batches read ahead from disk)."""
    check_int("batch_size", batch_size, 1)
    slices = [slice(start, start + batch_size) for start in range(0, len(split), batch_size)]
    if isinstance(split.images, DiskImages):
        sources: Iterator[torch.Tensor] = prefetched(split.images, slices)
    else:
        sources = (split.images[sl] for sl in slices)
    for sl, images in zip(slices, sources):
        yield normalize(images, memory_format, split.mean, split.std), split.labels[sl]
