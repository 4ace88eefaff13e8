"""The Python API: ICE-Pick (or the baseline) on a model and data in memory, without the workflow.

:func:`iterative_prune` takes a model of icepick's families (``icepick.models.build_model``,
or one loaded with ``icepick.model_files.load_model``), trained, and the training and test
data as tensors or torch Datasets; it runs exactly what ``python -m icepick run`` runs
(:func:`icepick.algorithm.run_experiment`: the same records, the same decisions), with the
freeze trace made first when ``eta`` freezes layers, and returns the pruned model with the
step records and the run summary.

:func:`compare` runs ICE-Pick and the iterative baseline on the same model and data, each
through :func:`iterative_prune`, and answers "how much does ICE-Pick save on my model?":
both runs, a table of their accuracy, fine-tunings, training MACs and time, and the savings
(:mod:`icepick.reporting.compare`). :func:`run_comparison` does the same for a model file and
a data set on disk through :func:`icepick.algorithm.run_experiment` (``icepick compare``),
resuming where a killed comparison stopped; given a tuned setting (``icepick tune``'s
best.json), it adds ICE-Pick with that setting as a third row, the search's cost included.

:func:`tune` runs an Optuna study over ICE-Pick's settings on a subset of the data
(:mod:`icepick.tuning`, ``icepick tune``) and returns the setting it picks with what the search cost.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from icepick.algorithm import RunConfig, load_teacher, run_experiment
from icepick.analysis import trace_record
from icepick.config import ConfigError
from icepick.data import in_memory_data
from icepick.model_files import load_model, save_model
from icepick.records import read_json, write_json
from icepick.runtime import resolve_device

__all__ = ["PruneResult", "iterative_prune", "Comparison", "compare", "comparison_configs", "run_comparison",
           "check_comparison_dir", "prepare_comparison_dir", "keep_model_file", "TuneResult", "tune"]

log = logging.getLogger(__name__)

_FILES = ("pretrained.pt", "trace.json", "steps.csv", "summary.json", "pruned.pt")


@dataclass
class PruneResult:
    """What :func:`iterative_prune` returns.

    ``steps``: one row per pruning step (the columns of ``steps.csv``, docs/architecture.md);
    ``summary``: the run summary (``summary.json``); ``trace``: the freeze trace used, if any.
    """

    model: nn.Module
    steps: "pd.DataFrame"  # noqa: F821
    summary: dict[str, Any]
    trace: dict[str, Any] | None
    normalization: dict[str, list[float]] | None = None  # what the inputs were normalised with (None: 0..1 values)


def iterative_prune(
    model: nn.Module,
    train: Any,
    test: Any,
    *,
    device: str | torch.device = "auto",
    trace: dict[str, Any] | None = None,
    flip: bool = True,
    normalize: Any = "data",
    out_dir: str | Path | None = None,
    show_progress: bool = False,
    **settings: Any,
) -> PruneResult:
    """Prune ``model`` block by block with ICE-Pick (Algorithm 1), or the baseline, and return it.

    Args:
        model: a trained model built by :func:`icepick.models.build_model` (a registry name,
            ``torchvision:<builder>`` or ``python:<module>:<factory>``; your weights loaded into
            it) or loaded by :func:`icepick.model_files.load_model`. It is not modified; the
            result is a pruned copy.
        train, test: ``(images, labels)``: images of any size as uint8 (0..255) or floats in
            0..1, ``[N, C, H, W]``, channel-last ``[N, H, W, C]`` (NumPy's order, as
            ``torchvision.datasets.CIFAR10.data``) or grey ``[N, H, W]``, tensors or arrays;
            labels int. Or torch Datasets of ``(image, label)`` pairs (PIL images, arrays or
            tensors of one size). A float image outside 0..1 is refused, never clamped.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        trace: a freeze trace (``icepick trace``'s record); made here when ``eta`` > 0 and none
            is given (the first block pruned at ``ratio``, one epoch at ``base``).
        flip: whether random horizontal flips suit the images (not for digits or text).
        normalize: what the model's inputs are normalised with: ``"data"`` (default: the
            training images' per-channel mean and std), None (0..1 values, for a model that
            normalises its inputs itself, or one trained on 0..1 inputs), or ``(mean, std)``
            with one number per channel (torchvision's ImageNet weights: ``((0.485, 0.456,
            0.406), (0.229, 0.224, 0.225))``). The result's ``normalization`` says what was used.
        out_dir: keep the run's files there (pretrained.pt, trace.json, steps.csv, summary.json,
            pruned.pt; an existing one is never overwritten); default: a temporary folder.
        **settings: any setting of :class:`icepick.algorithm.RunConfig` or
            :class:`icepick.finetune.FinetuneConfig` by name, each defaulting to the paper's value
            (``method="icepick"``, ``ratio=0.4``, ``theta=1.5``, ``eta=0.0``, ``batch_size=128``,
            ``criterion="l1"``, ...).

    Example (random images stand in for yours; a real model is trained first)::

        >>> import torch, icepick
        >>> from icepick.models import build_model
        >>> from icepick.pruning import count_params
        >>> g = torch.Generator().manual_seed(0)
        >>> images = torch.randint(0, 256, (160, 3, 32, 32), dtype=torch.uint8, generator=g)
        >>> labels = torch.randint(0, 10, (160,), generator=g)
        >>> model = build_model("resnet20")
        >>> result = icepick.iterative_prune(
        ...     model, (images[:128], labels[:128]), (images[128:], labels[128:]), device="cpu",
        ...     ratio=0.4, theta=1.5, eta=0.3, max_steps=3, batch_size=32)
        >>> len(result.steps), result.summary["n_steps"]
        (3, 3)
        >>> count_params(result.model) < count_params(model)
        True
    """
    import pandas as pd

    cfg = RunConfig.from_dict(settings)
    device = resolve_device(str(device))
    with tempfile.TemporaryDirectory(prefix="icepick-") as tmp:
        work = Path(out_dir) if out_dir is not None else Path(tmp)
        _check_out_dir(work)
        pretrained = work / "pretrained.pt"
        data = in_memory_data(train, test, device, int(getattr(model, "num_classes", 10)), flip,
                              cfg.decision_split, cfg.val_size, cfg.val_seed, normalize)
        model = _at_data_shape(model, data.info.image_shape)  # type: ignore[union-attr]
        model.normalization = data.normalization or "none"
        save_model(model, pretrained, {"kind": "api-input"})
        if trace is None and cfg.method == "icepick" and cfg.eta > 0:
            trace = _make_trace(cfg, pretrained, data, device)
            write_json(work / "trace.json", trace)
        summary = run_experiment(cfg, pretrained, data, work / "steps.csv", work / "summary.json",
                                 work / "pruned.pt", trace, device, show_progress)
        pruned, _ = load_model(work / "pruned.pt", device)
        steps = pd.read_csv(work / "steps.csv")
    return PruneResult(pruned, steps, summary, trace, data.normalization)


def _at_data_shape(model: nn.Module, shape: tuple[int, int, int]) -> nn.Module:
    """A copy of ``model`` that records the data's image shape (a CNN takes any size; one that
    cannot classify images of this shape is one clear error)."""
    import copy

    from icepick.models import main_output, model_input_shape

    if not hasattr(model, "arch_name"):
        raise ConfigError("model: it was not built by icepick.models.build_model; build it with build_model(spec, "
                          "num_classes) (spec python:<module>:<factory> for your own class) and load your weights into it")
    copied = copy.deepcopy(model)
    if tuple(model_input_shape(model)) == tuple(shape):
        return copied
    param = next(copied.parameters())
    copied.eval()
    try:
        with torch.no_grad():
            out = main_output(copied(torch.zeros(1, *shape, device=param.device, dtype=param.dtype)))
    except Exception as err:  # noqa: BLE001 - the user's model: one line
        raise ConfigError(f"train: the model cannot classify the data's {'x'.join(map(str, shape))} images "
                          f"({type(err).__name__}: {' '.join(str(err).split())[:160]})") from err
    if not isinstance(out, torch.Tensor) or out.shape[-1] != copied.num_classes:
        raise ConfigError(f"train: the model gives {tuple(getattr(out, 'shape', ()))} for one "
                          f"{'x'.join(map(str, shape))} image, not {copied.num_classes} class scores")
    copied.input_shape = tuple(shape)
    return copied


def _check_out_dir(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    existing = [name for name in _FILES if (work / name).exists()]
    if existing:
        raise ConfigError(f"out_dir: {work} already holds {', '.join(existing)}; give an empty folder")


def _make_trace(cfg: RunConfig, pretrained: Path, data: Any, device: torch.device) -> dict[str, Any]:
    """The freeze trace as ``icepick trace`` makes it: the first block at the run's ratio, one epoch."""
    student, _ = load_model(pretrained, device)
    teacher = load_teacher(pretrained, device)
    ft_cfg = dataclasses.replace(cfg.finetune, early_halt=0)
    torch.manual_seed(cfg.seed)
    return trace_record(student, teacher, data, cfg.ratio, cfg.base, ft_cfg, cfg.seed, device,
                        {"decision_split": cfg.decision_split, "val_size": cfg.val_size})


