"""Model files: a model (pruned or not) with its architecture, widths and metadata, written
atomically and read back safely (``torch.load(weights_only=True)``).

A file holds the registry name, the number of classes, the per-block widths (so a pruned
architecture is rebuilt exactly by ``icepick.models.build_model``), the CPU state dict and
plain-data metadata. Damaged, truncated or foreign files fail with one line naming the file.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from icepick.models import build_model
from icepick.pruning import model_widths
from icepick.records import atomic_path

__all__ = ["MODEL_FORMAT", "save_model", "load_model"]

MODEL_FORMAT = "icepick-model/1"

_RECOVER = "delete it and rerun the step that produces it"


def _check_meta(value: Any, where: str = "meta") -> None:
    """Meta must be plain data so that ``torch.load(weights_only=True)`` can read it."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_meta(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"{where}: key {k!r} must be a str or an int")
            _check_meta(v, f"{where}[{k!r}]")
        return
    raise ValueError(f"{where}: {type(value).__name__} is not plain data (None/bool/int/float/str/list/dict)")


def save_model(model: nn.Module, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> None:
    """Write the model (arch name, classes, widths, CPU state dict, meta) atomically to ``path``."""
    if not hasattr(model, "arch_name"):
        raise ValueError("save_model: the model has no 'arch_name'; build it with icepick.models.build_model")
    meta = dict(meta) if meta is not None else None
    _check_meta(meta)
    payload = {
        "format": MODEL_FORMAT,
        "arch": model.arch_name,
        "num_classes": int(model.num_classes),
        "widths": model_widths(model),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load a file written by :func:`save_model`; returns ``(model in eval mode, meta)``.

    A damaged file, or one that is not an icepick model, raises ValueError naming the file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise ValueError(  # torch's own text can be long and suggests unsafe loading: not shown
            f"{path}: damaged or truncated model file, it cannot be read ({type(err).__name__}); {_RECOVER}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not an icepick model file (format {MODEL_FORMAT} expected); {_RECOVER}")
    try:
        model = build_model(payload["arch"], payload["num_classes"], payload["widths"])
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        detail = " ".join(str(err).split())
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        raise ValueError(f"{path}: inconsistent model file ({type(err).__name__}: {detail}); {_RECOVER}") from err
    bad = [k for k, v in payload["state_dict"].items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path}: holds NaN or infinite values ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); "
                         f"{_RECOVER}")
    model.to(device)
    model.eval()
    meta = payload.get("meta")
    return model, dict(meta) if meta is not None else {}
