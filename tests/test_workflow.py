"""Tests of the Snakemake workflow: the planned jobs (dry runs), targets, reruns, lint and
config validation; and (marked slow) the whole small configuration end to end.

Expected job counts are computed here by hand from the paper's experiment grid, not from the
workflow's own code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_workflow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"

pytestmark = [
    pytest.mark.slow,  # each test runs Snakemake (a dry run or more): not in the fast tier
    pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed beside this python"),
]

# ---------------------------------------------------------------- the paper's grid, by hand

PAPER_MODELS = ["resnet110", "resnet152", "mobilenetv2"]
N_SEEDS = 10
# Figure 3: r in {0.4, 0.6} x eta in {0, 0.3, 0.7} at theta 1.5, plus the baseline at each r.
FIG3_CONFIGS = 2 * 3 + 2
# Table 1: eta in {0.3, 0.7} x lr in {fixed, ICE-Pick} at theta 2.5 (one r per model).
TABLE1_CONFIGS = 2 * 2
# Thresholds: theta in {0.5, 1.5, 2.5} at eta 0.3, ICE-Pick lr, the Table 1 r. theta 1.5 is
# Figure 3's run (the Table 1 r is 0.4 or 0.6) and theta 2.5 is Table 1's: one new configuration.
THRESHOLD_CONFIGS = 3 - 2
# Ablation at the Table 1 r, eta 0.3, theta 1.5: ICE-Pick, no freezing and the baseline are
# Figure 3's runs; no threshold, fixed lr and the one-shot baseline are new.
ABLATION_CONFIGS = 6 - 3
# Criteria l1, l2, random, fpgm, taylor: ICE-Pick and the baseline each; l1's are Figure 3's.
# The others are rule run_criterion's (the criterion ends the folder name).
CRITERIA_CONFIGS = 2 * 4
RUN_CONFIGS_PER_MODEL = FIG3_CONFIGS + TABLE1_CONFIGS + THRESHOLD_CONFIGS + ABLATION_CONFIGS  # 16, rule run
CONFIGS_PER_MODEL = RUN_CONFIGS_PER_MODEL + CRITERIA_CONFIGS  # 24

PAPER_JOBS = {
    "data_import": 1,
    "pretrain": 3,
    "weight_shift": 3,
    "trace": 3 * N_SEEDS * 2,  # a trace per (model, seed, ratio): r 0.4 and 0.6 both have runs that freeze
    "run": 3 * N_SEEDS * RUN_CONFIGS_PER_MODEL,  # 480
    "run_criterion": 3 * N_SEEDS * CRITERIA_CONFIGS,  # 240
    "aggregate_group": 5,
    "aggregate_all": 1,
    "aggregate_pretrain": 1,
    "aggregate_weight_shift": 1,
    "table1": 1,
    "table_time_savings": 1,
    "fig2_weight_shift": 1,
    "fig3_accuracy": 1,
    "fig_thresholds": 1,
    "fig_lr_schedule": 1,
    "fig_ablation": 1,
    "table_ablation": 1,
    "fig_criteria": 1,
    "table_criteria": 1,
    "claims": 1,
    "all": 1,
}
PER_MODEL_RULES = ("pretrain", "weight_shift", "trace", "run", "run_criterion")
SMOKE_CRITERIA_CONFIGS = 2  # ICE-Pick and the baseline under taylor (l1's are Figure 3's)
SMOKE_CONFIGS_PER_MODEL = RUN_CONFIGS_PER_MODEL + SMOKE_CRITERIA_CONFIGS  # 18


# ---------------------------------------------------------------- helpers


def snakemake(*args: str, cwd: Path = REPO, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(SNAKEMAKE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> number of jobs (without 'total')."""
    match = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal\s+(\d+)", output, re.S)
    assert match, f"no job stats in:\n{output[-2000:]}"
    counts = {}
    for line in match.group(1).splitlines():
        rule, n = line.split()
        counts[rule] = int(n)
    assert sum(counts.values()) == int(match.group(2))
    return counts


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job in a (non-quiet) dry run."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", output):
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        if not head:
            continue
        wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        wildcards = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
        jobs.append((head.group(1), wildcards))
    return jobs


