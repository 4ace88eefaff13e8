"""GPU slots (icepick.devices): one GPU per job when several jobs share a machine.

Simulated on the CPU (ICEPICK_GPU_SLOTS=N with ICEPICK_GPU_SLOTS_ON_CPU=1): jobs are real
processes claiming slots through lock files in a private folder, exactly as on a GPU machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from icepick import devices
from icepick.config import ConfigError

# A job: claims a slot, says which on stdout, then holds it until stdin closes (or it is killed).
JOB = """
import logging, os, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from icepick.devices import claim_for_job
slot = claim_for_job(sys.argv[1])
print(slot.index, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
sys.stdin.read()
"""


def _env(slot_dir: Path, slots: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEPICK_", "SLURM_"))}
    env.update({
        "ICEPICK_GPU_SLOTS": str(slots), "ICEPICK_GPU_SLOTS_ON_CPU": "1", "ICEPICK_SLOT_DIR": str(slot_dir),
        "CUDA_VISIBLE_DEVICES": "",  # no real GPU, whatever the machine has
    })
    env.update(extra)
    return env


def _start(slot_dir: Path, slots: int, device: str = "cpu", **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", JOB, device], env=_env(slot_dir, slots, **extra), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _slot_of(job: subprocess.Popen) -> tuple[int, str]:
    index, visible = job.stdout.readline().split()
    return int(index), visible


def _finish(*jobs: subprocess.Popen) -> None:
    for job in jobs:
        if job.poll() is None:
            job.stdin.close()
            job.wait(timeout=30)


@pytest.fixture
def clean_slot_state(monkeypatch):
    """In-process claims: no slot env from outside, and the slot released afterwards."""
    for name in ("ICEPICK_GPU_SLOTS", "ICEPICK_GPU_SLOTS_ON_CPU", "ICEPICK_SLOT_DIR", "ICEPICK_GPU_SLOT_TIMEOUT",
                 "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    devices.release_slot()
    yield monkeypatch
    devices.release_slot()


def test_concurrent_jobs_get_distinct_slots(tmp_path):
    jobs = [_start(tmp_path, 3) for _ in range(3)]
    try:
        slots = [_slot_of(job) for job in jobs]
        assert sorted(index for index, _ in slots) == [0, 1, 2]
        assert all(visible == str(index) for index, visible in slots)  # CUDA_VISIBLE_DEVICES = its slot's GPU
    finally:
        _finish(*jobs)


def test_a_killed_jobs_slot_is_free_again(tmp_path):
    first = _start(tmp_path, 1)
    assert _slot_of(first)[0] == 0
    first.send_signal(signal.SIGKILL)  # no clean-up code runs: the OS drops the lock
    first.wait(timeout=30)
    second = _start(tmp_path, 1, ICEPICK_GPU_SLOT_TIMEOUT="20")
    try:
        assert _slot_of(second)[0] == 0
    finally:
        _finish(second)


def test_more_jobs_than_slots_wait_instead_of_sharing(tmp_path):
    holders = [_start(tmp_path, 2) for _ in range(2)]
    waiter = None
    try:
        held = {_slot_of(job)[0]: job for job in holders}
        assert set(held) == {0, 1}
        waiter = _start(tmp_path, 2)
        time.sleep(1.5)
        assert waiter.poll() is None
        os.set_blocking(waiter.stdout.fileno(), False)
        assert not waiter.stdout.readline(), "a third job got a slot while both were held"
        os.set_blocking(waiter.stdout.fileno(), True)
        _finish(held[1])  # slot 1 frees: the waiting job takes it
        assert _slot_of(waiter)[0] == 1
    finally:
        _finish(*holders, *([waiter] if waiter else []))
    log = waiter.stderr.read()
    assert "all 2 GPU slots are taken" in log and "waiting for one to free" in log
    assert "claimed GPU slot 1 of 2" in log


def test_waiting_gives_up_after_the_timeout_naming_the_holders(tmp_path, clean_slot_state):
    holder = _start(tmp_path, 1)
    try:
        _slot_of(holder)
        with pytest.raises(TimeoutError, match=r"no free GPU slot after waiting 0.5 s: all 1 are taken "
                                               rf"\(sim-0.lock: pid {holder.pid} on .*\); lock files in {tmp_path}"):
            devices.claim_slot(["0"], directory=tmp_path, timeout=0.5, simulated=True)
    finally:
        _finish(holder)


def test_slots_are_the_visible_gpus_or_the_first_n(clean_slot_state):
    mp = clean_slot_state
    mp.setenv("CUDA_VISIBLE_DEVICES", "2,5,GPU-8a1b")
    assert devices.slot_devices() == ["2", "5", "GPU-8a1b"]
    assert devices.slot_devices(2) == ["2", "5"]
    mp.setenv("ICEPICK_GPU_SLOTS", "1")
    assert devices.slot_devices() == ["2"]
    assert devices.slot_devices(2) == ["2", "5"]  # --gpu-slots wins over the environment
    with pytest.raises(ConfigError, match=r"gpu_slots: 4 slots asked for, but only 3 GPU\(s\) are visible"):
        devices.slot_devices(4)
    mp.setenv("ICEPICK_GPU_SLOTS", "two")
    with pytest.raises(ConfigError, match="ICEPICK_GPU_SLOTS: 'two' is not an integer"):
        devices.slot_devices()
    mp.delenv("ICEPICK_GPU_SLOTS")
    mp.setenv("CUDA_VISIBLE_DEVICES", "1,-1,3")  # CUDA stops at an invalid entry
    assert devices.slot_devices() == ["1"]
    mp.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.slot_devices() == []


def test_a_gpu_job_points_cuda_visible_devices_at_its_slot(clean_slot_state, tmp_path):
    mp = clean_slot_state
    mp.setenv("CUDA_VISIBLE_DEVICES", "3,7")
    mp.setenv("ICEPICK_SLOT_DIR", str(tmp_path))
    mp.setattr(devices, "_cuda_initialized", lambda: False)
    slot = devices.claim_for_job("auto")
    assert slot is not None and (slot.index, slot.device, slot.simulated) == (0, "3", False)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert devices.current_slot() == slot
    assert devices.claim_for_job("cuda") == slot  # one slot per process, claimed once
    assert (tmp_path / "gpu-3.lock").read_text().startswith(f"pid {os.getpid()} on ")
    # Another GPU job on the machine gets the other GPU (a real process; no simulation).
    other = _start(tmp_path, 0, "cuda", CUDA_VISIBLE_DEVICES="3,7", ICEPICK_GPU_SLOTS="", ICEPICK_GPU_SLOTS_ON_CPU="")
    try:
        assert _slot_of(other) == (1, "7")
    finally:
        _finish(other)


def test_cpu_and_explicit_gpu_jobs_claim_nothing(clean_slot_state, tmp_path):
    mp = clean_slot_state
    mp.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    mp.setenv("ICEPICK_SLOT_DIR", str(tmp_path))
    assert devices.claim_for_job("cpu") is None
    assert devices.claim_for_job("cuda:1") is None  # one GPU chosen by hand
    assert not list(tmp_path.iterdir())


def test_slurm_jobs_lock_within_their_own_allocation(clean_slot_state, tmp_path):
    mp = clean_slot_state
    mp.setenv("ICEPICK_SLOT_DIR", str(tmp_path))
    assert devices.lock_dir() == tmp_path
    mp.setenv("SLURM_JOB_ID", "4242")
    assert devices.lock_dir() == tmp_path / "slurm-4242"


def test_a_command_records_its_slot_in_the_provenance(tmp_path, synth_root):
    env = _env(tmp_path / "slots", 2)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "icepick", "pretrain", "--model", "resnet20", "--data", str(synth_root),
         "--out", str(out / "m.pt"), "--epochs-csv", str(out / "e.csv"), "--summary", str(out / "s.json"),
         "--epochs", "1", "--n-train", "64", "--device", "cpu", "--threads", "1"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "claimed GPU slot 0 of 2 (CUDA_VISIBLE_DEVICES=0, simulated" in proc.stderr
    slot = json.loads((out / "s.json").read_text())["provenance"]["gpu_slot"]
    assert (slot["index"], slot["count"], slot["cuda_visible_devices"], slot["simulated"]) == (0, 2, "0", True)
