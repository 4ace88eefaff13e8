"""icepick.data's imports (``icepick data import``), the manifest, the reader's checks and the
output-folder guard.

CIFAR-10 and CIFAR-100 are imported from files this module writes in their real on-disk
formats (CIFAR-10's pickled batches with bytes keys, as Python 2 wrote them; CIFAR-100's
``train``/``test``/``meta`` with ``fine_labels``), through the real code path, with their md5
list passed in place of the official one.
"""

from __future__ import annotations

import hashlib
import json
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
from icepick.data import (
    BASE_FOLDER,
    CIFAR10_MEAN,
    CIFAR10_STD,
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
    load_split,
    official_digest,
    stratified_split,
    synth_cifar10,
    train_batches,
)
from icepick.data.layout import DATA_FILES, md5

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def _numpy_stats(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = rows.reshape(len(rows), 3, 1024).astype(np.float64) / 255.0
    return x.mean(axis=(0, 2)), x.std(axis=(0, 2))


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
    """Three classes of PNG and JPEG images of different sizes, some greyscale, one RGBA, one nested."""
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
                (folder / "more").mkdir()
                image.convert("RGB").save(folder / "more" / f"img{i}.jpeg", quality=90)
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
    """The image folder, imported once (read-only for the tests)."""
    out = tmp_path_factory.mktemp("imported") / "animals"
    import_dataset("imagefolder", out, images_src)
    return out


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
    train, test = load_split(out, "train"), load_split(out, "test")
    assert torch.equal(train.images.reshape(60, 3072), torch.from_numpy(cifar10_src["train_x"]))
    assert train.labels.tolist() == cifar10_src["train_y"].tolist()
    assert test.labels.tolist() == cifar10_src["test_y"].tolist()
    mean, std = _numpy_stats(cifar10_src["train_x"])
    np.testing.assert_allclose(train.mean, mean, atol=1e-6)
    np.testing.assert_allclose(train.std, std, atol=1e-6)
    assert test.mean == train.mean and train.flip and test.flip
    # the official files are copied as they are: their md5s are the list's
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["files"] == {f"{BASE_FOLDER}/{name}": value for name, value in cifar10_src["table"].items()}
    assert manifest["split"]["kind"] == "official" and manifest["augmentation"] == {"crop_padding": 4, "flip": True}


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
    assert sorted(p.name for p in (out / BASE_FOLDER).iterdir()) == sorted(DATA_FILES)
    with open(out / BASE_FOLDER / "batches.meta", "rb") as handle:
        assert pickle.load(handle)["label_names"] == cifar100_src["names"]
    train, test = load_split(out, "train"), load_split(out, "test")
    assert train.labels.tolist() == cifar100_src["train_y"].tolist()
    assert torch.equal(test.images.reshape(100, 3072), torch.from_numpy(cifar100_src["test_x"]))
    mean, std = _numpy_stats(cifar100_src["train_x"])
    np.testing.assert_allclose(train.mean, mean, atol=1e-6)
    np.testing.assert_allclose(train.std, std, atol=1e-6)
    manifest = json.loads((out / MANIFEST).read_text())
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
    out = tmp_path / "digits"
    info = import_dataset("digits", out)
    assert (info.source, info.num_classes, info.n_train, info.n_test, info.flip) == ("digits", 10, 1437, 360, False)
    assert info.classes == tuple(str(i) for i in range(10))
    train, test = load_split(out, "train"), load_split(out, "test")
    assert not train.flip and not test.flip
    for split in (train, test):
        assert torch.bincount(split.labels, minlength=10).min() > 0  # every class in both splits
        assert torch.equal(split.images[:, 0], split.images[:, 1]) and torch.equal(split.images[:, 0], split.images[:, 2])
    assert train.mean[0] == train.mean[1] == train.mean[2] and 0.1 < train.mean[0] < 0.5
    assert train.images.max() > 200  # scaled from 0..16 to 0..255
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["split"] == {"kind": "stratified", "test_fraction": 0.2, "seed": 0, "stratified": True}
    assert manifest["augmentation"]["flip"] is False and "scikit-learn" in manifest["origin"]["packages"]


def test_digits_without_scikit_learn_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert main(["data", "import", "--source", "digits", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("icepick data: error: source digits needs scikit-learn, which is not installed: "
                   "pip install 'icepick[digits]'")
    assert not (tmp_path / "d").exists()


def test_imagefolder_import_reads_png_and_jpeg_of_any_size_and_mode(imported_images):
    info = dataset_info(imported_images)
    assert info.classes == ("apple", "mango", "zebra")  # sorted folder names
    assert (info.num_classes, info.n_train + info.n_test, info.flip) == (3, 18, True)
    train, test = load_split(imported_images, "train"), load_split(imported_images, "test")
    assert len(train) + len(test) == 18 and train.images.shape[1:] == (3, 32, 32)
    for split in (train, test):
        assert sorted(split.labels.unique().tolist()) == [0, 1, 2]  # every class in both splits
    mean, std = _numpy_stats(train.images.reshape(len(train), 3072).numpy())
    np.testing.assert_allclose(train.mean, mean, atol=1e-6)
    np.testing.assert_allclose(train.std, std, atol=1e-6)
    manifest = json.loads((imported_images / MANIFEST).read_text())
    assert manifest["transform"].endswith("resize the shorter side to 32 (bilinear, antialiased) and centre-crop 32x32")
    # ceil(0.2 * 18) = 4 held out, shared 1.2 : 1.2 : 1.2, the remainder to the first class
    assert manifest["counts"]["per_class"] == {"apple": {"train": 4, "test": 2}, "mango": {"train": 5, "test": 1},
                                               "zebra": {"train": 5, "test": 1}}


def test_imagefolder_images_are_torchvisions_resize_and_centre_crop(tmp_path):
    """Shorter side to 32 (bilinear, antialiased), centre crop: torchvision's Resize(32) + CenterCrop(32)."""
    import torchvision.transforms as T
    from PIL import Image

    from icepick.data.importing import _to_32

    rng = np.random.default_rng(3)
    for h, w in [(90, 33), (36, 120), (32, 32), (17, 25), (64, 48)]:
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        expected = T.CenterCrop(32)(T.Resize(32, T.InterpolationMode.BILINEAR, antialias=True)(image))
        assert np.array_equal(_to_32(image).reshape(3, 32, 32).transpose(1, 2, 0), np.asarray(expected)), (h, w)
    grey = Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8), mode="L")
    rgb = _to_32(grey).reshape(3, 1024)
    assert np.array_equal(rgb[0], rgb[1]) and np.array_equal(rgb[0], rgb[2])


def test_the_manifests_md5s_are_the_files(imported_images):
    manifest = json.loads((imported_images / MANIFEST).read_text())
    assert set(manifest["files"]) == {f"{BASE_FOLDER}/{name}" for name in DATA_FILES}
    for rel, value in manifest["files"].items():
        assert md5(imported_images / rel) == value
    assert manifest["format"] == "icepick-dataset/1" and manifest["image_size"] == [3, 32, 32]
    assert "time" not in json.dumps(manifest)  # no time stamp: identical imports, identical manifests
    assert dataset_info(imported_images).digest == hashlib.sha256((imported_images / MANIFEST).read_bytes()).hexdigest()


def test_the_same_import_twice_gives_the_same_digest(images_src, imported_images, tmp_path):
    again = import_dataset("imagefolder", tmp_path / "again", images_src)
    assert again.digest == dataset_info(imported_images).digest
    assert (tmp_path / "again" / MANIFEST).read_bytes() == (imported_images / MANIFEST).read_bytes()
    other_seed = import_dataset("imagefolder", tmp_path / "seed1", images_src, seed=1)
    assert other_seed.digest != again.digest


def test_no_flip_is_recorded_and_reaches_the_split(images_src, tmp_path):
    info = import_dataset("imagefolder", tmp_path / "noflip", images_src, flip=False)
    assert not info.flip and not load_split(tmp_path / "noflip", "train").flip
    assert json.loads((tmp_path / "noflip" / MANIFEST).read_text())["augmentation"]["flip"] is False


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
    path = root / BASE_FOLDER / "data_batch_2"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataIntegrityError, match="data_batch_2 does not match the data set's manifest") as info:
        load_split(root, "test")
    assert "data import --source imagefolder" in str(info.value)
    shutil.copy(imported_images / BASE_FOLDER / "data_batch_2", path)
    (root / BASE_FOLDER / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch is missing"):
        load_split(root, "test")


def test_a_half_written_import_does_not_pass(images_src, tmp_path):
    """An import killed before its manifest: nothing under OUT; its staging folder is removed by the next one."""
    out = tmp_path / "crash"
    code = ("import os, icepick.data.importing as m\n"
            "m.write_manifest = lambda *a, **k: os._exit(9)\n"
            f"m.import_dataset('imagefolder', {str(out)!r}, {str(images_src)!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr
    assert not out.exists()
    stale = list(tmp_path.glob(".crash.import.*.tmp"))
    assert len(stale) == 1 and (stale[0] / BASE_FOLDER / "data_batch_1").exists()
    with pytest.raises(FileNotFoundError):
        load_split(out, "train")
    # its batches without the manifest (as if moved by hand) do not pass either
    shutil.copytree(stale[0], tmp_path / "by_hand")
    with pytest.raises(IncompleteDataError, match="the import is incomplete") as info:
        load_split(tmp_path / "by_hand", "train")
    assert f"python -m icepick data import --source SOURCE --out {tmp_path / 'by_hand'}" in str(info.value)
    import_dataset("imagefolder", out, images_src)
    assert not list(tmp_path.glob(".crash.*.tmp")) and len(load_split(out, "test")) == 4


def test_a_failed_import_leaves_the_previous_data_set_as_it_was(images_src, imported_images, tmp_path):
    out = tmp_path / "keep"
    shutil.copytree(imported_images, out)
    before = (out / MANIFEST).read_bytes()
    broken = tmp_path / "broken"
    shutil.copytree(images_src, broken)
    (broken / "mango" / "img0.png").write_bytes(b"not a png")
    with pytest.raises(DataSourceError, match=r"mango/img0.png: cannot read this image"):
        import_dataset("imagefolder", out, broken)
    assert (out / MANIFEST).read_bytes() == before and len(load_split(out, "train")) == 14
    assert not list(tmp_path.glob(".keep.*.tmp"))


def test_force_is_needed_to_write_over_a_folder_with_other_files(images_src, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(DestinationError) as info:
        import_dataset("imagefolder", out, images_src)
    assert str(out) in str(info.value) and "--force" in str(info.value) and "thesis.tex" in str(info.value)
    assert (out / "thesis.tex").read_text() == "precious"
    for command in (lambda: synth_cifar10(out, 20, 20, 0), lambda: fetch_cifar10(out)):
        with pytest.raises(DestinationError, match="--force"):
            command()
    info2 = import_dataset("imagefolder", out, images_src, force=True)
    assert not (out / "thesis.tex").exists() and dataset_info(out).digest == info2.digest


def test_a_data_set_of_another_source_is_not_written_over(imported_images, synth_root, tmp_path, cifar10_src):
    with pytest.raises(DestinationError, match="holds an imagefolder data set"):
        synth_cifar10(imported_images, 20, 20, 0)
    with pytest.raises(DestinationError, match="holds an imagefolder data set"):
        fetch_cifar10(imported_images)
    with pytest.raises(DestinationError, match="holds a generated data set"):
        import_dataset("cifar10", synth_root, cifar10_src["root"], official_md5=cifar10_src["table"])
    real = tmp_path / "real"  # the real CIFAR-10 (here: files on the md5 list) is never replaced by another source
    import_dataset("cifar10", real, cifar10_src["root"], official_md5=cifar10_src["table"])
    with pytest.raises(DestinationError, match="holds a cifar10 data set"):
        synth_cifar10(real, 20, 20, 0)


def test_reimport_of_the_same_source_needs_no_force(images_src, imported_images, tmp_path):
    out = tmp_path / "re"
    shutil.copytree(imported_images, out)
    assert import_dataset("imagefolder", out, images_src, seed=1).digest != dataset_info(imported_images).digest
    # Snakemake removes a rule's output (manifest.json) before it reruns the rule
    (out / MANIFEST).unlink()
    assert import_dataset("imagefolder", out, images_src).digest == dataset_info(imported_images).digest
    assert synth_cifar10(tmp_path / "s", 20, 20, 0) and synth_cifar10(tmp_path / "s", 30, 20, 1)  # regenerate
    (tmp_path / "s" / BASE_FOLDER / MARKER).unlink()
    synth_cifar10(tmp_path / "s", 20, 20, 0)


def test_cli_import_writes_the_data_set_and_refuses_another_source_without_force(images_src, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["data", "import", "--source", "imagefolder", "--path", str(images_src), "--out", str(out),
            "--test-fraction", "0.5", "--seed", "3", "--no-flip"]
    assert main(args) == 0
    info = dataset_info(out)
    assert (info.n_train, info.n_test, info.flip) == (9, 9, False)
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
                             "n_train": info.n_train, "n_test": info.n_test}
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
