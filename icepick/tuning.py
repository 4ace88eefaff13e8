"""Auto-tuning ICE-Pick's settings with Optuna (``icepick tune``, :func:`icepick.tune`).

ICE-Pick has six knobs: θ (``theta``), η (``eta``) and Eq. 1's ``base``, Δ (``delta``), ``p``
and β (``beta``). The paper tuned them on CIFAR-10; on another model or data set a wrong θ
either skips nothing or loses accuracy. The authors' follow-up (ICE-Pruning, arXiv:2505.07411)
added a search stage; this module is ours, on Optuna, with these choices:

- **Each trial is an ICE-Pick run** through :func:`icepick.algorithm.run_experiment` (the code
  path of every run, records under ``trials/trial-NNNN/``: steps.csv, summary.json, its freeze
  trace) on a seeded, per-class subset of the training and decision (test) images
  (:func:`subset_data`); the pretrained model and every other setting are the user's.
- **Default objective** (``budget``): the fewest training MACs (hardware-independent; the
  freeze trace's included when η > 0) with the final accuracy within ``max_drop`` points of
  the unpruned model's, as an Optuna constraint (``Trial.set_constraint``, which replaced the
  samplers' ``constraints_func`` in Optuna 5; TPE models it, and a trial over the budget is
  infeasible, never the answer). ``cost='time'`` puts the run's wall time in place of MACs.
  ``icepruning``: the follow-up's formula (:func:`icepruning_value`, quirk included);
  ``pareto``: NSGA-II over (cost, final accuracy), the front as a figure.
- **Samplers**: TPE (default; the paper's setting enqueued as the first trial, so the search
  starts there and goes outward within :data:`SEARCH_SPACE`), ``grid`` (the follow-up's
  216-point :data:`ICE_PRUNING_GRID`, 6 trials by default: a seeded random draw of 6 points),
  ``random``, ``nsga2`` (the default for ``pareto``).
- **Pruning of hopeless trials**: every trial reports its accuracy after each pruning step as
  an intermediate value (and its cost so far as a user attribute). The default pruner,
  :func:`cost_bound_pruner`, stops a trial once its cost so far exceeds the total cost of the
  best feasible finished trial: cost only grows along the steps, so such a trial can never
  end cheaper and so can never be the answer; that is all it discards (it may discard a trial
  that would have met the accuracy budget, never one that would have won). ``threshold``
  (Optuna's ThresholdPruner at the budget's floor) can discard trials that a later step's
  fine-tuning would have brought back within the budget: accuracy is not monotone along the
  steps. ``none`` prunes nothing.
- **Resumable and parallel**: the study lives in an RDB storage (SQLite in the study folder
  by default, any SQLAlchemy URL for a server); workers are processes running the same
  command on the same storage (on GPUs each claims its own slot, icepick.devices; SLURM jobs
  likewise). Heartbeats mark a killed worker's trial stale after ``grace`` seconds; the next
  trial any worker starts fails it and re-queues it with its parameters
  (RetryHeartbeatStaleTrialCallback), and the re-run resumes the killed run from its last
  completed step (its folder and run state are kept). The number of trials is a total over
  every worker: a worker whose trial ends starts no other once the finished trials and those
  running elsewhere make the total (:func:`study_in_hand`).
- **Honest accounting**: :func:`search_cost` sums the training MACs and the times of every
  trial, pruned ones included; the tuned run's record adds it (as the follow-up reports).

Units: accuracies in percent, drops and ``max_drop`` in points, MACs counted, seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icepick.config import ConfigError, check_choice, check_int, check_positive, check_range

__all__ = [
    "Range",
    "SEARCH_SPACE",
    "TUNED_KEYS",
    "PAPER_SETTINGS",
    "ICE_PRUNING_GRID",
    "ICE_PRUNING_TRIALS",
    "TuneConfig",
    "OBJECTIVES",
    "SAMPLERS",
    "PRUNERS",
    "COSTS",
    "icepruning_value",
    "subset_data",
    "storage_url",
    "create_study",
    "cost_bound_prune",
    "cost_bound_pruner",
    "run_study",
    "trials_table",
    "best_settings",
    "search_cost",
    "write_study_report",
    "read_best",
    "tuned_run",
    "study_finished",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ the search space, in one place


@dataclass(frozen=True)
class Range:
    """One knob's range: ``low``..``high`` (log scale when ``log``; in steps of ``step`` when
    given) and the paper's value, where the search starts."""

    low: float
    high: float
    paper: float
    log: bool = False
    step: float | None = None


#: The knobs TPE, random search and NSGA-II draw from, each around the paper's value (Table 1;
#: θ 1.5 and η 0.3 of Figure 3). Δ is drawn as a fraction of ``base`` (``delta_fraction``;
#: Eq. 1 needs 0 < Δ < base): the paper's 7.5e-4 of 1e-3 is 0.75.
SEARCH_SPACE: dict[str, Range] = {
    "theta": Range(0.25, 5.0, 1.5, step=0.25),  # paper 0.5 / 1.5 / 2.5; the follow-up 0.5, 1.5 (7, 9 on ImageNet)
    "eta": Range(0.0, 0.9, 0.3, step=0.1),  # paper 0 / 0.3 / 0.7; the follow-up 0.3, 0.9
    "base": Range(2.5e-4, 1e-2, 1e-3, log=True),  # paper 1e-3; the follow-up 1e-3, 5e-3
    "delta_fraction": Range(0.1, 0.95, 0.75),  # Δ / base; paper 0.75; the follow-up's Δ 6e-4..8e-4
    "p": Range(0.05, 0.3, 0.12),  # paper 0.12; the follow-up 0.1, 0.15, 0.2
    "beta": Range(10.0, 100.0, 50.0, step=5.0),  # paper 50; the follow-up 40, 50, 60
}