_CLEAN_COPY: list[Path] = []


def clean_copy() -> Path:
    """A copy of the workflow without results, so dry runs plan from scratch wherever the
    repository has outputs of its own (made once per test session)."""
    if not _CLEAN_COPY:
        import tempfile

        _CLEAN_COPY.append(copy_workflow(Path(tempfile.mkdtemp(prefix="icepick-workflow-"))))
    return _CLEAN_COPY[0]


def dry_run(*args: str, cwd: Path | None = None) -> str:
    proc = snakemake("-n", *args, cwd=cwd or clean_copy())
    return proc.stdout + proc.stderr


# Depth of every rule in the DAG: outputs get times in this order, as after a real run.
STAGE = {
    "data_import": 0, "data_synth": 0, "pretrain": 1, "trace": 2, "weight_shift": 2, "run": 3, "run_criterion": 3,
    "aggregate_group": 4, "aggregate_pretrain": 4, "aggregate_weight_shift": 4, "fig_lr_schedule": 4,
    "aggregate_all": 5, "table1": 5, "table_time_savings": 5, "fig2_weight_shift": 5, "fig3_accuracy": 5,
    "fig_thresholds": 5, "fig_ablation": 5, "table_ablation": 5, "fig_criteria": 5, "table_criteria": 5, "claims": 6,
}


def fake_all_outputs(cwd: Path, *args: str) -> None:
    """Create every output of the workflow as an empty file, older files upstream, so that dry
    runs plan as they would after a complete run (quicker than `snakemake --touch`)."""
    proc = snakemake("--summary", *args, cwd=cwd)
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("output_file"))
    t0 = time.time() - 3600
    for line in lines[start + 1:]:
        output, _, rule = line.split("\t")[:3]
        path = cwd / output
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path, (t0 + 60 * STAGE[rule],) * 2)
    assert "Nothing to be done" in dry_run(*args, cwd=cwd)


# ---------------------------------------------------------------- dry runs of the paper


@pytest.fixture(scope="module")
def paper_plan() -> str:
    """The dry run of the paper's configuration (default target), with shell commands."""
    return dry_run("-p")


def test_paper_config_plans_the_expected_jobs(paper_plan):
    assert job_counts(paper_plan) == PAPER_JOBS


def test_paper_runs_cover_the_grid_once_per_seed(paper_plan):
    jobs = planned_jobs(paper_plan)
    runs = [wc for rule, wc in jobs if rule in ("run", "run_criterion")]
    per_model = Counter(wc["model"] for wc in runs)
    assert per_model == {m: N_SEEDS * CONFIGS_PER_MODEL for m in PAPER_MODELS}
    configs = {(wc["model"], wc["method"], wc["lr_policy"], wc["ratio"], wc["eta"], wc["theta"], wc.get("criterion", "l1"))
               for wc in runs}
    assert len(runs) == len(configs) * N_SEEDS  # each configuration once per seed
    table1_r = {"resnet110": "0.6", "resnet152": "0.6", "mobilenetv2": "0.4"}
    expected = set()
    for m in PAPER_MODELS:
        r = table1_r[m]
        expected |= {(m, "icepick", "icepick", r, e, "1.5", "l1") for r in ("0.4", "0.6") for e in ("0", "0.3", "0.7")}
        expected |= {(m, "baseline", "fixed", r, "0", "0", "l1") for r in ("0.4", "0.6")}
        expected |= {(m, "icepick", lr, r, e, "2.5", "l1") for e in ("0.3", "0.7") for lr in ("fixed", "icepick")}
        expected |= {(m, "icepick", "icepick", r, "0.3", t, "l1") for t in ("0.5", "1.5", "2.5")}
        expected |= {(m, "icepick", "icepick", r, "0.3", "-100", "l1"), (m, "icepick", "fixed", r, "0.3", "1.5", "l1"),
                     (m, "oneshot", "fixed", r, "0", "0", "l1")}  # the ablation's new arms
        for c in ("l2", "random", "fpgm", "taylor"):
            expected |= {(m, "icepick", "icepick", r, "0.3", "1.5", c), (m, "baseline", "fixed", r, "0", "0", c)}
    assert configs == expected
    # A run under another criterion passes it on; the paper's (l1) runs do not name it.
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", paper_plan):
        head = re.match(r"rule (run\w*):\n", block)
        if head:
            criterion = re.search(r"wildcards: .*criterion=(\w+)", block)
            assert ("--criterion" in block) == (criterion is not None), block[:300]
            if criterion:
                assert f"--criterion {criterion.group(1)}" in block and f"-{criterion.group(1)}/seed" in block
    # Every training or evaluating job asks for the GPU resource and passes its threads on.
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", paper_plan):
        head = re.match(r"rule (\w+):\n", block)
        if head and head.group(1) in PER_MODEL_RULES:
            assert "gpu=1" in block, head.group(1)
            assert re.search(r"--threads \d+", block), head.group(1)


