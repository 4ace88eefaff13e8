"""The GPU check: every GPU figure the project needs, in one command of at most 6 minutes.

``bash benchmarks/gpu_check.sh`` (which runs ``python -m benchmarks.gpu`` from the source tree,
with the wheels of ``benchmarks/wheels/`` on ``PYTHONPATH``) on a machine with one GPU and
nothing to download. Each part runs in a process of its own under a time limit, so a part that
fails or hangs is recorded with its error and the others still run; the exit code is non-zero
if any part failed. The parts:

1. ``tests``: the test suite's CUDA tests (``pytest -k cuda`` over the test files that mention
   CUDA; on a GPU a test skipped for want of CUDA is a failure);
2. ``throughput``: fine-tuning and evaluation images/s, ours against the reference loop
   (``benchmarks.finetune.run_case``), ResNet-110, ResNet-152 and MobileNetV2 at fp32, tf32 and
   bf16, batch 128, with the tera-MAC/s they make (images/s x the MACs per image of
   ``icepick.cost``);
3. ``pretrain``: a few hundred SGD steps of pretraining ResNet-110 (``icepick.train.pretrain``,
   with its warm-up) on generated data: the mean loss must fall;
4. ``pruning_run``: one paper-scale ResNet-110 ICE-Pick run (``python -m icepick run``, i.e.
   ``icepick.algorithm.run_experiment``) on 50,000/10,000 generated images for 90 s: seconds
   per step, split into prune, test and fine-tune (steps.csv's t_prune, t_test, t_finetune);
5. ``jobs_per_gpu``: k = 2 and 4 such runs at once on the one GPU (``--jobs-per-gpu k``), 45 s
   each, at a quarter of the paper's scale (12,500/2,500 images: every part of a step shrinks
   alike, so k runs complete several steps in the window): aggregate steps/s, in paper steps,
   against part 4's, and the ``jobs_per_gpu`` that gives the most;
6. ``cost``: ``python -m icepick cost --configfile config/config.yaml`` at the fp32 training
   and evaluation tera-MAC/s part 2 measured.

Beside part 1 a background process generates the data sets (``icepick.data.synth_cifar10``,
timed: part ``data``). Everything lands in ``<out>/gpu.json`` and ``<out>/gpu.md`` (the
logs of each part in ``<out>/logs/``). ``--cpu-tiny`` runs the same code on the CPU in under
two minutes with small models and data (the test suite runs it).

Example::

    bash benchmarks/gpu_check.sh                          # on the GPU machine
    bash benchmarks/gpu_check.sh --cpu-tiny --out /tmp/gpucheck
"""

from __future__ import annotations

# Only the standard library at the top: ``--wheel-path`` runs before the wheels are on the
# path, and a missing package must end in one line, not a traceback.
import argparse
import contextlib
import dataclasses
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

__all__ = ["PROFILES", "Profile", "PARTS", "main", "wheel_paths", "missing_imports"]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "out" / "gpu"
DEFAULT_WHEELS = ROOT / "benchmarks" / "wheels"
WHEEL_COMMAND = ("pip download --only-binary=:all: --python-version {python} --platform manylinux2014_x86_64 "
                 "--no-deps -d {wheels} torch-pruning tqdm pyyaml")
#: import name -> the wheel that brings it (pure Python, or unpacked by the wrapper)
WHEEL_PACKAGES = {"torch_pruning": "torch-pruning", "tqdm": "tqdm", "yaml": "pyyaml"}
#: import name -> package the machine itself must have
MACHINE_PACKAGES = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "PIL": "pillow",
                    "pytest": "pytest"}
#: the parts, in the order of the report (``data`` runs first, in the background)
PARTS = ("data", "tests", "throughput", "pretrain", "pruning_run", "jobs_per_gpu", "cost")
TITLES = {"data": "generated data", "tests": "1 CUDA tests", "throughput": "2 fine-tuning/evaluation throughput",
          "pretrain": "3 pretraining ResNet-110", "pruning_run": "4 one pruning run",
          "jobs_per_gpu": "5 runs sharing the GPU", "cost": "6 projected cost"}


@dataclass(frozen=True)
class Profile:
    """What the check runs: the paper's models on a GPU, or small stand-ins on the CPU."""

    mode: str
    device: str
    budget_s: float  # the whole check; each part's limit is cut so that the total stays within it
    limits: dict[str, float]  # part -> its own time limit, seconds
    n_train: int
    n_test: int
    difficulty: str
    models: tuple[tuple[str, str], ...]  # (the paper's model, the model measured) for part 2
    precisions: tuple[str, ...]
    batch_size: int
    ft_batches: int
    eval_images: int
    repeats: int
    pretrain_model: str
    pretrain_warmup: str
    pretrain_batch: int
    pretrain_batches: int  # per epoch (a subset of the training split)
    pretrain_epochs: int
    run_model: str  # parts 4 and 5 (pretrained by part 3)
    ratio: float
    theta: float
    run_batch: int
    run_max_batches: int
    run_window_s: float
    jobs: tuple[int, ...]
    jobs_window_s: float
    # Part 5's runs are at this scale of the paper's: the training and test splits (so the fine-tuning
    # epoch, the early-halt checks and the tests) all shrink alike, the mix of work in a step stays
    # the paper's, and k runs at once complete several steps within the window. A step's paper
    # equivalent is then jobs_scale of one (the prune itself, milliseconds, aside).
    jobs_scale: float = 1.0
    threads: int | None = None  # torch threads of a single process (None: torch's default)
    measure_memory: bool = True  # part 2's peak memory (cheap on a GPU; the CPU profiler takes seconds)


