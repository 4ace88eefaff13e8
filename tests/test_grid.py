"""The experiment grid and the path scheme (icepick.grid): the paper's runs, torch-free."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from icepick import grid
from icepick.config import ConfigError
from icepick.grid import GROUPS, RunSpec, group_run_files, group_runs, model_runs, trace_path, trace_ratios

ROOT = Path(__file__).resolve().parents[1]


def _config(name: str = "config.yaml") -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


def test_the_grid_module_imports_neither_torch_nor_pandas():
    code = "import icepick.grid, sys; assert 'torch' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_its_model_names_are_the_registrys():
    from icepick.models import model_names

    assert list(grid.MODEL_NAMES) == model_names()


def test_the_grid_is_the_papers():
    """Figure 3: r in {0.4, 0.6} x eta in {0, 0.3, 0.7} + the baseline at each r; Table 1: eta x lr
    at one r; thresholds: three thetas at the Table 1 r, two of them shared with other groups."""
    config = _config()
    sizes = {g: len(group_runs(config, g, "resnet110")) for g in GROUPS}
    assert sizes == {"fig3": 8, "table1": 4, "thresholds": 3}
    assert {r.ratio for r in group_runs(config, "table1", "mobilenetv2")} == {0.4}
    assert len(model_runs(config, "resnet110")) == 13  # theta 1.5 and 2.5 at r = 0.6 are Fig. 3's and Table 1's
    assert RunSpec("resnet110", "baseline", "fixed", 0.4, 0.0, 0.0) in group_runs(config, "fig3", "resnet110")


def test_a_trace_per_ratio_unless_the_trace_ratio_is_fixed():
    config = _config()
    assert trace_ratios(config, "resnet110") == [0.4, 0.6] and trace_ratios(config, "mobilenetv2") == [0.4, 0.6]
    assert trace_ratios({**config, "trace_ratio": 0.4}, "resnet110") == [0.4]
    assert trace_path("resnet110", "0.60", 3) == "results/resnet110/trace/r0.6/seed3.json"
    assert trace_path("resnet110", 0.6, 3, trace_ratio=0.4) == "results/resnet110/trace/r0.4/seed3.json"


def test_every_setting_of_a_run_is_in_its_path():
    config = {**_config(), "models": ["resnet110"], "seeds": [0, 1]}
    files = group_run_files(config, "table1", "summary.json")
    assert len(files) == 4 * 2
    assert "results/resnet110/runs/icepick-fixed-r0.6-eta0.3-theta2.5/seed1/summary.json" in files


def test_a_model_without_a_table1_ratio_takes_its_paper_roles_or_the_default():
    config = {"experiments": {"table1": {"ratios": {"resnet110": 0.6, "mobilenetv2": 0.4}}},
              "paper_role": {"mobilenetv2_w025": "mobilenetv2"}}
    assert grid.table1_ratio(config, "resnet110") == 0.6
    assert grid.table1_ratio(config, "mobilenetv2_w025") == 0.4  # a stand-in: the paper model's ratio
    with pytest.raises(ConfigError, match="no ratio for model resnet56; add one for it, a 'default' entry"):
        grid.table1_ratio(config, "resnet56")
    config["experiments"]["table1"]["ratios"]["default"] = 0.5
    assert grid.table1_ratio(config, "resnet56") == 0.5
