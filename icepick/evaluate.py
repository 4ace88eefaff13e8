"""Test(.) of Algorithm 1: top-1 accuracy of a model on a device-resident split.

Evaluation runs on an inference copy of the model (:func:`fold_batchnorm`): eval mode, every
BatchNorm folded into the convolution before it, channels_last, under
``torch.inference_mode``. The copy computes the same function up to float rounding and costs
milliseconds; the model itself is left as it was.

:class:`Evaluator` is the incremental form Algorithm 1 uses: after pruning block k nothing
before block k has changed, so it keeps the activations at the input of the block to be
pruned next, as the last pass produced them, and the next pass runs only the rest of the
model from there, with identical correct-image counts (docs/performance.md, "Incremental
evaluation").
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from icepick.data import Split, eval_batches
from icepick.distributed import SINGLE, Dist, all_reduce_sum, shard_bounds
from icepick.models import has_forward_span
from icepick.runtime import MEMORY_FORMAT, default_eval_batch_size, ensure_cpu_allocator, to_memory_format

__all__ = [
    "accuracy",
    "correct_count",
    "percent",
    "fold_batchnorm",
    "has_batchnorm",
    "Evaluator",
    "EvalPass",
    "free_memory",
    "macs_before",
    "CACHE_MEMORY_SHARE",
]

log = logging.getLogger(__name__)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode, channels_last copy of ``model`` with each BN folded into the conv before it.

    In eval mode a BN is a per-channel affine map with fixed statistics, so
    ``bn(conv(x)) == conv'(x)`` with ``W' = W * g / sqrt(var + eps)`` and
    ``b' = beta + (b - mean) * g / sqrt(var + eps)``: one pass over the activations fewer per
    layer. The pairs are the conv layers and the BN registered right after each
    (``icepick.pruning.conv_layers``); the copy is checked against the model on a small
    random batch, and when they disagree (a model whose BN does not follow its conv) the
    plain eval-mode copy is returned instead. Parameters of the copy do not require grad.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from icepick.pruning import conv_layers

    folded = _inference_copy(model)
    names = {m: n for n, m in folded.named_modules()}
    for conv_name, conv, bn in conv_layers(folded):
        if bn is None or not bn.track_running_stats or bn.running_mean is None:
            continue
        _set_submodule(folded, conv_name, fuse_conv_bn_eval(conv, bn))
        _set_submodule(folded, names[bn], nn.Identity())
    to_memory_format(folded)
    for param in folded.parameters():
        param.requires_grad_(False)
    param = next(model.parameters(), None)
    if param is None:
        return folded
    from icepick.models import model_input_shape

    shape = model_input_shape(model)
    probe = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0)).to(param.device, param.dtype)
    probe = probe.contiguous(memory_format=MEMORY_FORMAT)
    was_training = model.training
    try:
        model.eval()  # eval-mode BN reads its statistics and changes nothing
        with torch.inference_mode():
            want, got = model(probe), folded(probe)
    finally:
        model.train(was_training)
    scale = max(1.0, want.abs().max().item())
    if not torch.allclose(want, got, rtol=1e-3, atol=1e-4 * scale):
        log.warning("folding BatchNorm changed %s's outputs; evaluating it unfolded", type(model).__name__)
        return _inference_copy(model)
    return folded


def _inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode, channels_last copy of ``model`` whose parameters do not require grad."""
    copied = copy.deepcopy(model).eval()
    for param in copied.parameters():
        param.requires_grad_(False)
    return to_memory_format(copied)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer (False for a :func:`fold_batchnorm` copy of a CNN)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def correct_count(model: nn.Module, split: Split, batch_size: int | None = None) -> int:
    """Number of images of ``split`` that ``model`` (in eval mode) classifies correctly.

    Runs an inference copy (:func:`fold_batchnorm`) on channels_last batches under inference
    mode; ``model`` is not changed. ``batch_size`` None (or 0) picks the device's best
    (:func:`icepick.runtime.default_eval_batch_size`: 1000 on a GPU, 128 on a CPU); the count
    does not depend on it. Algorithm 1's threshold decisions are made on these counts.
    """
    ensure_cpu_allocator(split.device)
    batch_size = batch_size or default_eval_batch_size(split.device)
    net = fold_batchnorm(model)
    correct = torch.zeros((), dtype=torch.long, device=split.labels.device)
    with torch.inference_mode():
        for x, y in eval_batches(split, batch_size, MEMORY_FORMAT):
            correct += (net(x).argmax(dim=1) == y).sum()
    return int(correct.item())


def percent(correct: int, total: int) -> float:
    """``correct`` of ``total`` images as a top-1 accuracy in percent (0-100)."""
    return 100.0 * correct / max(total, 1)


def accuracy(model: nn.Module, split: Split, batch_size: int | None = None) -> float:
    """Top-1 accuracy in percent (0-100) of ``model`` in eval mode (:func:`correct_count`)."""
    return percent(correct_count(model, split, batch_size), len(split))


