"""The paper's three models (ResNet-110: 54 steps, ResNet-152: 75, MobileNetV2: 17) through whole
runs of the real command line on the CPU: ICE-Pick with freezing (eta 0.3, its own freeze trace)
and the baseline, each pruning every block.

Only the mechanics matter here, so the "pretrained" models are untrained (`build_model` and
`save_model`), the data set is a tiny generated one (16 training, 10 test images) and every
fine-tuning is one batch of 2 images; theta = -100 makes ICE-Pick fine-tune at every step, so
Eq. 1 is exercised from alpha ~1 down to alpha ~0.4. Every block is pruned at r = 0.6 (a ratio
of the paper's Figure 3 for all three models, and Table 1's for the ResNets).

Checked from the records (steps.csv, summary.json, pruned.pt; docs/architecture.md):
every block pruned once in forward order; the final parameter count against the one rebuilt
from the widths C - ceil(r C); Eq. 1's upper and lower arms; every column and key filled; and,
for MobileNetV2, a run SIGKILLed at a late step that resumes and ends with the same records
(times aside) as the uninterrupted run.

Every run starts in a module fixture, two processes at a time with one thread each (the 2-core
machine this suite is sized for); the checks themselves take seconds. The runs cost about 6
CPU-minutes (ResNet-152 ~45%, ResNet-110 ~33%; the baselines half of it): 8.5-9 minutes of wall
time measured on a shared 2-core machine at load ~4.5, about 3.5 expected on two idle cores.
Deselect with `-m "not paper_models"`.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest
import torch

from icepick import schedule
from icepick.algorithm import STEP_COLUMNS
from icepick.model_files import load_model, save_model
from icepick.models import build_model
from icepick.pruning import count_params, model_widths, prunable_blocks

pytestmark = [pytest.mark.slow, pytest.mark.paper_models]

REPO = Path(__file__).resolve().parents[1]
MODELS = {"resnet110": 54, "resnet152": 75, "mobilenetv2": 17}  # model -> blocks = pruning steps
RATIO = "0.6"  # r, as written on the command line (and read exactly below)
ETA = 0.3
N_TRAIN, N_TEST, BATCH = 16, 10, 2
# ceil(eta * N) of the convolutions inside the prunable blocks (docs/method.md, Section 5)
FROZEN = {"resnet110": math.ceil(ETA * 108), "resnet152": math.ceil(ETA * 150), "mobilenetv2": math.ceil(ETA * 51)}
RESUMED_MODEL = "mobilenetv2"  # the one model killed and resumed (the time budget allows one)
KILL_AT = 12  # of its 17 steps: kill once the state file holds at least this many steps
COMMON = ["--threads", "1", "--device", "cpu"]
TIME_FIELD = re.compile(r"^t_|seconds|^time$|hostname|git_commit|gpu_slot")  # times and the moment, not results
STEP_LINE = re.compile(r"\bstep (\d+)/(\d+) ")
RESUME_LINE = re.compile(r"resuming (\S+) from step (\d+) of (\d+)")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEPICK_", "SLURM_"))}
    env.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    return env


def _icepick(*args: str | Path, cwd: Path) -> tuple[str, float]:
    """Run ``python -m icepick ARGS`` as a user does; return its output (stdout + stderr) and seconds."""
    cmd = [sys.executable, "-m", "icepick", *map(str, args)]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=1200)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}"
    return proc.stdout, seconds


def _outs(out: Path) -> list[str | Path]:
    return ["--steps-out", out / "steps.csv", "--summary-out", out / "summary.json", "--model-out", out / "pruned.pt"]


def _run_args(root: Path, model: str, method: str, out: Path) -> list[str | Path]:
    args: list[str | Path] = [
        "run", "--pretrained", root / f"{model}.pt", "--model", model, "--data", root / "data", "--seed", "0",
        "--ratio", RATIO, "--batch-size", str(BATCH), "--max-batches", "1", *_outs(out), *COMMON, "--no-progress",
    ]
    if method == "icepick":
        return [*args, "--eta", str(ETA), "--trace", root / f"{model}.trace.json", "--theta", "-100"]
    return [*args, "--method", "baseline", "--lr-policy", "fixed"]


def _state_rows(state: Path) -> int:
    """Steps a run's state file holds (0 while there is none). It is written atomically (renamed into
    place), so a reader sees a whole file."""
    try:
        _, meta = load_model(state)
    except (OSError, ValueError):
        return 0
    return len(meta["rows"])


def _run_killed(args: list[str | Path], state: Path, cwd: Path) -> tuple[str, int, float]:
    """Start the run; once its log says step KILL_AT and the state file holds it, SIGKILL the process.
    Returns its output, the steps its state file holds after the kill, and seconds."""
    cmd = [sys.executable, "-m", "icepick", *map(str, args)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the log line of a step comes just before its state is saved
            lines.append(line)
            match = STEP_LINE.search(line)
            if match and int(match.group(1)) >= KILL_AT:
                deadline = time.monotonic() + 120
                while _state_rows(state) < KILL_AT and time.monotonic() < deadline:
                    time.sleep(0.01)
                proc.send_signal(signal.SIGKILL)
                break
        lines.append(proc.communicate(timeout=120)[0])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed ({proc.returncode}):\n{output[-4000:]}"
    return output, _state_rows(state), time.monotonic() - start


@pytest.fixture(scope="module")
def paper_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Data, untrained 'pretrained' models, freeze traces and every run, two processes at a time."""
    root = tmp_path_factory.mktemp("paper_models")
    _icepick("data", "synth", "--out", root / "data", "--train", N_TRAIN, "--test", N_TEST, "--seed", "0",
             "--difficulty", "easy", cwd=root)
    for model in MODELS:
        torch.manual_seed(0)
        save_model(build_model(model), root / f"{model}.pt")

    logs: dict[str, str] = {}
    seconds: dict[str, float] = {}
    killed: dict[str, int] = {}

    def trace(model: str) -> None:
        logs[f"{model}/trace"], seconds[f"{model}/trace"] = _icepick(
            "trace", "--pretrained", root / f"{model}.pt", "--model", model, "--data", root / "data", "--seed", "0",
            "--ratio", RATIO, "--batch-size", BATCH, "--max-batches", "1", "--out", root / f"{model}.trace.json",
            *COMMON, cwd=root)

    def run(model: str, method: str) -> None:
        key = f"{model}/{method}"
        logs[key], seconds[key] = _icepick(*_run_args(root, model, method, root / model / method), cwd=root)

    def kill_and_resume(model: str) -> None:
        out = root / model / "resumed"
        args = _run_args(root, model, "icepick", out)
        logs[f"{model}/killed"], killed[model], seconds[f"{model}/killed"] = _run_killed(
            args, out / "summary.json.state.pt", root)
        killed_summary_exists = (out / "summary.json").exists()
        assert not killed_summary_exists, "the killed run had already finished"
        logs[f"{model}/resumed"], seconds[f"{model}/resumed"] = _icepick(*args, cwd=root)

    # Chains of dependent jobs, longest first, on two workers (the ResNet-152 runs start together).
    chains = [
        [lambda: trace("resnet152"), lambda: run("resnet152", "icepick")],
        [lambda: run("resnet152", "baseline")],
        [lambda: trace("resnet110"), lambda: run("resnet110", "icepick")],
        [lambda: run("resnet110", "baseline")],
        [lambda: trace(RESUMED_MODEL), lambda: run(RESUMED_MODEL, "icepick"), lambda: kill_and_resume(RESUMED_MODEL)],
        [lambda: run("mobilenetv2", "baseline")],
    ]
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(lambda chain=chain: [job() for job in chain]) for chain in chains]
        try:
            for future in futures:
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # a failure: start no further chain
            raise
    seconds["all (wall)"] = time.monotonic() - start
    print("\npaper-model jobs (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    return {"root": root, "logs": logs, "seconds": seconds, "killed": killed}


def _records(root: Path, model: str, method: str) -> tuple[pd.DataFrame, dict, Path]:
    out = root / model / method
    return pd.read_csv(out / "steps.csv"), json.loads((out / "summary.json").read_text()), out / "pruned.pt"


def _expected_widths(model: str) -> dict[str, int]:
    """Each block's width after one prune at r: C - ceil(r C), r read exactly as written."""
    return {name: c - math.ceil(Fraction(RATIO) * c) for name, c in model_widths(build_model(model)).items()}


RUNS = [(model, method) for model in MODELS for method in ("icepick", "baseline")]


@pytest.mark.parametrize(("model", "method"), RUNS)
def test_every_block_is_pruned_once_in_forward_order(paper_runs, model, method):
    steps, summary, pruned = _records(paper_runs["root"], model, method)
    blocks = [name for name, _ in prunable_blocks(build_model(model))]
    assert len(blocks) == MODELS[model]
    assert steps["block"].tolist() == blocks
    assert steps["step"].tolist() == list(range(1, len(blocks) + 1))
    assert summary["n_steps"] == len(blocks) and summary["model"] == model
    # pruned once each: a second prune of a block would leave it narrower than C - ceil(r C)
    assert model_widths(load_model(pruned)[0]) == _expected_widths(model)
    assert (steps["params"].diff().dropna() < 0).all()  # every step removed something


@pytest.mark.parametrize(("model", "method"), RUNS)
def test_the_final_parameter_count_is_the_one_of_the_widths(paper_runs, model, method):
    steps, summary, pruned = _records(paper_runs["root"], model, method)
    expected = count_params(build_model(model, widths=_expected_widths(model)))
    pruned_model, _ = load_model(pruned)
    assert pruned_model.arch_name == model
    assert summary["final_params"] == expected == count_params(pruned_model) == steps["params"].iloc[-1]
    assert sum(p.numel() for p in pruned_model.parameters()) == expected
    original = count_params(build_model(model))
    assert summary["final_alpha"] == pytest.approx(expected / original, rel=1e-12)
    assert steps["alpha"].iloc[-1] == pytest.approx(expected / original, rel=1e-12)


@pytest.mark.parametrize("model", MODELS)
def test_icepick_lr_runs_from_base_down_to_the_lower_arm_of_eq1(paper_runs, model):
    steps, summary, _ = _records(paper_runs["root"], model, "icepick")
    base, low = schedule.BASE, schedule.BASE - schedule.DELTA
    assert steps["finetuned"].all() and summary["n_finetunes"] == MODELS[model]  # theta -100: every step
    for alpha, lr in zip(steps["alpha"], steps["lr"]):
        assert lr == pytest.approx(schedule.max_lr(alpha), rel=1e-12, abs=0)
    assert steps["lr"].is_monotonic_decreasing
    # Upper arm: the first fine-tunings run at base. Eq. 1 only reaches base at alpha >= 2(1-p), so
    # just below alpha = 1 it is base less ~1e-6 of it: equal within 1e-5 relative.
    first = steps.head(2)
    assert (first["alpha"] > 0.99).all()
    assert ((first["lr"] - base).abs() <= 1e-5 * base).all()
    # Lower arm: the last fine-tunings run at base - Delta within 1e-9 relative. At r = 0.6 the last
    # two steps of every model are below alpha 0.66, where Eq. 1 is within 1e-11 of base - Delta
    # (at alpha 0.8 it is still 3e-4 above it).
    last = steps.tail(2)
    assert (last["alpha"] < 0.66).all()
    assert ((last["lr"] - low).abs() <= 1e-9 * low).all(), last[["step", "alpha", "lr"]]
    late = steps[steps["alpha"] < 0.8]
    assert len(late) >= 2 and ((late["lr"] - low).abs() <= 1e-3 * low).all()


@pytest.mark.parametrize("model", MODELS)
def test_icepick_freezes_from_its_trace_and_the_baseline_trains_everything(paper_runs, model):
    ice_steps, ice, _ = _records(paper_runs["root"], model, "icepick")
    base_steps, baseline, _ = _records(paper_runs["root"], model, "baseline")
    assert ice["n_frozen"] == FROZEN[model] and baseline["n_frozen"] == 0
    assert (ice_steps["trainable_fraction"] < 1).all() and (base_steps["trainable_fraction"] == 1).all()
    assert ice["trace_ratio"] == float(RATIO) and baseline["trace_ratio"] is None
    assert ice["trace_seconds"] > 0 and ice["trace_train_macs"] > 0
    assert base_steps["finetuned"].all() and (base_steps["lr"] == schedule.BASE).all()
    assert (base_steps["ft_batches"] == 1).all() and (ice_steps["ft_batches"] == 1).all()
    assert (base_steps["ft_samples"] == BATCH).all() and (ice_steps["ft_samples"] == BATCH).all()
    # the same prunes: the same parameter count at every step, with and without freezing
    assert ice_steps["params"].tolist() == base_steps["params"].tolist()


def _summary_keys() -> list[str]:
    """The run summary's keys as docs/architecture.md lists them."""
    text = (REPO / "docs" / "architecture.md").read_text()
    match = re.search(r"### Run summary \(`summary\.json`\)\n`\{([^}]*)\}`", text)
    assert match, "docs/architecture.md has no run-summary key list"
    keys = [key.strip() for key in match.group(1).replace("\n", " ").split(",")]
    assert len(keys) > 30, keys
    return keys


def _finite(value) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


@pytest.mark.parametrize(("model", "method"), RUNS)
def test_every_record_is_complete(paper_runs, model, method):
    steps, summary, _ = _records(paper_runs["root"], model, method)
    assert list(steps.columns) == STEP_COLUMNS
    skipped = ~steps["finetuned"].astype(bool)
    nan = steps.isna()
    assert not nan.drop(columns="acc_finetuned").any().any(), steps.columns[nan.any()].tolist()
    assert (nan["acc_finetuned"] == skipped).all()  # empty exactly on the steps that did not fine-tune

    assert set(_summary_keys()) <= set(summary), sorted(set(_summary_keys()) - set(summary))
    nullable = {"trace_ratio"} if method == "baseline" else set()
    for key in _summary_keys():
        assert (summary[key] is not None or key in nullable) and _finite(summary[key]), (key, summary[key])
    assert summary["method"] == method and summary["ratio"] == float(RATIO) and summary["seed"] == 0
    assert summary["n_steps"] == len(steps) and summary["test_samples"] == N_TEST
    assert summary["total_train_macs"] == steps["train_macs"].sum() > 0
    assert summary["total_seconds"] == pytest.approx(steps["t_step"].sum())
    prov = summary["provenance"]
    assert {"python", "torch", "torchvision", "icepick", "device", "gpu_slot", "arithmetic", "data", "git_commit",
            "hostname", "time", "cpu"} <= set(prov)
    assert prov["device"] == "cpu" and prov["cpu"]  # the processor: float results differ between families
    assert prov["arithmetic"]["precision"] == "fp32" and {"tf32_matmul", "tf32_cudnn"} <= set(prov["arithmetic"])
    data = prov["data"]
    assert {"source", "digest", "num_classes", "n_train", "n_test"} <= set(data)
    assert (data["n_train"], data["n_test"], data["num_classes"]) == (N_TRAIN, N_TEST, 10)
    assert data["digest"]
    assert not (paper_runs["root"] / model / method / "summary.json.state.pt").exists()


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if not TIME_FIELD.search(k)}
    return value