def test_table1_target_plans_only_its_ancestors():
    out = dry_run("paper_figures/table1.tex")
    counts = job_counts(out)
    assert counts == {
        "data_import": 1,
        "pretrain": 3,
        "trace": 3 * N_SEEDS,
        "run": 3 * N_SEEDS * TABLE1_CONFIGS,
        "aggregate_group": 1,
        "table1": 1,
    }
    runs = [wc for rule, wc in planned_jobs(out) if rule == "run"]
    assert {wc["theta"] for wc in runs} == {"2.5"}  # no Figure 3 run (theta 1.5), no baseline
    assert {wc["method"] for wc in runs} == {"icepick"}


def test_a_freezing_run_uses_the_trace_made_at_its_own_ratio():
    out = dry_run("-p", "results/resnet110/runs/icepick-icepick-r0.6-eta0.3-theta1.5/seed2/summary.json")
    assert job_counts(out)["trace"] == 1
    assert "--trace results/resnet110/trace/r0.6/seed2.json" in out
    assert "--ratio 0.6 --seed 2" in out  # the trace job prunes the first block at the run's ratio


def test_a_fixed_trace_ratio_shares_one_trace_per_model_and_seed():
    out = dry_run("--config", "trace_ratio=0.4")
    assert job_counts(out)["trace"] == 3 * N_SEEDS
    out = dry_run("-p", "--config", "trace_ratio=0.4", "--",
                  "results/resnet110/runs/icepick-icepick-r0.6-eta0.3-theta1.5/seed2/summary.json")
    assert "--trace results/resnet110/trace/r0.4/seed2.json" in out


def test_smoke_profile_plans_the_small_configuration():
    out = dry_run("--workflow-profile", "profiles/smoke")
    counts = job_counts(out)
    assert counts["data_synth"] == 1 and "data_import" not in counts
    assert counts["pretrain"] == 3 and counts["trace"] == 3 * 2 * 2  # seeds x the smoke's two ratios
    assert counts["run"] == 3 * 2 * RUN_CONFIGS_PER_MODEL
    assert counts["run_criterion"] == 3 * 2 * SMOKE_CRITERIA_CONFIGS
    for rule in ("fig_ablation", "table_ablation", "fig_criteria", "table_criteria"):  # both groups' figure and table
        assert counts[rule] == 1, rule
    assert sum(counts.values()) == 147  # 111 before the two groups
    jobs = planned_jobs(out)
    assert {wc["model"] for rule, wc in jobs if rule == "run"} == {"resnet14", "resnet20", "mobilenetv2_w025"}
    assert {wc["criterion"] for rule, wc in jobs if rule == "run_criterion"} == {"taylor"}


def test_the_mini_configuration_plans_neither_new_group():
    counts = job_counts(dry_run("--workflow-profile", "profiles/mini"))
    assert not {"run_criterion", "fig_ablation", "table_ablation", "fig_criteria", "table_criteria"} & set(counts)
    assert counts["aggregate_group"] == 3 and sum(counts.values()) == 79


