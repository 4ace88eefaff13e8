"""A real SLURM cluster: one model's branch of the workflow through snakemake-executor-plugin-
slurm and profiles/slurm, unchanged, to finished outputs.

tests/slurm/cluster.sh installs Debian's slurm-wlm, slurmdbd, munge and mariadb-server when
they are missing, and starts a private one-node cluster on 127.0.0.1 (with job accounting, which
the plugin reads through sacct, and two stand-in GPUs, so that `--gpus=1` is granted); the test
stops every daemon it started, whatever happens. It needs root, and is skipped, saying so,
where it has none (or no apt-get to install with).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import copy_workflow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = pytest.mark.slow

# config/test.yaml with shorter pretraining and runs: each cluster job waits for the scheduler.
OVERLAY = """\
pretrain: {epochs: 2, batch_size: 64}
finetune: {batch_size: 64, max_steps: 2}
"""
TARGETS = ["results/summary/fig3/runs.csv", "results/resnet20/weight_shift.csv"]
# The cluster jobs of those targets, and what profiles/slurm asks for each (time limit, memory).
EXPECTED_JOBS = {
    "pretrain": ("1-00:00:00", "16000M"),
    "trace": ("01:00:00", "8000M"),
    "weight_shift": ("04:00:00", "8000M"),
    "run": ("04:00:00", "8000M"),
}


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return (f"needs root to install slurm-wlm, munge and mariadb-server and to start their daemons "
                f"(running as uid {os.geteuid()})")
    if not SNAKEMAKE.exists():
        return "snakemake is not installed beside this python"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    have = all(shutil.which(c, path=SYSTEM_PATH) for c in ("slurmctld", "slurmd", "slurmdbd", "sacct", "munged", "mariadbd"))
    if not have and not shutil.which("apt-get", path=SYSTEM_PATH):
        return "SLURM is not installed and there is no apt-get to install it with"
    return None


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "ICEPICK_"))}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", ""), SYSTEM_PATH])
    env["PYTHON"] = sys.executable
    env.update(extra)
    return env


def _cluster(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER), *args], env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster():
    """A running one-node cluster: yields its environment (SLURM_CONF, PATH); stopped afterwards."""
    reason = _skip_reason()
    if reason:
        print(f"\ntests/test_slurm.py skipped: {reason}", file=sys.stderr)
        pytest.skip(reason)
    proc = _cluster("install", timeout=900)
    assert proc.returncode == 0, f"installing SLURM failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    # Short path: the munge socket's path must fit a Unix socket address (108 bytes).
    folder = Path(tempfile.mkdtemp(prefix="icepick-slurm-", dir="/tmp"))
    try:
        proc = _cluster("start", str(folder), timeout=300)
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((folder / "log").glob("*.log")))
        assert proc.returncode == 0, f"the cluster did not start:\n{proc.stdout}\n{proc.stderr}{logs}"
        values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        yield _env(SLURM_CONF=values["SLURM_CONF"],
                   PATH=os.pathsep.join([values["PATH_PREFIX"], str(BIN), os.environ.get("PATH", ""), SYSTEM_PATH]))
    finally:
        stop = _cluster("stop", str(folder), timeout=300)
        left = [p for p in (folder / "run").glob("*.pid")]
        shutil.rmtree(folder, ignore_errors=True)
        assert stop.returncode == 0 and not left, f"stopping the cluster failed:\n{stop.stderr}\n{left}"


def test_one_model_runs_through_the_slurm_executor(cluster, tmp_path):
    cwd = copy_workflow(tmp_path, slurm=OVERLAY)
    proc = subprocess.run(
        [str(SNAKEMAKE), *TARGETS, "--workflow-profile", "profiles/slurm", "--configfile", "config/test.yaml", "slurm.yaml",
         "--slurm-init-seconds-before-status-checks", "2"],
        cwd=cwd, env=cluster, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    for target in [*TARGETS, "results/resnet20/pretrained.pt", "results/resnet20/trace/r0.4/seed0.json",
                   "results/resnet20/runs/baseline-fixed-r0.4-eta0-theta0/seed0/summary.json",
                   "results/resnet20/runs/icepick-icepick-r0.4-eta0.3-theta1.5/seed0/summary.json"]:
        assert (cwd / target).stat().st_size > 0, target

    # Every training or evaluating job was its own SLURM job with one GPU and the profile's
    # runtime and memory for its rule; data and aggregation ran locally.
    acct = subprocess.run(
        ["sacct", "-X", "-a", "-n", "--parsable2", "--format=JobID,State,AllocTRES,Timelimit,ReqMem,Partition,Comment"],
        env=cluster, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()
    jobs = [line.split("|") for line in acct if line]
    by_rule: dict[str, list[list[str]]] = {}
    for job in jobs:
        rule = next((r for r in sorted(EXPECTED_JOBS, key=len, reverse=True) if job[6].startswith(f"rule_{r}")), None)
        assert rule, f"unexpected SLURM job {job}"
        by_rule.setdefault(rule, []).append(job)
    assert {r: len(j) for r, j in by_rule.items()} == {"pretrain": 1, "trace": 1, "weight_shift": 1, "run": 2}
    for rule, rule_jobs in by_rule.items():
        for _, state, tres, limit, mem, partition, _ in rule_jobs:
            assert state == "COMPLETED", (rule, state)
            assert "gres/gpu=1" in tres, (rule, tres)
            assert (limit, mem) == EXPECTED_JOBS[rule], rule
            assert partition == "gpu"


def test_a_run_across_nodes_meets_at_torchruns_rendezvous_under_srun(cluster, tmp_path):
    """The launch line of a run on several nodes (config nodes_per_run, icepick.workflow_config.
    run_launcher) in a SLURM job, on the one node there is: srun starts two torchrun agents (two
    tasks on one node instead of one on each of two), which find the job's first node through
    squeue and scontrol, meet at the c10d rendezvous there, and run one `icepick run` of two
    processes (gloo on the CPU); rank 0 writes the records."""
    import json

    import torch

    from icepick.data import synth_cifar10
    from icepick.model_files import save_model
    from icepick.models import build_model
    from icepick.workflow_config import run_launcher

    synth_cifar10(tmp_path / "data", n_train=64, n_test=32, seed=0)
    torch.manual_seed(0)
    save_model(build_model("resnet14"), tmp_path / "pretrained.pt")
    out = tmp_path / "out"
    command = (f"{run_launcher(1, 1, tasks_per_node=2)} -m icepick run --pretrained {tmp_path}/pretrained.pt "
               f"--data {tmp_path}/data --device cpu --threads 1 --theta -100 --max-steps 2 --batch-size 16 "
               f"--max-batches 2 --early-halt 0 --no-progress --steps-out {out}/steps.csv "
               f"--summary-out {out}/summary.json --model-out {out}/pruned.pt")
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\nset -e\n{command}\n")
    proc = subprocess.run(["sbatch", "--wait", "--parsable", "--nodes=1", "--ntasks=2", "--cpus-per-task=1",
                           "--time=20", f"--output={tmp_path}/job.log", "--chdir", str(tmp_path), str(script)],
                          env=cluster, capture_output=True, text=True, timeout=900)
    log = (tmp_path / "job.log").read_text() if (tmp_path / "job.log").exists() else ""
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{log[-4000:]}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distributed"] == {"world_size": 2, "batchnorm": "global", "backend": "gloo"}
    assert summary["n_steps"] == 2 and summary["n_finetunes"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["pruned.pt", "steps.csv", "summary.json"]
