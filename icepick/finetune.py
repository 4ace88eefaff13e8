"""Fine-tuning FT(.) of Algorithm 1: at most one epoch of SGD with knowledge distillation.

Loss = cross-entropy + ``kd_weight`` * KL(softmax(t / T) || softmax(s / T)), averaged over the
batch, with the unpruned pretrained model as the teacher (eval mode, no gradients) and
T = 2, weight 1, no T^2 factor (the values of the authors' code).

A fresh SGD (momentum 0.9, weight decay 1e-4) is built for every call, over the parameters
that train: frozen layers get no weight-gradient work and no update.

The hot path (docs/performance.md): batches come from the device-resident split (no
DataLoader, no PIL); the model, the teacher and the batches are channels_last; the teacher
is an inference copy with its BatchNorms folded into its convolutions
(``icepick.evaluate.fold_batchnorm``), run under ``torch.inference_mode`` (no graph, no
backward through it); gradients are
dropped (set to None) after each step; SGD updates all parameters at once (foreach ops, in
:class:`SGD`: the arithmetic of ``torch.optim.SGD(foreach=True)`` without importing
``torch.optim``, whose first use imports ``torch._dynamo``, about three seconds of CPU
start-up in every job);
the loss is read back from the device once per call, not once per batch; on a CPU the C
allocator keeps freed activation memory for the next batch (``keep_cpu_allocations``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from icepick.config import ConfigError, check_choice, check_int, check_positive, check_range
from icepick.data import Split, num_train_batches, train_batches
from icepick.distributed import SINGLE, Dist, all_reduce_sum, parallel, shard_bounds
from icepick.evaluate import fold_batchnorm, has_batchnorm
from icepick.models import main_output
from icepick.runtime import MEMORY_FORMAT, PRECISIONS, autocast, ensure_cpu_allocator, grad_scaler, to_memory_format
from icepick.schedule import one_cycle_factor

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "SGD",
    "kd_loss",
    "distillation_loss",
    "finetune",
    "check_early_halt",
    "halt_interval",
    "finetune_batches",
    "step_seed",
]

LR_SHAPES = ("constant", "one_cycle")


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters of one fine-tuning call (units: learning rates per batch step)."""

    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 1e-4
    kd_temperature: float = 2.0  # T of the distillation term
    kd_weight: float = 1.0  # weight of the distillation term (0 = plain cross-entropy)
    lr_shape: str = "constant"  # 'constant' (authors' code) or 'one_cycle' peaking at the step's lr
    # Figure 1, case (4): check the accuracy every so often and stop once the drop is below
    # theta. A value in (0, 1) is a fraction of the fine-tuning's batches (0.25: about 100 of
    # CIFAR-10's 391), an integer >= 1 a number of batches, 0 = always the full epoch (the
    # authors' code). docs/method.md, "Decisions where the paper is silent".
    early_halt: float = 0.25
    max_batches: int = 0  # cap on batches per fine-tuning (0 = one full epoch); for quick runs
    precision: str = "fp32"  # 'fp32' strict (the paper), 'tf32', 'bf16' or 'fp16' (loss-scaled; icepick.runtime)

    def __post_init__(self) -> None:
        check_int("batch_size", self.batch_size, 1)
        check_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_positive("kd_temperature", self.kd_temperature)
        check_range("kd_weight", self.kd_weight, 0.0, math.inf, high_open=True)
        check_choice("lr_shape", self.lr_shape, LR_SHAPES)
        check_early_halt(self.early_halt)
        check_int("max_batches", self.max_batches, 0)
        check_choice("precision", self.precision, PRECISIONS)


def check_early_halt(value: Any) -> None:
    """Raise ConfigError unless ``value`` is 0, a fraction in (0, 1) or a whole number of batches."""
    check_range("early_halt", value, 0.0, math.inf, high_open=True)
    if value >= 1 and value != int(value):
        raise ConfigError(
            f"early_halt: {value} is neither a fraction of an epoch in (0, 1) nor a whole number of batches"
        )


def halt_interval(early_halt: float, batches: int) -> int:
    """Batches between two early-halt checks in a fine-tuning of ``batches`` batches (0 = none).

    A fraction is rounded to whole batches (at least one); a number of batches is taken as it is.
    """
    if early_halt == 0:
        return 0
    if early_halt < 1:
        return max(1, round(early_halt * batches))
    return int(early_halt)


