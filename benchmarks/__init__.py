"""Benchmarks of the pipeline against an honest rendering of the authors' training loop.

Never used by the pipeline. Every figure is a ratio measured in one process, the two arms
alternating, so that load from other users of a shared machine hits both alike.

* ``python -m benchmarks.finetune``: fine-tuning and evaluation throughput, ours vs the reference.
* ``python -m benchmarks.freezing``: measured vs theoretical savings of layer freezing.
* ``python -m benchmarks.pruning_run``: a whole smoke pruning run (ICE-Pick and baseline), end to end.
* ``python -m benchmarks.run``: all three, into one output folder.
"""
