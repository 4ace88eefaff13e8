"""GPU slots (icepick.devices): one GPU per job (or k per GPU) when several jobs share a machine.

Simulated on the CPU (ICEPICK_GPU_SLOTS=N with ICEPICK_GPU_SLOTS_ON_CPU=1, and
ICEPICK_JOBS_PER_GPU=k): jobs are real processes claiming slots through lock files in a
private folder, exactly as on a GPU machine.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from icepick import devices
from icepick.commands.common import add_device_args
from icepick.config import ConfigError

REPO = Path(__file__).resolve().parents[1]

# A job: claims a slot, says which on stdout (index, CUDA_VISIBLE_DEVICES, GPU, slot number on
# it, jobs per GPU), then holds it until stdin closes (or it is killed).
JOB = """
import logging, os, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from icepick.devices import claim_for_job
slot = claim_for_job(sys.argv[1])
print(slot.index, os.environ["CUDA_VISIBLE_DEVICES"], slot.gpu, slot.slot, slot.jobs_per_gpu, flush=True)
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
    index, visible = job.stdout.readline().split()[:2]
    return int(index), visible


def _gpu_slot_of(job: subprocess.Popen) -> tuple[int, int, str]:
    """(GPU, slot number on it, CUDA_VISIBLE_DEVICES) of a job's claim; checks the two agree."""
    index, visible, gpu, number, per_gpu = job.stdout.readline().split()
    assert visible == gpu  # simulated GPU i is CUDA_VISIBLE_DEVICES=i
    assert int(index) == int(number) * 2 + int(gpu) and per_gpu == "2"  # two GPUs, two jobs each
    return int(gpu), int(number), visible


def _claim_line(job: subprocess.Popen) -> str:
    """The job's claim line if it has printed one yet (read without waiting), else ''."""
    os.set_blocking(job.stdout.fileno(), False)
    try:
        return job.stdout.readline()
    finally:
        os.set_blocking(job.stdout.fileno(), True)


def _no_claim_yet(job: subprocess.Popen) -> bool:
    return job.poll() is None and not _claim_line(job)


class GpuHolders(threading.Thread):
    """Every few milliseconds, how many processes hold a flock on each simulated GPU's lock
    files, read from the kernel's own list (/proc/locks), so without touching the locks.

    A flock is exclusive, so a GPU's holders are its distinct held lock files (device and inode):
    /proc/locks is read in pages while other processes take and drop locks, and a line can be
    listed twice in one read."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder, self.stop, self.most, self.samples = folder, threading.Event(), Counter(), 0

    def run(self) -> None:
        while not self.stop.is_set():
            gpu_of = {}
            for path in self.folder.glob("sim-*.lock"):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                key = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
                gpu_of[key] = re.fullmatch(r"sim-(\w+?)(?:-slot\d+)?\.lock", path.name).group(1)
            held: dict[str, set] = {}
            for line in Path("/proc/locks").read_text().splitlines():
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK":  # not '->' (a blocked request)
                    major, minor, inode = fields[5].split(":")
                    key = (int(major, 16), int(minor, 16), int(inode))
                    if key in gpu_of:
                        held.setdefault(gpu_of[key], set()).add(key)
            for gpu, files in held.items():
                self.most[gpu] = max(self.most[gpu], len(files))
            self.samples += 1
            time.sleep(0.005)

    def __enter__(self) -> GpuHolders:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join(timeout=10)


needs_proc_locks = pytest.mark.skipif(not Path("/proc/locks").exists(), reason="no /proc/locks (not Linux)")


def _finish(*jobs: subprocess.Popen) -> None:
    for job in jobs:
        if job.poll() is None:
            job.stdin.close()
            try:
                job.wait(timeout=30)
            except subprocess.TimeoutExpired:  # still waiting for a slot (a failed test): end it
                job.kill()
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


@needs_proc_locks
def test_two_jobs_per_gpu_spread_first_never_a_third_and_a_killed_holder_frees_its_slot(tmp_path):
    """2 simulated GPUs x 2 jobs per GPU: 4 slots. Jobs spread over the GPUs before sharing one,
    never more than 2 hold a GPU, a 5th waits, and a SIGKILLed holder's slot goes to it."""
    jobs, live = [], {}  # live: job -> its GPU, from its claim until it has ended (and been reaped)

    def start() -> subprocess.Popen:
        jobs.append(_start(tmp_path, 2, ICEPICK_JOBS_PER_GPU="2", ICEPICK_GPU_SLOT_TIMEOUT="60"))
        return jobs[-1]

    def claimed(job: subprocess.Popen) -> tuple[int, int, str]:
        gpu, number, visible = _gpu_slot_of(job)
        live[job] = gpu
        assert max(Counter(live.values()).values()) <= 2, f"a GPU has more than 2 holders: {live}"
        return gpu, number, visible

    with GpuHolders(tmp_path) as monitor:
        try:
            # One at a time: slot 0 of each GPU first, then the second job on each.
            order = [claimed(start())[:2] for _ in range(4)]
            assert order == [(0, 0), (1, 0), (0, 1), (1, 1)]
            assert sorted(p.name for p in tmp_path.iterdir()) == [
                "sim-0-slot1.lock", "sim-0.lock", "sim-1-slot1.lock", "sim-1.lock"]
            waiter = start()  # a 5th: every slot is taken
            time.sleep(1.5)
            assert _no_claim_yet(waiter), "a 5th job got a slot while all 4 were held"
            victim = next(job for job, gpu in live.items() if gpu == 1)
            victim.send_signal(signal.SIGKILL)  # no clean-up code runs: the OS drops its lock
            victim.wait(timeout=30)
            del live[victim]
            assert claimed(waiter)[0] == 1  # the killed job's GPU, now with 2 holders again
            # Release the GPU-0 holders one by one while two more jobs want a slot.
            late = [start(), start()]
            time.sleep(1.0)
            assert all(_no_claim_yet(job) for job in late)
            for job in [job for job, gpu in live.items() if gpu == 0]:
                _finish(job)
                del live[job]
            assert sorted(claimed(job)[0] for job in late) == [0, 0]
            time.sleep(0.1)
        finally:
            _finish(*jobs)
    assert monitor.samples > 20
    assert dict(monitor.most) == {"0": 2, "1": 2}, f"holders per GPU at most: {dict(monitor.most)}"
    log = waiter.stderr.read()
    assert "all 4 GPU slots (2 GPUs x 2 jobs per GPU) are taken" in log
    assert re.search(r"claimed GPU slot (1|3) of 4 \(CUDA_VISIBLE_DEVICES=1, simulated, job slot [01] of 2 on this GPU", log)


