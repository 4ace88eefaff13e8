"""Configuration validation shared by every configuration dataclass.

Each configuration is a frozen dataclass whose ``__post_init__`` calls these checks, so a
bad value fails at construction with a message that names the key and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["ConfigError", "check_choice", "check_range", "check_int", "check_positive"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the allowed values."""


def check_choice(key: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ConfigError unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}")


def check_int(key: str, value: Any, minimum: int | None = None) -> None:
    """Raise ConfigError unless ``value`` is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: {value!r} is not an integer")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}: {value} is out of range; it must be an integer >= {minimum}")


def check_range(
    key: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ConfigError unless ``value`` is a finite number in the given interval."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}: {value!r} is not a finite number")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{key}: {value} is out of range; it must lie in {interval}")


def check_positive(key: str, value: Any) -> None:
    """Raise ConfigError unless ``value`` is a finite number > 0."""
    check_range(key, value, 0.0, math.inf, low_open=True, high_open=True)
