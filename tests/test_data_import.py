"""icepick.data's imports (``icepick data import``), the manifest, the reader's checks and the
output-folder guard.

CIFAR-10 and CIFAR-100 are imported from files this module writes in their real on-disk
formats (CIFAR-10's pickled batches with bytes keys, as Python 2 wrote them; CIFAR-100's
``train``/``test``/``meta`` with ``fine_labels``), Fashion-MNIST and MNIST from IDX files it
writes byte by byte (gzipped or not), image folders from PNG and JPEG files it writes, all
through the real code path, with their md5 list passed in place of the official one.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from icepick.cli import main
from icepick.config import ConfigError
from icepick.data import (
    BASE_FOLDER,
    CIFAR10_MEAN,
    CIFAR10_STD,
    FORMAT,
    MANIFEST,
    MARKER,
    OFFICIAL_MD5,
    DataIntegrityError,
    DataSourceError,
    DestinationError,
    IncompleteDataError,
    Split,
    dataset_info,
    fetch_cifar10,
    import_dataset,
    load_experiment_data,
    load_split,
    official_digest,
    stratified_split,
    synth_cifar10,
    train_batches,
)
from icepick.data.arrays import array_files
from icepick.data.layout import md5

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def _numpy_stats(images: np.ndarray, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 images (rows of 3072 or [N, C, H, W]) on 0..1 values."""
    x = np.asarray(images).reshape(len(images), channels, -1).astype(np.float64) / 255.0
    return x.mean(axis=(0, 2)), x.std(axis=(0, 2))


def _png_folder(root: Path, per_class: dict[str, int], h: int, w: int, grey: bool = False, seed: int = 0) -> dict:
    """One class folder of PNG images of one size per class; returns {class: uint8 [n, C, h, w]} in file order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arrays = {}
    for name, n in per_class.items():
        folder = root / name
        folder.mkdir(parents=True)
        shape = (n, h, w) if grey else (n, h, w, 3)
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        for i, image in enumerate(images):
            Image.fromarray(image, mode="L" if grey else "RGB").save(folder / f"img{i:03d}.png")
        arrays[name] = images[:, None] if grey else images.transpose(0, 3, 1, 2)
    return arrays


def _uint8(split: Split) -> np.ndarray:
    return split.images.numpy()


def _by_label(split: Split, arrays: dict, classes: tuple) -> None:
    """Every image of ``split`` is one of its class's source images, and no source image is used twice."""
    seen = set()
    for image, label in zip(_uint8(split), split.labels.tolist()):
        candidates = arrays[classes[label]]
        hits = [i for i in range(len(candidates)) if np.array_equal(candidates[i], image)]
        assert len(hits) == 1, "not one of its class's images"
        assert (label, hits[0]) not in seen
        seen.add((label, hits[0]))


# ---------------------------------------------------------------- inputs in their real formats


@pytest.fixture(scope="module")
def cifar10_src(tmp_path_factory) -> dict:
    """A CIFAR-10-format folder (bytes keys, as Python 2's pickles), its arrays and md5 list."""
    root = tmp_path_factory.mktemp("cifar10_src")
    base = root / BASE_FOLDER
    base.mkdir()
    rng = np.random.default_rng(10)
    train_x, test_x = _rows(rng, 60), _rows(rng, 20)
    train_y, test_y = np.arange(60) % 10, rng.permutation(np.arange(20) % 10)
    for i in range(5):
        sl = slice(12 * i, 12 * (i + 1))
        _dump(base / f"data_batch_{i + 1}", {b"batch_label": f"training batch {i + 1} of 5".encode(),
                                             b"labels": train_y[sl].tolist(), b"data": train_x[sl],
                                             b"filenames": [b"x.png"] * 12})
    _dump(base / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": test_y.tolist(),
                                b"data": test_x, b"filenames": [b"x.png"] * 20})
    _dump(base / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": 12,
                                  b"num_vis": 3072})
    table = {name: md5(base / name) for name in OFFICIAL_MD5}
    archive = root / "archive" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(base, arcname=BASE_FOLDER)
    return {"root": root, "archive": archive, "table": table, "train_x": train_x, "train_y": train_y,
            "test_x": test_x, "test_y": test_y}


