"""One run on several processes (icepick.distributed): two CPU processes with gloo against one
process with the same global batch.

What is exact and what is not: both runs draw the same global batches and prune with rank 0's
scores, so the batches, the images each step trains on and the pruned filters are the same. The
arithmetic is not bit for bit the same: each rank's convolutions run on half a batch, the
BatchNorm statistics of the global batch are summed from two halves (:class:`GlobalBatchNorm2d`)
and DDP sums two halves of every gradient, so weights differ from the one-process run by float
rounding (about 1e-6 relative after a few updates). Decisions compare correct-image counts with
theta, so they are the same unless a count sits at the threshold; an image whose two largest
logits are within that rounding may be classified either way, so correct counts are asserted
within one image (and the accuracies within one image's share), the decisions, widths, batches
and images trained exactly.

The processes are started the way a user starts them: ``torchrun --standalone`` on this file
(the scenarios below, in one launch) and on ``-m icepick run``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from icepick.config import ConfigError
from icepick.distributed import SINGLE, Dist, from_env, process_threads, rank_device, shard_bounds

REPO = Path(__file__).resolve().parents[1]
WORLD = 2
#: Columns of steps.csv that must be equal (the decisions, what was pruned and trained).
EXACT = ["step", "block", "params", "alpha", "macs", "finetuned", "lr", "ft_batches", "ft_samples", "halted_early",
         "trainable_fraction", "train_macs"]
#: Columns that hold correct counts or accuracies: within one image.
COUNTS = ["decision_correct"]
ACCURACIES = ["acc_pruned", "decision_acc", "acc_finetuned", "acc"]
# One intra-op thread here and in each process: the pretrained model, and so the case the
# decisions test needs (a skip, fine-tunings, an early halt), does not depend on the thread count.
pytestmark = pytest.mark.usefixtures("one_thread")
RUN = dict(method="icepick", theta=2.0, eta=0.3, ratio=0.4, seed=1, max_steps=4, batch_size=30, max_batches=6,
           early_halt=2)


# ---------------------------------------------------------------- pure functions


def test_a_process_without_torchrun_is_one_process_alone():
    assert from_env({}) == SINGLE
    assert not SINGLE.active
    assert from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}) == Dist(3, 4, 1, 2)


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "2"},
                                 {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "2"}])
def test_a_malformed_torchrun_environment_is_named(env):
    with pytest.raises(ConfigError, match="torchrun"):
        from_env(env)


@pytest.mark.parametrize("n", [0, 1, 7, 30, 128])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_the_ranks_slices_are_contiguous_and_together_the_whole_batch(n, world):
    bounds = [shard_bounds(n, Dist(r, world, r, world)) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_each_process_takes_the_gpu_of_its_local_rank_and_its_share_of_the_threads():
    dist = Dist(3, 4, 1, 2)
    assert rank_device(dist, "cpu") == "cpu"
    assert rank_device(SINGLE, "cuda:1") == "cuda:1"
    with pytest.raises(ConfigError, match="one GPU each"):
        rank_device(dist, "cuda:0")
    if torch.cuda.device_count() >= 2:
        assert rank_device(dist, "cuda") == "cuda:1"
    elif not torch.cuda.is_available():
        assert rank_device(dist, "auto") == "cpu"
    assert process_threads(8, dist) == 4 and process_threads(1, dist) == 1 and process_threads(None, dist) is None


# ---------------------------------------------------------------- the workflow's launch line


def test_one_gpu_per_run_keeps_the_command_and_resources_of_one_process():
    from icepick.workflow_config import run_launcher, run_resources

    assert run_launcher(1, 1) == "python" and run_resources(1, 1) == {"gpu": 1}


def test_several_gpus_on_one_node_start_torchrun_and_ask_slurm_for_them_on_one_node():
    from icepick.workflow_config import run_launcher, run_resources

    assert run_launcher(4) == "torchrun --standalone --nnodes 1 --nproc-per-node 4"
    assert run_resources(4) == {"gpu": 4, "nodes": 1}


def test_several_nodes_start_one_torchrun_per_node_meeting_at_the_c10d_rendezvous():
    from icepick.workflow_config import RDZV_PORT, run_launcher, run_resources

    line = run_launcher(4, 3)
    assert line.startswith("srun --nodes 3 --ntasks 3 --ntasks-per-node 1 torchrun --nnodes 3 --nproc-per-node 4 ")
    assert "--rdzv-backend c10d" in line and "--rdzv-id $SLURM_JOB_ID" in line
    assert f"$(({RDZV_PORT} + SLURM_JOB_ID % 10000))" in line
    assert "{" not in line and "}" not in line  # nothing for Snakemake's formatting to take
    assert run_resources(4, 3) == {"nodes": 3, "gres": "gpu:4", "tasks": 3, "tasks_per_gpu": 0, "mpi": "srun"}
    # the one-node stand-in of the SLURM test: two agents on one node make one run of two processes
    assert run_launcher(1, 1, tasks_per_node=2).startswith("srun --nodes 1 --ntasks 2 --ntasks-per-node 2 "
                                                           "torchrun --nnodes 2 --nproc-per-node 1 ")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_gpu_or_node_count_that_is_no_positive_integer_is_named(bad):
    from icepick.workflow_config import run_launcher

    with pytest.raises(ValueError, match="gpus_per_run: .* must be an integer >= 1"):
        run_launcher(bad)
    with pytest.raises(ValueError, match="nodes_per_run: .* must be an integer >= 1"):
        run_launcher(1, bad)


SNAKEMAKE = Path(sys.executable).parent / "snakemake"


@pytest.mark.slow
@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed beside this python")
def test_the_workflow_launches_runs_on_gpus_per_run_gpus(tmp_path):
    """Dry runs in a copy of the workflow: the run rule's command and resources follow
    gpus_per_run and nodes_per_run; the freeze trace keeps one GPU; 0 is refused naming the key."""
    import re

    from conftest import copy_workflow

    cwd = copy_workflow(tmp_path)
    target = "results/resnet110/runs/icepick-icepick-r0.6-eta0.3-theta1.5/seed2/summary.json"
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def dry(*args: str) -> str:
        proc = subprocess.run([str(SNAKEMAKE), "-n", "-p", "--resources", "gpu=8", *args, "--", target], cwd=cwd,
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc.stdout + proc.stderr

    def job(text: str, rule: str) -> tuple[str, str]:
        block = text.split(f"rule {rule}:", 1)[1].split("\n\n", 1)[0]
        command = re.search(r"^(?:Shell command: )?(\S.* -m icepick (?:run|trace) .*)$", text.split(f"rule {rule}:", 1)[1],
                            re.M).group(1)
        return re.search(r"resources: (.*)", block).group(1), command

    resources, command = job(dry(), "run")
    assert resources.endswith("gpu=1") and command.startswith("python -m icepick run ")
    out = dry("--config", "gpus_per_run=4")
    resources, command = job(out, "run")
    assert resources.endswith("gpu=4, nodes=1")
    assert command.startswith("torchrun --standalone --nnodes 1 --nproc-per-node 4 -m icepick run ")
    assert job(out, "trace")[1].startswith("python -m icepick trace ")
    resources, command = job(dry("--config", "gpus_per_run=2", "nodes_per_run=3"), "run")
    assert "nodes=3, gres=gpu:2, tasks=3, tasks_per_gpu=0, mpi=srun" in resources
    assert command.startswith("srun --nodes 3 --ntasks 3 --ntasks-per-node 1 torchrun --nnodes 3 --nproc-per-node 2 ")
    bad = subprocess.run([str(SNAKEMAKE), "-n", "--config", "gpus_per_run=0", "--", target], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "gpus_per_run: 0 is out of range" in bad.stdout + bad.stderr


# ---------------------------------------------------------------- two processes


def _torchrun(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A resnet14 briefly trained on generated data, and a freeze trace for it (scores made up:
    freezing only needs an order)."""
    from icepick.data import load_experiment_data, synth_cifar10, train_batches
    from icepick.model_files import save_model
    from icepick.models import build_model
    from icepick.pruning import conv_layers

    root = tmp_path_factory.mktemp("dist")
    synth_cifar10(root / "data", n_train=480, n_test=100, seed=0, difficulty="easy")
    data = load_experiment_data(root / "data", torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model("resnet14")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(8):
        for x, y in train_batches(data.train, 32, seed=epoch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    save_model(model, root / "pretrained.pt")
    layers = [{"layer": name, "index": i, "score": float((i * 7) % 11)} for i, (name, _, _) in enumerate(conv_layers(model))]
    (root / "trace.json").write_text(json.dumps({"model": "resnet14", "layers": layers, "seconds": 0.0,
                                                 "train_macs": 0, "config": {"ratio": 0.4}}))
    return root


def _one_process(root: Path, out: Path, **overrides) -> tuple[pd.DataFrame, dict]:
    from icepick.algorithm import RunConfig, read_trace, run_experiment
    from icepick.data import load_experiment_data

    values = {**RUN, **overrides}
    cfg = RunConfig.from_dict(values)
    data = load_experiment_data(root / "data", torch.device("cpu"), cfg.decision_split, cfg.val_size)
    summary = run_experiment(cfg, root / "pretrained.pt", data, out / "steps.csv", out / "summary.json",
                             out / "pruned.pt", read_trace(root / "trace.json"), torch.device("cpu"), show_progress=False)
    return pd.read_csv(out / "steps.csv"), summary


@pytest.fixture(scope="module")
def scenarios(pretrained, tmp_path_factory):
    """One two-process launch of this file's worker (below): every scenario's records and checks."""
    out = tmp_path_factory.mktemp("two")
    _torchrun(str(Path(__file__)), str(pretrained), str(out))
    return out


@pytest.fixture(scope="module")
def one_process(pretrained, tmp_path_factory):
    """The one-process runs the two-process ones are held to: ``(steps, summary)`` by name."""
    out = tmp_path_factory.mktemp("one")
    return {"icepick": _one_process(pretrained, out / "icepick"), "oneshot": _one_process(pretrained, out / "oneshot",
                                                                                           **ONESHOT)}


def _same_run(two: pd.DataFrame, one: pd.DataFrame, summary: dict) -> None:
    """Decisions, widths, batches and MACs equal; correct counts within one image, accuracies
    within one image's share of their split (empty where the one-process run's are)."""
    pd.testing.assert_frame_equal(two[EXACT], one[EXACT])
    image = 100.0 / min(summary["test_samples"], summary["decision_samples"])
    for col, tol in [(c, 1) for c in COUNTS] + [(c, image + 1e-9) for c in ACCURACIES]:
        assert (two[col].isna() == one[col].isna()).all(), col
        assert (two[col] - one[col]).abs().fillna(0.0).max() <= tol, col


@pytest.mark.slow
def test_global_batchnorm_is_batchnorm_over_the_whole_batch(scenarios):
    """Output and every gradient of two processes' GlobalBatchNorm2d on two halves of a batch (of
    different sizes), against nn.BatchNorm2d on the whole batch."""
    check = json.loads((scenarios / "batchnorm.json").read_text())
    assert check["output"] < 1e-5 and check["grad_input"] < 1e-5
    assert check["grad_weight"] < 1e-4 and check["grad_bias"] < 1e-4
    assert check["running_mean"] < 1e-6 and check["running_var"] < 1e-6


@pytest.mark.slow
def test_a_fine_tuning_on_two_processes_trains_what_one_process_trains(scenarios):
    """Global batches of 7 (slices of 3 and 4 images, and a last batch of 2 split 1 + 1) with KD:
    the same batches and images, the same mean losses and weights up to float rounding."""
    check = json.loads((scenarios / "finetune.json").read_text())
    for precision, res in check.items():
        assert res["batches"] == res["one"]["batches"] and res["samples"] == res["one"]["samples"], precision
        losses, one = res["losses"], res["one"]["losses"]
        tol = 1e-4 if precision == "fp32" else 5e-3  # fp16: float16 activations, rounded per slice
        assert max(abs(a - b) for a, b in zip(losses, one)) < tol * max(1.0, max(map(abs, one))), precision
        assert res["weights"] < (1e-4 if precision == "fp32" else 1e-3), precision  # relative to the largest


@pytest.mark.slow
def test_two_processes_take_the_decisions_of_one_with_early_halt_freezing_and_eq1(scenarios, one_process):
    two = pd.read_csv(scenarios / "icepick" / "steps.csv")
    one, summary = one_process["icepick"]
    assert one["finetuned"].any() and not one["finetuned"].all(), "the case must both skip and fine-tune"
    assert one["halted_early"].any(), "the case must halt a fine-tuning early"
    assert summary["acc_orig"] > 30, "a model near chance would make every step look free"
    _same_run(two, one, summary)
    two_summary = json.loads((scenarios / "icepick" / "summary.json").read_text())
    assert two_summary["distributed"] == {"world_size": 2, "batchnorm": "global", "backend": "gloo"}
    assert summary["distributed"]["world_size"] == 1
    assert two_summary["n_frozen"] == summary["n_frozen"] > 0
    assert abs(two_summary["decision_correct_orig"] - summary["decision_correct_orig"]) <= 1


@pytest.mark.slow
def test_the_one_shot_baseline_on_a_held_out_split_on_two_processes(scenarios, one_process):
    two = pd.read_csv(scenarios / "oneshot" / "steps.csv")
    one, summary = one_process["oneshot"]
    assert summary["decision_samples"] == ONESHOT["val_size"]
    _same_run(two, one, summary)


@pytest.mark.slow
def test_two_processes_resume_a_run_that_one_process_began(scenarios, one_process):
    """The state a killed run left (here by one process, after two steps) is read by both ranks;
    the records end as those of an uninterrupted one-process run."""
    two = pd.read_csv(scenarios / "resumed" / "steps.csv")
    one, summary = one_process["icepick"]
    _same_run(two, one, summary)
    assert not (scenarios / "resumed" / "summary.json.state.pt").exists()


@pytest.mark.slow
def test_torchrun_runs_icepick_run_and_rank_0_alone_writes_the_records(pretrained, one_process, tmp_path):
    out = tmp_path / "cli"
    args = ["-m", "icepick", "run", "--pretrained", str(pretrained / "pretrained.pt"), "--data", str(pretrained / "data"),
            "--device", "cpu", "--threads", "2", "--trace", str(pretrained / "trace.json"), "--no-progress",
            "--steps-out", str(out / "steps.csv"), "--summary-out", str(out / "summary.json"),
            "--model-out", str(out / "pruned.pt")]
    for key in ("theta", "eta", "ratio", "seed", "max_steps", "batch_size", "max_batches", "early_halt"):
        args += [f"--{key.replace('_', '-')}", str(RUN[key])]
    proc = _torchrun(*args)
    assert sorted(p.name for p in out.iterdir()) == ["pruned.pt", "steps.csv", "summary.json"]
    assert "process 0 of 2 on cpu (gloo)" in proc.stderr
    assert "final accuracy" in proc.stderr and proc.stderr.count("final accuracy") == 1  # rank 1 logs warnings only
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distributed"]["world_size"] == 2 and summary["config"]["precision"] == "fp32"
    _same_run(pd.read_csv(out / "steps.csv"), *one_process["icepick"])


# ---------------------------------------------------------------- the worker (run by torchrun)


ONESHOT = dict(method="oneshot", lr_policy="fixed", eta=0.0, theta=0.0, early_halt=0, decision_split="val",
               val_size=50, max_steps=3, max_batches=2)


def _batchnorm_check(out: Path, dist: Dist) -> None:
    from icepick.distributed import global_batchnorm

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(7, 5, 4, 4, generator=gen) * 3 + 2).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(7, 5, 4, 4, generator=gen)
    ref = torch.nn.BatchNorm2d(5)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5, generator=gen)
        ref.bias.uniform_(-1, 1, generator=gen)
    mine = torch.nn.Sequential(torch.nn.BatchNorm2d(5))
    mine.load_state_dict({f"0.{k}": v for k, v in ref.state_dict().items()})
    xr = x.clone().requires_grad_(True)
    y_ref = ref(xr)
    y_ref.backward(grad)
    lo, hi = shard_bounds(7, dist)
    xm = x[lo:hi].clone().requires_grad_(True)
    with global_batchnorm(mine, dist):
        assert type(mine[0]).__name__ == "GlobalBatchNorm2d"
        y = mine(xm)
        (y * grad[lo:hi]).sum().backward()
    assert type(mine[0]) is torch.nn.BatchNorm2d
    bn = mine[0]
    gw, gb = bn.weight.grad.clone(), bn.bias.grad.clone()
    torch.distributed.all_reduce(gw)
    torch.distributed.all_reduce(gb)
    res = {
        "output": (y.detach() - y_ref.detach()[lo:hi]).abs().max().item(),
        "grad_input": (xm.grad - xr.grad[lo:hi]).abs().max().item(),
        "grad_weight": (gw - ref.weight.grad).abs().max().item(),
        "grad_bias": (gb - ref.bias.grad).abs().max().item(),
        "running_mean": (bn.running_mean - ref.running_mean).abs().max().item(),
        "running_var": (bn.running_var - ref.running_var).abs().max().item(),
    }
    if dist.rank == 0:
        (out / "batchnorm.json").write_text(json.dumps(res))


