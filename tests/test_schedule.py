"""Eq. 1: the pruning-aware maximum learning rate."""

import math

import pytest

from icepick.config import ConfigError
from icepick.schedule import fixed_lr, max_lr, one_cycle_factor, step_lr


@pytest.mark.parametrize(
    ("alpha", "expected", "tol"),
    [
        (1.0, 1e-3, 1e-9),  # nothing pruned: the base rate
        (0.95, 1e-3, 5e-7),  # still at the base rate (0.99974e-3)
        (0.90, 9.3e-4, 1e-5),  # ~0.00093
        (0.88, 6.25e-4, 1e-12),  # the midpoint: base - Delta / 2
        (0.80, 2.5e-4, 1e-7),  # after the step: base - Delta
        (0.30, 2.5e-4, 1e-12),
    ],
)
def test_eq1_values_from_method(alpha, expected, tol):
    assert max_lr(alpha) == pytest.approx(expected, abs=tol)


def test_eq1_written_as_in_the_paper():
    alpha, base, delta, p, beta = 0.87, 1e-3, 7.5e-4, 0.12, 50
    by_hand = base - delta / (1 + (alpha / (2 * (1 - p) - alpha)) ** beta)
    assert max_lr(alpha, base, delta, p, beta) == pytest.approx(by_hand, rel=1e-12)


def test_eq1_decreases_monotonically_as_pruning_grows():
    alphas = [1 - i / 200 for i in range(0, 199)]
    rates = [max_lr(a) for a in alphas]
    assert all(later <= earlier for earlier, later in zip(rates, rates[1:]))
    assert rates[0] > rates[-1]


def test_eq1_stays_between_base_minus_delta_and_base():
    for alpha in [0.01, 0.2, 0.5, 0.85, 0.88, 0.9, 0.99, 1.0]:
        assert 1e-3 - 7.5e-4 - 1e-15 <= max_lr(alpha) <= 1e-3 + 1e-15


def test_eq1_p_at_its_upper_bound_does_not_divide_by_zero():
    assert max_lr(1.0, p=0.5) == pytest.approx(1e-3)
    assert math.isfinite(max_lr(0.999, p=0.5))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": 0.9, "delta": 1e-3}, "delta"),  # Delta must be < base
        ({"alpha": 0.9, "delta": 0.0}, "delta"),
        ({"alpha": 0.9, "p": 0.0}, "p"),
        ({"alpha": 0.9, "p": 0.6}, "p"),
        ({"alpha": 0.9, "beta": 0.0}, "beta"),
        ({"alpha": 0.9, "base": -1.0}, "base"),
        ({"alpha": float("nan")}, "alpha"),
    ],
)
def test_eq1_rejects_arguments_outside_the_papers_ranges(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        max_lr(**kwargs)


def test_fixed_policy_ignores_pruning():
    assert fixed_lr(0.2) == fixed_lr(1.0) == 1e-3
    assert step_lr("fixed", 0.5, 1e-3, 7.5e-4, 0.12, 50) == 1e-3
    assert step_lr("icepick", 0.5, 1e-3, 7.5e-4, 0.12, 50) == pytest.approx(2.5e-4)
    with pytest.raises(ConfigError, match="lr_policy: 'cosine' is not allowed; choose one of 'icepick', 'fixed'"):
        step_lr("cosine", 0.5, 1e-3, 7.5e-4, 0.12, 50)


def test_one_cycle_rises_to_the_peak_then_anneals():
    factors = [one_cycle_factor(b, 10) for b in range(10)]
    assert max(factors) == 1.0
    peak = factors.index(1.0)
    assert all(a < b for a, b in zip(factors[:peak], factors[1 : peak + 1]))
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1 :]))
    assert factors[-1] < 0.2
