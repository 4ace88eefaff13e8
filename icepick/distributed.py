"""One run on several processes: ``torchrun --nproc_per_node N -m icepick run ...``.

torchrun starts N processes (ranks) and sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in each
one's environment; :func:`from_env` reads them into a :class:`Dist`, and :func:`init` joins the
process group (NCCL on CUDA, gloo on the CPU). One process alone (no torchrun, or N = 1) is
:data:`SINGLE`, and every function here is then a no-op that costs nothing.

What each rank does in a run (``icepick.algorithm``):

* **Pruning**: every rank prunes the same filters of the same weights. Its scores are computed on
  every rank (so a bad setting fails on all of them alike) and rank 0's are broadcast
  (:func:`broadcast_`), so a criterion that reads data on a GPU, whose kernels cuDNN may pick
  differently per process, cannot make ranks disagree.
* **Fine-tuning**: every rank draws the same seeded global batch (order and augmentation) and
  trains on its contiguous slice of it (:func:`shard_bounds`); the union of the slices is the
  one-process batch. The student is wrapped in DistributedDataParallel for each fine-tuning
  (:func:`parallel`; pruning changes the shapes between two fine-tunings), its 2-d BatchNorms
  replaced for the fine-tuning by :class:`GlobalBatchNorm2d`, which normalises with the statistics
  of the whole global batch (one all-reduce per layer in the forward pass and one in the
  backward pass), as one process does. Each rank's loss is its slice's share of the global
  batch's mean loss (the sum of its images' losses over the global batch size), and the ranks'
  gradients are summed (:func:`_sum_gradients`, not DDP's mean), so every gradient, of an
  activation as of a weight, is the one-process gradient, also when the slices differ in size
  (and an fp16 loss scale overflows where one process's would).
* **Evaluation**: each rank counts the correct images of its contiguous shard of a split and the
  counts are summed (:func:`all_reduce_sum`), so every rank takes the same decision.
* **Records**: rank 0 alone writes them (:func:`is_main`); every rank reads a saved state to resume.

Example (two CPU processes)::

    torchrun --standalone --nproc_per_node 2 -m icepick run --device cpu ...
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from icepick.config import ConfigError

__all__ = [
    "Dist",
    "SINGLE",
    "from_env",
    "process_threads",
    "backend_for",
    "rank_device",
    "init",
    "shutdown",
    "is_main",
    "shard_bounds",
    "all_reduce_sum",
    "broadcast_",
    "barrier",
    "GlobalBatchNorm2d",
    "global_batchnorm",
    "parallel",
]


@dataclass(frozen=True)
class Dist:
    """This process's place in a run on several processes (torchrun's environment)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this node (they share its CPU threads)

    @property
    def active(self) -> bool:
        """Whether there is more than one process (collectives are needed)."""
        return self.world_size > 1

    def record(self) -> dict[str, object]:
        """What a run's summary records (``distributed``)."""
        return {"world_size": self.world_size, "batchnorm": "global" if self.active else "local",
                "backend": _backend_name() if self.active else None}


#: One process alone: every function of this module is then a no-op.
SINGLE = Dist()


def _env_int(environ: Mapping[str, str], key: str, default: int) -> int:
    text = environ.get(key)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} in the environment is not an integer; start the run with torchrun, "
                          f"which sets it, or unset it") from None