#: The run settings a tuned setting fixes (best.json's ``settings``).
TUNED_KEYS = ("theta", "eta", "base", "delta", "p", "beta")

#: The paper's setting (Figure 3's θ and η, Table 1's Eq. 1): the first trial of a TPE study.
PAPER_SETTINGS: dict[str, float] = {"theta": 1.5, "eta": 0.3, "base": 1e-3, "delta": 7.5e-4, "p": 0.12, "beta": 50.0}

#: The follow-up's grid (ICE-Pruning's code, CIFAR-10: 2*2*2*3*3*3 = 216 points); on ImageNet it
#: used theta {7, 9}. ``eta`` is their freezing percentile.
ICE_PRUNING_GRID: dict[str, list[float]] = {
    "theta": [0.5, 1.5],
    "eta": [0.3, 0.9],
    "base": [0.001, 0.005],
    "p": [0.1, 0.15, 0.2],
    "beta": [40.0, 50.0, 60.0],
    "delta": [6e-4, 7e-4, 8e-4],
}
#: Trials the follow-up ran on that grid (6 on CIFAR-10; 7 on ImageNet, 3 for DenseNet).
ICE_PRUNING_TRIALS = 6

OBJECTIVES = ("budget", "icepruning", "pareto")
SAMPLERS = ("auto", "tpe", "grid", "random", "nsga2")
PRUNERS = ("cost", "threshold", "none")
COSTS = ("auto", "macs", "time")

#: The name of the accuracy budget's constraint (Trial.set_constraint): the drop minus max_drop.
BUDGET = "accuracy_budget"
#: Trials TPE draws at random before it models the results (the enqueued paper setting is one).
TPE_STARTUP = 5


@dataclass(frozen=True)
class TuneConfig:
    """One tuning study. Settings not tuned (ratio, seed, criterion, fine-tuning, ...) come from
    the run configuration the study is given (:class:`icepick.algorithm.RunConfig`)."""

    n_trials: int | None = None  # finished trials over every worker; None: 20 (grid: the follow-up's 6)
    objective: str = "budget"  # budget | icepruning | pareto
    cost: str = "auto"  # macs | time; auto: macs (icepruning: time, as the follow-up)
    max_drop: float = 1.0  # points below the unpruned model's accuracy a trial may end (budget, pareto's pick)
    sampler: str = "auto"  # tpe | grid | random | nsga2; auto: tpe (pareto: nsga2)
    pruner: str = "cost"  # cost (cost_bound_pruner) | threshold | none
    subset: float = 0.1  # fraction of the training and the decision/test images each trial sees
    subset_seed: int = 0
    sampler_seed: int = 0
    study_name: str = "icepick-tune"
    storage: str | None = None  # SQLAlchemy URL; None: SQLite in the study folder
    heartbeat: int = 10  # seconds between a running trial's heartbeats
    grace: int = 60  # seconds without a heartbeat after which a trial is stale (its worker died)
    max_retry: int = 3  # re-runs of a stale trial
    enqueue_paper: bool = True  # the paper's setting as the first trial (not for grid)

    def __post_init__(self) -> None:
        if self.n_trials is not None:
            check_int("n_trials", self.n_trials, 1)
        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("cost", self.cost, COSTS)
        check_range("max_drop", self.max_drop, 0.0, 100.0)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("pruner", self.pruner, PRUNERS)
        check_range("subset", self.subset, 0.0, 1.0, low_open=True)
        check_int("subset_seed", self.subset_seed, 0)
        check_int("sampler_seed", self.sampler_seed, 0)
        check_int("heartbeat", self.heartbeat, 1)
        check_int("max_retry", self.max_retry, 0)
        if self.grace <= self.heartbeat:
            raise ConfigError(f"grace: {self.grace} s must be longer than the heartbeat ({self.heartbeat} s), or "
                              "every running trial would look stale")
        if not self.study_name:
            raise ConfigError("study_name: give the study a name")
        if self.resolved_sampler() == "nsga2" and self.objective != "pareto":
            raise ConfigError(f"sampler: nsga2 is for --objective pareto (two objectives), not {self.objective!r}; "
                              "use tpe, grid or random")

    def resolved_sampler(self) -> str:
        if self.sampler != "auto":
            return self.sampler
        return "nsga2" if self.objective == "pareto" else "tpe"

    def resolved_cost(self) -> str:
        if self.cost != "auto":
            return self.cost
        return "time" if self.objective == "icepruning" else "macs"

    def resolved_trials(self) -> int:
        if self.n_trials is not None:
            return self.n_trials
        return ICE_PRUNING_TRIALS if self.resolved_sampler() == "grid" else 20

    def resolved_pruner(self) -> str:
        """The pruner that applies: a cost bound only where the objective is the cost; none for
        two objectives (Optuna prunes single-objective studies only)."""
        if self.objective == "pareto":
            return "none"
        if self.objective == "icepruning" and self.pruner == "cost":
            return "none"
        return self.pruner


# ------------------------------------------------------------------ objectives