@needs_proc_locks
def test_a_burst_of_jobs_never_puts_more_than_k_on_a_gpu(tmp_path):
    """Seven jobs started at once on 2 simulated GPUs x 3 jobs per GPU: 6 hold a slot (3 on each
    GPU) and the 7th waits; at no moment does a GPU have more than 3 holders."""
    jobs = [_start(tmp_path, 2, ICEPICK_JOBS_PER_GPU="3", ICEPICK_GPU_SLOT_TIMEOUT="60") for _ in range(7)]
    with GpuHolders(tmp_path) as monitor:
        try:
            got, deadline = {}, time.monotonic() + 60  # job -> the GPU it claimed
            while len(got) < 6 and time.monotonic() < deadline:
                got.update({job: line.split()[2] for job in jobs if job not in got and (line := _claim_line(job))})
                time.sleep(0.05)
            time.sleep(1.0)  # the 7th has had time to try every slot
            got.update({job: line.split()[2] for job in jobs if job not in got and (line := _claim_line(job))})
            assert len(got) == 6
            assert Counter(got.values()) == {"0": 3, "1": 3}
            leaving = next(iter(got))
            _finish(leaving)
            waiter = next(job for job in jobs if job not in got)
            assert waiter.stdout.readline().split()[2] == got[leaving]  # the freed slot's GPU
            time.sleep(0.1)
        finally:
            _finish(*jobs)
    assert monitor.samples > 20
    assert dict(monitor.most) == {"0": 3, "1": 3}, f"holders per GPU at most: {dict(monitor.most)}"


