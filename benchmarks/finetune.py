"""Fine-tuning and evaluation throughput: the pipeline vs the authors' way, side by side.

Runs the reference (:mod:`benchmarks.reference`) and ours (``icepick.finetune.finetune``,
``icepick.evaluate.accuracy``) alternately, in one process, on identical models and data,
and reports images/s, the ratio ours/reference (min, median, max over the repeats) and
peak memory. ``--ablation`` adds the intermediate steps between the two (each change on
top of the previous one), to show what each change buys.

Example::

    python -m benchmarks.finetune                          # the three default cases
    python -m benchmarks.finetune --cases smoke-resnet20 --repeats 2 --batches 2   # seconds
    python -m benchmarks.finetune --ablation --cases smoke-resnet20,smoke-mobilenetv2
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchmarks.common import (
    add_common_args, clock_note, fmt_spread, machine, markdown_table, peak_memory_mib, random_split, setup, spread, timed, write_outputs,
)
from benchmarks.reference import make_teacher, reference_accuracy, reference_finetune, test_loader, train_loader
from icepick.data import Split, eval_batches, train_batches
from icepick.runtime import keep_cpu_allocations
from icepick.evaluate import accuracy
from icepick.finetune import FinetuneConfig, distillation_loss, finetune
from icepick.models import build_model

__all__ = ["CASES", "Case", "main", "run_case"]

log = logging.getLogger(__name__)
LR = 1e-3


@dataclass(frozen=True)
class Case:
    """One benchmark case: a model, a batch size, and the batches fine-tuned per repeat."""

    name: str
    model: str
    batch_size: int = 128
    batches: int = 8
    eval_images: int = 2000


CASES = {
    "smoke-resnet20": Case("smoke-resnet20", "resnet20", 128, 8, 2000),
    "smoke-mobilenetv2": Case("smoke-mobilenetv2", "mobilenetv2_w025", 128, 8, 2000),
    "resnet110": Case("resnet110", "resnet110", 128, 8, 1000),
    "mobilenetv2": Case("mobilenetv2", "mobilenetv2", 128, 4, 1000),
    # the mini configuration's shape: ResNet-56 at half width, fine-tuning batch 32, 360 test images
    "mini-resnet56w": Case("mini-resnet56w", "resnet56_w050", 32, 45, 360),
}
DEFAULT_CASES = "smoke-resnet20,smoke-mobilenetv2,resnet110"


# ------------------------------------------------------------------------------ the arms


def _our_teacher(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def _variant_finetune(
    model: nn.Module, teacher: nn.Module, split: Split, batches: int, batch_size: int,
    teacher_inference: bool, foreach: bool | None, channels_last: bool = False,
) -> None:
    """The reference step with some of our changes: device-resident batches (always), the
    teacher under inference mode, foreach SGD with set_to_none, channels_last."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    teacher.to(memory_format=fmt)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4, foreach=foreach)
    model.train()
    teacher.eval()
    for i, (x, y) in enumerate(train_batches(split, batch_size, seed=0, memory_format=fmt)):
        if i >= batches:
            break
        opt.zero_grad(set_to_none=True)
        z = model(x)
        if teacher_inference:
            with torch.inference_mode():
                z_t = teacher(x)
            z_t = z_t.clone()
        else:
            z_t = teacher(x)
        loss = distillation_loss(z, z_t, y)
        loss.backward()
        opt.step()


