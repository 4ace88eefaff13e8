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
    # thresholds shares one run with table1 (theta 2.5) and one with fig3 (r 0.6, eta 0.3, theta 1.5)
    assert total["upper"]["runs"] == 3 * (8 + 4 + 3 - 2) * 10
    assert total["reported"]["train_macs"] <= total["upper"]["train_macs"]
    text = format_costs(costs, 4.0, 8.0)
    assert "| **all** |" in text and "resnet152" in text


def test_cost_command(tmp_path, capsys):
    assert main(["cost", "--configfile", str(ROOT / "config" / "smoke.yaml"), "--json", str(tmp_path / "c.json")]) == 0
    assert "GPU h" in capsys.readouterr().out and (tmp_path / "c.json").exists()
    assert main(["cost", "--configfile", str(ROOT / "config" / "config.yaml"), "--train-tmacs", "0"]) == 2
    assert "--train-tmacs" in capsys.readouterr().err
