"""icepick tune: the Optuna study over ICE-Pick's settings (icepick.tuning), its records, the
search's cost, resuming after a kill, two workers on one study, compare --tuned and the workflow."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

optuna = pytest.importorskip("optuna")

from icepick.cli import main  # noqa: E402
from icepick.config import ConfigError  # noqa: E402
from icepick import tuning  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--max-steps", "2", "--max-batches", "2", "--batch-size", "32", "--device", "cpu", "--threads", "1",
         "--no-progress"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Generated data (256 / 128 images) and a resnet20 trained on it for a few batches."""
    from icepick.data import load_experiment_data, synth_cifar10, train_batches
    from icepick.model_files import save_model
    from icepick.models import build_model

    root = tmp_path_factory.mktemp("tune")
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
    return root / "pre.pt", root / "data"


def _args(pretrained, out, *extra: str) -> list[str]:
    pre, data = pretrained
    return ["tune", "--pretrained", str(pre), "--data", str(data), "--out", str(out), "--subset", "0.5", *SMALL,
            *extra]


@pytest.fixture(scope="module")
def study(pretrained, tmp_path_factory):
    """A finished 3-trial study (the paper's setting first, then TPE's), as `icepick tune` writes it."""
    out = tmp_path_factory.mktemp("study") / "s"
    assert main(_args(pretrained, out, "--n-trials", "3")) == 0
    return out


# ------------------------------------------------------------------ pure parts


def test_the_icepruning_objective_is_one_plus_drop_over_time_and_favours_slow_trials():
    assert tuning.icepruning_value(100.0, 2.0) == pytest.approx(1.02)
    assert tuning.icepruning_value(200.0, 2.0) == pytest.approx(1.01)  # twice as slow, same loss: "better"
    assert tuning.icepruning_value(1.0, 4.0) == pytest.approx(1.25)  # drop > time: time/drop + 1
    assert math.isnan(tuning.icepruning_value(0.0, 0.0))


def test_the_search_space_starts_at_the_papers_setting_and_the_grid_is_the_follow_ups():
    for name, r in tuning.SEARCH_SPACE.items():
        assert r.low <= r.paper <= r.high, name
    space = {k: r.paper for k, r in tuning.SEARCH_SPACE.items()}
    assert space["delta_fraction"] * space["base"] == pytest.approx(tuning.PAPER_SETTINGS["delta"])
    assert math.prod(len(v) for v in tuning.ICE_PRUNING_GRID.values()) == 216
    assert set(tuning.ICE_PRUNING_GRID) == set(tuning.TUNED_KEYS) and tuning.ICE_PRUNING_TRIALS == 6
    assert tuning.TuneConfig(sampler="grid").resolved_trials() == 6 and tuning.TuneConfig().resolved_trials() == 20
    assert tuning.TuneConfig(objective="pareto").resolved_sampler() == "nsga2"
    assert tuning.TuneConfig(objective="pareto").resolved_pruner() == "none"
    assert tuning.TuneConfig(objective="icepruning").resolved_cost() == "time"


def test_the_subset_is_seeded_per_class_and_keeps_the_decision_split_the_test_split(synth_splits):
    from icepick.data import ExperimentData

    train, test = synth_splits
    data = ExperimentData(train, test, test)
    a, b = tuning.subset_data(data, 0.2, 0), tuning.subset_data(data, 0.2, 0)
    assert torch.equal(a.train.images, b.train.images) and a.decision is a.test
    assert not torch.equal(tuning.subset_data(data, 0.2, 1).train.labels, a.train.labels)
    counts, full = torch.bincount(a.train.labels, minlength=10), torch.bincount(train.labels, minlength=10)
    assert all(abs(int(c) - 0.2 * int(f)) <= 0.5 for c, f in zip(counts, full))
    assert tuning.subset_data(data, 1.0, 0) is data


def _trial(state, cost, constraint, so_far=None):
    attrs = {"cost": cost, "constraint": constraint}
    if so_far is not None:
        attrs["cost_so_far"] = so_far
    return optuna.trial.create_trial(state=state, value=cost if state.name == "COMPLETE" else None,
                                     user_attrs=attrs)


