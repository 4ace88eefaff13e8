"""Command ``tune``: an Optuna study over ICE-Pick's settings (θ, η and Eq. 1's base, Δ, p, β).

Argument handling only: the study, its trials (each an ICE-Pick run through
:func:`icepick.algorithm.run_experiment` on a seeded subset), the records, the figures and the
tuned run are :mod:`icepick.tuning`'s. Workers: ``--workers N`` starts N-1 more processes on the
same study (each claims its own GPU slot, icepick.devices); processes started by hand or as
SLURM jobs with the same ``--out`` (or ``--storage`` URL and ``--study-name``) join it too.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from icepick.algorithm import RunConfig
from icepick.commands.common import add_device_args, setup_device
from icepick.commands.prune import (
    _add_data_args,
    _add_finetune_args,
    _check_pretrained,
    _finetune_config,
    _halt_value,
    _normalization,
)
from icepick.criteria import CRITERIA

__all__ = ["register"]

log = logging.getLogger(__name__)

CONVERTED = "pretrained.pt"  # your own weights, as the model file every trial reads


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the tune subcommand."""
    from icepick.tuning import COSTS, OBJECTIVES, PRUNERS, SAMPLERS, TuneConfig

    d, t = RunConfig(), TuneConfig()
    p = subparsers.add_parser(
        "tune", help="choose theta, eta and Eq. 1's values for your model and data: an Optuna study of ICE-Pick "
                     "runs on a subset (docs/tuning.md)",
        description="An Optuna study over ICE-Pick's theta, eta, base, delta, p and beta. Each trial is an ICE-Pick "
                    "run on a seeded subset of the training and test images; by default the answer is the setting "
                    "with the fewest training MACs whose final accuracy stays within --max-drop points of the "
                    "unpruned model's. Writes OUT/best.json (the setting and the search's cost), OUT/trials.csv, "
                    "the figures and each trial's records under OUT/trials/; --final then runs the setting on all "
                    "the data into OUT/final/. Killed, it resumes; several workers can share one study.",
    )
    _add_data_args(p)
    _add_finetune_args(p)
    p.add_argument("--out", required=True, type=Path,
                   help="the study's folder: study.db (unless --storage), best.json, trials.csv, figures, trials/")
    p.add_argument("--n-trials", type=_positive_int, default=None,
                   help="finished trials (complete or pruned) over every worker of the study; default 20 (--sampler "
                        "grid: the follow-up's 6)")
    p.add_argument("--objective", default=t.objective, choices=OBJECTIVES,
                   help="budget: the fewest training MACs (--cost) with the final accuracy within --max-drop of the "
                        "unpruned model's (an Optuna constraint); icepruning: the follow-up's formula time/max(dacc, "
                        "time) + dacc/max(dacc, time), which is 1 + dacc/time and so favours slower trials (kept for "
                        "comparison); pareto: NSGA-II over cost and final accuracy, the front as a figure")
    p.add_argument("--cost", default=t.cost, choices=COSTS,
                   help="what a trial costs: macs (training MACs with the freeze trace's; hardware-independent) or "
                        "time (the run's wall-clock seconds); auto: macs (icepruning: time)")
    p.add_argument("--max-drop", type=float, default=t.max_drop,
                   help="accuracy budget: points below the unpruned model's accuracy a trial may end")
    p.add_argument("--sampler", default=t.sampler, choices=SAMPLERS,
                   help="tpe (from the paper's setting outward), grid (the follow-up's 216-point grid), random, "
                        "nsga2 (pareto); auto: tpe (pareto: nsga2)")
    p.add_argument("--pruner", default=t.pruner, choices=PRUNERS,
                   help="cost: stop a trial once its cost so far exceeds the cheapest feasible finished trial's (it "
                        "can never win); threshold: stop a trial whose accuracy after a step is below the budget (it "
                        "may have recovered later); none")
    p.add_argument("--subset", type=float, default=t.subset,
                   help="fraction of the training and test images (per class, seeded) each trial runs on")
    p.add_argument("--subset-seed", type=int, default=t.subset_seed, help="seed of the subset")
    p.add_argument("--sampler-seed", type=int, default=t.sampler_seed, help="seed of the sampler")
    p.add_argument("--study-name", default=t.study_name, help="the study's name in its storage")
    p.add_argument("--storage", default=None,
                   help="SQLAlchemy URL of the study's storage (a database server for workers on several machines); "
                        "default SQLite at OUT/study.db")
    p.add_argument("--heartbeat", type=int, default=t.heartbeat, help="seconds between a running trial's heartbeats")
    p.add_argument("--grace", type=int, default=t.grace,
                   help="seconds without a heartbeat after which a trial counts as killed: it is failed and run again "
                        "(resuming its run) by the next trial any worker starts")
    p.add_argument("--max-retry", type=int, default=t.max_retry, help="re-runs of a killed trial")
    p.add_argument("--no-paper-first", action="store_true",
                   help="do not enqueue the paper's setting (theta 1.5, eta 0.3, Table 1's Eq. 1) as the first trial")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="worker processes on this machine (this one and N-1 more), each running trials of the study")
    p.add_argument("--final", action="store_true",
                   help="once the study is finished, run its best setting on all the data into OUT/final/ (tuned.json: "
                        "the run's summary with the search's cost added)")
    p.add_argument("--no-figures", action="store_true", help="no figures")
    # the run's settings that are not tuned
    p.add_argument("--lr-policy", default=d.lr_policy, help="icepick (Eq. 1) or fixed")
    p.add_argument("--lr-shape", default=d.finetune.lr_shape, help="constant or one_cycle")
    p.add_argument("--early-halt", type=_halt_value, default=d.finetune.early_halt,
                   help="a fraction in (0, 1) of a fine-tuning's batches, a whole number of batches, or 0")
    p.add_argument("--freeze-bn-stats", action="store_true", help="keep frozen layers' BN statistics fixed")
    p.add_argument("--freeze-layers", default=d.freeze_layers, help="layers ranked for freezing: blocks or all")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="prune only the first N blocks (0 = all)")
    p.add_argument("--criterion", default=d.criterion, help=f"how filters are ranked: {', '.join(CRITERIA)}")
    p.add_argument("--criterion-batches", type=int, default=d.criterion_batches,
                   help="training batches the data criteria read at each step")
    p.add_argument("--coupled", action="store_true", help="also prune the groups that feed a residual addition")
    p.add_argument("--no-eval-cache", action="store_true", help="evaluate the whole model every time")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device_args(p)
    p.set_defaults(func=_tune)


