"""config/imagenet.yaml (Wide-ResNet-101-2 / ImageNet-1k) and config/tinyimagenet.yaml (DenseNet-121 /
Tiny-ImageNet), the follow-up's experiments: the workflow plans them (Snakemake dry runs on a
copy of the workflow, with a few generated images in the official layouts where data.path
points) and ``icepick cost`` projects them.

The expected job counts are worked out here by hand from each configuration's groups.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow
from test_imagenet_import import make_imagenet, make_tinyimagenet
from test_workflow import SNAKEMAKE, job_counts, snakemake

from icepick.cli import main
from icepick.cost import workflow_config

REPO = Path(__file__).resolve().parents[1]


def _config(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


# ---------------------------------------------------------------- what the configurations say


def test_both_configurations_have_every_key_of_the_papers_and_pass_the_schema():
    paper = _config("config.yaml")
    for name in ("imagenet.yaml", "tinyimagenet.yaml"):
        config = _config(name)
        missing = sorted(set(paper) - set(config))
        assert not missing, f"{name} lacks {missing}"
        for key, value in paper.items():
            if isinstance(value, dict) and key not in ("paper_role", "pretrained"):
                assert not sorted(set(value) - set(config[key])), f"{name}: {key}"
        workflow_config([REPO / "config" / name])  # the schema accepts it (raises otherwise)


def test_imagenet_is_the_follow_ups_setting():
    config = workflow_config([REPO / "config" / "imagenet.yaml"])
    assert config["models"] == ["torchvision:wide_resnet101_2"]
    assert config["pretrained"] == {"torchvision:wide_resnet101_2": "IMAGENET1K_V1"}
    assert config["precision"] == "bf16" and config["decision"]["split"] == "test"
    assert config["data"]["source"] == "imagenet" and config["data"]["train_fraction"] == 0.1
    assert config["data"]["size"] == 224
    assert config["experiments"]["fig3"]["ratios"] == [0.6, 0.7, 0.8]
    assert config["gpus_per_run"] == 8 and config["finetune"]["batch_size"] == 256  # 32 images per GPU


def test_tinyimagenet_is_densenet121_at_64_pixels_on_200_classes():
    config = workflow_config([REPO / "config" / "tinyimagenet.yaml"])
    assert config["models"] == ["torchvision:densenet121"] and config["seeds"] == [0, 1, 2]
    assert config["data"]["source"] == "tinyimagenet" and config["data"]["size"] in (None, 64)


# ---------------------------------------------------------------- the workflow plans them


def _plan(tmp_path: Path, name: str, make) -> str:
    """A dry run (with shell commands) of config/<name> in a copy of the workflow whose
    data.path holds a few generated images in the official layout."""
    cwd = copy_workflow(tmp_path / "workflow")
    make(cwd / _config(name)["data"]["path"])
    proc = snakemake("-n", "-p", "--configfile", f"config/{name}", cwd=cwd)
    return proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed beside this python")
def test_imagenet_configuration_plans_the_follow_ups_runs(tmp_path):
    out = _plan(tmp_path, "imagenet.yaml", make_imagenet)
    counts = job_counts(out)
    # one model, one seed: Figure 3 at r 0.6/0.7/0.8 (eta 0.3, theta 9) and the baseline at each r = 6;
    # Table 1's fixed rate at r 0.6 (its ICE-Pick run is Figure 3's) = 1; the thresholds' theta 7 = 1
    assert counts["run"] == 8 and "run_criterion" not in counts
    assert counts["trace"] == 3  # a trace per ratio that has freezing runs
    assert counts["data_import"] == counts["pretrain"] == counts["weight_shift"] == 1
    assert counts["aggregate_group"] == 3  # fig3, table1, thresholds (no ablation, no criteria)
    assert "--source imagenet" in out and "--train-fraction 0.1" in out and "--seed 0" in out and "--size 224" in out
    assert "--init IMAGENET1K_V1 --epochs 0" in out  # torchvision's weights, no pretraining
    assert "--precision bf16" in out
    assert "torchrun --standalone --nnodes 1 --nproc-per-node 8" in out  # each pruning run on 8 GPUs


@pytest.mark.slow
@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed beside this python")
def test_tinyimagenet_configuration_plans_the_follow_ups_runs(tmp_path):
    out = _plan(tmp_path, "tinyimagenet.yaml", make_tinyimagenet)
    counts = job_counts(out)
    # per seed: Figure 3 at 3 ratios x eta 0.3/0.9 + 3 baselines = 9; Table 1's fixed rate = 1; the
    # thresholds' theta 0.5 = 1; the ablation's no_threshold and no_freezing = 2 (fixed_lr is Table 1's,
    # the baseline Figure 3's); 3 seeds
    assert counts["run"] == 3 * 13
    assert counts["trace"] == 3 * 3 and counts["pretrain"] == 1
    assert "--source tinyimagenet" in out and "--train-fraction" not in out
    assert "--epochs 100" in out  # DenseNet-121 pretrained on Tiny-ImageNet


@pytest.mark.slow
@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed beside this python")
def test_imagenet_without_its_folder_fails_the_dry_run_in_one_line(tmp_path):
    cwd = copy_workflow(tmp_path / "workflow")
    proc = snakemake("-n", "--configfile", "config/imagenet.yaml", cwd=cwd, check=False)
    assert proc.returncode != 0
    assert "data.path: data/imagenet-official does not exist" in proc.stderr
    assert "train/<wnid>/ and val/" in proc.stderr


# ---------------------------------------------------------------- icepick cost


def _cost(tmp_path: Path, name: str, capsys, **overlay) -> tuple[str, dict]:
    files = [str(REPO / "config" / name)]
    if overlay:
        (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
        files.append(str(tmp_path / "overlay.yaml"))
    code = main(["cost", "--configfile", *files, "--json", str(tmp_path / "cost.json")])
    out = capsys.readouterr().out
    assert code == 0
    return out, json.loads((tmp_path / "cost.json").read_text())


# A few steps only: every MAC is counted on a really pruned copy of a torchvision model (minutes
# for all of WRN-101-2's steps on a CPU); the data, image size and classes are the configuration's.
FEW_STEPS = {"finetune": {"max_steps": 2}, "weight_shift": {"steps": 1}}


@pytest.mark.slow  # builds and prunes the torchvision model at the data's size
def test_cost_of_imagenet_counts_224_pixel_images_of_the_10_percent_subset(tmp_path, capsys):
    out, costs = _cost(tmp_path, "imagenet.yaml", capsys, **FEW_STEPS)
    assert costs["data"] == {"source": "imagenet", "n_train": 128_117, "n_test": 50_000, "n_val": 0,
                             "num_classes": 1000, "image_shape": [3, 224, 224]}
    forward = costs["macs_per_image"]["torchvision:wide_resnet101_2"]["forward"]
    assert 22.0e9 < forward < 23.5e9  # torchvision lists 22.75 G for wide_resnet101_2 at 224x224
    pretrain = [r for r in costs["rows"] if r["part"] == "pretrain"]
    assert pretrain[0]["upper"]["train_macs"] == 0  # its own weights: nothing trained before pruning
    assert "Data: imagenet, 128,117 training / 50,000 test images of 3x224x224, 1000 classes." in out


@pytest.mark.slow  # builds and prunes the torchvision model at the data's size
def test_cost_of_tinyimagenet_counts_64_pixel_images_of_200_classes(tmp_path, capsys):
    out, costs = _cost(tmp_path, "tinyimagenet.yaml", capsys, **FEW_STEPS)
    assert costs["data"]["image_shape"] == [3, 64, 64] and costs["data"]["num_classes"] == 200
    assert (costs["data"]["n_train"], costs["data"]["n_test"]) == (100_000, 10_000)
    pretrain = [r for r in costs["rows"] if r["part"] == "pretrain"][0]["upper"]
    assert pretrain["train_macs"] > 0 and costs["seeds"] == 3


@pytest.mark.e2e  # every step of WRN-101-2 / DenseNet-121 counted: tens of minutes on 2 cores (make test-all)
@pytest.mark.parametrize("name", ["imagenet.yaml", "tinyimagenet.yaml"])
def test_cost_runs_on_each_whole_configuration(tmp_path, capsys, name):
    out, costs = _cost(tmp_path, name, capsys)
    total = costs["totals"]["upper"]
    assert total["runs"] > 0 and total["train_macs"] > 0 and "| **all** |" in out


@pytest.mark.slow  # prunes resnet18 at 72 pixels
def test_a_torchvision_models_macs_at_a_large_size_are_those_of_a_copy_pruned_at_that_size():
    """The cost prunes a torchvision model at 32x32 and carries each layer's MACs over to the data's size."""
    from icepick.cost import step_macs
    from icepick.models import build_model
    from icepick.pruning import layer_macs, prunable_blocks, prune_block

    shape = (3, 72, 72)  # not a multiple of 32: the layers' output sizes round differently
    counted = step_macs("torchvision:resnet18", 0.5, 2, 10, shape)
    model = build_model("torchvision:resnet18", 10, input_shape=shape)
    assert counted[0] == layer_macs(model)
    for step, (block, _) in enumerate(prunable_blocks(model)[:2], start=1):
        prune_block(model, block, 0.5)
        assert counted[step] == layer_macs(model)
    assert sum(counted[2].values()) < sum(counted[0].values())