GPU = Profile(
    mode="gpu", device="cuda", budget_s=345.0,
    limits={"data": 90, "tests": 60, "throughput": 95, "pretrain": 45, "pruning_run": 110, "jobs_per_gpu": 115,
            "cost": 40},
    n_train=50_000, n_test=10_000, difficulty="standard",
    models=(("resnet110", "resnet110"), ("resnet152", "resnet152"), ("mobilenetv2", "mobilenetv2")),
    precisions=("fp32", "tf32", "bf16"), batch_size=128, ft_batches=10, eval_images=2000, repeats=3,
    pretrain_model="resnet110", pretrain_warmup="auto", pretrain_batch=128, pretrain_batches=50, pretrain_epochs=8,
    run_model="resnet110", ratio=0.6, theta=-100.0, run_batch=128, run_max_batches=0, run_window_s=90.0,
    jobs=(2, 4), jobs_window_s=45.0, jobs_scale=0.25,
)
TINY = Profile(
    mode="cpu-tiny", device="cpu", budget_s=115.0,
    limits={"data": 30, "tests": 40, "throughput": 35, "pretrain": 25, "pruning_run": 28, "jobs_per_gpu": 28,
            "cost": 30},
    n_train=256, n_test=128, difficulty="easy",
    models=(("resnet110", "resnet14"), ("resnet152", "resnet20"), ("mobilenetv2", "mobilenetv2_w025")),
    precisions=("fp32", "tf32"), batch_size=32, ft_batches=2, eval_images=128, repeats=1,  # bf16 on a CPU: slow
    pretrain_model="resnet14", pretrain_warmup="on", pretrain_batch=32, pretrain_batches=8, pretrain_epochs=3,
    run_model="resnet14", ratio=0.4, theta=-100.0, run_batch=64, run_max_batches=0, run_window_s=10.0,
    jobs=(2,), jobs_window_s=10.0, jobs_scale=0.5, threads=1, measure_memory=False,
)
PROFILES = {"gpu": GPU, "cpu-tiny": TINY}


# ------------------------------------------------------------------------------ the wheels


def _wheel_fits(name: str) -> bool:
    """Whether a wheel's file name tags fit this interpreter (pure Python, or this CPython on Linux)."""
    parts = name[:-4].split("-")
    if len(parts) < 5:
        return False
    py, abi, plat = parts[-3], parts[-2], parts[-1]
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    py_ok = any(t in (here, "py3", f"py{sys.version_info.major}{sys.version_info.minor}") for t in py.split("."))
    abi_ok = any(t in ("none", "abi3", here) for t in abi.split("."))
    machine = platform.machine()
    plat_ok = any(t == "any" or (sys.platform.startswith("linux") and t.startswith(("manylinux", "linux"))
                                 and t.endswith(machine)) for t in plat.split("."))
    return py_ok and abi_ok and plat_ok


def _wheel_modules(path: Path) -> set[str]:
    """The top-level import names a wheel holds."""
    with zipfile.ZipFile(path) as zf:
        names = {n.split("/")[0] for n in zf.namelist()}
    return {n[:-3] if n.endswith(".py") else n for n in names
            if not n.endswith((".dist-info", ".data")) and (n.endswith(".py") or "." not in n)}


def wheel_paths(wheels: Path, unpack_to: Path) -> tuple[list[str], list[str]]:
    """PYTHONPATH entries for the wheels in ``wheels`` that bring a package not importable yet.

    A pure-Python wheel is put on the path as it is (Python imports from a zip); one with a C
    extension (pyyaml) is unpacked into ``unpack_to`` first. A wheel whose packages are already
    importable (an installed environment) or whose tags do not fit this interpreter is left
    out. Returns (entries, notes).
    """
    entries, notes = [], []
    if not wheels.is_dir():
        return entries, [f"no wheels folder {wheels}"]
    for whl in sorted(wheels.glob("*.whl")):
        try:
            modules = _wheel_modules(whl)
        except (OSError, zipfile.BadZipFile) as err:
            notes.append(f"{whl.name}: unreadable ({err})")
            continue
        if modules and all(find_spec(m) is not None for m in modules):
            notes.append(f"{whl.name}: {', '.join(sorted(modules))} already importable, wheel not used")
            continue
        if not _wheel_fits(whl.name):
            notes.append(f"{whl.name}: built for another Python or platform, not used")
            continue
        pure = whl.name.endswith("-none-any.whl")
        if pure:
            entries.append(str(whl.resolve()))
        else:
            dest = unpack_to / whl.stem
            with zipfile.ZipFile(whl) as zf:
                zf.extractall(dest)
            entries.append(str(dest.resolve()))
        notes.append(f"{whl.name}: on PYTHONPATH{'' if pure else ' (unpacked)'}")
    return entries, notes


def missing_imports(wheels: Path) -> list[str]:
    """One line per package the check needs and cannot import (empty: all there)."""
    lines = []
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    for module, wheel in WHEEL_PACKAGES.items():
        if find_spec(module) is None:
            fetch = WHEEL_COMMAND.format(python=python, wheels=wheels)
            lines.append(f"cannot import {module}: bring the {wheel} wheel for Python {python} into {wheels} "
                         f"(`{fetch}` on a machine that reaches PyPI) or install {wheel}")
    for module, package in MACHINE_PACKAGES.items():
        if find_spec(module) is None:
            lines.append(f"cannot import {module}: this check needs {package} installed on the machine")
    return lines


# ------------------------------------------------------------------------------ the parent