# ----------------------------------------------------------------- ICE-Pick against the baseline

#: The state of an unfinished comparison (``run_comparison``): its settings, model and data.
COMPARISON_STATE = "comparison.state.json"


@dataclass
class Comparison:
    """What :func:`compare` and :func:`run_comparison` (``icepick compare``) return.

    ``icepick`` and ``baseline``: the two runs; ``table``: one row per method
    (:data:`icepick.reporting.compare.COMPARISON_COLUMNS`: unpruned and final accuracy,
    fine-tunings, training MACs and wall time, each also with the freeze trace); ``savings``:
    ICE-Pick's against the baseline (:func:`icepick.reporting.compare.comparison_savings`:
    percent of MACs and of time, accuracy difference in points); ``figure``: ``comparison.png``
    (``comparison.pdf`` beside it) when the comparison was written to a folder, else None.
    ``str(comparison)`` is the printed answer.
    """

    icepick: PruneResult
    baseline: PruneResult
    table: "pd.DataFrame"  # noqa: F821
    savings: dict[str, float]
    figure: Path | None = None

    def __str__(self) -> str:
        from icepick.reporting.compare import format_comparison

        return format_comparison(self.table, self.savings)


def comparison_configs(settings: dict[str, Any]) -> tuple[RunConfig, RunConfig]:
    """The two runs of a comparison: ICE-Pick with ``settings`` (any setting of
    :class:`~icepick.algorithm.RunConfig` or :class:`~icepick.finetune.FinetuneConfig` but
    ``method``), and the iterative baseline with the same ones (data, ratio, criterion, seed,
    fine-tuning batch and caps) but method 'baseline', lr_policy 'fixed', eta 0 and a constant
    rate, the baseline the paper compares with."""
    if "method" in settings:
        raise ConfigError(f"method: a comparison runs both 'icepick' and 'baseline'; leave method out "
                          f"(not {settings['method']!r})")
    ice = RunConfig.from_dict({**settings, "method": "icepick"})
    base = dataclasses.replace(ice, method="baseline", lr_policy="fixed", eta=0.0,
                               finetune=dataclasses.replace(ice.finetune, lr_shape="constant"))
    return ice, base


