"""Where a data command may write, and writing a whole data set folder at once.

No data command (``data import``, ``data synth``, ``data fetch``) writes into a folder that
holds other data unless told to (``--force``): the folder may be missing, empty, or hold an
earlier data set of the same source (rerunning a command, or a Snakemake rerun, needs that).

An import is built in a temporary sibling folder, its ``manifest.json`` written last, then
renamed into place (:func:`staged_folder`), so an interrupted import leaves nothing the
reader accepts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from icepick.data.arrays import SPLITS, array_files
from icepick.data.cifar import OFFICIAL_MD5, TGZ
from icepick.data.layout import BASE_FOLDER, DATA_FILES, MANIFEST, MARKER, md5
from icepick.records import process_exists

__all__ = ["DestinationError", "check_destination", "staged_folder", "folder_source"]

_CIFAR10_EXTRAS = {TGZ}  # what `data fetch` (torchvision) leaves beside the batches folder
_CIFAR10_BASE_EXTRAS = {"readme.html"}  # ... and inside it
_TEMPORARY = re.compile(r"\..+\.tmp")  # atomic_path's temporaries of a killed writer
_ARRAYS = set(array_files(SPLITS))  # an import's .npy files


class DestinationError(ValueError):
    """The output folder holds other data; the command refuses to write over it without --force."""


def _describe_others(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:3])
    return f"other files ({shown}{', ...' if len(names) > 3 else ''})"


def _holds_official_files(root: Path) -> bool:
    base = root / BASE_FOLDER
    return any((base / name).is_file() and md5(base / name) == expected for name, expected in OFFICIAL_MD5.items())


def folder_source(root: Path) -> tuple[str | None, str]:
    """What the data folder ``root`` holds, as ``(source, description)``.

    ``source`` is the data set's source ('cifar10', 'synthetic', an import's source), None
    for a folder with files that are no icepick data set, or '' for a missing or empty folder
    and for an icepick data set whose record (manifest or marker) is gone: an interrupted
    write, or Snakemake's removal of a rule's output before it reruns the rule.
    """
    if not root.exists():
        return "", "nothing"
    if not root.is_dir():
        return None, "a file, not a folder"
    top = [p.name for p in root.iterdir()]
    if not top:
        return "", "nothing"
    base = root / BASE_FOLDER
    inner = [p.name for p in base.iterdir()] if base.is_dir() else []
    unknown = [n for n in top if n not in {MANIFEST, BASE_FOLDER} | _CIFAR10_EXTRAS | _ARRAYS
               and not _TEMPORARY.fullmatch(n)]
    unknown += [f"{BASE_FOLDER}/{n}" for n in inner
                if n not in set(DATA_FILES) | {MARKER} | _CIFAR10_BASE_EXTRAS and not _TEMPORARY.fullmatch(n)]
    if (root / BASE_FOLDER).exists() and not base.is_dir():
        unknown.append(BASE_FOLDER)
    if unknown:
        return None, _describe_others(unknown)
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            source = json.loads(manifest.read_text()).get("source")
        except (ValueError, AttributeError, UnicodeDecodeError):
            source = None
        if not isinstance(source, str) or not source:
            return None, f"a {MANIFEST} that is not an icepick data set's"
        article = "an" if source[:1] in "aeiou" else "a"
        return source, f"{article} {source} data set ({manifest})"
    if (base / MARKER).is_file():
        return "synthetic", f"a generated data set ({base / MARKER})"
    cifar_extras = (set(top) & _CIFAR10_EXTRAS) or (set(inner) & _CIFAR10_BASE_EXTRAS)
    if cifar_extras or _holds_official_files(root):
        return "cifar10", f"the real CIFAR-10 ({base})"
    return "", "an incomplete data set"


def check_destination(out: Path, source: str, force: bool, command: str) -> None:
    """Raise :class:`DestinationError` unless ``command`` may write a ``source`` data set into ``out``.

    Allowed: a missing or empty folder, a data set of the same source, or the remains of an
    icepick data set whose record is gone (see :func:`folder_source`); anything else only
    with ``force``.
    """
    if force:
        if out.exists() and not out.is_dir():
            raise DestinationError(f"{out} is a file, not a folder; give another --out")
        return
    held, what = folder_source(out)
    if held == "" or held == source:
        return
    raise DestinationError(
        f"{out} holds {what}; `icepick {command}` does not write over other data: choose another folder, "
        f"or add --force to replace what is there"
    )


# ---------------------------------------------------------------- whole-folder writes


def _remove_stale(parent: Path, name: str) -> None:
    """Remove staging folders of ``name`` whose writer, a process on this host, no longer runs."""
    pattern = re.compile(re.escape(f".{name}.") + r"(?:import|old)\.(\d+)@(.+)\.[^.]+\.tmp")
    host = socket.gethostname()
    for path in parent.glob(f".{name}.*.tmp"):
        match = pattern.fullmatch(path.name)
        if match and match.group(2) == host and not process_exists(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; when the block succeeds, it becomes ``out``.

    ``out``'s old content (if any) is moved aside and deleted once the new folder is in place;
    on an error the temporary folder is deleted and ``out`` is left as it was. Temporaries of a
    writer killed mid-way are removed by the next writer on the same host.
    """
    out = Path(out)
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(parent, out.name)
    tag = f"{os.getpid()}@{socket.gethostname()}"
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.import.{tag}.", suffix=".tmp", dir=parent))
    try:
        yield stage
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700; a data folder is an ordinary folder
        try:
            os.rename(stage, out)  # out missing or empty: one atomic step
        except OSError:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.{tag}.", suffix=".tmp", dir=parent))
            os.rename(out, old / "previous")
            os.rename(stage, out)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(parent)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