def _child_env(work: Path) -> dict[str, str]:
    """The environment of every process the check starts: the source tree first on the path,
    GPU slots of its own (lock files in the work folder), no slot settings from outside."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in paths:
        paths.insert(0, str(ROOT))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["ICEPICK_SLOT_DIR"] = str(work / "slots")
    for name in ("ICEPICK_GPU_SLOTS", "ICEPICK_JOBS_PER_GPU", "ICEPICK_GPU_SLOTS_ON_CPU"):
        env.pop(name, None)  # (CUDA_VISIBLE_DEVICES stays: the machine's choice of GPU)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Part:
    """A part running as a child process (its own process group), with a deadline."""

    running: list["_Part"] = []  # the parts started and not yet waited for

    def __init__(self, name: str, context: Path, out: Path, env: dict[str, str], limit: float) -> None:
        self.name, self.limit = name, limit
        self.log_path = out / "logs" / f"{name}.log"
        self.result_path = out / "parts" / f"{name}.json"
        self.result_path.unlink(missing_ok=True)
        self.start, self.started_at = time.monotonic(), time.time()
        deadline = self.started_at + limit
        argv = [sys.executable, "-m", "benchmarks.gpu", "--part", name, "--context", str(context),
                "--deadline", f"{deadline:.3f}"]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        _Part.running.append(self)

    def wait(self) -> dict[str, Any]:
        """Wait until it ends or its limit passes (then end its whole process group); its result."""
        timed_out = False
        try:
            self.proc.wait(timeout=max(0.0, self.limit - (time.monotonic() - self.start)))
        except subprocess.TimeoutExpired:
            timed_out = True
            _end_group(self.proc)
        seconds = time.monotonic() - self.start  # (waited for, when the part ended before its wait began)
        self._log.close()
        _Part.running.remove(self)
        try:
            result = json.loads(self.result_path.read_text())
        except (OSError, ValueError):
            result = {}
        if timed_out:
            result["status"] = "failed"
            result["error"] = (f"stopped at its time limit of {self.limit:.0f} s"
                               + (f" (after: {result['error']})" if result.get("error") else ""))
        elif self.proc.returncode != 0 or result.get("status") != "ok":
            result["status"] = "failed"
            if not result.get("error"):
                result["error"] = f"exit code {self.proc.returncode}: " + _tail(self.log_path, 3)
        if not timed_out and isinstance(result.get("ended_at"), (int, float)):
            seconds = min(seconds, result["ended_at"] - self.started_at)
        result["seconds"] = seconds
        result["log"] = str(self.log_path)
        return result


def _end_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group ``proc`` leads (this check's own child), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int) -> str:
    try:
        text = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def _limit(profile: Profile, name: str, deadline: float, later: list[str]) -> float:
    """A part's time limit: its own, cut so that the parts after it keep a third of theirs."""
    reserve = sum(profile.limits[p] for p in later) / 3.0
    return max(0.0, min(profile.limits[name], deadline - time.monotonic() - reserve))