def finetune_batches(n_train: int, cfg: "FinetuneConfig") -> int:
    """Batches in one fine-tuning on ``n_train`` images: one epoch, or ``max_batches`` if fewer."""
    total = num_train_batches(n_train, cfg.batch_size, False)
    return min(total, cfg.max_batches) if cfg.max_batches else total


def step_seed(seed: int, step: int) -> int:
    """The data seed of the fine-tuning at ``step`` of a run with ``seed``: distinct and reproducible."""
    return seed * 1_000_003 + step


@dataclass(frozen=True)
class FinetuneResult:
    """What one fine-tuning did."""

    batches: int
    samples: int
    halted_early: bool
    mean_loss: float
    losses: tuple[float, ...] = ()  # the loss of every batch, in order


class SGD:
    """SGD with momentum and L2 weight decay: ``torch.optim.SGD(foreach=True)``'s update, op for op.

    ``g = grad + weight_decay * p``; ``buf = g`` at the first step, then
    ``buf = momentum * buf + g``; ``p -= lr * buf`` (no dampening, no Nesterov). A test holds
    it equal to ``torch.optim.SGD``. It exists because ``torch.optim``'s first use imports
    ``torch._dynamo`` (about three seconds of CPU time in every fine-tuning job).
    """

    def __init__(self, params: list[torch.Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.buffers: list[torch.Tensor] | None = None

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The parameters as ``torch.optim`` lists them: what ``torch.amp.GradScaler`` unscales and checks."""
        return [{"params": self.params}]

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (all of them, in fine-tuning)."""
        params = [p for p in self.params if p.grad is not None]
        if len(params) != len(self.params):
            raise RuntimeError("SGD.step: every parameter must have a gradient (frozen ones are not passed in)")
        grads = [p.grad for p in params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum:
            if self.buffers is None:
                self.buffers = [g.clone() for g in grads]
            else:
                torch._foreach_mul_(self.buffers, self.momentum)
                torch._foreach_add_(self.buffers, grads)
            grads = self.buffers
        torch._foreach_add_(params, grads, alpha=-self.lr)

    def zero_grad(self) -> None:
        """Drop the gradients (``set_to_none``): the next backward writes fresh ones."""
        for p in self.params:
            p.grad = None


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) summed over classes, averaged over the batch."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="sum") / student_logits.shape[0]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 2.0,
    weight: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy on the labels plus ``weight`` times the KD term."""
    loss = F.cross_entropy(student_logits, labels)
    if weight:
        loss = loss + weight * kd_loss(student_logits, teacher_logits, temperature)
    return loss


def _batches(split: Split, cfg: FinetuneConfig, seed: int) -> tuple[Iterator, int]:
    total = finetune_batches(len(split), cfg)
    return train_batches(split, cfg.batch_size, seed=seed, augment=True, memory_format=MEMORY_FORMAT), total


def finetune(
    model: nn.Module,
    teacher: nn.Module | None,
    train: Split,
    lr: float,
    cfg: FinetuneConfig,
    seed: int,
    should_stop: Callable[[], bool] | None = None,
    on_train: Callable[[nn.Module], None] | None = None,
    progress: Callable[[int], None] | None = None,
    dist: Dist = SINGLE,
) -> FinetuneResult:
    """Fine-tune ``model`` for at most one epoch of ``train`` at learning rate ``lr``.

    Args:
        model: the (pruned, possibly partly frozen) student; trained in place.
        teacher: the unpruned model for the KD term (None: cross-entropy only); one without
            BatchNorm (a :func:`~icepick.evaluate.fold_batchnorm` copy, made once per run) is used as it is.
        train: the training split, on the model's device.
        lr: the step's learning rate (the peak of the one-cycle shape).
        cfg: the fine-tuning hyper-parameters.
        seed: fixes the batch order and augmentation of this call.
        should_stop: for the early halt; called every :func:`halt_interval` batches, True stops.
        on_train: called after ``model.train()`` (e.g. to keep frozen BNs in eval mode).
        progress: called with the number of batches done after each batch.
        dist: a run on several processes (:mod:`icepick.distributed`): this rank trains on its
            contiguous slice of each global batch of ``cfg.batch_size`` images, the student
            wrapped in DistributedDataParallel with BatchNorm over the global batch; every rank
            must call this with the same arguments. ``should_stop`` is called on every rank at
            the same batch.

    With ``cfg.precision`` 'fp16' the loss is scaled (``torch.amp.GradScaler``): a batch whose
    scaled gradients overflow is skipped and the scale lowered, as the scaler does.

    Returns:
        A FinetuneResult. Raises FloatingPointError if the loss becomes NaN or infinite.
    """
    device = next(model.parameters()).device
    ensure_cpu_allocator(device)  # reuse activation memory instead of page-faulting it in every batch
    to_memory_format(model)  # pruning leaves new, contiguous weights: back to channels_last
    if teacher is not None and cfg.kd_weight and has_batchnorm(teacher):
        teacher = fold_batchnorm(teacher)  # eval mode, BN folded, channels_last: a forward pass only
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return FinetuneResult(0, 0, False, float("nan"))
    optimizer = SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = grad_scaler(device, cfg.precision)
    was_training = model.training
    batches, total = _batches(train, cfg, seed)
    interval = halt_interval(cfg.early_halt, total) if should_stop is not None else 0
    done = samples = 0
    loss_sum = torch.zeros((), device=device)
    losses: list[torch.Tensor] = []
    halted = False
    with parallel(model, dist) as net:
        net.train()
        if on_train is not None:
            on_train(model)
        try:
            for x, y in batches:
                if done >= total:
                    break
                batch = y.shape[0]
                if dist.active:  # this rank's slice of the global batch
                    lo, hi = shard_bounds(batch, dist)
                    x, y = x[lo:hi], y[lo:hi]
                if cfg.lr_shape == "one_cycle":
                    optimizer.lr = lr * one_cycle_factor(done, total)
                with autocast(device, cfg.precision):
                    loss = _loss(net, teacher, x, y, cfg)
                if dist.active:  # this slice's share of the global batch's mean loss (DDP sums the ranks')
                    loss = loss * (y.shape[0] / batch) if y.shape[0] else loss
                optimizer.zero_grad()
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)  # skipped when the scaled gradients overflowed
                    scaler.update()
                losses.append(loss.detach())
                loss_sum += losses[-1]
                done += 1
                samples += batch
                if progress is not None:
                    progress(done)
                if interval and done % interval == 0 and done < total:
                    _check_finite(_sum_over_ranks(loss_sum.clone(), dist), done)
                    if should_stop():
                        halted = True
                        break
                    net.train()
                    if on_train is not None:
                        on_train(model)
        finally:
            optimizer.zero_grad()
            model.train(was_training)
    loss_sum = _sum_over_ranks(loss_sum, dist)
    _check_finite(loss_sum, done)
    history = tuple(_sum_over_ranks(torch.stack(losses).float(), dist).tolist()) if losses else ()
    return FinetuneResult(done, samples, halted, (loss_sum / max(done, 1)).item(), history)


def _loss(net: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
          cfg: FinetuneConfig) -> torch.Tensor:
    """The batch's mean loss (cross-entropy, plus the KD term with a teacher); 0, with every
    parameter in the graph, for an empty slice of a global batch."""
    teacher_logits = None
    if teacher is not None and cfg.kd_weight:
        with torch.inference_mode():
            teacher_logits = teacher(x)
        teacher_logits = teacher_logits.clone()  # leave inference mode for autograd
    logits = main_output(net(x))  # GoogLeNet, Inception: the main output, not the auxiliary ones
    if y.shape[0] == 0:
        return logits.float().sum() * 0.0
    if teacher_logits is None:
        return F.cross_entropy(logits.float(), y)
    return distillation_loss(logits.float(), teacher_logits.float(), y, cfg.kd_temperature, cfg.kd_weight)


def _sum_over_ranks(value: torch.Tensor, dist: Dist) -> torch.Tensor:
    """The sum over the ranks of their shares of the loss: the loss of the global batch."""
    if not dist.active:
        return value
    return all_reduce_sum(value.float(), dist)


def _check_finite(loss_sum: torch.Tensor, done: int) -> None:
    if not torch.isfinite(loss_sum):
        raise FloatingPointError(
            f"fine-tuning loss became NaN or infinite within the first {done} batches; "
            "lower the learning rate or check the model and data"
        )