# ------------------------------------------------------------------ incremental evaluation


@dataclass(frozen=True)
class EvalPass:
    """One evaluation of a split by an :class:`Evaluator`.

    ``macs`` are the multiply-accumulates the pass ran (images x the MACs of the layers it ran,
    ``icepick.pruning.layer_macs``), ``macs_saved`` those it took from the cache instead (images
    x the MACs of the layers before ``start``); their sum is always a full pass's.
    """

    correct: int
    samples: int
    macs: int
    macs_saved: int
    start: str | None  # the block the pass started from (None: the images)
    kept: str | None  # the block whose input it left in the cache (None: none)


class _Cache:
    """Per-batch activations at the input of ``block``, and what they were computed from."""

    def __init__(self, block: str, batches: list[torch.Tensor], batch_size: int, model: nn.Module) -> None:
        self.block = block
        self.batches: list[torch.Tensor | None] = list(batches)
        self.batch_size = batch_size
        self.nbytes = sum(b.numel() * b.element_size() for b in batches)
        self.fingerprint = _fingerprint(model, block)

    def valid_for(self, model: nn.Module, batch_size: int) -> bool:
        return batch_size == self.batch_size and _same(self.fingerprint, _fingerprint(model, self.block))


_Fingerprint = tuple[list[tuple[torch.Tensor, int]], list[tuple[torch.Tensor, int, torch.Tensor]]]


def _fingerprint(model: nn.Module, block: str) -> _Fingerprint:
    """Every parameter and buffer of ``model`` outside ``block``: the tensor, its version counter
    (bumped by every in-place change, an optimizer step included) and, for the buffers (BN
    statistics, which a training-mode forward updates without bumping it), a copy of the values."""
    try:
        inside = model.get_submodule(block)
    except AttributeError:
        inside = None
    skip = set() if inside is None else {id(t) for t in (*inside.parameters(), *inside.buffers())}
    params = [(p, p._version) for p in model.parameters() if id(p) not in skip]
    buffers = [(b, b._version, b.detach().clone()) for b in model.buffers() if id(b) not in skip]
    return params, buffers


def _same(old: _Fingerprint, new: _Fingerprint) -> bool:
    (old_params, old_buffers), (new_params, new_buffers) = old, new
    if len(old_params) != len(new_params) or len(old_buffers) != len(new_buffers):
        return False
    if any(a is not b or va != vb for (a, va), (b, vb) in zip(old_params, new_params)):
        return False
    return all(a is b and va == vb and torch.equal(ca, cb)
               for (a, va, ca), (b, vb, cb) in zip(old_buffers, new_buffers))


def free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device``: on a GPU ``torch.cuda.mem_get_info``'s free memory
    plus what torch's caching allocator holds unused; on a CPU ``MemAvailable`` of /proc/meminfo.
    None when it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


#: A split's cache is kept only when it takes less than this share of :func:`free_memory`.
CACHE_MEMORY_SHARE = 0.25


def macs_before(macs: Mapping[str, int], block: str) -> int:
    """MACs of the layers called before ``block``'s first layer (``macs``: layer name -> MACs in
    call order, as :func:`icepick.pruning.layer_macs` gives them): the work a pass starting at
    the input of ``block`` does not do."""
    total = 0
    for name, value in macs.items():
        if name.startswith(block + "."):
            return total
        total += value
    raise ValueError(f"block {block!r} has no layer among {list(macs)[:3]}...")


