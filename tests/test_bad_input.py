"""Bad input, case by case, with the exact error the user sees.

Every case must end in one line that names the setting or file and says what to do, with
exit code 2, and never in a traceback from inside a library or in a result that looks
right. The command-line cases call ``icepick.cli.main`` in this process (what
``python -m icepick`` runs; a few are repeated through a real subprocess below); two cases
are library calls that only the library can make (IDX files against the caller's own md5
list); the workflow cases are Snakemake dry runs (or one real job) of a copy of the workflow.

In the expected messages ``…`` stands for a part that varies (a temporary path, an md5
sum, an operating system's wording); everything else must match exactly. The number of
cases is recorded in docs/reliability.md and the README's reliability section.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_workflow

from icepick.cli import main
from icepick.data import import_dataset, synth_cifar10
from icepick.models import build_model
from icepick.model_files import save_model
from icepick.pruning import conv_layers

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"
MODELS = ("'mobilenetv2', 'mobilenetv2_w025', 'mobilenetv2_w050', 'resnet110', 'resnet110_w050', 'resnet14', "
          "'resnet152', 'resnet152_w050', 'resnet20', 'resnet32', 'resnet56', 'resnet56_w050'")
SPECS = "torchvision:<builder> or python:<module>:<factory>"


def _pattern(expected: str) -> re.Pattern:
    """The expected line as a regular expression: '…' matches anything, the rest literally."""
    return re.compile("".join(".*?" if part == "…" else re.escape(part) for part in re.split("(…)", expected)))


def _last_line(stderr: str) -> str:
    """The error line: the last line that is not a log record."""
    lines = [line for line in stderr.splitlines() if line.strip() and not re.match(r"\d{4}-\d\d-\d\d \d", line)]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------- fixtures: files to break


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Small models (untrained: only their format matters), a trace, data sets good and bad."""
    root = tmp_path_factory.mktemp("bad_input")
    f = {"root": root}
    torch.manual_seed(0)
    m20, m32 = build_model("resnet20"), build_model("resnet32")
    f["m20"], f["m32"] = root / "resnet20.pt", root / "resnet32.pt"
    save_model(m20, f["m20"], {"source": "pretrain"})
    save_model(m32, f["m32"], {"source": "pretrain"})
    f["head_only"] = root / "head_only.pt"  # a user's CNN with no group to prune (tests/custom_cnn.py)
    save_model(build_model("python:custom_cnn:head_only"), f["head_only"])
    f["trace32"] = root / "trace_resnet32.json"
    f["trace32"].write_text(json.dumps({"model": "resnet32", "seed": 0, "seconds": 0.0, "train_macs": 0, "layers": [
        {"layer": name, "index": i, "score": 1.0 + i} for i, (name, _, _) in enumerate(conv_layers(m32))]}))
    f["truncated"] = root / "truncated.pt"
    f["truncated"].write_bytes(f["m20"].read_bytes()[:5000])
    f["junk"] = root / "junk.pt"
    f["junk"].write_bytes(bytes(range(256)) * 12)
    nan = build_model("resnet20")
    with torch.no_grad():
        nan.conv1.weight[0, 0, 0, 0] = float("nan")
    f["nan"] = root / "nan.pt"
    save_model(nan, f["nan"])
    huge = build_model("resnet20")  # finite weights whose logits overflow: the loss becomes NaN
    with torch.no_grad():
        huge.linear.weight.fill_(3e38)
    f["huge"] = root / "huge.pt"
    save_model(huge, f["huge"])
    f["missing"] = root / "missing.pt"
    f["badjson"] = root / "broken_trace.json"
    f["badjson"].write_text('{"model": "resnet20", "layers": [')

    f["data"] = root / "data"
    synth_cifar10(f["data"], n_train=100, n_test=50, seed=0)
    f["damaged"] = root / "damaged"
    shutil.copytree(f["data"], f["damaged"])
    batch = f["damaged"] / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:1000])  # truncated, as by an interrupted copy
    f["incomplete"] = root / "incomplete"
    shutil.copytree(f["data"], f["incomplete"])
    (f["incomplete"] / "cifar-10-batches-py" / "test_batch").unlink()
    f["fake_real"] = root / "fake_real"  # real CIFAR-10's layout, but not its files (no marker)
    shutil.copytree(f["data"], f["fake_real"])
    (f["fake_real"] / "cifar-10-batches-py" / "icepick_synthetic.json").unlink()
    f["empty"] = root / "empty"
    f["empty"].mkdir()
    f["out"] = root / "out"
    _data_import_files(f)
    _own_model_files(f)
    return f


