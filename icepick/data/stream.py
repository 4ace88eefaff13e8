"""Splits too large for memory: read from their memory-mapped ``.npy`` file a batch at a time.

A split is held in memory (``storage`` 'memory': one uint8 tensor on the training device,
:class:`icepick.data.split.Split`) when it fits under the data memory cap, and streamed
(``storage`` 'stream') otherwise: its :attr:`Split.images` is then a :class:`DiskImages`, the
split's rows of the memory-mapped images file of an import (:mod:`icepick.data.arrays`), and
:func:`icepick.data.split.train_batches` / :func:`~icepick.data.split.eval_batches` gather
each batch from it (:func:`prefetched`): background threads copy the batch's rows out of the
page cache (or the disk) into pinned host memory one or more batches ahead, the batch is copied
to the GPU on a side stream (``non_blocking``) one batch ahead of use, and the same augmentation
as in memory runs on the device. The order, the augmentation draws and so every batch are the
in-memory path's bit for bit: both come from the same generator on the training device.

The cap (:func:`memory_cap`): ``data_memory`` bytes when it is set (``--data-memory``), else
:data:`DATA_MEMORY_SHARE` of the memory the images would live in (the host's RAM; on a GPU the
smaller of the host's RAM and the GPU's memory, as the images pass through the host on their
way). The splits of one experiment are judged together (:func:`plan_storage`): the largest
are streamed until the rest fits.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from icepick.config import ConfigError

__all__ = [
    "DATA_MEMORY_SHARE",
    "PREFETCH_BATCHES",
    "READ_THREADS",
    "STORAGES",
    "DiskImages",
    "parse_memory",
    "total_memory",
    "memory_cap",
    "plan_storage",
    "prefetched",
    "cpu_chunks",
]

log = logging.getLogger(__name__)

#: Share of the memory the images would live in that one experiment's splits may take when no
#: ``data_memory`` is given; the rest is the model's, the activations' and the page cache's.
DATA_MEMORY_SHARE = 0.5
#: Batches read ahead of the one in use (on top of the one already on its way to the GPU).
PREFETCH_BATCHES = 2
#: Threads that copy rows out of the memory map (each one read in flight on a cold disk).
READ_THREADS = 4
STORAGES = ("memory", "stream")

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_memory(text: str | int | None) -> int | None:
    """A ``data_memory`` setting as bytes: an integer, or a number with K, M, G or T (binary:
    ``8G`` is 8 GiB, ``0`` streams every split that can be); None or 'auto': the default share."""
    if text is None or isinstance(text, int) and not isinstance(text, bool):
        if text is not None and text < 0:
            raise ConfigError(f"data_memory: {text} is negative; give bytes such as 8G, 512M or 0 (stream)")
        return text
    value = str(text).strip().lower()
    if value == "auto":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", value)
    if match is None:
        raise ConfigError(f"data_memory: {text!r} is not a size; give bytes such as 8G, 512M, 0 (stream every split) "
                          f"or auto ({DATA_MEMORY_SHARE:.0%} of the memory)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def total_memory(device: torch.device | str) -> int:
    """Bytes of memory the images would live in: the host's RAM; on a GPU the smaller of it and the GPU's."""
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    device = torch.device(device)
    if device.type == "cuda":
        return min(host, int(torch.cuda.get_device_properties(device).total_memory))
    return int(host)


def memory_cap(device: torch.device | str, data_memory: int | None = None) -> int:
    """Bytes of images one experiment may hold in memory: ``data_memory`` when given, else
    :data:`DATA_MEMORY_SHARE` of :func:`total_memory` (a fixed number per machine, so the choice
    does not depend on what else runs)."""
    if data_memory is not None:
        return int(data_memory)
    return int(DATA_MEMORY_SHARE * total_memory(device))


def plan_storage(sizes: Mapping[str, int], cap: int, streamable: Iterable[str] | None = None) -> dict[str, str]:
    """'memory' or 'stream' for each split (``sizes``: its images' bytes): the largest streamable
    splits are streamed until what stays in memory fits under ``cap``."""
    can = set(sizes if streamable is None else streamable)
    plan = {name: "memory" for name in sizes}
    held = sum(sizes.values())
    for name in sorted(sizes, key=lambda k: (-sizes[k], k)):
        if held <= cap:
            break
        if name in can:
            plan[name] = "stream"
            held -= sizes[name]
    return plan


class DiskImages:
    """A split's uint8 images ``[N, C, H, W]`` left on disk: rows ``rows`` (all when None) of the
    memory-mapped images file ``array``, delivered to ``device`` a batch at a time.

    It answers what the code around a :class:`~icepick.data.split.Split` asks of its images
    (``shape``, ``dtype``, ``device``, ``dim()``, ``len``, ``to``) and indexing (a slice, an
    index tensor or array) returns those images as a uint8 tensor on ``device``; it is never
    read whole. ``path``: the file, for messages.
    """

    def __init__(self, array: np.ndarray, device: torch.device | str = "cpu", rows: np.ndarray | None = None,
                 path: str | os.PathLike | None = None) -> None:
        if array.dtype != np.uint8 or array.ndim != 4:
            raise ValueError(f"DiskImages: the array must be uint8 [N, C, H, W], not {array.dtype} {array.shape}")
        self.array = array
        self.rows = None if rows is None else np.ascontiguousarray(rows, dtype=np.int64)
        self._device = torch.device(device)
        self.path = None if path is None else Path(path)

    @property
    def device(self) -> torch.device:
        """Where its batches are delivered (the training device)."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.array.shape[1:]))

    @property
    def nbytes(self) -> int:
        """Bytes the images would take in memory."""
        return len(self) * int(np.prod(self.array.shape[1:]))

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.array) if self.rows is None else len(self.rows)

    def __repr__(self) -> str:
        return f"DiskImages({self.path or 'memory map'}, {list(self.shape)}, device={self.device})"

    def to(self, device: torch.device | str) -> "DiskImages":
        """The same images delivered to ``device``."""
        device = torch.device(device)
        return self if device == self.device else DiskImages(self.array, device, self.rows, self.path)

    def file_rows(self, index: np.ndarray) -> np.ndarray:
        """Rows of the file holding this split's images ``index``."""
        index = np.asarray(index, dtype=np.int64)
        return index if self.rows is None else self.rows[index]

    def take(self, index: torch.Tensor | np.ndarray) -> "DiskImages":
        """The images at ``index`` (in that order), still on disk (a subset costs no memory)."""
        index = np.asarray(torch.as_tensor(index).cpu(), dtype=np.int64)
        if len(index) and (int(index.min()) < -len(self) or int(index.max()) >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        return DiskImages(self.array, self.device, self.file_rows(np.where(index < 0, index + len(self), index)),
                          self.path)

    def read(self, index: np.ndarray | slice, pin: bool = False) -> torch.Tensor:
        """Images ``index`` (positions in this split) read into a new uint8 CPU tensor (page-locked with ``pin``)."""
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if self.rows is None and step == 1:
                source = self.array[start:stop]
                out = torch.empty((len(source), *self.array.shape[1:]), dtype=torch.uint8, pin_memory=pin)
                np.copyto(out.numpy(), source)
                return out
            index = np.arange(start, stop, step, dtype=np.int64)
        index = np.asarray(index, dtype=np.int64)
        if len(index) and (int(index.min()) < -len(self) or int(index.max()) >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        rows = self.file_rows(np.where(index < 0, index + len(self), index))
        out = torch.empty((len(rows), *self.array.shape[1:]), dtype=torch.uint8, pin_memory=pin)
        if len(rows):  # in range (checked above): 'clip' copies straight into out, 'raise' through a buffer
            np.take(self.array, rows, axis=0, out=out.numpy(), mode="clip")
        return out

    def __getitem__(self, index: slice | torch.Tensor | np.ndarray) -> torch.Tensor:
        """Images ``index`` as a uint8 tensor on :attr:`device` (read from disk now)."""
        if not isinstance(index, slice):
            index = np.asarray(torch.as_tensor(index).cpu(), dtype=np.int64).reshape(-1)
        return self.read(index).to(self.device)


def cpu_chunks(images: torch.Tensor | DiskImages, chunk: int = 4096) -> Iterator[np.ndarray]:
    """The images as uint8 NumPy arrays of at most ``chunk`` images each, in order: for what reads
    every image once on the CPU (fingerprints), in memory or on disk alike."""
    for start in range(0, len(images), chunk):
        part = images.read(slice(start, start + chunk)) if isinstance(images, DiskImages) else \
            images[start:start + chunk].detach().cpu()
        yield part.numpy()


def prefetched(images: DiskImages, batches: Iterable[np.ndarray | slice], ahead: int = PREFETCH_BATCHES,
               threads: int = READ_THREADS) -> Iterator[torch.Tensor]:
    """The images of each batch (positions in the split: an index array or a slice), in order, as
    uint8 tensors on the images' device.

    ``threads`` background threads read up to ``ahead`` batches beyond the next one out of the
    memory map (into page-locked memory when the device is a GPU); on a GPU each batch is
    copied on a side stream, the next one while the current one is in use, and the consumer's
    stream waits only for its own batch. Stopping early (a halted fine-tuning) drops what was
    read ahead.
    """
    device = images.device
    cuda = device.type == "cuda"
    copy_stream = torch.cuda.Stream(device) if cuda else None
    order = iter(batches)
    pending: deque[Future] = deque()
    stop = threading.Event()

    def read(index: np.ndarray | slice) -> torch.Tensor | None:
        return None if stop.is_set() else images.read(index, pin=cuda)

    def submit(pool: ThreadPoolExecutor) -> None:
        index = next(order, None)
        if index is not None:
            pending.append(pool.submit(read, index))

    def on_device() -> tuple[torch.Tensor, torch.cuda.Event | None] | None:
        if not pending:
            return None
        host = pending.popleft().result()
        if not cuda:
            return host, None
        with torch.cuda.stream(copy_stream):
            batch = host.to(device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(copy_stream)
        return batch, done

    pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="icepick-stream")
    try:
        for _ in range(max(1, ahead) + 1):
            submit(pool)
        upcoming = on_device()
        while upcoming is not None:
            batch, done = upcoming
            submit(pool)
            upcoming = on_device() if cuda else None  # the next batch on its way while this one is used
            if done is not None:
                current = torch.cuda.current_stream(device)
                current.wait_event(done)
                batch.record_stream(current)
            yield batch
            if not cuda:
                upcoming = on_device()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