def icepruning_value(seconds: float, drop: float) -> float:
    """The follow-up's objective as its code computes it (minimised):
    ``time / max(dacc, time) + dacc / max(dacc, time)``, ``time`` the run's seconds and ``dacc``
    the accuracy drop in points.

    Whenever the time exceeds the drop (always, in seconds against points) it equals
    ``1 + dacc / time``: at the same accuracy loss a trial that takes LONGER scores better, and
    a faster trial is never preferred for being fast. Kept as an option under its own name for
    comparison with the follow-up; not the default.
    """
    top = max(drop, seconds)
    if top <= 0:
        return math.nan
    return seconds / top + drop / top


def _cost(summary: Mapping[str, Any], cost: str, trace_counted: bool = True) -> float:
    """A run's cost: training MACs or seconds, with its freeze trace's."""
    if cost == "macs":
        return float(summary["total_train_macs_with_trace" if trace_counted else "total_train_macs"])
    return float(summary["total_seconds_with_trace" if trace_counted else "total_seconds"])


# ------------------------------------------------------------------ data


def subset_data(data: "ExperimentData", fraction: float, seed: int) -> "ExperimentData":  # noqa: F821
    """A seeded subset of ``fraction`` of each split, drawn per class (at least one image of
    every class a split holds), the same whatever the device; the decision split stays the test
    split when it is one. ``fraction`` 1 returns ``data`` itself."""
    import torch

    from icepick.data import ExperimentData
    from icepick.data.split import subset

    check_range("subset", fraction, 0.0, 1.0, low_open=True)
    if fraction >= 1.0:
        return data

    def pick(split, salt: int):
        labels = split.labels.cpu()
        gen = torch.Generator().manual_seed(seed * 1_000_003 + salt)
        chosen = []
        for c in torch.unique(labels).tolist():
            idx = torch.nonzero(labels == c).flatten()
            n = max(1, round(fraction * len(idx)))
            chosen.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
        index, _ = torch.cat(chosen).sort()
        return subset(split, index.to(split.labels.device))

    train = pick(data.train, 1)
    test = pick(data.test, 2)
    decision = test if data.decision is data.test else pick(data.decision, 3)
    return ExperimentData(train, test, decision, data.info)


# ------------------------------------------------------------------ the study


def storage_url(study_dir: str | Path, storage: str | None) -> str:
    """The study's storage: ``storage`` as given, else SQLite at ``<study_dir>/study.db``."""
    if storage:
        return storage
    return f"sqlite:///{(Path(study_dir) / 'study.db').resolve()}"