def compare(
    model: nn.Module,
    train: Any,
    test: Any,
    *,
    device: str | torch.device = "auto",
    normalize: Any = "data",
    out_dir: str | Path | None = None,
    flip: bool = True,
    force: bool = False,
    show_progress: bool = False,
    **settings: Any,
) -> Comparison:
    """Run ICE-Pick and the iterative baseline on ``model`` and the same data, and say what ICE-Pick saves.

    Both runs go through :func:`iterative_prune` (so through the same code as every run);
    the baseline is :func:`comparison_configs`' (a full fine-tuning after every step at the
    fixed rate, nothing frozen). With ``eta`` > 0, ICE-Pick's freeze trace is made first and
    counted on its side (``total_train_macs_with_trace``, ``total_seconds_with_trace``).

    Args:
        model, train, test, device, normalize, flip, show_progress: as :func:`iterative_prune`.
        out_dir: keep everything there: ``icepick/`` and ``baseline/`` (each run's files, as
            :func:`iterative_prune` writes them; ICE-Pick's freeze trace in ``icepick/``),
            ``comparison.csv``, ``comparison.json``, ``comparison.png`` and ``.pdf``. A folder
            that holds a comparison is refused unless ``force`` (then the files a comparison
            writes there are replaced; nothing else is touched). Default: a temporary folder,
            and no figure.
        **settings: the runs' settings (:func:`iterative_prune`'s, ``method`` excepted), e.g.
            ``ratio=0.4, theta=1.5, eta=0.3, criterion="l1", max_steps=3, batch_size=64``.

    Example (random images stand in for yours; a real model is trained first)::

        >>> import torch, icepick
        >>> from icepick.models import build_model
        >>> g = torch.Generator().manual_seed(0)
        >>> images = torch.randint(0, 256, (160, 3, 32, 32), dtype=torch.uint8, generator=g)
        >>> labels = torch.randint(0, 10, (160,), generator=g)
        >>> result = icepick.compare(build_model("resnet20"), (images[:128], labels[:128]),
        ...                          (images[128:], labels[128:]), device="cpu", max_steps=2,
        ...                          max_batches=2, batch_size=32)
        >>> list(result.table["method"]), result.baseline.summary["n_finetunes"]
        (['icepick', 'baseline'], 2)
        >>> sorted(result.savings)  # doctest: +NORMALIZE_WHITESPACE
        ['acc_diff', 'finetunes_saved', 'saved_macs', 'saved_macs_with_trace', 'saved_wall',
         'saved_wall_with_trace']
    """
    configs = comparison_configs(settings)
    out = prepare_comparison_dir(out_dir, force) if out_dir is not None else None
    runs = {}
    for cfg in configs:
        runs[cfg.method] = iterative_prune(model, train, test, device=device, flip=flip, normalize=normalize,
                                           out_dir=out / cfg.method if out is not None else None,
                                           show_progress=show_progress, **cfg.flat())
    return _comparison(runs, configs, out, resolve_device(str(device)), {"kind": "api-input"}, "icepick/trace.json")


