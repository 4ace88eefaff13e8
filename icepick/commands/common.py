"""Arguments shared by the commands that train or evaluate."""

from __future__ import annotations

import argparse

import torch

from icepick.records import resolve_device, set_threads

__all__ = ["add_device_args", "setup_device", "seed_int"]


def seed_int(text: str) -> int:
    """argparse type for seeds: a non-negative integer, with a clear error otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, not {text!r}")
    return value


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """--device, --threads and --precision."""
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (Snakemake's threads)")
    parser.add_argument("--precision", default="fp32", help="fp32 (paper) or bf16 autocast")


def setup_device(args: argparse.Namespace) -> torch.device:
    """Resolve --device, set threads, enable cuDNN autotuning and TF32 on GPUs."""
    set_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device
