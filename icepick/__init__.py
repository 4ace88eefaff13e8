"""icepick: a reproducible implementation of ICE-Pick (Hu, Gibson, Cano; ICML 2023 workshop).

The method's steps live in modules named after the paper's words:
``models``, ``data``, ``pruning``, ``freezing``, ``schedule`` (Eq. 1), ``finetune``,
``algorithm`` (Algorithm 1) and ``analysis`` (Section 4.1). ``icepick.iterative_prune``
(:mod:`icepick.api`) runs the method on a model and data in memory; ``icepick.compare`` runs
it and the iterative baseline side by side and says what ICE-Pick saves; ``icepick.tune``
chooses θ, η and Eq. 1's values for a model and data with an Optuna study (:mod:`icepick.tuning`).

Importing the package imports nothing heavy (``import icepick.grid`` stays torch-free); the
API is loaded on first use.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["iterative_prune", "PruneResult", "compare", "Comparison", "tune", "TuneResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from icepick import api

        return getattr(api, name)
    raise AttributeError(f"module 'icepick' has no attribute {name!r}")
