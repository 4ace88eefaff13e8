"""Algorithm 1 of the paper (ICE-Pick), the iterative-pruning baseline and the one-shot baseline.

For each prunable block in forward order: prune it (L1 filters, ratio r); test; if the
accuracy drop from the unpruned model is at least theta, fine-tune at the rate of Eq. 1
(or the fixed rate). Layers chosen by the freeze trace stay frozen throughout. The
baseline fine-tunes a full epoch after every step at the fixed rate, with nothing frozen.
The one-shot baseline prunes every block at once (same order, ratio and criterion, nothing
evaluated in between), then fine-tunes once for as many epochs as the baseline fine-tunes in
all (one per block), at the baseline's fixed rate, with the same KD loss.

A run saves its state after every completed step and resumes from there when started
again, ending with the same records (times aside) as an uninterrupted run.

Evaluation is incremental (``eval_cache``, on by default): each split's
:class:`~icepick.evaluate.Evaluator` keeps the activations at the input of the block pruned
next, as the last evaluation of the current weights computed them, and the next evaluation
after the prune runs only the rest of the model; anything that trains drops them. Counts,
and so every decision and accuracy, are the same as with full passes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import math
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

from icepick.config import ConfigError, check_choice, check_int, check_range
from icepick.criteria import CRITERIA, DATA_CRITERIA, filter_scores
from icepick.data import ExperimentData, check_classes, train_batches
from icepick.distributed import SINGLE, Dist, barrier, broadcast_, is_main
from icepick.evaluate import EvalPass, Evaluator, fold_batchnorm, percent
from icepick.finetune import FinetuneConfig, finetune, finetune_batches, step_seed
from icepick.freezing import (
    FREEZE_LAYERS,
    apply_freezing,
    choose_frozen,
    frozen_batchnorms_to_eval,
    layer_trainable,
    trace_scores,
    trainable_fraction,
    training_macs_per_sample,
)
from icepick.model_files import load_model, save_model
from icepick.pruning import count_macs, count_params, layer_macs, prunable_blocks, prune_block, pruned_layers
from icepick.records import provenance, read_json, write_csv, write_json
from icepick.runtime import synchronize
from icepick import schedule
from icepick.schedule import LR_POLICIES, check_eq1, step_lr

__all__ = [
    "RunConfig",
    "run_experiment",
    "load_teacher",
    "drop_reaches_theta",
    "run_warnings",
    "check_not_trained_on_test",
    "STEP_COLUMNS",
    "FINETUNE_ROW",
]

log = logging.getLogger(__name__)

METHODS = ("icepick", "baseline", "oneshot")
#: The ``block`` of the one-shot baseline's last steps.csv row: its fine-tuning, after every block was pruned.
FINETUNE_ROW = "(fine-tune)"
DECISION_SPLITS = ("test", "val")


@dataclass(frozen=True)
class RunConfig:
    """One pruning experiment. Accuracies and theta in percentage points; ratio and eta fractions."""

    method: str = "icepick"  # 'icepick' (Algorithm 1), 'baseline' (fine-tune after every step) or 'oneshot'
    #                        # (prune every block, then fine-tune one epoch per block)
    lr_policy: str = "icepick"  # 'icepick' (Eq. 1) or 'fixed' (base); the baseline is always 'fixed'
    theta: float = 1.5  # accuracy-drop threshold, points
    eta: float = 0.0  # fraction of conv layers frozen
    ratio: float = 0.4  # r: fraction of each block's filters pruned
    seed: int = 0
    base: float = schedule.BASE  # Eq. 1 base (also the fixed rate)
    delta: float = schedule.DELTA  # Eq. 1 Delta
    p: float = schedule.P  # Eq. 1 p
    beta: float = schedule.BETA  # Eq. 1 beta
    decision_split: str = "test"  # where the threshold is checked: 'test' (paper) or 'val'
    val_size: int = 5000  # images held out of the training set when decision_split = 'val'
    val_seed: int = 0  # the held-out split is the same for every run seed
    freeze_bn_stats: bool = False  # keep frozen layers' BN statistics fixed (code: they update)
    freeze_layers: str = "blocks"  # layers the trace scores for freezing: 'blocks' (authors' trace) or 'all' convs
    max_steps: int = 0  # prune only the first N blocks (0 = all); for quick runs
    eval_batch_size: int = 0  # test batch; 0 = the device's best (1000 on a GPU, 128 on a CPU)
    eval_cache: bool = True  # incremental evaluation (icepick.evaluate.Evaluator); False: every pass in full
    criterion: str = "l1"  # how a block's filters are ranked (icepick.criteria); the paper: 'l1'
    coupled: bool = False  # another CNN: also prune the groups that feed a residual addition (icepick.pruning)
    criterion_batches: int = 4  # training batches the data criteria ('taylor', 'mean_activation') read per step
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        check_choice("lr_policy", self.lr_policy, LR_POLICIES)
        check_range("theta", self.theta, -100.0, 100.0)
        check_range("eta", self.eta, 0.0, 1.0, high_open=True)
        check_range("ratio", self.ratio, 0.0, 1.0, low_open=True, high_open=True)
        check_int("seed", self.seed, 0)
        check_eq1(self.base, self.delta, self.p, self.beta)
        check_choice("freeze_layers", self.freeze_layers, FREEZE_LAYERS)
        check_choice("decision_split", self.decision_split, DECISION_SPLITS)
        check_int("val_size", self.val_size, 1)
        check_int("val_seed", self.val_seed, 0)
        check_int("max_steps", self.max_steps, 0)
        check_int("eval_batch_size", self.eval_batch_size, 0)
        check_choice("criterion", self.criterion, CRITERIA)
        check_int("criterion_batches", self.criterion_batches, 1)
        for key in ("eval_cache", "coupled"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key}: {getattr(self, key)!r} must be true or false")
        if self.method in ("baseline", "oneshot"):
            if self.eta != 0:
                raise ConfigError(f"eta: {self.eta} is not allowed for method '{self.method}', which freezes nothing; use 0")
            if self.lr_policy != "fixed":
                raise ConfigError(f"lr_policy: method '{self.method}' fine-tunes at the fixed rate; use 'fixed'")
            if self.finetune.lr_shape != "constant":
                raise ConfigError(
                    f"lr_shape: {self.finetune.lr_shape!r} is not allowed for method '{self.method}', which fine-tunes "
                    "at a constant rate (the paper's fixed lr 0.001); use 'constant'"
                )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """Build from a flat dict (fine-tuning keys included); unknown keys raise ConfigError."""
        ft_keys = {f.name for f in dataclasses.fields(FinetuneConfig)}
        run_keys = {f.name for f in dataclasses.fields(cls)} - {"finetune"}
        unknown = sorted(set(values) - ft_keys - run_keys)
        if unknown:
            raise ConfigError(f"unknown run setting(s) {unknown}; known: {sorted(ft_keys | run_keys)}")
        ft = FinetuneConfig(**{k: v for k, v in values.items() if k in ft_keys})
        return cls(**{k: v for k, v in values.items() if k in run_keys}, finetune=ft)

    def flat(self) -> dict[str, Any]:
        """All settings as one flat dict (the inverse of ``from_dict``)."""
        values = asdict(self)
        values.update(values.pop("finetune"))
        return values


def load_teacher(path: str | Path, device: torch.device) -> nn.Module:
    """The unpruned pretrained model as a frozen, eval-mode teacher, its BatchNorms folded.

    Folded once here (:func:`icepick.evaluate.fold_batchnorm`: the same function, one pass
    fewer per layer), so that no fine-tuning of the run folds it again.
    """
    teacher, _ = load_model(path, device)
    return fold_batchnorm(teacher)


def _state_path(summary_out: Path) -> Path:
    return summary_out.with_name(summary_out.name + ".state.pt")


def _frozen_layers(cfg: RunConfig, trace: dict[str, Any] | None, model: nn.Module) -> list[str]:
    if cfg.method != "icepick" or cfg.eta == 0:
        return []
    if trace is None:
        raise ConfigError(f"eta: {cfg.eta} freezes layers, which needs a freeze trace (--trace trace.json)")
    return choose_frozen(model, trace_scores(trace), cfg.eta, cfg.freeze_layers)


def drop_reaches_theta(correct_orig: int, correct: int, total: int, theta: float) -> bool:
    """Line 6 of Algorithm 1, ``acc_orig - acc >= theta``, decided exactly on counts of correct images.

    ``(correct_orig - correct) / total * 100 >= theta`` is evaluated in rational arithmetic with
    theta read as the decimal it is written as, so a drop of exactly theta (150 of 10,000
    images at theta 1.5) always counts, whatever float rounding would make of the accuracies.
    """
    return Fraction(correct_orig - correct) * 100 >= Fraction(repr(float(theta))) * total


def _should_finetune(cfg: RunConfig, correct_orig: int, correct: int, total: int) -> bool:
    """Fine-tune when the drop is at least theta (the baseline: always)."""
    return cfg.method == "baseline" or drop_reaches_theta(correct_orig, correct, total, cfg.theta)


def _check_halt_interval(ft_cfg: FinetuneConfig, n_train: int) -> None:
    """An early-halt interval given in batches must be shorter than one fine-tuning."""
    batches = finetune_batches(n_train, ft_cfg)
    if ft_cfg.early_halt >= 1 and int(ft_cfg.early_halt) >= batches:
        raise ConfigError(
            f"early_halt: {int(ft_cfg.early_halt)} batches is not shorter than one fine-tuning "
            f"({batches} batch{'es' if batches != 1 else ''} of {ft_cfg.batch_size} here), so it would never check; "
            "give a fraction of an epoch such as 0.25, or 0 for full epochs"
        )


@dataclass(frozen=True)
class _Reference:
    """The unpruned model's correct-image counts on the test and decision splits."""

    test_correct: int
    decision_correct: int


