"""The real CIFAR-10: the official files and md5 sums, the check, and the download.

The download goes through torchvision's ``CIFAR10`` class (:func:`fetch_cifar10`); reading
(:mod:`icepick.data.reader`) does not import torchvision, whose import costs every job about
three seconds of start-up on a CPU.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from icepick.data.layout import BASE_FOLDER, MANIFEST, MARKER, DataIntegrityError, IncompleteDataError, md5

__all__ = ["OFFICIAL_MD5", "URL", "TGZ", "TGZ_MD5", "check_official", "official_mismatch", "official_digest",
           "fetch_cifar10"]

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TGZ = "cifar-10-python.tar.gz"
TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"
DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation; an offline machine fails at DNS at once

#: The official files and md5 sums (the same list as torchvision's ``CIFAR10``; a test checks).
OFFICIAL_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


def official_digest(table: Mapping[str, str] = OFFICIAL_MD5) -> str:
    """sha256 of the md5 list (``md5sum`` format: ``<md5>  <name>`` lines, in table order):
    the identity of a plain CIFAR-10 folder, whose files that list vouches for."""
    text = "".join(f"{value}  {name}\n" for name, value in table.items())
    return hashlib.sha256(text.encode()).hexdigest()


def missing_message(root: Path, reason: str) -> str:
    return (
        f"CIFAR-10 not found under {root / BASE_FOLDER} and {reason}. Download {URL} "
        f"(md5 {TGZ_MD5}) and place it at {root / TGZ}, or extract it so that "
        f"{root / BASE_FOLDER / 'data_batch_1'} exists (`python -m icepick data fetch --root {root}` extracts "
        f"and checks a placed archive without downloading). Without network access, "
        f"`python -m icepick data synth --out {root} ...` writes a generated stand-in instead."
    )


def official_mismatch(root: Path, table: Mapping[str, str] = OFFICIAL_MD5) -> tuple[Path, str, str] | None:
    """The first file under ``root/cifar-10-batches-py`` that exists but differs from ``table``,
    as ``(path, its md5, the expected md5)``; None when every present file matches."""
    base = Path(root) / BASE_FOLDER
    for name, expected in table.items():
        path = base / name
        if path.is_file():
            actual = md5(path)
            if actual != expected:
                return path, actual, expected
    return None


def check_official(root: Path, table: Mapping[str, str] = OFFICIAL_MD5) -> None:
    """Raise FileNotFoundError / DataIntegrityError unless every official file is intact.

    A file that exists but is not the official one, in a folder that has neither an import's
    manifest nor a generated set's marker, raises :class:`IncompleteDataError`: it is an
    interrupted import or generation, or damaged real data; the message says how to redo each.
    """
    root = Path(root)
    base = root / BASE_FOLDER
    for name, expected in table.items():
        path = base / name
        if not path.is_file():
            raise FileNotFoundError(missing_message(root, f"{path} is missing"))
        actual = md5(path)
        if actual != expected:
            raise IncompleteDataError(
                f"{path} is damaged or is not the official CIFAR-10 file (md5 {actual}, expected {expected}), "
                f"and {root} has neither {MANIFEST} nor {base / MARKER}: if `icepick data import` wrote this "
                f"folder, the import is incomplete: redo it with `python -m icepick data import --source SOURCE "
                f"--out {root} ...`; if `icepick data synth` did, regenerate it with `python -m icepick data synth "
                f"--out {root} ...`; for the real CIFAR-10, delete {base} and extract {URL} (md5 {TGZ_MD5}) there "
                f"again, or run `python -m icepick data fetch --root {root} --force`."
            )


def fetch_cifar10(root: str | os.PathLike, force: bool = False) -> None:
    """Make sure the real CIFAR-10 is under ``root``, downloading it when possible.

    Args:
        root: data folder; the files end up in ``<root>/cifar-10-batches-py``.
        force: write over a folder that holds other data (a generated or imported set, other
            files, or CIFAR-10 files whose md5 sums differ from the official ones).

    Raises:
        FileNotFoundError: the files are missing and the download failed; the message says
            which file to place where.
        DataIntegrityError: ``root`` holds other data (without ``force``), a file differs from
            the official one (named, with both md5 sums), or the download was damaged.
    """
    from icepick.data.destination import check_destination

    root = Path(root)
    check_destination(root, "cifar10", force, "data fetch")
    if force:  # the records of whatever was there must not vouch for the official files
        for record in (root / MANIFEST, root / BASE_FOLDER / MARKER):
            if record.is_file():
                record.unlink()
    try:
        check_official(root)
        return
    except (FileNotFoundError, DataIntegrityError):
        pass
    mismatch = official_mismatch(root)
    if mismatch is not None and not force:
        path, actual, expected = mismatch
        raise DataIntegrityError(
            f"{path} exists but is not the official CIFAR-10 file (md5 {actual}, expected {expected}); "
            f"`icepick data fetch` does not write over it: delete {root / BASE_FOLDER}, or rerun with --force "
            f"to download the official files over it"
        )
    from torchvision.datasets import CIFAR10

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        root.mkdir(parents=True, exist_ok=True)
        CIFAR10(str(root), train=True, download=True)
    except Exception as err:  # noqa: BLE001 - any failure means: tell the user what to place where
        raise FileNotFoundError(missing_message(root, f"the download failed ({err!r})")) from err
    finally:
        socket.setdefaulttimeout(previous)
    check_official(root)