def test_the_cost_bound_prunes_only_what_can_no_longer_be_the_cheapest_feasible_trial():
    S = optuna.trial.TrialState
    study = optuna.create_study()
    running = optuna.trial.create_trial(state=S.COMPLETE, value=0.0, user_attrs={"cost_so_far": 50.0})
    assert not tuning.cost_bound_prune(study, running)  # no feasible trial yet: nothing pruned
    study.add_trial(_trial(S.COMPLETE, 10.0, 0.5))  # over the budget: no bound
    assert not tuning.cost_bound_prune(study, running)
    study.add_trial(_trial(S.COMPLETE, 80.0, -0.2))  # feasible, cost 80
    assert not tuning.cost_bound_prune(study, running)  # 50 so far could still end below 80
    study.add_trial(_trial(S.COMPLETE, 40.0, 0.0))  # feasible (on the budget), cost 40
    assert tuning.cost_bound_prune(study, running)  # 50 > 40 and cost only grows
    assert not tuning.cost_bound_prune(study, optuna.trial.create_trial(
        state=S.COMPLETE, value=0.0, user_attrs={"cost_so_far": 40.0}))  # a tie may still win on accuracy


def test_the_step_observer_sees_every_step_and_restores_the_step_function():
    import icepick.algorithm as algorithm

    original = algorithm._run_step
    seen = []
    with tuning.step_observer(seen.append):
        assert algorithm._run_step is not original
    assert algorithm._run_step is original


