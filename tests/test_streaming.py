"""Data that does not fit in memory: a split over the data memory cap stays in its memory-mapped
``.npy`` file and is streamed a batch at a time, with the in-memory path's batches bit for bit,
and a run on it gives the in-memory run's records (decisions, accuracies, widths)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from itertools import zip_longest
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from icepick.cli import main
from icepick.config import ConfigError
from icepick.data import (
    DATA_MEMORY_SHARE,
    in_memory_data,
    load_experiment_data,
    load_split,
    memory_cap,
    parse_memory,
    plan_storage,
    split_validation,
    subset,
    train_batches,
    eval_batches,
)
from icepick.data.arrays import write_arrays
from icepick.data.augment import default_augmentation, describe
from icepick.data.manifest import FORMAT, channel_stats, write_manifest
from icepick.data.stream import prefetched, total_memory
from icepick.model_files import image_hashes, load_model, save_model

pytestmark = pytest.mark.usefixtures("one_thread")

TESTS = Path(__file__).resolve().parent
TIME_COLUMNS = ["t_prune", "t_test", "t_finetune", "t_step", "t_cumulative", "t_report"]
MODEL = "python:custom_cnn:tiny_net_any"


def npy_set(root: Path, n_train: int, n_test: int, size: int = 32, classes: int = 4, seed: int = 0) -> Path:
    """An import-format data set (uint8 ``.npy`` per split and its manifest) of generated images:
    each class a brightness band with noise (learnable in a few batches)."""
    rng = np.random.default_rng(seed)
    files, counts, stats = {}, {}, ((), ())
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % classes
        rng.shuffle(labels)
        base = (40 + (175 // max(classes - 1, 1)) * labels).astype(np.int16)[:, None, None, None]
        noise = rng.integers(-30, 31, (n, 3, size, size), dtype=np.int16)
        images = np.clip(base + noise, 0, 255).astype(np.uint8)
        files.update(write_arrays(root, split, images, labels))
        counts[split] = n
        if split == "train":
            stats = channel_stats(images)
    write_manifest(root, {
        "format": FORMAT, "source": "imagefolder", "origin": {"generated": "tests/test_streaming.py"},
        "classes": [f"c{i}" for i in range(classes)], "num_classes": classes, "layout": "npy",
        "image_shape": [3, size, size], "transform": [], "options": {}, "counts": counts,
        "split": {"kind": "given"}, "augmentation": describe(default_augmentation(size, size), size, size, True),
        "normalization": {"mean": list(stats[0]), "std": list(stats[1])}, "files": files})
    return root


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    """640 training and 200 test images of 3x32x32 (the CIFAR recipe's pad-and-crop)."""
    return npy_set(tmp_path_factory.mktemp("stream32"), 640, 200)


@pytest.fixture(scope="module")
def large_images(tmp_path_factory) -> Path:
    """200 training and 50 test images of 3x64x64 (random resized crops)."""
    return npy_set(tmp_path_factory.mktemp("stream64"), 200, 50, size=64, seed=1)


def _same_batches(a, b) -> None:
    count = 0
    for left, right in zip_longest(a, b):
        assert left is not None and right is not None, "one path gave more batches than the other"
        assert torch.equal(left[0], right[0]) and torch.equal(left[1], right[1]), f"batch {count} differs"
        count += 1
    assert count > 0


# ---------------------------------------------------------------- the same batches


@pytest.mark.parametrize("which", ["small_set", "large_images"])
def test_a_streamed_split_gives_the_in_memory_batches_bit_for_bit(request, which):
    root = request.getfixturevalue(which)
    memory, stream = load_split(root, "train", "cpu", "memory"), load_split(root, "train", "cpu", "stream")
    assert (memory.storage, stream.storage) == ("memory", "stream")
    assert stream.augmentation == memory.augmentation == default_augmentation(*memory.image_shape[1:])
    assert stream.image_shape == memory.image_shape and len(stream) == len(memory)
    for batch_size, drop_last, augment in ((64, False, True), (48, True, True), (100, False, False)):
        _same_batches(train_batches(memory, batch_size, seed=7, augment=augment, drop_last=drop_last),
                      train_batches(stream, batch_size, seed=7, augment=augment, drop_last=drop_last))
    _same_batches(eval_batches(memory, 128), eval_batches(stream, 128))
    _same_batches(eval_batches(memory, 1000), eval_batches(stream, 1000))


def test_held_out_and_subset_parts_of_a_streamed_split_stay_on_disk_and_give_the_same_batches(small_set):
    memory, stream = load_split(small_set, "train", "cpu", "memory"), load_split(small_set, "train", "cpu", "stream")
    (rest_m, val_m), (rest_s, val_s) = split_validation(memory, 100, 3), split_validation(stream, 100, 3)
    assert rest_s.storage == val_s.storage == "stream" and len(rest_s.images) == 540
    _same_batches(train_batches(rest_m, 64, seed=1), train_batches(rest_s, 64, seed=1))
    _same_batches(eval_batches(val_m, 32), eval_batches(val_s, 32))
    pick = torch.tensor([5, 3, 499, 0, 3, 17])  # any order, repeats
    part_m, part_s = subset(rest_m, pick), subset(rest_s, pick)
    assert torch.equal(part_s.images[:], part_m.images) and torch.equal(part_s.labels, part_m.labels)
    _same_batches(train_batches(part_m, 4, seed=2), train_batches(part_s, 4, seed=2))


def test_what_reads_every_image_gives_the_in_memory_numbers_on_a_streamed_split(small_set):
    memory, stream = load_split(small_set, "train", "cpu", "memory"), load_split(small_set, "train", "cpu", "stream")
    assert channel_stats(stream.images) == channel_stats(memory.images.numpy())
    assert np.array_equal(image_hashes(stream.images), image_hashes(memory.images))
    assert torch.equal(stream.images[::101], memory.images[::101])
    from_memory = in_memory_data(memory, memory, torch.device("cpu"), 4)
    from_stream = in_memory_data(stream, stream, torch.device("cpu"), 4)
    assert from_stream.info.digest == from_memory.info.digest
    assert from_stream.normalization == from_memory.normalization


def test_reading_ahead_keeps_the_order_whatever_the_threads_and_stopping_early_ends_them(small_set):
    images = load_split(small_set, "train", "cpu", "stream").images
    batches = [np.arange(i, 640, 7)[:50] for i in range(7)] + [slice(600, 640)]
    want = [images.read(b) for b in batches]
    for ahead, threads in ((0, 1), (1, 2), (4, 4)):
        got = list(prefetched(images, batches, ahead, threads))
        assert len(got) == len(want) and all(torch.equal(g, w) for g, w in zip(got, want))
    before = threading.active_count()
    stream = prefetched(images, batches, 2, 4)
    next(stream)
    stream.close()  # a fine-tuning halted early
    assert threading.active_count() == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("which", ["small_set", "large_images"])
def test_on_cuda_a_streamed_split_gives_the_in_memory_batches_bit_for_bit(request, which):
    """Pinned host batches copied on a side stream, the augmentation on the GPU: the same bytes."""
    root = request.getfixturevalue(which)
    memory, stream = load_split(root, "train", "cuda", "memory"), load_split(root, "train", "cuda", "stream")
    assert memory.images.is_cuda and stream.device.type == "cuda" and stream.storage == "stream"
    _same_batches(train_batches(memory, 64, seed=7), train_batches(stream, 64, seed=7))
    _same_batches(eval_batches(memory, 1000), eval_batches(stream, 1000))
    batch = next(iter(train_batches(stream, 64, seed=7)))
    assert batch[0].is_cuda and batch[1].is_cuda


# ---------------------------------------------------------------- the choice


def test_the_largest_splits_are_streamed_until_the_rest_fits_under_the_cap():
    sizes = {"train": 100, "test": 20, "val": 10}
    assert plan_storage(sizes, 130) == {"train": "memory", "test": "memory", "val": "memory"}
    assert plan_storage(sizes, 129) == {"train": "stream", "test": "memory", "val": "memory"}
    assert plan_storage(sizes, 15) == {"train": "stream", "test": "stream", "val": "memory"}
    assert plan_storage(sizes, 0) == {"train": "stream", "test": "stream", "val": "stream"}
    assert plan_storage(sizes, 0, streamable=[]) == {"train": "memory", "test": "memory", "val": "memory"}
    assert memory_cap("cpu", 12345) == 12345
    assert memory_cap("cpu") == int(DATA_MEMORY_SHARE * total_memory("cpu")) > 0


@pytest.mark.parametrize("text, value", [("8G", 8 * 2**30), ("512M", 512 * 2**20), ("0", 0), ("1.5k", 1536),
                                         ("2GiB", 2 * 2**30), ("auto", None), (None, None), (1000, 1000)])
def test_a_data_memory_setting_is_bytes_or_auto(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("text", ["lots", "-1", "8Q", -5])
def test_a_data_memory_that_is_no_size_is_named(text):
    with pytest.raises(ConfigError, match="data_memory"):
        parse_memory(text)


def test_a_split_over_the_cap_is_streamed_and_cifar_batches_are_held_in_memory(small_set, synth_root):
    assert load_split(small_set, "train", "cpu", data_memory=0).storage == "stream"
    assert load_split(small_set, "train", "cpu", data_memory=640 * 3 * 32 * 32).storage == "memory"
    assert load_split(small_set, "train", "cpu").storage == "memory"  # 2 MB: under any machine's default
    assert load_split(synth_root, "train", "cpu", data_memory=0).storage == "memory"  # cannot be memory-mapped
    with pytest.raises(ConfigError, match="cannot be streamed"):
        load_split(synth_root, "train", "cpu", "stream")
    data = load_experiment_data(small_set, torch.device("cpu"), data_memory=200 * 3 * 32 * 32)
    assert (data.train.storage, data.test.storage) == ("stream", "memory")
    assert data.info.record()["storage"] == "stream" and data.info.record()["streamed"] == ["train"]
    assert load_experiment_data(small_set, torch.device("cpu")).info.record()["storage"] == "memory"


# ---------------------------------------------------------------- a run


def _pretrained(root: Path, out: Path, epochs: int = 1) -> Path:
    """A tiny CNN trained briefly on ``root``'s training split (in memory), as a model file."""
    from icepick.models import build_model

    split = load_split(root, "train", "cpu", "memory")
    torch.manual_seed(0)
    model = build_model(MODEL, 4, input_shape=split.image_shape)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for epoch in range(epochs):
        for x, y in train_batches(split, 64, seed=epoch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    save_model(model.eval(), out)
    return out


def _cli_run(root: Path, pretrained: Path, out: Path, *extra: str) -> tuple[pd.DataFrame, dict]:
    args = ["run", "--pretrained", str(pretrained), "--data", str(root), "--max-steps", "3", "--theta", "0.5",
            "--max-batches", "4", "--batch-size", "32", "--decision-split", "val", "--val-size", "100",
            "--steps-out", str(out / "steps.csv"), "--summary-out", str(out / "summary.json"),
            "--model-out", str(out / "pruned.pt"), "--device", "cpu", "--no-progress", *extra]
    assert main(args) == 0
    return pd.read_csv(out / "steps.csv"), json.loads((out / "summary.json").read_text())


def _same_records(a: tuple[pd.DataFrame, dict], b: tuple[pd.DataFrame, dict], pruned: tuple[Path, Path]) -> None:
    pd.testing.assert_frame_equal(a[0].drop(columns=TIME_COLUMNS), b[0].drop(columns=TIME_COLUMNS))
    for key in ("acc_orig", "final_acc", "n_finetunes", "final_params", "final_macs", "final_alpha",
                "total_train_macs", "decision_correct_orig"):
        if key in a[1] or key in b[1]:
            assert a[1].get(key) == b[1].get(key), key
    (ma, _), (mb, _) = load_model(pruned[0]), load_model(pruned[1])
    sa, sb = ma.state_dict(), mb.state_dict()
    assert {k: tuple(v.shape) for k, v in sa.items()} == {k: tuple(v.shape) for k, v in sb.items()}  # widths
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_run_over_the_data_memory_cap_streams_and_gives_the_in_memory_records(small_set, tmp_path):
    pretrained = _pretrained(small_set, tmp_path / "pretrained.pt")
    memory = _cli_run(small_set, pretrained, tmp_path / "memory")
    stream = _cli_run(small_set, pretrained, tmp_path / "stream", "--data-memory", "0")
    assert memory[1]["provenance"]["data"]["storage"] == "memory"
    assert stream[1]["provenance"]["data"]["storage"] == "stream"
    assert stream[1]["provenance"]["data"]["streamed"] == ["train", "test"]
    assert stream[0]["finetuned"].any(), "no fine-tuning: the training batches were not exercised"
    _same_records(memory, stream, (tmp_path / "memory" / "pruned.pt", tmp_path / "stream" / "pruned.pt"))


def test_a_data_memory_that_is_no_size_stops_the_run_with_one_line(small_set, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", "--pretrained", str(tmp_path / "none.pt"), "--data", str(small_set), "--data-memory", "lots",
              "--steps-out", "s.csv", "--summary-out", "s.json", "--model-out", "m.pt"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--data-memory" in err and "8G" in err


# ---------------------------------------------------------------- under a memory limit

#: The child: measures what a streamed run itself needs (a run on a small set, the same image size,
#: model and settings), limits its data segment (RLIMIT_DATA: heap and private writable mappings,
#: not a read-only file mapping) to that plus LIMIT_HEADROOM, shows that the large set's training
#: split can no longer be read into memory, and runs on the large set streamed.
CHILD = r"""
import json, resource, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from icepick.algorithm import RunConfig, run_experiment
from icepick.data import load_experiment_data, load_split
from icepick.finetune import FinetuneConfig

def data_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024

warm, large, pretrained, out, storage, headroom = sys.argv[1:7]
cfg = RunConfig(max_steps=3, theta=-100.0, decision_split="val", val_size=100, eval_cache=False,
                finetune=FinetuneConfig(batch_size=32, max_batches=4, early_halt=0))
memory = None if storage == "memory" else 0
def run(root, folder):
    data = load_experiment_data(root, torch.device("cpu"), cfg.decision_split, cfg.val_size, data_memory=memory)
    folder = Path(folder)
    run_experiment(cfg, pretrained, data, folder / "steps.csv", folder / "summary.json", folder / "pruned.pt",
                   show_progress=False)
run(warm, out + "_warm")  # what torch and a run need, at this size
need = data_bytes()
report = {"need": need}
if storage == "stream":
    limit = need + int(headroom)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        load_split(large, "train", "cpu", "memory")
        report["loaded"] = True
    except MemoryError:
        report["loaded"] = False
run(large, out)
report["after"] = data_bytes()
print(json.dumps(report))
"""

LIMIT_HEADROOM = 48 * 2**20  # bytes of data segment over what the small run needed


@pytest.mark.slow
def test_a_split_that_cannot_be_read_into_memory_under_a_limit_is_streamed_with_the_same_records(tmp_path):
    warm = npy_set(tmp_path / "warm", 600, 300, seed=2)
    large = npy_set(tmp_path / "large", 40_000, 300, seed=3)  # 118 MiB of training images
    assert 40_000 * 3 * 32 * 32 > 2 * LIMIT_HEADROOM
    pretrained = _pretrained(warm, tmp_path / "pretrained.pt")
    reports = {}
    for storage in ("memory", "stream"):
        done = subprocess.run([sys.executable, "-c", CHILD, str(warm), str(large), str(pretrained),
                               str(tmp_path / storage), storage, str(LIMIT_HEADROOM)],
                              capture_output=True, text=True, cwd=TESTS, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        reports[storage] = json.loads(done.stdout.strip().splitlines()[-1])
    report = reports["stream"]
    assert report["loaded"] is False, f"the training split fit under the limit: {report}"
    assert report["after"] <= report["need"] + LIMIT_HEADROOM
    summaries = {s: json.loads((tmp_path / s / "summary.json").read_text()) for s in reports}
    assert summaries["stream"]["provenance"]["data"]["storage"] == "stream"
    assert summaries["memory"]["provenance"]["data"]["storage"] == "memory"
    steps = {s: pd.read_csv(tmp_path / s / "steps.csv") for s in reports}
    assert steps["stream"]["finetuned"].any()
    _same_records((steps["memory"], summaries["memory"]), (steps["stream"], summaries["stream"]),
                  (tmp_path / "memory" / "pruned.pt", tmp_path / "stream" / "pruned.pt"))


# ---------------------------------------------------------------- the benchmark


def test_the_streaming_benchmark_measures_every_path_and_the_consumer(tmp_path):
    if str(TESTS.parent) not in sys.path:  # the benchmarks package lives beside icepick/
        sys.path.insert(0, str(TESTS.parent))
    from benchmarks.streaming import main as benchmark

    assert benchmark(["--sizes", "16", "--images", "300", "--batch-size", "64", "--batches", "2", "--repeats", "1",
                      "--read-threads", "1,2", "--model", "resnet20", "--consumer-shape", "3x16x16",
                      "--consumer-batch-size", "16", "--consumer-batches", "1", "--device", "cpu",
                      "--workdir", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    figures = json.loads((tmp_path / "out" / "streaming.json").read_text())
    rates = figures["sizes"]["16"]["images_per_s"]
    assert set(rates) == {"read cold, 1 thread", "read warm, 1 thread", "read cold, 2 threads", "read warm, 2 threads",
                          "stream (gather, augment, normalise)", "memory (augment, normalise)"}
    assert all(r[clock]["min"] > 0 for r in rates.values() for clock in ("wall", "cpu"))
    assert figures["consumer"]["images_per_s"]["wall"]["min"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the image files are gone


def test_reading_rows_out_of_range_is_an_index_error_and_negative_rows_count_from_the_end(small_set):
    memory, stream = load_split(small_set, "train", "cpu", "memory"), load_split(small_set, "train", "cpu", "stream")
    assert torch.equal(stream.images[torch.tensor([-1, 0, -640])], memory.images[torch.tensor([-1, 0, -640])])
    part = subset(stream, torch.tensor([9, 8, 7]))
    assert torch.equal(part.images.read(np.array([-1, 0])), memory.images[torch.tensor([7, 9])])
    for bad in ([640], [-641]):
        with pytest.raises(IndexError):
            stream.images[torch.tensor(bad)]
    with pytest.raises(IndexError):
        part.images.read(np.array([3]))
