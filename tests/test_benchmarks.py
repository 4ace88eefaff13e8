"""The benchmark scripts run, and their reference renders the authors' loop.

No benchmark runs here beyond a seconds-long smoke of ``python -m benchmarks.finetune``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the benchmarks package lives beside icepick/, not inside it
    sys.path.insert(0, str(ROOT))

from icepick.models import build_model  # noqa: E402


def test_freezing_benchmark_layouts_and_theory():
    from benchmarks.freezing import frozen_layers, theory
    from icepick.pruning import conv_layers

    model = build_model("resnet20")
    names = [n for n, _, _ in conv_layers(model)]
    assert frozen_layers(names, 0.0, "prefix") == []
    assert frozen_layers(names, 0.3, "prefix") == names[:6]  # ceil(0.3 * 19)
    spread = frozen_layers(names, 0.3, "spread")
    assert len(spread) == 6 and names[0] not in spread
    full, prefix = theory(model, []), theory(model, names[:6])
    assert full["step"] == full["student"] + full["forward"]
    assert prefix["student"] < full["student"]


def test_reference_loader_renders_the_authors_transforms(random_split):
    from benchmarks.reference import reference_accuracy, test_loader, train_loader
    from icepick.evaluate import accuracy

    split = random_split(20, seed=6)
    x, y = next(iter(train_loader(split, batch_size=8)))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (8,)
    model = build_model("resnet20")
    assert reference_accuracy(model, test_loader(split, 8)) == pytest.approx(accuracy(model, split), abs=5.01)


def test_reference_reads_the_data_through_torchvisions_cifar10(synth_root, synth_splits):
    """The per-process reference reads the generated set with torchvision's reader (its md5 check
    passing on the marker's sums), the same images the pipeline reads."""
    from benchmarks.reference import cifar10_datasets

    train_set, test_set = cifar10_datasets(synth_root)
    for dataset, split in zip((train_set, test_set), synth_splits):
        assert torch.equal(torch.from_numpy(dataset.data).permute(0, 3, 1, 2), split.images)
        assert list(dataset.targets) == split.labels.tolist()
    x, y = test_set[0]
    assert x.shape == (3, 32, 32) and y == synth_splits[1].labels[0].item()


@pytest.fixture(scope="module")
def imported_noflip(tmp_path_factory) -> Path:
    """An image folder of generated PNGs imported without flips: its own normalisation, 3 classes."""
    import numpy as np
    from PIL import Image

    from icepick.data import import_dataset

    src = tmp_path_factory.mktemp("images") / "shapes"
    rng = np.random.default_rng(3)
    for c in range(3):
        (src / f"class{c}").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src / f"class{c}" / f"{i}.png")
    out = tmp_path_factory.mktemp("imported") / "shapes"
    import_dataset("imagefolder", out, src, flip=False)
    return out


def test_reference_reads_an_imported_set_with_its_own_normalisation_and_flip_setting(imported_noflip):
    """On an imported set the reference sees the images the pipeline reads, normalised with the
    manifest's statistics, and never flips them when the manifest says no flips."""
    from benchmarks.reference import cifar10_datasets
    from icepick.data import dataset_info, eval_batches, load_split

    info = dataset_info(imported_noflip)
    assert not info.flip and info.mean != (0.4914, 0.4822, 0.4465)
    train_set, test_set = cifar10_datasets(imported_noflip)
    train, test = load_split(imported_noflip, "train"), load_split(imported_noflip, "test")
    assert torch.equal(torch.from_numpy(train_set.data).permute(0, 3, 1, 2), train.images)
    x_ours, _ = next(iter(eval_batches(test, batch_size=len(test))))
    x_ref = torch.stack([test_set[i][0] for i in range(len(test_set))])
    assert torch.allclose(x_ref, x_ours, atol=1e-5)
    assert "Flip" not in repr(train_set.transform) and "RandomCrop" in repr(train_set.transform)


