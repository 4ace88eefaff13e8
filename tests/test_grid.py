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
    assert sizes == {"fig3": 8, "table1": 4, "thresholds": 3, "ablation": 6, "criteria": 2 * 5}
    assert {r.ratio for r in group_runs(config, "table1", "mobilenetv2")} == {0.4}
    paper = model_runs(config, "resnet110", ("fig3", "table1", "thresholds"))
    assert len(paper) == 13  # theta 1.5 and 2.5 at r = 0.6 are Fig. 3's and Table 1's
    # the ablation adds 3 runs (no threshold, fixed lr, one-shot), the criteria 2 per criterion but l1
    assert len(model_runs(config, "resnet110")) == 13 + 3 + 2 * 4
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


def test_its_criterion_names_are_the_librarys():
    from icepick.algorithm import RunConfig
    from icepick.criteria import CRITERIA

    assert grid.CRITERION_NAMES == CRITERIA and RunConfig().criterion == grid.DEFAULT_CRITERION


def test_the_ablation_removes_one_part_at_a_time_and_reuses_figure_3s_runs():
    config = _config()
    runs = group_runs(config, "ablation", "resnet110")
    ice = RunSpec("resnet110", "icepick", "icepick", 0.6, 0.3, 1.5)
    assert runs == [
        ice,
        RunSpec("resnet110", "icepick", "icepick", 0.6, 0.3, grid.NO_THRESHOLD),  # a fine-tuning at every step
        RunSpec("resnet110", "icepick", "icepick", 0.6, 0.0, 1.5),  # nothing frozen
        RunSpec("resnet110", "icepick", "fixed", 0.6, 0.3, 1.5),  # no Eq. 1
        RunSpec("resnet110", "baseline", "fixed", 0.6, 0.0, 0.0),
        RunSpec("resnet110", "oneshot", "fixed", 0.6, 0.0, 0.0),
    ]
    fig3 = set(group_runs(config, "fig3", "resnet110"))
    assert {ice, runs[2], runs[4]} <= fig3  # the same specs, so the same paths: one job each
    assert [grid.ablation_arm(r.method, r.lr_policy, r.eta, r.theta) for r in runs] == ["icepick", *grid.ABLATION_ARMS]
    assert grid.run_path(runs[1], 0, "summary.json") == (
        "results/resnet110/runs/icepick-icepick-r0.6-eta0.3-theta-100/seed0/summary.json")
    assert grid.run_path(runs[5], 0, "steps.csv") == "results/resnet110/runs/oneshot-fixed-r0.6-eta0-theta0/seed0/steps.csv"


def test_a_criterion_other_than_l1_ends_the_path_and_l1_runs_keep_theirs():
    config = _config()
    runs = group_runs(config, "criteria", "mobilenetv2")
    assert [r.criterion for r in runs] == [c for c in ("l1", "l2", "random", "fpgm", "taylor") for _ in range(2)]
    l1 = runs[:2]
    assert set(l1) <= set(group_runs(config, "fig3", "mobilenetv2"))  # reused, not rerun
    assert grid.run_path(l1[0], 3, "summary.json") == (
        "results/mobilenetv2/runs/icepick-icepick-r0.4-eta0.3-theta1.5/seed3/summary.json")
    assert grid.run_path(runs[3], 3, "summary.json") == (
        "results/mobilenetv2/runs/baseline-fixed-r0.4-eta0-theta0-l2/seed3/summary.json")
    paths = group_run_files(config, "criteria", "summary.json")
    assert len(paths) == len(set(paths)) == 3 * 10 * 10  # models x seeds x runs: none collide


@pytest.mark.parametrize("name", ["mini.yaml", "test.yaml"])
def test_groups_configured_empty_run_nothing(name):
    config = _config(name)
    assert grid.active_groups(config) == ["fig3", "table1", "thresholds"]
    for model in config["models"]:
        assert model_runs(config, model) == model_runs(config, model, ("fig3", "table1", "thresholds"))


def test_the_smoke_runs_both_groups_with_one_criterion_besides_l1():
    config = _config("smoke.yaml")
    assert grid.active_groups(config) == list(GROUPS)
    new = {spec for m in config["models"] for spec in model_runs(config, m)} - {
        spec for m in config["models"] for spec in model_runs(config, m, ("fig3", "table1", "thresholds"))}
    assert len(new) == 3 * (3 + 2)  # per model: no threshold, fixed lr, one-shot; ICE-Pick and baseline under taylor


