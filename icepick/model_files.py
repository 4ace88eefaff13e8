"""Model files: a model (pruned or not) with its architecture, widths and metadata, written
atomically and read back safely (``torch.load(weights_only=True)``); and a user's own weights.

An icepick model file holds the registry name or spec, the number of classes, the image shape
it takes, the per-block widths (so a pruned architecture is rebuilt exactly by
``icepick.models.build_model``), the normalisation its inputs need, the CPU state dict,
plain-data metadata and, for a model icepick trained, the data set it was trained on and a
fingerprint of its training images (:func:`image_hashes`). Damaged, truncated or foreign files
fail with one line naming the file.

:func:`load_weights` reads what users have: an icepick model file, a state dict
(``torch.save(model.state_dict())``, also inside a checkpoint dict and with DataParallel's
``module.`` prefixes), a whole saved module (``torch.save(model)``, unpickled: only for files
you trust), or torchvision's named weights (``IMAGENET1K_V1``, read from the local torch hub
cache; nothing is downloaded); with the spec of the architecture (``--model``) where the file
does not name one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from icepick.config import ConfigError
from icepick.models import DEFAULT_INPUT_SHAPE, build_model, model_input_shape
from icepick.pruning import model_widths
from icepick.records import atomic_path

__all__ = [
    "MODEL_FORMAT",
    "save_model",
    "load_model",
    "is_model_file",
    "load_weights",
    "LoadedWeights",
    "image_hashes",
    "training_hashes",
    "torchvision_weights",
    "ensure_model_file",
]

log = logging.getLogger(__name__)

MODEL_FORMAT = "icepick-model/1"
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")  # where checkpoints keep the weights


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


def image_hashes(images: Any) -> np.ndarray:
    """A 64-bit fingerprint of every image (blake2b of its bytes), sorted: what a model file keeps
    of its training images, so that a run can tell whether a test image was among them.
    ``images``: a uint8 tensor, or a streamed split's images (read a chunk at a time)."""
    from icepick.data.stream import cpu_chunks

    out = np.fromiter((int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little", signed=True)
                       for chunk in cpu_chunks(images) for row in np.ascontiguousarray(chunk).reshape(len(chunk), -1)),
                      dtype=np.int64, count=len(images))
    out.sort()
    return out


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    meta: Mapping[str, Any] | None = None,
    training_images: np.ndarray | None = None,
) -> None:
    """Write the model (arch, classes, image shape, widths, normalisation, CPU state dict, meta)
    atomically to ``path``; ``training_images``: :func:`image_hashes` of the images it was trained on."""
    if not hasattr(model, "arch_name"):
        raise ValueError("save_model: the model has no 'arch_name'; build it with icepick.models.build_model")
    meta = dict(meta) if meta is not None else None
    _check_meta(meta)
    normalization = getattr(model, "normalization", None)
    _check_meta(normalization, "normalization")
    trained_on = getattr(model, "trained_on", None)
    _check_meta(trained_on, "trained_on")
    payload = {
        "format": MODEL_FORMAT,
        "arch": model.arch_name,
        "num_classes": int(model.num_classes),
        "input_shape": list(model_input_shape(model)),
        "widths": model_widths(model),
        "normalization": normalization,
        "trained_on": trained_on,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    if training_images is not None:
        payload["training_images"] = torch.from_numpy(np.asarray(training_images, dtype=np.int64))
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(payload, handle)  # through a handle: the archive's inner name is fixed, the bytes reproducible


def _read(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "Weights only load failed" in text and ("Unsupported global" in text or zipfile.is_zipfile(path)):
            raise  # a pickled object (a whole module): readable, not safely (bytes that are no pickle: damaged)
        raise ValueError(f"{path}: damaged or truncated model file, it cannot be read (UnpicklingError); save it "
                         f"again, or rerun the step that wrote it") from err
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise ValueError(  # torch's own text can be long and suggests unsafe loading: not shown
            f"{path}: damaged or truncated model file, it cannot be read ({type(err).__name__}); save it again, or "
            f"rerun the step that wrote it"
        ) from err


def is_model_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an icepick model file (False for a state dict, a saved module, a torchvision name)."""
    if not os.path.isfile(path):
        return False
    try:
        payload = _read(os.fspath(path))
    except (ValueError, pickle.UnpicklingError):
        return False
    return isinstance(payload, dict) and payload.get("format") == MODEL_FORMAT


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load a file written by :func:`save_model`; returns ``(model in eval mode, meta)``.

    The model carries ``arch_name``, ``num_classes``, ``input_shape``, ``normalization`` (None:
    not recorded) and ``trained_on`` (the data set's record, None when icepick did not train it).
    A damaged file, or one that is not an icepick model file, raises ValueError naming the file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model file; give the path of a model file (icepick pretrain writes "
                                f"one)")
    try:
        payload = _read(path)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: not an icepick model file (it holds a pickled object, such as a whole saved "
                         f"module); give it with --model SPEC, which reads your own weights") from err
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not an icepick model file (format {MODEL_FORMAT} expected); a state dict or a saved "
                         f"module of your own is read with --model SPEC naming its architecture")
    try:
        model = build_model(payload["arch"], payload["num_classes"], payload["widths"],
                            tuple(payload.get("input_shape") or DEFAULT_INPUT_SHAPE))
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        detail = " ".join(str(err).split())
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        raise ValueError(f"{path}: inconsistent model file ({type(err).__name__}: {detail}); rerun the step that "
                         f"wrote it") from err
    _check_finite(payload["state_dict"], path)
    model.normalization = payload.get("normalization")
    model.trained_on = payload.get("trained_on")
    model.to(device)
    model.eval()
    meta = payload.get("meta")
    return model, dict(meta) if meta is not None else {}


def training_hashes(path: str | os.PathLike) -> np.ndarray | None:
    """The :func:`image_hashes` of the images the model in ``path`` was trained on (None: not recorded)."""
    payload = _read(os.fspath(path))
    hashes = payload.get("training_images") if isinstance(payload, dict) else None
    return None if hashes is None else hashes.numpy()


def _check_finite(state: Mapping[str, torch.Tensor], path: str) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path}: holds NaN or infinite values ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); "
                         f"these weights cannot be used: train the model again, or give other weights")


# ---------------------------------------------------------------- a user's own weights


@dataclass
class LoadedWeights:
    """What :func:`load_weights` read: the model (eval mode) and where its weights came from.

    ``replaced``: the layers whose weights did not fit (a classifier of another class count)
    and were left freshly initialised; ``normalization``: what the weights expect, when known.
    """

    model: nn.Module
    origin: str
    replaced: list[str]
    normalization: dict[str, list[float]] | None


def torchvision_weights(builder: str, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torchvision's named weights of ``builder`` (``IMAGENET1K_V1``, ``DEFAULT``) from the local
    torch hub cache, and their facts (classes, normalisation, url); nothing is downloaded."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(builder)
        weights = enum[name] if name != "DEFAULT" else enum.DEFAULT
    except (KeyError, ValueError) as err:
        choices = ", ".join(w.name for w in torchvision.models.get_model_weights(builder)) if builder in \
            torchvision.models.list_models() else "none"
        raise ConfigError(f"pretrained: torchvision has no weights {name!r} for {builder} (it has: {choices})") from err
    file = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    if not os.path.isfile(file):
        raise FileNotFoundError(
            f"pretrained: torchvision's {type(weights).__name__}.{weights.name} is not in the local cache ({file}); "
            f"nothing is downloaded here: fetch {weights.url} once where the internet is reachable and place it there "
            f"(or set TORCH_HOME)")
    state = _read(file)
    transforms = weights.transforms()
    facts = {"url": weights.url, "classes": len(weights.meta.get("categories") or []),
             "normalization": {"mean": [float(v) for v in transforms.mean], "std": [float(v) for v in transforms.std]},
             "name": f"{type(weights).__name__}.{weights.name}"}
    return state, facts


def _state_dict_of(obj: Any, path: str) -> dict[str, torch.Tensor] | None:
    """The state dict in a loaded object: a dict of tensors, or one under a checkpoint's usual keys."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if not isinstance(obj, Mapping):
        return None
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = dict(obj)
        if all(k.startswith("module.") for k in state):  # saved from nn.DataParallel / DDP
            state = {k[len("module."):]: v for k, v in state.items()}
        return state
    for key in _STATE_KEYS:
        if key in obj:
            found = _state_dict_of(obj[key], path)
            if found is not None:
                return found
    return None


def _unpickle_module(path: str) -> Any:
    """A whole saved module, unpickled (``weights_only=False``: the file's own classes are imported)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"pretrained: {path} holds a saved module whose class cannot be imported ({err}); run from "
                          f"the folder that holds its module, or add that folder to PYTHONPATH") from err
    except Exception as err:  # noqa: BLE001 - any other failure to unpickle: one line
        raise ValueError(f"pretrained: {path}: cannot read it ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:120]})") from err


def _fit_state(model: nn.Module, state: Mapping[str, torch.Tensor], allow_new_head: bool,
               where: str) -> list[str]:
    """Load ``state`` into ``model``: a 3-channel first convolution into a 1-channel one (summed
    over colours), and, with ``allow_new_head``, layers whose shape differs left as initialised.
    Returns the modules left as initialised; raises ConfigError on anything else that differs."""
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "AuxLogits."))}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        shown = ", ".join((missing + unexpected)[:4])
        raise ConfigError(f"pretrained: {where} does not fit {getattr(model, 'arch_name', 'the model')} ("
                          f"{len(missing)} missing and {len(unexpected)} unexpected weights: {shown}); check --model")
    fitted, replaced = {}, []
    for key, value in state.items():
        target = own[key]
        if value.shape == target.shape:
            fitted[key] = value
        elif value.dim() == 4 and value.shape[1] == 3 and target.shape[1] == 1 and value.shape[0] == target.shape[0]:
            fitted[key] = value.sum(dim=1, keepdim=True)  # grey images: exactly the colour stem on a grey image
        else:
            replaced.append(key.rsplit(".", 1)[0])
            fitted[key] = target
    replaced = sorted(set(replaced))
    if replaced and not allow_new_head:
        key = next(k for k in state if k.rsplit(".", 1)[0] == replaced[0])
        raise ConfigError(
            f"pretrained: {where}'s {replaced[0]} is {list(state[key].shape)} where the model needs "
            f"{list(own[key].shape)} (another class count?); make a model for this data set from it with "
            f"`icepick pretrain --init {where} --epochs N`, which trains a new classifier")
    model.load_state_dict(fitted, strict=True)
    return replaced


def load_weights(
    source: str | os.PathLike,
    spec: str | None,
    num_classes: int,
    input_shape: tuple[int, int, int],
    allow_new_head: bool = False,
) -> LoadedWeights:
    """A model from weights a user has: an icepick model file, a state dict, a saved module or
    torchvision's named weights (see the module's docstring), built as ``spec`` for
    ``num_classes`` classes and images of ``input_shape``.

    ``allow_new_head``: layers whose shape differs (a classifier of another class count) keep
    their fresh initialisation instead of raising (``icepick pretrain --init`` then trains them).
    """
    from icepick.models import check_model_name

    text = os.fspath(source)
    if spec is not None:
        check_model_name(spec)
    if os.path.isfile(text) and is_model_file(text):
        model, _ = load_model(text)
        if spec is not None and model.arch_name != spec:
            raise ConfigError(f"pretrained: {text} holds a {model.arch_name} model, not {spec} (--model); give the "
                              f"--model it was made for")
        if model.num_classes == num_classes and tuple(model.input_shape) == tuple(input_shape):
            return LoadedWeights(model, f"icepick model file {text}", [], model.normalization)
        spec, widths = model.arch_name, model_widths(model)
        state: Mapping[str, torch.Tensor] = model.state_dict()
        normalization = model.normalization
        origin = f"icepick model file {text}"
    elif not os.path.exists(text) and spec is not None and spec.startswith("torchvision:") and "/" not in text:
        state, facts = torchvision_weights(spec.split(":", 1)[1], text)
        normalization, origin, widths = facts["normalization"], f"torchvision weights {facts['name']}", None
    elif not os.path.exists(text):
        raise FileNotFoundError(f"pretrained: {text} does not exist; give the path of a model or weights file" + (
            ", or a torchvision weights name (IMAGENET1K_V1) with --model torchvision:<builder>" if "/" not in text
            else ""))
    else:
        try:
            obj = _read(text)  # a damaged file is named as such, --model or not
        except pickle.UnpicklingError:
            obj = None  # a pickled object (a whole saved module): unpickled once --model says what it is
        if spec is None:
            raise ConfigError(f"pretrained: {text} is not an icepick model file; give --model SPEC "
                              f"(python:<module>:<factory> or torchvision:<builder>) to say which architecture its "
                              f"weights are for")
        if obj is None:
            obj = _unpickle_module(text)
        state = _state_dict_of(obj, text)
        if state is None:
            raise ConfigError(f"pretrained: {text} holds a {type(obj).__name__}, neither a state dict nor a saved module; "
                              f"save model.state_dict() with torch.save")
        normalization, origin, widths = None, f"weights file {text}", None
    model = build_model(spec, num_classes, widths, input_shape)  # type: ignore[arg-type]
    replaced = _fit_state(model, state, allow_new_head, text)
    _check_finite(model.state_dict(), text)
    if replaced:
        log.info("%s: %s did not fit (%d classes here) and start%s from a fresh initialisation", origin,
                 ", ".join(replaced), num_classes, "s" if len(replaced) == 1 else "")
    model.normalization = normalization
    model.trained_on = None
    model.eval()
    return LoadedWeights(model, origin, replaced, normalization)


def ensure_model_file(
    source: str | os.PathLike, spec: str | None, num_classes: int, input_shape: tuple[int, int, int],
    dest: str | os.PathLike,
) -> str:
    """An icepick model file for ``source``: ``source`` itself when it is one (of ``spec``, when
    given), else the user's weights (:func:`load_weights`) written to ``dest``; returns its path."""
    text = os.fspath(source)
    if is_model_file(text):
        if spec is not None:
            model, _ = load_model(text)
            if model.arch_name != spec:
                raise ConfigError(f"pretrained: {text} holds a {model.arch_name} model, not {spec} (--model); give the "
                                  f"--model it was made for, or its own file")
        return text
    loaded = load_weights(text, spec, num_classes, input_shape)
    save_model(loaded.model, dest, {"kind": "imported-weights", "origin": loaded.origin})
    log.info("read %s as %s; written as an icepick model file to %s", loaded.origin, spec, dest)
    return os.fspath(dest)
