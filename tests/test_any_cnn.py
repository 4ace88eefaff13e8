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

from icepick.grid import model_slug

from icepick.freezing import choose_frozen, trace_scores
from icepick.model_files import load_model

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"
SPECS = ["torchvision:resnet18", "torchvision:vgg11_bn", "torchvision:mobilenet_v3_small"]
# The ablation's no-threshold run (theta -100): every step fine-tunes, by construction. One epoch on
# 128 images leaves these models near chance (6-7 of 64 test images right), where a prune leaves the
# count as it was or one image up: at theta 0 ("fine-tune unless it improved") every fine-tuning
# came from a prune that left the count exactly as it was (resnet18 and vgg11_bn: 2 of 3 steps), and
# one more image right after each would have left nothing trained for the freezing checks below.
RUN = "runs/icepick-icepick-r0.4-eta0.3-theta-100/seed0"
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

WORKFLOW = [  # the tests that run the workflow or the command line (minutes)
    pytest.mark.slow,
    pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed beside this python"),
]


def _workflow(test):
    """Mark a test of the workflow or the command line: slow, and skipped without snakemake."""
    for mark in WORKFLOW:
        test = mark(test)
    return test


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
    targets = [f"results/{model_slug(spec)}/{RUN}/summary.json" for spec in SPECS]
    proc = subprocess.run([str(SNAKEMAKE), *targets, "--configfile", "config/test.yaml", "anycnn.yaml",
                           "--cores", "2", "--resources", "gpu=2"], cwd=wf, env=_env(), capture_output=True,
                          text=True, timeout=1500)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return wf


@pytest.mark.parametrize("spec", SPECS)
@_workflow
def test_the_workflow_takes_a_torchvision_model_through_ice_pick_with_freezing(workflow_runs, spec):
    run = workflow_runs / "results" / model_slug(spec) / RUN  # no colon in a path: the spec's slug
    summary = json.loads((run / "summary.json").read_text())
    steps = pd.read_csv(run / "steps.csv")
    assert summary["model"] == spec and summary["n_steps"] == 3 and summary["n_frozen"] > 0
    assert summary["theta"] == -100 and steps["finetuned"].all()  # whatever each prune did to the accuracy
    assert steps["params"].is_monotonic_decreasing and summary["final_alpha"] < 1
    pretrained, _ = load_model(workflow_runs / "results" / model_slug(spec) / "pretrained.pt")
    pruned, _ = load_model(run / "pruned.pt")
    trace = json.loads((workflow_runs / "results" / model_slug(spec) / "trace" / "r0.4" / "seed0.json").read_text())
    frozen = choose_frozen(pretrained, trace_scores(trace), 0.3)
    assert len(frozen) == summary["n_frozen"]
    before = {n: m.weight for n, m in pretrained.named_modules() if isinstance(m, torch.nn.Conv2d)}
    after = {n: m.weight for n, m in pruned.named_modules() if isinstance(m, torch.nn.Conv2d)}
    # a frozen layer never moves: pruned or not, each of its weights is one of its pretrained weights
    assert frozen and all(bool(torch.isin(after[n], before[n]).all()) for n in frozen)
    unpruned = [n for n in before if after[n].shape == before[n].shape]  # layers no step cut
    assert any(not torch.equal(after[n], before[n]) for n in unpruned if n not in frozen)  # the others trained


@_workflow
def test_the_command_line_prunes_the_coupled_groups_too_when_asked(workflow_runs, tmp_path):
    pretrained = workflow_runs / "results" / model_slug(SPECS[0]) / "pretrained.pt"
    out = tmp_path / "coupled"
    _icepick(workflow_runs, "run", "--pretrained", str(pretrained), "--model", SPECS[0], "--data", "data/synthetic",
             "--coupled", "--criterion", "taylor", "--criterion-batches", "1", "--max-steps", "2",
             "--max-batches", "1", "--batch-size", "32", "--steps-out", str(out / "steps.csv"),
             "--summary-out", str(out / "summary.json"), "--model-out", str(out / "pruned.pt"), "--no-progress")
    steps = pd.read_csv(out / "steps.csv")
    assert steps["block"].tolist() == ["conv1", "layer1.0.conv1"]  # the stem's group feeds the residual additions
    pruned, _ = load_model(out / "pruned.pt")
    assert pruned.conv1.out_channels == 38 and pruned.layer1[0].conv2.out_channels == 38  # ceil(0.4 * 64) = 26 gone