def test_slurm_profile_parses():
    pytest.importorskip("snakemake_executor_plugin_slurm")
    out = dry_run("--workflow-profile", "profiles/slurm", "paper_figures/table1.tex")
    assert job_counts(out)["run"] == 3 * N_SEEDS * TABLE1_CONFIGS


# ---------------------------------------------------------------- rerunning one model


@pytest.fixture(scope="module")
def finished_copy(tmp_path_factory) -> Path:
    """A copy of the workflow whose every output exists (empty files, consistent times)."""
    cwd = copy_workflow(tmp_path_factory.mktemp("workflow"))
    fake_all_outputs(cwd)
    return cwd


def test_forcerun_pretrained_reruns_that_model_only(finished_copy):
    # The documented command: snakemake --forcerun results/resnet110/pretrained.pt
    out = dry_run("--forcerun", "results/resnet110/pretrained.pt", cwd=finished_copy)
    counts = job_counts(out)
    assert counts["pretrain"] == 1 and counts["weight_shift"] == 1
    assert counts["trace"] == 2 * N_SEEDS and counts["run"] + counts["run_criterion"] == N_SEEDS * CONFIGS_PER_MODEL
    assert "data_import" not in counts
    for rule, wc in planned_jobs(out):
        if rule in PER_MODEL_RULES:
            assert wc["model"] == "resnet110", (rule, wc)
    # Aggregates, tables, figures and claims are redone from the new runs.
    assert counts["aggregate_all"] == 1 and counts["claims"] == 1 and counts["table1"] == 1


def test_forcerun_runs_of_one_model(finished_copy):
    # Only the runs (pretraining and traces kept): every run summary of the model.
    summaries = sorted(str(p.relative_to(finished_copy)) for p in finished_copy.glob("results/mobilenetv2/runs/*/seed*/summary.json"))
    assert len(summaries) == N_SEEDS * CONFIGS_PER_MODEL
    out = dry_run("--forcerun", *summaries, cwd=finished_copy)
    counts = job_counts(out)
    assert counts["run"] + counts["run_criterion"] == N_SEEDS * CONFIGS_PER_MODEL
    assert not {"pretrain", "trace", "weight_shift"} & set(counts)
    assert {wc["model"] for rule, wc in planned_jobs(out) if rule.startswith("run")} == {"mobilenetv2"}


# ---------------------------------------------------------------- lint and validation


def test_lint_is_clean():
    proc = snakemake("--lint")
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


#: Lines Snakemake prints before it reads the Snakefile.
SNAKEMAKE_CHATTER = ("Using workflow specific profile", "Config file ")


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """What a failed dry run says, less Snakemake's own opening lines."""
    return [line for line in (proc.stdout + proc.stderr).splitlines()
            if line.strip() and not line.startswith(SNAKEMAKE_CHATTER)]


@pytest.mark.parametrize(
    "args, key",
    [
        (["--config", "trace_ratio=1.5"], "trace_ratio"),
        (["--config", "ratios=[1.5]"], "ratios"),  # not a key: the grid lives under experiments
        (["--config", "trace_ration=0.4"], "trace_ration"),
        (["--config", "device=gpu"], "device"),
        (["--config", "threads=0"], "threads"),
        (["--config", "models=[resnet20]"], "experiments.table1.ratios"),  # a model without a Table 1 ratio
    ],
)
def test_invalid_config_fails_naming_the_key(args, key):
    proc = snakemake("-n", *args, check=False)
    assert proc.returncode != 0
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith(f"{key}: "), lines


