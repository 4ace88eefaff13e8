"""The Python API: icepick.iterative_prune runs the method on tensors or a Dataset in memory."""

from __future__ import annotations

import doctest

import pytest
import torch

import icepick
import icepick.api
from icepick.config import ConfigError
from icepick.models import build_model
from icepick.pruning import model_widths


pytestmark = pytest.mark.usefixtures("one_thread")


def _tensors(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_the_docstring_example_runs():
    results = doctest.testmod(icepick.api, verbose=False, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 7 and results.failed == 0


def test_the_api_prunes_the_blocks_it_is_asked_to_and_leaves_the_input_model_alone(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20")
    widths = model_widths(model)
    images, labels = _tensors(96, 0)
    result = icepick.iterative_prune(model, (images[:64].float() / 255, labels[:64]), (images[64:], labels[64:]),
                                     device="cpu", method="baseline", lr_policy="fixed", max_steps=2,
                                     batch_size=32, out_dir=tmp_path / "run")
    assert model_widths(model) == widths  # the input model is untouched
    pruned = model_widths(result.model)
    assert [pruned[b] for b in ("layer1.0", "layer1.1", "layer1.2")] == [9, 9, 16]  # ceil(0.4 * 16) = 7 removed
    assert result.steps["finetuned"].all() and len(result.steps) == 2
    assert result.summary["provenance"]["data"]["source"] == "in-memory"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["pretrained.pt", "pruned.pt", "steps.csv",
                                                                    "summary.json"]
    with pytest.raises(ConfigError, match="out_dir: .* already holds pretrained.pt, steps.csv"):
        icepick.iterative_prune(model, (images[:64], labels[:64]), (images[64:], labels[64:]), device="cpu",
                                max_steps=1, out_dir=tmp_path / "run")


def test_a_torch_dataset_gives_the_same_run_as_its_tensors():
    images, labels = _tensors(80, 1)
    dataset = torch.utils.data.TensorDataset(images[:48].float() / 255, labels[:48])
    runs = []
    for train in (dataset, (images[:48], labels[:48])):
        torch.manual_seed(0)
        result = icepick.iterative_prune(build_model("resnet20"), train, (images[48:], labels[48:]), device="cpu",
                                         max_steps=2, batch_size=16, theta=0.0)
        runs.append(result.steps[["acc_pruned", "acc", "lr"]].values.tolist())
    assert runs[0] == runs[1]


@pytest.mark.parametrize("settings,message", [
    ({"thetta": 1.0}, r"unknown run setting\(s\) \['thetta'\]"),
    ({"criterion": "l3"}, "criterion: 'l3' is not allowed"),
])
def test_bad_settings_are_named(settings, message):
    images, labels = _tensors(40, 2)
    with pytest.raises(ConfigError, match=message):
        icepick.iterative_prune(build_model("resnet20"), (images, labels), (images, labels), **settings)


def test_images_of_their_own_size_and_channels_go_through_the_same_run():
    """Grey 28x28 images as NumPy's channel-last uint8 [N, H, W, 1], into a model built for them."""
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (48, 28, 28, 1), dtype=torch.uint8, generator=g).numpy()
    labels = torch.randint(0, 10, (48,), generator=g).numpy()
    model = build_model("resnet20", 10, input_shape=(1, 28, 28))
    result = icepick.iterative_prune(model, (images[:32], labels[:32]), (images[32:], labels[32:]), device="cpu",
                                     max_steps=1, batch_size=16)
    assert result.model.input_shape == (1, 28, 28) and result.model.conv1.in_channels == 1
    assert result.summary["provenance"]["data"]["image_shape"] == [1, 28, 28]
    assert len(result.normalization["mean"]) == 1  # the data's own statistics, one per channel


def test_a_cnn_built_for_32px_runs_on_64px_images_at_that_size():
    images, labels = _tensors(40, 4)
    big = torch.nn.functional.interpolate(images.float(), scale_factor=2).round().to(torch.uint8)
    model = build_model("resnet20")  # made for 3x32x32: a CNN with a global pool takes any size
    result = icepick.iterative_prune(model, (big[:24], labels[:24]), (big[24:], labels[24:]), device="cpu",
                                     max_steps=1, batch_size=8)
    assert result.model.input_shape == (3, 64, 64) and model.input_shape == (3, 32, 32)  # the input model untouched
    assert result.summary["teacher_macs_per_sample"] == 4 * icepick.pruning.count_macs(model) - 3 * 640  # conv x4, linear


def test_a_model_that_cannot_take_the_images_is_one_line():
    images, labels = _tensors(16, 5)
    with pytest.raises(ConfigError, match=r"^train: the model cannot classify the data's 3x32x32 images "
                                          r"\(RuntimeError: .*\)$"):
        icepick.iterative_prune(build_model("python:custom_cnn:grey_net", 10, input_shape=(1, 32, 32)),
                                (images, labels), (images, labels), device="cpu")


@pytest.mark.parametrize("scale, what", [(255.0, "0..255 floats"), (None, "normalised tensors")])
def test_float_images_outside_0_1_are_refused_never_clamped(scale, what):
    images, labels = _tensors(16, 6)
    floats = images.float() * (scale / 255.0) if scale else (images.float() / 255 - 0.5) / 0.25
    with pytest.raises(ValueError, match=r"images: float images must hold values in 0\.\.1 \(min .*, max .*\)"):
        icepick.iterative_prune(build_model("resnet20"), (floats, labels), (images, labels), device="cpu")


@pytest.mark.parametrize("normalize", [None, ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])
def test_the_normalisation_used_is_what_was_asked_and_is_returned(normalize):
    images, labels = _tensors(24, 7)
    result = icepick.iterative_prune(build_model("resnet20"), (images[:16], labels[:16]), (images[16:], labels[16:]),
                                     device="cpu", max_steps=1, batch_size=8, normalize=normalize)
    if normalize is None:
        assert result.normalization is None
    else:
        assert result.normalization == {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def test_labels_beyond_the_models_classes_are_refused():
    images, labels = _tensors(16, 3)
    with pytest.raises(ConfigError, match="labels: they must lie in 0..9"):
        icepick.iterative_prune(build_model("resnet20"), (images, labels + 5), (images, labels), device="cpu")