def check(args: argparse.Namespace) -> int:
    """Run every part; write ``gpu.json`` and ``gpu.md``; 0 when every part passed."""
    profile = PROFILES["cpu-tiny" if args.cpu_tiny else "gpu"]
    if args.budget:  # every part's limit scales with the whole (the measuring windows stay)
        scale = float(args.budget) / profile.budget_s
        profile = dataclasses.replace(profile, budget_s=float(args.budget),
                                      limits={k: v * scale for k, v in profile.limits.items()})
    out = args.out.resolve()
    for sub in ("logs", "parts"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    temporary = args.work is None
    work = Path(tempfile.mkdtemp(prefix="icepick-gpucheck-")) if temporary else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = start + profile.budget_s
    context = out / "parts" / "context.json"
    context.write_text(json.dumps({"profile": dataclasses.asdict(profile), "work": str(work), "out": str(out)},
                                  indent=2))
    env = _child_env(work)
    print(f"GPU check ({profile.mode}): at most {profile.budget_s:.0f} s; work folder {work}; output {out}",
          flush=True)
    results: dict[str, dict[str, Any]] = {}
    order = [p for p in PARTS if p != "data"]
    try:
        data = _Part("data", context, out, env, profile.limits["data"])  # in the background, beside the tests
        for i, name in enumerate(order):
            if name == "throughput":  # the data set is needed from part 3 on; part 2 must not share the CPU
                results["data"] = data.wait()
                _report("data", results["data"], start)
            limit = _limit(profile, name, deadline, order[i + 1:])
            if limit < 1.0:
                results[name] = {"status": "failed", "error": f"not run: the check's {profile.budget_s:.0f} s "
                                 "were spent", "seconds": 0.0}
            else:
                results[name] = _Part(name, context, out, env, limit).wait()
            _report(name, results[name], start)
        if "data" not in results:
            results["data"] = data.wait()
    except KeyboardInterrupt:  # the parts run in sessions of their own: Ctrl-C does not reach them
        for part in list(_Part.running):
            _end_group(part.proc, grace=1.0)
        raise
    finally:
        if temporary and not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    total = time.monotonic() - start
    figures = {
        "check": "gpu", "mode": profile.mode, "command": "bash benchmarks/gpu_check.sh " + " ".join(args.argv),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "python": platform.python_version(),
        "budget_s": profile.budget_s, "total_s": total, "ok": all(r["status"] == "ok" for r in results.values()),
        "profile": dataclasses.asdict(profile), "work": str(work) if not temporary or args.keep_work else None,
        "parts": {name: results[name] for name in PARTS},
    }
    (out / "gpu.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    text = render(figures)
    (out / "gpu.md").write_text(text)
    print("\n" + text)
    failed = [name for name in PARTS if results[name]["status"] != "ok"]
    print(f"wrote {out / 'gpu.json'} and {out / 'gpu.md'}; {total:.0f} s in all; "
          + (f"FAILED: {', '.join(failed)}" if failed else "every part passed"), flush=True)
    return 1 if failed else 0


def _report(name: str, result: dict[str, Any], start: float) -> None:
    line = f"[{result['seconds']:6.1f} s, {time.monotonic() - start:5.0f} s in all] {TITLES[name]}: {result['status']}"
    if result.get("summary"):
        line += f": {result['summary']}"
    if result["status"] != "ok":
        line += f": {result.get('error', '')} (log: {result.get('log', '-')})"
    print(line, flush=True)


# ------------------------------------------------------------------------------ the report


def _f(x: Any, digits: int = 0) -> str:
    return "-" if x is None or x != x else f"{x:,.{digits}f}"  # None and NaN: not measured


def render(figures: dict[str, Any]) -> str:
    """The markdown: one row per part, then the tables of parts 2, 4 and 5 and the cost command."""
    parts = figures["parts"]
    text = (f"# GPU check ({figures['mode']})\n\n{figures['time']}, host {figures['host']}, Python "
            f"{figures['python']}; {figures['total_s']:.0f} s in all (limit {figures['budget_s']:.0f} s). "
            f"Command: `{figures['command']}`\n\n")
    machine = parts["throughput"].get("machine")
    if machine:
        text += (f"Device {machine.get('gpu', machine['device'])}, torch {machine['torch']}, "
                 f"{machine['cpus']} CPUs.\n\n")
    rows = [[TITLES[n], parts[n]["status"], f"{parts[n]['seconds']:.1f}",
             parts[n].get("summary", "") if parts[n]["status"] == "ok" else parts[n].get("error", "")]
            for n in PARTS]
    text += _table(["part", "status", "seconds", "result"], rows)
    cases = parts["throughput"].get("cases") or []
    if cases:
        text += ("\n## Fine-tuning and evaluation throughput\n\nOurs against the reference loop "
                 "(`benchmarks/reference.py`; always fp32 arithmetic, TF32 where the precision's flags allow it), "
                 "images/s, median of the repeats; TMAC/s = ours' images/s x the MACs per image of `icepick.cost` "
                 "(fine-tuning: student training + teacher forward; evaluation: forward).\n\n")
        text += _table(
            ["model", "precision", "ref FT img/s", "ours FT img/s", "FT ratio", "ref eval img/s", "ours eval img/s",
             "eval ratio", "FT peak MiB ref / ours", "train TMAC/s", "eval TMAC/s"],
            [[c["model"], c["precision"], _f(c["reference_ft_ips"]), _f(c["ours_ft_ips"]),
              f"{c['ft_ratio']['median']:.2f}", _f(c["reference_eval_ips"]), _f(c["ours_eval_ips"]),
              f"{c['eval_ratio']['median']:.2f}", f"{_f(c['ft_peak_mib']['reference'])} / {_f(c['ft_peak_mib']['ours'])}",
              f"{c['train_tmacs']:.3g}", f"{c['eval_tmacs']:.3g}"] for c in cases])
    run_rows = []
    for name in ("pruning_run", "jobs_per_gpu"):
        for k in parts[name].get("k", []):
            if "runs" not in k:  # not run
                continue
            run_rows.append([k["k"], f"{k['scale']:g}", f"{k['window_s']:.0f}", k["steps"], _f(k.get("t_prune"), 3),
                             _f(k.get("t_test"), 2), _f(k.get("t_finetune"), 2), _f(k.get("t_step"), 2),
                             _f(k.get("steps_per_s"), 4), _f(k.get("steps_per_s_wall"), 4),
                             _f(k.get("paper_steps_per_s"), 4)])
    if run_rows:
        p = figures["profile"]
        text += (f"\n## Pruning runs\n\n{p['run_model']} on {p['n_train']:,}/{p['n_test']:,} generated images "
                 f"(scale 1; part 5 at scale {p['jobs_scale']:g}: both splits shrunk alike, so a step is that "
                 f"fraction of a paper step with the same mix of work), r = {p['ratio']}, theta = {p['theta']:g} "
                 "(every step fine-tunes: the upper bound `icepick cost` counts), "
                 + (f"fine-tunings of {p['run_max_batches']} batches" if p["run_max_batches"]
                    else "full-epoch fine-tunings with the early-halt checks") +
                 f" of batch {p['run_batch']}, fp32; k runs at once, each a `python -m icepick run` process "
                 "stopped at the end of the window. Seconds per step: the runs' own (steps.csv), means over "
                 "the completed steps. Aggregate steps/s: the sum over the k runs of steps / their step seconds; "
                 "wall: steps completed once every run was ready / the rest of the window; paper-scale: "
                 "aggregate x scale.\n\n")
        text += _table(["k", "scale", "window s", "steps done", "prune s", "test s", "fine-tune s", "s/step",
                        "aggregate steps/s", "wall steps/s", "paper-scale steps/s"], run_rows)
        if parts["jobs_per_gpu"].get("suggestion"):
            text += f"\n{parts['jobs_per_gpu']['suggestion']}\n"
    cost = parts["cost"]
    if cost.get("command"):
        text += f"\n## Projected cost\n\n`{cost['command']}`\n\n{cost.get('basis', '')}\n\n"
        text += cost.get("output", "") + "\n"
    return text


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ the parts (children)


class _Context:
    """What a part process knows: the profile, folders, its deadline, and how to save its result."""

    def __init__(self, name: str, path: Path, deadline: float) -> None:
        raw = json.loads(path.read_text())
        prof = raw["profile"]
        prof["models"] = tuple(tuple(m) for m in prof["models"])
        for key in ("precisions", "jobs"):
            prof[key] = tuple(prof[key])
        self.profile = Profile(**prof)
        self.work, self.out, self.name, self.deadline = Path(raw["work"]), Path(raw["out"]), name, deadline
        self.result: dict[str, Any] = {"status": "running"}
        self.data = self.work / "data"
        self.pretrained = self.work / "pretrained.pt"

    def left(self) -> float:
        return self.deadline - time.time()

    def save(self, **values: Any) -> None:
        """Merge ``values`` into the result and write it (atomically: the parent may read it any time)."""
        self.result.update(values)
        path = self.out / "parts" / f"{self.name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=2, default=_jsonable) + "\n")
        tmp.replace(path)

    def part_result(self, name: str) -> dict[str, Any]:
        try:
            return json.loads((self.out / "parts" / f"{name}.json").read_text())
        except (OSError, ValueError):
            return {}


def _jsonable(x: Any) -> Any:
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def _device(ctx: _Context):
    import torch

    from icepick.runtime import resolve_device

    if ctx.profile.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device is visible to torch (use --cpu-tiny on a machine without a GPU)")
    if ctx.profile.threads:
        torch.set_num_threads(ctx.profile.threads)
    return resolve_device(ctx.profile.device)


def _data_sets(p: Profile, work: Path) -> dict[str, tuple[Path, int, int]]:
    """The generated data sets: 'main' (parts 3 and 4) and, when part 5 runs at a smaller scale, 'jobs'."""
    sets = {"main": (work / "data", p.n_train, p.n_test)}
    if p.jobs_scale < 1:
        sets["jobs"] = (work / "data-jobs", round(p.n_train * p.jobs_scale), round(p.n_test * p.jobs_scale))
    return sets


def _generate(root: Path, n_train: int, n_test: int, difficulty: str) -> dict[str, Any]:
    """One data set, generated unless the same one is already there; its figures."""
    from icepick.data import is_synthetic, synth_cifar10
    from icepick.data.synth import check_synthetic

    if is_synthetic(root):
        try:
            m = check_synthetic(root)  # every file against its md5
        except (OSError, ValueError):
            m = {}
        if (m.get("n_train"), m.get("n_test"), m.get("difficulty")) == (n_train, n_test, difficulty):
            return {"root": str(root), "n_train": n_train, "n_test": n_test, "cached": True}
    t0 = time.perf_counter()
    synth_cifar10(root, n_train=n_train, n_test=n_test, seed=0, difficulty=difficulty, force=True)
    sec = time.perf_counter() - t0
    return {"root": str(root), "n_train": n_train, "n_test": n_test, "cached": False, "generate_s": sec,
            "images_per_s": (n_train + n_test) / sec}


def part_data(ctx: _Context) -> None:
    """Generate the data sets (reused from ``--work`` when already there), each in a process of its own."""
    from concurrent.futures import ProcessPoolExecutor

    p = ctx.profile
    sets = _data_sets(p, ctx.work)
    with ProcessPoolExecutor(len(sets)) as pool:
        futures = {name: pool.submit(_generate, root, n_train, n_test, p.difficulty)
                   for name, (root, n_train, n_test) in sets.items()}
        figures = {name: f.result() for name, f in futures.items()}

    def say(f: dict[str, Any]) -> str:
        return f"{f['n_train']:,}/{f['n_test']:,} images " + (
            "reused" if f["cached"] else f"generated in {f['generate_s']:.1f} s ({f['images_per_s']:,.0f} images/s)")

    ctx.save(status="ok", sets=figures, summary="; ".join(f"{name}: {say(f)}" for name, f in figures.items())
             + (" (one process each, at once)" if len(figures) > 1 else ""))


def part_tests(ctx: _Context) -> None:
    """The suite's CUDA tests: ``pytest -k cuda`` (tests needing snakemake skip themselves).

    Only the test files that mention CUDA are collected: ``-k cuda`` selects the same tests from
    them as from all of ``tests/`` (a test matches by its name or its file's), in less time.
    """
    files = sorted(str(f.relative_to(ROOT)) for f in (ROOT / "tests").glob("test_*.py")
                   if "cuda" in f.read_text(errors="replace").lower())
    argv = [sys.executable, "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider", "-k", "cuda", *files]
    ctx.save(command=" ".join(["python"] + argv[1:]))
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=max(1.0, ctx.left() - 2))
    output = proc.stdout + proc.stderr
    print(output, flush=True)
    outcomes = re.findall(r"^(tests/\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", output, re.M)
    skips = re.findall(r"^SKIPPED \[\d+\] (.+)$", output, re.M)
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output)}
    passed, failed, skipped = counts.get("passed", 0), counts.get("failed", 0), counts.get("skipped", 0)
    errors = counts.get("error", 0) + counts.get("errors", 0)
    status, error = "ok", None
    if proc.returncode not in (0,) or failed or errors:
        status, error = "failed", f"pytest exit code {proc.returncode}: {failed} failed, {errors} errors"
    elif ctx.profile.device == "cuda" and any("cuda" in s.lower() for s in skips):
        status, error = "failed", "a CUDA test was skipped on the GPU machine: " + "; ".join(skips)
    ctx.save(status=status, error=error, returncode=proc.returncode, passed=passed, failed=failed, skipped=skipped,
             errors=errors, tests=[{"test": t, "outcome": o} for t, o in outcomes], skips=skips,
             summary=f"{passed} passed, {failed} failed, {skipped} skipped"
                     + (f" ({'; '.join(skips)})" if skips else ""))