def _comparison_outputs() -> list[str]:
    """Every file a comparison writes in its folder (relative paths): what ``force`` replaces."""
    from icepick.reporting.compare import COMPARISON_FILES, METHODS

    run_files = (*_FILES, "summary.json.state.pt")
    return [*COMPARISON_FILES, "trace.json", COMPARISON_STATE, *(f"{m}/{name}" for m in METHODS for name in run_files),
            *(f"tuned/{name}" for name in (*run_files, "tuned.json"))]


def check_comparison_dir(out_dir: str | Path, force: bool = False) -> None:
    """Refuse a folder that already holds a finished comparison, unless ``force``."""
    from icepick.reporting.compare import COMPARISON_FILES

    out = Path(out_dir)
    held = [name for name in COMPARISON_FILES if (out / name).exists()]
    if held and not force:
        raise ConfigError(f"out: {out} already holds a comparison ({', '.join(held)}); give another folder, or "
                          "force it (icepick compare --force) to run it again and write over it")


def prepare_comparison_dir(out_dir: str | Path, force: bool = False) -> Path:
    """The folder of a comparison, made: one that holds a finished comparison is refused unless
    ``force``, which removes the files a comparison writes there (and nothing else) first."""
    out = Path(out_dir)
    check_comparison_dir(out, force)
    if force:
        for rel in _comparison_outputs():
            (out / rel).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_comparison(
    icepick_cfg: RunConfig,
    baseline_cfg: RunConfig,
    pretrained: str | Path,
    data: Any,
    out_dir: str | Path,
    device: torch.device,
    *,
    show_progress: bool = True,
    tuned: dict[str, Any] | None = None,
) -> Comparison:
    """ICE-Pick and the baseline (:func:`comparison_configs`) on a model file and a loaded data
    set (:func:`icepick.data.load_experiment_data`), each through
    :func:`icepick.algorithm.run_experiment` into ``out_dir/icepick`` and ``out_dir/baseline``,
    the freeze trace first into ``out_dir/trace.json`` when ICE-Pick freezes; then the
    comparison's files (:func:`icepick.reporting.compare.write_comparison`).

    Resumable: ``comparison.state.json`` records the settings, the model's sha256 and the data
    set's identity until the comparison is written; started again with the same ones, a
    finished run and the trace are read back and an unfinished run resumes from its state file.
    A folder holding another unfinished comparison, or run records without that state, is
    refused (one line) rather than written over; :func:`prepare_comparison_dir` with ``force``
    clears it.

    ``tuned``: a best.json of ``icepick tune`` (:func:`icepick.tuning.read_best`): ICE-Pick with
    its setting (the other settings ICE-Pick's) is run too, into ``out_dir/tuned``
    (:func:`icepick.tuning.tuned_run`), and is the table's third row, method ``tuned``, with the
    search's MACs and time added (``total_train_macs_with_search``, ``total_seconds_with_search``).
    """
    out = Path(out_dir)
    pretrained = Path(pretrained)
    settings = {cfg.method: cfg.flat() for cfg in (icepick_cfg, baseline_cfg)}
    if tuned is not None:
        from icepick.tuning import tuned_settings

        settings["tuned"] = {**icepick_cfg.flat(), **tuned_settings(tuned)}
    state = json.loads(json.dumps({
        "settings": settings,
        "pretrained_sha256": _sha256(pretrained),
        "data": data.info.record() if data.info is not None else None,
    }))
    _check_resumable(out, state)
    write_json(out / COMPARISON_STATE, state)
    trace = None
    if icepick_cfg.eta > 0:
        trace = read_json(out / "trace.json") if (out / "trace.json").is_file() else None
        if trace is None:
            log.info("making the freeze trace (eta %g > 0): the first block pruned at r = %g, one epoch",
                     icepick_cfg.eta, icepick_cfg.ratio)
            trace = _make_trace(icepick_cfg, pretrained, data, device)
            write_json(out / "trace.json", trace)
    runs = {cfg.method: _run_or_read(cfg, pretrained, data, out / cfg.method, trace if cfg.method == "icepick" else None,
                                     device, show_progress)
            for cfg in (icepick_cfg, baseline_cfg)}
    extra = None
    if tuned is not None:
        extra = _tuned_row(tuned, icepick_cfg, pretrained, data, out / "tuned", device, show_progress)
    origin = {"path": str(pretrained), "sha256": state["pretrained_sha256"]}
    comparison = _comparison(runs, (icepick_cfg, baseline_cfg), out, device, origin,
                             "trace.json" if trace is not None else None, extra)
    (out / COMPARISON_STATE).unlink(missing_ok=True)
    return comparison


