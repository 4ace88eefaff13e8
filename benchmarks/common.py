"""What every benchmark shares: the machine set-up, clocks, peak memory, statistics and output files."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from icepick.data import Split
from icepick.runtime import configure_backends, resolve_device, synchronize

__all__ = [
    "add_common_args",
    "setup",
    "machine",
    "random_split",
    "peak_memory_mib",
    "timed",
    "clock",
    "clock_note",
    "spread",
    "fmt_spread",
    "markdown_table",
    "write_outputs",
]


CLOCKS = ("wall", "cpu")
_clock = "wall"


def add_common_args(parser: argparse.ArgumentParser, default_out: str) -> None:
    """--device, --threads, --clock, --out."""
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clock", default="wall", choices=CLOCKS,
                        help="wall: elapsed time; cpu: this process's CPU time (with --threads 1 on a shared "
                             "CPU, the time the work takes on a core of its own, whatever else runs; CPU only)")
    parser.add_argument("--out", type=Path, default=Path(default_out),
                        help=f"folder for the JSON and markdown results (default {default_out})")


def setup(args: argparse.Namespace) -> torch.device:
    """Threads, clock, device, and on a GPU cuDNN autotuning and TF32, as the pipeline's commands do."""
    global _clock
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    configure_backends(device)
    _clock = "wall" if device.type == "cuda" else getattr(args, "clock", "wall")
    return device


def machine(device: torch.device) -> dict[str, Any]:
    """Where the figures were measured."""
    info = {
        "host": platform.node(), "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "device": str(device), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "clock": _clock,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def random_split(n: int, seed: int, device: torch.device | str = "cpu") -> Split:
    """``n`` random uint8 images with random labels (throughput does not depend on the content)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return Split(images, labels).to(device)


def peak_memory_mib(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak tensor memory (MiB) that ``fn`` allocates above what was allocated when it started.

    On a GPU: ``torch.cuda.max_memory_allocated``. On a CPU: the profiler's memory timeline
    (every tensor allocation and free in order); it slows ``fn`` down, so call this in an
    untimed pass of its own. NaN when the profiler cannot tell.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - start) / 2**20
    import tempfile
    import warnings

    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            fn()
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = Path(tmp) / "timeline.json"
            prof.export_memory_timeline(str(path), device="cpu")
            _, sizes = json.loads(path.read_text())
        return max((sum(row) for row in sizes), default=0) / 2**20
    except Exception as err:  # noqa: BLE001 - a missing figure must not stop the timings
        logging.getLogger(__name__).warning("peak memory not measured: %r", err)
        return float("nan")


def clock() -> str:
    """The clock ``setup`` chose: 'wall' or 'cpu'."""
    return _clock


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """Run ``fn``: (result, seconds on the chosen clock), the device synchronised before each reading."""
    now = time.process_time if _clock == "cpu" else time.perf_counter
    synchronize(device)
    start = now()
    out = fn()
    synchronize(device)
    return out, now() - start


def clock_note(m: dict[str, Any]) -> str:
    """How the figures were measured, for the markdown."""
    what = "CPU time of the process" if m.get("clock") == "cpu" else "wall-clock time"
    return (f"Measured on {m['cpu']} ({m['cpus']} CPUs, {m['torch_threads']} torch threads), device {m['device']}, "
            f"torch {m['torch']}, {m['time']}; times are {what}.")


def spread(values: Sequence[float]) -> dict[str, float]:
    """min, median and max."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def fmt_spread(s: dict[str, float], digits: int = 2) -> str:
    """'median (min-max)'."""
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, name: str, figures: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """``<out>/<name>.json`` and ``<out>/<name>.md``; returns both paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(figures, indent=2, default=float) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path