@pytest.fixture(scope="module")
def cifar100_src(tmp_path_factory) -> dict:
    """A CIFAR-100-format folder: cifar-100-python/{train,test,meta} with fine and coarse labels."""
    root = tmp_path_factory.mktemp("cifar100_src")
    base = root / "cifar-100-python"
    base.mkdir()
    rng = np.random.default_rng(100)
    train_x, test_x = _rows(rng, 200), _rows(rng, 100)
    train_y, test_y = rng.permutation(np.arange(200) % 100), np.arange(100)
    names = [f"class{i:02d}" for i in range(100)]
    _dump(base / "train", {"filenames": ["x.png"] * 200, "batch_label": "training batch 1 of 1",
                           "fine_labels": train_y.tolist(), "coarse_labels": (train_y // 5).tolist(), "data": train_x})
    _dump(base / "test", {"filenames": ["x.png"] * 100, "batch_label": "testing batch 1 of 1",
                          "fine_labels": test_y.tolist(), "coarse_labels": (test_y // 5).tolist(), "data": test_x})
    _dump(base / "meta", {"fine_label_names": names, "coarse_label_names": [f"super{i}" for i in range(20)]})
    table = {name: md5(base / name) for name in ("train", "test", "meta")}
    return {"root": root, "table": table, "names": names, "train_x": train_x, "train_y": train_y,
            "test_x": test_x, "test_y": test_y}


def _image_folder(root: Path) -> Path:
    """Three classes of PNG and JPEG images of six sizes, some greyscale, one RGBA."""
    from PIL import Image

    rng = np.random.default_rng(7)
    sizes = [(40, 40), (64, 48), (33, 90), (120, 36), (32, 32), (50, 70)]
    for c, name in enumerate(["zebra", "apple", "mango"]):
        folder = root / name
        folder.mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            if i % 3 == 0:
                image = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L")
            elif i == 4 and c == 0:
                image = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), mode="RGBA")
            else:
                image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")
            if i == 5:
                image.convert("RGB").save(folder / f"img{i}.jpeg", quality=90)
            elif i % 2:
                image.convert("RGB" if image.mode == "RGBA" else image.mode).save(folder / f"img{i}.jpg")
            else:
                image.save(folder / f"img{i}.png")
        (folder / "notes.txt").write_text("not an image: ignored")
    return root


@pytest.fixture(scope="module")
def images_src(tmp_path_factory) -> Path:
    return _image_folder(tmp_path_factory.mktemp("images") / "animals")


@pytest.fixture(scope="module")
def imported_images(tmp_path_factory, images_src) -> Path:
    """The image folder, imported once at 32x32 (read-only for the tests)."""
    out = tmp_path_factory.mktemp("imported") / "animals"
    import_dataset("imagefolder", out, images_src, size=32)
    return out


@pytest.fixture(scope="module")
def uniform_src(tmp_path_factory) -> tuple[Path, dict]:
    """Three classes of six 32x32 RGB PNG images each (one size: importable without --size)."""
    root = tmp_path_factory.mktemp("uniform") / "shapes"
    return root, _png_folder(root, {"circle": 6, "square": 6, "star": 6}, 32, 32, seed=5)


# ---------------------------------------------------------------- each source imports and reads back


def test_official_cifar100_md5_list_is_torchvisions():
    import torchvision

    from icepick.data import CIFAR100_MD5

    cls = torchvision.datasets.CIFAR100
    assert CIFAR100_MD5 == dict(cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]])


def test_cifar10_import_reads_back_with_its_counts_classes_and_normalisation(cifar10_src, tmp_path):
    out = tmp_path / "c10"
    info = import_dataset("cifar10", out, cifar10_src["root"], official_md5=cifar10_src["table"])
    assert (info.source, info.num_classes, info.n_train, info.n_test, info.flip) == ("cifar10", 10, 60, 20, True)
    assert info.classes == tuple(CIFAR10_NAMES)
    assert (info.image_shape, info.augmentation, info.layout, info.n_val) == ((3, 32, 32), "pad_crop",
                                                                               "cifar-10-python", 0)
    train, test = load_split(out, "train"), load_split(out, "test")
    assert torch.equal(train.images.reshape(60, 3072), torch.from_numpy(cifar10_src["train_x"]))
    assert train.labels.tolist() == cifar10_src["train_y"].tolist()
    assert test.labels.tolist() == cifar10_src["test_y"].tolist()
    mean, std = _numpy_stats(cifar10_src["train_x"])
    np.testing.assert_allclose(train.mean, mean, atol=1e-6)
    np.testing.assert_allclose(train.std, std, atol=1e-6)
    assert test.mean == train.mean and train.flip and test.flip
    # the official files are kept as they are: their md5s are the list's
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["files"] == {f"{BASE_FOLDER}/{name}": value for name, value in cifar10_src["table"].items()}
    assert manifest["split"]["kind"] == "official" and manifest["layout"] == "cifar-10-python"
    assert manifest["image_shape"] == [3, 32, 32]
    assert manifest["augmentation"] == {"kind": "pad_crop", "padding": 4, "flip": True}
    assert sorted(p.name for p in out.iterdir()) == [BASE_FOLDER, MANIFEST]  # no .npy copy of the official files


def test_cifar10_from_its_archive_is_the_same_data_set_as_from_its_folder(cifar10_src, tmp_path):
    a = import_dataset("cifar10", tmp_path / "a", cifar10_src["root"], official_md5=cifar10_src["table"])
    b = import_dataset("cifar10", tmp_path / "b", cifar10_src["archive"], official_md5=cifar10_src["table"])
    assert a.digest == b.digest
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [BASE_FOLDER, MANIFEST]  # nothing extracted left
    assert not list(tmp_path.glob(".*.tmp"))  # no staging folder left


def test_cifar10_files_not_on_the_md5_list_are_refused_naming_the_file(cifar10_src, tmp_path):
    with pytest.raises(DataIntegrityError, match="data_batch_1 is damaged or is not the official CIFAR-10 file"):
        import_dataset("cifar10", tmp_path / "c10", cifar10_src["root"])  # the official list
    assert not (tmp_path / "c10").exists()


def test_an_md5_list_that_does_not_name_the_official_files_is_refused(cifar10_src, tmp_path):
    partial = dict(list(cifar10_src["table"].items())[:3])
    with pytest.raises(ConfigError, match=r"official_md5: the list for cifar10 must give an md5 for each of its "
                                          r"files \(data_batch_1, .*batches.meta\)"):
        import_dataset("cifar10", tmp_path / "c10", cifar10_src["root"], official_md5=partial)
    with pytest.raises(ConfigError, match="official_md5: imagefolder has no official files"):
        import_dataset("imagefolder", tmp_path / "i", tmp_path, official_md5={"x": "0" * 32})
    assert not (tmp_path / "c10").exists()


def test_cifar10_placed_in_the_output_folder_is_imported_in_place(cifar10_src, tmp_path):
    """Files placed by hand (or by `data fetch`, with its archive and readme) are vouched for where they are."""
    out = tmp_path / "placed"
    shutil.copytree(cifar10_src["root"] / BASE_FOLDER, out / BASE_FOLDER)
    (out / BASE_FOLDER / "readme.html").write_text("<html></html>")
    shutil.copy(cifar10_src["archive"], out / "cifar-10-python.tar.gz")
    info = import_dataset("cifar10", out, official_md5=cifar10_src["table"])
    assert info.n_train == 60 and (out / "cifar-10-python.tar.gz").exists() and (out / BASE_FOLDER / "readme.html").exists()
    assert len(load_split(out, "test")) == 20
    again = import_dataset("cifar10", out, official_md5=cifar10_src["table"])
    assert again.digest == info.digest


def test_cifar100_import_converts_the_fine_labels_into_the_pipeline_format(cifar100_src, tmp_path):
    out = tmp_path / "c100"
    info = import_dataset("cifar100", out, cifar100_src["root"], official_md5=cifar100_src["table"])
    assert (info.num_classes, info.n_train, info.n_test) == (100, 200, 100)
    assert list(info.classes) == cifar100_src["names"]
    assert (info.layout, info.image_shape) == ("npy", (3, 32, 32))
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST] + array_files(["train", "test"]))
    images = np.load(out / "test_images.npy")  # plain NumPy files, readable by any tool
    assert images.dtype == np.uint8 and images.shape == (100, 3, 32, 32)
    assert np.array_equal(images.reshape(100, 3072), cifar100_src["test_x"])
    assert np.load(out / "train_labels.npy").tolist() == cifar100_src["train_y"].tolist()
    assert np.load(out / "train_images.npy", mmap_mode="r").shape == (200, 3, 32, 32)  # memory-mappable
    train, test = load_split(out, "train"), load_split(out, "test")
    assert train.labels.tolist() == cifar100_src["train_y"].tolist()
    assert torch.equal(test.images.reshape(100, 3072), torch.from_numpy(cifar100_src["test_x"]))
    mean, std = _numpy_stats(cifar100_src["train_x"])
    np.testing.assert_allclose(train.mean, mean, atol=1e-6)
    np.testing.assert_allclose(train.std, std, atol=1e-6)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["classes"] == cifar100_src["names"]
    assert manifest["counts"]["per_class"]["class07"] == {"train": 2, "test": 1}