def keep_model_file(new: str | Path, dest: str | Path) -> Path:
    """``dest`` when it already holds the model the file ``new`` holds (``new`` is then removed),
    else ``new`` moved onto ``dest``; returns ``dest``.

    For your own weights, written as a model file again each time a comparison starts: the
    file's bytes differ from one writing to the next (the archive inside names the temporary
    file it was written as), while a resumed run is tied to the exact bytes of its model file.
    """
    import os

    new, dest = Path(new), Path(dest)
    if dest.is_file() and _same_model(new, dest):
        new.unlink()
    else:
        os.replace(new, dest)
    return dest


def _same_model(a: Path, b: Path) -> bool:
    """Whether two model files hold the same model: architecture, classes, image shape, widths,
    normalisation, meta and every tensor."""
    (ma, meta_a), (mb, meta_b) = load_model(a), load_model(b)
    facts = ("arch_name", "num_classes", "input_shape", "normalization", "trained_on")
    if meta_a != meta_b or any(getattr(ma, f, None) != getattr(mb, f, None) for f in facts):
        return False
    sa, sb = ma.state_dict(), mb.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def _sha256(path: Path) -> str:
    import hashlib

    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _check_resumable(out: Path, state: dict[str, Any]) -> None:
    """Refuse to write over another comparison's unfinished records (one line saying what differs)."""
    if (out / COMPARISON_STATE).is_file():
        held = read_json(out / COMPARISON_STATE)
        differ = []
        if held.get("settings") != state["settings"]:
            old, new = (held.get("settings") or {}).get("icepick") or {}, state["settings"]["icepick"]
            differ.append(f"settings ({', '.join(sorted(k for k in new if old.get(k) != new[k])) or 'baseline'})")
        if held.get("pretrained_sha256") != state["pretrained_sha256"]:
            differ.append("pretrained model")
        if held.get("data") != state["data"]:
            differ.append("data")
        if differ:
            raise ConfigError(f"out: {out} holds an unfinished comparison with other {' and '.join(differ)}; give "
                              "another folder, or --force to start it over with these")
        return
    records = [rel for rel in _comparison_outputs() if (out / rel).exists()]
    if records:
        raise ConfigError(f"out: {out} already holds {', '.join(records[:4])}{' ...' if len(records) > 4 else ''} "
                          "of no comparison it can resume; give an empty folder, or --force to write over them")