def _sampler(cfg: TuneConfig) -> Any:
    import optuna

    # The accuracy budget reaches the samplers as each trial's constraint (Trial.set_constraint,
    # Optuna 5's form of a constraints_func: > 0 is over the budget); TPE and NSGA-II read it.
    kind = cfg.resolved_sampler()
    seed = cfg.sampler_seed
    if kind == "grid":  # Optuna's grid sampler skips the points other workers are running
        return optuna.samplers.GridSampler(ICE_PRUNING_GRID, seed=seed)
    if kind == "random":
        return _trial_seeded(optuna.samplers.RandomSampler, seed)(seed=seed)
    if kind == "nsga2":
        size = max(4, min(50, cfg.resolved_trials() // 3))
        return _trial_seeded(optuna.samplers.NSGAIISampler, seed)(population_size=size, seed=seed)
    return _trial_seeded(optuna.samplers.TPESampler, seed)(n_startup_trials=TPE_STARTUP, seed=seed, multivariate=True)


def trial_seed(sampler_seed: int, number: int) -> int:
    """The seed of trial ``number``'s draws: unique per trial of a study, whichever worker runs it."""
    return (sampler_seed * 1_000_003 + number * 7_919 + 1) % 2**32


def _trial_seeded(cls: type, sampler_seed: int) -> type:
    """``cls`` (a sampler) whose random state is seeded from the trial's number before each
    trial. Every worker's sampler starts from the same seed, so without this two workers would
    draw the same settings; with it, a trial's draws depend on its number (unique in the study)
    and the study's history only, and one worker's study is reproducible."""

    def before_trial(self: Any, study: Any, trial: Any) -> None:
        seed = trial_seed(sampler_seed, trial.number)
        for sampler in (self, getattr(self, "_random_sampler", None)):
            rng = getattr(sampler, "_rng", None)
            if rng is not None:
                rng.rng.seed(seed)
        cls.before_trial(self, study, trial)

    return type(f"TrialSeeded{cls.__name__}", (cls,), {"before_trial": before_trial})


def cost_bound_prune(study: Any, trial: Any) -> bool:
    """The rule of :func:`cost_bound_pruner`: whether ``trial``'s cost so far (its user attribute
    ``cost_so_far``: training MACs or seconds, its freeze trace's included) exceeds the total
    cost of the best feasible finished trial (COMPLETE, within the accuracy budget).

    Cost only grows along a run's steps, so a trial stopped here would end at least that
    expensive: it can never be the study's answer. That is exactly what it discards: it may
    discard a trial that would have met the accuracy budget, never one that would have been
    the cheapest feasible trial. Until a feasible trial has finished it prunes nothing.
    """
    from optuna.trial import TrialState

    so_far = trial.user_attrs.get("cost_so_far")
    if so_far is None:
        return False
    best = [t.user_attrs["cost"] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("constraint", math.inf) <= 0 and "cost" in t.user_attrs]
    return bool(best) and float(so_far) > min(best)


def cost_bound_pruner() -> Any:
    """An Optuna pruner (a BasePruner) applying :func:`cost_bound_prune`: the default."""
    import optuna

    class CostBoundPruner(optuna.pruners.BasePruner):
        """Stops a trial that can no longer be the cheapest feasible one (:func:`cost_bound_prune`)."""

        def prune(self, study: Any, trial: Any) -> bool:
            return cost_bound_prune(study, trial)

    return CostBoundPruner()


def _pruner(cfg: TuneConfig, acc_orig: float | None) -> Any:
    import optuna

    kind = cfg.resolved_pruner()
    if kind == "cost":
        return cost_bound_pruner()
    if kind == "threshold":
        if acc_orig is None:
            raise ConfigError("pruner: threshold needs the unpruned model's accuracy on the subset")
        return optuna.pruners.ThresholdPruner(lower=acc_orig - cfg.max_drop)
    return optuna.pruners.NopPruner()


def create_study(cfg: TuneConfig, study_dir: str | Path, acc_orig: float | None = None) -> Any:
    """The study, created or loaded (``load_if_exists``) from its storage, with heartbeats and a
    retry of stale trials; the paper's setting enqueued first (TPE, random, NSGA-II)."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    Path(study_dir).mkdir(parents=True, exist_ok=True)
    url = storage_url(study_dir, cfg.storage)
    for attempt in range(5):  # workers starting together race to create the storage's tables
        try:
            with _creation_lock(study_dir, url):
                return _open_study(cfg, url, acc_orig)
        except Exception as err:  # noqa: BLE001 - sqlalchemy's errors, imported with optuna
            if type(err).__module__.split(".")[0] != "sqlalchemy" or attempt == 4:
                raise
            log.info("the study's storage was busy (%s); trying again", type(err).__name__)
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _creation_lock(study_dir: str | Path, url: str) -> Iterator[None]:
    """For SQLite in the study folder: one process at a time creates or opens the study (two
    workers creating its tables at once collide in alembic's version table)."""
    if not url.startswith("sqlite:///"):
        yield
        return
    import fcntl

    with open(Path(study_dir) / ".study.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_study(cfg: TuneConfig, url: str, acc_orig: float | None) -> Any:
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(url, engine_kwargs=engine, heartbeat_interval=cfg.heartbeat, grace_period=cfg.grace,
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                 max_retry=cfg.max_retry, inherit_intermediate_values=True))
        directions = ["minimize", "maximize"] if cfg.objective == "pareto" else ["minimize"]
        study = optuna.create_study(storage=storage, study_name=cfg.study_name, sampler=_sampler(cfg),
                                    pruner=_pruner(cfg, acc_orig), directions=directions, load_if_exists=True)
    _check_same_study(study, cfg)
    if cfg.enqueue_paper and cfg.resolved_sampler() != "grid":
        paper = dict(PAPER_SETTINGS)
        params = {k: paper[k] for k in ("theta", "eta", "base", "p", "beta")}
        params["delta_fraction"] = paper["delta"] / paper["base"]
        study.enqueue_trial(params, skip_if_exists=True)
    return study


def _check_same_study(study: Any, cfg: TuneConfig) -> None:
    """A study is tied to its objective, cost, budget, sampler and subset: a worker started with
    other ones would mix trials that answer another question."""
    key = {"objective": cfg.objective, "cost": cfg.resolved_cost(), "max_drop": cfg.max_drop,
           "sampler": cfg.resolved_sampler(), "subset": cfg.subset, "subset_seed": cfg.subset_seed}
    held = study.user_attrs.get("tune")
    if held is None:
        study.set_user_attr("tune", key)
    elif held != key:
        differ = ", ".join(f"{k} {held.get(k)!r} (not {key[k]!r})" for k in key if held.get(k) != key[k])
        raise ConfigError(f"study_name: study {cfg.study_name!r} in its storage was started with {differ}; give "
                          "another --study-name or --out, or the same settings")


def _suggest(trial: Any, cfg: TuneConfig) -> dict[str, float]:
    """The trial's ICE-Pick setting (the keys of :data:`TUNED_KEYS`)."""
    if cfg.resolved_sampler() == "grid":
        return {k: float(trial.suggest_categorical(k, ICE_PRUNING_GRID[k])) for k in TUNED_KEYS}
    values = {}
    for name, r in SEARCH_SPACE.items():
        values[name] = float(trial.suggest_float(name, r.low, r.high, log=r.log, step=r.step))
    values["delta"] = values.pop("delta_fraction") * values["base"]
    return {k: values[k] for k in TUNED_KEYS}


@contextlib.contextmanager
def step_observer(callback: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """Call ``callback(row)`` with each pruning step's record as :func:`run_experiment` makes it,
    before the run saves its state; an exception from the callback (optuna.TrialPruned) stops the
    run there. (run_experiment has no per-step hook; this wraps its step function while a trial runs.)"""
    import icepick.algorithm as algorithm

    original = algorithm._run_step

    def observed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        row = original(*args, **kwargs)
        callback(row)
        return row

    algorithm._run_step = observed
    try:
        yield
    finally:
        algorithm._run_step = original


@dataclass
class StudyContext:
    """What every trial of one worker shares: the run settings not tuned, the model file, the
    subset, the device and the study folder."""

    tune: TuneConfig
    run: "RunConfig"  # noqa: F821
    pretrained: Path
    data: "ExperimentData"  # noqa: F821 - the subset
    device: Any
    study_dir: Path
    show_progress: bool = False


def _trial_folder(ctx: StudyContext, trial: Any) -> Path:
    """The trial's records folder; a re-run of a stale trial keeps the original's (its user
    attributes are copied), so its run resumes from the killed run's last step."""
    name = trial.user_attrs.get("folder")
    if name is None:
        name = f"trial-{trial.number:04d}"
        trial.set_user_attr("folder", name)
    return ctx.study_dir / "trials" / name


def _earlier_rows(summary_out: Path, cfg: "RunConfig") -> list[dict[str, Any]]:  # noqa: F821
    """The completed steps a killed attempt of this run saved (what run_experiment resumes from)."""
    state = summary_out.with_name(summary_out.name + ".state.pt")
    if not state.is_file():
        return []
    from icepick.model_files import load_model

    try:
        _, meta = load_model(state, "cpu")
    except (ValueError, OSError):
        return []
    return list(meta.get("rows") or []) if meta.get("config") == cfg.flat() else []


def _trace_for(ctx: StudyContext, cfg: "RunConfig", folder: Path) -> tuple[dict[str, Any] | None, bool]:  # noqa: F821
    """The trial's freeze trace (made on the subset at its base rate) and whether this call made it."""
    if cfg.eta <= 0:
        return None, False
    from icepick.api import _make_trace
    from icepick.records import read_json, write_json

    path = folder / "trace.json"
    if path.is_file():
        trace = read_json(path)
        if trace.get("config", {}).get("base_lr") == cfg.base:
            return trace, False
    trace = _make_trace(cfg, ctx.pretrained, ctx.data, ctx.device)
    write_json(path, trace)
    return trace, True


def run_trial(trial: Any, ctx: StudyContext) -> float | tuple[float, float]:
    """One trial: the suggested setting as an ICE-Pick run on the subset, reporting the accuracy
    after every step (and its cost so far) and stopping when the pruner says so. Returns the
    objective's value(s); sets the user attributes the study's records read (cost, accuracies,
    the constraint, what the trial cost the search)."""
    import optuna

    from icepick.algorithm import STEP_COLUMNS, run_experiment
    from icepick.records import write_csv, write_json

    cfg_tune = ctx.tune
    cost_kind = cfg_tune.resolved_cost()
    settings = _suggest(trial, cfg_tune)
    cfg = dataclasses.replace(ctx.run, **settings)
    folder = _trial_folder(ctx, trial)
    folder.mkdir(parents=True, exist_ok=True)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    write_json(folder / "settings.json", {"trial": trial.number, "settings": settings, "config": cfg.flat()})
    started = time.perf_counter()
    trace, made_trace = _trace_for(ctx, cfg, folder)
    trace_macs = float(trace["train_macs"]) if trace is not None else 0.0
    trace_seconds = float(trace["seconds"]) if trace is not None else 0.0
    # a re-run of a killed trial reads the trace the killed attempt made: the search paid for it once
    made_trace = bool(made_trace) or bool(trial.user_attrs.get("trace_made"))
    trial.set_user_attr("trace_made", made_trace)
    summary_out = folder / "summary.json"
    rows = _earlier_rows(summary_out, cfg)
    multi = cfg_tune.objective == "pareto"

    def so_far(done: list[dict[str, Any]]) -> float:
        if cost_kind == "macs":
            return trace_macs + float(sum(r["train_macs"] for r in done))
        return trace_seconds + float(sum(r["t_step"] for r in done))

    def on_step(row: dict[str, Any]) -> None:
        rows.append(dict(row))
        trial.set_user_attr("cost_so_far", so_far(rows))
        trial.set_user_attr("steps_done", len(rows))
        if multi:
            return
        trial.report(float(row["acc"]), int(row["step"]))
        if trial.should_prune():
            raise optuna.TrialPruned(f"step {row['step']}: cost so far {so_far(rows):.4g} ({cost_kind}), "
                                     f"accuracy {row['acc']:.2f}%")

    try:
        with step_observer(on_step):
            summary = run_experiment(cfg, ctx.pretrained, ctx.data, folder / "steps.csv", summary_out,
                                     folder / "pruned.pt", trace, ctx.device, ctx.show_progress)
    except optuna.TrialPruned:
        _record_pruned(trial, folder, rows, trace_macs, trace_seconds, made_trace, time.perf_counter() - started,
                       cost_kind, cfg_tune)
        summary_out.with_name(summary_out.name + ".state.pt").unlink(missing_ok=True)
        write_csv(folder / "steps.csv", rows, STEP_COLUMNS)
        raise
    drop = float(summary["acc_orig"]) - float(summary["final_acc"])
    cost = _cost(summary, cost_kind)
    attrs = {
        "acc_orig": float(summary["acc_orig"]), "final_acc": float(summary["final_acc"]), "drop": drop,
        "n_finetunes": int(summary["n_finetunes"]), "n_steps": int(summary["n_steps"]), "cost": cost,
        "test_samples": int(summary["test_samples"]),
        "cost_kind": cost_kind, "train_macs": float(summary["total_train_macs_with_trace"]),
        "seconds": float(summary["total_seconds_with_trace"]), "constraint": drop - cfg_tune.max_drop,
        # what this trial cost the search: its run, and its trace when it made one
        "search_train_macs": float(summary["total_train_macs"]) + (trace_macs if made_trace else 0.0),
        "search_seconds": float(summary["total_seconds"]) + (trace_seconds if made_trace else 0.0),
        "wall_seconds": time.perf_counter() - started,
        "settings": settings,
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    if cfg_tune.objective == "budget":
        trial.set_constraint(BUDGET, drop - cfg_tune.max_drop)
    if cfg_tune.objective == "icepruning":
        return icepruning_value(float(summary["total_seconds"]) if cost_kind == "time" else cost, drop)
    if multi:
        return cost, float(summary["final_acc"])
    return cost


def _record_pruned(trial: Any, folder: Path, rows: list[dict[str, Any]], trace_macs: float, trace_seconds: float,
                   made_trace: bool, wall: float, cost_kind: str, cfg: TuneConfig) -> None:
    """A pruned trial's cost, so that the search's accounting includes it (it is infeasible)."""
    from icepick.records import write_json

    macs = float(sum(r["train_macs"] for r in rows))
    seconds = float(sum(r["t_step"] for r in rows))
    attrs = {
        "cost": (trace_macs + macs) if cost_kind == "macs" else (trace_seconds + seconds), "cost_kind": cost_kind,
        "train_macs": trace_macs + macs, "seconds": trace_seconds + seconds,
        "search_train_macs": macs + (trace_macs if made_trace else 0.0),
        "search_seconds": seconds + (trace_seconds if made_trace else 0.0), "wall_seconds": wall,
        "constraint": math.inf, "pruned_at_step": len(rows),
        "last_acc": float(rows[-1]["acc"]) if rows else math.nan,
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value if not (isinstance(value, float) and math.isinf(value)) else 1e300)
    if cfg.objective == "budget":
        trial.set_constraint(BUDGET, 1e300)  # a pruned trial is never the answer
    write_json(folder / "pruned.json", {**attrs, "constraint": None})


def subset_warnings(cfg: TuneConfig, run: "RunConfig", data: "ExperimentData") -> list[str]:  # noqa: F821
    """What the subset's size does to the study's answer, one line each: accuracies on a subset
    move in steps of one test image, so a budget or a θ below one image means "no image lost"."""
    one = 100.0 / max(len(data.test), 1)
    one_decision = 100.0 / max(len(data.decision), 1)
    out = []
    if cfg.objective != "icepruning" and cfg.max_drop < one:
        out.append(f"max_drop {cfg.max_drop:g} is less than one of the subset's {len(data.test)} test images "
                   f"({one:.2f} points): a trial meets the budget only when it loses no test image at all")
    out.append(f"on the subset one decision image is {one_decision:.2f} points: theta values between multiples of it "
               "decide alike")
    return out


def study_finished(study: Any) -> int:
    """Trials of ``study`` that count towards its total: COMPLETE and PRUNED."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def study_in_hand(study: Any) -> int:
    """Trials that count towards ``study``'s total or will: finished ones (COMPLETE, PRUNED) and
    those running in some worker. A killed worker's trial is failed first (and re-queued) once
    its heartbeat is stale, so it is not taken for one still running."""
    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)))


def stop_at_total(total: int) -> Callable[[Any, Any], None]:
    """The study callback that ends this worker's loop when the trials in hand make ``total``:
    counting the trials other workers are running, not only the finished ones, is what keeps
    N workers from finishing up to N-1 trials more than asked (two workers whose trials end in
    the same instant can still both start one)."""

    def callback(study: Any, trial: Any) -> None:
        if study_in_hand(study) >= total:
            study.stop()

    return callback


def run_study(ctx: StudyContext, *, stop_after: int | None = None) -> Any:
    """Run trials of the study in this process (one worker) until the study holds its total of
    finished trials (:attr:`TuneConfig.resolved_trials`, over every worker). Returns the study.

    ``stop_after``: this worker runs at most this many trials (tests; a share of a budget).
    """
    import optuna

    acc_orig = None
    if ctx.tune.resolved_pruner() == "threshold":
        from icepick.evaluate import accuracy
        from icepick.model_files import load_model

        model, _ = load_model(ctx.pretrained, ctx.device)
        acc_orig = accuracy(model, ctx.data.test)
    for line in subset_warnings(ctx.tune, ctx.run, ctx.data):
        log.warning("%s", line)
    study = create_study(ctx.tune, ctx.study_dir, acc_orig)
    total = ctx.tune.resolved_trials()
    left = total - study_finished(study)
    if stop_after is not None:
        left = min(left, stop_after)
    if left <= 0:
        log.info("study %s already holds %d finished trials (of %d)", ctx.tune.study_name, study_finished(study), total)
        return study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bar = _progress(total, study_finished(study), ctx.show_progress)

    def tick(study_: Any, trial: Any) -> None:
        bar.n = study_finished(study_)
        bar.set_postfix(last=f"#{trial.number} {trial.state.name.lower()}")
        bar.refresh()
        log.info("trial %d %s: %s", trial.number, trial.state.name.lower(), _trial_line(trial))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(lambda t: run_trial(t, ctx), n_trials=left, catch=(),
                       callbacks=[stop_at_total(total), tick])
    bar.close()
    return study


def _progress(total: int, done: int, show: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="tune", unit="trial", disable=not show)


def _trial_line(trial: Any) -> str:
    a = trial.user_attrs
    settings = a.get("settings") or {}
    text = ", ".join(f"{k} {v:.4g}" for k, v in settings.items())
    if "final_acc" in a:
        text += f"; acc {a['final_acc']:.2f}% (drop {a['drop']:.2f}), cost {a['cost']:.4g} {a.get('cost_kind', '')}"
    elif "pruned_at_step" in a:
        text += f"; pruned at step {a['pruned_at_step']}"
    return text


# ------------------------------------------------------------------ the study's records


TRIAL_COLUMNS = [
    "number", "state", "folder", *TUNED_KEYS, "acc_orig", "final_acc", "drop", "feasible", "n_finetunes",
    "n_steps", "cost", "cost_kind", "train_macs", "seconds", "search_train_macs", "search_seconds", "wall_seconds",
    "value", "pruned_at_step",
]


def _settings_of(trial: Any) -> dict[str, float]:
    if "settings" in trial.user_attrs:
        return dict(trial.user_attrs["settings"])
    p = dict(trial.params)
    if "delta_fraction" in p and "base" in p:
        p["delta"] = p.pop("delta_fraction") * p["base"]
    return {k: p[k] for k in TUNED_KEYS if k in p}


def trials_table(study: Any) -> "pd.DataFrame":  # noqa: F821
    """One row per trial (:data:`TRIAL_COLUMNS`): its setting, state, accuracies, cost and what
    it cost the search."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        row = {"number": t.number, "state": t.state.name, "folder": a.get("folder"), **_settings_of(t)}
        for key in ("acc_orig", "final_acc", "drop", "n_finetunes", "n_steps", "cost", "cost_kind", "train_macs",
                    "seconds", "search_train_macs", "search_seconds", "wall_seconds", "pruned_at_step"):
            row[key] = a.get(key)
        constraint = a.get("constraint")
        row["feasible"] = None if constraint is None or t.state.name != "COMPLETE" else bool(constraint <= 0)
        row["value"] = (t.values[0] if t.values and len(t.values) == 1 else
                        (list(t.values) if t.values else None))
        rows.append(row)
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def search_cost(study: Any) -> dict[str, Any]:
    """What the search cost, summed over its trials, pruned ones included: training MACs (runs
    and the freeze traces trials made), the runs' seconds (the method's time, as every run
    reports it) and the trials' wall-clock seconds (data, evaluation and bookkeeping included).
    A trial killed mid-way is re-run from its last completed step, so the steps it finished are
    counted once, by the re-run; only the step it was killed in is lost to the count."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    return {
        "n_trials": len(trials),
        "n_complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "n_failed": sum(t.state == TrialState.FAIL for t in trials),
        "train_macs": float(sum(t.user_attrs.get("search_train_macs", 0.0) for t in counted)),
        "seconds": float(sum(t.user_attrs.get("search_seconds", 0.0) for t in counted)),
        "wall_seconds": float(sum(t.user_attrs.get("wall_seconds", 0.0) for t in counted)),
    }


def best_settings(study: Any, cfg: TuneConfig) -> dict[str, Any]:
    """The study's answer: ``{trial, settings, feasible, ...}``.

    budget: the cheapest feasible COMPLETE trial (ties: the higher accuracy); when no trial met
    the budget, the one with the smallest drop, ``feasible`` False. icepruning: the smallest
    value. pareto: the front (``front``) and, as the pick, its cheapest point within the budget.
    """
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "cost" in t.user_attrs]
    if not done:
        raise ConfigError(f"study: {cfg.study_name!r} has no finished trial yet; run icepick tune (more trials)")
    feasible = [t for t in done if t.user_attrs.get("constraint", math.inf) <= 0]
    out: dict[str, Any] = {}
    if cfg.objective == "icepruning":
        pick = min(done, key=lambda t: t.values[0])
    elif feasible:
        pick = min(feasible, key=lambda t: (t.user_attrs["cost"], -t.user_attrs["final_acc"]))
    else:
        pick = min(done, key=lambda t: (t.user_attrs["drop"], t.user_attrs["cost"]))
    if cfg.objective == "pareto":
        out["front"] = [_trial_record(t) for t in sorted(study.best_trials, key=lambda t: t.values[0])]
    out.update({"trial": pick.number, "settings": _settings_of(pick),
                "feasible": bool(pick.user_attrs.get("constraint", math.inf) <= 0), **_trial_record(pick)})
    return out


def best_test_samples(study: Any) -> int:
    """The subset's test images, as the trials' summaries recorded them (1 when none finished)."""
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("test_samples"):
            return int(t.user_attrs["test_samples"])
    return 1


def _trial_record(t: Any) -> dict[str, Any]:
    a = t.user_attrs
    return {"trial": t.number, "settings": _settings_of(t), "acc_orig": a.get("acc_orig"),
            "final_acc": a.get("final_acc"), "drop": a.get("drop"), "n_finetunes": a.get("n_finetunes"),
            "cost": a.get("cost"), "cost_kind": a.get("cost_kind"), "train_macs": a.get("train_macs"),
            "seconds": a.get("seconds")}


def write_study_report(study: Any, cfg: TuneConfig, run_cfg: "RunConfig", study_dir: str | Path,  # noqa: F821
                       extra: Mapping[str, Any] | None = None, figures: bool = True) -> dict[str, Any]:
    """``trials.csv``, ``best.json`` (the answer, the search cost, the study's settings) and the
    figures (:func:`write_figures`) into ``study_dir``; returns best.json's record."""
    from icepick.records import write_csv, write_json

    out = Path(study_dir)
    write_csv(out / "trials.csv", trials_table(study))
    best = best_settings(study, cfg)
    record = {
        "kind": "icepick-tune",
        "best": best,
        "settings": best["settings"],
        "search_cost": search_cost(study),
        "tune": {**dataclasses.asdict(cfg), "sampler": cfg.resolved_sampler(), "cost": cfg.resolved_cost(),
                 "n_trials": cfg.resolved_trials(), "pruner": cfg.resolved_pruner(), "storage": None},
        "storage": "study.db" if cfg.storage is None else "(given)",
        "run": run_cfg.flat(),
        "paper_settings": PAPER_SETTINGS,
        "one_test_image_points": 100.0 / best_test_samples(study),
        **(dict(extra) if extra else {}),
    }
    if figures:
        record["figures"] = write_figures(study, cfg, out)
    write_json(out / "best.json", record)
    return record


def write_figures(study: Any, cfg: TuneConfig, study_dir: str | Path) -> list[str]:
    """The study's figures from Optuna's own matplotlib visualisation: the optimisation history
    (the cost; Optuna draws the trials over the accuracy budget in grey), the accuracy after
    each step of every trial (intermediate values), the parameter importances (fANOVA; needs
    two finished trials that differ) and, for pareto, the front. PNG files; the names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    out = Path(study_dir)
    written = []
    name = "MACs" if cfg.resolved_cost() == "macs" else "seconds"
    target_name = {"budget": f"training {name}", "icepruning": "ICE-Pruning objective",
                   "pareto": f"training {name}"}[cfg.objective]
    target = (lambda t: t.values[0]) if cfg.objective == "pareto" else None

    def save(stem: str, draw: Callable[[], Any], ylabel: str | None = None) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw()
            first = ax.flat[0] if hasattr(ax, "flat") else ax
            if ylabel:
                first.set_ylabel(ylabel)
            fig = first.figure
            fig.set_size_inches(6.4, 4.2)
            fig.tight_layout()
            from icepick.records import atomic_path

            with atomic_path(out / f"{stem}.png") as tmp:
                fig.savefig(tmp, format="png", dpi=120)
            written.append(f"{stem}.png")
        except (ValueError, RuntimeError, ImportError, ZeroDivisionError, IndexError) as err:
            log.warning("figure %s not drawn: %s", stem, " ".join(str(err).split())[:200])
        finally:
            plt.close("all")

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    save("history", lambda: ovm.plot_optimization_history(study, target=target, target_name=target_name))
    if cfg.objective != "pareto":
        save("intermediate", lambda: ovm.plot_intermediate_values(study), "test accuracy after the step (%)")
    if len(complete) >= 2:
        save("importances", lambda: ovm.plot_param_importances(study, target=target, target_name=target_name))
    if cfg.objective == "pareto":
        save("pareto", lambda: ovm.plot_pareto_front(study, target_names=[target_name, "final accuracy (%)"]))
    return written


def read_best(path: str | Path) -> dict[str, Any]:
    """A best.json written by ``icepick tune``; one line when it is missing or another file."""
    from icepick.records import read_json

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"tuned: {path} does not exist; run `icepick tune --out DIR` first (it writes DIR/best.json)")
    try:
        record = read_json(path)
    except (ValueError, OSError) as err:
        raise ConfigError(f"tuned: {path} is not a best.json of icepick tune ({' '.join(str(err).split())[:120]})")
    if not isinstance(record, dict) or record.get("kind") != "icepick-tune" or not all(
            k in (record.get("settings") or {}) for k in TUNED_KEYS):
        raise ConfigError(f"tuned: {path} is not a best.json of icepick tune (no tuned settings in it)")
    return record


def tuned_settings(best: Mapping[str, Any]) -> dict[str, float]:
    """The run settings a best.json fixes (:data:`TUNED_KEYS`)."""
    return {k: float(best["settings"][k]) for k in TUNED_KEYS}


def with_search_cost(summary: Mapping[str, Any], best: Mapping[str, Any]) -> dict[str, Any]:
    """A tuned run's totals with the search's cost added, as the follow-up reports a tuned run."""
    cost = best["search_cost"]
    return {
        "search_train_macs": float(cost["train_macs"]), "search_seconds": float(cost["seconds"]),
        "search_wall_seconds": float(cost["wall_seconds"]), "search_trials": int(cost["n_trials"]),
        "total_train_macs_with_search": float(summary["total_train_macs_with_trace"]) + float(cost["train_macs"]),
        "total_seconds_with_search": float(summary["total_seconds_with_trace"]) + float(cost["seconds"]),
    }


def tuned_run(best: Mapping[str, Any], run_cfg: "RunConfig", pretrained: str | Path,  # noqa: F821
              data: "ExperimentData", out_dir: str | Path, device: Any, show_progress: bool = True  # noqa: F821
              ) -> dict[str, Any]:
    """The tuned setting as an ICE-Pick run on ``data`` (all of it) through run_experiment into
    ``out_dir`` (trace.json when it freezes, steps.csv, summary.json, pruned.pt, and tuned.json:
    the summary with the search's cost added). Resumes like every run; a finished one is read back."""
    from icepick.algorithm import run_experiment
    from icepick.api import _make_trace
    from icepick.records import read_json, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(run_cfg, method="icepick", **tuned_settings(best))
    trace = None
    if cfg.eta > 0:
        trace_path = out / "trace.json"
        trace = read_json(trace_path) if trace_path.is_file() else None
        if trace is None or trace.get("config", {}).get("base_lr") != cfg.base:
            trace = _make_trace(cfg, Path(pretrained), data, device)
            write_json(trace_path, trace)
    summary_path = out / "summary.json"
    summary = read_json(summary_path) if summary_path.is_file() else None
    if summary is None or summary.get("config") != json.loads(json.dumps(cfg.flat())) or not (out / "pruned.pt").is_file():
        summary = run_experiment(cfg, pretrained, data, out / "steps.csv", summary_path, out / "pruned.pt", trace,
                                 device, show_progress)
    record = {**summary, **with_search_cost(summary, best), "tuned_trial": best["best"]["trial"]}
    write_json(out / "tuned.json", record)
    return record


def worker_env(index: int) -> dict[str, str]:
    """The environment of an extra worker process (``--workers``): the parent's, so each claims
    its own GPU slot through icepick.devices as any job does."""
    env = dict(os.environ)
    env["ICEPICK_TUNE_WORKER"] = str(index)
    return env