def _macs_per_image(model: str) -> dict[str, int]:
    """MACs per image of ``model`` unpruned, as ``icepick cost`` counts them: forward, and a
    fine-tuning step (the student's training + the teacher's forward)."""
    from icepick.cost import step_macs
    from icepick.freezing import training_macs_per_sample

    layers = step_macs(model, 0.5, 0)[0]
    forward = sum(layers.values())
    return {"forward": forward, "train_step": training_macs_per_sample(layers, {}) + forward}


def _mib(x: float) -> float | None:
    return None if x != x else x  # NaN: not measured


def part_throughput(ctx: _Context) -> None:
    """Fine-tuning and evaluation images/s, ours vs the reference, per model and precision."""
    import statistics

    import benchmarks.finetune as ft
    from benchmarks.common import machine
    from icepick.runtime import configure_backends

    device = _device(ctx)
    p = ctx.profile
    ctx.save(machine=machine(device), cases=[], not_run=[])
    longest = 0.0
    for precision in p.precisions:  # fp32 of every model first: the cost part needs it
        for paper, model in p.models:
            if ctx.left() < 1.3 * longest + 3:
                ctx.result["not_run"].append(f"{model} {precision}")
                ctx.save()
                continue
            t0 = time.perf_counter()
            configure_backends(device, precision)
            ft.PRECISION = precision
            case = ft.Case(f"{model}-{precision}", model, p.batch_size, p.ft_batches, p.eval_images)
            fig = ft.run_case(case, p.repeats, device, ablation=False, measure_memory=p.measure_memory)
            ref, ours = fig["arms"]["reference"], fig["arms"]["ours"]
            macs = _macs_per_image(model)
            med = statistics.median
            row = {
                "paper_model": paper, "model": model, "precision": precision, "batch_size": p.batch_size,
                "ft_batches": p.ft_batches, "eval_images": p.eval_images, "repeats": p.repeats,
                "reference_ft_ips": med(ref["finetune_images_per_s"]), "ours_ft_ips": med(ours["finetune_images_per_s"]),
                "reference_eval_ips": med(ref["eval_images_per_s"]), "ours_eval_ips": med(ours["eval_images_per_s"]),
                "ft_ratio": fig["finetune_ratio"], "eval_ratio": fig["eval_ratio"],
                "ft_peak_mib": {"reference": _mib(ref["finetune_peak_mib"]), "ours": _mib(ours["finetune_peak_mib"])},
                "eval_peak_mib": {"reference": _mib(ref["eval_peak_mib"]), "ours": _mib(ours["eval_peak_mib"])},
                "macs_per_image": macs,
                "train_tmacs": med(ours["finetune_images_per_s"]) * macs["train_step"] / 1e12,
                "eval_tmacs": med(ours["eval_images_per_s"]) * macs["forward"] / 1e12,
                "raw": fig,
            }
            row["seconds"] = time.perf_counter() - t0
            longest = max(longest, row["seconds"])
            ctx.result["cases"].append(row)
            ctx.save()
            print(f"{model} {precision}: FT ours {row['ours_ft_ips']:.0f} img/s (x{row['ft_ratio']['median']:.2f} "
                  f"the reference), eval {row['ours_eval_ips']:.0f} img/s, {row['seconds']:.1f} s", flush=True)
    configure_backends(device, "fp32")
    cases, skipped = ctx.result["cases"], ctx.result["not_run"]
    fp32 = [c for c in cases if c["precision"] == "fp32"]
    summary = ", ".join(f"{c['model']} fp32 FT {c['ours_ft_ips']:,.0f} img/s (x{c['ft_ratio']['median']:.2f})"
                        for c in fp32)
    error = f"not measured within the time limit: {', '.join(skipped)}" if skipped else None
    ctx.save(status="failed" if skipped or not cases else "ok", error=error,
             summary=f"{len(cases)} cases; {summary}")