@_workflow
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


# ------------------------------------------- models that broke pruning: the API and the CLI


def _images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 10


def _prune(model: torch.nn.Module, **settings):
    import icepick

    torch.manual_seed(0)
    (train_x, train_y), (test_x, test_y) = _images(32), _images(16, seed=1)
    return icepick.iterative_prune(model, (train_x, train_y), (test_x, test_y), device="cpu", batch_size=8,
                                   **settings)


def _scores(model: torch.nn.Module) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(model.eval()(torch.zeros(2, 3, 32, 32)).shape)


def test_squeezenet_is_pruned_through_every_step_and_keeps_its_ten_classes(one_thread):
    from icepick.models import build_model

    result = _prune(build_model("torchvision:squeezenet1_0"), theta=100)  # no fine-tuning: 25 prunes
    assert len(result.steps) == 25 and "classifier.1" not in set(result.steps["block"])
    assert _scores(result.model) == (2, 10) and result.model.classifier[1].out_channels == 10


@pytest.mark.parametrize("spec,steps", [("python:custom_cnn:grouped_net", ["stem", "reduce", "grouped"]),
                                        ("python:custom_cnn:all_conv_net", ["conv1", "conv2"])])
def test_a_users_grouped_or_all_convolutional_model_is_pruned_and_fine_tuned_at_every_step(one_thread, spec, steps):
    from icepick.models import build_model

    result = _prune(build_model(spec), theta=-100, max_batches=2)  # theta -100: every step fine-tunes
    assert result.steps["block"].tolist() == steps and result.steps["finetuned"].all()
    assert (result.steps["ft_batches"] == 2).all() and result.summary["final_alpha"] < 1
    assert _scores(result.model) == (2, 10)
    if spec.endswith("grouped_net"):
        assert result.model.grouped.groups == 4 and result.model.grouped.weight.shape == (8, 2, 3, 3)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["torchvision:googlenet", "torchvision:regnet_x_400mf"])
def test_googlenet_and_regnet_take_two_pruning_steps_with_fine_tuning(one_thread, spec):
    from icepick.models import build_model

    result = _prune(build_model(spec), theta=-100, max_steps=2, max_batches=2)
    assert len(result.steps) == 2 and result.steps["finetuned"].all() and (result.steps["ft_batches"] == 2).all()
    assert result.steps["params"].is_monotonic_decreasing and _scores(result.model) == (2, 10)


def test_the_blocks_listing_says_how_grouped_convolutions_and_the_output_are_handled(capsys):
    from icepick.cli import main

    assert main(["blocks", "--model", "python:custom_cnn:grouped_net"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "python:custom_cnn:grouped_net: 3 pruning steps, 1,250 parameters"
    assert lines[3].split()[:4] == ["2", "reduce", "16", "8"]
    assert lines[3].endswith("[feeds grouped convolution grouped (groups=4): pruned in multiples of 4]")
    assert lines[4].endswith("[is a grouped convolution (groups=4): pruned in multiples of 4]")
    assert lines[6] == "not steps (2 groups):"
    assert lines[7].split(None, 1) == ["narrow", "not prunable: feeds grouped convolution spread (groups=4): its 4 "
                                                 "channels make 4 channel groups of 1, which cannot shrink evenly"]
    assert lines[8].split(None, 1) == ["spread", "not prunable: feeds the classifier"]
    assert main(["blocks", "--model", "python:custom_cnn:all_conv_net"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split(None, 1) == [
        "classifier", "not prunable: its channels are the model's output (a convolutional classifier)"]


def test_a_run_whose_prune_breaks_the_model_stops_with_one_line(synth_root, tmp_path, capsys):
    from icepick.cli import main
    from icepick.model_files import save_model
    from icepick.models import build_model

    save_model(build_model("python:custom_cnn:scaled_net"), tmp_path / "pre.pt")
    code = main(["run", "--pretrained", str(tmp_path / "pre.pt"), "--data", str(synth_root), "--theta", "100",
                 "--steps-out", str(tmp_path / "steps.csv"), "--summary-out", str(tmp_path / "summary.json"),
                 "--model-out", str(tmp_path / "pruned.pt"), "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("icepick run: error: pruning step 'conv1' of python:custom_cnn:scaled_net "
                                            "breaks the model (it no longer runs on a 3x32x32 image")
    assert "Traceback" not in "\n".join(err) and not (tmp_path / "pruned.pt").exists()
