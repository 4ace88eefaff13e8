"""One whole pruning run as a process of its own, written the way the authors' script runs it.

The per-process counterpart of ``python -m icepick run`` for ``python -m benchmarks.pruning_run
--processes``: it imports what the authors' script imports (torch, torchvision), reads the
data through torchvision's ``CIFAR10`` with the PIL transforms, loads the pretrained model,
freezes the layers the freeze trace picks, runs :func:`benchmarks.reference.reference_prune_loop`
(``torch.optim.SGD``, the teacher with gradients, evaluation after every prune and every
fine-tuning) and saves the pruned model and a small summary. A benchmark baseline only,
never used by the pipeline.

Example::

    python -m benchmarks.reference_run --pretrained m.pt --data data/ --method baseline --ratio 0.3 \\
        --max-steps 3 --max-batches 2 --batch-size 64 --model-out pruned.pt --summary-out summary.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from benchmarks.reference import cifar10_datasets, reference_prune_loop, test_loader, train_loader
from icepick.freezing import choose_frozen, trace_scores
from icepick.model_files import load_model, save_model
from icepick.records import read_json, write_json
from icepick.runtime import resolve_device

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reference_run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrained", required=True, type=Path, help="pretrained model file (icepick pretrain)")
    p.add_argument("--data", required=True, type=Path, help="data directory holding cifar-10-batches-py/")
    p.add_argument("--trace", type=Path, default=None, help="freeze trace JSON (needed when eta > 0)")
    p.add_argument("--method", default="icepick", choices=("icepick", "baseline"))
    p.add_argument("--ratio", type=float, default=0.4)
    p.add_argument("--theta", type=float, default=1.5, help="accuracy-drop threshold, points")
    p.add_argument("--eta", type=float, default=0.0, help="fraction of conv layers frozen (icepick)")
    p.add_argument("--base", type=float, default=1e-3, help="Eq. 1 base / the fixed learning rate")
    p.add_argument("--max-steps", type=int, default=0, help="prune only the first N blocks (0 = all)")
    p.add_argument("--max-batches", type=int, default=0, help="cap per fine-tuning (0 = one epoch)")
    p.add_argument("--batch-size", type=int, default=128, help="fine-tuning batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-out", required=True, type=Path, help="pruned model file")
    p.add_argument("--summary-out", required=True, type=Path, help="summary JSON (decisions and accuracies)")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    train_set, test_set = cifar10_datasets(args.data)
    model, _ = load_model(args.pretrained, device)
    frozen: list[str] = []
    if args.method == "icepick" and args.eta > 0:
        if args.trace is None:
            print("benchmarks.reference_run: error: --eta > 0 needs --trace", file=sys.stderr)
            return 2
        frozen = choose_frozen(model, trace_scores(read_json(args.trace)), args.eta)  # as the pipeline's runs
    result = reference_prune_loop(
        model, train_loader(train_set, args.batch_size, args.seed), test_loader(test_set), args.ratio, args.theta,
        args.method, frozen, args.max_steps, args.max_batches, args.base, device,
    )
    save_model(model, args.model_out, {"kind": "pruned"})
    write_json(args.summary_out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
