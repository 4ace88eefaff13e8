"""The Python API: ICE-Pick (or the baseline) on a model and data in memory, without the workflow.

:func:`iterative_prune` takes a model of icepick's families (``icepick.models.build_model``,
or one loaded with ``icepick.model_files.load_model``), trained, and the training and test
data as tensors or torch Datasets; it runs exactly what ``python -m icepick run`` runs
(:func:`icepick.algorithm.run_experiment`: the same records, the same decisions), with the
freeze trace made first when ``eta`` freezes layers, and returns the pruned model with the
step records and the run summary.
"""

from __future__ import annotations

import dataclasses
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
from icepick.records import write_json
from icepick.runtime import resolve_device

__all__ = ["PruneResult", "iterative_prune"]

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


def iterative_prune(
    model: nn.Module,
    train: Any,
    test: Any,
    *,
    device: str | torch.device = "auto",
    trace: dict[str, Any] | None = None,
    flip: bool = True,
    out_dir: str | Path | None = None,
    show_progress: bool = False,
    **settings: Any,
) -> PruneResult:
    """Prune ``model`` block by block with ICE-Pick (Algorithm 1), or the baseline, and return it.

    Args:
        model: a trained model of icepick's families (it is not modified; the result is a copy).
        train, test: ``(images, labels)`` tensors (images ``[N, 3, 32, 32]``, uint8 0..255 or
            float 0..1; labels int) or torch Datasets of such ``(image, label)`` pairs; both are
            normalised with the training images' per-channel statistics.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        trace: a freeze trace (``icepick trace``'s record); made here when ``eta`` > 0 and none
            is given (the first block pruned at ``ratio``, one epoch at ``base``).
        flip: whether random horizontal flips suit the images (not for digits or text).
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
        save_model(model, pretrained, {"kind": "api-input"})
        data = in_memory_data(train, test, device, int(getattr(model, "num_classes", 10)), flip,
                              cfg.decision_split, cfg.val_size, cfg.val_seed)
        if trace is None and cfg.method == "icepick" and cfg.eta > 0:
            trace = _make_trace(cfg, pretrained, data, device)
            write_json(work / "trace.json", trace)
        summary = run_experiment(cfg, pretrained, data, work / "steps.csv", work / "summary.json",
                                 work / "pruned.pt", trace, device, show_progress)
        pruned, _ = load_model(work / "pruned.pt", device)
        steps = pd.read_csv(work / "steps.csv")
    return PruneResult(pruned, steps, summary, trace)


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
