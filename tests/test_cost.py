"""The sweep's projected cost: MACs counted from shapes, the experiment grid, the command."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from icepick.cli import main
from icepick.cost import format_costs, step_macs, sweep_costs
from icepick.models import build_model
from icepick.pruning import layer_macs, prunable_blocks, prune_block

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, ratio, steps", [("resnet20", 0.4, 3), ("mobilenetv2_w025", 0.6, 4)])
def test_step_macs_match_the_really_pruned_model(name, ratio, steps):
    model = build_model(name)
    counted = step_macs(name, ratio, steps)
    assert counted[0] == layer_macs(model)
    for step, (block, _) in enumerate(prunable_blocks(model)[:steps], start=1):
        prune_block(model, block, ratio)
        assert counted[step] == layer_macs(model), f"step {step}"


def _config(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


def test_paper_sweep_costs_are_consistent():
    costs = sweep_costs(_config("config.yaml"))
    rows = {(r["model"], r["part"]): r for r in costs["rows"]}
    fig3 = rows[("resnet110", "fig3")]
    assert fig3["upper"]["runs"] == 80 and fig3["upper"]["finetunes"] == 80 * 54  # every step, every run
    table1 = rows[("resnet110", "table1")]
    assert table1["reported"]["finetunes"] == pytest.approx(132 + 102 + 133 + 116)  # Table 1's #Ft
    assert table1["reported"]["train_macs"] < table1["upper"]["train_macs"]
    total = costs["totals"]
    # thresholds shares one run with table1 (theta 2.5) and one with fig3 (r 0.6, eta 0.3, theta 1.5); the
    # ablation adds 3 runs (3 are Figure 3's), the criteria 2 for each criterion but l1 (Figure 3's)
    assert total["upper"]["runs"] == 3 * (8 + 4 + 3 - 2 + 3 + 2 * 4) * 10
    ablation = rows[("resnet110", "ablation")]
    assert ablation["upper"]["runs"] == 6 * 10 and rows[("resnet110", "criteria")]["upper"]["runs"] == 10 * 10
    assert total["reported"]["train_macs"] <= total["upper"]["train_macs"]
    text = format_costs(costs, 4.0, 8.0)
    assert "| **all** |" in text and "resnet152" in text


def test_a_model_outside_the_papers_families_is_costed_from_a_really_pruned_copy():
    config = _config("smoke.yaml")
    config.update(models=["python:custom_cnn:tiny_net"], paper_role={})
    config["experiments"]["table1"]["ratios"] = {"default": 0.4}
    costs = sweep_costs(config)
    fig3 = {r["part"]: r for r in costs["rows"]}["fig3"]
    assert fig3["upper"]["finetunes"] == fig3["upper"]["runs"] * 2  # its two steps, each fine-tuned at most once
    model = build_model("python:custom_cnn:tiny_net")
    counted = step_macs("python:custom_cnn:tiny_net", 0.4, 2)
    for step, (block, _) in enumerate(prunable_blocks(model), start=1):
        prune_block(model, block, 0.4)
        assert counted[step] == layer_macs(model)


def test_cost_command(tmp_path, capsys):
    assert main(["cost", "--configfile", str(ROOT / "config" / "smoke.yaml"), "--json", str(tmp_path / "c.json")]) == 0
    assert "GPU h" in capsys.readouterr().out and (tmp_path / "c.json").exists()
    assert main(["cost", "--configfile", str(ROOT / "config" / "config.yaml"), "--train-tmacs", "0"]) == 2
    assert "--train-tmacs" in capsys.readouterr().err


def _macs_from(model, block: str) -> int:
    """Forward MACs per image of ``model.forward_span`` from the input of ``block`` (hooks, as layer_macs)."""
    import math

    import torch

    ran = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            ran.append(output[0].numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size))
        else:
            ran.append(output[0].numel() * module.in_features)

    model.eval()
    with torch.no_grad():
        h = model.forward_span(torch.zeros(1, 3, 32, 32), None, block)
        handles = [m.register_forward_hook(hook) for m in model.modules()
                   if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        model.forward_span(h, block)
    for handle in handles:
        handle.remove()
    return sum(ran)


@pytest.mark.parametrize("name, ratio", [("resnet20", 0.4), ("mobilenetv2_w025", 0.6)])
def test_a_pass_after_a_prune_costs_the_macs_from_the_pruned_block_on(name, ratio):
    from icepick.evaluate import macs_before

    model = build_model(name)
    counted = step_macs(name, ratio, 3)
    for step, (block, _) in enumerate(prunable_blocks(model)[:3], start=1):
        prune_block(model, block, ratio)
        from_block = sum(counted[step].values()) - macs_before(counted[step], block)
        assert from_block == _macs_from(model, block) < sum(counted[step].values()), f"step {step}"


def test_evaluation_is_counted_with_the_cache_unless_it_is_off():
    from icepick import cost, grid
    from icepick.evaluate import macs_before

    config = _config("smoke.yaml")
    assert config["eval_cache"] is True
    cached, full = sweep_costs(config), sweep_costs({**config, "eval_cache": False})
    for part in ("upper", "reported"):
        assert cached["totals"][part]["train_macs"] == full["totals"][part]["train_macs"]
        assert cached["totals"][part]["eval_macs"] < full["totals"][part]["eval_macs"]
    # one baseline run, deciding on the test split: each pass after a prune skips the layers before the block
    model = config["models"][0]
    spec = next(s for s in grid.group_runs(config, "fig3", model) if s.method == "baseline")
    setup = cost._setup(config, "worst")
    steps = cost._n_steps(model, setup)
    blocks = [name for name, _ in prunable_blocks(build_model(model))][:steps]
    pruned = step_macs(model, spec.ratio, steps)[1:]
    saved = sum(setup.n_test * macs_before(macs, block) for block, macs in zip(blocks, pruned))
    with_cache, _ = cost.run_work(spec, setup)
    without, _ = cost.run_work(spec, cost._setup({**config, "eval_cache": False}, "worst"))
    assert without.eval_macs - with_cache.eval_macs == saved > 0


def test_the_one_shot_baseline_trains_as_much_as_the_baseline_on_the_smallest_model():
    """One epoch per block, all of them on the fully pruned model: the baseline's training
    images, each cheaper than (or as cheap as) the baseline's."""
    from icepick.cost import _setup, run_work
    from icepick.grid import RunSpec

    setup = _setup(_config("smoke.yaml"), "worst")
    base, _ = run_work(RunSpec("resnet20", "baseline", "fixed", 0.3, 0.0, 0.0), setup)
    one, reported = run_work(RunSpec("resnet20", "oneshot", "fixed", 0.3, 0.0, 0.0), setup)
    assert one == reported and one.finetunes == 1
    assert 0 < one.train_macs <= base.train_macs


