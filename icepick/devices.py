"""GPU slots: one GPU per job (or k jobs per GPU) when several jobs share a machine's GPUs.

``snakemake --cores all --resources gpu=4`` lets four GPU jobs run at once but does not say
which GPU each may use. So every job that trains or evaluates claims a free *slot* when it
starts: each visible GPU has ``jobs_per_gpu`` slots (default 1), and holding a slot means
holding an exclusive ``flock`` on that slot's lock file. The job then sets
``CUDA_VISIBLE_DEVICES`` to the slot's GPU alone, before CUDA is initialised, so that ``cuda``
inside the job is its own device (shared with at most ``jobs_per_gpu - 1`` other jobs).

* The operating system releases a ``flock`` when the process ends, however it ends (a
  crash, SIGKILL, a node's OOM killer): a slot never leaks, and there is nothing to clean up.
* A job that finds every slot taken waits (with a log line, polling) until one frees, up to
  ``ICEPICK_GPU_SLOT_TIMEOUT`` seconds (default one day), then fails with a clear error.
* The slots' GPUs are the visible GPUs (``CUDA_VISIBLE_DEVICES`` when set, else every GPU the
  driver reports, counted through NVML without initialising CUDA). ``--gpu-slots N`` (config
  ``gpu_slots``) or the environment variable ``ICEPICK_GPU_SLOTS=N`` use the first N of them.
* ``--jobs-per-gpu k`` (config ``jobs_per_gpu``) or ``ICEPICK_JOBS_PER_GPU=k`` gives every GPU
  k slots, so that k small jobs share one GPU: ``snakemake --resources gpu=8`` with k = 2 on
  4 GPUs. Never more than k jobs hold one GPU. Jobs are spread first: slot 0 of every GPU is
  taken before any GPU gets a second job. A throughput choice: the wall-clock times of jobs
  sharing a GPU are not the paper's measure (their training MACs are unaffected).
* Lock files are named by GPU and slot: ``gpu-<GPU>.lock`` for a GPU's slot 0 (the only one
  with one job per GPU), ``gpu-<GPU>-slot<j>.lock`` for its slot j >= 1.
* Lock files live in ``ICEPICK_SLOT_DIR`` (default ``/tmp/icepick-gpu-slots-<uid>``), one
  folder per machine: keep it on a local disk, never on a shared file system. Inside a SLURM
  allocation the folder gets a ``slurm-<job id>`` subfolder, so jobs of one allocation
  (``salloc --gpus=4`` and snakemake inside it) share out its GPUs, while separate SLURM
  jobs, which SLURM already gave a GPU each, never wait for one another.
* For tests on machines without a GPU, ``ICEPICK_GPU_SLOTS=N`` together with
  ``ICEPICK_GPU_SLOTS_ON_CPU=1`` makes CPU jobs claim the slots of N simulated GPUs the same
  way (``jobs_per_gpu`` slots each; lock files ``sim-<GPU>[-slot<j>].lock``).

A job asking for one specific GPU (``--device cuda:1``) claims nothing: it gets that GPU.

Example::

    slot = claim_for_job("auto", jobs_per_gpu=2)      # before anything initialises CUDA
    if slot: print(slot.gpu, slot.slot, os.environ["CUDA_VISIBLE_DEVICES"])
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icepick.config import ConfigError

__all__ = [
    "ENV_SLOTS",
    "ENV_DIR",
    "ENV_TIMEOUT",
    "ENV_ON_CPU",
    "ENV_JOBS_PER_GPU",
    "DEFAULT_JOBS_PER_GPU",
    "Slot",
    "visible_devices",
    "slot_devices",
    "jobs_per_gpu_setting",
    "lock_dir",
    "claim_slot",
    "claim_for_job",
    "current_slot",
    "release_slot",
]

log = logging.getLogger(__name__)

ENV_SLOTS = "ICEPICK_GPU_SLOTS"  # number of GPUs to share out (default: every visible GPU)
ENV_DIR = "ICEPICK_SLOT_DIR"  # folder of the lock files
ENV_TIMEOUT = "ICEPICK_GPU_SLOT_TIMEOUT"  # seconds to wait for a free slot
ENV_ON_CPU = "ICEPICK_GPU_SLOTS_ON_CPU"  # '1': CPU jobs claim simulated slots too (tests)
ENV_JOBS_PER_GPU = "ICEPICK_JOBS_PER_GPU"  # slots per GPU (default 1: one job per GPU)
DEFAULT_JOBS_PER_GPU = 1
DEFAULT_TIMEOUT_S = 24 * 3600.0
POLL_S = 0.5
REPEAT_LOG_S = 600.0  # while waiting, say so again every ten minutes


@dataclass(frozen=True)
class Slot:
    """A claimed slot: ``index`` of ``count`` (all GPUs' slots, GPUs x ``jobs_per_gpu``), slot
    number ``slot`` (0 .. jobs_per_gpu - 1) of GPU ``gpu`` (its position among the slots'
    GPUs); ``device`` is that GPU's CUDA_VISIBLE_DEVICES entry."""

    index: int
    count: int
    device: str
    lock: Path
    simulated: bool = False
    gpu: int = 0
    slot: int = 0
    jobs_per_gpu: int = DEFAULT_JOBS_PER_GPU

    def record(self) -> dict[str, Any]:
        """Plain data for provenance."""
        return {"index": self.index, "count": self.count, "gpu": self.gpu, "slot": self.slot,
                "jobs_per_gpu": self.jobs_per_gpu, "cuda_visible_devices": self.device,
                "lock": str(self.lock), "simulated": self.simulated}


_held: tuple[Slot, int] | None = None  # the slot this process holds, and its lock file descriptor


def current_slot() -> Slot | None:
    """The slot this process holds, or None."""
    return _held[0] if _held else None


def release_slot() -> None:
    """Give the slot back (the end of the process does the same)."""
    global _held
    if _held:
        os.close(_held[1])
        _held = None


# ------------------------------------------------------------------------- which devices


def _gpu_count_without_cuda_init() -> int:
    """GPUs the driver reports, without initialising CUDA in this process (0 if none)."""
    import torch

    if not torch.backends.cuda.is_built():
        return 0
    try:  # NVML, as torch.cuda.device_count() does before CUDA is initialised
        count = int(torch.cuda._device_count_nvml())
    except Exception:  # noqa: BLE001 - a private helper: fall back to nvidia-smi
        count = -1
    if count >= 0:
        return count
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
            return sum(line.startswith("GPU ") for line in out.splitlines())
        except (OSError, subprocess.SubprocessError):
            pass
    return 0


def visible_devices() -> list[str]:
    """The CUDA_VISIBLE_DEVICES entries of the GPUs this process may use ('0', '1', or UUIDs)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        devices = []
        for entry in (e.strip() for e in env.split(",")):
            if not entry or entry.startswith("-"):  # CUDA ignores everything from an invalid entry on
                break
            devices.append(entry)
        return devices
    return [str(i) for i in range(_gpu_count_without_cuda_init())]


def _slots_setting(n_slots: int | None) -> int | None:
    """--gpu-slots, else ICEPICK_GPU_SLOTS, else None (one per visible GPU); 0 means None."""
    if n_slots is None:
        text = os.environ.get(ENV_SLOTS, "").strip()
        if not text:
            return None
        try:
            n_slots = int(text)
        except ValueError:
            raise ConfigError(f"{ENV_SLOTS}: {text!r} is not an integer; unset it or give the number of GPU slots") from None
    if isinstance(n_slots, bool) or not isinstance(n_slots, int) or n_slots < 0:
        raise ConfigError(f"gpu_slots: {n_slots!r} is out of range; it must be an integer >= 0 (0 = one per visible GPU)")
    return n_slots or None


def jobs_per_gpu_setting(jobs_per_gpu: int | None = None) -> int:
    """--jobs-per-gpu, else ICEPICK_JOBS_PER_GPU, else 1: how many jobs may share one GPU."""
    if jobs_per_gpu is None:
        text = os.environ.get(ENV_JOBS_PER_GPU, "").strip()
        if not text:
            return DEFAULT_JOBS_PER_GPU
        try:
            jobs_per_gpu = int(text)
        except ValueError:
            raise ConfigError(f"{ENV_JOBS_PER_GPU}: {text!r} is not an integer; unset it or give the number "
                              "of jobs that may share one GPU (>= 1)") from None
    if isinstance(jobs_per_gpu, bool) or not isinstance(jobs_per_gpu, int) or jobs_per_gpu < 1:
        raise ConfigError(f"jobs_per_gpu: {jobs_per_gpu!r} is out of range; it must be an integer >= 1 "
                          "(1 = one job per GPU)")
    return jobs_per_gpu


def slot_devices(n_slots: int | None = None) -> list[str]:
    """The GPU (CUDA_VISIBLE_DEVICES entry) of every slot: the visible GPUs, or the first N.

    Args:
        n_slots: number of slots; None (or 0) = ``ICEPICK_GPU_SLOTS``, else one per visible GPU.
    """
    n = _slots_setting(n_slots)
    visible = visible_devices()
    if n is None or not visible:
        return visible
    if n > len(visible):
        raise ConfigError(
            f"gpu_slots: {n} slots asked for, but only {len(visible)} GPU(s) are visible "
            f"(CUDA_VISIBLE_DEVICES={','.join(visible)}); use at most {len(visible)}, or 0 for one per visible GPU"
        )
    return visible[:n]


def lock_dir() -> Path:
    """Folder of this machine's (or this SLURM allocation's) slot lock files."""
    base = os.environ.get(ENV_DIR)
    if base:
        path = Path(base)
    else:
        tmp = Path("/tmp") if Path("/tmp").is_dir() else Path(__import__("tempfile").gettempdir())
        path = tmp / f"icepick-gpu-slots-{os.getuid()}"
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        path = path / f"slurm-{job}"
    return path


# ------------------------------------------------------------------------- claiming


def _lock_name(device: str, simulated: bool, slot: int = 0) -> str:
    """``gpu-<GPU>.lock`` for a GPU's slot 0, ``gpu-<GPU>-slot<j>.lock`` for slot j >= 1 (``sim-`` when simulated)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", device)
    return f"{'sim' if simulated else 'gpu'}-{safe}{f'-slot{slot}' if slot else ''}.lock"


