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
