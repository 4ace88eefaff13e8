"""A whole smoke pruning run, end to end: the pipeline vs a reference loop in the authors' style.

Prepares (once, cached under ``--work``) a generated CIFAR-format data set, a briefly
pretrained small model and its freeze trace; then runs, alternately,

* ours: ``icepick.algorithm.run_experiment`` (records, state files and all), and
* the reference: :func:`benchmarks.reference.reference_prune_loop` (DataLoader with PIL
  transforms, teacher with gradients, evaluation after every prune and every fine-tuning),

either in this process (the default: the work of the runs alone) or, with ``--processes``,
each as a process of its own as a user or the workflow starts it: ``python -m icepick run``
against ``python -m benchmarks.reference_run`` (imports, reading the data and saving the
model included; the CPU clock then counts the CPU time of the child processes),

for ICE-Pick (eta > 0, Eq. 1) and the baseline (a fine-tuning after every step, lr 0.001),
on the same pretrained model, data, frozen layers and pruning steps, and reports the wall
clock of each. Both arms fine-tune full epochs (ours with ``early_halt=0``, as the
authors' code), so they do the same work when they take the same decisions; the number
of fine-tunings of each arm is reported beside the times.

Example::

    python -m benchmarks.pruning_run                       # resnet20, 2000 train / 1000 test images
    python -m benchmarks.pruning_run --steps 2 --repeats 1 --epochs 1   # a quick smoke
    python -m benchmarks.pruning_run --processes --data data/digits --pretrained results/resnet56_w050/pretrained.pt \
        --trace results/resnet56_w050/trace/r0.4/seed0.json --steps 27 --batch-size 32 --theta 1.5 \
        --threads 1 --clock cpu --methods icepick   # the mini's model and data (make mini), every block
    python -m benchmarks.pruning_run --processes --test 250 --epochs 5 --steps 3 --ratio 0.3 \
        --theta 4.5 --batch-size 64 --max-batches 2 --threads 1 --clock cpu   # the smoke run's shape
"""

from __future__ import annotations

import argparse
import csv
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import add_common_args, clock, clock_note, fmt_spread, machine, markdown_table, setup, spread, timed, write_outputs
from benchmarks.reference import reference_prune_loop, test_loader, train_loader
from icepick.algorithm import RunConfig, run_experiment
from icepick.data import dataset_info, is_synthetic, load_experiment_data, load_split, synth_cifar10
from icepick.finetune import FinetuneConfig
from icepick.freezing import choose_frozen, trace_scores
from icepick.model_files import load_model
from icepick.records import read_json, write_json

__all__ = ["prepare", "main"]

log = logging.getLogger(__name__)


def prepare(work: Path, model: str, n_train: int, n_test: int, epochs: int, device: torch.device,
            trace_ratio: float = 0.4, data: Path | None = None, pretrained: Path | None = None,
            trace: Path | None = None) -> tuple[Path, Path, Path]:
    """Data folder, pretrained model and freeze trace (paths); what is not given is made under ``work``.

    ``data``: a data set on disk (an import, the real CIFAR-10); default, a generated set of
    ``n_train``/``n_test`` images. ``pretrained`` and ``trace``: files the pipeline made (a
    ``pretrained.pt`` and a ``trace/r{ratio}/seed{seed}.json``); default, ``model`` pretrained
    ``epochs`` epochs with the published recipe and its trace at ``trace_ratio``. What is made
    is cached under ``work`` and reused.
    """
    from icepick.algorithm import load_teacher
    from icepick.analysis import freeze_trace
    from icepick.train import PretrainConfig, pretrain

    if (pretrained is None) != (trace is None):
        raise ValueError("--pretrained and --trace go together: a model file and its freeze trace")
    stem = f"{model}-e{epochs}"  # what is made from a given data set is named after it, too
    if data is None:
        data = work / f"data-{n_train}-{n_test}"
        if not is_synthetic(data):
            synth_cifar10(data, n_train=n_train, n_test=n_test, seed=0)
    else:
        stem += f"-{dataset_info(data).digest[:12]}"
    if pretrained is None:
        pretrained = work / f"{stem}.pt"
        if not pretrained.exists():
            cfg = PretrainConfig(model=model, epochs=epochs, schedule="cosine", device=str(device),
                                 threads=torch.get_num_threads())
            pretrain(cfg, data, pretrained, work / f"{stem}.csv", work / f"{stem}.json")
    if trace is None:
        trace = work / f"{stem}-trace.json"
        if not trace.exists():
            train = load_split(data, "train", device)
            net, _ = load_model(pretrained, device)
            record = freeze_trace(net, load_teacher(pretrained, device), train, trace_ratio, 1e-3,
                                  FinetuneConfig(early_halt=0), seed=0)
            write_json(trace, {"model": model, **record})
    return data, pretrained, trace