def _run_or_read(cfg: RunConfig, pretrained: Path, data: Any, work: Path, trace: dict[str, Any] | None,
                 device: torch.device, show_progress: bool) -> PruneResult:
    """One run of a comparison: read back when it finished before with these settings, else run
    (resuming from its state file, as ``icepick run`` does)."""
    import pandas as pd

    steps_csv, summary_json, pruned = work / "steps.csv", work / "summary.json", work / "pruned.pt"
    done = all(p.is_file() for p in (steps_csv, summary_json, pruned))
    summary = read_json(summary_json) if done else None
    if summary is None or summary.get("config") != json.loads(json.dumps(cfg.flat())):
        summary = run_experiment(cfg, pretrained, data, steps_csv, summary_json, pruned, trace, device, show_progress)
    else:
        log.info("%s: finished before with these settings; read back from %s", cfg.method, work)
    model, _ = load_model(pruned, device)
    return PruneResult(model, pd.read_csv(steps_csv), summary, trace, data.normalization)


def _comparison(
    runs: dict[str, PruneResult],
    configs: tuple[RunConfig, RunConfig],
    out: Path | None,
    device: torch.device,
    pretrained: dict[str, Any],
    trace_file: str | None,
    tuned: PruneResult | None = None,
) -> Comparison:
    """The table and savings of two finished runs (and the tuned run's, when given), and the
    comparison's files when ``out`` is given."""
    from icepick.records import provenance
    from icepick.reporting.compare import comparison_savings, comparison_table, write_comparison

    summaries = {method: run.summary for method, run in runs.items()}
    if tuned is not None:
        summaries["tuned"] = tuned.summary
    table = comparison_table(summaries)
    savings = comparison_savings(table)
    figure = None
    if out is not None:
        data = runs["icepick"].summary.get("provenance", {}).get("data")
        meta = {
            "settings": {cfg.method: cfg.flat() for cfg in configs},
            "data": data,
            "pretrained": pretrained,
            "trace": trace_file if runs["icepick"].trace is not None else None,
            "provenance": provenance(device, configs[0].finetune.precision, data),
        }
        if tuned is not None:
            meta["tuned"] = {"settings": {k: tuned.summary["config"][k] for k in
                                          ("theta", "eta", "base", "delta", "p", "beta")},
                             "trial": tuned.summary.get("tuned_trial"), "records": "tuned/",
                             "search": {k: tuned.summary[k] for k in ("search_train_macs", "search_seconds",
                                                                      "search_wall_seconds", "search_trials")}}
        figure = write_comparison(out, table, savings, {method: run.steps for method, run in runs.items()}, meta)
    return Comparison(runs["icepick"], runs["baseline"], table, savings, figure)


def _tuned_row(best: dict[str, Any], icepick_cfg: RunConfig, pretrained: Path, data: Any, work: Path,
               device: torch.device, show_progress: bool) -> PruneResult:
    """ICE-Pick with a tuned setting, for a comparison's third row (:func:`icepick.tuning.tuned_run`)."""
    import pandas as pd

    from icepick.tuning import tuned_run

    record = tuned_run(best, icepick_cfg, pretrained, data, work, device, show_progress)
    trace = read_json(work / "trace.json") if (work / "trace.json").is_file() and record["eta"] > 0 else None
    model, _ = load_model(work / "pruned.pt", device)
    return PruneResult(model, pd.read_csv(work / "steps.csv"), record, trace, data.normalization)


# ----------------------------------------------------------------- choosing the settings: icepick tune


