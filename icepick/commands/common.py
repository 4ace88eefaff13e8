"""Arguments shared by the commands that train or evaluate, and their device set-up."""

from __future__ import annotations

import argparse
import logging

from icepick.devices import claim_for_job
from icepick.runtime import configure_backends, resolve_device, set_threads

__all__ = ["add_device_args", "setup_device", "seed_int"]

log = logging.getLogger(__name__)


def seed_int(text: str) -> int:
    """argparse type for seeds: a non-negative integer, with a clear error otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, not {text!r}")
    return value


def _slots_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer (0 = one per visible GPU), not {text!r}")
    return value


def _jobs_per_gpu_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (1 = one job per GPU), not {text!r}")
    return value


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """--device, --threads, --precision, --gpu-slots and --jobs-per-gpu."""
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (Snakemake's threads)")
    parser.add_argument("--precision", default="fp32",
                        help="fp32: strict fp32, the paper's arithmetic; tf32: TF32 convolutions and "
                             "matmuls on Ampere and newer GPUs; bf16: bfloat16 autocast; fp16: float16 autocast with "
                             "loss scaling (torch.amp.GradScaler)")
    parser.add_argument("--gpu-slots", type=_slots_int, default=None,
                        help="GPUs jobs on this machine share out, one each (default: $ICEPICK_GPU_SLOTS, "
                             "else every visible GPU); see icepick.devices")
    parser.add_argument("--jobs-per-gpu", type=_jobs_per_gpu_int, default=None,
                        help="slots per GPU: at most this many jobs share one GPU (default: $ICEPICK_JOBS_PER_GPU, "
                             "else 1). A throughput choice: wall-clock times of jobs sharing a GPU are not the "
                             "paper's; see icepick.devices")


def setup_device(args: argparse.Namespace) -> "torch.device":  # noqa: F821
    """Claim a GPU slot, resolve --device, set threads and the backends (cuDNN autotuning, TF32 per --precision).

    With --device auto or cuda on a machine with GPUs, the job first claims a free GPU slot
    (icepick.devices: a lock file per GPU, released by the OS when the process ends) and sets
    CUDA_VISIBLE_DEVICES to that GPU, before anything initialises CUDA; so concurrent jobs
    (``snakemake --resources gpu=4``) each get their own GPU; with --jobs-per-gpu k, each GPU
    has k slots and at most k jobs share it. The slot (GPU, slot number, jobs per GPU) is
    logged and recorded in the provenance of the job's records.
    """
    set_threads(args.threads)
    claim_for_job(args.device, getattr(args, "gpu_slots", None), getattr(args, "jobs_per_gpu", None))
    device = resolve_device(args.device)
    configure_backends(device, args.precision)
    return device