def test_slots_are_named_by_gpu_and_slot_and_recorded(clean_slot_state, tmp_path):
    """In-process: with slot 0 of both GPUs held, a claim gets GPU 0's slot 1 (slot 2 of 4)."""
    held = []
    for name in ("sim-0.lock", "sim-1.lock"):
        fd = os.open(tmp_path / name, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: conflicts like another process
        held.append(fd)
    try:
        slot = devices.claim_slot(["0", "1"], directory=tmp_path, simulated=True, jobs_per_gpu=2, timeout=5)
        assert slot.record() == {
            "index": 2, "count": 4, "gpu": 0, "slot": 1, "jobs_per_gpu": 2, "cuda_visible_devices": "0",
            "lock": str(tmp_path / "sim-0-slot1.lock"), "simulated": True,
        }
        devices.release_slot()
        others = [_start(tmp_path, 2, ICEPICK_JOBS_PER_GPU="2") for _ in range(2)]
        try:
            assert sorted(_gpu_slot_of(job)[:2] for job in others) == [(0, 1), (1, 1)]
            with pytest.raises(TimeoutError, match=r"all 4 \(2 GPUs x 2 jobs per GPU\) are taken \(sim-0.lock: unknown; "
                                                   r"sim-1.lock: unknown; sim-0-slot1.lock: pid \d+ on .*; "
                                                   r"sim-1-slot1.lock: pid \d+ on .*\); lock files in "):
                devices.claim_slot(["0", "1"], directory=tmp_path, simulated=True, jobs_per_gpu=2, timeout=0.3)
        finally:
            _finish(*others)
    finally:
        for fd in held:
            os.close(fd)


def test_jobs_per_gpu_comes_from_the_option_else_the_environment_else_one(clean_slot_state):
    mp = clean_slot_state
    assert devices.jobs_per_gpu_setting() == 1
    mp.setenv("ICEPICK_JOBS_PER_GPU", "3")
    assert devices.jobs_per_gpu_setting() == 3
    assert devices.jobs_per_gpu_setting(2) == 2  # --jobs-per-gpu wins over the environment
    mp.setenv("ICEPICK_JOBS_PER_GPU", "two")
    with pytest.raises(ConfigError, match="ICEPICK_JOBS_PER_GPU: 'two' is not an integer"):
        devices.jobs_per_gpu_setting()
    mp.setenv("ICEPICK_JOBS_PER_GPU", "0")
    with pytest.raises(ConfigError, match="jobs_per_gpu: 0 is out of range; it must be an integer >= 1"):
        devices.jobs_per_gpu_setting()
    assert devices.claim_for_job("cpu") is None  # a CPU job without simulated slots never reads it
    parser = argparse.ArgumentParser()
    add_device_args(parser)
    assert parser.parse_args([]).jobs_per_gpu is None
    assert parser.parse_args(["--jobs-per-gpu", "2"]).jobs_per_gpu == 2
    for bad in ("0", "-1", "1.5"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--jobs-per-gpu", bad])


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
    env = _env(tmp_path / "slots", 2, ICEPICK_JOBS_PER_GPU="3")  # --jobs-per-gpu wins over this
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "icepick", "pretrain", "--model", "resnet20", "--data", str(synth_root),
         "--out", str(out / "m.pt"), "--epochs-csv", str(out / "e.csv"), "--summary", str(out / "s.json"),
         "--epochs", "1", "--n-train", "64", "--device", "cpu", "--threads", "1", "--jobs-per-gpu", "2"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "claimed GPU slot 0 of 4 (CUDA_VISIBLE_DEVICES=0, simulated, job slot 0 of 2 on this GPU" in proc.stderr
    slot = json.loads((out / "s.json").read_text())["provenance"]["gpu_slot"]
    assert (slot["index"], slot["count"], slot["cuda_visible_devices"], slot["simulated"]) == (0, 4, "0", True)
    assert (slot["gpu"], slot["slot"], slot["jobs_per_gpu"]) == (0, 0, 2)


SNAKEMAKE = Path(sys.executable).parent / "snakemake"


@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed beside this python")
def test_the_workflow_passes_jobs_per_gpu_to_every_gpu_job(tmp_path):
    """config jobs_per_gpu reaches the jobs' command lines (dry runs in a copy of the workflow);
    the default 1 leaves them as they were; 0 is refused naming the key."""
    import shutil

    for name in ("Snakefile", "workflow", "config", "profiles", "environment.yml"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, tmp_path / name)
        elif src.exists():
            shutil.copy2(src, tmp_path / name)
    target = "results/resnet110/runs/icepick-icepick-r0.6-eta0.3-theta1.5/seed2/summary.json"
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def dry(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(SNAKEMAKE), "-n", "-p", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)

    plain = dry(target)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "--jobs-per-gpu" not in plain.stdout + plain.stderr and "python -m icepick run " in plain.stdout + plain.stderr
    shared = dry("--config", "jobs_per_gpu=2", "gpu_slots=4", "--", target)
    assert shared.returncode == 0, shared.stderr[-2000:]
    commands = re.findall(r"^(?:Shell command: )?(python -m icepick .*)$", shared.stdout + shared.stderr, re.M)
    gpu_jobs = [c for c in commands if c.split()[3] in ("pretrain", "trace", "run")]
    assert len(gpu_jobs) == 3  # the model's pretraining, the run's freeze trace, the run
    assert all("--gpu-slots 4 --jobs-per-gpu 2" in c for c in gpu_jobs), gpu_jobs
    bad = dry("--config", "jobs_per_gpu=0", "--", target)
    assert bad.returncode != 0 and "jobs_per_gpu" in bad.stdout + bad.stderr