# ---------------------------------------------------------------- any configuration, any data


def _overlay(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


SMALL_OVERLAY = """\
models: [resnet20]
seeds: [0]
experiments:
  fig3: {ratios: [0.4], etas: [0, 0.3]}
  table1: {ratios: {default: 0.6}, etas: [0.3]}
  thresholds: {thetas: [2.5]}
  ablation: {arms: []}
  criteria: {criteria: []}
"""


def test_an_overlay_is_laid_over_the_papers_configuration_as_snakemake_does(tmp_path, capsys):
    from icepick.cost import workflow_config

    small = _overlay(tmp_path, "small.yaml", SMALL_OVERLAY)
    later = _overlay(tmp_path, "later.yaml", "seeds: [0, 1]\nexperiments: {fig3: {etas: [0.7]}}\n")
    config = workflow_config([small, later])
    paper = _config("config.yaml")
    assert config["models"] == ["resnet20"] and config["seeds"] == [0, 1]  # the later file wins
    assert config["experiments"]["fig3"] == {**paper["experiments"]["fig3"], "ratios": [0.4], "etas": [0.7]}
    assert config["experiments"]["table1"]["ratios"] == {**paper["experiments"]["table1"]["ratios"], "default": 0.6}
    assert config["data"].items() >= paper["data"].items() and config["finetune"].items() >= paper["finetune"].items()
    assert config["data"]["size"] is None  # a key config.yaml leaves out: the schema's default
    assert main(["cost", "--configfile", str(small), "--configfile", str(later), "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "resnet20" in out and "resnet110" not in out and "2 seeds" in out
    assert "Data: cifar10, 50,000 training / 10,000 test images of 3x32x32, 10 classes." in out


def test_keys_no_file_gives_take_the_schemas_defaults(tmp_path):
    from icepick.cost import workflow_config

    bare = _overlay(tmp_path, "bare.yaml", "models: [resnet20]\n")
    config = workflow_config([], base=bare)
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())["properties"]
    assert config["finetune"]["early_halt"] == schema["finetune"]["properties"]["early_halt"]["default"]
    assert config["data"]["synthetic_train"] == 4000 and config["experiments"]["fig3"]["etas"] == [0, 0.3, 0.7]
    assert config["models"] == ["resnet20"] and config["seeds"] == list(range(10))


def test_a_misspelt_key_is_one_line_naming_it(tmp_path, capsys):
    bad = _overlay(tmp_path, "bad.yaml", "finetune: {batchsize: 64}\n")
    assert main(["cost", "--configfile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("icepick cost: error: finetune.batchsize: not a key; did you mean finetune.batch_size?")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("data, facts", [
    ({"source": "cifar100"}, (50_000, 10_000, 100, (3, 32, 32))),
    ({"source": "fashion-mnist"}, (60_000, 10_000, 10, (1, 28, 28))),
    ({"source": "mnist", "size": 32, "channels": 3}, (60_000, 10_000, 10, (3, 32, 32))),
    ({"source": "synthetic", "synthetic_train": 192, "synthetic_test": 48}, (192, 48, 10, (3, 32, 32))),
])
def test_the_images_are_the_data_sets_own(data, facts):
    from icepick.cost import data_facts

    got = data_facts({"root": "data/x", **data})
    assert (got.n_train, got.n_test, got.num_classes, got.image_shape) == facts


@pytest.mark.slow
def test_step_macs_at_the_datas_image_shape_match_the_really_pruned_model():
    for name in ("resnet20", "mobilenetv2_w025"):
        model = build_model(name, 7, input_shape=(1, 48, 40))
        counted = step_macs(name, 0.4, 2, 7, (1, 48, 40))
        assert counted[0] == layer_macs(model)
        for step, (block, _) in enumerate(prunable_blocks(model)[:2], start=1):
            prune_block(model, block, 0.4)
            assert counted[step] == layer_macs(model), f"{name} step {step}"


def _image_folder(root, size: int):
    """Two classes of ten random RGB images of size x size."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(size)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def _folder_config(tmp_path, size: int) -> str:
    from icepick.data import import_dataset

    images = _image_folder(tmp_path / f"images{size}", size)
    import_dataset("imagefolder", tmp_path / f"data{size}", images)
    return SMALL_OVERLAY + f"data: {{source: imagefolder, path: {images}, root: {tmp_path / f'data{size}'}}}\n"


def test_an_image_folder_is_costed_at_its_own_images_and_size(tmp_path, capsys):
    from icepick.cost import sweep_costs, workflow_config

    costs = {}
    for size in (32, 64):
        overlay = _overlay(tmp_path, f"folder{size}.yaml", _folder_config(tmp_path, size))
        costs[size] = sweep_costs(workflow_config([overlay]))
        assert costs[size]["data"] == {"source": "imagefolder", "n_train": 16, "n_test": 4, "n_val": 0,
                                       "num_classes": 2, "image_shape": [3, size, size]}
    assert main(["cost", "--configfile", str(tmp_path / "folder64.yaml")]) == 0
    assert "Data: imagefolder, 16 training / 4 test images of 3x64x64, 2 classes." in capsys.readouterr().out
    small, large = costs[32], costs[64]
    per_image = large["macs_per_image"]["resnet20"]["forward"] / small["macs_per_image"]["resnet20"]["forward"]
    assert per_image == pytest.approx(4.0, rel=1e-4)  # every convolution 4x; the classifier (64 x 2) alike
    for part in ("upper", "reported"):
        for work in ("train_macs", "eval_macs"):
            assert large["totals"][part][work] == pytest.approx(4.0 * small["totals"][part][work], rel=1e-3)
    pretrain = {r["part"]: r for r in small["rows"]}["pretrain"]["upper"]["train_macs"]
    config = workflow_config([tmp_path / "folder32.yaml"])
    from icepick.cost import _train_per_image, step_macs as counted

    unpruned = counted("resnet20", 0.5, 0, 2, (3, 32, 32))[0]
    assert pretrain == config["pretrain"]["epochs"] * 16 * _train_per_image(unpruned, set())


@pytest.mark.parametrize("source, path", [("imagefolder", "my_images/"), ("digits", None)])
def test_data_not_yet_imported_is_one_line_saying_how_to_import_it(tmp_path, capsys, source, path):
    root = tmp_path / "nothing-here"
    overlay = _overlay(tmp_path, "mine.yaml", SMALL_OVERLAY + f"data: {{source: {source}, path: {path or 'null'}, "
                                                               f"root: {root}}}\n")
    assert main(["cost", "--configfile", str(overlay)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("icepick cost: error: data.root: ")
    command = f"python -m icepick data import --source {source}" + (f" --path {path}" if path else "") + f" --out {root}"
    assert f"import it first: {command}" in err
