"""icepick: a reproducible implementation of ICE-Pick (Hu, Gibson, Cano; ICML 2023 workshop).

The method's steps live in modules named after the paper's words:
``models``, ``data``, ``pruning``, ``freezing``, ``schedule`` (Eq. 1), ``finetune``,
``algorithm`` (Algorithm 1) and ``analysis`` (Section 4.1).
"""

__version__ = "0.1.0"
