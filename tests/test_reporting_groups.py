"""The ablation and criteria groups' tables, figures and claims, on fake run records
(tests/test_reporting.py's, whose numbers are made up so that the outcome is known)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pytest
from test_reporting import MODELS, ROLES, SEEDS, T1_RATIO, _latex_body_rows, write_run

from icepick import reporting
from icepick.commands import report as report_cmd

CRITERIA = ("l1", "random")


def group_configs(group: str, model: str) -> list[tuple]:
    """(method, lr, ratio, eta, theta, criterion) of the fake ablation and criteria groups,
    as icepick.grid makes them (ICE-Pick at eta 0.3, theta 1.5, the Table 1 ratio)."""
    r = T1_RATIO[model]
    if group == "ablation":
        return [("icepick", "icepick", r, 0.3, 1.5, "l1"), ("icepick", "icepick", r, 0.3, -100.0, "l1"),
                ("icepick", "icepick", r, 0.0, 1.5, "l1"), ("icepick", "fixed", r, 0.3, 1.5, "l1"),
                ("baseline", "fixed", r, 0.0, 0.0, "l1"), ("oneshot", "fixed", r, 0.0, 0.0, "l1")]
    return [cfg for c in CRITERIA for cfg in (("icepick", "icepick", r, 0.3, 1.5, c), ("baseline", "fixed", r, 0.0, 0.0, c))]


@pytest.fixture(scope="module")
def groups_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    out = root / "summary"
    for group in ("ablation", "criteria"):
        folders = [write_run(root, m, *cfg[:5], seed, criterion=cfg[5])
                   for m in MODELS for cfg in group_configs(group, m) for seed in SEEDS]
        runs, steps = reporting.aggregate_runs([f / "summary.json" for f in folders], [f / "steps.csv" for f in folders],
                                               group=group)
        reporting.write_table(out / group / "runs.csv", runs)
        reporting.write_table(out / group / "steps.csv", steps)
    runs, steps = reporting.merge_aggregates([pd.read_csv(out / g / "runs.csv") for g in ("ablation", "criteria")],
                                             [pd.read_csv(out / g / "steps.csv") for g in ("ablation", "criteria")])
    reporting.write_table(out / "runs.csv", runs)
    return out


def test_a_run_under_another_criterion_is_its_own_experiment(groups_dir):
    runs = pd.read_csv(groups_dir / "runs.csv")
    names = set(runs.loc[runs["model"] == "resnet110", "experiment"])
    assert {"icepick-icepick-r0.6-eta0.3-theta1.5", "icepick-icepick-r0.6-eta0.3-theta1.5-random",
            "baseline-fixed-r0.6-eta0-theta0-random", "oneshot-fixed-r0.6-eta0-theta0",
            "icepick-icepick-r0.6-eta0.3-theta-100"} <= names
    # ICE-Pick's and the baseline's L1 runs are shared by the two groups: each once
    shared = runs[(runs["model"] == "resnet110") & (runs["experiment"] == "baseline-fixed-r0.6-eta0-theta0")]
    assert len(shared) == len(SEEDS) and set(shared["group"]) == {"ablation;criteria"}
    assert len(runs) == len(MODELS) * len(SEEDS) * (6 + 4 - 2)


def test_the_ablation_table_has_every_arm_of_every_model(groups_dir):
    table = reporting.ablation_table(pd.read_csv(groups_dir / "ablation/runs.csv"), ROLES, MODELS)
    assert len(table) == len(MODELS) * 6
    assert list(table.loc[table["model"] == "resnet110", "arm"]) == list(reporting.tables.ARM_LABELS)
    row = table.set_index(["model", "arm"]).loc[("resnet110", "oneshot")]
    assert row["n_ft_mean"] == 1 and row["acc_vs_icepick"] == pytest.approx(-1.5 - 0.3 + 0.3)
    ice = table.set_index(["model", "arm"]).loc[("resnet110", "icepick")]
    assert ice["seconds_vs_icepick"] == 1.0 and ice["macs_per_ft_image"] == pytest.approx(1000 * 0.31 / 200)
    tex = reporting.ablation_latex(table)
    assert len(_latex_body_rows(tex)) == len(table) and "one-shot" in tex


def test_the_criteria_table_puts_the_papers_criterion_first(groups_dir):
    table = reporting.criteria_table(pd.read_csv(groups_dir / "criteria/runs.csv"), ROLES, MODELS)
    assert len(table) == len(MODELS) * len(CRITERIA) * 2
    assert list(table.loc[table["model"] == "resnet20", "criterion"].drop_duplicates()) == ["l1", "random"]
    assert set(table["method"]) == {"icepick", "baseline"}
    tex = reporting.criteria_latex(table)
    assert len(_latex_body_rows(tex)) == len(MODELS) * len(CRITERIA)


def test_the_ablation_claims_follow_the_fake_numbers(groups_dir):
    table = reporting.claims(pd.read_csv(groups_dir / "runs.csv"), models=MODELS).set_index("id")
    for model in MODELS:
        # fine-tuning at every step costs 6x the time at the same accuracy
        assert table.loc[f"ablation-threshold-time-{model}", "holds"] == "yes"
        assert table.loc[f"ablation-threshold-accuracy-{model}", "holds"] == "yes"
        # 1000 * 0.31 / 200 training MACs per fine-tuned image with eta 0.3, 1000 * 0.4 / 200 without
        assert table.loc[f"ablation-freezing-cost-{model}", "holds"] == "yes"
        # the one-shot baseline ends 1.5 points below the baseline
        assert table.loc[f"ablation-oneshot-{model}", "holds"] == "yes"
        assert table.loc[f"ablation-oneshot-{model}", "scale"] == "no"
    # Eq. 1: 2 fine-tunings per run against 3, 0.3 points apart
    assert table.loc["ablation-eq1-fewer-ft", "holds"] == "yes" and table.loc["ablation-eq1-comparable", "holds"] == "yes"
    assert "theta = 1.5%, eta = 0.3" in table.loc["ablation-eq1-fewer-ft", "claim"]


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="icepick")
    report_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


@pytest.mark.slow
def test_the_ablation_and_criteria_figures_and_tables_are_written(groups_dir, tmp_path):
    naming = ["--models", *MODELS, "--paper-role", "resnet20=resnet110"]
    for group in ("ablation", "criteria"):
        runs = str(groups_dir / group / "runs.csv")
        assert _main(["figure", group, "--runs", runs, "--out", str(tmp_path / f"fig_{group}.pdf"),
                      "--png", str(tmp_path / f"fig_{group}.png"), *naming]) == 0
        assert _main(["table", group, "--runs", runs, "--out", str(tmp_path / f"table_{group}.tex"),
                      "--csv-out", str(tmp_path / f"table_{group}.csv"), *naming]) == 0
        assert (tmp_path / f"fig_{group}.pdf").read_bytes()[:4] == b"%PDF"
        assert (tmp_path / f"fig_{group}.png").read_bytes()[:4] == b"\x89PNG"
        assert len(pd.read_csv(tmp_path / f"table_{group}.csv")) > 0