def test_cifar100_labels_out_of_range_are_refused_naming_the_file(cifar100_src, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(cifar100_src["root"], src)
    with open(src / "cifar-100-python" / "test", "rb") as handle:
        entry = pickle.load(handle)
    entry["fine_labels"][3] = 100
    _dump(src / "cifar-100-python" / "test", entry)
    table = {**cifar100_src["table"], "test": md5(src / "cifar-100-python" / "test")}
    with pytest.raises(DataIntegrityError, match=r"cifar-100-python/test: label 100 is out of range for 100 classes"):
        import_dataset("cifar100", tmp_path / "out", src, official_md5=table)


def test_digits_import_is_1437_train_360_test_stratified_and_without_flips(tmp_path):
    pytest.importorskip("sklearn", reason="scikit-learn (the digits extra) is not installed")
    from PIL import Image
    from sklearn.datasets import load_digits

    out = tmp_path / "digits"
    info = import_dataset("digits", out)
    assert (info.source, info.num_classes, info.n_train, info.n_test, info.flip) == ("digits", 10, 1437, 360, False)
    assert info.classes == tuple(str(i) for i in range(10)) and info.image_shape == (3, 32, 32)
    train, test = load_split(out, "train"), load_split(out, "test")
    assert not train.flip and not test.flip
    for split in (train, test):
        assert torch.bincount(split.labels, minlength=10).min() > 0  # every class in both splits
        assert torch.equal(split.images[:, 0], split.images[:, 1]) and torch.equal(split.images[:, 0], split.images[:, 2])
    assert train.mean[0] == train.mean[1] == train.mean[2] and 0.1 < train.mean[0] < 0.5
    assert train.images.max() > 200  # scaled from 0..16 to 0..255
    # the same images as before images could have any size: 0..16 scaled, 8x8 -> 32x32 bilinear, grey repeated
    digits = load_digits()
    grey = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    up = np.stack([np.asarray(Image.fromarray(g, mode="L").resize((32, 32), Image.Resampling.BILINEAR)) for g in grey])
    train_idx, test_idx = stratified_split(digits.target, 10, 0.2, seed=0)
    assert np.array_equal(train.images[:, 0].numpy(), up[train_idx])
    assert np.array_equal(test.images[:, 0].numpy(), up[test_idx])
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["split"] == {"kind": "stratified", "test_fraction": 0.2, "seed": 0, "stratified": True}
    assert manifest["augmentation"]["flip"] is False and "scikit-learn" in manifest["origin"]["packages"]
    assert manifest["transform"] == ("scale the values 0..16 to 0..255 (rounded); resize the shorter side to 32 "
                                     "(bilinear, antialiased) and centre-crop 32x32; repeat the grey channel 3 times")


def test_digits_without_scikit_learn_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert main(["data", "import", "--source", "digits", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("icepick data: error: source digits needs scikit-learn, which is not installed: "
                   "pip install 'icepick[digits]'")
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------- image folders: sizes, channels, fit


def test_imagefolder_import_reads_png_and_jpeg_of_any_size_and_mode(imported_images):
    info = dataset_info(imported_images)
    assert info.classes == ("apple", "mango", "zebra")  # sorted folder names
    assert (info.num_classes, info.n_train + info.n_test, info.flip) == (3, 18, True)
    train, test = load_split(imported_images, "train"), load_split(imported_images, "test")
    assert len(train) + len(test) == 18 and train.images.shape[1:] == (3, 32, 32)  # grey and RGB: RGB
    for split in (train, test):
        assert sorted(split.labels.unique().tolist()) == [0, 1, 2]  # every class in both splits
    mean, std = _numpy_stats(train.images.numpy())
    np.testing.assert_allclose(train.mean, mean, atol=1e-6)
    np.testing.assert_allclose(train.std, std, atol=1e-6)
    manifest = json.loads((imported_images / MANIFEST).read_text())
    assert manifest["transform"] == ("images of 6 sizes: resize the shorter side to 32 (bilinear, antialiased) and "
                                     "centre-crop 32x32; RGB")
    assert manifest["options"] == {"size": 32}
    assert manifest["augmentation"] == {"kind": "pad_crop", "padding": 4, "flip": True}
    # ceil(0.2 * 18) = 4 held out, shared 1.2 : 1.2 : 1.2, the remainder to the first class
    assert manifest["counts"]["per_class"] == {"apple": {"train": 4, "test": 2}, "mango": {"train": 5, "test": 1},
                                               "zebra": {"train": 5, "test": 1}}


def test_images_of_several_sizes_without_size_are_one_line_asking_for_it(images_src, tmp_path):
    with pytest.raises(DataSourceError, match=r"path: the images in .* differ in size \(.*\); give --size N to make them "
                                              r"all NxN \(--fit resize or pad\)") as info:
        import_dataset("imagefolder", tmp_path / "out", images_src)
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()


def test_a_class_folder_holding_folders_is_refused(uniform_src, tmp_path):
    src = tmp_path / "nested"
    shutil.copytree(uniform_src[0], src)
    (src / "star" / "more").mkdir()
    shutil.copy(src / "star" / "img000.png", src / "star" / "more" / "img000.png")
    with pytest.raises(DataSourceError, match=r"star: class folder 'star' holds sub-folders \(more\); give the folder "
                                              r"whose sub-folders are the classes") as info:
        import_dataset("imagefolder", tmp_path / "out", src)
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("size", [32, 64])
def test_fit_image_is_torchvisions_resize_and_centre_crop(size):
    """Shorter side to N (bilinear, antialiased), centre crop: torchvision's Resize(N) + CenterCrop(N)."""
    import torchvision.transforms as T
    from PIL import Image

    from icepick.data.importing import _convert, _fit_image, _resize_box

    rng = np.random.default_rng(3)
    for h, w in [(90, 33), (36, 120), (32, 32), (17, 25), (64, 48), (64, 64), (200, 151), (63, 129)]:
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        resized = T.Resize(size, T.InterpolationMode.BILINEAR, antialias=True)(image)
        expected = T.CenterCrop(size)(resized)
        assert _resize_box(w, h, size)[0] == resized.size, (h, w)
        got = _fit_image(image, size, "resize", "test")
        assert got.size == (size, size) and np.array_equal(np.asarray(got), np.asarray(expected)), (h, w)
    grey = Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8), mode="L")
    rgb = np.asarray(_fit_image(_convert(grey, 3), size, "resize", "test"))
    assert rgb.shape == (size, size, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])


def test_a_64px_rgb_folder_keeps_its_size_and_gets_random_resized_crops(tmp_path, caplog):
    arrays = _png_folder(tmp_path / "src", {"a": 5, "b": 5}, 64, 64, seed=1)
    with caplog.at_level(logging.INFO):
        assert main(["data", "import", "--source", "imagefolder", "--path", str(tmp_path / "src"), "--out",
                     str(tmp_path / "big")]) == 0
    info = dataset_info(tmp_path / "big")
    assert (info.image_shape, info.augmentation) == ((3, 64, 64), "random_resized_crop")
    manifest = json.loads((tmp_path / "big" / MANIFEST).read_text())
    assert manifest["image_shape"] == [3, 64, 64] and manifest["layout"] == "npy"
    assert manifest["augmentation"] == {"kind": "random_resized_crop", "scale": [0.08, 1.0],
                                        "ratio": [0.75, 1.333333], "flip": True}
    assert manifest["transform"] == "none (kept at 64x64, 3 channels)"
    line = [m for m in caplog.messages if m.startswith("imported imagefolder into")]
    assert len(line) == 1 and "images of 64x64, 3 channels (images: none (kept at 64x64, 3 channels)); random " \
                              "resized crop augmentation, flips on" in line[0], caplog.messages
    assert len(manifest["normalization"]["mean"]) == 3
    train = load_split(tmp_path / "big", "train")
    assert train.augmentation == "random_resized_crop" and train.image_shape == (3, 64, 64)
    _by_label(train, arrays, info.classes)  # the images as they are
    assert info.record()["augmentation"] == manifest["augmentation"]
    x, _ = next(train_batches(train, batch_size=4, seed=0))
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32

    import torchvision.transforms as T
    from PIL import Image

    assert main(["data", "import", "--source", "imagefolder", "--path", str(tmp_path / "src"), "--out",
                 str(tmp_path / "small"), "--size", "32"]) == 0
    small = dataset_info(tmp_path / "small")
    assert (small.image_shape, small.augmentation) == ((3, 32, 32), "pad_crop")
    manifest = json.loads((tmp_path / "small" / MANIFEST).read_text())
    assert manifest["augmentation"] == {"kind": "pad_crop", "padding": 4, "flip": True}
    assert manifest["transform"] == "resize the shorter side to 32 (bilinear, antialiased) and centre-crop 32x32"
    resized = {name: np.stack([np.asarray(T.CenterCrop(32)(T.Resize(32, antialias=True)(Image.fromarray(
        x.transpose(1, 2, 0))))).transpose(2, 0, 1) for x in images]) for name, images in arrays.items()}
    _by_label(load_split(tmp_path / "small", "test"), resized, small.classes)