def run_experiment(
    cfg: RunConfig,
    pretrained: str | Path,
    data: ExperimentData,
    steps_out: str | Path,
    summary_out: str | Path,
    model_out: str | Path,
    trace: dict[str, Any] | None = None,
    device: torch.device | None = None,
    show_progress: bool = True,
    dist: Dist = SINGLE,
) -> dict[str, Any]:
    """Run one pruning experiment and write its records (steps CSV, summary JSON, pruned model).

    Resumes from ``<summary_out>.state.pt`` when a previous attempt with the same config left
    one. Returns the summary dict.

    On several processes (``dist``: every rank calls this with the same arguments, each on its
    own device) every rank prunes the same filters, fine-tunes on its slice of each global
    batch and counts its shard of each evaluation, and the counts are summed, so all ranks take
    the same decisions (:mod:`icepick.distributed`); rank 0 alone writes the records and the
    state, which every rank reads to resume. Every rank returns the summary.
    """
    from tqdm import tqdm

    device = device or torch.device("cpu")
    steps_out, summary_out, model_out = Path(steps_out), Path(summary_out), Path(model_out)
    state_path = _state_path(summary_out)
    # Eval-mode BN and the baseline/ICE-Pick switch happen per step; the teacher never changes.
    teacher = load_teacher(pretrained, device)
    model, _ = load_model(pretrained, device)
    check_classes(model, data.info, pretrained)
    check_not_trained_on_test(pretrained, data)
    frozen = _frozen_layers(cfg, trace, model)
    if cfg.method != "icepick":  # the baselines fine-tune whole epochs
        ft_cfg = dataclasses.replace(cfg.finetune, early_halt=0)
    else:
        ft_cfg = cfg.finetune
    _check_halt_interval(ft_cfg, len(data.train))
    blocks = [name for name, _ in prunable_blocks(model, cfg.coupled)]
    if not blocks:
        raise ConfigError(f"model: {model.arch_name} has no prunable group (every one feeds a residual addition or the "
                          f"classifier); try --coupled, or see python -m icepick blocks --model {model.arch_name}")
    n_steps = min(len(blocks), cfg.max_steps) if cfg.max_steps else len(blocks)
    params_orig = count_params(model)
    # every fine-tuning batch also runs the teacher's forward pass (the KD term)
    teacher_macs = count_macs(teacher) if ft_cfg.kd_weight else 0

    pretrained_digest = _file_digest(pretrained)
    state = _load_state(state_path, cfg, pretrained_digest, device)
    evals = _Evaluators(cfg, data, dist)
    if state is not None:
        model, meta = state
        rows: list[dict[str, Any]] = meta["rows"]
        ref, elapsed = _Reference(meta["test_correct_orig"], meta["decision_correct_orig"]), meta["elapsed"]
        log.info("resuming %s from step %d of %d", summary_out, len(rows), n_steps)
        evals.restore(model, meta.get("eval_cache") or {})  # the caches the uninterrupted run would hold
    else:
        rows = []
        first = blocks[0] if n_steps else None  # the unpruned model's pass keeps the first block's input
        test_correct = evals.test.evaluate(model, first).correct
        same = data.decision is data.test
        ref = _Reference(test_correct, test_correct if same else evals.decision.evaluate(model, first).correct)
        elapsed = 0.0
    log.info("unpruned accuracy %.2f%% (decision split %.2f%%); %d steps; frozen %d layers",
             percent(ref.test_correct, len(data.test)), percent(ref.decision_correct, len(data.decision)),
             n_steps, len(frozen))
    warnings = run_warnings(cfg, ft_cfg, data, ref)
    for line in warnings:
        log.warning("%s", line)

    if cfg.method == "oneshot":
        oneshot = _OneShot(cfg, ft_cfg, model, teacher, data, evals, blocks[:n_steps], params_orig, ref, device,
                           teacher_macs, state_path, pretrained, pretrained_digest)
        rows = oneshot.run(rows, elapsed, meta.get("oneshot") if state is not None else None, show_progress)
        n_steps = 0  # every step is done: the loop below has nothing left
    bar = tqdm(total=n_steps, initial=min(len(rows), n_steps), desc=f"{cfg.method} r={cfg.ratio} eta={cfg.eta}",
               unit="step", disable=not show_progress)
    for step in range(len(rows) + 1, n_steps + 1):
        next_block = blocks[step] if step < n_steps else None  # the block whose input evaluations keep
        row = _run_step(cfg, ft_cfg, model, teacher, data, evals, frozen, step, blocks[step - 1], next_block,
                        params_orig, ref, device, teacher_macs)
        elapsed += row["t_step"]
        row["t_cumulative"] = elapsed
        row["train_macs_cumulative"] = row["train_macs"] + (rows[-1]["train_macs_cumulative"] if rows else 0)
        rows.append(row)
        log.info(
            "step %d/%d %s: acc %.2f%% after prune (drop %.2f) -> %s, lr %.6f, acc %.2f%%, %.1fs",
            step, n_steps, row["block"], row["acc_pruned"], row["drop"],
            "fine-tuned" if row["finetuned"] else "skipped", row["lr"], row["acc"], row["t_step"],
        )
        if is_main(dist):
            save_model(model, state_path, {
                "kind": "run-state", "config": cfg.flat(), "pretrained": str(pretrained),
                "pretrained_sha256": pretrained_digest, "rows": rows, "test_correct_orig": ref.test_correct,
                "decision_correct_orig": ref.decision_correct, "elapsed": elapsed, "eval_cache": evals.state(),
            })
        bar.update(1)
        bar.set_postfix(acc=f"{row['acc']:.2f}", ft=sum(r["finetuned"] for r in rows))
    bar.close()

    summary = _summary(cfg, rows, ref, data, trace, len(frozen), model, params_orig, teacher_macs, device)
    summary["warnings"] = warnings
    summary["distributed"] = dist.record()
    if is_main(dist):
        save_model(model, model_out, {"kind": "pruned", "config": cfg.flat()})
        write_csv(steps_out, rows, STEP_COLUMNS)
        write_json(summary_out, summary)
        state_path.unlink(missing_ok=True)
    barrier(dist)  # every rank returns once the records are written
    return summary


