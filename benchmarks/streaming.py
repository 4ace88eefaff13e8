"""Streaming throughput: the images/s a streamed split delivers against what fine-tuning consumes.

For each image size (224x224 and 64x64 by default) the benchmark writes a file of random uint8
images in the import format (one ``.npy``, :mod:`icepick.data.arrays`) and measures, with batches
of ``--batch-size`` in the seeded order of an epoch:

* ``read cold``: the gather alone (:func:`icepick.data.stream.prefetched`, with 1 and
  ``READ_THREADS`` reader threads), after the file was dropped from the page cache
  (``posix_fadvise(DONTNEED)``): what a disk delivers to random rows;
* ``read warm``: the same, the file in the page cache;
* ``stream``: what fine-tuning receives from a streamed split (:func:`icepick.data.train_batches`:
  the gather, the augmentation that suits the size and the normalisation), warm;
* ``memory``: the same batches from the split held in memory (the same bytes, bit for bit).

and what fine-tuning consumes: ``icepick.finetune.finetune`` (KD teacher, the pipeline's own loop)
of ``--model`` at ``--consumer-shape`` on an in-memory split, images/s. On a GPU everything runs
against that GPU (the augmentation on it, pinned host memory, copies on a side stream).

Every figure is given twice: images per second of wall-clock time (what a consumer sees; on a
loaded machine it is slowed by whatever else runs) and images per second of the process's CPU
time, every thread included (what the work costs in cores: 1 / that figure is core-seconds per
image). A cold read waits on the disk, so only its wall-clock figure says how fast the disk is.

Example::

    python -m benchmarks.streaming                       # 224 and 64, batch 256, resnet56_w050 at 32
    python -m benchmarks.streaming --sizes 64 --images 4096 --batches 4 --repeats 1   # seconds
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import time

import numpy as np
import torch

from benchmarks.common import add_common_args, fmt_spread, machine, markdown_table, setup, spread, write_outputs
from icepick.data import Split, load_split, train_batches
from icepick.data.arrays import write_arrays
from icepick.data.augment import default_augmentation, describe
from icepick.data.manifest import FORMAT, write_manifest
from icepick.data.stream import READ_THREADS, prefetched
from icepick.runtime import ensure_cpu_allocator, synchronize

__all__ = ["main", "write_set", "drop_from_page_cache", "measure_size", "measure_consumer"]

log = logging.getLogger(__name__)


def write_set(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """An import-format set of ``n`` random 3x``size``x``size`` training images (and 16 test ones)."""
    rng = np.random.default_rng(seed)
    files, counts = {}, {}
    for split, count in (("train", n), ("test", 16)):
        images = np.empty((count, 3, size, size), dtype=np.uint8)
        for start in range(0, count, 1024):  # bounded memory at any size
            part = images[start:start + 1024]
            part[...] = rng.integers(0, 256, part.shape, dtype=np.uint8)
        files.update(write_arrays(root, split, images, rng.integers(0, 10, count)))
        counts[split] = count
        del images
    write_manifest(root, {
        "format": FORMAT, "source": "imagefolder", "origin": {"generated": "benchmarks/streaming.py"},
        "classes": [str(i) for i in range(10)], "num_classes": 10, "layout": "npy",
        "image_shape": [3, size, size], "transform": [], "options": {}, "counts": counts, "split": {"kind": "given"},
        "augmentation": describe(default_augmentation(size, size), size, size, True),
        "normalization": {"mean": [0.5] * 3, "std": [0.29] * 3}, "files": files})
    return root


def drop_from_page_cache(path: Path) -> None:
    """Ask the kernel to drop ``path``'s pages from the page cache (nothing else may map it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _order(split: Split, batch_size: int, batches: int, seed: int) -> list[np.ndarray]:
    """The first ``batches`` index batches of an epoch's seeded order (as train_batches draws it)."""
    gen = torch.Generator(device=split.device).manual_seed(seed)
    order = torch.randperm(len(split), generator=gen, device=split.device).cpu().numpy()
    return [order[b * batch_size:(b + 1) * batch_size] for b in range(batches)]


def _consume(batches: Any, limit: int) -> int:
    """Pull ``limit`` batches (synchronising the device at the end); returns the images."""
    images = 0
    for i, batch in enumerate(batches):
        images += len(batch[1] if isinstance(batch, tuple) else batch)
        if i + 1 == limit:
            break
    return images