def test_a_28px_grey_folder_is_one_channel_with_pad_crop_4(tmp_path):
    arrays = _png_folder(tmp_path / "src", {"a": 6, "b": 6}, 28, 28, grey=True, seed=2)
    info = import_dataset("imagefolder", tmp_path / "grey", tmp_path / "src")
    assert (info.image_shape, info.augmentation, len(info.mean), len(info.std)) == ((1, 28, 28), "pad_crop", 1, 1)
    manifest = json.loads((tmp_path / "grey" / MANIFEST).read_text())
    assert manifest["augmentation"] == {"kind": "pad_crop", "padding": 4, "flip": True}
    assert manifest["transform"] == "none (kept at 28x28, 1 channel)"
    train = load_split(tmp_path / "grey", "train")
    _by_label(train, arrays, info.classes)
    mean, std = _numpy_stats(train.images.numpy(), channels=1)
    np.testing.assert_allclose(train.mean, mean, atol=1e-6)
    np.testing.assert_allclose(train.std, std, atol=1e-6)
    x, _ = next(train_batches(train, batch_size=5, seed=0))
    assert x.shape == (5, 1, 28, 28)

    rgb = import_dataset("imagefolder", tmp_path / "rgb", tmp_path / "src", channels=3)
    assert rgb.image_shape == (3, 28, 28)
    assert json.loads((tmp_path / "rgb" / MANIFEST).read_text())["transform"] == "repeat the grey channel 3 times"
    three = load_split(tmp_path / "rgb", "train")
    assert torch.equal(three.images, train.images.expand(-1, 3, -1, -1))  # same split, the channel repeated


def test_fit_pad_puts_28px_images_centred_on_a_black_32px_canvas(tmp_path):
    arrays = _png_folder(tmp_path / "src", {"a": 6, "b": 6}, 28, 28, grey=True, seed=3)
    info = import_dataset("imagefolder", tmp_path / "pad", tmp_path / "src", size=32, fit="pad")
    assert info.image_shape == (1, 32, 32)
    manifest = json.loads((tmp_path / "pad" / MANIFEST).read_text())
    assert manifest["transform"] == "pad 28x28 to 32x32 (centred, black)"
    assert manifest["options"] == {"size": 32, "fit": "pad"}
    split = load_split(tmp_path / "pad", "train")
    border = split.images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert not border.any()  # a 2-pixel black border
    inner = Split(split.images[:, :, 2:30, 2:30].contiguous(), split.labels, None, None)
    _by_label(inner, arrays, info.classes)  # and the image itself, unscaled, inside it
    _png_folder(tmp_path / "src", {"c": 6}, 20, 24, grey=True, seed=4)  # a second size
    import_dataset("imagefolder", tmp_path / "two", tmp_path / "src", size=32, fit="pad")
    manifest = json.loads((tmp_path / "two" / MANIFEST).read_text())
    assert manifest["transform"] == "images of 2 sizes: pad to 32x32 (centred, black); grey"
    c = load_split(tmp_path / "two", "train")
    c = c.images[c.labels == 2]
    assert not c[:, :, :6].any() and not c[:, :, 26:].any() and not c[:, :, :, :4].any() and not c[:, :, :, 28:].any()


def test_fit_pad_refuses_an_image_larger_than_size(uniform_src, tmp_path):
    with pytest.raises(DataSourceError, match=r"img000.png: a 32x32 image does not fit in 28x28; --fit pad only pads, "
                                              r"use --fit resize or a larger --size$") as info:
        import_dataset("imagefolder", tmp_path / "out", uniform_src[0], size=28, fit="pad")
    assert "cannot read" not in str(info.value) and not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="fit: --fit pad says how the images reach --size N; give --size too"):
        import_dataset("imagefolder", tmp_path / "out", uniform_src[0], fit="pad")


def test_a_16_bit_grey_image_among_rgb_ones_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    _png_folder(tmp_path / "src", {"a": 2, "b": 2}, 16, 16, seed=4)
    deep = (np.arange(256).reshape(16, 16) * 257).astype(np.uint16)  # 0..65535
    Image.fromarray(deep).save(tmp_path / "src" / "a" / "deep.png")
    with Image.open(tmp_path / "src" / "a" / "deep.png") as image:
        assert image.mode.startswith("I")
    import_dataset("imagefolder", tmp_path / "out", tmp_path / "src", test_fraction=0.5, seed=0)
    every = torch.cat([load_split(tmp_path / "out", s).images for s in ("train", "test")])
    expected = torch.from_numpy(np.arange(256, dtype=np.uint8).reshape(16, 16)).expand(3, -1, -1)
    assert any(torch.equal(x, expected) for x in every)  # 65535 -> 255, 257 -> 1: all 256 grey levels kept


def test_the_manifests_md5s_are_the_files(imported_images):
    manifest = json.loads((imported_images / MANIFEST).read_text())
    assert set(manifest["files"]) == set(array_files(["train", "test"]))
    for rel, value in manifest["files"].items():
        assert md5(imported_images / rel) == value
    assert manifest["format"] == FORMAT == "icepick-dataset/2"
    assert (manifest["layout"], manifest["image_shape"]) == ("npy", [3, 32, 32])
    assert manifest["counts"]["train"] + manifest["counts"]["test"] == 18 and "val" not in manifest["counts"]
    assert "time" not in json.dumps(manifest)  # no time stamp: identical imports, identical manifests
    assert dataset_info(imported_images).digest == hashlib.sha256((imported_images / MANIFEST).read_bytes()).hexdigest()


def test_the_same_import_twice_gives_the_same_digest(images_src, imported_images, tmp_path):
    again = import_dataset("imagefolder", tmp_path / "again", images_src, size=32)
    assert again.digest == dataset_info(imported_images).digest
    assert (tmp_path / "again" / MANIFEST).read_bytes() == (imported_images / MANIFEST).read_bytes()
    other_seed = import_dataset("imagefolder", tmp_path / "seed1", images_src, size=32, seed=1)
    assert other_seed.digest != again.digest


def test_no_flip_is_recorded_and_reaches_the_split(images_src, tmp_path):
    info = import_dataset("imagefolder", tmp_path / "noflip", images_src, size=32, flip=False)
    assert not info.flip and not load_split(tmp_path / "noflip", "train").flip
    assert json.loads((tmp_path / "noflip" / MANIFEST).read_text())["augmentation"]["flip"] is False