def test_the_whole_run_benchmark_runs_on_a_given_data_set_model_and_trace(imported_noflip, tmp_path, capsys):
    """`benchmarks.pruning_run --data --pretrained --trace`: both arms on the files given (nothing
    pretrained or generated), one step each; the record names the data set and the model."""
    from benchmarks.pruning_run import main
    from icepick.algorithm import load_teacher
    from icepick.analysis import freeze_trace
    from icepick.data import load_split
    from icepick.model_files import save_model
    from icepick.records import write_json

    save_model(build_model("resnet20", num_classes=3), tmp_path / "m.pt", {"kind": "pretrained", "model": "resnet20"})
    trace = freeze_trace(build_model("resnet20", num_classes=3), load_teacher(tmp_path / "m.pt", "cpu"),
                         load_split(imported_noflip, "train"), 0.4, seed=0)
    write_json(tmp_path / "trace.json", {"model": "resnet20", **trace})
    threads = torch.get_num_threads()
    try:
        code = main(["--data", str(imported_noflip), "--pretrained", str(tmp_path / "m.pt"),
                     "--trace", str(tmp_path / "trace.json"), "--steps", "1", "--max-batches", "1",
                     "--batch-size", "4", "--repeats", "1", "--methods", "baseline", "--threads", "1",
                     "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, capsys.readouterr().err
    figures = json.loads((tmp_path / "out" / "pruning_run.json").read_text())
    assert figures["setup"]["data_source"] == "imagefolder" and figures["setup"]["pretrained"] == str(tmp_path / "m.pt")
    (run,) = figures["runs"]
    assert run["method"] == "baseline" and run["reference_finetunes"] == run["ours_finetunes"] == [1]
    for arm in ("reference", "ours"):  # where the time went, piece by piece, within the run's time
        (pieces,) = run[f"{arm}_pieces"]
        assert set(pieces) == {"t_prune", "t_test", "t_finetune"} and min(pieces.values()) > 0
        assert sum(pieces.values()) < run[f"{arm}_wall"][0]
    assert "| baseline | fine-tune and evaluate |" in (tmp_path / "out" / "pruning_run.md").read_text()
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())  # nothing made


def test_the_time_breakdown_shows_no_ratio_for_a_piece_that_was_not_measured():
    """A piece of zero seconds (nothing pruned in it) or a negative rest gives '-', not a failure."""
    from benchmarks.pruning_run import breakdown_rows

    pieces = {"t_prune": 0.0, "t_test": 1.0, "t_finetune": 4.0}
    run = {"method": "icepick", "reference_pieces": [pieces, pieces], "ours_pieces": [pieces, pieces],
           "reference_seconds": [6.0, 6.0], "ours_seconds": [3.0, 3.0],
           "reference_wall": [6.0, 6.5], "ours_wall": [4.5, 4.9]}
    rows = {row[1]: row for row in breakdown_rows({"runs": [run]})}
    assert rows["prune"][4] == "-" and rows["rest of the run"][4] == "-"  # ours' rest is -0.5 and -0.1
    assert rows["fine-tune and evaluate"][4] == "1.00 (1.00-1.00)"


def test_the_whole_run_benchmark_needs_a_trace_with_a_given_model(tmp_path, capsys):
    from benchmarks.pruning_run import main
    from icepick.model_files import save_model

    save_model(build_model("resnet20"), tmp_path / "m.pt", {"kind": "pretrained"})
    threads = torch.get_num_threads()
    try:
        code = main(["--pretrained", str(tmp_path / "m.pt"), "--work", str(tmp_path / "work"),
                     "--train", "20", "--test", "10", "--out", str(tmp_path / "out")])
    finally:
        torch.set_num_threads(threads)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "--pretrained and --trace go together" in err and len(err.splitlines()) == 1


def test_reference_run_prunes_and_fine_tunes_as_asked(synth_root, tmp_path):
    """The reference's whole run as a command: the baseline fine-tunes after every step; the
    pruned model is smaller; the summary states the decisions."""
    from benchmarks.reference_run import main
    from icepick.model_files import load_model, save_model
    from icepick.pruning import count_params

    model = build_model("resnet20")
    save_model(model, tmp_path / "m.pt", {"kind": "pretrained"})
    threads = torch.get_num_threads()
    try:
        code = main(["--pretrained", str(tmp_path / "m.pt"), "--data", str(synth_root), "--method", "baseline",
                     "--ratio", "0.5", "--max-steps", "2", "--max-batches", "1", "--batch-size", "8",
                     "--device", "cpu", "--threads", "1", "--model-out", str(tmp_path / "p.pt"),
                     "--summary-out", str(tmp_path / "s.json")])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["n_steps"], summary["n_finetunes"]) == (2, 2)
    pruned, _ = load_model(tmp_path / "p.pt")
    assert count_params(pruned) < count_params(model)


def test_reference_run_needs_a_trace_to_freeze(synth_root, tmp_path, capsys):
    from benchmarks.reference_run import main
    from icepick.model_files import save_model

    save_model(build_model("resnet20"), tmp_path / "m.pt", {"kind": "pretrained"})
    code = main(["--pretrained", str(tmp_path / "m.pt"), "--data", str(synth_root), "--eta", "0.3",
                 "--model-out", str(tmp_path / "p.pt"), "--summary-out", str(tmp_path / "s.json")])
    assert code == 2 and "--trace" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["benchmarks.finetune", "benchmarks.freezing", "benchmarks.pruning_run",
                                    "benchmarks.reference_run", "benchmarks.gpu"])
