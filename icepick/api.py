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