def _run_config(args: argparse.Namespace) -> RunConfig:
    """The run settings every trial shares (the tuned ones are set per trial)."""
    ft = _finetune_config(args, lr_shape=args.lr_shape, early_halt=args.early_halt)
    return RunConfig(
        method="icepick", lr_policy=args.lr_policy, ratio=args.ratio, seed=args.seed,
        decision_split=args.decision_split, val_size=args.val_size, freeze_bn_stats=args.freeze_bn_stats,
        freeze_layers=args.freeze_layers, max_steps=args.max_steps, eval_cache=not args.no_eval_cache,
        criterion=args.criterion, criterion_batches=args.criterion_batches, coupled=args.coupled, finetune=ft,
    )


def _tune_config(args: argparse.Namespace) -> "TuneConfig":  # noqa: F821
    from icepick.tuning import TuneConfig

    return TuneConfig(
        n_trials=args.n_trials, objective=args.objective, cost=args.cost, max_drop=args.max_drop,
        sampler=args.sampler, pruner=args.pruner, subset=args.subset, subset_seed=args.subset_seed,
        sampler_seed=args.sampler_seed, study_name=args.study_name, storage=args.storage, heartbeat=args.heartbeat,
        grace=args.grace, max_retry=args.max_retry, enqueue_paper=not args.no_paper_first,
    )


def _check_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ValueError("tune: Optuna is not installed; install the tune extra: pip install -e '.[tune]' "
                         "(make install does)") from None


def _setup(args: argparse.Namespace):
    """Device, the model file and the full data (normalised as the model expects)."""
    import torch

    from icepick.data import load_experiment_data

    run_cfg = _run_config(args)
    args.out.mkdir(parents=True, exist_ok=True)
    model = _check_pretrained(args, args.out / CONVERTED)
    device = setup_device(args)
    torch.manual_seed(run_cfg.seed)
    data = load_experiment_data(args.data, device, run_cfg.decision_split, run_cfg.val_size, run_cfg.val_seed,
                                _normalization(args.normalize, model), data_memory=args.data_memory)
    return run_cfg, device, data


def _context(args: argparse.Namespace, tune_cfg: Any, run_cfg: RunConfig, device: Any, data: Any) -> Any:
    from icepick.tuning import StudyContext, subset_data

    return StudyContext(tune_cfg, run_cfg, Path(args.pretrained), subset_data(data, tune_cfg.subset,
                        tune_cfg.subset_seed), device, args.out, show_progress=not args.no_progress)


def _worker(args: argparse.Namespace) -> None:
    """An extra worker process (``--workers``): trials of the study only."""
    import logging as _logging
    import os

    # the GPUs the parent saw before it claimed its own slot: this worker claims another one
    if args.visible_devices is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.visible_devices
    _logging.basicConfig(level=_logging.INFO, format="%(asctime)s %(levelname)s %(name)s [worker]: %(message)s")
    from icepick.tuning import run_study

    tune_cfg = _tune_config(args)
    run_cfg, device, data = _setup(args)
    args.no_progress = True
    run_study(_context(args, tune_cfg, run_cfg, device, data))


