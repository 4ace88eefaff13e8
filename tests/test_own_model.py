"""Your model, your weights, your images: the paths a user takes outside the paper's models.

Transfer learning from torchvision's named weights (read from a local torch hub cache that the
test fills in the real layout; nothing downloads), a run from a state dict of a user's own
model through the command line, the warnings that save a user's day, and the refusal to run
a model on test images it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from icepick.cli import main
from icepick.data import import_dataset, synth_cifar10
from icepick.model_files import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _image_folder(root: Path, size: int, channels: int, per_class: int = 12, classes: int = 3) -> Path:
    """``classes`` class folders of ``per_class`` PNG images, each class a brightness band (learnable)."""
    from PIL import Image

    rng = np.random.default_rng(size * 10 + channels)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            base = 40 + 80 * c
            pixels = np.clip(rng.normal(base, 20, (size, size, channels)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(folder / f"{i}.png")
    return root


def _run(args: list[str]) -> None:
    assert main(args) == 0, args


# ---------------------------------------------------------------- transfer learning from torchvision's weights


@pytest.fixture()
def resnet18_cache(tmp_path, monkeypatch):
    """torchvision's resnet18 IMAGENET1K_V1, random weights of the real architecture saved where
    torchvision's cache keeps the real file."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    file.parent.mkdir(parents=True)
    torch.save(state, file)
    return state


