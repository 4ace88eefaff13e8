"""ImageNet-1k and Tiny-ImageNet imports (icepick.data.imagenet) on generated files in the official layouts.

Every generated image is one solid colour that says which class it belongs to, so a test can
read back from the imported arrays which label each image got and whether the images stayed
in their labels' order. The devkit's ``meta.mat`` is written with scipy, its ILSVRC2012 ids
deliberately not in wnid order (the classes must be ordered by wnid, not by id).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icepick.cli import main
from icepick.data import import_dataset
from icepick.data.imagenet import GROUND_TRUTH, META, subset_size

scipy_io = pytest.importorskip("scipy.io")

WNIDS = ("n01440764", "n01443537", "n01484850")  # sorted: class indices 0, 1, 2
ILSVRC_ID = {"n01484850": 1, "n01440764": 2, "n01443537": 3}  # the devkit's ids: not in wnid order
COLOURS = {0: (230, 20, 20), 1: (20, 230, 20), 2: (20, 20, 230)}  # class -> solid colour


def _jpeg(path: Path, label: int, size: tuple[int, int] = (40, 30), grey: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, COLOURS[label])
    (image.convert("L") if grey else image).save(path, "JPEG", quality=95)


def _label_of(image: np.ndarray) -> int:
    """The class whose colour an imported [3, H, W] image shows (its brightest channel)."""
    return int(np.argmax(image.reshape(3, -1).mean(axis=1)))


def _write_meta(path: Path, wnids: dict[str, int]) -> None:
    """A devkit meta.mat: the leaf synsets given, and one synset with children (not a class)."""
    rows = [(i, w, 0) for w, i in wnids.items()] + [(1001, "n00000001", 3)]
    synsets = np.array(rows, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy_io.savemat(str(path), {"synsets": synsets})


def make_imagenet(root: Path, per_class: int = 4, val: str = "flat", n_val: int = 6) -> Path:
    """ImageNet in the official layout: train/<wnid>/*.JPEG, val/ flat with the devkit (or class folders)."""
    for c, wnid in enumerate(WNIDS):
        for i in range(per_class):
            size = (40, 30) if i % 2 else (24, 36)  # landscape and portrait: both resized, centre-cropped
            _jpeg(root / "train" / wnid / f"{wnid}_{i + 1}.JPEG", c, size, grey=(c == 1 and i == 0))
    val_labels = [(n * 2) % 3 for n in range(n_val)]  # 0, 2, 1, 0, 2, 1
    if val == "flat":
        for n, label in enumerate(val_labels, 1):
            _jpeg(root / "val" / f"ILSVRC2012_val_{n:08d}.JPEG", label)
        truth = root / GROUND_TRUTH
        truth.parent.mkdir(parents=True, exist_ok=True)
        truth.write_text("".join(f"{ILSVRC_ID[WNIDS[label]]}\n" for label in val_labels))
        _write_meta(root / META, ILSVRC_ID)
    else:
        for n, label in enumerate(val_labels, 1):
            _jpeg(root / "val" / WNIDS[label] / f"ILSVRC2012_val_{n:08d}.JPEG", label)
    return root


def make_tinyimagenet(root: Path, per_class: int = 3) -> Path:
    """Tiny-ImageNet in the official layout: wnids.txt, train/<wnid>/images/, val/images/ and val_annotations.txt."""
    (root / "wnids.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in (WNIDS[2], WNIDS[0], WNIDS[1])))  # not sorted
    for c, wnid in enumerate(WNIDS):
        for i in range(per_class):
            _jpeg(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", c, (64, 64))
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines = []
    for n in range(6):
        label = (n * 2) % 3
        _jpeg(root / "val" / "images" / f"val_{n}.JPEG", label, (64, 64))
        lines.append(f"val_{n}.JPEG\t{WNIDS[label]}\t0\t0\t63\t63\n")
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    (root / "test" / "images").mkdir(parents=True)  # unlabelled: never read
    _jpeg(root / "test" / "images" / "test_0.JPEG", 0, (64, 64))
    return root


def _arrays(out: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    return np.load(out / f"{split}_images.npy"), np.load(out / f"{split}_labels.npy")


# ---------------------------------------------------------------- ImageNet-1k


def test_imagenet_flat_validation_is_labelled_by_the_devkit_and_classes_are_ordered_by_wnid(tmp_path):
    src = make_imagenet(tmp_path / "imagenet")
    info = import_dataset("imagenet", tmp_path / "out", src, size=16, workers=1)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["format"] == "icepick-dataset/2" and manifest["layout"] == "npy"
    assert manifest["classes"] == list(WNIDS) and info.num_classes == 3
    assert manifest["image_shape"] == [3, 16, 16] and (info.n_train, info.n_test) == (12, 6)
    test_x, test_y = _arrays(tmp_path / "out", "test")
    assert test_y.tolist() == [(n * 2) % 3 for n in range(6)]  # the ground truth's ids, mapped through meta.mat
    assert [_label_of(x) for x in test_x] == test_y.tolist()  # each image kept with its own label
    train_x, train_y = _arrays(tmp_path / "out", "train")
    assert train_x.dtype == np.uint8 and train_x.shape == (12, 3, 16, 16)
    assert train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    colour = [_label_of(x) for x in train_x]
    assert colour[4] != 1 and colour[5:] == train_y.tolist()[5:]  # the grey image of class 1 is grey in 3 channels
    assert np.ptp(train_x[4].reshape(3, -1).mean(axis=1)) < 1
    assert "devkit" in manifest["split"]["test_from"]


def test_imagenet_validation_as_class_folders_gives_the_same_data(tmp_path):
    flat = import_dataset("imagenet", tmp_path / "a", make_imagenet(tmp_path / "flat"), size=16, workers=1)
    folders = import_dataset("imagenet", tmp_path / "b", make_imagenet(tmp_path / "folders", val="folders"),
                             size=16, workers=1)
    assert flat.classes == folders.classes and flat.n_test == folders.n_test
    xa, ya = _arrays(tmp_path / "a", "test")
    xb, yb = _arrays(tmp_path / "b", "test")
    assert sorted(zip(ya.tolist(), map(_label_of, xa))) == sorted(zip(yb.tolist(), map(_label_of, xb)))


def test_imagenet_size_defaults_to_224_as_torchvisions_models_take(tmp_path):
    src = make_imagenet(tmp_path / "imagenet", per_class=2, n_val=3)
    info = import_dataset("imagenet", tmp_path / "out", src, workers=1)
    assert info.image_shape == (3, 224, 224)


def test_train_fraction_keeps_a_seeded_stratified_share_and_the_manifest_says_so(tmp_path):
    src = make_imagenet(tmp_path / "imagenet", per_class=4)
    info = import_dataset("imagenet", tmp_path / "a", src, size=8, train_fraction=0.5, seed=3, workers=1)
    assert info.n_train == subset_size(12, 0.5) == 6
    _, labels = _arrays(tmp_path / "a", "train")
    assert np.bincount(labels).tolist() == [2, 2, 2]  # every class in proportion
    split = json.loads((tmp_path / "a" / "manifest.json").read_text())["split"]
    assert (split["train_fraction"], split["train_seed"], split["train_images_of"]) == (0.5, 3, 12)
    import_dataset("imagenet", tmp_path / "b", src, size=8, train_fraction=0.5, seed=3, workers=1)
    assert np.array_equal(_arrays(tmp_path / "a", "train")[0], _arrays(tmp_path / "b", "train")[0])
    assert info.n_test == 6  # the validation set is never subset


@pytest.mark.slow
def test_decoding_in_worker_processes_writes_the_same_arrays(tmp_path):
    src = make_imagenet(tmp_path / "imagenet")
    import_dataset("imagenet", tmp_path / "one", src, size=16, workers=1)
    import_dataset("imagenet", tmp_path / "two", src, size=16, workers=2)
    for name in ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


# ---------------------------------------------------------------- Tiny-ImageNet


def test_tinyimagenet_keeps_64x64_and_labels_the_validation_images_from_the_annotations(tmp_path):
    src = make_tinyimagenet(tmp_path / "tiny-imagenet-200")
    info = import_dataset("tinyimagenet", tmp_path / "out", src, workers=1)
    assert info.image_shape == (3, 64, 64) and info.classes == WNIDS  # sorted, whatever wnids.txt's order
    assert (info.n_train, info.n_test) == (9, 6)
    test_x, test_y = _arrays(tmp_path / "out", "test")
    assert test_y.tolist() == [(n * 2) % 3 for n in range(6)]
    assert [_label_of(x) for x in test_x] == test_y.tolist()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["augmentation"]["kind"] == "random_resized_crop" and manifest["augmentation"]["flip"] is True
    assert manifest["transform"].startswith("RGB")


# ---------------------------------------------------------------- bad input: one line, exit 2


def _fails(capsys, *args: str) -> str:
    code = main(["data", "import", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    return err[-1]


def test_missing_ground_truth_is_one_line_naming_the_devkit_file(tmp_path, capsys):
    src = make_imagenet(tmp_path / "imagenet")
    (src / GROUND_TRUTH).unlink()
    line = _fails(capsys, "--source", "imagenet", "--path", str(src), "--out", str(tmp_path / "out"), "--size", "8",
                  "--workers", "1")
    assert "ILSVRC2012_validation_ground_truth.txt is missing" in line and "ILSVRC2012_devkit_t12" in line
    assert not (tmp_path / "out").exists()


def test_a_training_wnid_not_in_meta_mat_is_one_line(tmp_path, capsys):
    src = make_imagenet(tmp_path / "imagenet")
    _write_meta(src / META, {"n01484850": 1, "n01440764": 2})  # n01443537 is not a class of this devkit
    line = _fails(capsys, "--source", "imagenet", "--path", str(src), "--out", str(tmp_path / "out"), "--size", "8")
    assert "n01443537 is not a wnid of" in line and "meta.mat" in line


def test_a_label_count_mismatch_is_one_line(tmp_path, capsys):
    src = make_imagenet(tmp_path / "imagenet")
    (src / "val" / "ILSVRC2012_val_00000006.JPEG").unlink()
    line = _fails(capsys, "--source", "imagenet", "--path", str(src), "--out", str(tmp_path / "out"), "--size", "8")
    assert "6 labels for the 5 images of" in line


def test_an_empty_class_folder_is_one_line(tmp_path, capsys):
    src = make_imagenet(tmp_path / "imagenet")
    for f in (src / "train" / WNIDS[1]).iterdir():
        f.unlink()
    line = _fails(capsys, "--source", "imagenet", "--path", str(src), "--out", str(tmp_path / "out"), "--size", "8")
    assert f"class folder '{WNIDS[1]}' holds no image" in line


def test_an_unreadable_image_is_one_line_and_leaves_no_import(tmp_path, capsys):
    src = make_imagenet(tmp_path / "imagenet")
    bad = src / "train" / WNIDS[2] / f"{WNIDS[2]}_2.JPEG"
    bad.write_bytes(b"not a jpeg")
    line = _fails(capsys, "--source", "imagenet", "--path", str(src), "--out", str(tmp_path / "out"), "--size", "8",
                  "--workers", "1")
    assert str(bad) in line and "cannot read this image" in line
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_tinyimagenet_unannotated_validation_image_is_one_line(tmp_path, capsys):
    src = make_tinyimagenet(tmp_path / "tiny")
    _jpeg(src / "val" / "images" / "val_99.JPEG", 0, (64, 64))
    line = _fails(capsys, "--source", "tinyimagenet", "--path", str(src), "--out", str(tmp_path / "out"))
    assert "val_annotations.txt: has no label for val_99.JPEG" in line


def test_tinyimagenet_annotation_of_an_unknown_wnid_is_one_line(tmp_path, capsys):
    src = make_tinyimagenet(tmp_path / "tiny")
    notes = src / "val" / "val_annotations.txt"
    notes.write_text(notes.read_text().replace(WNIDS[2], "n09999999", 1))
    line = _fails(capsys, "--source", "tinyimagenet", "--path", str(src), "--out", str(tmp_path / "out"))
    assert "n09999999, which" in line and "wnids.txt does not list" in line


@pytest.mark.parametrize("extra, words", [
    (["--train-fraction", "1.5"], "train_fraction"),
    (["--seed", "1"], "--seed chooses the --train-fraction subset"),
    (["--channels", "1"], "channels:"),
    (["--test-fraction", "0.2"], "test_fraction:"),
])
def test_options_imagenet_does_not_take_are_one_line(tmp_path, capsys, extra, words):
    src = make_imagenet(tmp_path / "imagenet", per_class=2, n_val=3)
    line = _fails(capsys, "--source", "imagenet", "--path", str(src), "--out", str(tmp_path / "out"), *extra)
    assert words in line


def test_train_fraction_is_for_the_imagenet_sources_only(tmp_path, capsys):
    line = _fails(capsys, "--source", "digits", "--out", str(tmp_path / "out"), "--train-fraction", "0.1")
    assert line.endswith("train_fraction: --train-fraction is for imagenet and tinyimagenet, not digits")
