"""Benchmarks of the pipeline against an honest rendering of the authors' training loop.

Never used by the pipeline. Every figure is a ratio of the two arms measured alternately in
one benchmark run, so that load from other users of a shared machine hits both alike.

* ``python -m benchmarks.finetune``: fine-tuning and evaluation throughput, ours vs the reference.
* ``python -m benchmarks.freezing``: measured vs theoretical savings of layer freezing.
* ``python -m benchmarks.pruning_run``: a whole smoke pruning run (ICE-Pick and baseline), end to
  end, in one process or (``--processes``) each run a process of its own.
* ``python -m benchmarks.reference_run``: the reference's whole run as a command (what
  ``--processes`` starts beside ``python -m icepick run``).
* ``python -m benchmarks.gpu`` (``bash benchmarks/gpu_check.sh``): the prepared GPU check: the
  CUDA tests, throughputs at fp32/tf32/bf16, pretraining, a paper-scale pruning run, several
  runs sharing one GPU, and ``icepick cost`` at the measured throughputs (``--cpu-tiny`` on a CPU).
"""