PIECES = ("t_prune", "t_test", "t_finetune")  # as the step records split a step's time


def _pieces(steps_csv: Path) -> dict[str, float]:
    """Seconds per piece of a run, summed over its step records (``steps.csv``)."""
    with open(steps_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    return {piece: sum(float(r[piece] or 0.0) for r in rows) for piece in PIECES}


def _ours(cfg: RunConfig, pretrained: Path, data_dir: Path, trace: dict[str, Any], device: torch.device) -> dict:
    data = load_experiment_data(data_dir, device)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        result = run_experiment(cfg, pretrained, data, out / "steps.csv", out / "summary.json", out / "pruned.pt",
                                trace if cfg.eta > 0 else None, device, show_progress=False)
        return {**result, **_pieces(out / "steps.csv")}


def _reference(cfg: RunConfig, pretrained: Path, data_dir: Path, frozen: list[str], device: torch.device) -> dict:
    train, test = load_split(data_dir, "train", device), load_split(data_dir, "test", device)
    model, _ = load_model(pretrained, device)
    tr, te = train_loader(train, cfg.finetune.batch_size, cfg.seed), test_loader(test)
    return reference_prune_loop(model, tr, te, cfg.ratio, cfg.theta, cfg.method, frozen, cfg.max_steps,
                                cfg.finetune.max_batches, cfg.base, device)


def _process_args(cfg: RunConfig, pretrained: Path, data_dir: Path, trace_path: Path, out: Path,
                  device: torch.device) -> list[str]:
    """The options both processes share (same names in ``icepick run`` and ``benchmarks.reference_run``)."""
    args = ["--pretrained", str(pretrained), "--data", str(data_dir), "--method", cfg.method,
            "--ratio", str(cfg.ratio), "--theta", str(cfg.theta), "--eta", str(cfg.eta), "--base", str(cfg.base),
            "--max-steps", str(cfg.max_steps), "--max-batches", str(cfg.finetune.max_batches),
            "--batch-size", str(cfg.finetune.batch_size), "--seed", str(cfg.seed), "--device", str(device),
            "--threads", str(torch.get_num_threads()), "--model-out", str(out / "pruned.pt"),
            "--summary-out", str(out / "summary.json")]
    return args + (["--trace", str(trace_path)] if cfg.eta > 0 else [])


def _run_process(argv: list[str], log_path: Path) -> tuple[float, float]:
    """Run a child process to its end: (seconds on the benchmark's clock, wall-clock seconds)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log_path, "w") as log_file:
        code = subprocess.run(argv, stdout=log_file, stderr=subprocess.STDOUT, check=False).returncode
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed ({code}); its output:\n{log_path.read_text()[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return (cpu if clock() == "cpu" else wall), wall


def _arm_process(arm: str, cfg: RunConfig, pretrained: Path, data_dir: Path, trace_path: Path,
                 device: torch.device) -> tuple[dict, float, float]:
    """One run of ``arm`` ('ours' or 'reference') as a process: (its summary, seconds, wall-clock seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        argv = [sys.executable, "-m", *(["icepick", "run"] if arm == "ours" else ["benchmarks.reference_run"]),
                *_process_args(cfg, pretrained, data_dir, trace_path, out, device)]
        if arm == "ours":
            argv += ["--lr-policy", cfg.lr_policy, "--early-halt", str(cfg.finetune.early_halt),
                     "--steps-out", str(out / "steps.csv"), "--no-progress"]
        seconds, wall = _run_process(argv, out / "log.txt")
        summary = read_json(out / "summary.json")
        return ({**summary, **_pieces(out / "steps.csv")} if arm == "ours" else summary), seconds, wall


def _data_words(source: str) -> str:
    return {"synthetic": "generated data", "digits": "the digits (real images)",
            "cifar10": "CIFAR-10"}.get(source, f"the imported {source} set")


def render(figures: dict[str, Any]) -> str:
    rows = []
    for r in figures["runs"]:
        rows.append([
            r["method"], f"{r['eta']:g}", f"{r['theta']:g}", r["steps"],
            f"{spread(r['reference_seconds'])['median']:.1f}", f"{spread(r['ours_seconds'])['median']:.1f}",
            fmt_spread(r["speedup"]),
            "/".join(str(n) for n in r["reference_finetunes"]), "/".join(str(n) for n in r["ours_finetunes"]),
            f"{r['reference_final_acc']:.1f} / {r['ours_final_acc']:.1f}",
        ])
    m, s = figures["machine"], figures["setup"]
    text = (f"{clock_note(m)}\n\nCommand: `{figures['command']}`\n\n"
            f"{s['model']} pretrained {s['epochs']} epochs on {_data_words(s.get('data_source', 'synthetic'))} "
            f"({s['n_train']} train / {s['n_test']} test images, accuracy {s['pretrained_acc']:.1f}%); "
            f"r = {s['ratio']}; the first {s['steps']} blocks; "
            + (f"fine-tunings of {s['max_batches']} batches" if s.get("max_batches") else "full-epoch fine-tunings")
            + f" of batch {s.get('batch_size', 128)} in both arms; "
            + ("each run a process of its own (`python -m icepick run` vs `python -m benchmarks.reference_run`), "
               "timed end to end" if s.get("mode") == "processes" else "both arms in one process")
            + ". Speed-up = reference seconds / ours, paired per repeat, median (min-max).\n\n")
    text += markdown_table(["method", "eta", "theta", "steps", "reference s", "ours s", "speed-up",
                            "fine-tunings ref", "fine-tunings ours", "final acc ref / ours"], rows)
    text += ("\n\nWhere the time goes: each piece's seconds summed over a run's steps (wall clock inside the "
             "run, as the step records split a step: the prune, the evaluation after it, and the fine-tuning "
             "with the evaluation after it), median over the repeats; the rest is the run's wall-clock time less "
             "the pieces (start-up, reading the data, the teacher, the first evaluation, saving).\n\n")
    text += markdown_table(["method", "piece", "reference s", "ours s", "reference / ours"], breakdown_rows(figures))
    return text


_PIECE_NAMES = {"t_prune": "prune", "t_test": "evaluate after the prune", "t_finetune": "fine-tune and evaluate",
                "rest": "rest of the run"}


def breakdown_rows(figures: dict[str, Any]) -> list[list[Any]]:
    """Per method and piece: median seconds of each arm and the median paired ratio."""
    rows = []
    for r in figures["runs"]:
        if not r.get("reference_pieces"):
            continue
        arms = {}
        for arm in ("reference", "ours"):
            arms[arm] = [{**pieces, "rest": total - sum(pieces.values())}
                         for pieces, total in zip(r[f"{arm}_pieces"], r[f"{arm}_wall"])]
        for piece, name in _PIECE_NAMES.items():
            ref = [p[piece] for p in arms["reference"]]
            ours = [p[piece] for p in arms["ours"]]
            positive = min(ref + ours) > 0  # a ratio of the pieces only where every one was measured
            rows.append([r["method"], name, f"{spread(ref)['median']:.1f}", f"{spread(ours)['median']:.1f}",
                         fmt_spread(spread([a / b for a, b in zip(ref, ours)])) if positive else "-"])
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pruning_run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--train", type=int, default=2000, help="generated training images")
    p.add_argument("--test", type=int, default=1000, help="generated test images")
    p.add_argument("--epochs", type=int, default=6, help="pretraining epochs (cached under --work)")
    p.add_argument("--steps", type=int, default=4, help="pruning steps (blocks) per run")
    p.add_argument("--ratio", type=float, default=0.4)
    p.add_argument("--eta", type=float, default=0.3, help="ICE-Pick's frozen fraction")
    p.add_argument("--theta", type=float, default=1.0, help="ICE-Pick's threshold (points)")
    p.add_argument("--max-batches", type=int, default=0,
                   help="batches per fine-tuning in both arms (0: full epochs; the smoke configuration's are short)")
    p.add_argument("--batch-size", type=int, default=128, help="fine-tuning batch in both arms")
    p.add_argument("--processes", action="store_true",
                   help="run each arm as a process of its own (python -m icepick run vs python -m "
                        "benchmarks.reference_run): end to end, start-up, reading the data and saving included")
    p.add_argument("--methods", nargs="+", choices=("icepick", "baseline"), default=["icepick", "baseline"],
                   help="which arms to run (ICE-Pick with eta and theta, the baseline at lr 0.001)")
    p.add_argument("--data", type=Path, default=None,
                   help="a data set on disk (icepick data import, or CIFAR-10) in place of the generated one; "
                        "--train and --test then go unused")
    p.add_argument("--pretrained", type=Path, default=None,
                   help="a pretrained model file the pipeline made (with --trace), in place of pretraining "
                        "--model for --epochs; e.g. the mini's results/resnet56_w050/pretrained.pt")
    p.add_argument("--trace", type=Path, default=None,
                   help="the freeze trace of --pretrained at --ratio, e.g. results/resnet56_w050/trace/r0.4/seed0.json")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("results/benchmarks/perf/work"),
                   help="cache of the data set, pretrained model and trace")
    add_common_args(p, "results/benchmarks/perf")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.repeats < 1 or args.steps < 1 or args.max_batches < 0:
        print("benchmarks.pruning_run: error: --repeats and --steps must be >= 1, --max-batches >= 0", file=sys.stderr)
        return 2
    device = setup(args)
    try:
        data_dir, pretrained, trace_path = prepare(args.work, args.model, args.train, args.test, args.epochs, device,
                                                   data=args.data, pretrained=args.pretrained, trace=args.trace)
        info = dataset_info(data_dir)
        net_cpu, meta = load_model(pretrained, "cpu")
    except (ValueError, OSError) as err:
        print(f"benchmarks.pruning_run: error: {err}", file=sys.stderr)
        return 2
    model_name, epochs = meta.get("model", args.model), meta.get("epochs", args.epochs)
    trace = read_json(trace_path)
    frozen = choose_frozen(net_cpu, trace_scores(trace), args.eta)  # as the pipeline's runs
    ft = FinetuneConfig(early_halt=0, max_batches=args.max_batches, batch_size=args.batch_size)
    configs = [
        RunConfig(method="icepick", lr_policy="icepick", theta=args.theta, eta=args.eta, ratio=args.ratio,
                  max_steps=args.steps, finetune=ft),
        RunConfig(method="baseline", lr_policy="fixed", theta=0.0, eta=0.0, ratio=args.ratio,
                  max_steps=args.steps, finetune=ft),
    ]
    configs = [cfg for cfg in configs if cfg.method in args.methods]
    from icepick.evaluate import accuracy

    net, _ = load_model(pretrained, device)
    pretrained_acc = accuracy(net, load_split(data_dir, "test", device))
    figures: dict[str, Any] = {
        "benchmark": "pruning_run",
        "command": "python -m benchmarks.pruning_run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(device),
        "setup": {"model": model_name, "epochs": epochs, "n_train": info.n_train, "n_test": info.n_test,
                  "data": str(data_dir), "data_source": info.source, "data_digest": info.digest,
                  "pretrained": str(pretrained), "trace": str(trace_path),
                  "ratio": args.ratio, "steps": args.steps, "pretrained_acc": pretrained_acc, "frozen": frozen,
                  "max_batches": args.max_batches, "batch_size": args.batch_size,
                  "mode": "processes" if args.processes else "in-process"},
        "runs": [],
    }
    for cfg in configs:
        run = {"method": cfg.method, "eta": cfg.eta, "theta": cfg.theta, "steps": args.steps,
               "reference_seconds": [], "ours_seconds": [], "reference_finetunes": [], "ours_finetunes": [],
               "reference_pieces": [], "ours_pieces": [],
               "reference_wall": [], "ours_wall": []}
        layers = frozen if cfg.eta > 0 else []
        for rep in range(args.repeats):
            arms = ["reference", "ours"] if rep % 2 == 0 else ["ours", "reference"]
            for arm in arms:
                torch.manual_seed(cfg.seed)
                start = time.perf_counter()
                if args.processes:
                    result, sec, wall = _arm_process(arm, cfg, pretrained, data_dir, trace_path, device)
                elif arm == "ours":
                    result, sec = timed(lambda: _ours(cfg, pretrained, data_dir, trace, device), device)
                else:
                    result, sec = timed(lambda: _reference(cfg, pretrained, data_dir, layers, device), device)
                if not args.processes:
                    wall = time.perf_counter() - start
                run[f"{arm}_seconds"].append(sec)
                run[f"{arm}_wall"].append(wall)
                run[f"{arm}_finetunes"].append(result["n_finetunes"])
                run[f"{arm}_pieces"].append({piece: result[piece] for piece in PIECES})
                run[f"{arm}_final_acc"] = result["final_acc"]
                log.info("%s repeat %d: %s %.1fs", cfg.method, rep + 1, arm, sec)
        run["speedup"] = spread([r / o for r, o in zip(run["reference_seconds"], run["ours_seconds"])])
        figures["runs"].append(run)
        print(f"{cfg.method}: reference/ours {fmt_spread(run['speedup'])}", flush=True)
    text = render(figures)
    name = "pruning_run_processes" if args.processes else "pruning_run"
    json_path, md_path = write_outputs(args.out, name, figures, text)
    print(text)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
