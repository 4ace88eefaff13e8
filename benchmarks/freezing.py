"""Freezing that really saves: measured vs theoretical savings of one fine-tuning epoch.

For each model, one fine-tuning of a fixed number of batches (``icepick.finetune.finetune``,
KD teacher included, as the pipeline runs it) at eta = 0, 0.3 and 0.7, the etas alternating
in one process. Beside the measured fraction of time saved against eta = 0, the
theoretical fraction of MACs saved: frozen layers do no weight-gradient work, and a frozen
prefix (every layer before the first trainable one) no input-gradient work either
(``icepick.freezing.training_macs_per_sample``). Two theoretical figures: the student's
training MACs alone, and the whole step (student + the teacher's forward pass, which
freezing cannot save); the second is what the measured time should follow.

Layouts of the frozen layers:

* ``prefix``: the first ceil(eta * N) conv layers. This is what the freeze trace picks when
  early layers move least (Section 4.1, Figure 2), and where freezing saves the most.
* ``spread``: ceil(eta * N) layers spread evenly over the depth, the first layer trainable:
  only weight gradients are saved (a worst case for the trace's choice).

Example::

    python -m benchmarks.freezing                                   # resnet110 and mobilenetv2
    python -m benchmarks.freezing --models resnet20 --batches 2 --repeats 1   # seconds
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import sys
from typing import Any

import torch

from benchmarks.common import add_common_args, clock_note, machine, markdown_table, random_split, setup, spread, timed, write_outputs
from icepick.finetune import FinetuneConfig, finetune
from icepick.freezing import apply_freezing, layer_trainable, training_macs_per_sample
from icepick.models import build_model
from icepick.pruning import conv_layers, layer_macs

__all__ = ["frozen_layers", "theory", "main"]

log = logging.getLogger(__name__)
LAYOUTS = ("prefix", "spread")


def frozen_layers(names: list[str], eta: float, layout: str) -> list[str]:
    """The ceil(eta * N) layers frozen under ``layout`` (forward order)."""
    count = math.ceil(eta * len(names) - 1e-9)
    if count == 0:
        return []
    if layout == "prefix":
        return names[:count]
    # spread: evenly over layers 1..N-1, so the first layer (and the gradient path) trains
    picks = sorted({1 + int(i * (len(names) - 1) / count) for i in range(count)})
    return [names[i] for i in picks]


def theory(model: torch.nn.Module, frozen: list[str]) -> dict[str, int]:
    """Per-sample MACs: forward, the student's training work, and the step with the teacher's forward."""
    macs = layer_macs(model)
    work = copy.deepcopy(model)
    apply_freezing(work, frozen)
    student = training_macs_per_sample(macs, layer_trainable(work))
    forward = sum(macs.values())
    return {"forward": forward, "student": student, "step": student + forward}


def run_model(name: str, etas: list[float], layouts: list[str], batches: int, batch_size: int, repeats: int,
              device: torch.device) -> dict[str, Any]:
    """Alternate the freezing configurations on one model; return its figures."""
    torch.manual_seed(0)
    init = build_model(name).to(device)
    teacher = copy.deepcopy(init).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    names = [n for n, _, _ in conv_layers(init)]
    configs = [("none", 0.0, [])] + [(layout, eta, frozen_layers(names, eta, layout))
                                     for layout in layouts for eta in etas if eta > 0]
    split = random_split(batch_size * batches, seed=1, device=device)
    cfg = FinetuneConfig(batch_size=batch_size, max_batches=batches)

    def run(frozen: list[str], n: int) -> None:
        model = copy.deepcopy(init)
        apply_freezing(model, frozen)
        finetune(model, teacher, split, 1e-3, FinetuneConfig(batch_size=batch_size, max_batches=n), seed=0)

    for _, _, frozen in configs:  # warm-up
        run(frozen, 1)
    seconds: dict[int, list[float]] = {i: [] for i in range(len(configs))}
    for rep in range(repeats):
        order = list(range(len(configs)))
        order = order[rep % len(order):] + order[: rep % len(order)]  # rotate: no config always first
        for i in order:
            _, sec = timed(lambda: run(configs[i][2], cfg.max_batches), device)
            seconds[i].append(sec)
        log.info("%s repeat %d/%d: %s", name, rep + 1, repeats,
                 ", ".join(f"{c[0]} {c[1]}: {seconds[i][-1]:.2f}s" for i, c in enumerate(configs)))
    base = theory(init, [])
    rows = []
    for i, (layout, eta, frozen) in enumerate(configs):
        th = theory(init, frozen)
        saved = spread([1 - s / b for s, b in zip(seconds[i], seconds[0])])
        rows.append({
            "layout": layout, "eta": eta, "frozen": len(frozen), "layers": len(names),
            "first_trainable": next((j for j, n in enumerate(names) if n not in frozen), None),
            "seconds": seconds[i], "images_per_s": [batch_size * batches / s for s in seconds[i]],
            "theory_student_saved": 1 - th["student"] / base["student"],
            "theory_step_saved": 1 - th["step"] / base["step"],
            "measured_saved": saved,
            "measured_over_theory": (saved["median"] / (1 - th["step"] / base["step"])) if frozen else None,
        })
    return {"model": name, "batch_size": batch_size, "batches": batches, "repeats": repeats,
            "forward_macs": base["forward"], "configs": rows}


def render(figures: dict[str, Any]) -> str:
    rows = []
    for m in figures["models"]:
        for r in m["configs"]:
            if r["eta"] == 0:
                continue
            rows.append([
                m["model"], r["layout"], f"{r['eta']:g}", f"{r['frozen']}/{r['layers']}",
                f"{100 * r['theory_student_saved']:.1f}%", f"{100 * r['theory_step_saved']:.1f}%",
                f"{100 * r['measured_saved']['median']:.1f}% ({100 * r['measured_saved']['min']:.1f}-"
                f"{100 * r['measured_saved']['max']:.1f})",
                f"{100 * r['measured_over_theory']:.0f}%",
                f"{100 * r['measured_saved']['median'] / r['theory_student_saved']:.0f}%",
            ])
    m = figures["machine"]
    text = (f"{clock_note(m)}\n\nCommand: `{figures['command']}`\n\n"
            "Saved = 1 - time(eta) / time(eta = 0), paired per repeat, median (min-max). Theory (student) counts the "
            "student's training MACs only; theory (step) adds the teacher's forward pass of the KD loss, which the "
            "measured fine-tuning step also runs; measured / theory compares with it (the target: at least 80%). "
            "The last column compares with the student-only figure, a stricter yardstick that ignores the "
            "teacher's share of the step.\n\n")
    text += markdown_table(["model", "layout", "eta", "frozen", "theory (student)", "theory (step)",
                            "measured saved", "measured / theory (step)", "measured / theory (student)"], rows)
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.freezing", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet110,mobilenetv2", help="comma-separated model names")
    p.add_argument("--etas", default="0.3,0.7", help="comma-separated fractions frozen (eta = 0 always runs)")
    p.add_argument("--layouts", default="prefix,spread", help=f"comma-separated, from {', '.join(LAYOUTS)}")
    p.add_argument("--batches", type=int, default=3, help="fine-tuning batches per measurement")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    add_common_args(p, "results/benchmarks/perf")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
    etas = [float(x) for x in args.etas.split(",") if x.strip()]
    bad = [x for x in layouts if x not in LAYOUTS]
    if bad or not all(0 <= e < 1 for e in etas) or args.repeats < 1 or args.batches < 1:
        print(f"benchmarks.freezing: error: layouts from {LAYOUTS}, etas in [0, 1), --repeats and --batches >= 1",
              file=sys.stderr)
        return 2
    device = setup(args)
    figures: dict[str, Any] = {"benchmark": "freezing", "command": "python -m benchmarks.freezing " + " ".join(
        argv if argv is not None else sys.argv[1:]), "machine": machine(device), "models": []}
    for name in [x.strip() for x in args.models.split(",") if x.strip()]:
        figures["models"].append(run_model(name, etas, layouts, args.batches, args.batch_size, args.repeats, device))
    text = render(figures)
    json_path, md_path = write_outputs(args.out, "freezing", figures, text)
    print(text)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