def test_unknown_arms_and_criteria_are_named():
    config = _config()
    bad = {**config, "experiments": {**config["experiments"], "ablation": {"arms": ["no_kd"], "theta": 1.5, "eta": 0.3}}}
    with pytest.raises(ConfigError, match="experiments.ablation.arms: unknown arm"):
        group_runs(bad, "ablation", "resnet110")
    bad = {**config, "experiments": {**config["experiments"], "criteria": {"criteria": ["l3"], "theta": 1.5, "eta": 0.3}}}
    with pytest.raises(ConfigError, match="experiments.criteria.criteria: unknown criterion"):
        group_runs(bad, "criteria", "resnet110")


def test_the_schema_lists_the_grids_arms_and_criteria():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    groups = schema["properties"]["experiments"]["properties"]
    assert tuple(groups["ablation"]["properties"]["arms"]["items"]["enum"]) == grid.ABLATION_ARMS
    assert tuple(groups["criteria"]["properties"]["criteria"]["items"]["enum"]) == grid.CRITERION_NAMES
    paper = _config()["experiments"]
    for group in ("ablation", "criteria"):  # the schema's defaults are the paper configuration's values
        assert {k: v["default"] for k, v in groups[group]["properties"].items()} == paper[group]


# ---------------------------------------------------------------- folder names of models


def test_a_model_spec_gets_a_folder_name_without_colons_and_registry_names_keep_theirs():
    assert grid.model_slug("python:my_nets:make_net") == "python-my_nets-make_net"
    assert grid.model_slug("torchvision:resnet18") == "torchvision-resnet18"
    assert grid.model_slug("python:pkg.nets:make") == "python-pkg.nets-make"
    for name in grid.MODEL_NAMES:  # existing results keep their paths
        assert grid.model_slug(name) == name
    assert grid.model_slug("python-my_nets-make_net") == "python-my_nets-make_net"  # a slug is its own slug
    assert grid.model_slug("{model}") == "{model}"  # the workflow's wildcard pattern passes through


def test_every_path_of_a_spec_model_holds_its_folder_name():
    spec = "python:my_nets:make_net"
    assert grid.pretrained_path(spec) == "results/python-my_nets-make_net/pretrained.pt"
    assert grid.pretrain_summary_path(spec) == "results/python-my_nets-make_net/pretrain.json"
    assert grid.pretrain_epochs_path(spec) == "results/python-my_nets-make_net/pretrain_epochs.csv"
    assert grid.weight_shift_path("torchvision:resnet18") == "results/torchvision-resnet18/weight_shift.csv"
    assert trace_path(spec, 0.4, 1) == "results/python-my_nets-make_net/trace/r0.4/seed1.json"
    run = RunSpec(spec, "icepick", "icepick", 0.4, 0.3, 1.5)
    assert run.wildcards(0)["model"] == "python-my_nets-make_net"
    assert grid.run_path(run, 0, "summary.json") == (
        "results/python-my_nets-make_net/runs/icepick-icepick-r0.4-eta0.3-theta1.5/seed0/summary.json")
    config = {**_config("test.yaml"), "models": [spec, "torchvision:resnet18"], "experiments": {
        **_config("test.yaml")["experiments"], "table1": {**_config("test.yaml")["experiments"]["table1"],
                                                          "ratios": {"default": 0.4}}}}
    paths = [p for g in GROUPS for p in group_run_files(config, g, "steps.csv")]
    assert paths and not any(":" in p for p in paths)


def test_folder_names_map_back_to_the_configured_models_and_a_shared_folder_is_one_line():
    models = ["resnet20", "python:my_nets:make_net", "torchvision:resnet18"]
    assert grid.model_slugs(models) == {"resnet20": "resnet20", "python-my_nets-make_net": "python:my_nets:make_net",
                                        "torchvision-resnet18": "torchvision:resnet18"}
    assert grid.model_spec("python-my_nets-make_net", models) == "python:my_nets:make_net"
    with pytest.raises(ConfigError, match="no configured model has the folder name python-x-y"):
        grid.model_spec("python-x-y", models)
    # one folder on macOS and Windows, whose file systems ignore case
    with pytest.raises(ConfigError) as err:
        grid.model_slugs(["python:my_nets:Net", "python:my_nets:net"])
    assert str(err.value) == (
        "models: python:my_nets:Net and python:my_nets:net would share the folder results/python-my_nets-net/ "
        "(folder names hold no colon, and ignore case on macOS and Windows); keep one of them, or give one of "
        "them another name")


def test_the_workflow_config_checks_import_neither_torch_nor_pandas():
    code = "import icepick.workflow_config, sys; assert 'torch' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
