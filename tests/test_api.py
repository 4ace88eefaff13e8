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


def test_images_of_another_size_are_refused_with_what_to_do():
    images = torch.zeros(8, 3, 28, 28, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"images: \(8, 3, 28, 28\) is not \[N, 3, 32, 32\]; resize or crop"):
        icepick.iterative_prune(build_model("resnet20"), (images, torch.zeros(8)), (images, torch.zeros(8)))


def test_labels_beyond_the_models_classes_are_refused():
    images, labels = _tensors(16, 3)
    with pytest.raises(ConfigError, match="labels: they must lie in 0..9"):
        icepick.iterative_prune(build_model("resnet20"), (images, labels + 5), (images, labels), device="cpu")
