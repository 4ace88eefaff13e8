"""Learning-rate policies for fine-tuning: Eq. 1 of the paper and the fixed baseline rate.

Eq. 1 sets the maximum learning rate of a fine-tuning from how much of the model is left,
alpha = params(pruned) / params(original):

    max_lr = base - Delta / (1 + (alpha / (2 * (1 - p) - alpha)) ** beta)

With the paper's Table 1 values (base 1e-3, Delta 7.5e-4, p 0.12, beta 50) it is a sharp
step down near alpha = 1 - p: 0.001 for alpha >= 0.95, 0.000625 at alpha = 0.88 and
0.00025 for alpha <= 0.80.
"""

from __future__ import annotations

import math

from icepick.config import check_choice, check_positive, check_range

__all__ = ["max_lr", "fixed_lr", "step_lr", "one_cycle_factor", "check_eq1", "LR_POLICIES", "BASE", "DELTA", "P", "BETA"]

LR_POLICIES = ("icepick", "fixed")

# Eq. 1's hyper-parameters in Table 1 of the paper: the defaults everywhere (RunConfig, the CLI).
BASE = 1e-3  # the initial learning rate (and the fixed rate)
DELTA = 7.5e-4  # the largest change of the rate
P = 0.12  # the level of pruning where half of DELTA is reached
BETA = 50.0  # the shape of the step


def check_eq1(base: float, delta: float, p: float, beta: float) -> None:
    """Raise ConfigError unless Eq. 1's hyper-parameters lie in the paper's ranges."""
    check_positive("base", base)
    check_range("delta", delta, 0.0, base, low_open=True, high_open=True)
    check_range("p", p, 0.0, 0.5, low_open=True)
    check_positive("beta", beta)


def max_lr(alpha: float, base: float = BASE, delta: float = DELTA, p: float = P, beta: float = BETA) -> float:
    """Eq. 1: the maximum learning rate for a model with a fraction ``alpha`` of its parameters left.

    Args:
        alpha: params(pruned) / params(original), in (0, 1].
        base: the initial learning rate (> 0).
        delta: the largest change of the learning rate, in (0, base).
        p: the level of pruning where half of ``delta`` is reached, in (0, 0.5].
        beta: the shape of the step (> 0); larger is sharper.

    Returns:
        The learning rate, between ``base - delta`` and ``base``.

    Example:
        >>> round(max_lr(0.88), 6)
        0.000625
    """
    check_eq1(base, delta, p, beta)
    check_range("alpha", alpha, 0.0, 1.0, low_open=True)
    denominator = 2.0 * (1.0 - p) - alpha
    if denominator <= 0.0:  # alpha >= 2(1-p): the ratio is infinite, the step not yet taken
        return base
    log_ratio = beta * math.log(alpha / denominator)
    if log_ratio > 700.0:  # (ratio ** beta) overflows a float; the fraction is 0
        return base
    return base - delta / (1.0 + math.exp(log_ratio))


def fixed_lr(alpha: float, base: float = BASE, **_: float) -> float:
    """The fixed policy (Table 1's '0.001' arm and the baseline): ``base`` whatever ``alpha``."""
    check_range("alpha", alpha, 0.0, 1.0, low_open=True)
    check_positive("base", base)
    return base


def step_lr(policy: str, alpha: float, base: float, delta: float, p: float, beta: float) -> float:
    """The learning rate of one fine-tuning under ``policy`` ('icepick' = Eq. 1, 'fixed')."""
    check_choice("lr_policy", policy, LR_POLICIES)
    if policy == "fixed":
        return fixed_lr(alpha, base)
    return max_lr(alpha, base, delta, p, beta)


def one_cycle_factor(batch: int, total: int, warmup: float = 0.3) -> float:
    """Multiplier in [0, 1] of the peak rate for a one-cycle shape (S-Cyc inspired).

    Rises linearly over the first ``warmup`` fraction of ``total`` batches, then anneals with
    a cosine to zero. ``batch`` counts from 0.
    """
    if total <= 1:
        return 1.0
    peak = max(1, round(warmup * total))
    if batch < peak:
        return (batch + 1) / peak
    progress = (batch - peak) / max(1, total - peak)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