def _data_import_files(f: dict[str, Path]) -> None:
    """Bad inputs of `icepick data import` and of the reader of imported data sets."""
    from PIL import Image

    from icepick.data import import_dataset

    root = f["root"]
    f["nowhere"] = root / "nowhere"
    f["images"] = root / "images"  # a good image folder: 2 classes of 10 PNG images, 32x32 RGB, all different
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog")):
        (f["images"] / name).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(rng.normal(60 + 120 * c, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(f["images"] / name / f"{i}.png")
    f["noimg"] = root / "noimg"  # the class folder 'dog' holds no image
    shutil.copytree(f["images"] / "cat", f["noimg"] / "cat")
    (f["noimg"] / "dog").mkdir()
    (f["noimg"] / "dog" / "README.txt").write_text("pictures of dogs go here")
    f["badimg"] = root / "badimg"  # one image that is not one
    shutil.copytree(f["images"], f["badimg"])
    (f["badimg"] / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing of a PNG")
    f["sizes"] = root / "sizes"  # images of two sizes
    shutil.copytree(f["images"], f["sizes"])
    Image.new("RGB", (40, 36), (10, 90, 200)).save(f["sizes"] / "dog" / "big.png")
    f["nested"] = root / "nested"  # the class folder 'cat' holds a folder of images (a class one level too deep)
    shutil.copytree(f["images"], f["nested"])
    shutil.copytree(f["images"] / "cat", f["nested"] / "cat" / "tabby")
    f["split_missing"] = root / "split_missing"  # train/ and test/, but test/ has no dog/
    shutil.copytree(f["images"], f["split_missing"] / "train")
    shutil.copytree(f["images"] / "cat", f["split_missing"] / "test" / "cat")
    f["imported"] = root / "imported"
    import_dataset("imagefolder", f["imported"], f["images"])
    f["mismatch"] = root / "mismatch"  # the test images replaced after the import (same shape, other pixels)
    shutil.copytree(f["imported"], f["mismatch"])
    images = np.load(f["mismatch"] / "test_images.npy")
    np.save(f["mismatch"] / "test_images.npy", 255 - images)
    f["badlabels"] = root / "badlabels"  # a batch with label 12 of 10 classes (its md5 recorded, so only the label is wrong)
    shutil.copytree(f["data"], f["badlabels"])
    base = f["badlabels"] / "cifar-10-batches-py"
    with open(base / "data_batch_1", "rb") as handle:
        batch = pickle.load(handle)
    batch["labels"][5] = 12
    with open(base / "data_batch_1", "wb") as handle:
        pickle.dump(batch, handle, protocol=2)
    marker = json.loads((base / "icepick_synthetic.json").read_text())
    marker["files"]["data_batch_1"] = hashlib.md5((base / "data_batch_1").read_bytes()).hexdigest()
    (base / "icepick_synthetic.json").write_text(json.dumps(marker))


def _idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format: magic 0x00 0x00 0x08 (unsigned bytes) <dims>, each size a big-endian uint32, the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _idx_folder(folder: Path, fault: str | None = None) -> dict[str, str]:
    """The four MNIST IDX files under their official names (made-up images: 20 train, 10 test of
    28x28), with one ``fault``; returns the md5 of what was written, so that only the fault is wrong."""
    rng = np.random.default_rng(0)
    contents = {"train-images-idx3-ubyte": _idx_bytes(rng.integers(0, 256, (20, 28, 28))),
                "train-labels-idx1-ubyte": _idx_bytes(np.arange(20) % 10),
                "t10k-images-idx3-ubyte": _idx_bytes(rng.integers(0, 256, (10, 28, 28))),
                "t10k-labels-idx1-ubyte": _idx_bytes(np.arange(10))}
    if fault == "magic":  # labels' magic (1 dimension) on the training images
        contents["train-images-idx3-ubyte"] = bytes([0, 0, 0x08, 0x01]) + contents["train-images-idx3-ubyte"][4:]
    elif fault == "truncated":  # cut off, as by an interrupted download
        contents["t10k-images-idx3-ubyte"] = contents["t10k-images-idx3-ubyte"][:-100]
    folder.mkdir(parents=True)
    for name, raw in contents.items():
        (folder / name).write_bytes(raw)
    return {name: hashlib.md5(raw).hexdigest() for name, raw in contents.items()}


def _own_model_files(f: dict[str, Path]) -> None:
    """A user's weights, IDX files, models of other structures and a model trained on an import's images."""
    import importlib

    from icepick.data import import_dataset
    from icepick.train import PretrainConfig, pretrain

    root = f["root"]
    torch.manual_seed(0)
    f["weights"] = root / "tiny_weights.pt"  # a state dict of python:custom_cnn:tiny_net (10 classes)
    torch.save(build_model("python:custom_cnn:tiny_net").state_dict(), f["weights"])
    module = root / "gone_nets.py"  # a saved module whose class lived in a module that is gone since
    module.write_text("import torch.nn as nn\n\nclass GoneNet(nn.Sequential):\n    pass\n")
    sys.path.insert(0, str(root))
    try:
        gone = importlib.import_module("gone_nets")
        f["gone_module"] = root / "gone_module.pt"
        torch.save(gone.GoneNet(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()), f["gone_module"])
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("gone_nets", None)
        module.unlink()
    f["torch_home"] = root / "torch_home"  # TORCH_HOME of the command-line cases: an empty cache
    f["torch_home"].mkdir()
    f["grey28"] = root / "resnet20_grey28.pt"  # a resnet20 for 1x28x28 images
    save_model(build_model("resnet20", input_shape=(1, 28, 28)), f["grey28"])
    for name in ("all_conv_net", "scaled_net"):  # no BatchNorm; a prune Torch-Pruning cannot follow
        f[name] = root / f"{name}.pt"
        save_model(build_model(f"python:custom_cnn:{name}"), f[name])
    f["idx"] = root / "idx"  # official names, not the official files
    _idx_folder(f["idx"])
    f["idx_magic"], f["idx_truncated"] = root / "idx_magic", root / "idx_truncated"
    IDX_TABLES["magic"] = _idx_folder(f["idx_magic"], "magic")
    IDX_TABLES["truncated"] = _idx_folder(f["idx_truncated"], "truncated")
    f["cmp"] = root / "cmp"  # a finished comparison
    f["cmp"].mkdir()
    for name in ("comparison.csv", "comparison.json"):
        (f["cmp"] / name).write_text("{}")
    f["nodigits"] = root / "nodigits"
    f["cost_digits"] = root / "cost_digits.yaml"
    f["cost_digits"].write_text(f"data: {{source: digits, root: {f['nodigits']}}}\n")
    # a resnet20 trained (one epoch) on the import's training images; the same images split again
    f["trained"] = root / "trained.pt"
    cfg = PretrainConfig(model="resnet20", epochs=1, batch_size=8, device="cpu", threads=1)
    pretrain(cfg, f["imported"], f["trained"], root / "trained.csv", root / "trained.json")
    f["resplit"] = root / "resplit"
    shutil.copytree(f["imported"], f["resplit"])
    import_dataset("imagefolder", f["resplit"], f["images"], seed=1, force=True)


#: md5 lists of the IDX folders with a fault (written by the fixture), for the library-call cases.
IDX_TABLES: dict[str, dict[str, str]] = {}


def _run_args(f: dict[str, Path], *extra: str, pretrained: str = "m20", data: str = "data") -> list[str]:
    return ["run", "--pretrained", str(f[pretrained]), "--data", str(f[data]),
            "--summary-out", str(f["out"] / "summary.json"), "--steps-out", str(f["out"] / "steps.csv"),
            "--model-out", str(f["out"] / "pruned.pt"), "--device", "cpu", "--threads", "1",
            "--max-steps", "1", "--max-batches", "1", "--no-progress", *extra]


def _weights_args(f: dict[str, Path], weights: str, *extra: str, data: str = "imported") -> list[str]:
    """A run from ``weights`` as given (a torchvision weights name), not a file of the fixture."""
    return ["run", "--pretrained", weights, *_run_args(f, *extra, data=data)[3:]]


def _import_args(f: dict[str, Path], path: str, *extra: str, source: str = "imagefolder") -> list[str]:
    return ["data", "import", "--source", source, "--path", str(f[path]), "--out", str(f["out"] / "d"), *extra]


def _pretrain_args(f: dict[str, Path], *extra: str, model: str = "resnet20") -> list[str]:
    return ["pretrain", "--model", model, "--data", str(f["data"]), "--out", str(f["out"] / "p.pt"),
            "--epochs-csv", str(f["out"] / "p.csv"), "--summary", str(f["out"] / "p.json"),
            "--device", "cpu", "--threads", "1", "--epochs", "1", *extra]


# ---------------------------------------------------------------- the command line

# (case, arguments given the files, the exact error line; {name} is the path of files[name])
CLI_CASES = [
    ("unknown model", lambda f: _pretrain_args(f, model="resnet999"),
     f"icepick pretrain: error: model: 'resnet999' is not allowed; choose one of {MODELS}, or {SPECS}"),
    ("unknown model expected of a checkpoint", lambda f: _run_args(f, "--model", "resnet2"),
     f"icepick run: error: model: 'resnet2' is not allowed; choose one of {MODELS}, or {SPECS}"),
    ("torchvision model that does not exist", lambda f: ["blocks", "--model", "torchvision:resnet19"],
     "icepick blocks: error: model: 'torchvision:resnet19': torchvision has no classification model 'resnet19' "
     "(python -c 'import torchvision; print(torchvision.models.list_models())')"),
    ("model spec without its factory", lambda f: _pretrain_args(f, model="python:custom_cnn"),
     f"icepick pretrain: error: model: 'python:custom_cnn' is not a spec; write {SPECS}"),
    ("user's model module not importable", lambda f: ["blocks", "--model", "python:my_nets:small"],
     "icepick blocks: error: model: 'python:my_nets:small': cannot import small from my_nets (No module named "
     "'my_nets'); run from the folder that holds my_nets.py, or add that folder to PYTHONPATH"),
    ("user's model that cannot take a 32x32 RGB image", lambda f: _pretrain_args(f, model="python:custom_cnn:grey_net"),
     "icepick pretrain: error: model: 'python:custom_cnn:grey_net' cannot classify a 3x32x32 image (RuntimeError: …); "
     "the data's images are 3x32x32: import them at the size and channels the model takes (data import --size, "
     "--channels), or give a model for these images"),
    ("user's model with nothing to prune", lambda f: _run_args(f, pretrained="head_only"),
     "icepick run: error: model: python:custom_cnn:head_only has no prunable group (every one feeds a residual "
     "addition or the classifier); try --coupled, or see python -m icepick blocks --model python:custom_cnn:head_only"),
    ("ratio above 1", lambda f: _run_args(f, "--ratio", "1.5"),
     "icepick run: error: ratio: 1.5 is out of range; it must lie in (0.0, 1.0)"),
    ("ratio 0", lambda f: ["trace", "--pretrained", str(f["m20"]), "--data", str(f["data"]),
                           "--out", str(f["out"] / "t.json"), "--ratio", "0"],
     "icepick trace: error: ratio: 0.0 is out of range; it must lie in (0.0, 1.0)"),
    ("eta 1", lambda f: _run_args(f, "--eta", "1"),
     "icepick run: error: eta: 1.0 is out of range; it must lie in [0.0, 1.0)"),
    ("eta negative", lambda f: _run_args(f, "--eta", "-0.1"),
     "icepick run: error: eta: -0.1 is out of range; it must lie in [0.0, 1.0)"),
    ("theta above 100 points", lambda f: _run_args(f, "--theta", "101"),
     "icepick run: error: theta: 101.0 is out of range; it must lie in [-100.0, 100.0]"),
    ("theta not a number", lambda f: _run_args(f, "--theta", "nan"),
     "icepick run: error: theta: nan is not a finite number"),
    ("Delta not below base", lambda f: _run_args(f, "--delta", "0.002"),
     "icepick run: error: delta: 0.002 is out of range; it must lie in (0.0, 0.001)"),
    ("Delta 0", lambda f: _run_args(f, "--delta", "0"),
     "icepick run: error: delta: 0.0 is out of range; it must lie in (0.0, 0.001)"),
    ("p above 0.5", lambda f: _run_args(f, "--p", "0.7"),
     "icepick run: error: p: 0.7 is out of range; it must lie in (0.0, 0.5]"),
    ("p 0", lambda f: _run_args(f, "--p", "0"),
     "icepick run: error: p: 0.0 is out of range; it must lie in (0.0, 0.5]"),
    ("beta 0", lambda f: _run_args(f, "--beta", "0"),
     "icepick run: error: beta: 0.0 is out of range; it must lie in (0.0, inf)"),
    ("beta negative", lambda f: _run_args(f, "--beta", "-50"),
     "icepick run: error: beta: -50.0 is out of range; it must lie in (0.0, inf)"),
    ("seed a fraction", lambda f: _run_args(f, "--seed", "1.5"),
     "icepick run: error: argument --seed: seed must be a non-negative integer, not '1.5'"),
    ("seed a word", lambda f: _pretrain_args(f, "--seed", "abc"),
     "icepick pretrain: error: argument --seed: seed must be a non-negative integer, not 'abc'"),
    ("seed negative", lambda f: ["data", "synth", "--out", str(f["out"]), "--train", "10", "--test", "10",
                                 "--seed", "-1"],
     "icepick data synth: error: argument --seed: seed must be a non-negative integer, not '-1'"),
    ("option misspelt", lambda f: _run_args(f, "--ration", "0.4"),
     "icepick run: error: unrecognized arguments: --ration 0.4 (did you mean: --ration -> --ratio?); "
     "see `icepick run --help`"),
    ("method misspelt", lambda f: _run_args(f, "--method", "icepic"),
     "icepick run: error: method: 'icepic' is not allowed; choose one of 'icepick', 'baseline', 'oneshot'"),
    ("device misspelt", lambda f: _run_args(f, "--device", "gpu"),
     "icepick run: error: device: 'gpu' is not a device; use 'auto', 'cpu' or 'cuda[:N]'"),
    ("checkpoint of another architecture", lambda f: _run_args(f, "--model", "resnet20", pretrained="m32"),
     "icepick run: error: pretrained: {m32} holds a resnet32 model, not resnet20 (--model); give the --model it was "
     "made for, or its own file"),
    ("freeze trace of another architecture", lambda f: _run_args(f, "--eta", "0.3", "--trace", str(f["trace32"])),
     "icepick run: error: trace: {trace32} was written for model 'resnet32', not for 'resnet20' ({m20}); "
     "rerun `icepick trace` for this model"),
    ("freeze trace that does not exist", lambda f: _run_args(f, "--eta", "0.3", "--trace", str(f["root"] / "nope.json")),
     "icepick run: error: {root}/nope.json: no such freeze trace (--trace); make it with `python -m icepick trace` "
     "or give the path of one"),
    ("truncated checkpoint", lambda f: _run_args(f, pretrained="truncated"),
     "icepick run: error: {truncated}: damaged or truncated model file, it cannot be read (…); "
     "save it again, or rerun the step that wrote it"),
    ("not a checkpoint", lambda f: _run_args(f, pretrained="junk"),
     "icepick run: error: {junk}: damaged or truncated model file, it cannot be read (UnpicklingError); "
     "save it again, or rerun the step that wrote it"),
    ("checkpoint holding NaN", lambda f: _run_args(f, pretrained="nan"),
     "icepick run: error: {nan}: holds NaN or infinite values (conv1.weight); "
     "these weights cannot be used: train the model again, or give other weights"),
    ("checkpoint missing", lambda f: _run_args(f, pretrained="missing"),
     "icepick run: error: pretrained: {missing} does not exist; give the path of a model or weights file"),
    ("freeze trace damaged", lambda f: _run_args(f, "--eta", "0.3", "--trace", str(f["badjson"])),
     "icepick run: error: {badjson}: not valid JSON (…); delete it and rerun the step that writes it"),
    ("freezing without a trace", lambda f: _run_args(f, "--eta", "0.3"),
     "icepick run: error: eta: 0.3 freezes layers, which needs a freeze trace (--trace trace.json)"),
    ("missing data set, no network", lambda f: ["data", "fetch", "--root", str(f["empty"])],
     "icepick data: error: CIFAR-10 not found under {empty}/cifar-10-batches-py and the download failed "
     "(…). Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (md5 "
     "c58f30108f718f92721af3b95e74349a) and place it at {empty}/cifar-10-python.tar.gz, or extract it so "
     "that {empty}/cifar-10-batches-py/data_batch_1 exists (`python -m icepick data fetch --root {empty}` "
     "extracts and checks a placed archive without downloading). Without network access, "
     "`python -m icepick data synth --out {empty} ...` writes a generated stand-in instead."),
    ("missing data set for a run", lambda f: _run_args(f, data="empty"),
     "icepick run: error: CIFAR-10 not found under {empty}/cifar-10-batches-py and "
     "{empty}/cifar-10-batches-py/data_batch_1 is missing. Download …"),
    ("damaged batch file", lambda f: _run_args(f, data="damaged"),
     "icepick run: error: {damaged}/cifar-10-batches-py/data_batch_2 is damaged (md5 …, the generated set's "
     "marker says …); regenerate the data set: `python -m icepick data synth --out {damaged} --train 100 "
     "--test 50 --seed 0 --difficulty standard`"),
    ("missing batch file", lambda f: _run_args(f, data="incomplete"),
     "icepick run: error: {incomplete}/cifar-10-batches-py/test_batch is missing from the generated data set; "
     "regenerate it: `python -m icepick data synth --out {incomplete} --train 100 --test 50 --seed 0 "
     "--difficulty standard`"),
    ("batch files that are not CIFAR-10's", lambda f: _run_args(f, data="fake_real"),
     "icepick run: error: {fake_real}/cifar-10-batches-py/data_batch_1 is damaged or is not the official "
     "CIFAR-10 file (md5 …, expected c99cafc152244af753f735de768cd75f), and {fake_real} has neither manifest.json "
     "nor {fake_real}/cifar-10-batches-py/icepick_synthetic.json: if `icepick data import` wrote this folder, the "
     "import is incomplete: redo it with `python -m icepick data import --source SOURCE --out {fake_real} ...`; "
     "if `icepick data synth` did, regenerate it with `python -m icepick data synth --out {fake_real} ...`; for "
     "the real CIFAR-10, delete {fake_real}/cifar-10-batches-py and extract "
     "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (md5 c58f30108f718f92721af3b95e74349a) there "
     "again, or run `python -m icepick data fetch --root {fake_real} --force`."),
    # data import, and the data sets it writes
    ("import: unknown source", lambda f: ["data", "import", "--source", "mnsit", "--out", str(f["out"] / "d")],
     "icepick data: error: source: 'mnsit' is not allowed; choose one of 'cifar10', 'cifar100', 'fashion-mnist', "
     "'mnist', 'digits', 'imagefolder', 'imagenet', 'tinyimagenet'"),
    ("import: imagefolder without --path", lambda f: ["data", "import", "--source", "imagefolder",
                                                      "--out", str(f["out"] / "d")],
     "icepick data: error: path: --source imagefolder needs --path DIR, a folder with one sub-folder of images "
     "per class"),
    ("import: missing --path folder", lambda f: ["data", "import", "--source", "imagefolder", "--path",
                                                 str(f["nowhere"]), "--out", str(f["out"] / "d")],
     "icepick data: error: path: {nowhere} does not exist; --source imagefolder needs a folder with one "
     "sub-folder of images per class (or train/ and test/ folders of them)"),
    ("import: empty --path folder", lambda f: ["data", "import", "--source", "imagefolder", "--path",
                                               str(f["empty"]), "--out", str(f["out"] / "d")],
     "icepick data: error: path: {empty} holds no class folder; put each class's images in a sub-folder named "
     "after the class ({empty}/CLASS/IMAGE.png)"),
    ("import: class folder with no image", lambda f: ["data", "import", "--source", "imagefolder", "--path",
                                                      str(f["noimg"]), "--out", str(f["out"] / "d")],
     "icepick data: error: {noimg}/dog: class folder 'dog' holds no image (png, jpg, jpeg, bmp, gif, webp, ...); "
     "add its images or remove the folder"),
    ("import: unreadable image", lambda f: ["data", "import", "--source", "imagefolder", "--path",
                                            str(f["badimg"]), "--out", str(f["out"] / "d")],
     "icepick data: error: {badimg}/dog/broken.png: cannot read this image (…); fix or remove it"),
    ("import: test fraction out of range", lambda f: ["data", "import", "--source", "imagefolder", "--path",
                                                      str(f["images"]), "--out", str(f["out"] / "d"),
                                                      "--test-fraction", "1.5"],
     "icepick data: error: test_fraction: 1.5 is out of range; it must lie in (0.0, 1.0)"),
    ("import: images of different sizes without --size", lambda f: _import_args(f, "sizes"),
     "icepick data: error: path: the images in {sizes} differ in size (32x32 0.png, 40x36 big.png, ...); give --size N to make "
     "them all NxN (--fit resize or pad)"),
    ("import: class folder holding sub-folders", lambda f: _import_args(f, "nested"),
     "icepick data: error: {nested}/cat: class folder 'cat' holds sub-folders (tabby); give the folder whose "
     "sub-folders are the classes, with the images directly inside them"),
    ("import: a class missing from test/", lambda f: _import_args(f, "split_missing"),
     "icepick data: error: {split_missing}/test: has no folder for class(es) dog that another split has; every "
     "class needs images in train/ and test/"),
    ("import: --fit pad with an image larger than --size", lambda f: _import_args(f, "images", "--size", "16",
                                                                                   "--fit", "pad"),
     "icepick data: error: {images}/cat/0.png: a 32x32 image does not fit in 16x16; --fit pad only pads, use "
     "--fit resize or a larger --size"),
    ("import: --size for cifar10", lambda f: ["data", "import", "--source", "cifar10", "--size", "64",
                                              "--out", str(f["out"] / "d")],
     "icepick data: error: size: cifar10 keeps its official 32x32 RGB images; --size, --channels and --fit are for "
     "fashion-mnist, mnist, digits and imagefolder"),
    ("import: --channels for cifar10", lambda f: ["data", "import", "--source", "cifar10", "--channels", "1",
                                                  "--out", str(f["out"] / "d")],
     "icepick data: error: channels: cifar10 keeps its official 32x32 RGB images; --size, --channels and --fit are "
     "for fashion-mnist, mnist, digits and imagefolder"),
    ("import: another split over an import, without --force",
     lambda f: ["data", "import", "--source", "imagefolder", "--path", str(f["images"]), "--out", str(f["imported"]),
                "--seed", "1"],
     "icepick data: error: {imported} holds an import of imagefolder with another split, images; models trained on "
     "it would meet other (or their own test) images: import into another --out, or add --force to replace it"),
    ("import: IDX files that are not the official ones", lambda f: _import_args(f, "idx", source="mnist"),
     "icepick data: error: {idx}/train-images-idx3-ubyte is damaged or is not the official mnist file (md5 of its "
     "content …, expected 6bbc9ace898e44ae57da46a324031adb); download it again"),
    ("import over another data set", lambda f: ["data", "import", "--source", "digits", "--out", str(f["data"])],
     "icepick data: error: {data} holds a generated data set ({data}/cifar-10-batches-py/icepick_synthetic.json); "
     "`icepick data import` does not write over other data: choose another folder, or add --force to replace "
     "what is there"),
    ("import over other files", lambda f: ["data", "import", "--source", "imagefolder", "--path", str(f["images"]),
                                           "--out", str(f["noimg"])],
     "icepick data: error: {noimg} holds other files (cat, dog); `icepick data import` does not write over other "
     "data: choose another folder, or add --force to replace what is there"),
    ("synth over an imported data set", lambda f: ["data", "synth", "--out", str(f["imported"]), "--train", "10",
                                                   "--test", "10"],
     "icepick data: error: {imported} holds an imagefolder data set ({imported}/manifest.json); `icepick data "
     "synth` does not write over other data: choose another folder, or add --force to replace what is there"),
    ("fetch over CIFAR-10 files that differ", lambda f: ["data", "fetch", "--root", str(f["fake_real"])],
     "icepick data: error: {fake_real}/cifar-10-batches-py/data_batch_1 exists but is not the official CIFAR-10 "
     "file (md5 …, expected c99cafc152244af753f735de768cd75f); `icepick data fetch` does not write over it: "
     "delete {fake_real}/cifar-10-batches-py, or rerun with --force to download the official files over it"),
    ("manifest that does not match its files", lambda f: _run_args(f, data="mismatch"),
     "icepick run: error: {mismatch}/test_images.npy does not match the data set's manifest "
     "(md5 …, {mismatch}/manifest.json says …): the file is damaged or was replaced; import the data set again: "
     "`python -m icepick data import --source imagefolder --path {images} --out {mismatch} --seed 0 "
     "--test-fraction 0.2`"),
    ("model of another class count than the data", lambda f: _run_args(f, data="imported"),
     "icepick run: error: pretrained: {m20} has 10 classes but the imagefolder data set has 2; pretrain the "
     "model on this data set (icepick pretrain, with --init {m20} to start from it)"),
    ("early-halt interval longer than the fine-tuning", lambda f: _run_args(f, "--early-halt", "100"),
     "icepick run: error: early_halt: 100 batches is not shorter than one fine-tuning (1 batch of 128 here), so "
     "it would never check; give a fraction of an epoch such as 0.25, or 0 for full epochs"),
    ("early halt neither a fraction nor whole batches", lambda f: _run_args(f, "--early-halt", "2.5"),
     "icepick run: error: early_halt: 2.5 is neither a fraction of an epoch in (0, 1) nor a whole number of batches"),
    ("labels out of range in a pickle", lambda f: _run_args(f, data="badlabels"),
     "icepick run: error: {badlabels}/cifar-10-batches-py/data_batch_1: label 12 is out of range for 10 classes "
     "(labels must lie in 0..9); the file does not belong to this data set: import or regenerate the data "
     "set"),
    # your model, your weights
    ("own weights without --model", lambda f: _run_args(f, pretrained="weights"),
     "icepick run: error: pretrained: {weights} is not an icepick model file; give --model SPEC "
     "(python:<module>:<factory> or torchvision:<builder>) to say which architecture its weights are for"),
    ("saved module whose class cannot be imported",
     lambda f: _run_args(f, "--model", "python:custom_cnn:tiny_net", pretrained="gone_module"),
     "icepick run: error: pretrained: {gone_module} holds a saved module whose class cannot be imported (No module "
     "named 'gone_nets'); run from the folder that holds its module, or add that folder to PYTHONPATH"),
    ("own weights of another architecture", lambda f: _run_args(f, "--model", "resnet20", pretrained="weights"),
     "icepick run: error: pretrained: {weights} does not fit resnet20 (116 missing and 32 unexpected weights: "
     "bn1.bias, bn1.num_batches_tracked, bn1.running_mean, bn1.running_var); check --model"),
    ("own weights with a classifier of another class count",
     lambda f: _run_args(f, "--model", "python:custom_cnn:tiny_net", pretrained="weights", data="imported"),
     "icepick run: error: pretrained: {weights}'s fc is [10, 16] where the model needs [2, 16] (another class "
     "count?); make a model for this data set from it with `icepick pretrain --init {weights} --epochs N`, which "
     "trains a new classifier"),
    ("torchvision weights not in the local cache",
     lambda f: _weights_args(f, "IMAGENET1K_V1", "--model", "torchvision:resnet18"),
     "icepick run: error: pretrained: torchvision's ResNet18_Weights.IMAGENET1K_V1 is not in the local cache "
     "({torch_home}/hub/checkpoints/resnet18-f37072fd.pth); nothing is downloaded here: fetch "
     "https://download.pytorch.org/models/resnet18-f37072fd.pth once where the internet is reachable and place it "
     "there (or set TORCH_HOME)"),
    ("torchvision weights name unknown", lambda f: _weights_args(f, "IMAGENET1K_V9", "--model", "torchvision:resnet18"),
     "icepick run: error: pretrained: torchvision has no weights 'IMAGENET1K_V9' for resnet18 (it has: IMAGENET1K_V1)"),
    ("model trained on the data set's test images", lambda f: _run_args(f, pretrained="trained", data="resplit"),
     "icepick run: error: pretrained: {trained} was trained on 3 of the 4 test images of this data set (was it "
     "imported again with another split?); its accuracies here would be inflated: pretrain it on this data set, or "
     "run on the data set it was trained on"),
    ("model for another image shape than the data", lambda f: _run_args(f, pretrained="grey28"),
     "icepick run: error: pretrained: {grey28} takes 1x28x28 images but the synthetic data set holds 3x32x32 ones; "
     "import the data at the model's size (--size, --channels) or pretrain the model on this data set"),
    ("bn_scale on a model without BatchNorm",
     lambda f: _run_args(f, "--criterion", "bn_scale", pretrained="all_conv_net"),
     "icepick run: error: criterion: 'bn_scale' ranks filters by the BatchNorm after the pruned convolution, but "
     "step 'conv1' of python:custom_cnn:all_conv_net has none (and 1 more of its 2 steps); choose another "
     "criterion (l1, l2, fpgm, ...)"),
    ("user's model factory without num_classes", lambda f: ["blocks", "--model", "python:custom_cnn:no_num_classes"],
     "icepick blocks: error: model: 'python:custom_cnn:no_num_classes': no_num_classes() takes no num_classes; "
     "icepick calls no_num_classes(num_classes=N) with the data's class count: add that parameter"),
    ("user's model factory that raises", lambda f: ["blocks", "--model", "python:custom_cnn:failing_net"],
     "icepick blocks: error: model: 'python:custom_cnn:failing_net': failing_net(num_classes=10) failed "
     "(RuntimeError: cannot make a net for 10 classes); fix the factory, or give one that builds the model"),
    ("prune that would break the model", lambda f: _run_args(f, "--theta", "100", pretrained="scaled_net"),
     "icepick run: error: pruning step 'conv1' of python:custom_cnn:scaled_net breaks the model (it no longer runs "
     "on a 3x32x32 image: RuntimeError: …); the prune was undone, the model is as before: stop before this step "
     "(--max-steps), or make the layer that breaks visible to tracing (a buffer or a shape taken from a constant "
     "cannot follow a prune)"),
    ("compare into a folder holding a comparison",
     lambda f: ["compare", "--pretrained", str(f["m20"]), "--data", str(f["data"]), "--out", str(f["cmp"]),
                "--device", "cpu", "--threads", "1", "--no-progress"],
     "icepick compare: error: out: {cmp} already holds a comparison (comparison.csv, comparison.json); give another "
     "folder, or force it (icepick compare --force) to run it again and write over it"),
    ("cost of a digits configuration not yet imported", lambda f: ["cost", "--configfile", str(f["cost_digits"])],
     "icepick cost: error: data.root: {nodigits} holds no imported digits data set, whose images the cost counts "
     "(relative to …); import it first: python -m icepick data import --source digits --out {nodigits}"),
]


def _expected(template: str, f: dict[str, Path]) -> re.Pattern:
    names = {k: str(v) for k, v in f.items()}
    text = re.sub(r"\{(\w+)\}", lambda m: names[m.group(1)], template)
    return _pattern(text)


@pytest.fixture
def no_network(monkeypatch):
    """Downloads fail at once (a proxy nobody listens on), as on a machine without network."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("case, args, expected", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_command_line_input(case, args, expected, files, no_network, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(files["torch_home"]))  # torchvision's weights cache: empty
    try:
        code = main(args(files))
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    line = _last_line(err)
    assert _expected(expected, files).fullmatch(line), f"\n got: {line}\nwant: {expected}"
    assert not (files["out"] / "summary.json").exists()


# Bad input only a library call can give: IDX files checked against the caller's own md5 list
# (official_md5); the command line checks the official list first, which such files fail (the
# case "import: IDX files that are not the official ones" above). The error is the line the
# command line would print after "icepick data: error: ".
API_CASES = [
    ("IDX images with a wrong magic number",
     lambda f: import_dataset("mnist", f["out"] / "d", f["idx_magic"], official_md5=IDX_TABLES["magic"]),
     "{idx_magic}/train-images-idx3-ubyte: not an IDX file of unsigned bytes with 3 dimension(s) (magic 00000801, "
     "expected 00000803); download it again"),
    ("IDX file truncated",
     lambda f: import_dataset("mnist", f["out"] / "d", f["idx_truncated"], official_md5=IDX_TABLES["truncated"]),
     "{idx_truncated}/t10k-images-idx3-ubyte: holds 7740 bytes of data where its header says 10x28x28; the file is "
     "truncated or damaged: download it again"),
]


@pytest.mark.parametrize("case, call, expected", API_CASES, ids=[c[0] for c in API_CASES])
def test_bad_library_input(case, call, expected, files):
    with pytest.raises((ValueError, OSError)) as err:  # what the command line reports in one line, exit code 2
        call(files)
    message = str(err.value)
    assert "\n" not in message
    assert _expected(expected, files).fullmatch(message), f"\n got: {message}\nwant: {expected}"
    assert not (files["out"] / "d").exists()


@pytest.mark.parametrize("case", ["unknown model", "truncated checkpoint", "seed a fraction", "option misspelt"])
def test_the_real_command_prints_the_same_single_line(case, files, tmp_path):
    """`python -m icepick ...` in its own process: the same line, exit code 2, no traceback."""
    _, args, expected = next(c for c in CLI_CASES if c[0] == case)
    proc = subprocess.run([sys.executable, "-m", "icepick", *args(files)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert _expected(expected, files).fullmatch(_last_line(proc.stderr))


# ---------------------------------------------------------------- NaN: no result is left behind


def test_a_run_whose_loss_becomes_nan_stops_and_writes_no_result(files, capsys):
    out = files["root"] / "nan_run"
    args = ["run", "--pretrained", str(files["huge"]), "--data", str(files["data"]), "--method", "baseline",
            "--lr-policy", "fixed", "--eta", "0", "--theta", "0", "--summary-out", str(out / "summary.json"),
            "--steps-out", str(out / "steps.csv"), "--model-out", str(out / "pruned.pt"), "--device", "cpu",
            "--threads", "1", "--max-steps", "2", "--max-batches", "2", "--batch-size", "32", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert _last_line(err) == ("icepick run: error: fine-tuning loss became NaN or infinite within the first "
                               "2 batches; lower the learning rate or check the model and data")
    for name in ("summary.json", "steps.csv", "pruned.pt"):
        assert not (out / name).exists(), name


def test_a_pretraining_whose_loss_becomes_nan_stops_and_writes_no_result(files, capsys):
    out = files["root"] / "nan_pretrain"
    args = ["pretrain", "--model", "resnet20", "--data", str(files["data"]), "--out", str(out / "p.pt"),
            "--epochs-csv", str(out / "p.csv"), "--summary", str(out / "p.json"), "--epochs", "2",
            "--lr", "1e10", "--batch-size", "20", "--device", "cpu", "--threads", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert _pattern("icepick pretrain: error: pretrain resnet20: the training loss became … in epoch … "
                    "(lr 1e+10); training stopped. Try a lower --lr.").fullmatch(_last_line(err))
    assert not (out / "p.pt").exists() and not (out / "p.csv").exists() and not (out / "p.json").exists()


# ---------------------------------------------------------------- damaged resume checkpoints


def test_a_damaged_pretraining_checkpoint_is_named_and_training_starts_over(files, caplog):
    """The resume checkpoint only saves time: a damaged one is reported and training starts over."""
    from icepick.train import PretrainConfig, checkpoint_path, pretrain

    out = files["root"] / "damaged_ckpt"
    out.mkdir()
    ckpt = checkpoint_path(out / "p.pt")
    ckpt.write_bytes(files["m20"].read_bytes()[:3000])
    cfg = PretrainConfig(model="resnet20", epochs=1, batch_size=50, device="cpu", threads=1)
    with caplog.at_level("WARNING"):
        summary = pretrain(cfg, files["data"], out / "p.pt", out / "p.csv", out / "p.json")
    assert f"{ckpt}: unreadable checkpoint" in caplog.text and "starting from scratch" in caplog.text
    assert summary["epochs"] == 1 and (out / "p.pt").exists() and not ckpt.exists()


def test_a_damaged_run_state_is_named_and_the_run_starts_over(files, caplog):
    from icepick.algorithm import RunConfig, run_experiment
    from icepick.data import load_experiment_data
    from icepick.finetune import FinetuneConfig

    out = files["root"] / "damaged_state"
    out.mkdir()
    state = out / "summary.json.state.pt"
    state.write_bytes(files["m20"].read_bytes()[:3000])
    cfg = RunConfig(max_steps=1, theta=100.0, finetune=FinetuneConfig(max_batches=1))
    data = load_experiment_data(files["data"], torch.device("cpu"))
    with caplog.at_level("WARNING"):
        summary = run_experiment(cfg, files["m20"], data, out / "steps.csv", out / "summary.json", out / "pruned.pt",
                                 show_progress=False)
    assert f"ignoring unreadable run state {state}" in caplog.text and "starting over" in caplog.text
    assert summary["n_steps"] == 1 and not state.exists()


# ---------------------------------------------------------------- the workflow's configuration

# config/test.yaml made smaller still: these jobs only have to start (or fail).
TINY = """\
data: {synthetic_train: 100, synthetic_test: 50}
pretrain: {epochs: 1}
finetune: {max_batches: 1, max_steps: 1}
experiments:
  fig3: {baseline: false}
"""

# (case, overlay YAML, the exact line Snakemake prints; {workflow}: the workflow copy's folder, where the jobs run,
# {tv}: torchvision's version)
RATIO = "experiments: {table1: {ratios: {default: 0.4}}}\n"  # a Table 1 ratio for any model
WORKFLOW_CASES = [
    ("a model without a Table 1 ratio", "models: [resnet56]\n",
     "experiments.table1.ratios: no ratio for model resnet56; add one for it, a 'default' entry, or a paper_role "
     "naming the paper's model it stands for (the paper: 0.6 for the ResNets, 0.4 for MobileNetV2)"),
    ("config key misspelt", "trace_ration: 0.4\n", "trace_ration: not a key; did you mean trace_ratio?"),
    ("nested config key misspelt", "finetune: {max_batch: 2}\n",
     "finetune.max_batch: not a key; did you mean finetune.max_batches?"),
    ("config key at the wrong level", "batch_size: 64\n",
     "batch_size: not a key of the configuration; did you mean pretrain.batch_size or finetune.batch_size?"),
    ("unknown model", "models: [resnet999]\nexperiments: {table1: {ratios: {resnet999: 0.4}}}\n",
     f"models: unknown model(s) resnet999; known: {MODELS.replace(chr(39), '')}, torchvision:<builder>, "
     "python:<module>:<factory>"),
    ("ratio above 1", "experiments: {fig3: {ratios: [0.4, 1.5]}}\n",
     "experiments.fig3.ratios[1]: 1.5 is out of range; it must be a number > 0 and < 1"),
    ("eta 1", "experiments: {table1: {etas: [0.3, 1.0]}}\n",
     "experiments.table1.etas[1]: 1.0 is out of range; it must be a number >= 0 and < 1"),
    ("theta negative", "experiments: {thresholds: {thetas: [-1]}}\n",
     "experiments.thresholds.thetas[0]: -1 is out of range; it must be a number >= 0 and <= 100"),
    ("Delta not below base", "schedule: {delta: 0.002}\n",
     "schedule.delta: 0.002 must be below schedule.base (0.001); Eq. 1's learning rate base - delta must "
     "stay positive"),
    ("p above 0.5", "schedule: {p: 0.7}\n", "schedule.p: 0.7 is out of range; it must be a number > 0 and <= 0.5"),
    ("beta 0", "schedule: {beta: 0}\n", "schedule.beta: 0 is out of range; it must be a number > 0"),
    ("seed not an integer", "seeds: [0, 1.5]\n", "seeds[1]: 1.5 (a number) is not allowed; it must be an integer >= 0"),
    # the data section
    ("data source misspelt", "data: {source: cifar-10}\n",
     "data.source: 'cifar-10' is not allowed; it must be one of cifar10, cifar100, fashion-mnist, mnist, digits, "
     "imagefolder, imagenet, tinyimagenet, synthetic"),
    ("image folder not given", "data: {source: imagefolder}\n",
     "data.path: source imagefolder needs the image folder (one sub-folder of images per class)"),
    ("test fraction 1", "data: {source: digits, test_fraction: 1}\n",
     "data.test_fraction: 1 is out of range; it must be a number > 0 and < 1"),
    ("image folder that does not exist", "data: {source: imagefolder, path: my_images/, root: data/mine}\n",
     "data.path: my_images/ does not exist (in the working directory {workflow}); give the image folder (one "
     "sub-folder of images per class)"),
    # your model, your weights: what would fail a job, found when the DAG is built
    ("python: model whose module cannot be found", "models: [python:my_nets:tiny_net]\n" + RATIO,
     "models: python:my_nets:tiny_net: no module my_nets (my_nets.py or my_nets/) in the working directory "
     "{workflow} or on the Python path; put my_nets.py in the working directory (where the jobs run), or add the "
     "folder that holds it to PYTHONPATH"),
    ("torchvision builder that does not exist", "models: [torchvision:resnet19]\n" + RATIO,
     "models: torchvision:resnet19: torchvision {tv} has no classification model resnet19; did you mean "
     "torchvision:resnet18? list them with python -c 'import torchvision; print(torchvision.models.list_models())'"),
    ("pretrained weights file that does not exist", "pretrained: {resnet20: weights/resnet20.pt}\n",
     "pretrained.resnet20: weights/resnet20.pt does not exist (in the working directory {workflow}); give the path "
     "of resnet20's weights file, or remove the entry to pretrain it"),
]

def needs_snakemake(test):
    """A test that runs Snakemake: skipped without it, and slow (not in the fast tier)."""
    skip = pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed beside this python")
    return pytest.mark.slow(skip(test))


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    """A copy of the workflow with the tiny configuration overlay."""
    return copy_workflow(tmp_path_factory.mktemp("workflow"), tiny=TINY)


def _snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(SNAKEMAKE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@needs_snakemake
@pytest.mark.parametrize("case, overlay, expected", WORKFLOW_CASES, ids=[c[0] for c in WORKFLOW_CASES])
def test_bad_workflow_configuration(case, overlay, expected, workflow):
    (workflow / "bad.yaml").write_text(overlay)
    proc = _snakemake(workflow, "-n", "--cores", "1", "--configfile", "config/test.yaml", "tiny.yaml", "bad.yaml")
    out = proc.stdout + proc.stderr
    if "{tv}" in expected:
        expected = expected.replace("{tv}", pytest.importorskip("torchvision").__version__)
    expected = expected.replace("{workflow}", str(workflow.resolve()))
    assert proc.returncode != 0
    assert expected in out.splitlines(), out[-3000:]
    assert "Traceback" not in out


@needs_snakemake
def test_a_pretrained_model_of_another_architecture_fails_its_jobs(workflow, files):
    """results/resnet20/pretrained.pt replaced by a resnet32: the trace job fails naming it."""
    proc = _snakemake(workflow, "data/synthetic/cifar-10-batches-py/icepick_synthetic.json", "--cores", "1",
                      "--configfile", "config/test.yaml", "tiny.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    target = workflow / "results/resnet20/pretrained.pt"
    target.parent.mkdir(parents=True)
    shutil.copy(files["m32"], target)
    proc = _snakemake(workflow, "results/resnet20/trace/r0.4/seed0.json", "--cores", "1", "--configfile", "config/test.yaml", "tiny.yaml",
                      "--rerun-triggers", "mtime")
    assert proc.returncode != 0
    assert "Error in rule trace" in proc.stdout + proc.stderr
    log = (workflow / "logs/resnet20/trace/r0.4/seed0.log").read_text()
    assert "Traceback" not in log
    assert _last_line(log) == (
        "icepick trace: error: pretrained: results/resnet20/pretrained.pt holds a resnet32 model, not resnet20 "
        "(--model); give the --model it was made for, or its own file")
    assert not (workflow / "results/resnet20/trace/r0.4/seed0.json").exists()


# CLI cases + library cases + workflow cases + the workflow's wrong-architecture case: recorded in the docs.
N_CASES = len(CLI_CASES) + len(API_CASES) + len(WORKFLOW_CASES) + 1


def test_the_documented_count_of_cases_is_current():
    doc = (REPO / "docs" / "reliability.md").read_text()
    assert f"**{N_CASES} bad-input cases**" in doc


def test_every_case_has_its_row_in_the_documented_table():
    """docs/reliability.md lists each case by name, in the order of the tests, numbered."""
    doc = (REPO / "docs" / "reliability.md").read_text()
    names = [name for name, _, _ in CLI_CASES + API_CASES + WORKFLOW_CASES]
    for number, name in enumerate(names, 1):
        assert f"| {number} | {name} |" in doc, f"docs/reliability.md has no row '| {number} | {name} |'"