CHANCE_MARGIN = 5.0  # points above chance (the largest class's share) under which a model is taken for untrained
FEW_BATCHES = 20  # a fine-tuning of fewer batches recovers little
FEW_IMAGES = 5  # a class with fewer images than this in a split: its accuracy is noise
TRAINED_ON_TEST = 0.01  # share of the test images found among the model's training images that stops a run


def check_not_trained_on_test(pretrained: str | Path, data: ExperimentData) -> None:
    """Refuse a run whose test (or decision) images were among the images the model was trained on
    (a data set imported again with another split): its accuracies would be inflated. A model
    file records a fingerprint of its training images when icepick trained it; a few exact
    duplicates (under 1%, as real data sets hold) only give a warning."""
    import numpy as np

    from icepick.model_files import image_hashes, training_hashes

    seen = training_hashes(pretrained)
    if seen is None:
        return
    splits = [("test", data.test)] + ([("decision", data.decision)] if data.decision is not data.test else [])
    for name, split in splits:
        overlap = int(np.isin(image_hashes(split.images), seen).sum())
        if overlap > TRAINED_ON_TEST * len(split):
            raise ConfigError(
                f"pretrained: {pretrained} was trained on {overlap} of the {len(split)} {name} images of this data set "
                f"(was it imported again with another split?); its accuracies here would be inflated: pretrain it on "
                f"this data set, or run on the data set it was trained on")
        if overlap:
            log.warning("%d of the %d %s images are exact copies of images the model was trained on", overlap,
                        len(split), name)