# ---------------------------------------------------------------- folders with their own split


def _layout(root: Path, counts: dict[str, int], classes=("cat", "dog", "owl"), seed: int = 0) -> dict:
    """``root/<split>/<class>/`` PNG folders (16x16 RGB) with ``counts[split]`` images per class."""
    return {split: _png_folder(root / split, {c: n for c in classes}, 16, 16, seed=seed + i)
            for i, (split, n) in enumerate(counts.items())}


def test_a_train_test_folder_layout_keeps_its_split(tmp_path):
    arrays = _layout(tmp_path / "src", {"train": 6, "test": 5})
    info = import_dataset("imagefolder", tmp_path / "out", tmp_path / "src")
    assert (info.n_train, info.n_test, info.n_val) == (18, 15, 0)
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["split"] == {"kind": "folders", "test_fraction": None, "seed": None, "stratified": False,
                                 "folders": {"train": "train", "test": "test"}}
    assert manifest["counts"]["per_class"]["owl"] == {"train": 6, "test": 5}
    for split in ("train", "test"):
        _by_label(load_split(tmp_path / "out", split), arrays[split], info.classes)  # no image changed split
    with pytest.raises(FileNotFoundError, match=r"has no val split \(its manifest.json counts train, test\)"):
        load_split(tmp_path / "out", "val")
    with pytest.raises(ConfigError, match=r"test_fraction: .* keeps its own split \(train/, test/\); --seed and "
                                          r"--test-fraction are for a folder of class folders"):
        import_dataset("imagefolder", tmp_path / "again", tmp_path / "src", seed=1)


def test_a_train_val_test_layout_stores_the_val_split_for_decisions(tmp_path, caplog):
    arrays = _layout(tmp_path / "src", {"train": 6, "val": 3, "test": 5})
    with caplog.at_level(logging.WARNING, logger="icepick.data.importing"):
        info = import_dataset("imagefolder", tmp_path / "out", tmp_path / "src")
    assert (info.n_train, info.n_val, info.n_test) == (18, 9, 15)
    assert any(m.startswith("val split: classes 'cat' (3), 'dog' (3), 'owl' (3) hold fewer than 5 images")
               for m in caplog.messages)
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["counts"]["per_class"]["cat"] == {"train": 6, "val": 3, "test": 5}
    assert set(manifest["files"]) == set(array_files(["train", "val", "test"]))
    val = load_split(tmp_path / "out", "val")
    assert len(val) == 9 and val.mean == load_split(tmp_path / "out", "train").mean
    _by_label(val, arrays["val"], info.classes)
    data = load_experiment_data(tmp_path / "out", torch.device("cpu"), decision_split="val", val_size=4)
    assert len(data.train) == 18 and len(data.test) == 15  # nothing held out of training: the stored val split
    assert torch.equal(data.decision.images, val.images) and torch.equal(data.decision.labels, val.labels)
    test_first = load_experiment_data(tmp_path / "out", torch.device("cpu"))
    assert test_first.decision is test_first.test


def test_a_train_val_layout_makes_val_the_test_split(tmp_path):
    arrays = _layout(tmp_path / "src", {"train": 5, "val": 5})
    info = import_dataset("imagefolder", tmp_path / "out", tmp_path / "src")
    assert (info.n_train, info.n_test, info.n_val) == (15, 15, 0)
    _by_label(load_split(tmp_path / "out", "test"), arrays["val"], info.classes)
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["split"]["folders"] == {"train": "train",
                                                                                        "test": "val"}


def test_a_class_missing_from_test_is_one_clear_error(tmp_path):
    _layout(tmp_path / "src", {"train": 5, "test": 5})
    shutil.rmtree(tmp_path / "src" / "test" / "dog")
    with pytest.raises(DataSourceError, match=r"test: has no folder for class\(es\) dog that another split has; "
                                              r"every class needs images in train/ and test/") as info:
        import_dataset("imagefolder", tmp_path / "out", tmp_path / "src")
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()
    _png_folder(tmp_path / "src" / "test", {"dog": 5}, 16, 16)
    (tmp_path / "src" / "val").mkdir()  # an empty split folder
    with pytest.raises(DataSourceError, match=r"val: holds no class folder; put the val images of each class in"):
        import_dataset("imagefolder", tmp_path / "out", tmp_path / "src")


# ---------------------------------------------------------------- Fashion-MNIST and MNIST from their IDX files


def _idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format: magic 0x0000 0x08 (unsigned bytes) <dims>, each size as a big-endian uint32, the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.tobytes()


