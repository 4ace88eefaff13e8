"""Any CNN: torchvision's models and a user's own go through the command line and the workflow.

Tiny generated data, one pretraining epoch, three ICE-Pick steps with freezing: these runs
check that every path a model outside the paper's families takes works, not accuracy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import copy_workflow

from icepick.freezing import choose_frozen, trace_scores
from icepick.model_files import load_model

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"
SPECS = ["torchvision:resnet18", "torchvision:vgg11_bn", "torchvision:mobilenet_v3_small"]
RUN = "runs/icepick-icepick-r0.4-eta0.3-theta0/seed0"
OVERLAY = f"""
models: [{', '.join(SPECS)}]
paper_role: {{}}
data: {{synthetic_train: 128, synthetic_test: 64}}
pretrain: {{epochs: 1}}
finetune: {{max_steps: 3, max_batches: 2}}
experiments:
  fig3: {{ratios: [0.4], etas: [0.3], theta: 0, baseline: false}}
  table1: {{ratios: {{default: 0.4}}}}
"""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed beside this python"),
]


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEPICK_", "SLURM_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _icepick(cwd: Path, *args: str, device: bool = True) -> subprocess.CompletedProcess:
    extra = ["--device", "cpu", "--threads", "1"] if device else []
    proc = subprocess.run([sys.executable, "-m", "icepick", *args, *extra], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def workflow_runs(tmp_path_factory) -> Path:
    """The workflow taken through pretraining, the freeze trace and one ICE-Pick run per model."""
    wf = copy_workflow(tmp_path_factory.mktemp("any_cnn") / "wf", anycnn=OVERLAY)
    targets = [f"results/{spec}/{RUN}/summary.json" for spec in SPECS]
    proc = subprocess.run([str(SNAKEMAKE), *targets, "--configfile", "config/test.yaml", "anycnn.yaml",
                           "--cores", "2", "--resources", "gpu=2"], cwd=wf, env=_env(), capture_output=True,
                          text=True, timeout=1500)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return wf


@pytest.mark.parametrize("spec", SPECS)
def test_the_workflow_takes_a_torchvision_model_through_ice_pick_with_freezing(workflow_runs, spec):
    run = workflow_runs / "results" / spec / RUN
    summary = json.loads((run / "summary.json").read_text())
    steps = pd.read_csv(run / "steps.csv")
    assert summary["model"] == spec and summary["n_steps"] == 3 and summary["n_frozen"] > 0
    assert steps["finetuned"].tolist() == (steps["drop"] >= 0).tolist()  # theta 0: fine-tune unless it improved
    assert steps["finetuned"].any()
    assert steps["params"].is_monotonic_decreasing and summary["final_alpha"] < 1
    pretrained, _ = load_model(workflow_runs / "results" / spec / "pretrained.pt")
    pruned, _ = load_model(run / "pruned.pt")
    trace = json.loads((workflow_runs / "results" / spec / "trace" / "r0.4" / "seed0.json").read_text())
    frozen = choose_frozen(pretrained, trace_scores(trace), 0.3)
    assert len(frozen) == summary["n_frozen"]
    before = {n: m.weight for n, m in pretrained.named_modules() if isinstance(m, torch.nn.Conv2d)}
    after = {n: m.weight for n, m in pruned.named_modules() if isinstance(m, torch.nn.Conv2d)}
    # a frozen layer never moves: pruned or not, each of its weights is one of its pretrained weights
    assert frozen and all(bool(torch.isin(after[n], before[n]).all()) for n in frozen)
    unpruned = [n for n in before if after[n].shape == before[n].shape]  # layers no step cut
    assert any(not torch.equal(after[n], before[n]) for n in unpruned if n not in frozen)  # the others trained


def test_the_command_line_prunes_the_coupled_groups_too_when_asked(workflow_runs, tmp_path):
    pretrained = workflow_runs / "results" / SPECS[0] / "pretrained.pt"
    out = tmp_path / "coupled"
    _icepick(workflow_runs, "run", "--pretrained", str(pretrained), "--model", SPECS[0], "--data", "data/synthetic",
             "--coupled", "--criterion", "taylor", "--criterion-batches", "1", "--max-steps", "2",
             "--max-batches", "1", "--batch-size", "32", "--steps-out", str(out / "steps.csv"),
             "--summary-out", str(out / "summary.json"), "--model-out", str(out / "pruned.pt"), "--no-progress")
    steps = pd.read_csv(out / "steps.csv")
    assert steps["block"].tolist() == ["conv1", "layer1.0.conv1"]  # the stem's group feeds the residual additions
    pruned, _ = load_model(out / "pruned.pt")
    assert pruned.conv1.out_channels == 38 and pruned.layer1[0].conv2.out_channels == 38  # ceil(0.4 * 64) = 26 gone


def test_a_users_own_model_module_goes_through_pretraining_and_a_run(synth_root, tmp_path):
    shutil.copy(REPO / "tests" / "custom_cnn.py", tmp_path / "my_nets.py")
    spec = "python:my_nets:tiny_net"
    listing = _icepick(tmp_path, "blocks", "--model", spec, device=False).stdout.splitlines()
    assert listing[0] == f"{spec}: 2 pruning steps, 4,382 parameters"
    assert [line.split()[1] for line in listing[2:4]] == ["block_a", "plain1"]
    _icepick(tmp_path, "pretrain", "--model", spec, "--data", str(synth_root), "--out", "pre.pt", "--epochs-csv",
             "pre.csv", "--summary", "pre.json", "--epochs", "1", "--n-train", "64", "--batch-size", "32")
    _icepick(tmp_path, "trace", "--pretrained", "pre.pt", "--model", spec, "--data", str(synth_root), "--out",
             "trace.json", "--max-batches", "1", "--batch-size", "32")
    _icepick(tmp_path, "run", "--pretrained", "pre.pt", "--model", spec, "--data", str(synth_root), "--trace",
             "trace.json", "--eta", "0.3", "--theta", "0", "--max-batches", "1", "--batch-size", "32",
             "--steps-out", "steps.csv", "--summary-out", "summary.json", "--model-out", "pruned.pt", "--no-progress")
    steps = pd.read_csv(tmp_path / "steps.csv")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert steps["block"].tolist() == ["block_a", "plain1"] and summary["n_frozen"] > 0
    assert summary["provenance"]["data"]["n_train"] > 0 and summary["config"]["eta"] == 0.3
