"""ICE-Pick against the iterative baseline on one model (``icepick compare``, ``icepick.compare``):
both runs' records, a table equal to their summaries, savings that follow from it, the figure,
no writing over a comparison without --force, and a killed comparison that resumes."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

import icepick
import icepick.api
from icepick.cli import main
from icepick.config import ConfigError
from icepick.reporting.compare import (
    COMPARISON_COLUMNS,
    comparison_curves,
    comparison_savings,
    comparison_table,
    format_comparison,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--max-steps", "2", "--max-batches", "2", "--batch-size", "32", "--device", "cpu", "--threads", "1",
         "--no-progress"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Generated data (256 / 128 images) and a resnet20 trained on it for a few batches."""
    from icepick.data import load_experiment_data, synth_cifar10, train_batches
    from icepick.model_files import save_model
    from icepick.models import build_model

    root = tmp_path_factory.mktemp("compare")
    synth_cifar10(root / "data", n_train=256, n_test=128, seed=0, difficulty="easy")
    data = load_experiment_data(root / "data", torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model("resnet20")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for x, y in train_batches(data.train, 32, seed=0):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    save_model(model, root / "pre.pt")
    torch.save(model.state_dict(), root / "weights.pt")  # your own weights, as a state dict
    return root / "pre.pt", root / "data"


def _cli(pretrained, out, *extra: str, weights: bool = False) -> int:
    pre, data = pretrained
    model = ["--pretrained", str(pre.with_name("weights.pt")), "--model", "resnet20"] if weights else \
        ["--pretrained", str(pre)]
    return main(["compare", *model, "--data", str(data), "--out", str(out), *SMALL, *extra])


def _check_records(out, trace: bool) -> dict:
    """The comparison in ``out`` agrees with the runs' own records; returns comparison.json."""
    for method in ("icepick", "baseline"):
        for name in ("steps.csv", "summary.json", "pruned.pt"):
            assert (out / method / name).is_file(), f"{method}/{name}"
        assert not (out / method / "summary.json.state.pt").exists()
    assert (out / "trace.json").is_file() == trace
    assert (out / "comparison.png").stat().st_size > 0 and (out / "comparison.pdf").stat().st_size > 0
    assert not (out / icepick.api.COMPARISON_STATE).exists()
    record = json.loads((out / "comparison.json").read_text())
    table = pd.read_csv(out / "comparison.csv")
    assert list(table.columns) == COMPARISON_COLUMNS and list(table["method"]) == ["icepick", "baseline"]
    for row in table.to_dict("records"):
        summary = json.loads((out / row["method"] / "summary.json").read_text())
        for col in ("acc_orig", "final_acc", "n_steps", "n_finetunes", "total_train_macs",
                    "total_train_macs_with_trace", "total_seconds", "total_seconds_with_trace"):
            assert row[col] == pytest.approx(summary[col], rel=1e-12), col
    ice, base = (table.set_index("method").loc[m] for m in ("icepick", "baseline"))
    savings = record["savings"]
    assert savings["saved_macs"] == pytest.approx(100 * (1 - ice["total_train_macs"] / base["total_train_macs"]))
    assert savings["saved_macs_with_trace"] == pytest.approx(
        100 * (1 - ice["total_train_macs_with_trace"] / base["total_train_macs"]))
    assert savings["saved_wall"] == pytest.approx(100 * (1 - ice["total_seconds"] / base["total_seconds"]))
    assert savings["saved_wall_with_trace"] == pytest.approx(
        100 * (1 - ice["total_seconds_with_trace"] / base["total_seconds"]))
    assert savings["acc_diff"] == pytest.approx(ice["final_acc"] - base["final_acc"])
    base_steps = pd.read_csv(out / "baseline" / "steps.csv")
    assert base_steps["finetuned"].all() and base["n_finetunes"] == base["n_steps"] == 2  # at every step
    assert (base_steps["lr"] == record["settings"]["baseline"]["base"]).all()
    assert record["settings"]["baseline"]["method"] == "baseline" and record["settings"]["baseline"]["eta"] == 0
    assert record["data"]["source"] == "synthetic" and record["provenance"]["data"] == record["data"]
    return record


@pytest.mark.slow
def test_compare_runs_both_methods_writes_the_answer_and_needs_force_to_write_over_it(pretrained, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert _cli(pretrained, out, "--eta", "0.3") == 0
    printed = capsys.readouterr().out
    assert "ICE-Pick" in printed and "baseline" in printed and "unpruned" in printed and "saves" in printed
    record = _check_records(out, trace=True)
    trace = json.loads((out / "trace.json").read_text())
    ice_summary = json.loads((out / "icepick" / "summary.json").read_text())
    assert ice_summary["trace_train_macs"] == trace["train_macs"] > 0 and record["trace"] == "trace.json"
    assert ice_summary["total_train_macs_with_trace"] == ice_summary["total_train_macs"] + trace["train_macs"]

    before = (out / "comparison.json").read_bytes()
    assert _cli(pretrained, out, "--eta", "0.3") == 2
    err = capsys.readouterr().err
    assert "already holds a comparison" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert (out / "comparison.json").read_bytes() == before  # nothing written over
    assert _cli(pretrained, out, "--max-steps", "1", "--force") == 0
    assert not (out / "trace.json").exists()  # eta 0 now: the old trace went with the old comparison
    assert json.loads((out / "comparison.json").read_text())["table"][1]["n_steps"] == 1


@pytest.mark.slow
def test_a_killed_comparison_resumes_without_running_a_finished_run_again(pretrained, tmp_path, monkeypatch, capsys):
    real = icepick.api.run_experiment
    calls = []

    def killed_in_the_baseline(cfg, *args, **kwargs):
        calls.append(cfg.method)
        if cfg.method == "baseline" and calls.count("baseline") == 1:
            raise KeyboardInterrupt  # as if the process were killed while the baseline ran
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(icepick.api, "run_experiment", killed_in_the_baseline)
    out = tmp_path / "cmp"
    with pytest.raises(KeyboardInterrupt):
        _cli(pretrained, out, weights=True)
    assert (out / icepick.api.COMPARISON_STATE).is_file() and not (out / "comparison.json").exists()
    converted = (out / "pretrained.converted.pt").read_bytes()
    # another comparison's settings are refused rather than written over
    assert _cli(pretrained, out, "--theta", "2.5", weights=True) == 2
    assert "unfinished comparison with other settings (theta)" in capsys.readouterr().err
    assert _cli(pretrained, out, weights=True) == 0
    assert calls == ["icepick", "baseline", "baseline"]  # ICE-Pick's finished run was read back
    assert (out / "pretrained.converted.pt").read_bytes() == converted  # your weights: the same model file
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    _check_records(out, trace=False)


@pytest.mark.slow
def test_the_api_compares_on_tensors_through_iterative_prune(pretrained, tmp_path):
    from icepick.data import load_split
    from icepick.model_files import load_model

    pre, data = pretrained
    model, _ = load_model(pre)
    train, test = load_split(data, "train", "cpu"), load_split(data, "test", "cpu")
    settings = dict(device="cpu", max_steps=2, max_batches=2, batch_size=32, eta=0.3, theta=1.5)
    result = icepick.compare(model, (train.images, train.labels), (test.images, test.labels),
                             out_dir=tmp_path / "cmp", **settings)
    assert isinstance(result, icepick.Comparison) and result.figure == tmp_path / "cmp" / "comparison.png"
    assert result.figure.is_file() and (tmp_path / "cmp" / "comparison.pdf").is_file()
    assert result.baseline.steps["finetuned"].all() and result.baseline.summary["n_finetunes"] == 2
    assert result.icepick.trace is not None and result.baseline.trace is None
    for method, run in (("icepick", result.icepick), ("baseline", result.baseline)):
        row = result.table.set_index("method").loc[method]
        assert row["final_acc"] == run.summary["final_acc"]
        assert row["total_train_macs_with_trace"] == run.summary["total_train_macs_with_trace"]
        assert (tmp_path / "cmp" / method / "summary.json").is_file()
    assert result.savings == comparison_savings(result.table)
    assert "ICE-Pick saves" in str(result)
    with pytest.raises(ConfigError, match="already holds a comparison"):
        icepick.compare(model, (train.images, train.labels), (test.images, test.labels),
                        out_dir=tmp_path / "cmp", **settings)


def test_a_comparison_runs_the_papers_baseline_beside_icepick():
    ice, base = icepick.api.comparison_configs({"ratio": 0.6, "eta": 0.3, "lr_shape": "one_cycle", "criterion": "l2"})
    assert (ice.method, ice.lr_policy, ice.eta) == ("icepick", "icepick", 0.3)
    assert (base.method, base.lr_policy, base.eta, base.finetune.lr_shape) == ("baseline", "fixed", 0.0, "constant")
    assert (base.ratio, base.criterion, base.seed) == (0.6, "l2", ice.seed)
    with pytest.raises(ConfigError, match="^method: a comparison runs both"):
        icepick.api.comparison_configs({"method": "baseline"})


def test_bad_settings_are_one_line_before_anything_is_written(pretrained, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert _cli(pretrained, out, "--eta", "1.5") == 2
    err = capsys.readouterr().err
    assert err.startswith("icepick compare: error: eta") and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _summary(method: str, **values) -> dict:
    base = {"model": "resnet20", "lr_policy": "fixed" if method == "baseline" else "icepick", "ratio": 0.4,
            "theta": 1.5, "eta": 0.0 if method == "baseline" else 0.3, "criterion": "l1", "seed": 0,
            "acc_orig": 90.0, "n_steps": 3, "trace_train_macs": 0, "trace_seconds": 0.0, "final_alpha": 0.7,
            "final_macs": 10}
    base.update(values)
    base["total_train_macs_with_trace"] = base["total_train_macs"] + base["trace_train_macs"]
    base["total_seconds_with_trace"] = base["total_seconds"] + base["trace_seconds"]
    return base


def test_the_savings_follow_from_the_table_and_the_curves_start_at_the_trace():
    summaries = {
        "icepick": _summary("icepick", final_acc=88.5, n_finetunes=1, total_train_macs=2e12, trace_train_macs=1e12,
                            total_seconds=30.0, trace_seconds=10.0),
        "baseline": _summary("baseline", final_acc=89.0, n_finetunes=3, total_train_macs=10e12, total_seconds=100.0),
    }
    table = comparison_table(summaries)
    savings = comparison_savings(table)
    assert savings["saved_macs"] == pytest.approx(80.0) and savings["saved_macs_with_trace"] == pytest.approx(70.0)
    assert savings["saved_wall"] == pytest.approx(70.0) and savings["saved_wall_with_trace"] == pytest.approx(60.0)
    assert savings["acc_diff"] == pytest.approx(-0.5) and savings["finetunes_saved"] == 2
    steps = {
        "icepick": pd.DataFrame({"step": [1, 2, 3], "acc": [89.5, 88.0, 88.5], "finetuned": [False, False, True],
                                 "train_macs_cumulative": [0, 0, 2e12]}),
        "baseline": pd.DataFrame({"step": [1, 2, 3], "acc": [89.8, 89.2, 89.0], "finetuned": [True] * 3,
                                  "train_macs_cumulative": [3e12, 6e12, 10e12]}),
    }
    curves = comparison_curves(steps, table)
    ice = curves[curves["method"] == "icepick"]
    assert list(ice["train_macs"]) == [1e12, 1e12, 1e12, 3e12]  # the trace's MACs before the first step
    assert list(ice["acc"])[0] == 90.0 and list(curves[curves["method"] == "baseline"]["train_macs"])[0] == 0
    text = format_comparison(table, savings)
    assert "80.0%" in text and "70.0%" in text and "-0.50 points" in text and "1 of 3" in text
    assert math.isnan(comparison_savings(comparison_table({
        "icepick": summaries["icepick"], "baseline": {**summaries["baseline"], "total_seconds": 0.0}}))["saved_wall"])
