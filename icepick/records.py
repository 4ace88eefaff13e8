"""Writing artifacts safely and recording where they came from.

Every artifact is written to a temporary file in the destination folder and renamed into
place, so a killed process never leaves a half-written file under the final name.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "write_json",
    "read_json",
    "write_csv",
    "provenance",
    "process_exists",
]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file is flushed to disk before the rename, so ``path`` is either the old
    file or the complete new one, after a kill or a power cut alike. Its name carries the
    writer's process id and host (``.<name>.<pid>@<host>.<random>.tmp``), so that temporaries
    left by a process killed mid-write are recognised and removed by the next writer on the
    same host.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    prefix = f".{path.name}.{os.getpid()}@{socket.gethostname()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
        _fsync(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries of ``path`` whose writer, a process on this host, no longer runs."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d+)@(.+)\.[^.]+\.tmp")
    host = socket.gethostname()
    try:
        names = [p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if not match or match.group(2) != host or process_exists(int(match.group(1))):
            continue
        try:
            (path.parent / name).unlink()
        except OSError:
            pass


def process_exists(pid: int) -> bool:
    """Whether a process with ``pid`` runs on this host (this process included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a damaged file raises ValueError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete it and rerun the step that writes it") from err


def write_csv(path: str | os.PathLike, table: Any, columns: list[str] | None = None) -> None:
    """Write a table as CSV, atomically: a pandas DataFrame (without its index), or a list of
    dicts with ``columns`` (the way pandas writes them: NaN and None as empty cells), so the
    jobs that only write rows need not import pandas (a third of a second of start-up each).
    """
    with atomic_path(path) as tmp:
        if isinstance(table, list):
            if columns is None:
                raise ValueError("write_csv: a list of rows needs its columns")
            with open(tmp, "w", newline="") as handle:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(columns)
                writer.writerows([_csv_cell(row.get(col)) for col in columns] for row in table)
        else:
            table.to_csv(tmp, index=False)


def _csv_cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):  # None and NaN: empty
        return ""
    return value


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The current git commit (with '-dirty' if the tree has changes), or 'unknown'."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo on Linux, else the platform's answer): the same
    command gives other float results on another processor family, so records name it."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: Any = None, precision: str = "fp32", data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions, device (and the GPU slot the job holds, if any), the arithmetic in force, the
    data set's identity (``icepick.data.dataset_info(...).record()``), git commit, host and time."""
    from importlib.metadata import version

    import torch

    from icepick import __version__
    from icepick.devices import current_slot
    from icepick.runtime import arithmetic

    dev = str(device) if device is not None else "cpu"
    if device is not None and torch.device(device).type == "cuda":
        dev = f"{dev} ({torch.cuda.get_device_name(torch.device(device))})"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": version("torchvision"),  # not imported: ~3 s of start-up
        "icepick": __version__,
        "device": dev,
        "cpu": cpu_model(),  # float results on the CPU differ between processor families
        "gpu_slot": slot.record() if (slot := current_slot()) else None,
        "arithmetic": arithmetic(precision),
        "data": data,
        "git_commit": git_commit(),
        "hostname": socket.gethostname(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