def part_pretrain(ctx: _Context) -> None:
    """A few hundred SGD steps of pretraining (with the model's warm-up): the mean loss must fall."""
    from icepick.train import PretrainConfig, pretrain

    device = _device(ctx)
    p = ctx.profile
    cfg = PretrainConfig(model=p.pretrain_model, epochs=p.pretrain_epochs, batch_size=p.pretrain_batch,
                         n_train=p.pretrain_batch * p.pretrain_batches, device=str(device), threads=p.threads,
                         warmup=p.pretrain_warmup, seed=0)
    rows: list[dict[str, Any]] = []

    def on_epoch(epoch: int, row: dict[str, Any]) -> None:
        rows.append(dict(row))
        ctx.save(epochs=rows)

    steps = p.pretrain_epochs * p.pretrain_batches
    ctx.save(model=p.pretrain_model, steps=steps, batch_size=p.pretrain_batch, uses_warmup=cfg.uses_warmup,
             config=dataclasses.asdict(cfg))
    ctx.pretrained.unlink(missing_ok=True)  # a model of an earlier check (--work) must not stand in for this one
    t0 = time.perf_counter()
    work = ctx.work / "pretrain"
    work.mkdir(exist_ok=True)
    summary = pretrain(cfg, ctx.data, ctx.pretrained, work / "epochs.csv", work / "summary.json",
                       on_epoch_end=on_epoch)
    sec = time.perf_counter() - t0
    first, last = rows[0]["train_loss"], rows[-1]["train_loss"]
    train_s = sum(r["seconds"] for r in rows)
    falls = last < first
    ctx.save(status="ok" if falls else "failed",
             error=None if falls else f"the mean training loss did not fall: {first:.4f} -> {last:.4f}",
             first_loss=first, last_loss=last, final_test_acc=summary["final_test_acc"],
             warmup_iterations=summary.get("warmup_iterations"), seconds_training=train_s, total_s=sec,
             steps_per_s=steps / train_s,
             summary=(f"{steps} steps of {p.pretrain_model}: mean loss {first:.3f} (first epoch of "
                      f"{p.pretrain_batches} steps) -> {last:.3f} (last); warm-up "
                      + (f"{summary.get('warmup_iterations')} iterations" if cfg.uses_warmup else "off")
                      + f"; {steps / train_s:.1f} steps/s with the test passes"))


def _pretrained_model(ctx: _Context) -> tuple[Path, str]:
    """Part 3's model, or (when part 3 failed) an untrained one of the same architecture."""
    if ctx.pretrained.exists():
        return ctx.pretrained, "pretrained by part 3"
    import torch

    from icepick.data import dataset_info
    from icepick.model_files import save_model
    from icepick.models import build_model

    path = ctx.work / "untrained.pt"
    if not path.exists():
        torch.manual_seed(0)
        save_model(build_model(ctx.profile.run_model, num_classes=dataset_info(ctx.data).num_classes), path,
                   {"source": "benchmarks.gpu (untrained: part 3 left no model)"})
    return path, "untrained (part 3 left no model)"


_STEP = re.compile(r"icepick\.algorithm: step (\d+)/(\d+) ")