def test_a_run_killed_at_a_late_step_resumes_and_ends_with_the_same_records(paper_runs):
    root, logs, model = paper_runs["root"], paper_runs["logs"], RESUMED_MODEL
    n = MODELS[model]
    saved = paper_runs["killed"][model]
    assert KILL_AT <= saved < n, f"killed with {saved} of {n} steps saved"
    assert RESUME_LINE.search(logs[f"{model}/killed"]) is None  # the first attempt started afresh
    match = RESUME_LINE.search(logs[f"{model}/resumed"])
    assert match, logs[f"{model}/resumed"][-3000:]
    assert (int(match.group(2)), int(match.group(3))) == (saved, n)
    assert f"step {saved}/{n} " not in logs[f"{model}/resumed"]  # the saved steps are not run again
    assert f"step {saved + 1}/{n} " in logs[f"{model}/resumed"]

    whole_steps, whole_summary, whole_pruned = _records(root, model, "icepick")
    steps, summary, pruned = _records(root, model, "resumed")
    times = [c for c in STEP_COLUMNS if TIME_FIELD.search(c)]
    pd.testing.assert_frame_equal(steps.drop(columns=times), whole_steps.drop(columns=times))
    assert _without_times(summary) == _without_times(whole_summary)
    a, meta_a = load_model(pruned)
    b, meta_b = load_model(whole_pruned)
    assert meta_a == meta_b
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert not (root / model / "resumed" / "summary.json.state.pt").exists()
    leftovers = [p.name for p in (root / model / "resumed").iterdir() if p.name.endswith(".tmp")]
    assert not leftovers  # no temporary left by the kill