@dataclass
class TuneResult:
    """What :func:`tune` returns.

    ``settings``: the tuned setting (theta, eta, base, delta, p, beta), what the other
    functions take as keywords; ``best``: ``best.json``'s record (the chosen trial, the search's
    cost, the study's settings); ``trials``: one row per trial (``trials.csv``); ``search_cost``:
    training MACs and seconds summed over every trial, pruned ones included; ``study``: the
    Optuna study; ``final``: the tuned run on all the data with the search's cost added
    (``final/tuned.json``) when ``final`` was asked for, else None.
    """

    settings: dict[str, float]
    best: dict[str, Any]
    trials: "pd.DataFrame"  # noqa: F821
    search_cost: dict[str, Any]
    study: Any
    final: dict[str, Any] | None = None


def tune(
    model: nn.Module,
    train: Any,
    test: Any,
    *,
    out_dir: str | Path,
    device: str | torch.device = "auto",
    flip: bool = True,
    normalize: Any = "data",
    final: bool = False,
    figures: bool = True,
    show_progress: bool = False,
    **options: Any,
) -> TuneResult:
    """Choose ICE-Pick's θ, η and Eq. 1's values for ``model`` and this data: an Optuna study
    whose trials are ICE-Pick runs (through :func:`icepick.algorithm.run_experiment`) on a seeded
    subset of ``train`` and ``test`` (:mod:`icepick.tuning`; ``icepick tune`` on the command line).

    Args:
        model, train, test, device, flip, normalize, show_progress: as :func:`iterative_prune`.
        out_dir: the study's folder (``study.db``, ``best.json``, ``trials.csv``, the figures,
            ``trials/``); a study found there is continued (finished trials are not run again).
        final: also run the chosen setting on all the data into ``out_dir/final``.
        figures: draw the study's figures (Optuna's matplotlib visualisation).
        **options: the study's settings (:class:`icepick.tuning.TuneConfig`: ``n_trials``,
            ``objective`` ('budget', 'icepruning', 'pareto'), ``cost``, ``max_drop``, ``sampler``,
            ``pruner``, ``subset``, ``subset_seed``, ...) and the run settings that are not tuned
            (any of :class:`icepick.algorithm.RunConfig` or ``FinetuneConfig`` but the six tuned
            ones and ``method``: ``ratio``, ``batch_size``, ``criterion``, ``max_steps``, ...).
    """
    from icepick.tuning import (
        TUNED_KEYS,
        StudyContext,
        TuneConfig,
        read_best,
        run_study,
        search_cost,
        subset_data,
        trials_table,
        tuned_run,
        write_study_report,
    )

    tune_keys = {f.name for f in dataclasses.fields(TuneConfig)}
    fixed = sorted(set(options) & (set(TUNED_KEYS) | {"method"}))
    if fixed:
        raise ConfigError(f"{fixed[0]}: tune chooses {', '.join(TUNED_KEYS)} and runs ICE-Pick; leave "
                          f"{', '.join(fixed)} out")
    tune_cfg = TuneConfig(**{k: v for k, v in options.items() if k in tune_keys})
    run_cfg = RunConfig.from_dict({k: v for k, v in options.items() if k not in tune_keys})
    device = resolve_device(str(device))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = in_memory_data(train, test, device, int(getattr(model, "num_classes", 10)), flip,
                          run_cfg.decision_split, run_cfg.val_size, run_cfg.val_seed, normalize)
    pretrained = out / "pretrained.pt"
    staged = _at_data_shape(model, data.info.image_shape)  # type: ignore[union-attr]
    staged.normalization = data.normalization or "none"
    new = out / ".pretrained.pt.new"
    save_model(staged, new, {"kind": "api-input"})
    keep_model_file(new, pretrained)  # the same bytes as last time: a continued study's runs resume
    ctx = StudyContext(tune_cfg, run_cfg, pretrained, subset_data(data, tune_cfg.subset, tune_cfg.subset_seed),
                       device, out, show_progress)
    study = run_study(ctx)
    record = write_study_report(study, tune_cfg, run_cfg, out, {
        "subset": {"train": len(ctx.data.train), "test": len(ctx.data.test)}}, figures=figures)
    tuned = None
    if final:
        tuned = tuned_run(read_best(out / "best.json"), run_cfg, pretrained, data, out / "final", device, show_progress)
    return TuneResult(dict(record["settings"]), record, trials_table(study), search_cost(study), study, tuned)