def _runs_at_once(ctx: _Context, k: int, window: float, tag: str, data: Path, scale: float = 1.0) -> dict[str, Any]:
    """k ``python -m icepick run`` processes at once for ``window`` seconds on ``data`` (``scale`` of
    the paper's sizes); their steps and times. A run that has completed no step when the window
    ends is waited for (up to the part's limit): a step's time needs one step."""
    from icepick.model_files import load_model
    from icepick.records import read_json

    p = ctx.profile
    pretrained, origin = _pretrained_model(ctx)
    cpus = os.cpu_count() or 1
    threads = max(1, (p.threads or cpus) // k) if p.device == "cpu" else max(1, cpus // k)
    runs, procs = [], []
    start = time.monotonic()
    for i in range(k):
        folder = ctx.work / "runs" / f"{tag}-{i}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        argv = [sys.executable, "-m", "icepick", "run", "--pretrained", str(pretrained), "--data", str(data),
                "--method", "icepick", "--ratio", str(p.ratio), "--theta", str(p.theta), "--eta", "0",
                "--seed", str(i), "--batch-size", str(p.run_batch), "--max-batches", str(p.run_max_batches),
                "--steps-out", str(folder / "steps.csv"), "--summary-out", str(folder / "summary.json"),
                "--model-out", str(folder / "pruned.pt"), "--no-progress", "--device", p.device,
                "--threads", str(threads), "--precision", "fp32", "--jobs-per-gpu", str(k)]
        if p.device == "cuda":
            argv += ["--gpu-slots", "1"]  # all k on the first GPU, however many the machine has
        log = open(folder / "log.txt", "w")
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL)
        run = {"seed": i, "folder": str(folder), "ready_s": None, "step_done_s": [], "command": " ".join(argv[1:])}

        def read(proc=proc, run=run, log=log) -> None:
            for line in proc.stdout:
                log.write(line)
                now = time.monotonic() - start
                if "unpruned accuracy" in line and run["ready_s"] is None:
                    run["ready_s"] = now
                elif _STEP.search(line):
                    run["step_done_s"].append(now)
            log.close()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        runs.append(run)
        procs.append((proc, reader))
    while any(proc.poll() is None for proc, _ in procs):
        # the window, then (a slow or loaded machine) until every run has completed a step, within the part's limit
        if time.monotonic() - start >= window and (all(run["step_done_s"] for run in runs) or ctx.left() < 5):
            break
        time.sleep(0.2)
    end = time.monotonic() - start
    for proc, _ in procs:
        if proc.poll() is None:
            proc.terminate()
    for (proc, reader), run in zip(procs, runs):
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        folder = Path(run["folder"])
        run["returncode"] = proc.returncode
        run["finished"] = proc.returncode == 0 and (folder / "summary.json").exists()
        rows: list[dict[str, Any]] = []
        if run["finished"]:
            import csv

            with open(folder / "steps.csv") as f:
                rows = [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(f)]
            run["n_steps_total"] = read_json(folder / "summary.json").get("n_steps")
        elif (folder / "summary.json.state.pt").exists():
            _, meta = load_model(folder / "summary.json.state.pt")
            rows = list(meta.get("rows") or [])
        elif proc.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
            run["error"] = _tail(folder / "log.txt", 3)
        run["rows"] = [{c: r.get(c) for c in ("step", "block", "finetuned", "ft_batches", "acc", "t_prune", "t_test",
                                              "t_finetune", "t_step")} for r in rows]
        run["steps"] = len(rows)
    figures: dict[str, Any] = {"k": k, "window_s": end, "model": p.run_model, "pretrained": origin, "data": str(data),
                               "scale": scale, "threads_per_run": threads, "runs": runs}
    all_rows = [r for run in runs for r in run["rows"]]
    figures["steps"] = len(all_rows)
    for col in ("t_prune", "t_test", "t_finetune", "t_step"):
        figures[col] = sum(r[col] for r in all_rows) / len(all_rows) if all_rows else None
    rates = [run["steps"] / sum(r["t_step"] for r in run["rows"]) for run in runs if run["steps"]]
    figures["steps_per_s"] = sum(rates) if rates else None
    figures["paper_steps_per_s"] = figures["steps_per_s"] * scale if rates else None
    ready = [run["ready_s"] for run in runs]
    if all(r is not None for r in ready) and end > max(ready):
        t0 = max(ready)
        done = sum(1 for run in runs for t in run["step_done_s"] if t >= t0)
        figures["steps_per_s_wall"] = done / (end - t0)
    else:
        figures["steps_per_s_wall"] = None
    idle = sum(1 for run in runs if not run["steps"])
    if idle and figures["steps"]:
        figures["note"] = (f"{idle} of {k} runs completed no step in the window: the aggregate counts the others "
                           "only (a lower bound)")
    errors = [f"run {run['seed']}: {run['error']}" for run in runs if run.get("error")]
    if errors:
        figures["error"] = "; ".join(errors)
    elif not figures["steps"]:
        figures["error"] = f"no step completed within {end:.0f} s (start-up {_f(max(r or 0 for r in ready), 1)} s)"
    return figures