@pytest.mark.parametrize(
    "overlay, key",
    [
        ("experiments:\n  fig3:\n    ratios: [0.4, 1.5]\n", "experiments.fig3.ratios[1]"),
        ("experiments:\n  fig3:\n    etas: [0.3, 1.0]\n", "experiments.fig3.etas[1]"),
        ("experiments:\n  table1:\n    theta: -1\n", "experiments.table1.theta"),
        ("experiments:\n  ablation:\n    arms: [no_kd]\n", "experiments.ablation.arms[0]"),
        ("experiments:\n  criteria:\n    criteria: [l3]\n", "experiments.criteria.criteria[0]"),
        ("schedule:\n  p: 0.7\n", "schedule.p"),
        ("schedule:\n  beta: 0\n", "schedule.beta"),
        ("finetune:\n  lr_shape: linear\n", "finetune.lr_shape"),
        ("pretrain:\n  epoch: 3\n", "pretrain.epoch"),
    ],
)
def test_invalid_nested_config_fails_naming_the_key(tmp_path, overlay, key):
    path = tmp_path / "bad.yaml"
    path.write_text(overlay)
    proc = snakemake("-n", "--configfile", str(path), check=False)
    assert proc.returncode != 0
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith(f"{key}: "), lines


def test_a_misspelt_key_is_one_line_with_the_nearest_valid_one(tmp_path):
    cwd = copy_workflow(tmp_path / "wf", bad="finetune:\n  batchsize: 64\n")
    proc = snakemake("-n", "--configfile", "config/test.yaml", "bad.yaml", cwd=cwd, check=False)
    assert proc.returncode != 0
    assert error_lines(proc) == ["finetune.batchsize: not a key; did you mean finetune.batch_size?"]


# ---------------------------------------------------------------- your own models and files

# A user's model module beside the workflow (a dry run reads it, never imports it).
MY_NETS = """\
import torch.nn as nn


class TinyNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

    def forward(self, x):
        return self.body(x)


def tiny_net(num_classes=10):
    return TinyNet(num_classes)
"""
MINE = """\
models: [{models}]
paper_role: {{}}
experiments:
  table1: {{ratios: {{default: 0.4}}}}
"""


def mine_copy(tmp_path: Path, models: list[str], extra: str = "") -> Path:
    """A copy of the workflow with my_nets.py beside it and mine.yaml: ``models``, a Table 1
    ratio for each, and ``extra`` (laid over config/test.yaml)."""
    cwd = copy_workflow(tmp_path / "wf", mine=MINE.format(models=", ".join(models)) + extra)
    (cwd / "my_nets.py").write_text(MY_NETS)
    return cwd


def mine_dry_run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return snakemake("-n", *args, "--configfile", "config/test.yaml", "mine.yaml", cwd=cwd, check=check)


@pytest.mark.parametrize(
    "models, extra, line",
    [
        (["python:my_netz:tiny_net"], "",
         "models: python:my_netz:tiny_net: no module my_netz (my_netz.py or my_netz/) in the working directory {cwd} "
         "or on the Python path; did you mean python:my_nets:tiny_net? put my_netz.py in the working directory "
         "(where the jobs run), or add the folder that holds it to PYTHONPATH"),
        (["python:my_nets:tiny_nett"], "",
         "models: python:my_nets:tiny_nett: {cwd}/my_nets.py defines no tiny_nett; did you mean "
         "python:my_nets:tiny_net? name a function of that module that builds the model (called as "
         "tiny_nett(num_classes=N))"),
        (["torchvision:resnet19"], "",
         "models: torchvision:resnet19: torchvision {tv} has no classification model resnet19; did you mean "
         "torchvision:resnet18? list them with python -c 'import torchvision; print(torchvision.models.list_models())'"),
        (["resnet20"], "data: {{source: imagefolder, path: my_images/, root: data/mine}}\n",
         "data.path: my_images/ does not exist (in the working directory {cwd}); give the image folder (one "
         "sub-folder of images per class)"),
        (["resnet20"], "pretrained: {{resnet20: weights/resnet20.pt}}\n",
         "pretrained.resnet20: weights/resnet20.pt does not exist (in the working directory {cwd}); give the path of "
         "resnet20's weights file, or remove the entry to pretrain it"),
        (["python:my_nets:TinyNet", "python:my_nets:tinynet"], "",
         "models: python:my_nets:TinyNet and python:my_nets:tinynet would share the folder "
         "results/python-my_nets-tinynet/ (folder names hold no colon, and ignore case on macOS and Windows); keep "
         "one of them, or give one of them another name"),
    ],
    ids=["python module", "python factory", "torchvision builder", "data.path", "pretrained weights", "shared folder"],
)
def test_a_model_or_file_that_would_fail_its_job_fails_the_dry_run_in_one_line(tmp_path, models, extra, line):
    tv = ""
    if any(m.startswith("torchvision:") for m in models):
        tv = pytest.importorskip("torchvision").__version__
    cwd = mine_copy(tmp_path, models, extra.format())
    proc = mine_dry_run(cwd, check=False)
    assert proc.returncode != 0
    assert error_lines(proc) == [line.format(cwd=cwd.resolve(), tv=tv)]