def _tune(args: argparse.Namespace) -> int:
    _check_optuna()
    import multiprocessing

    from icepick.tuning import read_best, run_study, study_finished, tuned_run

    tune_cfg = _tune_config(args)
    run_cfg = _run_config(args)  # settings checked before anything runs
    if args.workers > 1 and args.storage is None:
        log.info("%d workers share the SQLite study %s/study.db", args.workers, args.out)
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # before this process claims its GPU slot
    run_cfg, device, data = _setup(args)
    ctx = _context(args, tune_cfg, run_cfg, device, data)
    log.info("tuning on %d training and %d test images (%.0f%% subset, seed %d); %d trials, objective %s, cost %s, "
             "sampler %s, pruner %s", len(ctx.data.train), len(ctx.data.test), 100 * tune_cfg.subset,
             tune_cfg.subset_seed, tune_cfg.resolved_trials(), tune_cfg.objective, tune_cfg.resolved_cost(),
             tune_cfg.resolved_sampler(), tune_cfg.resolved_pruner())
    children = []
    if args.workers > 1:
        spawn = multiprocessing.get_context("spawn")
        child_args = argparse.Namespace(**{**vars(args), "workers": 1, "final": False, "pretrained": args.pretrained,
                                           "model": None, "visible_devices": visible})
        for _ in range(args.workers - 1):
            proc = spawn.Process(target=_worker, args=(child_args,))
            proc.start()
            children.append(proc)
    study = run_study(ctx)
    for proc in children:
        proc.join()
    bad = [proc.exitcode for proc in children if proc.exitcode]
    if bad:
        raise ValueError(f"workers: {len(bad)} of the {len(children)} extra worker(s) failed (exit {bad[0]}); see the "
                         "log above, then run icepick tune again to finish the study")
    finished = study_finished(study)
    if finished < tune_cfg.resolved_trials():
        log.warning("the study holds %d of its %d trials: another worker is still running, or run again",
                    finished, tune_cfg.resolved_trials())
    from icepick.records import read_json

    held = read_json(args.out / "best.json") if (args.out / "best.json").is_file() else None
    if held is not None and held.get("search_cost", {}).get("n_trials") == len(study.trials) and args.final:
        record = held  # nothing ran since it was written (the workflow's tuned_run reads it as its input)
    else:
        record = _report(study, tune_cfg, run_cfg, args, ctx)
    _print_answer(record, args.out)
    if args.final:
        if finished < tune_cfg.resolved_trials():
            raise ValueError(f"final: the study holds {finished} of its {tune_cfg.resolved_trials()} trials; finish it "
                             "(run icepick tune again, or wait for its other workers) before --final")
        best = read_best(args.out / "best.json")
        tuned = tuned_run(best, run_cfg, args.pretrained, data, args.out / "final", device, not args.no_progress)
        print(f"Tuned run on all the data: accuracy {tuned['final_acc']:.2f}% (unpruned {tuned['acc_orig']:.2f}%), "
              f"{tuned['n_finetunes']} of {tuned['n_steps']} fine-tuned, {tuned['total_train_macs_with_trace']:.4g} "
              f"training MACs ({tuned['total_train_macs_with_search']:.4g} with the search), "
              f"{tuned['total_seconds_with_trace']:.1f} s ({tuned['total_seconds_with_search']:.1f} s with the search); "
              f"records in {args.out / 'final'}/")
    return 0


def _report(study: Any, tune_cfg: Any, run_cfg: RunConfig, args: argparse.Namespace, ctx: Any) -> dict[str, Any]:
    from icepick.tuning import write_study_report

    return write_study_report(study, tune_cfg, run_cfg, args.out, {
        "subset": {"train": len(ctx.data.train), "test": len(ctx.data.test), "decision": len(ctx.data.decision)},
        "pretrained": str(args.pretrained), "data": str(args.data)}, figures=not args.no_figures)


def _print_answer(record: dict[str, Any], out: Path) -> None:
    best, cost = record["best"], record["search_cost"]
    s = best["settings"]
    line = ", ".join(f"{k} {s[k]:.4g}" for k in ("theta", "eta", "base", "delta", "p", "beta"))
    verdict = "within the budget" if best["feasible"] else "NO trial met the accuracy budget; the smallest drop"
    print(f"Best setting (trial {best['trial']}, {verdict}): {line}")
    if best.get("final_acc") is not None:
        print(f"  on the subset: accuracy {best['final_acc']:.2f}% (unpruned {best['acc_orig']:.2f}%, drop "
              f"{best['drop']:.2f} points), {best['n_finetunes']} fine-tunings, cost {best['cost']:.4g} "
              f"({best['cost_kind']})")
    print(f"Search: {cost['n_trials']} trials ({cost['n_complete']} complete, {cost['n_pruned']} pruned, "
          f"{cost['n_failed']} failed), {cost['train_macs']:.4g} training MACs, {cost['seconds']:.1f} s of runs, "
          f"{cost['wall_seconds']:.1f} s wall")
    print(f"Written to {out}/: best.json, trials.csv, {', '.join(record.get('figures', []))}; each trial in trials/")
