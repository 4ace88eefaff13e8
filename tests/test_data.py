"""icepick.data: the CIFAR-10 readers (real and generated) and the device-resident iterators."""

from __future__ import annotations

import json
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from icepick import data
from icepick.config import ConfigError
from icepick.data import (
    BASE_FOLDER,
    CIFAR10_MEAN,
    CIFAR10_STD,
    MARKER,
    DataIntegrityError,
    DestinationError,
    Split,
    eval_batches,
    fetch_cifar10,
    load_cifar10,
    num_train_batches,
    split_validation,
    synth_cifar10,
    train_batches,
)

from conftest import SYNTH_TEST, SYNTH_TRAIN

MEAN = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)


def _copy(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def _denormalize(x: torch.Tensor) -> torch.Tensor:
    """Normalised float images back to uint8 (exact up to rounding)."""
    return ((x * STD + MEAN) * 255.0).round().clamp(0, 255).to(torch.uint8)


def _id_split(n: int = 200, seed: int = 0) -> Split:
    """Random images whose label is the sample's index (to track samples through an epoch)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return Split(images, torch.arange(n, dtype=torch.int64))


# ------------------------------------------------------------------------------------------
# On disk
# ------------------------------------------------------------------------------------------


def test_generated_set_loads_with_cifar_shapes(synth_root):
    for train, n in ((True, SYNTH_TRAIN), (False, SYNTH_TEST)):
        images, labels = load_cifar10(synth_root, train=train)
        assert images.shape == (n, 3, 32, 32) and images.dtype == torch.uint8
        assert images.is_contiguous()
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert labels.min() >= 0 and labels.max() <= 9
        assert torch.bincount(labels, minlength=10).min() > 0  # every class present
        assert images.float().std() > 20  # real content, not a constant


def test_generated_set_has_the_cifar_file_layout(synth_root):
    base = synth_root / BASE_FOLDER
    names = {p.name for p in base.iterdir()}
    assert names == {f"data_batch_{i}" for i in range(1, 6)} | {"test_batch", "batches.meta", MARKER}
    marker = json.loads((base / MARKER).read_text())
    assert set(marker["files"]) == names - {MARKER}
    assert (marker["n_train"], marker["n_test"], marker["seed"]) == (SYNTH_TRAIN, SYNTH_TEST, 0)


def test_our_reader_reads_what_torchvisions_cifar10_reads(synth_root, monkeypatch):
    """Same files, same arrays: torchvision's CIFAR10 (md5 lists set to the generated set's) and ours."""
    files = json.loads((synth_root / BASE_FOLDER / MARKER).read_text())["files"]
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "train_list", [[f"data_batch_{i}", files[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "test_list", [["test_batch", files["test_batch"]]])
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": files["batches.meta"]})
    for train in (True, False):
        ds = torchvision.datasets.CIFAR10(str(synth_root), train=train)
        images, labels = load_cifar10(synth_root, train=train)
        assert torch.equal(images, torch.from_numpy(ds.data).permute(0, 3, 1, 2))
        assert labels.tolist() == list(ds.targets)
    assert ds.classes[0] == "airplane"


def test_official_md5_sums_are_torchvisions():
    cifar = torchvision.datasets.CIFAR10
    expected = dict(cifar.train_list + cifar.test_list + [[cifar.meta["filename"], cifar.meta["md5"]]])
    assert data.OFFICIAL_MD5 == expected


def test_loading_does_not_import_torchvision(synth_root):
    """torchvision's import is seconds of every job's start-up; only the download needs it."""
    import subprocess
    import sys

    code = (
        "import sys; from icepick.data import load_split; "
        f"load_split({str(synth_root)!r}, 'train'); print('torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_generation_is_deterministic_by_seed(tmp_path):
    a = synth_cifar10(tmp_path / "a", 40, 20, seed=3)
    b = synth_cifar10(tmp_path / "b", 40, 20, seed=3)
    c = synth_cifar10(tmp_path / "c", 40, 20, seed=4)
    files = [json.loads((p / MARKER).read_text())["files"] for p in (a, b, c)]
    assert files[0] == files[1]
    assert files[0]["test_batch"] != files[2]["test_batch"]
    assert files[0]["data_batch_1"] != files[2]["data_batch_1"]


def test_damaged_generated_file_is_detected(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    path = root / BASE_FOLDER / "data_batch_3"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataIntegrityError, match="data_batch_3") as info:
        load_cifar10(root, train=True)
    assert "data synth" in str(info.value)  # says how to recover
    assert "--seed 0 --difficulty standard`" in str(info.value)  # ... with the marker's every setting


def test_the_regeneration_command_names_the_difficulty(tmp_path):
    synth_cifar10(tmp_path, 20, 10, seed=2, difficulty="easy")
    (tmp_path / BASE_FOLDER / "test_batch").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(tmp_path, train=False)
    assert f"`python -m icepick data synth --out {tmp_path} --train 20 --test 10 --seed 2 --difficulty easy`" in str(info.value)


def test_missing_generated_file_is_named(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    (root / BASE_FOLDER / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(root, train=False)


def test_generated_files_without_marker_fail_the_official_md5_check(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path)
    (root / BASE_FOLDER / MARKER).unlink()
    with pytest.raises(DataIntegrityError, match="official CIFAR-10") as info:
        load_cifar10(root, train=True)
    assert str(root / BASE_FOLDER) in str(info.value)
    # torchvision's own class keeps refusing them too
    with pytest.raises(RuntimeError):
        torchvision.datasets.CIFAR10(str(root), train=True)


def test_missing_real_data_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(tmp_path, train=True, download=False)
    message = str(info.value)
    assert str(tmp_path / BASE_FOLDER) in message
    assert str(tmp_path / "cifar-10-python.tar.gz") in message
    assert "c58f30108f718f92721af3b95e74349a" in message


def test_failed_download_says_what_to_place_where(tmp_path, monkeypatch):
    def offline(self):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(FileNotFoundError) as info:
        fetch_cifar10(tmp_path)
    message = str(info.value)
    assert "download failed" in message and "no network in this test" in message
    assert str(tmp_path / "cifar-10-python.tar.gz") in message
    assert str(tmp_path / BASE_FOLDER / "data_batch_1") in message


def test_fetch_refuses_a_generated_folder(synth_root):
    with pytest.raises(DestinationError, match="generated") as info:
        fetch_cifar10(synth_root)
    assert "--force" in str(info.value)


def test_synth_rejects_bad_sizes(tmp_path):
    with pytest.raises(ConfigError, match="n_train"):
        synth_cifar10(tmp_path, 5, 20, 0)


# ------------------------------------------------------------------------------------------
# Splits
# ------------------------------------------------------------------------------------------


def test_split_basics(synth_splits):
    train, test = synth_splits
    assert len(train) == SYNTH_TRAIN and len(test) == SYNTH_TEST
    assert train.to("cpu") is train
    with pytest.raises(ValueError, match="uint8"):
        Split(train.images.float(), train.labels)


def test_split_validation_is_deterministic_and_disjoint():
    split = _id_split(100)
    rest, val = split_validation(split, 30, seed=1)
    rest2, val2 = split_validation(split, 30, seed=1)
    _, val3 = split_validation(split, 30, seed=2)
    assert len(rest) == 70 and len(val) == 30
    assert torch.equal(val.labels, val2.labels) and torch.equal(rest.labels, rest2.labels)
    assert not torch.equal(val.labels, val3.labels)
    ids = torch.cat([rest.labels, val.labels]).sort().values
    assert torch.equal(ids, torch.arange(100))
    assert torch.equal(val.images, split.images[val.labels])
    with pytest.raises(ConfigError, match="n_val"):
        split_validation(split, 100, seed=0)


# ------------------------------------------------------------------------------------------
# Iterators
# ------------------------------------------------------------------------------------------


def _epoch(split, **kw):
    return [(x.clone(), y.clone()) for x, y in train_batches(split, **kw)]


def test_train_batches_are_deterministic_by_seed_and_differ_across_seeds():
    split = _id_split()
    a, b, c = _epoch(split, batch_size=64, seed=5), _epoch(split, batch_size=64, seed=5), _epoch(split, batch_size=64, seed=6)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1])


def test_every_sample_appears_once_per_epoch():
    split = _id_split(200)
    batches = _epoch(split, batch_size=64, seed=0)
    assert len(batches) == num_train_batches(split, 64) == 4
    assert [len(y) for _, y in batches] == [64, 64, 64, 8]
    assert torch.equal(torch.cat([y for _, y in batches]).sort().values, torch.arange(200))
    dropped = _epoch(split, batch_size=64, seed=0, drop_last=True)
    assert len(dropped) == num_train_batches(split, 64, drop_last=True) == 3
    assert len(torch.cat([y for _, y in dropped]).unique()) == 192


def test_batches_are_float_nchw_and_honour_memory_format():
    split = _id_split(50)
    x, y = next(train_batches(split, batch_size=16))
    assert x.dtype == torch.float32 and x.shape == (16, 3, 32, 32) and x.is_contiguous()
    assert y.dtype == torch.int64
    x_cl, _ = next(train_batches(split, batch_size=16, memory_format=torch.channels_last))
    assert x_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x_cl, x)


def test_crop_and_flip_are_a_shift_and_mirror_of_the_padded_original():
    split = _id_split(128)
    x, ids = next(train_batches(split, batch_size=128, seed=11))
    out = _denormalize(x)
    padded = torch.zeros(128, 3, 40, 40, dtype=torch.uint8)
    padded[:, :, 4:36, 4:36] = split.images[ids]
    seen = set()
    for i in range(128):
        matches = [
            (oy, ox, flip)
            for oy in range(9)
            for ox in range(9)
            for flip in (False, True)
            if torch.equal(out[i], (lambda c: c.flip(-1) if flip else c)(padded[i, :, oy : oy + 32, ox : ox + 32]))
        ]
        assert matches, f"sample {i} is not a crop/flip of its original"
        seen.add(matches[0][2])
        seen.add(matches[0][:2])
    assert {True, False} <= seen  # both flipped and unflipped samples
    assert len(seen) > 20  # many different offsets


def test_no_augmentation_gives_the_original_images():
    split = _id_split(64)
    for x, ids in train_batches(split, batch_size=32, seed=2, augment=False):
        assert torch.equal(_denormalize(x), split.images[ids])


def test_eval_batches_are_in_order_and_not_augmented(synth_splits):
    _, test = synth_splits
    xs, ys = zip(*eval_batches(test, batch_size=50))
    assert [len(y) for y in ys] == [50, 50, 28]
    assert torch.equal(torch.cat(ys), test.labels)
    assert torch.equal(_denormalize(torch.cat(xs)), test.images)


def test_normalisation_uses_the_cifar10_statistics(synth_splits):
    _, test = synth_splits
    x = torch.cat([b for b, _ in eval_batches(test)])
    expected = (test.images.float() / 255.0 - MEAN) / STD
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=1e-5)
    # an image at the CIFAR-10 mean maps to (about) zero
    flat = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    img = data.normalize((flat * 255).round().to(torch.uint8))
    assert img.abs().max() < 0.01