def test_a_python_models_results_logs_and_benchmarks_hold_no_colon_and_its_commands_name_it(tmp_path):
    spec, slug = "python:my_nets:tiny_net", "python-my_nets-tiny_net"
    cwd = mine_copy(tmp_path, [spec, "resnet20"])
    out = mine_dry_run(cwd, "-p").stdout
    assert job_counts(out)["pretrain"] == 2
    paths = [path for kind, listed in re.findall(r"^\s+(output|log|benchmark): (.*)$", out, re.M)
             for path in listed.split(", ")]
    assert paths and not [p for p in paths if ":" in p]
    for folder in ("results", "logs", "results/benchmarks"):
        assert any(p.startswith(f"{folder}/{slug}/") for p in paths), folder
        assert any(p.startswith(f"{folder}/resnet20/") for p in paths), folder  # registry names keep their paths
    assert f"results/{slug}/runs/icepick-icepick-r0.4-eta0.3-theta1.5/seed0/summary.json" in paths
    # every command that builds the model gets the spec; the report commands list it
    commands = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", out):
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        wc = re.search(r"wildcards: .*\bmodel=([^,\s]+)", block)
        if head and wc and wc.group(1) == slug:
            commands[head.group(1)] = re.search(r"^Shell command: (.*)$", block, re.M).group(1)
    assert set(commands) == {"pretrain", "weight_shift", "trace", "run"}
    for rule, command in commands.items():
        assert f" --model {spec} " in command and f"results/{slug}/" in command, (rule, command)
    assert f"--models {spec} resnet20" in out
    # a target by its folder name plans that model's branch
    counts = job_counts(mine_dry_run(cwd, f"results/{slug}/pretrained.pt").stdout)
    assert counts["pretrain"] == 1


# ---------------------------------------------------------------- end to end (slow)


EXPECTED_TARGETS = [
    "results/summary/runs.csv",
    "results/summary/steps.csv",
    "results/summary/pretrain.csv",
    "results/summary/weight_shift.csv",
    "paper_figures/table1.tex",
    "paper_figures/table1.csv",
    "paper_figures/table_time_savings.tex",
    "paper_figures/table_time_savings.csv",
    "paper_figures/fig2_weight_shift.pdf",
    "paper_figures/fig2_weight_shift.png",
    "paper_figures/fig3_accuracy.pdf",
    "paper_figures/fig3_accuracy.png",
    "paper_figures/fig_thresholds.pdf",
    "paper_figures/fig_lr_schedule.pdf",
    "paper_figures/fig_ablation.pdf",
    "paper_figures/fig_ablation.png",
    "paper_figures/table_ablation.tex",
    "paper_figures/table_ablation.csv",
    "paper_figures/fig_criteria.pdf",
    "paper_figures/fig_criteria.png",
    "paper_figures/table_criteria.tex",
    "paper_figures/table_criteria.csv",
    "paper_figures/claims.md",
    "paper_figures/claims.csv",
]