def _write_idx(folder: Path, contents: dict[str, bytes], gz: bool) -> dict[str, str]:
    """The four files (``name`` or ``name.gz``); returns the md5 of each one's uncompressed content."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in contents.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw, mtime=0))
        else:
            (folder / name).write_bytes(raw)
    return {name: hashlib.md5(raw).hexdigest() for name, raw in contents.items()}


def _idx_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"train-images-idx3-ubyte": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
            "train-labels-idx1-ubyte": rng.permutation(np.arange(60) % 10).astype(np.uint8),
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
            "t10k-labels-idx1-ubyte": (np.arange(20) % 10).astype(np.uint8)}


def test_idx_magic_numbers_are_the_official_ones():
    arrays = _idx_arrays()
    header = bytes.fromhex("00000803" "0000003c" "0000001c" "0000001c")  # magic, 60, 28, 28
    assert _idx_bytes(arrays["train-images-idx3-ubyte"])[:16] == header
    assert _idx_bytes(arrays["t10k-labels-idx1-ubyte"])[:8] == bytes.fromhex("00000801" "00000014")


@pytest.mark.parametrize("source, gz, flip", [("fashion-mnist", True, True), ("mnist", False, False),
                                               ("fashion-mnist", False, True), ("mnist", True, False)])
def test_idx_import_keeps_the_official_split_28px_grey(source, gz, flip, tmp_path):
    from icepick.data.importing import IDX_CLASSES

    arrays = _idx_arrays()
    table = _write_idx(tmp_path / "src", {name: _idx_bytes(a) for name, a in arrays.items()}, gz)
    info = import_dataset(source, tmp_path / "out", tmp_path / "src", official_md5=table)
    assert (info.source, info.n_train, info.n_test, info.flip) == (source, 60, 20, flip)
    assert (info.image_shape, info.augmentation, info.classes) == ((1, 28, 28), "pad_crop", tuple(IDX_CLASSES[source]))
    train, test = load_split(tmp_path / "out", "train"), load_split(tmp_path / "out", "test")
    # the official split, in the files' order: no re-split, no shuffle
    assert np.array_equal(train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert train.labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert np.array_equal(test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert train.flip is flip and test.flip is flip
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["split"] == {"kind": "official", "test_fraction": None, "seed": None, "stratified": False}
    assert manifest["augmentation"] == {"kind": "pad_crop", "padding": 4, "flip": flip}
    assert manifest["transform"] == "none (kept at 28x28, 1 channel)"
    assert manifest["origin"]["path"] == str((tmp_path / "src").resolve())
    assert manifest["origin"]["checked_against"].startswith("an md5 list given by the caller")
    np.testing.assert_allclose(train.mean, [arrays["train-images-idx3-ubyte"].mean() / 255], atol=1e-6)
    with pytest.raises(ConfigError, match=f"seed: {source} has its official test split"):
        import_dataset(source, tmp_path / "other", tmp_path / "src", official_md5=table, seed=1)


def test_idx_import_at_32px_rgb(tmp_path):
    arrays = _idx_arrays()
    table = _write_idx(tmp_path / "src", {name: _idx_bytes(a) for name, a in arrays.items()}, True)
    info = import_dataset("mnist", tmp_path / "out", tmp_path / "src", official_md5=table, size=32, channels=3,
                          fit="pad")
    assert info.image_shape == (3, 32, 32)
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["transform"] == "pad 28x28 to 32x32 (centred, black); repeat the grey channel 3 times"
    test = load_split(tmp_path / "out", "test")
    expected = np.pad(arrays["t10k-images-idx3-ubyte"], ((0, 0), (2, 2), (2, 2)))
    for c in range(3):
        assert np.array_equal(test.images[:, c].numpy(), expected)


def test_a_downloaded_idx_import_records_no_temporary_folder(tmp_path, monkeypatch):
    """The download goes to a temporary folder: the manifest does not name it, so importing again is the same."""
    import icepick.data.importing as importing

    arrays = _idx_arrays()
    contents = {name: _idx_bytes(a) for name, a in arrays.items()}
    calls = []

    def download(cls_name: str, work: Path, url: str, archive_md5: str) -> None:
        calls.append((cls_name, url))
        _write_idx(work / cls_name / "raw", contents, gz=False)  # where torchvision puts them

    monkeypatch.setattr(importing, "_download", download)
    table = {name: hashlib.md5(raw).hexdigest() for name, raw in contents.items()}
    first = import_dataset("fashion-mnist", tmp_path / "fm", official_md5=table)
    manifest = json.loads((tmp_path / "fm" / MANIFEST).read_text())
    assert "path" not in manifest["origin"] and manifest["origin"]["url"].startswith("http")
    assert calls == [("FashionMNIST", manifest["origin"]["url"])]
    assert import_dataset("fashion-mnist", tmp_path / "fm", official_md5=table).digest == first.digest
    assert sorted(p.name for p in (tmp_path / "fm").iterdir()) == sorted([MANIFEST] + array_files(["train", "test"]))


def _bad_idx(case: str, folder: Path) -> tuple[dict[str, str], str]:
    """IDX files with one fault, and the md5 list of what was written (so only the fault is wrong)."""
    contents = {name: _idx_bytes(a) for name, a in _idx_arrays().items()}
    if case == "wrong magic":
        raw = contents["train-images-idx3-ubyte"]
        contents["train-images-idx3-ubyte"] = bytes([0, 0, 0x08, 0x01]) + raw[4:]
    elif case == "truncated":
        contents["t10k-images-idx3-ubyte"] = contents["t10k-images-idx3-ubyte"][:-100]
    elif case == "label out of range":
        labels = _idx_arrays()["train-labels-idx1-ubyte"].copy()
        labels[7] = 10
        contents["train-labels-idx1-ubyte"] = _idx_bytes(labels)
    elif case == "labels and images differ in number":
        contents["t10k-labels-idx1-ubyte"] = _idx_bytes(np.zeros(19, np.uint8))
    table = _write_idx(folder, contents, gz=case not in ("truncated", "truncated gzip"))
    if case == "truncated gzip":
        (folder / "train-labels-idx1-ubyte").unlink()  # written plain above: replaced by a cut-off gzip
        raw = gzip.compress(contents["train-labels-idx1-ubyte"], mtime=0)
        (folder / "train-labels-idx1-ubyte.gz").write_bytes(raw[:-20])
    elif case == "missing file":
        (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    elif case == "content md5 differs":
        table["t10k-images-idx3-ubyte"] = "0" * 32
    return table, {
        "wrong magic": r"train-images-idx3-ubyte.gz: not an IDX file of unsigned bytes with 3 dimension\(s\) \(magic "
                       r"00000801, expected 00000803\); download it again",
        "truncated": r"t10k-images-idx3-ubyte: holds 15580 bytes of data where its header says 20x28x28; the file "
                     r"is truncated or damaged: download it again",
        "truncated gzip": r"train-labels-idx1-ubyte.gz: cannot decompress it \(.*\); download it again",
        "missing file": r"t10k-labels-idx1-ubyte\(.gz\) is missing; the folder must hold the four official IDX files",
        "label out of range": r"train-labels-idx1-ubyte.gz: label 10 is out of range for 10 classes \(labels must lie "
                              r"in 0..9\); download the mnist files again",
        "labels and images differ in number": r"t10k-labels-idx1-ubyte.gz: 19 labels for the 20 images of "
                                              r"t10k-images-idx3-ubyte.gz; download the mnist files again",
        "content md5 differs": r"t10k-images-idx3-ubyte.gz is damaged or is not the official mnist file \(md5 of its "
                               r"content [0-9a-f]{32}, expected 0{32}\); download it again",
    }[case]


@pytest.mark.parametrize("case", ["wrong magic", "truncated", "truncated gzip", "missing file", "label out of range",
                                  "labels and images differ in number", "content md5 differs"])
def test_bad_idx_input_is_one_line_naming_the_file(case, tmp_path):
    table, message = _bad_idx(case, tmp_path / "src")
    with pytest.raises((DataSourceError, DataIntegrityError, FileNotFoundError), match=message) as info:
        import_dataset("mnist", tmp_path / "out", tmp_path / "src", official_md5=table)
    assert "\n" not in str(info.value) and str(tmp_path / "src") in str(info.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_idx_files_that_are_not_the_official_ones_fail_the_cli_in_one_line(tmp_path, capsys):
    _write_idx(tmp_path / "src", {name: _idx_bytes(a) for name, a in _idx_arrays().items()}, gz=True)
    from icepick.data import IDX_MD5

    code = main(["data", "import", "--source", "mnist", "--path", str(tmp_path / "src"), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"icepick data: error: {tmp_path / 'src' / 'train-images-idx3-ubyte.gz'} is damaged or "
                             f"is not the official mnist file (md5 of its content ")
    assert err[0].endswith(f"expected {IDX_MD5['mnist']['train-images-idx3-ubyte']}); download it again")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- splits and batches


def test_train_batches_never_flip_when_the_data_set_does_not_suit_flips():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), generator=g, dtype=torch.uint8)
    padded = torch.zeros(64, 3, 40, 40, dtype=torch.uint8)
    padded[:, :, 4:36, 4:36] = images

    def flipped(split: Split, seed: int) -> list[bool]:
        out = []
        for x, ids in train_batches(split, batch_size=64, seed=seed):
            x = ((x * torch.tensor(split.std).view(1, 3, 1, 1) + torch.tensor(split.mean).view(1, 3, 1, 1)) * 255
                 ).round().clamp(0, 255).to(torch.uint8)
            for i, k in enumerate(ids.tolist()):
                crops = {(oy, ox, f) for oy in range(9) for ox in range(9) for f in (False, True)
                         if torch.equal(x[i], (lambda c: c.flip(-1) if f else c)(padded[k, :, oy:oy + 32, ox:ox + 32]))}
                assert crops, "not a crop of the padded original"
                out.append(all(f for _, _, f in crops))
        return out

    no_flip = Split(images, torch.arange(64), mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3), flip=False)
    with_flip = Split(images, torch.arange(64), mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3), flip=True)
    for seed in range(3):
        assert not any(flipped(no_flip, seed))
    assert any(flipped(with_flip, 0))
    # the order and the crops do not depend on the flip setting
    a = [y for _, y in train_batches(no_flip, 16, seed=5)]
    b = [y for _, y in train_batches(with_flip, 16, seed=5)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("fraction", [0.01, 0.2, 0.5, 0.9])
def test_a_stratified_split_keeps_every_class_in_both_splits(fraction):
    labels = np.repeat(np.arange(5), [2, 3, 50, 7, 200])
    train, test = stratified_split(labels, 5, fraction, seed=4)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
    for part in (train, test):
        assert (np.bincount(labels[part], minlength=5) > 0).all()
    again = stratified_split(labels, 5, fraction, seed=4)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)


def test_the_split_of_1797_images_at_0_2_holds_360_out():
    labels = np.repeat(np.arange(10), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])  # the digits' classes
    train, test = stratified_split(labels, 10, 0.2, seed=0)
    assert (len(train), len(test)) == (1437, 360)


# ---------------------------------------------------------------- nothing lost, nothing half-written


def test_a_damaged_file_fails_the_reader_naming_it(imported_images, tmp_path):
    root = tmp_path / "damaged"
    shutil.copytree(imported_images, root)
    path = root / "train_images.npy"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataIntegrityError, match="train_images.npy does not match the data set's manifest") as info:
        load_split(root, "test")  # every file is checked, whichever split is read
    assert "data import --source imagefolder" in str(info.value) and "--size 32" in str(info.value)
    shutil.copy(imported_images / "train_images.npy", path)
    (root / "test_labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match="test_labels.npy is missing"):
        load_split(root, "test")


def test_arrays_that_are_not_what_the_manifest_says_are_refused(imported_images, tmp_path):
    """md5 sums that match files of the wrong shape or labels (a manifest edited by hand) do not pass either."""
    root = tmp_path / "edited"
    shutil.copytree(imported_images, root)
    manifest = json.loads((root / MANIFEST).read_text())
    np.save(root / "test_labels.npy", np.full(manifest["counts"]["test"], 7, dtype=np.int64))
    manifest["files"]["test_labels.npy"] = md5(root / "test_labels.npy")
    (root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataIntegrityError, match=r"test_labels.npy: label 7 is out of range for 3 classes"):
        load_split(root, "test")
    manifest["image_shape"] = [1, 32, 32]
    (root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataIntegrityError, match=r"train_images.npy: holds uint8 \[14, 3, 32, 32\], but the manifest "
                                                 r"says uint8 \[N, 1, 32, 32\]"):
        load_split(root, "train")


def test_a_half_written_import_does_not_pass(images_src, tmp_path):
    """An import killed before its manifest: nothing under OUT; its staging folder is removed by the next one."""
    out = tmp_path / "crash"
    code = ("import os, icepick.data.importing as m\n"
            "m.write_manifest = lambda *a, **k: os._exit(9)\n"
            f"m.import_dataset('imagefolder', {str(out)!r}, {str(images_src)!r}, size=32)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr
    assert not out.exists()
    stale = list(tmp_path.glob(".crash.import.*.tmp"))
    assert len(stale) == 1 and (stale[0] / "train_images.npy").exists()
    with pytest.raises(FileNotFoundError):
        load_split(out, "train")
    # its arrays without the manifest (as if moved by hand) do not pass either
    shutil.copytree(stale[0], tmp_path / "by_hand")
    for read in (lambda: load_split(tmp_path / "by_hand", "train"), lambda: dataset_info(tmp_path / "by_hand"),
                 lambda: load_experiment_data(tmp_path / "by_hand", torch.device("cpu"))):
        with pytest.raises(IncompleteDataError, match="the import is incomplete") as info:
            read()
        assert f"python -m icepick data import --source SOURCE --out {tmp_path / 'by_hand'}" in str(info.value)
    import_dataset("imagefolder", out, images_src, size=32)
    assert not list(tmp_path.glob(".crash.*.tmp")) and len(load_split(out, "test")) == 4


def test_a_failed_import_leaves_the_previous_data_set_as_it_was(images_src, imported_images, tmp_path):
    out = tmp_path / "keep"
    shutil.copytree(imported_images, out)
    before = (out / MANIFEST).read_bytes()
    broken = tmp_path / "broken"
    shutil.copytree(images_src, broken)
    (broken / "mango" / "img0.png").write_bytes(b"not a png")
    with pytest.raises(DataSourceError, match=r"mango/img0.png: cannot read this image"):
        import_dataset("imagefolder", out, broken, size=32)
    assert (out / MANIFEST).read_bytes() == before and len(load_split(out, "train")) == 14
    assert not list(tmp_path.glob(".keep.*.tmp"))


def test_force_is_needed_to_write_over_a_folder_with_other_files(images_src, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(DestinationError) as info:
        import_dataset("imagefolder", out, images_src, size=32)
    assert str(out) in str(info.value) and "--force" in str(info.value) and "thesis.tex" in str(info.value)
    assert (out / "thesis.tex").read_text() == "precious"
    for command in (lambda: synth_cifar10(out, 20, 20, 0), lambda: fetch_cifar10(out)):
        with pytest.raises(DestinationError, match="--force"):
            command()
    info2 = import_dataset("imagefolder", out, images_src, size=32, force=True)
    assert not (out / "thesis.tex").exists() and dataset_info(out).digest == info2.digest


def test_a_data_set_of_another_source_is_not_written_over(imported_images, synth_root, tmp_path, cifar10_src):
    with pytest.raises(DestinationError, match="holds an imagefolder data set"):
        synth_cifar10(imported_images, 20, 20, 0)
    with pytest.raises(DestinationError, match="holds an imagefolder data set"):
        fetch_cifar10(imported_images)
    with pytest.raises(DestinationError, match="holds a generated data set"):
        import_dataset("cifar10", synth_root, cifar10_src["root"], official_md5=cifar10_src["table"])
    with pytest.raises(DestinationError, match="holds an imagefolder data set"):
        import_dataset("mnist", imported_images, cifar10_src["root"])
    real = tmp_path / "real"  # the real CIFAR-10 (here: files on the md5 list) is never replaced by another source
    import_dataset("cifar10", real, cifar10_src["root"], official_md5=cifar10_src["table"])
    with pytest.raises(DestinationError, match="holds a cifar10 data set"):
        synth_cifar10(real, 20, 20, 0)


def test_a_reimport_of_other_images_or_settings_needs_force(uniform_src, tmp_path):
    src, _ = uniform_src
    out = tmp_path / "re"
    first = import_dataset("imagefolder", out, src)
    assert import_dataset("imagefolder", out, src).digest == first.digest  # the same import again
    moved = tmp_path / "moved"  # the same images from another folder: the same data set
    shutil.copytree(src, moved)
    assert import_dataset("imagefolder", out, moved).image_shape == (3, 32, 32)
    for other, what in (({"seed": 1}, "split, images"), ({"size": 16}, "image size, images, augmentation"),
                        ({"flip": False}, "augmentation")):
        with pytest.raises(DestinationError, match=f"holds an import of imagefolder with another {what}; .*add --force "
                                                   f"to replace it") as info:
            import_dataset("imagefolder", out, src, **other)
        assert "\n" not in str(info.value)
        assert dataset_info(out).image_shape == (3, 32, 32) and len(load_split(out, "test")) == 4  # left as it was
    forced = import_dataset("imagefolder", out, src, size=16, force=True)
    assert forced.image_shape == (3, 16, 16) and forced.digest != first.digest
    # Snakemake removes a rule's output (manifest.json) before it reruns the rule: its arrays are no other data set
    (out / MANIFEST).unlink()
    assert import_dataset("imagefolder", out, src).digest == first.digest
    assert synth_cifar10(tmp_path / "s", 20, 20, 0) and synth_cifar10(tmp_path / "s", 30, 20, 1)  # regenerate
    (tmp_path / "s" / BASE_FOLDER / MARKER).unlink()
    synth_cifar10(tmp_path / "s", 20, 20, 0)


def test_an_import_of_the_previous_format_is_replaced_only_with_force(uniform_src, tmp_path):
    src, _ = uniform_src
    out = tmp_path / "old"
    import_dataset("imagefolder", out, src)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "format": "icepick-dataset/1"}))
    with pytest.raises(DataIntegrityError, match="format 'icepick-dataset/1', expected 'icepick-dataset/2'"):
        dataset_info(out)
    with pytest.raises(DestinationError, match=r"with another format \('icepick-dataset/1'\); .*--force"):
        import_dataset("imagefolder", out, src)
    assert import_dataset("imagefolder", out, src, force=True).image_shape == (3, 32, 32)


def test_cli_import_writes_the_data_set_and_refuses_another_source_without_force(uniform_src, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["data", "import", "--source", "imagefolder", "--path", str(uniform_src[0]), "--out", str(out),
            "--test-fraction", "0.5", "--seed", "3", "--no-flip"]
    assert main(args) == 0
    info = dataset_info(out)
    assert (info.n_train, info.n_test, info.flip, info.image_shape) == (9, 9, False, (3, 32, 32))
    assert main(args) == 0 and dataset_info(out).digest == info.digest
    assert main(["data", "synth", "--out", str(out), "--train", "10", "--test", "10"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(out), "--train", "10", "--test", "10", "--force"]) == 0
    assert dataset_info(out).source == "synthetic" and len(load_split(out, "test")) == 10


# ---------------------------------------------------------------- identity of every kind of data set


def test_dataset_info_of_a_generated_set_and_of_plain_cifar10(synth_root, tmp_path):
    info = dataset_info(synth_root)
    assert (info.source, info.num_classes, info.flip, info.mean, info.std) == ("synthetic", 10, True, CIFAR10_MEAN,
                                                                               CIFAR10_STD)
    assert info.digest == hashlib.sha256((synth_root / BASE_FOLDER / MARKER).read_bytes()).hexdigest()
    assert info.record() == {"source": "synthetic", "digest": info.digest, "num_classes": 10,
                             "n_train": info.n_train, "n_test": info.n_test, "n_val": 0, "image_shape": [3, 32, 32],
                             "augmentation": {"kind": "pad_crop", "padding": 4, "flip": True}}
    plain = tmp_path / "plain"
    (plain / BASE_FOLDER).mkdir(parents=True)
    cifar = dataset_info(plain)
    assert (cifar.source, cifar.n_train, cifar.n_test, cifar.digest) == ("cifar10", 50000, 10000, official_digest())
    text = "".join(f"{v}  {k}\n" for k, v in OFFICIAL_MD5.items())
    assert cifar.digest == hashlib.sha256(text.encode()).hexdigest()
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found"):
        dataset_info(tmp_path / "nothing")


def test_a_generated_set_keeps_cifar10_statistics_and_flips(synth_splits):
    train, test = synth_splits
    assert (train.mean, train.std, train.flip) == (CIFAR10_MEAN, CIFAR10_STD, True)
    assert (test.mean, test.std, test.flip) == (CIFAR10_MEAN, CIFAR10_STD, True)


def test_fetch_names_the_file_that_differs_instead_of_calling_cifar10_missing(synth_root, tmp_path, monkeypatch):
    import torchvision

    def no_download(self):
        raise AssertionError("fetch must not download over files that exist")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", no_download)
    root = tmp_path / "differs"
    shutil.copytree(synth_root, root)
    (root / BASE_FOLDER / MARKER).unlink()
    with pytest.raises(DataIntegrityError) as info:
        fetch_cifar10(root)
    message = str(info.value)
    assert f"{root / BASE_FOLDER / 'data_batch_1'} exists but is not the official CIFAR-10 file" in message
    assert "expected c99cafc152244af753f735de768cd75f" in message and "not found" not in message
    assert "--force" in message


# ---------------------------------------------------------------- the workflow's data rule


@pytest.mark.skipif(not (Path(sys.executable).parent / "snakemake").exists(), reason="snakemake is not installed")
def test_the_workflow_imports_each_configured_source_with_one_rule(tmp_path):
    """data.source cifar10/cifar100/digits/imagefolder: one data_import job, its options from the config,
    and every job reading the data folder it writes; synthetic: the data_synth job."""
    import os

    repo = Path(__file__).resolve().parents[1]
    for name in ("Snakefile", "workflow", "config", "profiles", "environment.yml"):
        src = repo / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for given in ("downloads", "pets"):  # the configured data.path folders exist (the workflow checks)
        (tmp_path / given).mkdir()
    cases = {
        "data: {source: cifar100, root: data/c100, path: downloads}\n":
            ("data_import", "icepick data import --source cifar100 --out data/c100 --path downloads >"),
        "data: {source: digits, root: data/digits}\n":
            ("data_import", "icepick data import --source digits --out data/digits --seed 0 --test-fraction 0.2 >"),
        "data: {source: imagefolder, root: data/pets, path: pets, split_seed: 3, test_fraction: 0.25, flip: false}\n":
            ("data_import", "icepick data import --source imagefolder --out data/pets --path pets --seed 3 "
                            "--test-fraction 0.25 --no-flip >"),
        "data: {source: synthetic, root: data/synth}\n":
            ("data_synth", "icepick data synth --out data/synth --train 4000 --test 1000 --seed 0 --difficulty standard >"),
    }
    for i, (overlay, (rule, command)) in enumerate(cases.items()):
        (tmp_path / f"o{i}.yaml").write_text(overlay)
        proc = subprocess.run(["snakemake", "results/resnet110/pretrained.pt", "-n", "-p", "--configfile",
                               f"o{i}.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert f"rule {rule}:" in out and command in out, out[-3000:]
        root = overlay.split("root: ")[1].split(",")[0].split("}")[0]
        assert f"--data {root} " in out


def test_an_import_never_replaces_the_folder_it_reads_from(images_src, tmp_path):
    src = tmp_path / "holder" / "images"
    shutil.copytree(images_src, src)
    with pytest.raises(ValueError, match="lies inside --out"):
        import_dataset("imagefolder", tmp_path / "holder", src, force=True)
    assert len(list(src.rglob("*.png"))) == len(list(images_src.rglob("*.png")))
