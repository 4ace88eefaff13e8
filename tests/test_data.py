"""icepick.data: the readers (real and generated CIFAR-10), images from the user, the augmentation
that suits each image size, and the device-resident iterators."""

from __future__ import annotations

import json
import shutil
import urllib.error
from pathlib import Path

import numpy as np
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


# ------------------------------------------------------------------------------------------
# Images from the user: arrays, tensors, Datasets
# ------------------------------------------------------------------------------------------


class _Items(torch.utils.data.Dataset):
    """A Dataset of ``(image, label)`` pairs held in a list."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def _uint8(n: int = 6, c: int = 3, h: int = 8, w: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_as_uint8_images_takes_nchw_nhwc_and_grey_arrays_and_tensors():
    from icepick.data.split import as_uint8_images

    x = _uint8()
    assert torch.equal(as_uint8_images(x), x) and torch.equal(as_uint8_images(x.numpy()), x)
    nhwc = x.permute(0, 2, 3, 1).numpy().copy()  # NumPy's order, as torchvision's CIFAR10.data
    out = as_uint8_images(nhwc)
    assert torch.equal(out, x) and out.is_contiguous()
    grey = x[:, 0].numpy()  # [N, H, W]
    assert torch.equal(as_uint8_images(grey), x[:, :1])
    assert torch.equal(as_uint8_images(x.long()), x)  # integers 0..255
    with pytest.raises(ValueError, match=r"images: integer values must lie in 0..255 \(min -1, max 255\)"):
        as_uint8_images(x.long() - (x.long() == 0).long())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_float_images_in_0_1_are_the_uint8_they_came_from(dtype):
    from icepick.data.split import as_uint8_images

    x = _uint8(seed=1)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0, 255
    assert torch.equal(as_uint8_images(x.to(dtype) / 255), x)
    assert torch.equal(as_uint8_images((x.numpy() / 255.0).astype(np.float32)), x)
    assert torch.equal(as_uint8_images(x.permute(0, 2, 3, 1).numpy() / 255.0), x)  # NHWC floats


@pytest.mark.parametrize("images, found", [
    (lambda x: x.float(), r"min 0, max 255"),  # 0..255 floats
    (lambda x: (x.float() / 255 - 0.5) / 0.25, r"min -2, max 2"),  # normalised
    (lambda x: x.float() / 255 + 1e-3, r"min 0.001, max 1"),  # barely out
])
def test_floats_outside_0_1_are_refused_not_clamped(images, found):
    from icepick.data.split import as_split, as_uint8_images

    x = _uint8(seed=2)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0, 255
    for call in (lambda: as_uint8_images(images(x)), lambda: as_split((images(x), torch.zeros(6)))):
        with pytest.raises(ValueError, match=r"images: float images must hold values in 0..1 \(" + found) as info:
            call()
        assert "\n" not in str(info.value) and "normalize=" in str(info.value)
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_uint8_images(torch.full((1, 1, 2, 2), float("nan")))


def test_as_split_of_a_dataset_of_pil_images():
    from PIL import Image

    from icepick.data.split import as_split

    x = _uint8(n=4, seed=3)
    rgb = _Items([(Image.fromarray(img.permute(1, 2, 0).numpy()), i % 2) for i, img in enumerate(x)])
    split = as_split(rgb)
    assert torch.equal(split.images, x) and split.labels.tolist() == [0, 1, 0, 1]
    np.testing.assert_allclose(split.mean, (x.double() / 255).mean(dim=(0, 2, 3)).numpy(), atol=1e-6)
    grey = _Items([(Image.fromarray(img[0].numpy(), mode="L"), 1) for img in x])
    assert torch.equal(as_split(grey).images, x[:, :1])
    # a palette image is its colours, not its palette indices; a 1-bit image is black and white
    palette = Image.fromarray(x[0].permute(1, 2, 0).numpy()).convert("P")
    colours = torch.from_numpy(np.asarray(palette.convert("RGB")).copy()).permute(2, 0, 1)
    assert torch.equal(as_split(_Items([(palette, 0)])).images[0], colours)
    bits = Image.fromarray(x[0, 0].numpy()).convert("1")
    assert set(as_split(_Items([(bits, 0)])).images.unique().tolist()) <= {0, 255}
    # arrays and tensors in a Dataset, and a plain list of two pairs (not an (images, labels) tuple)
    assert torch.equal(as_split(_Items([(img, 0) for img in x])).images, x)
    assert torch.equal(as_split(_Items([(img.permute(1, 2, 0).numpy(), 0) for img in x])).images, x)
    pairs = as_split([(x[0], 0), (x[1], 1)])
    assert torch.equal(pairs.images, x[:2]) and pairs.labels.tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"data: the Dataset's images differ in shape"):
        as_split(_Items([(x[0], 0), (x[0, :, :4], 1)]))


def test_as_split_labels_are_class_indices():
    from icepick.data.split import as_split

    x = _uint8(n=3)
    assert as_split((x, np.array([0.0, 2.0, 1.0]))).labels.tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="labels: they hold fractional values; give class indices"):
        as_split((x, np.array([0.5, 1.7, 2.0])))
    with pytest.raises(ValueError, match=r"labels: \(2,\) is not one label per image \(3 images\)"):
        as_split((x, [0, 1]))


def test_normalize_without_statistics_is_a_scaling_to_0_1():
    x = _uint8()
    torch.testing.assert_close(data.normalize(x, mean=None, std=None), x.float() / 255, rtol=0, atol=1e-7)
    split = Split(x, torch.zeros(6, dtype=torch.int64), mean=None, std=None)
    out = torch.cat([b for b, _ in eval_batches(split)])
    torch.testing.assert_close(out, x.float() / 255, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="both be given or both be None"):
        Split(x, torch.zeros(6, dtype=torch.int64), mean=(0.5, 0.5, 0.5), std=None)
    with pytest.raises(ValueError, match=r"must be 3 number\(s\), one per channel"):
        Split(x, torch.zeros(6, dtype=torch.int64), mean=(0.5,), std=(0.2,))


def test_experiment_data_normalisation_none_or_given(synth_root):
    from icepick.data import load_experiment_data, resolve_normalization

    cpu = torch.device("cpu")
    plain = load_experiment_data(synth_root, cpu, normalization=None)
    assert plain.train.mean is None and plain.normalization is None
    x, _ = next(eval_batches(plain.test, batch_size=8))
    torch.testing.assert_close(x, plain.test.images[:8].float() / 255, rtol=0, atol=1e-7)
    given = load_experiment_data(synth_root, cpu, normalization={"mean": [0.5] * 3, "std": [0.25] * 3})
    assert given.normalization == {"mean": [0.5] * 3, "std": [0.25] * 3} and given.decision.mean == (0.5,) * 3
    with pytest.raises(ConfigError, match=r"normalize: mean \[0.5\] and std \[0.25\] must be 3 number\(s\) each"):
        resolve_normalization(([0.5], [0.25]), None, None, 3)


# ------------------------------------------------------------------------------------------
# Augmentation by image size
# ------------------------------------------------------------------------------------------


def test_pad_crop_at_32px_is_byte_identical_to_the_old_cifar_recipe():
    """The code before images could have any size: order, then offsets randint(0, 9, (2, n)), then
    flips randint(0, 2, (n,)) from one generator; a crop of the image zero-padded by 4, mirrored."""
    split = Split(_uint8(n=70, h=32, w=32, seed=4), torch.arange(70) % 10, flip=True)
    for seed in (0, 7):
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(70, generator=gen)
        offsets = torch.randint(0, 9, (2, 70), generator=gen)
        flips = torch.randint(0, 2, (70,), generator=gen).bool()
        padded = torch.nn.functional.pad(split.images, (4, 4, 4, 4))
        expected = []
        for p, i in enumerate(order.tolist()):
            oy, ox = int(offsets[0, p]), int(offsets[1, p])
            crop = padded[i, :, oy:oy + 32, ox:ox + 32]
            expected.append(crop.flip(-1) if flips[p] else crop)
        expected = torch.stack(expected)
        got = list(train_batches(split, batch_size=32, seed=seed))
        assert torch.equal(torch.cat([y for _, y in got]), split.labels[order])
        for b, (x, _) in enumerate(got):
            assert torch.equal(x, data.normalize(expected[32 * b:32 * (b + 1)]))  # the very same floats


def test_pad_crop_at_28px_pads_by_4_and_at_64px_by_8():
    from icepick.data import augment

    assert augment.crop_padding(28, 28) == 4 and augment.crop_padding(32, 32) == 4
    assert augment.crop_padding(64, 64) == 8 and augment.crop_padding(8, 8) == 1
    assert augment.describe("pad_crop", 28, 28, False) == {"kind": "pad_crop", "padding": 4, "flip": False}
    assert augment.default_augmentation(28, 28) == "pad_crop" and augment.default_augmentation(63, 200) == "pad_crop"
    assert augment.default_augmentation(64, 64) == "random_resized_crop"
    images = _uint8(n=40, c=1, h=28, w=28, seed=5)
    params = augment.draw("pad_crop", 40, 28, 28, True, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert int(params["oy"].min()) == 0 and int(params["oy"].max()) == 8  # 2 * 4 + 1 offsets
    out = augment.apply("pad_crop", images, params)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(40):
        oy, ox = int(params["oy"][i]), int(params["ox"][i])
        crop = padded[i, :, oy:oy + 28, ox:ox + 28]
        assert torch.equal(out[i], crop.flip(-1) if params["flip"][i] else crop)


def _rrc(images: torch.Tensor, seed: int, flip: bool = True):
    from icepick.data import augment

    _, _, h, w = images.shape
    params = augment.draw("random_resized_crop", len(images), h, w, flip, torch.Generator().manual_seed(seed),
                          images.device)
    return params, augment.apply("random_resized_crop", images, params)


def test_random_resized_crop_is_deterministic_by_seed_and_within_the_images_values():
    images = _uint8(n=16, h=64, w=80, seed=6)
    images[3] = 77  # a constant image stays constant
    images[4] = images[4] // 4 + 100  # values 100..163
    (p1, a), (p2, b), (_, c) = _rrc(images, 1), _rrc(images, 1), _rrc(images, 2)
    assert all(torch.equal(p1[k], p2[k]) for k in p1) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (16, 3, 64, 80) and a.is_floating_point()
    lo = images.flatten(1).min(1).values.float().view(-1, 1, 1, 1)
    hi = images.flatten(1).max(1).values.float().view(-1, 1, 1, 1)
    assert bool((a >= lo - 1e-3).all()) and bool((a <= hi + 1e-3).all())
    torch.testing.assert_close(a[3], torch.full_like(a[3], 77.0))
    assert bool(((p1["w"] >= 1) & (p1["w"] <= 80) & (p1["x0"] >= 0) & (p1["x0"] + p1["w"] <= 80 + 1e-9)).all())
    assert bool(((p1["h"] >= 1) & (p1["h"] <= 64) & (p1["y0"] >= 0) & (p1["y0"] + p1["h"] <= 64 + 1e-9)).all())
    area = p1["w"] * p1["h"] / (64 * 80)
    assert float(area.min()) >= 0.08 * 0.99 and float(area.max()) <= 1.0
    _, no_flip = _rrc(images, 1, flip=False)
    assert not torch.equal(no_flip, a)  # same boxes, some mirrored
    p3, _ = _rrc(images, 1, flip=False)
    assert torch.equal(p3["w"], p1["w"]) and not p3["flip"].any()  # the boxes do not depend on the flip setting


def test_random_resized_crop_of_the_whole_image_is_the_image_and_flips_mirror():
    from icepick.data import augment

    # float32 sampling grids: within 0.01 of a grey level, far below the 1 that rounding to uint8 would hide
    images = _uint8(n=5, h=64, w=72, seed=7)
    whole = {"x0": torch.zeros(5, dtype=torch.float64), "y0": torch.zeros(5, dtype=torch.float64),
             "w": torch.full((5,), 72.0, dtype=torch.float64), "h": torch.full((5,), 64.0, dtype=torch.float64),
             "flip": torch.zeros(5, dtype=torch.bool)}
    out = augment.apply("random_resized_crop", images, whole)
    torch.testing.assert_close(out, images.float(), rtol=0, atol=0.01)
    mirrored = augment.apply("random_resized_crop", images, {**whole, "flip": torch.tensor([True, False] * 2 + [True])})
    torch.testing.assert_close(mirrored[0], images[0].flip(-1).float(), rtol=0, atol=0.01)
    torch.testing.assert_close(mirrored[1], images[1].float(), rtol=0, atol=0.01)
    # a box of the left half, mirrored, is the mirror of the left half (upscaled) too
    half = {**whole, "w": torch.full((5,), 36.0, dtype=torch.float64)}
    a = augment.apply("random_resized_crop", images, half)
    b = augment.apply("random_resized_crop", images, {**half, "flip": torch.ones(5, dtype=torch.bool)})
    torch.testing.assert_close(b, a.flip(-1), rtol=0, atol=0.01)


def test_a_64px_split_trains_with_random_resized_crops():
    split = Split(_uint8(n=20, h=64, w=64, seed=8), torch.arange(20) % 10)
    assert split.augmentation == "random_resized_crop"
    a = _epoch(split, batch_size=8, seed=3)
    b = _epoch(split, batch_size=8, seed=3)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert a[0][0].shape == (8, 3, 64, 64) and len(a) == 3
    plain = Split(split.images, split.labels, augmentation="pad_crop")  # the choice can be overridden
    assert next(train_batches(plain, batch_size=4))[0].shape == (4, 3, 64, 64)
    with pytest.raises(ConfigError, match="augmentation"):
        Split(split.images, split.labels, augmentation="cutout")


# ------------------------------------------------------------------------------------------
# A model and its data
# ------------------------------------------------------------------------------------------


def test_check_classes_refuses_a_model_for_another_image_shape():
    from icepick.data import DatasetInfo, check_classes

    info = DatasetInfo("imagefolder", 10, tuple(map(str, range(10))), 100, 20, True, (0.5,), (0.25,), "d" * 64,
                       image_shape=(1, 28, 28))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    check_classes(model, info, "m.pt")  # no input_shape attribute: nothing to check
    model.num_classes, model.input_shape = 10, (1, 28, 28)
    check_classes(model, info, "m.pt")
    model.input_shape = (3, 32, 32)
    with pytest.raises(ConfigError, match=r"pretrained: m.pt takes 3x32x32 images but the imagefolder data set holds "
                                          r"1x28x28 ones; import the data at the model's size \(--size, --channels\)"):
        check_classes(model, info, "m.pt")
    model.input_shape, model.num_classes = (1, 28, 28), 100
    with pytest.raises(ConfigError, match="pretrained: m.pt has 100 classes but the imagefolder data set has 10"):
        check_classes(model, info, "m.pt")