def from_env(environ: Mapping[str, str] | None = None) -> Dist:
    """The :class:`Dist` of ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (torchrun's), :data:`SINGLE` without them."""
    environ = os.environ if environ is None else environ
    world = _env_int(environ, "WORLD_SIZE", 1)
    rank = _env_int(environ, "RANK", 0)
    local = _env_int(environ, "LOCAL_RANK", rank)
    local_world = _env_int(environ, "LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world or not 0 <= local < local_world:
        raise ConfigError(f"WORLD_SIZE={world}, RANK={rank}, LOCAL_RANK={local}: not a process of a run on several "
                          f"processes; start it with torchrun, or unset them")
    return Dist(rank, world, local, local_world)


def process_threads(threads: int | None, dist: Dist) -> int | None:
    """This process's share of a job's ``threads`` (the node's processes split them; at least 1)."""
    if not threads:
        return threads
    return max(1, int(threads) // dist.local_world_size)


def backend_for(device: torch.device) -> str:
    """The collective backend for ``device``: NCCL on CUDA, gloo on the CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_device(dist: Dist, requested: str) -> str:
    """The ``--device`` of this rank: ``cuda:LOCAL_RANK`` for 'auto' (with CUDA) and 'cuda', as given otherwise.

    One GPU per process: a run on several processes does not take one GPU for all of them
    ('cuda:N' is refused), and a node needs at least as many GPUs as processes.
    """
    if not dist.active:
        return requested
    if requested.startswith("cuda:"):
        raise ConfigError(f"device: {requested!r} names one GPU, but this run has {dist.world_size} processes (one "
                          "GPU each, cuda:LOCAL_RANK); use --device cuda or auto")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if requested in ("auto", "cuda"):
        count = torch.cuda.device_count()
        if dist.local_rank >= count:
            raise ConfigError(f"device: process {dist.local_rank} of this node has no GPU ({count} visible); start "
                              "at most as many processes per node as it has GPUs (--nproc_per_node)")
        return f"cuda:{dist.local_rank}"
    return requested


def init(dist: Dist, device: torch.device) -> None:
    """Join the process group of ``dist`` (torchrun's rendezvous, ``env://``); no-op for one process."""
    if not dist.active or torch.distributed.is_initialized():
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    torch.distributed.init_process_group(backend_for(device), rank=dist.rank, world_size=dist.world_size, **kwargs)


def shutdown(dist: Dist) -> None:
    """Leave the process group (after a barrier, so no rank leaves before rank 0 has written)."""
    if dist.active and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _backend_name() -> str | None:
    return torch.distributed.get_backend() if torch.distributed.is_initialized() else None


def is_main(dist: Dist) -> bool:
    """Whether this process writes the records (rank 0)."""
    return dist.rank == 0


def shard_bounds(n: int, dist: Dist) -> tuple[int, int]:
    """This rank's contiguous slice ``[lo, hi)`` of ``n`` items: sizes differ by at most one, in rank order."""
    return n * dist.rank // dist.world_size, n * (dist.rank + 1) // dist.world_size


def all_reduce_sum(value: torch.Tensor, dist: Dist) -> torch.Tensor:
    """``value`` summed over the ranks (in place; returned). No-op for one process."""
    if dist.active:
        torch.distributed.all_reduce(value)
    return value


def broadcast_(value: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Rank 0's ``value`` on every rank (in place, same shape everywhere; returned). No-op for one process."""
    if dist.active:
        torch.distributed.broadcast(value, src=0)
    return value


def barrier(dist: Dist) -> None:
    """Wait for every rank. No-op for one process."""
    if dist.active:
        torch.distributed.barrier()


# ---------------------------------------------------------------- BatchNorm over the global batch


class _GlobalBatchNorm(torch.autograd.Function):
    """Training-mode batch normalisation with the statistics of every rank's images.

    Forward: each rank sums ``x - shift`` and its square per channel (``shift`` = the running mean,
    the same on every rank, keeps the sum of squares accurate), one all-reduce gives the global
    mean and biased variance, as one process computes them on the whole batch. Backward: the
    per-channel sums of ``g`` and ``g * x_hat`` are all-reduced likewise, so the input gradient is
    the one-process gradient; the weight and bias gradients are each rank's own share (summed
    over the ranks with every other gradient).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps: float, factor: float):  # type: ignore[override]
        channels = x.shape[1]
        xf = x.float()
        shift = running_mean.float() if running_mean is not None else xf.new_zeros(channels)
        d = xf - shift.view(1, -1, 1, 1)
        count = torch.full((1,), float(x.numel() // max(channels, 1)), dtype=torch.float64, device=x.device)
        local = torch.cat([d.sum((0, 2, 3)).double(), (d * d).sum((0, 2, 3)).double(), count])  # counts exact in fp64
        torch.distributed.all_reduce(local)
        n = local[-1].clamp(min=1.0)
        mean_d = local[:channels] / n
        var = (local[channels:2 * channels] / n - mean_d * mean_d).clamp(min=0.0)
        mean = (shift.double() + mean_d).float()
        invstd = torch.rsqrt(var + eps).float()
        if running_mean is not None and factor:
            with torch.no_grad():
                unbiased = var * n / (n - 1).clamp(min=1.0)
                running_mean.mul_(1 - factor).add_(mean.to(running_mean.dtype), alpha=factor)
                running_var.mul_(1 - factor).add_(unbiased.to(running_var.dtype), alpha=factor)
        scale = invstd if weight is None else invstd * weight.float()
        offset = -mean * scale if bias is None else bias.float() - mean * scale
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.count = float(n)
        return (xf * scale.view(1, -1, 1, 1) + offset.view(1, -1, 1, 1)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight, mean, invstd = ctx.saved_tensors
        g = grad.float()
        x_hat = (x.float() - mean.view(1, -1, 1, 1)) * invstd.view(1, -1, 1, 1)
        sum_g = g.sum((0, 2, 3))
        sum_gx = (g * x_hat).sum((0, 2, 3))
        grad_weight = sum_gx.clone() if weight is not None else None
        grad_bias = sum_g.clone() if weight is not None else None
        both = torch.cat([sum_g, sum_gx])
        torch.distributed.all_reduce(both)
        channels = x.shape[1]
        mean_g = (both[:channels] / ctx.count).view(1, -1, 1, 1)
        mean_gx = (both[channels:] / ctx.count).view(1, -1, 1, 1)
        scale = invstd if weight is None else invstd * weight.float()
        grad_x = (g - mean_g - x_hat * mean_gx) * scale.view(1, -1, 1, 1)
        if weight is not None:
            grad_weight, grad_bias = grad_weight.to(weight.dtype), grad_bias.to(weight.dtype)
        return grad_x.to(x.dtype), grad_weight, grad_bias, None, None, None, None


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that, in training on several processes, normalises with the whole global batch.

    An ``nn.BatchNorm2d`` in every other respect (eval mode, one process, folding, pruning), so the
    code that looks for BatchNorms finds it. Made by :func:`global_batchnorm`, sharing the
    parameters and buffers of the BatchNorm it stands in for.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not (self.training and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        factor = 0.0
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        track = self.track_running_stats
        return _GlobalBatchNorm.apply(x, self.weight, self.bias, self.running_mean if track else None,
                                      self.running_var if track else None, self.eps, factor)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def _standin(bn: nn.BatchNorm2d) -> GlobalBatchNorm2d:
    new = GlobalBatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                            device="meta")
    for key in ("weight", "bias"):
        setattr(new, key, getattr(bn, key))
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        new._buffers[key] = getattr(bn, key)
    new.train(bn.training)
    return new


@contextlib.contextmanager
def global_batchnorm(model: nn.Module, dist: Dist) -> Iterator[nn.Module]:
    """Within the block, every ``nn.BatchNorm2d`` of ``model`` is a :class:`GlobalBatchNorm2d` on the
    same parameters and buffers (so the optimizer, freezing and the statistics act on the model's
    own tensors); afterwards the original modules are back. No-op for one process."""
    if not dist.active:
        yield model
        return
    swapped = [(name, m) for name, m in model.named_modules() if type(m) is nn.BatchNorm2d and name]
    for name, bn in swapped:
        _set_submodule(model, name, _standin(bn))
    try:
        yield model
    finally:
        for name, bn in swapped:
            standin = model.get_submodule(name)
            bn.train(standin.training)
            _set_submodule(model, name, bn)


@contextlib.contextmanager
def parallel(model: nn.Module, dist: Dist) -> Iterator[nn.Module]:
    """``model`` wrapped for one fine-tuning: DistributedDataParallel over :func:`global_batchnorm`.

    DDP sums the gradients of the parameters that train over the ranks (:func:`_sum_gradients`;
    frozen ones have ``requires_grad`` False and are left out); ``static_graph`` lets a model
    with parameters that take no part in the loss (an auxiliary head) train without DDP's
    per-step search for unused parameters; the buffers are broadcast from rank 0 before each
    forward pass, so every rank keeps the same model. Yields ``model`` itself for one process.
    """
    if not dist.active:
        yield model
        return
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    with global_batchnorm(model, dist):
        ids = None
        if device.type == "cuda":
            ids = [device.index if device.index is not None else torch.cuda.current_device()]
        net = DistributedDataParallel(model, device_ids=ids, static_graph=True)  # buffers: rank 0's, each forward
        net.register_comm_hook(None, _sum_gradients)
        yield net


def _sum_gradients(state, bucket):  # noqa: ANN001 - DDP checks the annotations against its own classes
    """DDP communication hook: the sum of the ranks' gradients (DDP's own divides by the world size).

    Each rank's loss is already its share of the global batch's mean loss, so the sum is the
    gradient of one process on the whole batch.
    """
    work = torch.distributed.all_reduce(bucket.buffer(), async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])