@pytest.mark.slow
def test_pretrain_init_replaces_the_classifier_and_keeps_the_rest(resnet18_cache, tmp_path):
    data = tmp_path / "data"
    import_dataset("imagefolder", data, _image_folder(tmp_path / "images", 64, 3))
    out = tmp_path / "m.pt"
    _run(["pretrain", "--model", "torchvision:resnet18", "--init", "IMAGENET1K_V1", "--data", str(data),
          "--out", str(out), "--epochs-csv", str(tmp_path / "e.csv"), "--summary", str(tmp_path / "s.json"),
          "--epochs", "1", "--lr", "0.01", "--batch-size", "8", "--device", "cpu"])
    model, meta = load_model(out)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert model.fc.out_features == 3 and model.input_shape == (3, 64, 64)
    assert summary["replaced_layers"] == ["fc"] and meta["replaced"] == ["fc"]
    assert "ResNet18_Weights.IMAGENET1K_V1" in summary["init"]
    # the weights' own normalisation, ImageNet's, is what the model expects and what its file records
    assert model.normalization["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert model.trained_on["source"] == "imagefolder" and model.trained_on["image_shape"] == [3, 64, 64]


@pytest.mark.slow
def test_pretrain_init_with_no_epochs_converts_weights_of_the_same_class_count(tmp_path):
    torch.manual_seed(0)
    from icepick.models import build_model

    own = build_model("python:custom_cnn:tiny_net", 10)
    torch.save(own.state_dict(), tmp_path / "weights.pt")
    data = tmp_path / "synth"
    synth_cifar10(data, n_train=40, n_test=20, seed=0)
    _run(["pretrain", "--model", "python:custom_cnn:tiny_net", "--init", str(tmp_path / "weights.pt"),
          "--epochs", "0", "--data", str(data), "--out", str(tmp_path / "m.pt"),
          "--epochs-csv", str(tmp_path / "e.csv"), "--summary", str(tmp_path / "s.json"), "--device", "cpu"])
    model, _ = load_model(tmp_path / "m.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), own.state_dict().values()))
    assert model.trained_on is None  # icepick did not train it: no claim about its training images


# ---------------------------------------------------------------- your weights through `icepick run`


@pytest.mark.slow
def test_run_takes_a_state_dict_with_its_spec_on_grey_28x28_images(tmp_path):
    from icepick.models import build_model

    data = tmp_path / "grey"
    info = import_dataset("imagefolder", data, _image_folder(tmp_path / "images", 28, 1, per_class=10))
    assert info.image_shape == (1, 28, 28)
    torch.manual_seed(0)
    own = build_model("python:custom_cnn:tiny_net_any", 3, input_shape=(1, 28, 28))
    torch.save(own.state_dict(), tmp_path / "weights.pt")
    out = tmp_path / "run"
    _run(["run", "--pretrained", str(tmp_path / "weights.pt"), "--model", "python:custom_cnn:tiny_net_any",
          "--data", str(data), "--max-steps", "1", "--max-batches", "1", "--batch-size", "8",
          "--steps-out", str(out / "steps.csv"), "--summary-out", str(out / "summary.json"),
          "--model-out", str(out / "pruned.pt"), "--device", "cpu", "--no-progress"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "python:custom_cnn:tiny_net_any" and summary["n_steps"] == 1
    assert summary["provenance"]["data"]["image_shape"] == [1, 28, 28]
    assert (out / "summary.json.pretrained.pt").is_file()  # the weights, as an icepick model file
    # an untrained model on 3 balanced classes: the run says so, in the log and the summary
    assert any("within 5 points of chance" in w or "fine-tuning is capped" in w for w in summary["warnings"])


# ---------------------------------------------------------------- warnings and refusals


def test_warnings_name_a_near_chance_model_a_tiny_theta_short_fine_tunings_and_tiny_classes(synth_splits):
    from icepick.algorithm import RunConfig, _Reference, run_warnings
    from icepick.data import ExperimentData
    from icepick.finetune import FinetuneConfig

    train, test = synth_splits  # 256 / 128 images of 10 classes
    small = type(test)(test.images[:48], test.labels[:48], test.mean, test.std)
    data = ExperimentData(train, small, small)
    cfg = RunConfig(theta=1.5)
    near_chance = _Reference(test_correct=6, decision_correct=6)  # 12.5% of 48
    lines = run_warnings(cfg, FinetuneConfig(batch_size=128), data, near_chance)
    text = "\n".join(lines)
    assert "within 5 points of chance" in text
    assert "theta 1.5 is less than one of the 48 decision images (2.08 points)" in text
    assert "a fine-tuning is 2 batches (256 training images at batch 128)" in text and "batch size of 8 gives 32" in text
    assert "fewer than 5 test images" in text
    good = run_warnings(RunConfig(theta=2.5), FinetuneConfig(batch_size=8), ExperimentData(train, train, train),
                        _Reference(200, 200))
    assert good == []


@pytest.mark.slow
def test_a_run_on_test_images_the_model_was_trained_on_refuses_to_start(tmp_path, capsys):
    images = _image_folder(tmp_path / "images", 16, 3, per_class=10)
    data = tmp_path / "data"
    import_dataset("imagefolder", data, images, seed=0)
    model = tmp_path / "m.pt"
    _run(["pretrain", "--model", "resnet20", "--data", str(data), "--out", str(model), "--epochs", "1",
          "--batch-size", "8", "--epochs-csv", str(tmp_path / "e.csv"), "--summary", str(tmp_path / "s.json"),
          "--device", "cpu"])
    import_dataset("imagefolder", data, images, seed=1, force=True)  # the same images, split again
    out = tmp_path / "run"
    code = main(["run", "--pretrained", str(model), "--data", str(data), "--max-steps", "1", "--max-batches", "1",
                 "--steps-out", str(out / "s.csv"), "--summary-out", str(out / "s.json"),
                 "--model-out", str(out / "p.pt"), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "was trained on" in err and "test images of this data set" in err
    assert not (out / "s.json").exists()


# ---------------------------------------------------------------- images at their own size, end to end


@pytest.mark.slow
@pytest.mark.parametrize("size, channels", [(64, 3), (28, 1)])
def test_an_image_folder_at_its_own_size_goes_through_import_pretrain_run_and_compare(tmp_path, size, channels):
    """A 64x64 RGB and a 28x28 grey folder: imported at their own size, a model pretrained on them
    takes that shape, and a run and a comparison count MACs at it."""
    from icepick.models import build_model
    from icepick.pruning import count_macs

    data = tmp_path / "data"
    _run(["data", "import", "--source", "imagefolder", "--path", str(_image_folder(tmp_path / "images", size,
                                                                                     channels)), "--out", str(data)])
    model = tmp_path / "m.pt"
    _run(["pretrain", "--model", "resnet20", "--data", str(data), "--out", str(model), "--epochs", "1",
          "--batch-size", "8", "--epochs-csv", str(tmp_path / "e.csv"), "--summary", str(tmp_path / "s.json"),
          "--device", "cpu"])
    loaded, _ = load_model(model)
    assert loaded.input_shape == (channels, size, size) and loaded.conv1.in_channels == channels
    common = ["--max-steps", "2", "--max-batches", "2", "--batch-size", "8", "--device", "cpu"]
    run = tmp_path / "run"
    _run(["run", "--pretrained", str(model), "--data", str(data), "--steps-out", str(run / "steps.csv"),
          "--summary-out", str(run / "summary.json"), "--model-out", str(run / "pruned.pt"), "--no-progress", *common])
    summary = json.loads((run / "summary.json").read_text())
    unpruned = build_model("resnet20", 3, input_shape=(channels, size, size))
    assert summary["teacher_macs_per_sample"] == count_macs(unpruned)  # counted at the data's size
    assert summary["provenance"]["data"]["image_shape"] == [channels, size, size]
    augmentation = summary["provenance"]["data"]["augmentation"]["kind"]
    assert augmentation == ("random_resized_crop" if size >= 64 else "pad_crop")
    _run(["compare", "--pretrained", str(model), "--data", str(data), "--out", str(tmp_path / "cmp"), "--eta", "0.3",
          "--no-progress", *common])
    table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["table"]
    assert {row["method"] for row in table} >= {"icepick", "baseline"}