def run_warnings(cfg: RunConfig, ft_cfg: FinetuneConfig, data: ExperimentData, ref: "_Reference") -> list[str]:
    """What may make a run's answer meaningless, one line each (logged, and the summary's ``warnings``):
    an unpruned model near chance, a threshold below one decision image, fine-tunings of very few
    batches, and classes with very few images."""
    out = []
    n_test, n_dec = len(data.test), len(data.decision)
    counts = torch.bincount(data.test.labels.cpu(), minlength=1)
    chance = 100.0 * int(counts.max()) / max(n_test, 1)
    acc = percent(ref.test_correct, n_test)
    if acc < chance + CHANCE_MARGIN:
        out.append(f"the unpruned model classifies {acc:.1f}% of the test images correctly, within "
                   f"{CHANCE_MARGIN:g} points of chance ({chance:.1f}%, the largest class): it is untrained, or it "
                   f"expects other inputs (normalisation: --normalize; image size); every step will look free")
    one_image = 100.0 / max(n_dec, 1)
    if cfg.method == "icepick" and 0 < cfg.theta < one_image:
        out.append(f"theta {cfg.theta:g} is less than one of the {n_dec} decision images ({one_image:.2f} points): a "
                   f"step is skipped only when it loses no image at all")
    batches = finetune_batches(len(data.train), ft_cfg)
    epoch = finetune_batches(len(data.train), dataclasses.replace(ft_cfg, max_batches=0))
    if batches < FEW_BATCHES and batches < epoch:
        out.append(f"a fine-tuning is capped at {batches} batch{'es' if batches != 1 else ''} (max_batches): too few "
                   f"steps to recover from a prune; fine for a quick check, not for results")
    elif batches < FEW_BATCHES:
        better = max(1, 2 ** int(math.log2(max(len(data.train) // FEW_BATCHES, 1))))
        out.append(f"a fine-tuning is {batches} batch{'es' if batches != 1 else ''} ({len(data.train)} training images "
                   f"at batch {ft_cfg.batch_size}): too few steps to recover from a prune; a batch size of {better} "
                   f"gives {math.ceil(len(data.train) / better)}")
    names = data.info.classes if data.info is not None else ()
    for split_name, split in (("training", data.train), ("test", data.test)):
        per_class = torch.bincount(split.labels.cpu(), minlength=len(names) or 1)
        few = [(c, int(n)) for c, n in enumerate(per_class.tolist()) if n < FEW_IMAGES]
        if few:
            shown = ", ".join(f"{names[c] if c < len(names) else c} ({n})" for c, n in few[:4])
            out.append(f"{len(few)} class{'es' if len(few) > 1 else ''} {'have' if len(few) > 1 else 'has'} fewer than "
                       f"{FEW_IMAGES} {split_name} images ({shown}{', ...' if len(few) > 4 else ''}): "
                       f"{'its' if len(few) == 1 else 'their'} accuracy is noise")
    return out


STEP_COLUMNS = [
    "step", "block", "params", "alpha", "macs", "acc_pruned", "decision_acc", "decision_correct", "drop",
    "finetuned", "lr", "ft_batches", "ft_samples", "halted_early", "acc_finetuned", "acc", "eval_samples",
    "eval_macs", "eval_macs_saved", "t_prune", "t_test", "t_finetune", "t_step", "t_cumulative", "report_samples",
    "t_report",
    "trainable_fraction", "train_macs", "train_macs_cumulative",
]


def _run_step(
    cfg: RunConfig,
    ft_cfg: FinetuneConfig,
    model: nn.Module,
    teacher: nn.Module,
    data: ExperimentData,
    evals: _Evaluators,
    frozen: list[str],
    step: int,
    block: str,
    next_block: str | None,
    params_orig: int,
    ref: _Reference,
    device: torch.device,
    teacher_macs: int,
) -> dict[str, Any]:
    """Prune one block, test, and fine-tune if the drop calls for it. Returns the step's record.

    The method's time is prune + test + fine-tune. With a held-out decision split, the passes
    over the test split that only report the accuracy are timed apart (``t_report``).

    Every evaluation keeps the input of ``next_block`` (the block the next step prunes) in its
    split's cache; the first evaluations after the prune start from the input of ``block``
    when their cache holds it. A fine-tuning drops the caches; an early-halt check keeps its
    own only when the fine-tuning stops there.
    """
    same = data.decision is data.test
    n_dec = len(data.decision)
    work = _EvalWork()
    clock = _Clock(device)
    prune_block(model, block, cfg.ratio, scores=_filter_scores(cfg, model, data, block, step, evals.dist))
    apply_freezing(model, frozen)  # pruning made new parameters: freeze them again by name
    t_prune = clock.lap()

    decision_correct = work.count(evals.decision, model, next_block)
    eval_samples, report_samples, t_report = n_dec, 0, 0.0
    t_test = clock.lap()
    if same:
        test_correct = decision_correct
    else:
        test_correct = work.count(evals.test, model, next_block)
        report_samples += len(data.test)
        t_report += clock.lap()

    acc_pruned = percent(test_correct, len(data.test))
    params = count_params(model)
    alpha = params / params_orig
    row: dict[str, Any] = {
        "step": step, "block": block, "params": params, "alpha": alpha, "macs": count_macs(model),
        "acc_pruned": acc_pruned, "decision_acc": percent(decision_correct, n_dec),
        "decision_correct": decision_correct, "drop": percent(ref.decision_correct - decision_correct, n_dec),
        "finetuned": False, "lr": 0.0, "ft_batches": 0, "ft_samples": 0, "halted_early": False,
        "acc_finetuned": float("nan"), "acc": acc_pruned, "trainable_fraction": trainable_fraction(model),
        "train_macs": 0,
    }
    clock.lap()  # bookkeeping above is not the method's time
    t_finetune = 0.0
    if _should_finetune(cfg, ref.decision_correct, decision_correct, n_dec):
        policy = "fixed" if cfg.method == "baseline" else cfg.lr_policy
        lr = step_lr(policy, alpha, cfg.base, cfg.delta, cfg.p, cfg.beta)
        checks: list[int] = []

        def should_stop() -> bool:  # Figure 1, case (4): stop once the loss is below theta
            checks.append(work.count(evals.decision, model, next_block))
            stop = not drop_reaches_theta(ref.decision_correct, checks[-1], n_dec, cfg.theta)
            if not stop:  # training goes on: what this check kept will be stale
                evals.decision.invalidate()
            return stop

        on_train = (lambda m: frozen_batchnorms_to_eval(m, frozen)) if cfg.freeze_bn_stats else None
        evals.invalidate()  # fine-tuning changes the layers before the next block
        result = finetune(model, teacher, data.train, lr, ft_cfg, step_seed(cfg.seed, step), should_stop, on_train,
                          dist=evals.dist)
        if not result.halted_early:
            evals.invalidate()
        eval_samples += len(checks) * n_dec
        if same and result.halted_early:
            test_ft = checks[-1]
            t_finetune = clock.lap()
        elif same:  # the authors' loop tests again after every fine-tuning: the method's time
            test_ft = work.count(evals.test, model, next_block)
            eval_samples += len(data.test)
            t_finetune = clock.lap()
        else:
            t_finetune = clock.lap()
            test_ft = work.count(evals.test, model, next_block)
            report_samples += len(data.test)
            t_report += clock.lap()
        acc_ft = percent(test_ft, len(data.test))
        per_sample = training_macs_per_sample(layer_macs(model), layer_trainable(model), teacher_macs)
        row.update(finetuned=True, lr=lr, ft_batches=result.batches, ft_samples=result.samples,
                   halted_early=result.halted_early, acc_finetuned=acc_ft, acc=acc_ft,
                   train_macs=result.samples * per_sample)
    row.update(eval_samples=eval_samples, eval_macs=work.macs, eval_macs_saved=work.saved,
               report_samples=report_samples, t_prune=t_prune, t_test=t_test,
               t_finetune=t_finetune, t_step=t_prune + t_test + t_finetune, t_report=t_report)
    return row


class _OneShot:
    """The one-shot baseline: every block pruned at once (forward order, the run's ratio and
    criterion, no evaluation in between), one test of the pruned model for the records, then one
    fine-tuning of as many epochs as blocks were pruned (the iterative baseline's total), at the
    fixed rate with the KD loss, and the test after it.

    Records: one steps.csv row per pruned block (nothing fine-tuned; accuracies empty but on the
    last, which holds the test of the whole pruned model), then one row whose ``block`` is
    :data:`FINETUNE_ROW` and whose ``step`` is one past the last block: the fine-tuning, its
    batches, images, training MACs and time, and the final accuracy. The run's state is saved
    once every block is pruned and after every epoch of the fine-tuning, and a run resumes from it.
    """

    def __init__(self, cfg: RunConfig, ft_cfg: FinetuneConfig, model: nn.Module, teacher: nn.Module,
                 data: ExperimentData, evals: "_Evaluators", blocks: list[str], params_orig: int, ref: "_Reference",
                 device: torch.device, teacher_macs: int, state_path: Path, pretrained: str | Path,
                 pretrained_digest: str) -> None:
        self.cfg, self.ft_cfg, self.model, self.teacher, self.data = cfg, ft_cfg, model, teacher, data
        self.evals, self.blocks, self.params_orig, self.ref, self.device = evals, blocks, params_orig, ref, device
        self.teacher_macs, self.state_path = teacher_macs, state_path
        self.pretrained, self.pretrained_digest = pretrained, pretrained_digest

    def run(self, rows: list[dict[str, Any]], elapsed: float, progress: dict[str, Any] | None,
            show_progress: bool) -> list[dict[str, Any]]:
        """Every row of the run; ``rows``, ``elapsed`` and ``progress`` are those of a saved state (or empty)."""
        if not rows:
            rows = self._prune_all()
            progress = {"epochs": 0, "batches": 0, "samples": 0, "seconds": 0.0}
            self._save(rows, progress)
        return rows + [self._finetune(rows, dict(progress or {}), show_progress)]

    def _prune_all(self) -> list[dict[str, Any]]:
        cfg, model, data = self.cfg, self.model, self.data
        rows: list[dict[str, Any]] = []
        elapsed = 0.0
        clock = _Clock(self.device)
        for step, block in enumerate(self.blocks, start=1):
            prune_block(model, block, cfg.ratio, scores=_filter_scores(cfg, model, data, block, step, self.evals.dist))
            t_prune = clock.lap()
            params = count_params(model)
            elapsed += t_prune
            rows.append({
                "step": step, "block": block, "params": params, "alpha": params / self.params_orig,
                "macs": count_macs(model), "acc_pruned": float("nan"), "decision_acc": float("nan"),
                "decision_correct": float("nan"), "drop": float("nan"), "finetuned": False, "lr": 0.0,
                "ft_batches": 0, "ft_samples": 0, "halted_early": False, "acc_finetuned": float("nan"),
                "acc": float("nan"), "eval_samples": 0, "eval_macs": 0, "eval_macs_saved": 0, "t_prune": t_prune,
                "t_test": 0.0, "t_finetune": 0.0, "t_step": t_prune, "t_cumulative": elapsed, "report_samples": 0,
                "t_report": 0.0, "trainable_fraction": trainable_fraction(model), "train_macs": 0,
                "train_macs_cumulative": 0,
            })
            clock.lap()  # bookkeeping is not the method's time
        if rows:  # the pruned model's accuracy: for the records only (the method tests nothing here)
            work = _EvalWork()
            correct = work.count(self.evals.test, model, None)
            n_test = len(data.test)
            last = rows[-1]
            last.update(acc_pruned=percent(correct, n_test), acc=percent(correct, n_test), report_samples=n_test,
                        eval_macs=work.macs, eval_macs_saved=work.saved, t_report=clock.lap())
            if data.decision is data.test:
                last.update(decision_acc=percent(correct, n_test), decision_correct=correct,
                            drop=percent(self.ref.decision_correct - correct, n_test))
        return rows

    def _finetune(self, rows: list[dict[str, Any]], progress: dict[str, Any], show_progress: bool) -> dict[str, Any]:
        """Fine-tune one epoch per pruned block (resuming after ``progress['epochs']``); the last row."""
        from tqdm import tqdm

        cfg, model, data = self.cfg, self.model, self.data
        last = rows[-1] if rows else {"params": self.params_orig, "alpha": 1.0, "macs": count_macs(model),
                                      "acc_pruned": percent(self.ref.test_correct, len(data.test)),
                                      "t_cumulative": 0.0}
        epochs = len(rows)
        lr = step_lr("fixed", float(last["alpha"]), cfg.base, cfg.delta, cfg.p, cfg.beta)
        self.evals.invalidate()
        bar = tqdm(total=epochs, initial=progress["epochs"], desc=f"oneshot fine-tuning r={cfg.ratio}", unit="epoch",
                   disable=not show_progress)
        for epoch in range(progress["epochs"], epochs):
            clock = _Clock(self.device)
            result = finetune(model, self.teacher, data.train, lr, self.ft_cfg, step_seed(cfg.seed, epochs + 1 + epoch),
                              dist=self.evals.dist)
            progress.update(epochs=epoch + 1, batches=progress["batches"] + result.batches,
                            samples=progress["samples"] + result.samples, seconds=progress["seconds"] + clock.lap())
            self._save(rows, progress)
            bar.update(1)
        bar.close()
        clock = _Clock(self.device)
        work = _EvalWork()
        correct = work.count(self.evals.test, model, None)  # the test after a fine-tuning: the method's time
        t_finetune = progress["seconds"] + clock.lap()
        acc = percent(correct, len(data.test))
        per_sample = training_macs_per_sample(layer_macs(model), layer_trainable(model), self.teacher_macs)
        train_macs = progress["samples"] * per_sample if epochs else 0
        log.info("one-shot: %d blocks pruned, acc %.2f%% -> fine-tuned %d epochs (%d batches) at lr %g -> acc %.2f%%",
                 epochs, float(last["acc_pruned"]), epochs, progress["batches"], lr, acc)
        return {
            "step": epochs + 1, "block": FINETUNE_ROW, "params": last["params"], "alpha": last["alpha"],
            "macs": last["macs"], "acc_pruned": last["acc_pruned"], "decision_acc": last.get("decision_acc", float("nan")),
            "decision_correct": last.get("decision_correct", float("nan")), "drop": last.get("drop", float("nan")),
            "finetuned": bool(epochs), "lr": lr if epochs else 0.0, "ft_batches": progress["batches"],
            "ft_samples": progress["samples"], "halted_early": False, "acc_finetuned": acc if epochs else float("nan"),
            "acc": acc, "eval_samples": len(data.test), "eval_macs": work.macs, "eval_macs_saved": work.saved,
            "t_prune": 0.0, "t_test": 0.0, "t_finetune": t_finetune, "t_step": t_finetune,
            "t_cumulative": float(last["t_cumulative"]) + t_finetune, "report_samples": 0, "t_report": 0.0,
            "trainable_fraction": trainable_fraction(model), "train_macs": train_macs,
            "train_macs_cumulative": train_macs,
        }

    def _save(self, rows: list[dict[str, Any]], progress: dict[str, Any]) -> None:
        if not is_main(self.evals.dist):
            return
        save_model(self.model, self.state_path, {
            "kind": "run-state", "config": self.cfg.flat(), "pretrained": str(self.pretrained),
            "pretrained_sha256": self.pretrained_digest, "rows": rows, "test_correct_orig": self.ref.test_correct,
            "decision_correct_orig": self.ref.decision_correct, "elapsed": rows[-1]["t_cumulative"] if rows else 0.0,
            "eval_cache": {"test": None, "decision": None}, "oneshot": progress,
        })


def _filter_scores(cfg: RunConfig, model: nn.Module, data: ExperimentData, block: str, step: int,
                   dist: Dist = SINGLE) -> torch.Tensor:
    """The run's criterion on ``block``: data criteria read ``criterion_batches`` training batches
    (no augmentation, in the order of the step's seed); ``random`` draws from the step's seed.
    ``bn_scale`` first checks that every step of the run has a BatchNorm to read (ConfigError at
    the first step, before anything is pruned, rather than a failure mid-run). On several
    processes every rank computes them and takes rank 0's, so every rank prunes the same filters."""
    seed = step_seed(cfg.seed, step)
    batches = None
    if cfg.criterion in DATA_CRITERIA:
        epoch = train_batches(data.train, cfg.finetune.batch_size, seed, augment=False)
        batches = itertools.islice(epoch, cfg.criterion_batches)
    if cfg.criterion == "bn_scale":  # every step must have its BatchNorm: said before the first prune
        from icepick.criteria import check_criterion

        steps = [(name, pruned_layers(model, blk)[1]) for name, blk in prunable_blocks(model, cfg.coupled)]
        check_criterion(cfg.criterion, steps, str(getattr(model, "arch_name", type(model).__name__)))
    conv, bn = pruned_layers(model, model.get_submodule(block))
    scores = filter_scores(model, conv, bn, cfg.criterion, seed, batches)
    if dist.active:  # NCCL needs the tensor on this rank's GPU; the dtype stays (ties and order as computed)
        device = next(model.parameters()).device
        scores = broadcast_(scores.detach().to(device).contiguous(), dist).to(scores.device)
    return scores


class _Evaluators:
    """A run's evaluators: the test split's and the decision split's (the same one when the
    decision is made on the test split)."""

    def __init__(self, cfg: RunConfig, data: ExperimentData, dist: Dist = SINGLE) -> None:
        self.dist = dist
        self.test = Evaluator(data.test, cfg.eval_batch_size, cfg.eval_cache, "test", dist)
        self.decision = self.test if data.decision is data.test else Evaluator(
            data.decision, cfg.eval_batch_size, cfg.eval_cache, "decision", dist)

    def invalidate(self) -> None:
        self.test.invalidate()
        self.decision.invalidate()

    def state(self) -> dict[str, str | None]:
        """The block whose input each split's cache holds (saved with a run's state)."""
        return {"test": self.test.cached_block, "decision": self.decision.cached_block}

    def restore(self, model: nn.Module, state: dict[str, str | None]) -> None:
        """Rebuild the caches of :meth:`state` for ``model`` (a resumed run), so that its records are
        those of an uninterrupted run; the passes this takes are in no step's record."""
        for name, evaluator in (("test", self.test), ("decision", self.decision)):
            block = state.get(name)
            if block is not None and evaluator.cached_block != block:
                log.info("rebuilding the evaluation cache of the %s split at the input of %s", name, block)
                evaluator.restore(model, block)


class _EvalWork:
    """The evaluation work of one step: MACs run and MACs the caches saved."""

    def __init__(self) -> None:
        self.macs = self.saved = 0

    def count(self, evaluator: Evaluator, model: nn.Module, keep: str | None) -> int:
        done: EvalPass = evaluator.evaluate(model, keep)
        self.macs += done.macs
        self.saved += done.macs_saved
        return done.correct


class _Clock:
    """Lap timer that synchronises the device before each reading (honest GPU times)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        synchronize(device)
        self.last = time.perf_counter()

    def lap(self) -> float:
        synchronize(self.device)
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        return seconds


def _file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (what a run state is tied to: the exact pretrained model)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _load_state(path: Path, cfg: RunConfig, pretrained_digest: str, device: torch.device):
    """The saved state of an earlier attempt of this run, or None (missing, damaged, or written
    for another configuration or another pretrained model: then the run starts over)."""
    if not path.exists():
        return None
    try:
        model, meta = load_model(path, device)
    except ValueError as err:
        log.warning("ignoring unreadable run state %s (%s); starting over", path, err)
        return None
    if meta.get("kind") != "run-state" or meta.get("config") != cfg.flat():
        log.warning("ignoring run state %s written for another configuration; starting over", path)
        return None
    if meta.get("pretrained_sha256") != pretrained_digest:
        log.warning("ignoring run state %s written for another pretrained model; starting over", path)
        return None
    return model, meta


def _summary(
    cfg: RunConfig,
    rows: list[dict[str, Any]],
    ref: _Reference,
    data: ExperimentData,
    trace: dict[str, Any] | None,
    n_frozen: int,
    model: nn.Module,
    params_orig: int,
    teacher_macs: int,
    device: torch.device,
) -> dict[str, Any]:
    uses_trace = cfg.method == "icepick" and cfg.eta > 0 and trace is not None
    trace_seconds = float(trace["seconds"]) if uses_trace else 0.0
    trace_macs = int(trace["train_macs"]) if uses_trace else 0
    total = rows[-1]["t_cumulative"] if rows else 0.0
    train_macs = int(sum(r["train_macs"] for r in rows))
    acc_orig = percent(ref.test_correct, len(data.test))
    return {
        "model": getattr(model, "arch_name", type(model).__name__),
        "method": cfg.method,
        "lr_policy": cfg.lr_policy,
        "theta": cfg.theta,
        "eta": cfg.eta,
        "ratio": cfg.ratio,
        "seed": cfg.seed,
        "decision_split": cfg.decision_split,
        "criterion": cfg.criterion,
        "acc_orig": acc_orig,
        "decision_acc_orig": percent(ref.decision_correct, len(data.decision)),
        "decision_correct_orig": ref.decision_correct,
        "decision_samples": len(data.decision),
        "test_samples": len(data.test),
        "final_acc": rows[-1]["acc"] if rows else acc_orig,
        "n_steps": sum(r["block"] != FINETUNE_ROW for r in rows),
        "n_finetunes": int(sum(bool(r["finetuned"]) for r in rows)),
        "total_seconds": total,
        "trace_seconds": trace_seconds,
        "total_seconds_with_trace": total + trace_seconds,
        "report_seconds": float(sum(r["t_report"] for r in rows)),
        "total_train_macs": train_macs,
        "trace_train_macs": trace_macs,
        "total_train_macs_with_trace": train_macs + trace_macs,
        "teacher_macs_per_sample": teacher_macs,
        "trace_ratio": float(trace["config"]["ratio"]) if uses_trace and "config" in trace else None,
        "n_frozen": n_frozen,
        "total_ft_samples": int(sum(r["ft_samples"] for r in rows)),
        "total_eval_samples": int(sum(r["eval_samples"] for r in rows)),
        "total_report_samples": int(sum(r["report_samples"] for r in rows)),
        "total_eval_macs": int(sum(r["eval_macs"] for r in rows)),
        "total_eval_macs_saved": int(sum(r["eval_macs_saved"] for r in rows)),
        "final_params": count_params(model),
        "final_alpha": count_params(model) / params_orig,
        "final_macs": count_macs(model),
        "config": cfg.flat(),
        "provenance": provenance(device, cfg.finetune.precision, data.info.record() if data.info else None),
    }


def read_trace(path: str | Path | None) -> dict[str, Any] | None:
    """A freeze trace written by ``icepick trace``, or None; a missing file raises FileNotFoundError naming it."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such freeze trace (--trace); make it with `python -m icepick trace` "
                                "or give the path of one")
    return read_json(path)