class Evaluator:
    """Test(.) of one split, incremental: it keeps the activations at the input of one block.

    Each :meth:`evaluate` runs the model's BatchNorm-folded inference copy in fixed batches, as
    :func:`correct_count` does, and can leave in the cache the activations at the input of the
    block ``keep`` (the block to be pruned next), exactly as the pass produced them, batch by
    batch. The next evaluation starts from there when the model is unchanged outside that block
    (it was pruned, nothing trained): it runs only the block and what follows it, batch by batch
    with the same batching, so its correct-image count is the full pass's bit for bit.

    The cache is used only when every parameter and buffer outside its block is the same tensor,
    unchanged, as when it was stored (anything that trains changes them); callers that train
    should still :meth:`invalidate` it first, which also frees its memory. It is kept only when
    it fits in :data:`CACHE_MEMORY_SHARE` of the free memory of the split's device (ResNet-110's
    first stage is 16x32x32 floats per image: 0.66 GB for 10,000 images); otherwise the pass
    runs in full and says so once. Models without ``forward_span``
    (:func:`icepick.models.has_forward_span`), or ``cache=False``, always take the full pass.

    On several processes (``dist``, :mod:`icepick.distributed`) each rank evaluates, and caches,
    its contiguous shard of the split, and the correct-image counts are summed over the ranks:
    every rank gets the split's count. ``samples`` and ``macs`` are then the whole split's.
    """

    def __init__(self, split: Split, batch_size: int | None = None, cache: bool = True, name: str = "split",
                 dist: Dist = SINGLE) -> None:
        self.total = len(split)
        self.dist = dist
        if dist.active:
            from icepick.data import subset

            lo, hi = shard_bounds(len(split), dist)
            split = subset(split, torch.arange(lo, hi))
        self.split = split
        self.batch_size = batch_size or default_eval_batch_size(split.device)
        self.enabled = bool(cache)
        self.name = name
        self._cache: _Cache | None = None
        self._told = False
        self._macs_key: tuple | None = None
        self._macs: dict[str, int] = {}

    @property
    def cached_block(self) -> str | None:
        """The block whose input activations the cache holds, or None."""
        return None if self._cache is None else self._cache.block

    @property
    def cache_bytes(self) -> int:
        return 0 if self._cache is None else self._cache.nbytes

    def invalidate(self) -> None:
        """Drop the cache (and free its memory): call it before anything that trains the model."""
        self._cache = None

    def evaluate(self, model: nn.Module, keep: str | None = None) -> EvalPass:
        """Correct-image count of ``model`` on the split; leaves the input of block ``keep`` cached."""
        ensure_cpu_allocator(self.split.device)
        net = fold_batchnorm(model)
        cache, self._cache = self._cache, None  # a pass that fails half-way leaves no cache behind
        if cache is not None and not cache.valid_for(model, self.batch_size):
            cache = None
        start = None if cache is None else cache.block
        keep = self._capturable(net, start, keep)
        kept: list[torch.Tensor] = []
        correct = torch.zeros((), dtype=torch.long, device=self.split.labels.device)
        with torch.inference_mode():
            for i, (x, y) in enumerate(eval_batches(self.split, self.batch_size, MEMORY_FORMAT)):
                h, at = x, None
                if cache is not None:
                    h, at, cache.batches[i] = cache.batches[i], start, None  # freed as it is used
                if keep is not None:
                    h, at = net.forward_span(h, at, keep), keep
                    if i == 0 and not self._room_for(h, keep):
                        keep = None
                    else:
                        kept.append(h)
                logits = net(h) if at is None else net.forward_span(h, at, None)
                correct += (logits.argmax(dim=1) == y).sum()
        if keep is not None:
            self._cache = _Cache(keep, kept, self.batch_size, model)
        correct = all_reduce_sum(correct, self.dist)  # every rank: the whole split's count
        n = self.total
        macs = self._layer_macs(net)
        saved = macs_before(macs, start) if start is not None else 0
        return EvalPass(int(correct.item()), n, n * (sum(macs.values()) - saved), n * saved, start, keep)

    def restore(self, model: nn.Module, block: str) -> bool:
        """Compute the cache at the input of ``block`` with a pass that stops there (a resumed run
        rebuilds the cache an uninterrupted one would hold). Returns whether it is now held."""
        self._cache = None
        net = fold_batchnorm(model)
        if self._capturable(net, None, block) is None:
            return False
        kept: list[torch.Tensor] = []
        with torch.inference_mode():
            for i, (x, _) in enumerate(eval_batches(self.split, self.batch_size, MEMORY_FORMAT)):
                h = net.forward_span(x, None, block)
                if i == 0 and not self._room_for(h, block):
                    return False
                kept.append(h)
        self._cache = _Cache(block, kept, self.batch_size, model)
        return True

    def _capturable(self, net: nn.Module, start: str | None, keep: str | None) -> str | None:
        """``keep`` when this pass can store the input of that block, else None."""
        if keep is None or not self.enabled or not has_forward_span(net):
            return None
        names = [name for name, _ in net.span_blocks()]
        if keep not in names or (start is not None and names.index(keep) < names.index(start)):
            return None
        return keep

    def _room_for(self, first: torch.Tensor, block: str) -> bool:
        """Whether the whole split's activations (``first`` is those of the first batch) fit."""
        need = first.element_size() * (first.numel() // max(first.shape[0], 1)) * len(self.split)
        free = free_memory(first.device)
        if free is not None and need < CACHE_MEMORY_SHARE * free:
            return True
        if not self._told:
            self._told = True
            budget = "unknown" if free is None else f"{CACHE_MEMORY_SHARE * free / 2**20:,.0f} MiB"
            log.info("evaluation cache of the %s split: %s MiB at the input of %s is over a quarter of the free "
                     "memory (%s); evaluating with full passes while it does not fit",
                     self.name, f"{need / 2**20:,.0f}", block, budget)
        return False

    def _layer_macs(self, net: nn.Module) -> dict[str, int]:
        from icepick.pruning import layer_macs

        key = tuple(tuple(p.shape) for p in net.parameters())
        if key != self._macs_key:
            self._macs = layer_macs(net, (1, *self.split.images.shape[1:]))
            self._macs_key = key
        return self._macs