def test_benchmark_scripts_have_help(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(["--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_finetune_benchmark_smoke(tmp_path, capsys):
    from benchmarks.finetune import main

    threads = torch.get_num_threads()
    try:
        code = main(["--cases", "smoke-resnet20", "--repeats", "1", "--batches", "1", "--eval-images", "64",
                     "--no-memory", "--threads", "1", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    figures = json.loads((tmp_path / "finetune.json").read_text())
    case = figures["cases"][0]
    assert set(case["arms"]) == {"reference", "ours"}
    assert case["finetune_ratio"]["min"] > 0 and case["eval_ratio"]["median"] > 0
    assert "| smoke-resnet20 |" in (tmp_path / "finetune.md").read_text()


@pytest.mark.slow
def test_gpu_check_cpu_tiny_runs_every_part(tmp_path):
    """`bash benchmarks/gpu_check.sh --cpu-tiny`: the GPU check's code on the CPU with small models
    (about 75 s on 2 cores; --budget gives a loaded machine room). Without a wheels folder the
    installed packages serve. Every part passes and lands in the JSON and the markdown."""
    import os
    import subprocess

    from benchmarks.gpu import PARTS

    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-tiny", "--out", str(out),
         "--wheels", str(tmp_path / "no-wheels"), "--budget", "300"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=420,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads((out / "gpu.json").read_text())
    assert figures["mode"] == "cpu-tiny" and figures["ok"]
    assert list(figures["parts"]) == list(PARTS)
    for name, part in figures["parts"].items():
        assert part["status"] == "ok", (name, part.get("error"))
        assert part["seconds"] > 0
    parts = figures["parts"]
    assert parts["tests"]["passed"] >= 1
    cases = parts["throughput"]["cases"]
    assert {c["precision"] for c in cases} == {"fp32", "tf32"} and len(cases) == 6
    assert all(c["ours_ft_ips"] > 0 and c["reference_ft_ips"] > 0 and c["train_tmacs"] > 0 for c in cases)
    assert parts["pretrain"]["last_loss"] < parts["pretrain"]["first_loss"]
    assert parts["pretrain"]["warmup_iterations"] > 0
    run = parts["pruning_run"]["k"][0]
    assert run["k"] == 1 and run["steps"] >= 1
    assert run["t_step"] == pytest.approx(run["t_prune"] + run["t_test"] + run["t_finetune"], rel=1e-6)
    assert [k["k"] for k in parts["jobs_per_gpu"]["k"]] == [2]
    assert "jobs_per_gpu:" in parts["jobs_per_gpu"]["suggestion"]
    assert parts["cost"]["command"].startswith("python -m icepick cost --configfile config/config.yaml --train-tmacs ")
    assert "GPU h" in parts["cost"]["output"]
    text = (out / "gpu.md").read_text()
    for heading in ("| part | status |", "## Fine-tuning and evaluation throughput", "## Pruning runs",
                    "## Projected cost"):
        assert heading in text


def test_gpu_check_names_the_wheel_a_missing_package_needs(tmp_path, monkeypatch, capsys):
    """A package the check needs and cannot import ends it with one line naming the wheel to bring."""
    from benchmarks import gpu

    real = gpu.find_spec
    monkeypatch.setattr(gpu, "find_spec", lambda name: None if name == "torch_pruning" else real(name))
    assert gpu.main(["--cpu-tiny", "--out", str(tmp_path), "--wheels", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot import torch_pruning" in err[0] and "torch-pruning wheel" in err[0]
    assert not (tmp_path / "gpu.json").exists()


def test_gpu_check_puts_only_fitting_missing_wheels_on_the_path(tmp_path):
    import platform
    import zipfile

    from benchmarks.gpu import wheel_paths

    wheels = tmp_path / "wheels"
    wheels.mkdir()

    def wheel(name: str, files: dict[str, str]) -> None:
        with zipfile.ZipFile(wheels / name, "w") as zf:
            for path, text in files.items():
                zf.writestr(path, text)

    wheel("gpucheckpure-1.0-py3-none-any.whl", {"gpucheckpure/__init__.py": "X = 1\n",
                                                "gpucheckpure-1.0.dist-info/METADATA": ""})
    wheel(f"gpucheckext-1.0-cp{sys.version_info.major}{sys.version_info.minor}-cp{sys.version_info.major}"
          f"{sys.version_info.minor}-manylinux2014_x86_64.whl", {"gpucheckext/__init__.py": "Y = 2\n"})
    wheel("gpucheckold-1.0-cp27-cp27mu-manylinux1_x86_64.whl", {"gpucheckold/__init__.py": ""})
    wheel("json_again-1.0-py3-none-any.whl", {"json/__init__.py": ""})  # importable already: left out
    entries, notes = wheel_paths(wheels, tmp_path / "unpacked")
    assert str((wheels / "gpucheckpure-1.0-py3-none-any.whl").resolve()) in entries  # a pure wheel as it is
    if sys.platform.startswith("linux") and platform.machine() == "x86_64":  # one with a C extension unpacked
        unpacked = [Path(e) for e in entries if "gpucheckext" in e]
        assert len(unpacked) == 1 and (unpacked[0] / "gpucheckext" / "__init__.py").exists()
    assert len(entries) == 2 if platform.machine() == "x86_64" else 1
    assert not any("gpucheckold" in e or "json_again" in e for e in entries)
    assert any("another Python" in n for n in notes) and any("already importable" in n for n in notes)