def _finetune_check(root: Path, out: Path, dist: Dist) -> None:
    from icepick.algorithm import load_teacher
    from icepick.data import load_experiment_data
    from icepick.distributed import barrier
    from icepick.finetune import FinetuneConfig, finetune
    from icepick.model_files import load_model

    data = load_experiment_data(root / "data", torch.device("cpu"))
    train = data.train.with_images(data.train.images[:23], data.train.labels[:23])  # batches 7, 7, 7, 2
    teacher = load_teacher(root / "pretrained.pt", "cpu")
    res = {}
    for precision in ("fp32", "fp16"):
        cfg = FinetuneConfig(batch_size=7, early_halt=0, precision=precision)
        results = {}
        for who, d in (("one", SINGLE), ("two", dist)):
            model, _ = load_model(root / "pretrained.pt", "cpu")
            if who == "one" and dist.rank != 0:
                continue
            r = finetune(model, teacher, train, 0.01, cfg, seed=5, dist=d)
            results[who] = (r, torch.cat([p.detach().flatten() for p in model.state_dict().values()
                                          if p.is_floating_point()]))
        barrier(dist)
        if dist.rank == 0:
            (one, w1), (two, w2) = results["one"], results["two"]
            res[precision] = {"batches": two.batches, "samples": two.samples, "losses": list(two.losses),
                              "weights": ((w1 - w2).abs().max() / w1.abs().max()).item(),
                              "one": {"batches": one.batches, "samples": one.samples, "losses": list(one.losses)}}
    if dist.rank == 0:
        (out / "finetune.json").write_text(json.dumps(res))