def test_a_trial_the_pruner_stops_keeps_its_steps_and_its_cost(pretrained, tmp_path):
    """Optuna's pruner stops a hopeless trial after its first step: the trial is PRUNED, never
    the answer, and its steps and cost stay on disk for the search's accounting."""
    from icepick.algorithm import RunConfig
    from icepick.data import load_experiment_data
    from icepick.finetune import FinetuneConfig

    pre, data_dir = pretrained
    data = tuning.subset_data(load_experiment_data(data_dir, torch.device("cpu")), 0.5, 0)
    run = RunConfig(ratio=0.4, max_steps=2, finetune=FinetuneConfig(batch_size=32, max_batches=1))
    cfg = tuning.TuneConfig(n_trials=1, pruner="threshold", max_drop=1.0)
    ctx = tuning.StudyContext(cfg, run, pre, data, torch.device("cpu"), tmp_path)
    # the threshold pruner below an unpruned accuracy of 200%: no step reaches it; the first
    # trial is the paper's setting (eta 0.3), which makes a freeze trace
    study = tuning.create_study(cfg, tmp_path, acc_orig=200.0)
    study.optimize(lambda t: tuning.run_trial(t, ctx), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["pruned_at_step"] == 1
    folder = tmp_path / "trials" / trial.user_attrs["folder"]
    steps = pd.read_csv(folder / "steps.csv")
    assert list(steps["step"]) == [1]
    record, attrs = json.loads((folder / "pruned.json").read_text()), trial.user_attrs
    assert record["train_macs"] == attrs["cost"] == attrs["search_train_macs"] > 0  # the trace it made counts
    assert attrs["cost"] >= float(steps["train_macs"].sum())
    assert not (folder / "summary.json.state.pt").exists()


# ------------------------------------------------------------------ a study through the CLI


def test_tune_writes_the_best_setting_the_trials_the_figures_and_the_search_cost(study, capsys):
    best = json.loads((study / "best.json").read_text())
    trials = pd.read_csv(study / "trials.csv")
    assert len(trials) == 3 and set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    first = trials.iloc[0]  # the paper's setting was the first trial
    assert (first["theta"], first["eta"], first["base"], first["p"], first["beta"]) == (1.5, 0.3, 0.001, 0.12, 50.0)
    assert first["delta"] == pytest.approx(7.5e-4)
    for folder in trials["folder"]:  # each trial's records: the run's, through run_experiment
        assert (study / "trials" / folder / "settings.json").is_file() and (study / "trials" / folder / "steps.csv").is_file()
    done = trials[trials["state"] == "COMPLETE"]
    for _, row in done.iterrows():
        summary = json.loads((study / "trials" / row["folder"] / "summary.json").read_text())
        assert summary["config"]["theta"] == row["theta"] and summary["final_acc"] == row["final_acc"]
        assert row["cost"] == summary["total_train_macs_with_trace"]  # MACs, the trace's included
    cost = best["search_cost"]
    assert cost["n_trials"] == 3 and cost["train_macs"] == pytest.approx(trials["search_train_macs"].sum())
    assert cost["seconds"] == pytest.approx(trials["search_seconds"].sum()) and cost["wall_seconds"] > 0
    assert set(best["settings"]) == set(tuning.TUNED_KEYS) and best["best"]["trial"] in set(trials["number"])
    feasible = done[done["drop"] <= 1.0]
    if best["best"]["feasible"]:  # the cheapest trial within the budget
        assert best["best"]["cost"] == feasible["cost"].min()
    for figure in ("history.png", "intermediate.png", "importances.png"):
        assert figure in best["figures"] and (study / figure).stat().st_size > 0
    assert (study / "study.db").is_file()


def test_a_finished_study_runs_no_trial_again_and_final_runs_the_best_setting_on_all_the_data(
        pretrained, study, capsys):
    before = pd.read_csv(study / "trials.csv")
    assert main(_args(pretrained, study, "--n-trials", "3", "--final")) == 0
    after = pd.read_csv(study / "trials.csv")
    assert len(after) == len(before) == 3
    tuned = json.loads((study / "final" / "tuned.json").read_text())
    best = json.loads((study / "best.json").read_text())
    assert tuned["test_samples"] == 128  # all the test images, not the subset's 64
    assert {k: tuned["config"][k] for k in tuning.TUNED_KEYS} == best["settings"]
    assert tuned["total_train_macs_with_search"] == pytest.approx(
        tuned["total_train_macs_with_trace"] + best["search_cost"]["train_macs"])
    assert tuned["total_seconds_with_search"] == pytest.approx(
        tuned["total_seconds_with_trace"] + best["search_cost"]["seconds"])
    assert "Tuned run on all the data" in capsys.readouterr().out


def test_compare_with_a_tuned_setting_adds_a_third_row_that_counts_the_search(pretrained, study, tmp_path, capsys):
    pre, data = pretrained
    out = tmp_path / "cmp"
    assert main(["compare", "--pretrained", str(pre), "--data", str(data), "--out", str(out), *SMALL,
                 "--tuned", str(study / "best.json")]) == 0
    table = pd.read_csv(out / "comparison.csv")
    assert list(table["method"]) == ["icepick", "baseline", "tuned"]
    tuned = table.set_index("method").loc["tuned"]
    best = json.loads((study / "best.json").read_text())
    assert tuned["theta"] == best["settings"]["theta"] and tuned["eta"] == best["settings"]["eta"]
    assert tuned["total_train_macs_with_search"] == pytest.approx(
        tuned["total_train_macs_with_trace"] + best["search_cost"]["train_macs"])
    assert table.set_index("method").loc["icepick", "search_train_macs"] == 0
    printed = capsys.readouterr().out
    assert "ICE-Pick tuned" in printed and "with its search" in printed
    record = json.loads((out / "comparison.json").read_text())
    assert record["tuned"]["settings"]["theta"] == best["settings"]["theta"] and "tuned_saved_macs_with_search" in record["savings"]


@pytest.mark.parametrize("extra, message", [
    (["--subset", "0"], "subset: 0.0 is out of range"),
    (["--max-drop", "-1"], "max_drop: -1.0 is out of range"),
    (["--grace", "5", "--heartbeat", "10"], "grace: 5 s must be longer than the heartbeat (10 s)"),
    (["--sampler", "nsga2"], "sampler: nsga2 is for --objective pareto"),
])
def test_bad_tune_settings_are_one_line(pretrained, tmp_path, capsys, extra, message):
    assert main(_args(pretrained, tmp_path / "s", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("icepick tune: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "s" / "study.db").exists()


def test_compare_with_a_missing_or_foreign_best_json_is_one_line(pretrained, tmp_path, capsys):
    pre, data = pretrained
    (tmp_path / "other.json").write_text("{}")
    for path, message in ((tmp_path / "none.json", "does not exist; run `icepick tune --out DIR` first"),
                          (tmp_path / "other.json", "is not a best.json of icepick tune")):
        assert main(["compare", "--pretrained", str(pre), "--data", str(data), "--out", str(tmp_path / "c"),
                     *SMALL, "--tuned", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("icepick compare: error: tuned: ") and message in err
    assert not (tmp_path / "c").exists()


def test_a_study_started_with_another_objective_is_refused(pretrained, study, capsys):
    assert main(_args(pretrained, study, "--n-trials", "3", "--max-drop", "2")) == 2
    assert "max_drop 1.0 (not 2.0)" in capsys.readouterr().err


def test_the_api_tunes_on_tensors(pretrained, tmp_path):
    import icepick
    from icepick.model_files import load_model

    pre, _ = pretrained
    model, _ = load_model(pre)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(96) % 10
    result = icepick.tune(model, (images[:64], labels[:64]), (images[64:], labels[64:]), device="cpu",
                          out_dir=tmp_path / "s", n_trials=2, subset=0.5, max_steps=2, max_batches=1, batch_size=16,
                          figures=False)
    assert set(result.settings) == set(tuning.TUNED_KEYS) and len(result.trials) == 2
    assert result.search_cost["n_trials"] == 2 and (tmp_path / "s" / "best.json").is_file()
    with pytest.raises(ConfigError, match="^theta: tune chooses theta"):
        icepick.tune(model, (images[:64], labels[:64]), (images[64:], labels[64:]), device="cpu",
                     out_dir=tmp_path / "t", theta=1.5)


@pytest.mark.slow
@pytest.mark.parametrize("extra, figure", [
    (["--objective", "pareto", "--n-trials", "3"], "pareto.png"),
    (["--sampler", "grid", "--objective", "icepruning", "--n-trials", "2"], "history.png"),
    (["--pruner", "threshold", "--cost", "time", "--n-trials", "2"], "intermediate.png"),
])
def test_the_other_objectives_and_the_grid(pretrained, tmp_path, capsys, extra, figure):
    out = tmp_path / "s"
    assert main(_args(pretrained, out, *extra)) == 0
    best = json.loads((out / "best.json").read_text())
    assert figure in best["figures"]
    trials = pd.read_csv(out / "trials.csv")
    if "grid" in extra:  # points of the follow-up's grid
        for key, values in tuning.ICE_PRUNING_GRID.items():
            assert set(trials[key]) <= set(values)
        assert best["tune"]["objective"] == "icepruning"
    elif "pareto" in extra:
        assert best["best"]["front"] and all("final_acc" in point for point in best["best"]["front"])
    else:  # the cost is the runs' seconds, the trace's included
        assert best["tune"]["cost"] == "time" and best["tune"]["pruner"] == "threshold"
        done = trials[trials["state"] == "COMPLETE"]
        assert (done["cost"] == done["seconds"]).all()


# ------------------------------------------------------------------ killed, and two workers


def _study_states(out: Path) -> dict[int, str]:
    """Each trial's state; a running trial counts as RUNNING only once it has its setting and
    folder (before that a kill would leave a trial with nothing to retry)."""
    storage = f"sqlite:///{out / 'study.db'}"
    try:
        s = optuna.load_study(study_name="icepick-tune", storage=storage)
    except Exception:  # noqa: BLE001 - not created yet
        return {}
    return {t.number: ("STARTING" if t.state.name == "RUNNING" and "folder" not in t.user_attrs else t.state.name)
            for t in s.get_trials(deepcopy=False)}


def _command(pretrained, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "icepick", *_args(pretrained, out, *extra)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_a_killed_study_resumes_without_repeating_finished_trials(pretrained, tmp_path):
    out = tmp_path / "s"
    extra = ("--n-trials", "4", "--heartbeat", "1", "--grace", "3", "--no-figures")
    proc = subprocess.Popen(_command(pretrained, out, *extra), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    states: dict[int, str] = {}
    while time.time() < deadline:  # kill it during a trial, once one has finished
        states = _study_states(out)
        if "COMPLETE" in states.values() and "RUNNING" in states.values():
            break
        assert proc.poll() is None, "the study finished before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = [n for n, s in states.items() if s == "RUNNING"]
    storage = f"sqlite:///{out / 'study.db'}"
    before = {t.number: (t.state.name, t.datetime_complete) for t in
              optuna.load_study(study_name="icepick-tune", storage=storage).get_trials()}
    assert len(killed) == 1 and not (out / "best.json").exists()
    time.sleep(3.5)  # past the grace period: the killed trial's heartbeat is stale
    done = subprocess.run(_command(pretrained, out, *extra), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = optuna.load_study(study_name="icepick-tune", storage=storage).get_trials()
    for t in trials:  # the finished trials are the same trials, not run again
        if before.get(t.number, ("",))[0] in ("COMPLETE", "PRUNED"):
            assert (t.state.name, t.datetime_complete) == before[t.number]
    assert trials[killed[0]].state.name == "FAIL"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed[0]]
    assert len(retried) == 1 and retried[0].state.name in ("COMPLETE", "PRUNED")
    assert retried[0].params == trials[killed[0]].params  # the same setting, in the killed trial's folder
    assert retried[0].user_attrs["folder"] == trials[killed[0]].user_attrs["folder"]
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4
    best = json.loads((out / "best.json").read_text())
    assert best["search_cost"]["n_failed"] == 1 and best["search_cost"]["n_complete"] + best["search_cost"]["n_pruned"] == 4


def test_a_worker_starts_no_trial_when_the_trials_running_elsewhere_make_the_total():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.ask(), study.ask()  # two trials running in other workers
    study.optimize(lambda t: 0.0, n_trials=10, callbacks=[tuning.stop_at_total(3)])
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 1  # 1 finished + 2 running = 3
    alone = optuna.create_study()
    alone.optimize(lambda t: 0.0, n_trials=10, callbacks=[tuning.stop_at_total(3)])
    assert len(alone.trials) == 3


@pytest.mark.slow
def test_two_worker_processes_share_one_sqlite_study(pretrained, tmp_path):
    out = tmp_path / "s"
    extra = ("--n-trials", "4", "--no-figures")
    first = subprocess.Popen(_command(pretrained, out, *extra), env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(_command(pretrained, out, *extra), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    for proc in (first, second):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    storage = f"sqlite:///{out / 'study.db'}"
    trials = optuna.load_study(study_name="icepick-tune", storage=storage).get_trials()
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 4 <= len(finished) <= 5  # a total over both workers (two trials ending in one instant can both go on)
    workers = {t.user_attrs["worker"] for t in finished}
    assert workers == {f"{os.uname().nodename}:{first.pid}", f"{os.uname().nodename}:{second.pid}"}
    folders = [t.user_attrs["folder"] for t in trials]
    assert len(folders) == len(set(folders))  # no two trials wrote into one folder
    assert sum(1 for t in trials if t.params.get("theta") == 1.5 and t.params.get("eta") == 0.3) == 1  # enqueued once
    settings = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(settings)) == len(settings)  # each trial's draws are seeded by its number, not the worker


# ------------------------------------------------------------------ the workflow


TUNE_OVERLAY = "tune: {enabled: true, n_trials: 2, subset: 0.5, ratio: 0.4}\n"


def _snakemake(cwd: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    binary = Path(sys.executable).parent / "snakemake"
    env = {**os.environ, "PATH": f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(binary), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_workflow_plans_the_study_and_the_tuned_run_only_when_asked(tmp_path):
    from conftest import copy_workflow

    cwd = copy_workflow(tmp_path / "wf", tune=TUNE_OVERLAY)
    off = _snakemake(cwd, "-n", "--configfile", "config/test.yaml", "--cores", "1")
    assert off.returncode == 0, off.stderr[-2000:]
    assert "rule tune:" not in off.stdout + off.stderr
    on = _snakemake(cwd, "-n", "--configfile", "config/test.yaml", "tune.yaml", "--cores", "1")
    text = on.stdout + on.stderr
    assert on.returncode == 0, text[-2000:]
    assert "results/resnet20/tune/r0.4/seed0/best.json" in text
    assert re.search(r"rule tuned_run:\n    input: results/resnet20/tune/r0.4/seed0/best.json", text)
    assert "--n-trials 2 --subset 0.5" in text and "--final" in text


@pytest.mark.slow
def test_the_workflows_tune_rule_feeds_its_setting_into_a_run(tmp_path):
    from conftest import copy_workflow

    cwd = copy_workflow(tmp_path / "wf", tune=TUNE_OVERLAY)
    target = "results/resnet20/tune/r0.4/seed0/final/tuned.json"
    done = _snakemake(cwd, "--configfile", "config/test.yaml", "tune.yaml", "--cores", "2", target)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    best = json.loads((cwd / "results/resnet20/tune/r0.4/seed0/best.json").read_text())
    tuned = json.loads((cwd / target).read_text())
    assert {k: tuned["config"][k] for k in tuning.TUNED_KEYS} == best["settings"]
    assert tuned["search_trials"] == 2 and tuned["total_train_macs_with_search"] > tuned["total_train_macs_with_trace"]
    again = _snakemake(cwd, "-n", "--configfile", "config/test.yaml", "tune.yaml", "--cores", "1", target)
    assert "Nothing to be done" in again.stdout + again.stderr  # the tuned run left its input as it was


@pytest.mark.slow
def test_workers_each_claim_their_own_gpu_slot(pretrained, tmp_path):
    """--workers 2 on a machine with two (simulated) GPUs: the second process claims the other slot."""
    out = tmp_path / "s"
    env = {**_env(), "ICEPICK_GPU_SLOTS_ON_CPU": "1", "ICEPICK_SLOT_DIR": str(tmp_path / "locks")}
    pre, data = pretrained
    command = [sys.executable, "-m", "icepick", "tune", "--pretrained", str(pre), "--data", str(data), "--out",
               str(out), "--subset", "0.5", "--max-steps", "2", "--max-batches", "1", "--batch-size", "32",
               "--device", "auto", "--gpu-slots", "2", "--threads", "1", "--no-progress", "--workers", "2",
               "--n-trials", "4", "--no-figures"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    slots = {json.loads(p.read_text())["provenance"]["gpu_slot"]["gpu"] for p in out.glob("trials/*/summary.json")}
    assert slots == {0, 1}
