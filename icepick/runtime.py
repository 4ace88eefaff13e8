"""Where and how the work runs: the device, threads, GPU backend settings, arithmetic
precision, memory layout, the CPU allocator policy and the evaluation batch size.

Everything about the machine that the method's modules need, in one place: they ask this
module for a device, a memory format or an autocast context, and never set backend flags
themselves. Nothing here changes a result beyond float rounding.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from icepick.config import ConfigError, check_choice

__all__ = [
    "PRECISIONS",
    "MEMORY_FORMAT",
    "resolve_device",
    "synchronize",
    "set_threads",
    "configure_backends",
    "arithmetic",
    "autocast",
    "grad_scaler",
    "to_memory_format",
    "keep_cpu_allocations",
    "ensure_cpu_allocator",
    "default_eval_batch_size",
]

#: Arithmetic of training and evaluation. 'fp32' is strict IEEE fp32 (TF32 off): the paper's
#: arithmetic, on an NVIDIA TITAN RTX (Turing, which has no TF32). 'tf32' lets convolutions and
#: matmuls on Ampere and newer GPUs round their inputs to TF32 (10-bit mantissa); 'bf16' runs
#: the forward passes under bfloat16 autocast (TF32 off for what stays in fp32); 'fp16' under
#: float16 autocast, with the loss scaled so that small gradients do not underflow
#: (:func:`grad_scaler`; float16 keeps 10 mantissa bits to bfloat16's 7, but its range is only
#: 6e-8..65504). On a CPU 'fp32' and 'tf32' are the same; CPU autocast runs float16 too (slowly:
#: for tests, not for speed).
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
#: Autocast dtype of each precision that autocasts.
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: Memory format of models and batches on the hot path (fine-tuning, evaluation).
#: channels_last (NHWC) lets oneDNN on CPUs and cuDNN on GPUs pick their fastest convolution
#: and batch-norm kernels: on a 2-core CPU it roughly halves ResNet training time (see
#: docs/performance.md). Values are the same; only the float rounding may differ.
MEMORY_FORMAT = torch.channels_last


# glibc's mallopt parameters (malloc.h) and the values used below
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP = (1 << 30, 1 << 31)  # mmap threshold 1 GiB, trim threshold 2 GiB
_GLIBC_STEADY = (32 << 20, 64 << 20)  # where glibc's dynamic thresholds end up (64-bit): its default
_allocator_kept: bool | None = None  # None: never set in this process


def keep_cpu_allocations(enable: bool = True) -> bool:
    """Let the C allocator keep and reuse large blocks instead of returning them to the OS.

    A training or evaluation batch allocates and frees the same large activation tensors
    again and again. glibc serves blocks above its mmap threshold (at most 32 MiB) with a
    fresh ``mmap`` and unmaps them on free, so every batch pays page faults and the kernel's
    zeroing of those pages: on a 2-core CPU, evaluation at batch 1000 ran at half the speed
    of batch 128 for that reason alone (docs/performance.md). Raising the mmap and trim
    thresholds (1 GiB, 2 GiB) keeps such blocks in the heap for reuse; the process's
    resident memory then stays near its peak instead of shrinking between batches.

    ``enable=False`` sets glibc's own steady state (32 MiB, 64 MiB) back. Process-wide; a no-op
    returning False where the C library is not glibc. Returns whether the setting took.
    """
    global _allocator_kept
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mmap, trim = _KEEP if enable else _GLIBC_STEADY
        ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, trim) == 1
    except (OSError, AttributeError):
        return False
    _allocator_kept = enable
    return ok


def ensure_cpu_allocator(device: torch.device) -> None:
    """On a CPU, :func:`keep_cpu_allocations` once per process unless it was already set (either way)."""
    if torch.device(device).type == "cpu" and _allocator_kept is None:
        keep_cpu_allocations(True)


def default_eval_batch_size(device: torch.device) -> int:
    """Evaluation batch for ``device``: 1000 on a GPU (fewer launches), 128 on a CPU.

    On a CPU a large batch buys nothing (each convolution is already big enough to keep
    the cores busy) and its activations spill out of the caches: 128 measured as fast as
    any larger batch, and faster for the MobileNets.
    """
    return 1000 if torch.device(device).type == "cuda" else 128


def to_memory_format(module: torch.nn.Module, memory_format: torch.memory_format = MEMORY_FORMAT) -> torch.nn.Module:
    """Put every 4-d parameter and buffer of ``module`` in ``memory_format``, in place; returns it.

    The parameter objects stay the same (only their storage layout changes), so an optimizer
    built before still sees them. Nearly free when they already are in that format; call it
    again after pruning, which creates new, contiguous parameters.
    """
    return module.to(memory_format=memory_format)




def resolve_device(name: str = "auto") -> "torch.device":
    """Map a config value ('auto', 'cpu', 'cuda', 'cuda:1') to a torch.device.

    'auto' picks CUDA when it is available. Asking for CUDA on a machine without it raises
    a ValueError that says so instead of failing later inside torch.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device: {name!r} is not a device; use 'auto', 'cpu' or 'cuda[:N]'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device: {name!r} is not supported; use 'auto', 'cpu' or 'cuda[:N]'")
    return device


def synchronize(device: Any) -> None:
    """Wait for queued GPU work so that a clock reading covers it (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count (Snakemake passes its ``threads``)."""
    if threads:
        torch.set_num_threads(int(threads))




def configure_backends(device: torch.device, precision: str = "fp32") -> dict[str, Any]:
    """Backend settings of a job: cuDNN autotuning on a GPU, and TF32 only for ``precision='tf32'``.

    Process-wide (torch's flags), so every command calls it once, before any work. Returns
    :func:`arithmetic`, what the records carry.
    """
    check_choice("precision", precision, PRECISIONS)
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return arithmetic(precision)


def arithmetic(precision: str) -> dict[str, Any]:
    """The arithmetic in force, for the records: the precision asked for and torch's TF32 flags."""
    return {
        "precision": precision,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
    }


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 or fp16 autocast on ``device`` for ``precision`` 'bf16' or 'fp16', else a no-op context (fp32, tf32)."""
    dtype = _AUTOCAST.get(precision)
    if dtype is not None:
        return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, precision: str) -> "torch.amp.GradScaler | None":
    """A loss scaler for ``precision='fp16'`` on ``device`` (``torch.amp.GradScaler``), else None.

    Its scale starts at 2^16, halves when a batch's gradients overflow (that batch's update is
    skipped) and doubles after 2,000 batches without overflow: torch's defaults. The other
    precisions need none (bfloat16 has float32's range).
    """
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)
