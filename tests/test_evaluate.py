"""Test(.): accuracy on a BatchNorm-folded inference copy is the model's, and leaves it as it was."""

from __future__ import annotations

import pytest
import torch

from icepick.data import normalize
from icepick.evaluate import accuracy, correct_count, fold_batchnorm
from icepick.runtime import MEMORY_FORMAT


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2_w025"])
def test_folded_batchnorm_computes_the_same_function(name, model_and_teacher):
    _, teacher = model_and_teacher(name)
    folded = fold_batchnorm(teacher)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(not p.requires_grad for p in folded.parameters())
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x.contiguous(memory_format=MEMORY_FORMAT)), teacher(x), rtol=1e-4, atol=1e-5)


def test_accuracy_leaves_the_model_as_it_was(model_and_teacher, random_split):
    model, _ = model_and_teacher("resnet20")
    model.train()
    before = {k: (v.clone(), v.stride()) for k, v in model.state_dict().items()}
    split = random_split(300, seed=5)
    acc = accuracy(model, split)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key][0]) and value.stride() == before[key][1], key
    model.eval()
    with torch.no_grad():  # the plain way, NCHW, with the BNs, one batch
        plain = (model(normalize(split.images)).argmax(1) == split.labels).float().mean().item() * 100
    assert acc == pytest.approx(plain, abs=100 / 300 + 1e-9)  # at most one borderline image apart
    assert accuracy(model, split, 7) == acc  # the batch size does not matter


def test_accuracy_is_the_percentage_of_correct_images(model_and_teacher, random_split):
    model, _ = model_and_teacher("resnet14")
    split = random_split(50, seed=2)
    assert accuracy(model, split) == 100.0 * correct_count(model, split) / 50