def _variant_accuracy(model: nn.Module, split: Split, batch_size: int, inference: bool,
                      channels_last: bool = False) -> float:
    """Device-resident batches under no_grad (or inference mode), NCHW (or channels_last)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=split.device)
    ctx = torch.inference_mode if inference else torch.no_grad
    with ctx():
        for x, y in eval_batches(split, batch_size, fmt):
            correct += (model(x).argmax(1) == y).sum()
    return 100.0 * correct.item() / len(split)


@dataclass
class Arm:
    """A way to fine-tune and to evaluate: fresh models in, work done."""

    name: str
    change: str  # what this arm adds to the previous one
    teacher: Callable[[nn.Module], nn.Module]
    finetune: Callable[[nn.Module, nn.Module, Split, Case, torch.device], None]
    evaluate: Callable[[nn.Module, Split, torch.device], float]
    keep_allocations: bool = False  # the C allocator's policy this arm runs under (CPU)


def _ref_ft(model, teacher, split, case, device):
    reference_finetune(model, teacher, train_loader(split, case.batch_size), LR, case.batches, device)


def _ref_eval(model, split, device):
    return reference_accuracy(model, test_loader(split, 128), device)


PRECISION = "fp32"  # ours' arithmetic (--precision); the reference is always fp32, as the authors' code


def _our_ft(model, teacher, split, case, device):
    cfg = FinetuneConfig(batch_size=case.batch_size, max_batches=case.batches, precision=PRECISION)
    finetune(model, teacher, split, LR, cfg, seed=0)


def _our_eval(model, split, device):
    return accuracy(model, split)


REFERENCE = Arm("reference", "the authors' loop (glibc's default allocator policy)", make_teacher, _ref_ft, _ref_eval)
OURS = Arm("ours", "C allocator keeps freed blocks (icepick.runtime.keep_cpu_allocations)", _our_teacher,
           _our_ft, _our_eval, keep_allocations=True)
INTERMEDIATE = [
    Arm("+data", "device-resident batches, no DataLoader/PIL (train and eval, eval batch 128)", make_teacher,
        lambda m, t, s, c, d: _variant_finetune(m, t, s, c.batches, c.batch_size, False, None),
        lambda m, s, d: _variant_accuracy(m, s, 128, False)),
    Arm("+teacher", "teacher under inference_mode, no backward through it (eval under inference_mode)",
        _our_teacher,
        lambda m, t, s, c, d: _variant_finetune(m, t, s, c.batches, c.batch_size, True, None),
        lambda m, s, d: _variant_accuracy(m, s, 128, True)),
    Arm("+foreach", "foreach SGD, zero_grad(set_to_none)", _our_teacher,
        lambda m, t, s, c, d: _variant_finetune(m, t, s, c.batches, c.batch_size, True, True),
        lambda m, s, d: _variant_accuracy(m, s, 128, True)),
    Arm("+channels_last", "channels_last model and batches", _our_teacher,
        lambda m, t, s, c, d: _variant_finetune(m, t, s, c.batches, c.batch_size, True, True, True),
        lambda m, s, d: _variant_accuracy(m, s, 128, True, True)),
    Arm("+fold BN", "teacher and evaluated model as inference copies with BN folded into the convs: "
        "icepick's finetune() and accuracy()", _our_teacher, _our_ft, _our_eval),
]


def _policy(arm: Arm, device: torch.device) -> None:
    if device.type == "cpu":
        keep_cpu_allocations(arm.keep_allocations)


# ------------------------------------------------------------------------------ a case


def run_case(
    case: Case, repeats: int, device: torch.device, ablation: bool = False, measure_memory: bool = True
) -> dict[str, Any]:
    """Alternate the arms ``repeats`` times on one case; return its figures."""
    arms = [REFERENCE] + (INTERMEDIATE if ablation else []) + [OURS]
    torch.manual_seed(0)
    init = build_model(case.model).to(device)
    train = random_split(case.batch_size * case.batches, seed=1, device=device)
    test = random_split(case.eval_images, seed=2, device=device)
    warm = Case(case.name, case.model, case.batch_size, 1, case.eval_images)
    for arm in arms:  # warm-up: allocator, oneDNN/cuDNN kernel choice, lazy imports
        _policy(arm, device)
        model = copy.deepcopy(init)
        arm.finetune(model, arm.teacher(init), train, warm, device)
        arm.evaluate(model, random_split(min(256, case.eval_images), 3, device), device)
    results: dict[str, dict[str, list[float]]] = {a.name: {"ft_ips": [], "eval_ips": []} for a in arms}
    for rep in range(repeats):
        order = arms if rep % 2 == 0 else arms[::-1]  # ABBA: drift in load hits every arm alike
        for arm in order:
            _policy(arm, device)
            model = copy.deepcopy(init)
            teacher = arm.teacher(init)
            _, sec = timed(lambda: arm.finetune(model, teacher, train, case, device), device)
            results[arm.name]["ft_ips"].append(case.batch_size * case.batches / sec)
            _, sec = timed(lambda: arm.evaluate(model, test, device), device)
            results[arm.name]["eval_ips"].append(case.eval_images / sec)
            del model, teacher
        log.info("%s repeat %d/%d: %s", case.name, rep + 1, repeats, ", ".join(
            f"{a.name} ft {results[a.name]['ft_ips'][-1]:.0f} img/s" for a in arms))
    memory: dict[str, dict[str, float]] = {}
    if measure_memory:  # untimed: the profiler slows the code down
        two = Case(case.name, case.model, case.batch_size, min(2, case.batches), case.eval_images)
        for arm in (REFERENCE, OURS):
            _policy(arm, device)
            model, teacher = copy.deepcopy(init), arm.teacher(init)
            memory[arm.name] = {
                "finetune": peak_memory_mib(lambda: arm.finetune(model, teacher, train, two, device), device),
                "eval": peak_memory_mib(lambda: arm.evaluate(model, test, device), device),
            }
    ref = results["reference"]
    figures: dict[str, Any] = {"case": case.__dict__, "repeats": repeats, "arms": {}}
    for arm in arms:
        r = results[arm.name]
        figures["arms"][arm.name] = {
            "change": arm.change,
            "finetune_images_per_s": r["ft_ips"], "eval_images_per_s": r["eval_ips"],
            "finetune_peak_mib": memory.get(arm.name, {}).get("finetune", float("nan")),
            "eval_peak_mib": memory.get(arm.name, {}).get("eval", float("nan")),
            "finetune_ratio": spread([o / b for o, b in zip(r["ft_ips"], ref["ft_ips"])]),
            "eval_ratio": spread([o / b for o, b in zip(r["eval_ips"], ref["eval_ips"])]),
        }
    figures["finetune_ratio"] = figures["arms"]["ours"]["finetune_ratio"]
    figures["eval_ratio"] = figures["arms"]["ours"]["eval_ratio"]
    return figures


def _median(values: list[float]) -> float:
    return spread(values)["median"]


def render(figures: dict[str, Any]) -> str:
    """The markdown tables of a run."""
    rows, ablation = [], []
    for c in figures["cases"]:
        case, ref, ours = c["case"], c["arms"]["reference"], c["arms"]["ours"]
        rows.append([
            c["case"]["name"], case["model"], case["batch_size"], f"{case['batches']} x {c['repeats']}",
            f"{_median(ref['finetune_images_per_s']):.0f}", f"{_median(ours['finetune_images_per_s']):.0f}",
            fmt_spread(c["finetune_ratio"]),
            f"{_median(ref['eval_images_per_s']):.0f}", f"{_median(ours['eval_images_per_s']):.0f}",
            fmt_spread(c["eval_ratio"]),
            f"{ref['finetune_peak_mib']:.0f} / {ours['finetune_peak_mib']:.0f}",
            f"{ref['eval_peak_mib']:.0f} / {ours['eval_peak_mib']:.0f}",
        ])
        if len(c["arms"]) > 2:
            previous = None
            for name, arm in c["arms"].items():
                step = "" if previous is None else (
                    f"{_median(arm['finetune_images_per_s']) / _median(previous['finetune_images_per_s']):.2f}")
                ablation.append([case["name"], name, arm["change"], f"{_median(arm['finetune_images_per_s']):.0f}",
                                 fmt_spread(arm["finetune_ratio"]), step, fmt_spread(arm["eval_ratio"])])
                previous = arm
    m = figures["machine"]
    text = (f"{clock_note(m)}\n\nCommand: `{figures['command']}`\n\n")
    text += markdown_table(
        ["case", "model", "batch", "batches x repeats", "ref FT img/s", "ours FT img/s", "FT ratio median (min-max)",
         "ref eval img/s", "ours eval img/s", "eval ratio median (min-max)",
         "FT peak MiB ref / ours", "eval peak MiB ref / ours"], rows)
    if ablation:
        text += "\nEach change on top of the previous one (ratios to the reference, median (min-max); "
        text += "step = median throughput over the previous row's):\n\n"
        text += markdown_table(["case", "arm", "change", "FT img/s", "FT ratio", "FT step", "eval ratio"], ablation)
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.finetune", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=DEFAULT_CASES, help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats per case (ratios: min/median/max)")
    p.add_argument("--batches", type=int, default=None, help="fine-tuning batches per repeat (default: per case)")
    p.add_argument("--eval-images", type=int, default=None, help="test images per evaluation (default: per case)")
    p.add_argument("--ablation", action="store_true", help="also run each change on its own, cumulatively")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="ours' fine-tuning arithmetic (the reference stays fp32); the pipeline's default is fp32")
    p.add_argument("--no-memory", action="store_true", help="skip the (untimed, profiled) peak-memory pass")
    add_common_args(p, "results/benchmarks/perf")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    global PRECISION
    PRECISION = args.precision
    device = setup(args)
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or args.repeats < 1:
        print(f"benchmarks.finetune: error: unknown case(s) {unknown}; choose from {', '.join(CASES)}"
              if unknown else "benchmarks.finetune: error: --repeats must be >= 1", file=sys.stderr)
        return 2
    figures: dict[str, Any] = {"benchmark": "finetune", "command": "python -m benchmarks.finetune " + " ".join(
        argv if argv is not None else sys.argv[1:]), "machine": machine(device), "cases": []}
    for name in names:
        case = CASES[name]
        case = Case(case.name, case.model, case.batch_size, args.batches or case.batches,
                    args.eval_images or case.eval_images)
        figures["cases"].append(run_case(case, args.repeats, device, args.ablation, not args.no_memory))
        print(f"{name}: fine-tuning ours/reference {fmt_spread(figures['cases'][-1]['finetune_ratio'])}, "
              f"evaluation {fmt_spread(figures['cases'][-1]['eval_ratio'])}", flush=True)
    text = render(figures)
    json_path, md_path = write_outputs(args.out, "finetune", figures, text)
    print(text)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