def _holders(paths: list[Path]) -> str:
    """Who holds the slots, from what each holder wrote into its lock file."""
    out = []
    for path in paths:
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        out.append(f"{path.name}: {text or 'unknown'}")
    return "; ".join(out)


def _timeout_setting(timeout: float | None) -> float:
    if timeout is not None:
        return float(timeout)
    text = os.environ.get(ENV_TIMEOUT, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{ENV_TIMEOUT}: {text!r} is not a number of seconds") from None
    if value < 0:
        raise ConfigError(f"{ENV_TIMEOUT}: {value} is out of range; it must be >= 0 seconds")
    return value


def claim_slot(
    devices: list[str],
    directory: str | os.PathLike | None = None,
    timeout: float | None = None,
    simulated: bool = False,
    poll: float = POLL_S,
    jobs_per_gpu: int | None = DEFAULT_JOBS_PER_GPU,
) -> Slot:
    """Hold the first free slot of ``devices`` (``jobs_per_gpu`` slots each), waiting while all are taken.

    Slots are tried slot number first, GPU second (slot 0 of every GPU, then slot 1 of every
    GPU, ...), so jobs spread over the GPUs before any GPU is shared. ``jobs_per_gpu`` None
    reads ``ICEPICK_JOBS_PER_GPU``. The lock stays held until :func:`release_slot` or the end
    of the process.

    Raises:
        TimeoutError: every slot stayed taken for ``timeout`` seconds (default
            ``ICEPICK_GPU_SLOT_TIMEOUT`` or one day); the message names the holders.
    """
    global _held
    if _held:
        return _held[0]
    if not devices:
        raise ValueError("claim_slot: no devices to claim a slot among")
    per_gpu = jobs_per_gpu_setting(jobs_per_gpu)
    folder = Path(directory) if directory is not None else lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    # (GPU position, slot number on it) in claim order; the overall index is the position here.
    order = [(gpu, number) for number in range(per_gpu) for gpu in range(len(devices))]
    paths = [folder / _lock_name(devices[gpu], simulated, number) for gpu, number in order]
    count = len(order)
    shape = f" ({len(devices)} GPUs x {per_gpu} jobs per GPU)" if per_gpu > 1 else ""
    limit = _timeout_setting(timeout)
    start = time.monotonic()
    last_said = None
    while True:
        for index, ((gpu, number), path) in enumerate(zip(order, paths)):
            device = devices[gpu]
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    continue
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            slot = Slot(index, count, device, path, simulated, gpu=gpu, slot=number, jobs_per_gpu=per_gpu)
            _held = (slot, fd)
            waited = time.monotonic() - start
            shared = f", job slot {number} of {per_gpu} on this GPU" if per_gpu > 1 else ""
            log.info("claimed GPU slot %d of %d (CUDA_VISIBLE_DEVICES=%s%s%s; lock %s)%s", index, count, device,
                     ", simulated" if simulated else "", shared, path,
                     f" after waiting {waited:.0f} s" if last_said else "")
            return slot
        now = time.monotonic()
        if now - start >= limit:
            raise TimeoutError(
                f"no free GPU slot after waiting {limit:g} s: all {count}{shape} are taken "
                f"({_holders(paths)}); lock files in {folder}. Run fewer GPU jobs at once "
                f"(snakemake --resources gpu=N, N = GPUs x jobs per GPU) or raise {ENV_TIMEOUT}"
            )
        if last_said is None or now - last_said >= REPEAT_LOG_S:
            log.info("all %d GPU slots%s are taken (%s); waiting for one to free (lock files in %s)",
                     count, shape, _holders(paths), folder)
            last_said = now
        time.sleep(min(poll, max(limit - (now - start), 0.0)))


def _cuda_initialized() -> bool:
    import torch

    return bool(torch.cuda.is_initialized())


def claim_for_job(device: str = "auto", n_slots: int | None = None, jobs_per_gpu: int | None = None) -> Slot | None:
    """The slot policy of every command that trains or evaluates; call before CUDA is used.

    With ``device`` 'auto' or 'cuda' and GPUs visible: claim a slot and point
    ``CUDA_VISIBLE_DEVICES`` at its GPU. Otherwise, only when ``ICEPICK_GPU_SLOTS_ON_CPU=1``
    and a number of slots is set (``n_slots`` or ``ICEPICK_GPU_SLOTS``): claim a slot of that
    many simulated GPUs, the same way (tests on machines without GPUs). Returns the slot,
    or None when none applies ('cpu', an explicit 'cuda:N', no GPU).

    Args:
        n_slots: GPUs to share out (the first N visible); None (or 0) = ``ICEPICK_GPU_SLOTS``, else all.
        jobs_per_gpu: slots per GPU, the most jobs that hold one GPU at once; None =
            ``ICEPICK_JOBS_PER_GPU``, else 1.
    """
    if _held:
        return _held[0]
    if device in ("auto", "cuda"):
        devices = slot_devices(n_slots)
        if devices:
            if _cuda_initialized():
                log.warning("CUDA is already initialised in this process; no GPU slot claimed")
                return None
            slot = claim_slot(devices, jobs_per_gpu=jobs_per_gpu)
            os.environ["CUDA_VISIBLE_DEVICES"] = slot.device
            return slot
    if os.environ.get(ENV_ON_CPU, "").strip() != "1" or device not in ("auto", "cuda", "cpu"):
        return None
    n = _slots_setting(n_slots)
    if not n:
        return None
    slot = claim_slot([str(i) for i in range(n)], simulated=True, jobs_per_gpu=jobs_per_gpu)
    os.environ["CUDA_VISIBLE_DEVICES"] = slot.device
    return slot
