"""bf16 autocast against strict fp32 on one experiment's shape: fine-tuning and evaluation speed.

The pipeline's own fine-tuning (``icepick.finetune.finetune`` with ``FinetuneConfig(precision=...)``,
the KD teacher folded, batches from a device-resident split) on random images of the given
shape, fp32 and bf16 alternating, and evaluation passes on the same model in fp32 and under
bf16 autocast. Whether bf16 moves the method's decisions is a question for whole runs (the
step records of a run at each precision), not for this benchmark.

Example (the Fashion-MNIST experiment's shape: ResNet-56 at half width on 1x28x28, batch 128)::

    python -m benchmarks.precision --model resnet56_w050 --input-shape 1x28x28 --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from typing import Any

import torch

from benchmarks.common import add_common_args, clock_note, fmt_spread, machine, markdown_table, setup, spread, timed, write_outputs
from icepick.data import Split, eval_batches
from icepick.evaluate import fold_batchnorm
from icepick.finetune import FinetuneConfig, finetune
from icepick.models import build_model
from icepick.runtime import MEMORY_FORMAT, autocast

__all__ = ["main", "measure"]

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "bf16")


def _split(n: int, shape: tuple[int, int, int], device: torch.device) -> Split:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return Split(images, labels, mean=(0.5,) * shape[0], std=(0.25,) * shape[0]).to(device)


def _evaluate(model: torch.nn.Module, split: Split, precision: str, device: torch.device) -> int:
    net = fold_batchnorm(model)
    correct = 0
    with torch.inference_mode(), autocast(device, precision):
        for x, y in eval_batches(split, 1000, MEMORY_FORMAT):
            correct += int((net(x).argmax(dim=1) == y).sum())
    return correct


def measure(model_name: str, shape: tuple[int, int, int], batch_size: int, batches: int, eval_images: int,
            repeats: int, device: torch.device) -> dict[str, Any]:
    """Images/s of fine-tuning and of evaluation at each precision, over ``repeats`` alternating rounds."""
    torch.manual_seed(0)
    base = build_model(model_name, 10, input_shape=shape).to(device)
    teacher = fold_batchnorm(base)
    train, test = _split(batch_size * batches, shape, device), _split(eval_images, shape, device)
    times: dict[str, dict[str, list[float]]] = {p: {"finetune": [], "evaluate": []} for p in PRECISIONS}
    for _ in range(repeats + 1):  # the first round warms up and is not counted
        for precision in PRECISIONS:
            model = copy.deepcopy(base)
            cfg = FinetuneConfig(batch_size=batch_size, max_batches=batches, precision=precision)
            _, ft = timed(lambda: finetune(model, teacher, train, 1e-3, cfg, seed=0), device)
            _, ev = timed(lambda: _evaluate(model, test, precision, device), device)
            times[precision]["finetune"].append(ft)
            times[precision]["evaluate"].append(ev)
    out: dict[str, Any] = {"model": model_name, "input_shape": list(shape), "batch_size": batch_size,
                           "batches": batches, "eval_images": eval_images, "repeats": repeats}
    for precision in PRECISIONS:
        ft = [batch_size * batches / t for t in times[precision]["finetune"][1:]]
        ev = [eval_images / t for t in times[precision]["evaluate"][1:]]
        out[precision] = {"finetune_ips": spread(ft), "evaluate_ips": spread(ev)}
    out["bf16_speedup"] = {
        kind: spread([f / b for f, b in zip(times["fp32"][kind][1:], times["bf16"][kind][1:])])
        for kind in ("finetune", "evaluate")
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet56_w050")
    p.add_argument("--input-shape", default="1x28x28", help="CxHxW")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=8, help="fine-tuning batches per round")
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3, help="rounds counted (after one warm-up round)")
    add_common_args(p, "benchmarks/out")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    device = setup(args)
    shape = tuple(int(v) for v in args.input_shape.lower().split("x"))
    figures = measure(args.model, shape, args.batch_size, args.batches, args.eval_images, args.repeats, device)
    figures["machine"] = machine(device)
    rows = [[pr, fmt_spread(figures[pr]["finetune_ips"], 1), fmt_spread(figures[pr]["evaluate_ips"], 1)]
            for pr in PRECISIONS]
    rows.append(["bf16 / fp32", fmt_spread(figures["bf16_speedup"]["finetune"]),
                 fmt_spread(figures["bf16_speedup"]["evaluate"])])
    md = (f"# bf16 against fp32: {args.model} on {args.input_shape}, batch {args.batch_size}\n\n"
          + markdown_table(["precision", "fine-tuning images/s", "evaluation images/s"], rows)
          + "\n" + clock_note(figures["machine"]) + "\n")
    write_outputs(args.out, "precision", figures, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
