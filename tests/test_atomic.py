"""Atomic artifacts (icepick.records.atomic_path): a file is the old one or the complete new one,
and temporaries left by a killed writer are cleaned up by the next writer."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from icepick.records import atomic_path, write_csv, write_json


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "record.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_a_writer_killed_mid_write_leaves_the_old_file_and_its_temporary_is_removed_later(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from icepick.records import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"partial")
            print("writing", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)  # no clean-up code runs
    writer.wait()
    left = [p.name for p in tmp_path.iterdir() if p.name != "model.pt"]
    assert target.read_bytes() == b"old"
    assert len(left) == 1 and left[0].startswith(f".model.pt.{writer.pid}@{socket.gethostname()}.")
    # A temporary of a live writer (this process) and one from another host are left alone.
    live = tmp_path / f".model.pt.{os.getpid()}@{socket.gethostname()}.abc.tmp"
    remote = tmp_path / f".model.pt.{writer.pid}@elsewhere.example.abc.tmp"
    live.write_bytes(b"x")
    remote.write_bytes(b"x")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.pt", live.name, remote.name])


def test_rows_written_without_pandas_are_the_csv_pandas_writes(tmp_path):
    """The run and pretraining jobs write rows with the csv module; the file is pandas' own."""
    import pandas as pd

    columns = ["step", "block", "acc", "finetuned", "acc_finetuned", "note"]
    rows = [
        {"step": 1, "block": "layer1.0", "acc": 81.2, "finetuned": False, "acc_finetuned": float("nan"), "note": None},
        {"step": 2, "block": "layer1.1", "acc": 5.599999999999994, "finetuned": True, "acc_finetuned": 83.4,
         "note": "a, quoted"},
    ]
    write_csv(tmp_path / "ours.csv", rows, columns)
    write_csv(tmp_path / "pandas.csv", pd.DataFrame(rows, columns=columns))
    assert (tmp_path / "ours.csv").read_text() == (tmp_path / "pandas.csv").read_text()
    with pytest.raises(ValueError, match="columns"):
        write_csv(tmp_path / "x.csv", rows)
