"""Crashes lose nothing: the whole workflow killed (SIGKILL to Snakemake and every job) in the
middle of pretraining, and again in the middle of a pruning run, then `snakemake --unlock`
and a rerun with `--rerun-incomplete`, ends with the same outputs (times aside) as an
uninterrupted run; pretraining resumes from its last epoch and the run from its last step.

The uninterrupted run also checks the GPU slots of icepick.devices at the workflow level:
simulated on the CPU, two GPU jobs at a time (`--resources gpu=2`) each hold their own slot.

A tiny configuration (one model, one seed, two runs; the figures, whose plotting takes most of
the time and which are drawn from the compared tables alone, are left out) keeps this to a few
minutes on two CPU cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import copy_workflow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed beside this python"),
]

TARGETS = [
    "results/summary/runs.csv",
    "results/summary/steps.csv",
    "results/summary/pretrain.csv",
    "results/summary/weight_shift.csv",
    "paper_figures/table1.tex",
    "paper_figures/table_time_savings.tex",
    "paper_figures/claims.md",
]
PRETRAIN_CKPT = "results/resnet20/pretrained.pt.ckpt"
RUN_STATE = "results/resnet20/runs/*/seed0/summary.json.state.pt"
# Columns and keys that hold times (or the machine and moment of a run), not results.
TIME_FIELD = re.compile(r"^t_|seconds|^time$|saved_wall|hostname|git_commit|gpu_slot")


def _workflow(dest: Path) -> Path:
    return copy_workflow(dest)


def _env(slot_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEPICK_", "SLURM_"))}
    env.update({"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "ICEPICK_GPU_SLOTS": "2",
                "ICEPICK_GPU_SLOTS_ON_CPU": "1", "ICEPICK_SLOT_DIR": str(slot_dir), "CUDA_VISIBLE_DEVICES": ""})
    return env


def _args(*extra: str) -> list[str]:
    return [str(SNAKEMAKE), *TARGETS, "--configfile", "config/test.yaml", "--cores", "2", "--resources", "gpu=2",
            *extra]


def _snakemake(cwd: Path, env: dict[str, str], *extra: str) -> None:
    proc = subprocess.run(_args(*extra), cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _kill_when(cwd: Path, env: dict[str, str], pattern: str, *extra: str, timeout: float = 600) -> None:
    """Start the workflow; once a file matching ``pattern`` exists, SIGKILL it and all its jobs."""
    import psutil  # a dependency of snakemake

    log = open(cwd / f"snakemake-{time.time():.0f}.log", "w")
    proc = subprocess.Popen(_args(*extra), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not list(cwd.glob(pattern)):
            assert proc.poll() is None, f"the workflow ended before {pattern} appeared:\n{Path(log.name).read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{pattern} did not appear within {timeout} s"
            time.sleep(0.05)
    finally:
        family = [psutil.Process(proc.pid)]
        try:
            family += family[0].children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        for member in family:  # freeze first, so nothing forks or cleans up in between
            try:
                member.suspend()
            except psutil.NoSuchProcess:
                pass
        os.killpg(proc.pid, signal.SIGKILL)
        for member in family:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=60)
        psutil.wait_procs(family, timeout=30)
        log.close()


# ---------------------------------------------------------------- comparing outputs


def _outputs(cwd: Path) -> list[str]:
    files = []
    for folder in ("results", "paper_figures"):
        for path in (cwd / folder).rglob("*"):
            rel = path.relative_to(cwd)
            if path.is_file() and rel.parts[:2] != ("results", "benchmarks"):
                files.append(str(rel))
    return sorted(files)


def _drop_times(obj):
    if isinstance(obj, dict):
        return {k: _drop_times(v) for k, v in obj.items() if not TIME_FIELD.search(str(k))}
    if isinstance(obj, list):
        return [_drop_times(v) for v in obj]
    return obj


def _same_tensors(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        a, b = _drop_times(a), _drop_times(b)
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _same_tensors(a[key], b[key], f"{where}[{key}]")
    else:
        assert a == b, where


def _compare(ref: Path, got: Path, name: str) -> None:
    a, b = ref / name, got / name
    if name.endswith(".csv"):
        fa, fb = pd.read_csv(a), pd.read_csv(b)
        if name.endswith("claims.csv"):  # claims about times hold on times
            fa, fb = (f[~f["id"].str.contains("time")].reset_index(drop=True) for f in (fa, fb))
        keep = [c for c in fa.columns if not TIME_FIELD.search(c)]
        pd.testing.assert_frame_equal(fa[keep], fb[keep], obj=name)
    elif name.endswith(".json"):
        assert _drop_times(json.loads(a.read_text())) == _drop_times(json.loads(b.read_text())), name
    elif name.endswith(".pt"):
        _same_tensors(torch.load(a, weights_only=True), torch.load(b, weights_only=True), name)
    elif name.endswith("claims.md"):
        def untimed(p: Path) -> list[str]:  # the claims on times, and the tally that counts them
            return [line for line in p.read_text().splitlines()
                    if "time" not in line.lower() and not line.startswith("Holds:")]
        assert untimed(a) == untimed(b), name
    elif name.endswith("table_time_savings.tex"):
        pass  # nothing but times (its CSV twin is compared without them)
    else:
        assert a.read_bytes() == b.read_bytes(), name


def test_a_killed_workflow_resumes_and_ends_with_the_same_outputs(tmp_path):
    ref = _workflow(tmp_path / "uninterrupted")
    _snakemake(ref, _env(tmp_path / "slots-ref"))

    # GPU slots (simulated): every job that trains or evaluates held one of the two, and at
    # least once two jobs ran at the same time (a job found slot 0 taken and held slot 1).
    records = [ref / "results/resnet20/pretrain.json", ref / "results/resnet20/trace/r0.4/seed0.json",
               *ref.glob("results/resnet20/runs/*/seed0/summary.json")]
    for record in records:
        slot = json.loads(record.read_text())["provenance"]["gpu_slot"]
        assert slot["count"] == 2 and slot["index"] in (0, 1) and slot["simulated"], record
    assert sorted(p.name for p in (tmp_path / "slots-ref").iterdir()) == ["sim-0.lock", "sim-1.lock"]

    got = _workflow(tmp_path / "killed")
    env = _env(tmp_path / "slots-killed")
    _kill_when(got, env, PRETRAIN_CKPT)  # during pretraining, after its first epoch
    assert not (got / "results/resnet20/pretrained.pt").exists()
    _snakemake(got, env, "--unlock")
    _kill_when(got, env, RUN_STATE, "--rerun-incomplete")  # during a pruning run, after a step
    _snakemake(got, env, "--unlock")
    _snakemake(got, env, "--rerun-incomplete")

    # Each resumed where it was killed, not from scratch.
    assert re.search(r"resuming resnet20 from \S+ after epoch [123] of 4", (got / "logs/resnet20/pretrain.log").read_text())
    resumed = [p for p in got.glob("logs/resnet20/runs/*/seed0.log") if "resuming" in p.read_text()]
    assert resumed and re.search(r"resuming \S+ from step [123] of 4", resumed[0].read_text())

    # The same files, no leftovers (temporaries, checkpoints, run states), the same contents.
    assert _outputs(got) == _outputs(ref)
    for name in _outputs(ref):
        _compare(ref, got, name)