def _run(root: Path, out: Path, dist: Dist, **overrides) -> None:
    from icepick.algorithm import RunConfig, read_trace, run_experiment
    from icepick.data import load_experiment_data

    cfg = RunConfig.from_dict({**RUN, **overrides})
    data = load_experiment_data(root / "data", torch.device("cpu"), cfg.decision_split, cfg.val_size)
    run_experiment(cfg, root / "pretrained.pt", data, out / "steps.csv", out / "summary.json", out / "pruned.pt",
                   read_trace(root / "trace.json"), torch.device("cpu"), show_progress=False, dist=dist)


def _resume_check(root: Path, out: Path, dist: Dist) -> None:
    """Rank 0 alone runs two steps and is killed; then both ranks resume."""
    import icepick.algorithm as algorithm
    from icepick.distributed import barrier

    if dist.rank == 0:
        real, calls = algorithm._run_step, []

        def dying(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt("killed")
            return real(*args, **kwargs)

        algorithm._run_step = dying
        try:
            _run(root, out, SINGLE)
        except KeyboardInterrupt:
            pass
        finally:
            algorithm._run_step = real
        assert (out / "summary.json.state.pt").exists()
    barrier(dist)
    _run(root, out, dist)


def _worker(root: Path, out: Path) -> None:
    from icepick.distributed import init, shutdown

    torch.set_num_threads(1)
    dist = from_env()
    init(dist, torch.device("cpu"))
    _batchnorm_check(out, dist)
    _finetune_check(root, out, dist)
    _run(root, out / "icepick", dist)
    _run(root, out / "oneshot", dist, **ONESHOT)
    _resume_check(root, out / "resumed", dist)
    shutdown(dist)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