@pytest.mark.slow
@pytest.mark.e2e
def test_smoke_workflow_end_to_end(tmp_path):
    """The small configuration, in a copy of the workflow: every target, parseable tables,
    Table 1 with one row per (model, freeze, lr), non-empty figures, every claim listed, and
    the report."""
    cwd = copy_workflow(tmp_path)
    snakemake("--workflow-profile", "profiles/smoke", cwd=cwd, timeout=1800)
    for target in EXPECTED_TARGETS:
        assert (cwd / target).stat().st_size > 0, target

    models = ["resnet14", "resnet20", "mobilenetv2_w025"]
    runs = pd.read_csv(cwd / "results/summary/runs.csv")
    assert len(runs) == len(models) * 2 * SMOKE_CONFIGS_PER_MODEL
    assert runs["final_acc"].between(0, 100).all()

    # the method is visible: ICE-Pick skips some fine-tunings and makes others; pruning costs
    # accuracy and fine-tuning wins some of it back
    steps = pd.read_csv(cwd / "results/summary/steps.csv")
    ice = steps[(steps["method"] == "icepick") & (steps["theta"] >= 0)]  # with a threshold
    assert 0.1 < ice["finetuned"].mean() < 0.9
    iterative = steps[steps["method"] != "oneshot"]
    assert iterative["drop"].mean() > 0 and (iterative["drop"] > 0).mean() > 0.5
    tuned = steps[steps["finetuned"].astype(bool)]
    assert (tuned["acc_finetuned"] - tuned["acc_pruned"]).mean() > 0.5

    table1 = pd.read_csv(cwd / "paper_figures/table1.csv")
    assert len(table1) == len(models) * 2 * 2
    assert not table1.duplicated(["model", "eta", "lr_policy"]).any()
    assert table1["paper_acc"].notna().all()  # the stand-ins carry the paper's numbers
    tex = (cwd / "paper_figures/table1.tex").read_text()
    body = tex.split(r"\midrule", 1)[1].split(r"\bottomrule", 1)[0]
    assert len([line for line in body.splitlines() if line.strip().endswith(r"\\")]) == len(table1)

    savings = pd.read_csv(cwd / "paper_figures/table_time_savings.csv")
    assert len(savings) == len(models) * 2 * 3
    assert savings["saved_wall"].notna().all()

    claims = pd.read_csv(cwd / "paper_figures/claims.csv", keep_default_na=False)  # "n/a" stays a string
    md = (cwd / "paper_figures/claims.md").read_text()
    assert claims["id"].is_unique and len(claims) > 40
    assert (claims["holds"] == "n/a").any()  # the paper's r = 0.4/0.6 claims: the smoke runs r = 0.2/0.3
    for cid in claims["id"]:
        assert f"| {cid} |" in md
    for cid in ["time-headline", "table1-fewer-ft", "table1-comparable", "time-resnet110-r0.4", "time-mobilenetv2-r0.6"]:
        assert cid in set(claims["id"])
    assert set(claims["holds"]) <= {"yes", "no", "n/a"}

    # the two groups beyond the paper: every arm and criterion of every model, and their claims
    ablation = pd.read_csv(cwd / "paper_figures/table_ablation.csv")
    assert len(ablation) == len(models) * 6 and not ablation.duplicated(["model", "arm"]).any()
    oneshot = runs[runs["method"] == "oneshot"]
    assert len(oneshot) == len(models) * 2 and (oneshot["n_finetunes"] == 1).all() and (oneshot["n_steps"] == 3).all()
    criteria = pd.read_csv(cwd / "paper_figures/table_criteria.csv")
    assert set(criteria["criterion"]) == {"l1", "taylor"} and len(criteria) == len(models) * 2 * 2
    for model in models:
        for cid in (f"ablation-threshold-time-{model}", f"ablation-freezing-cost-{model}", f"ablation-oneshot-{model}"):
            assert claims.set_index("id").loc[cid, "holds"] in {"yes", "no"}, cid

    snakemake("--workflow-profile", "profiles/smoke", "--report", "report.html", cwd=cwd, timeout=600)
    assert (cwd / "report.html").stat().st_size > 10000
    assert "Nothing to be done" in dry_run("--workflow-profile", "profiles/smoke", cwd=cwd)