def timed_both(fn: Any, device: torch.device) -> tuple[Any, float, float]:
    """Run ``fn``: (result, wall-clock seconds, process CPU seconds), the device synchronised."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def measure_size(root: Path, device: torch.device, batch_size: int, batches: int, repeats: int,
                 threads: list[int]) -> dict[str, Any]:
    """images/s of each way of getting ``batches`` training batches of the set under ``root``."""
    images_file = root / "train_images.npy"
    out: dict[str, dict[str, list[float]]] = {}

    def record(name: str, fn: Any) -> None:
        n, wall, cpu = timed_both(fn, device)
        entry = out.setdefault(name, {"wall": [], "cpu": []})
        entry["wall"].append(n / wall)
        entry["cpu"].append(n / max(cpu, 1e-9))

    for repeat in range(repeats):
        seed = 1000 + repeat
        for t in threads:
            gc.collect()
            drop_from_page_cache(images_file)
            split = load_split(root, "train", device, "stream")
            drop_from_page_cache(images_file)  # the md5 check read it
            order = _order(split, batch_size, batches, seed)
            record(f"read cold, {t} thread{'s' if t > 1 else ''}",
                   lambda: _consume(prefetched(split.images, order, threads=t), batches))
            record(f"read warm, {t} thread{'s' if t > 1 else ''}",
                   lambda: _consume(prefetched(split.images, order, threads=t), batches))
            del split
        stream = load_split(root, "train", device, "stream")
        _consume(prefetched(stream.images, _order(stream, batch_size, batches, seed)), batches)  # warm the pages
        record("stream (gather, augment, normalise)",
               lambda: _consume(train_batches(stream, batch_size, seed=seed), batches))
        del stream
        memory = load_split(root, "train", device, "memory")
        record("memory (augment, normalise)", lambda: _consume(train_batches(memory, batch_size, seed=seed), batches))
        del memory
    return {name: {clock: spread(values) for clock, values in entry.items()} for name, entry in out.items()}


def measure_consumer(model_name: str, shape: tuple[int, int, int], device: torch.device, batch_size: int,
                     batches: int, repeats: int) -> dict[str, float]:
    """images/s of the pipeline's fine-tuning (KD teacher) of ``model_name`` on random in-memory images."""
    import copy

    from icepick.finetune import FinetuneConfig, finetune
    from icepick.models import build_model

    g = torch.Generator().manual_seed(0)
    n = batch_size * batches
    split = Split(torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g),
                  torch.randint(0, 10, (n,), generator=g), mean=(0.5,) * shape[0], std=(0.25,) * shape[0]).to(device)
    torch.manual_seed(0)
    model = build_model(model_name, 10, input_shape=shape).to(device)
    teacher = copy.deepcopy(model).eval()
    cfg = FinetuneConfig(batch_size=batch_size, max_batches=batches, early_halt=0)
    finetune(model, teacher, split, 1e-3, FinetuneConfig(batch_size=batch_size, max_batches=1, early_halt=0), seed=0)
    rates: dict[str, list[float]] = {"wall": [], "cpu": []}
    for repeat in range(repeats):
        _, wall, cpu = timed_both(lambda: finetune(model, teacher, split, 1e-3, cfg, seed=repeat), device)
        rates["wall"].append(n / wall)
        rates["cpu"].append(n / max(cpu, 1e-9))
    return {clock: spread(values) for clock, values in rates.items()}


def _shape(text: str) -> tuple[int, int, int]:
    values = tuple(int(v) for v in text.lower().split("x"))
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"must be CxHxW, not {text!r}")
    return values  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streaming", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="224,64", help="image sizes to stream, comma-separated")
    parser.add_argument("--images", default="4096,16384",
                        help="training images per size (comma-separated, one per size, or one for all)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=8, help="batches per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--read-threads", default=f"1,{READ_THREADS}", help="reader threads to compare")
    parser.add_argument("--model", default="resnet56_w050", help="the consumer: fine-tuning of this model")
    parser.add_argument("--consumer-shape", type=_shape, default=(3, 32, 32))
    parser.add_argument("--consumer-batch-size", type=int, default=128)
    parser.add_argument("--consumer-batches", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None, help="where the image files go (default: a temp dir)")
    add_common_args(parser, "benchmarks/out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = setup(args)
    ensure_cpu_allocator(device)  # as every run does on a CPU: large blocks reused, not mapped afresh
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(c) for c in args.images.split(",")]
    counts = counts * len(sizes) if len(counts) == 1 else counts
    threads = [int(t) for t in args.read_threads.split(",")]
    work = Path(tempfile.mkdtemp(prefix="icepick-streaming-", dir=args.workdir))
    figures: dict[str, Any] = {"machine": machine(device), "batch_size": args.batch_size, "batches": args.batches,
                               "repeats": args.repeats, "sizes": {}}
    try:
        for size, n in zip(sizes, counts):
            root = write_set(work / f"s{size}", n, size)
            log.info("%dx%d: %d images, %.0f MiB", size, size, n, n * 3 * size * size / 2**20)
            result = measure_size(root, device, args.batch_size, args.batches, args.repeats, threads)
            figures["sizes"][str(size)] = {"images": n, "bytes_per_image": 3 * size * size, "images_per_s": result}
            shutil.rmtree(root)
        figures["consumer"] = {"model": args.model, "shape": list(args.consumer_shape),
                               "batch_size": args.consumer_batch_size,
                               "images_per_s": measure_consumer(args.model, args.consumer_shape, device,
                                                                args.consumer_batch_size, args.consumer_batches,
                                                                args.repeats)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for size, entry in figures["sizes"].items():
        for name, s in entry["images_per_s"].items():
            rows.append([f"{size}x{size}", name, fmt_spread(s["wall"], 0),
                         f"{s['wall']['median'] * entry['bytes_per_image'] / 2**20:.0f}", fmt_spread(s["cpu"], 0)])
    c = figures["consumer"]
    rows.append(["x".join(map(str, c["shape"][1:])), f"fine-tuning {c['model']} (batch {c['batch_size']}, KD)",
                 fmt_spread(c["images_per_s"]["wall"], 0), "", fmt_spread(c["images_per_s"]["cpu"], 0)])
    m = figures["machine"]
    note = (f"Measured on {m['cpu']} ({m['cpus']} CPUs, {m['torch_threads']} torch threads, load average "
            f"{', '.join(f'{v:.1f}' for v in m.get('load_average', ()))}), device {m['device']}, torch {m['torch']}, "
            f"{m['time']}; batches of {args.batch_size}, {args.batches} per measurement, {args.repeats} repeats.")
    markdown = ("# Streaming throughput\n\n" + note + "\n\n"
                + markdown_table(["images", "what", "images/s, wall clock: median (min-max)", "MiB/s (wall)",
                                  "images/s of CPU time"], rows))
    json_path, md_path = write_outputs(args.out, "streaming", figures, markdown)
    print(markdown)
    log.info("wrote %s and %s", json_path, md_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