def _num(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(v, v)


def part_pruning_run(ctx: _Context) -> None:
    """One paper-scale ICE-Pick run for the window (or the time left): seconds per step."""
    p = ctx.profile
    _device(ctx)
    window = min(p.run_window_s, ctx.left() - 15)
    if window < 2:
        raise RuntimeError(f"not run: {ctx.left():.0f} s left, too few for a run")
    fig = _runs_at_once(ctx, 1, window, "k1", ctx.data)
    ctx.save(k=[fig])
    if fig.get("error"):
        ctx.save(status="failed", error=fig["error"])
        return
    ctx.save(status="ok", summary=(
        f"{fig['steps']} steps of {p.run_model} in {fig['window_s']:.0f} s: {fig['t_step']:.2f} s/step (prune "
        f"{fig['t_prune']:.3f}, test {fig['t_test']:.2f}, fine-tune {fig['t_finetune']:.2f}); start-up "
        f"{_f(fig['runs'][0]['ready_s'], 1)} s"))


def part_jobs_per_gpu(ctx: _Context) -> None:
    """k runs at once for each k: aggregate steps/s, and the jobs_per_gpu that gives the most."""
    p = ctx.profile
    _device(ctx)
    figures = []
    for i, k in enumerate(p.jobs):
        window = min(p.jobs_window_s, (ctx.left() - 12 * (len(p.jobs) - i)) / (len(p.jobs) - i))
        if window < 2:
            figures.append({"k": k, "error": "not run: no time left", "steps": 0, "window_s": 0.0})
            continue
        root, _, _ = _data_sets(p, ctx.work).get("jobs", (ctx.data, 0, 0))
        figures.append(_runs_at_once(ctx, k, window, f"k{k}", root, p.jobs_scale))
        ctx.save(k=figures)
    one = (ctx.part_result("pruning_run").get("k") or [{}])[0]
    rates = {1: one.get("paper_steps_per_s")} if one.get("paper_steps_per_s") else {}
    rates.update({f["k"]: f["paper_steps_per_s"] for f in figures if f.get("paper_steps_per_s")})
    suggestion = None
    if rates:
        best = max(rates, key=rates.get)
        if 1 in rates and best != 1 and rates[best] < 1.1 * rates[1]:
            best = 1  # sharing must buy at least 10% to be worth the slower runs
        suggestion = ("Aggregate paper-scale steps/s by k: " + ", ".join(
            f"k={k}: {v:.4f}" + (f" (x{v / rates[1]:.2f})" if 1 in rates and k != 1 else "")
            for k, v in sorted(rates.items())) + f"; suggested `jobs_per_gpu: {best}`"
                      + ("" if 1 in rates else " (part 4 gave no k=1 figure to compare with)") + ".")
    notes = [f"k={f['k']}: {f['note']}" for f in figures if f.get("note")]
    if suggestion and notes:
        suggestion += " " + "; ".join(notes) + "."
    errors = [f"k={f['k']}: {f['error']}" for f in figures if f.get("error")]
    ctx.save(k=figures, rates={str(k): v for k, v in rates.items()}, suggestion=suggestion,
             status="failed" if errors else "ok", error="; ".join(errors) or None,
             summary=suggestion or "")


def part_cost(ctx: _Context) -> None:
    """``python -m icepick cost`` at the fp32 tera-MAC/s of part 2 (weighted by each model's share)."""
    import yaml

    from icepick.cli import main as icepick_main
    from icepick.cost import sweep_costs

    cases = [c for c in ctx.part_result("throughput").get("cases") or [] if c["precision"] == "fp32"]
    if not cases:
        raise RuntimeError("no fp32 throughput was measured (part 2), so there is nothing to project with")
    configfile = "config/config.yaml"
    config = yaml.safe_load((ROOT / configfile).read_text())
    costs = sweep_costs(config)
    share: dict[str, dict[str, float]] = {}
    for row in costs["rows"]:
        s = share.setdefault(row["model"], {"train": 0.0, "eval": 0.0})
        s["train"] += row["upper"]["train_macs"]
        s["eval"] += row["upper"]["eval_macs"]
    measured = {c["paper_model"]: c for c in cases if c["paper_model"] in share}
    if not measured:
        raise RuntimeError(f"part 2 measured none of {configfile}'s models")

    def harmonic(kind: str, key: str) -> float:  # the one throughput giving the same hours as per-model ones
        macs = {m: share[m][kind] for m in measured}
        return sum(macs.values()) / sum(macs[m] / measured[m][key] for m in measured)

    train, evaluate = harmonic("train", "train_tmacs"), harmonic("eval", "eval_tmacs")
    argv = ["cost", "--configfile", configfile, "--train-tmacs", f"{train:.4g}", "--eval-tmacs", f"{evaluate:.4g}"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = icepick_main(argv)
    output = buffer.getvalue()
    print(output, flush=True)
    total = re.search(r"\*\*all\*\*.*\*\*([\d,.]+) / ([\d,.]+)\*\*", output)
    stand_in = ", ".join(f"{c['model']} for {c['paper_model']}" for c in measured.values()
                         if c["model"] != c["paper_model"])
    basis = ("Training and evaluation TMAC/s: each model's fp32 figure of part 2 (ours), combined over the models "
             "weighted by their MACs in the sweep (upper bound), so that the hours equal those of the per-model "
             "figures: " + "; ".join(f"{m} train {c['train_tmacs']:.3g} / eval {c['eval_tmacs']:.3g}"
                                     for m, c in measured.items())
             + (f". Stand-ins measured on the CPU ({stand_in}): these hours mean nothing" if stand_in else "") + ".")
    ctx.save(status="ok" if code == 0 else "failed", error=None if code == 0 else f"icepick cost exit code {code}",
             command="python -m icepick " + " ".join(argv), train_tmacs=train, eval_tmacs=evaluate,
             per_model={m: {"train_tmacs": c["train_tmacs"], "eval_tmacs": c["eval_tmacs"]} for m, c in measured.items()},
             basis=basis, output=output,
             gpu_hours={"upper": total.group(1), "reported": total.group(2)} if total else None,
             summary=(f"{total.group(1)} / {total.group(2)} GPU h (upper bound / at the paper's #Ft) at "
                      if total else "at ") + f"{train:.3g} / {evaluate:.3g} TMAC/s (training / evaluation)")


PART_FUNCTIONS: dict[str, Callable[[_Context], None]] = {
    "data": part_data, "tests": part_tests, "throughput": part_throughput, "pretrain": part_pretrain,
    "pruning_run": part_pruning_run, "jobs_per_gpu": part_jobs_per_gpu, "cost": part_cost,
}


def run_part(name: str, context: Path, deadline: float) -> int:
    """One part, in this process: its result file says ok, or failed with the error."""
    ctx = _Context(name, context, deadline)
    ctx.save(status="running")
    try:
        PART_FUNCTIONS[name](ctx)
    except BaseException as err:  # noqa: BLE001 - any failure is the part's result, with its message
        traceback.print_exc()
        ctx.save(status="failed", error=f"{type(err).__name__}: {' '.join(str(err).split())}"[:1000],
                 ended_at=time.time())
        return 1
    if ctx.result.get("status") == "running":
        ctx.result["status"] = "ok"
    ctx.save(ended_at=time.time())
    return 0 if ctx.result["status"] == "ok" else 1


# ------------------------------------------------------------------------------ the command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Run it through bash benchmarks/gpu_check.sh, which puts the wheels on the path.")
    p.add_argument("--cpu-tiny", action="store_true",
                   help="the same code on the CPU with small models and data, in under 2 minutes")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default benchmarks/out/gpu)")
    p.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS,
                   help="folder of the wheels the wrapper puts on PYTHONPATH (default benchmarks/wheels)")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for the generated data and models, kept and reused by the next check "
                        "(default: a temporary folder, deleted at the end)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary work folder")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole check, each part's limit scaled with it (default 345 on the "
                        "GPU, 115 with --cpu-tiny)")
    p.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # a part's own process
    p.add_argument("--context", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    p.add_argument("--wheel-path", type=Path, help=argparse.SUPPRESS)  # the wrapper: PYTHONPATH entries
    p.add_argument("--unpack-to", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.wheel_path is not None:
        entries, notes = wheel_paths(args.wheel_path, args.unpack_to or Path(tempfile.mkdtemp()))
        for note in notes:
            print(f"gpu_check: {note}", file=sys.stderr)
        print(os.pathsep.join(entries))
        return 0
    if args.part:
        return run_part(args.part, args.context, args.deadline)
    missing = missing_imports(args.wheels)
    if missing:
        print(f"benchmarks.gpu: error: {missing[0]}", file=sys.stderr)
        return 2
    if args.budget is not None and args.budget <= 0:
        print("benchmarks.gpu: error: --budget must be a positive number of seconds", file=sys.stderr)
        return 2
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
