"""Freeze(.): which layers the trace's scores rank, which are frozen, and that frozen layers
really skip work (no update, no gradient into a frozen prefix, fewer training MACs)."""

import pytest
import torch

from icepick.freezing import (
    apply_freezing,
    choose_frozen,
    layer_trainable,
    scored_layers,
    select_frozen,
    trainable_fraction,
    training_macs_per_sample,
)
from icepick.finetune import FinetuneConfig, finetune
from icepick.models import build_model
from icepick.pruning import conv_layers, count_macs, layer_macs


def test_a_frozen_layers_weights_do_not_change(random_split):
    torch.manual_seed(0)
    model = build_model("resnet20")
    teacher = build_model("resnet20").eval()
    names = [name for name, _, _ in conv_layers(model)]
    frozen = names[:4] + [names[10]]
    apply_freezing(model, frozen)
    layers = {name: (conv, bn) for name, conv, bn in conv_layers(model)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    finetune(model, teacher, random_split(), lr=0.05, cfg=FinetuneConfig(batch_size=32), seed=0)
    after = model.state_dict()
    for name in frozen:
        conv, bn = layers[name]
        assert torch.equal(after[f"{name}.weight"], before[f"{name}.weight"]), name
        bn_name = next(n for n, m in model.named_modules() if m is bn)
        assert torch.equal(after[f"{bn_name}.weight"], before[f"{bn_name}.weight"]), bn_name
        assert torch.equal(after[f"{bn_name}.bias"], before[f"{bn_name}.bias"]), bn_name
        assert conv.weight.grad is None and bn.weight.grad is None
    trained = [n for n in names if n not in frozen]
    changed = [n for n in trained if not torch.equal(after[f"{n}.weight"], before[f"{n}.weight"])]
    assert changed == trained


def test_no_gradient_flows_into_a_frozen_prefix():
    model = build_model("resnet20")
    names = [name for name, _, _ in conv_layers(model)]
    apply_freezing(model, names[:3])  # stem and the first block's two convs
    outputs = {}
    _, _, last_frozen_bn = conv_layers(model)[2]
    last_frozen_bn.register_forward_hook(lambda m, i, o: outputs.setdefault("prefix", o))
    model.train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert not outputs["prefix"].requires_grad  # autograd built no graph for the frozen prefix
    assert model.conv1.weight.grad is None


def test_select_frozen_takes_the_ceil_eta_n_smallest_scores():
    scores = {"a": 0.5, "b": 0.1, "c": 0.3, "d": 0.9, "e": 0.2}
    assert select_frozen(scores, 0.0) == []
    assert select_frozen(scores, 0.3) == ["b", "e"]  # ceil(1.5) = 2
    assert select_frozen(scores, 0.7) == ["a", "b", "c", "e"]  # ceil(3.5) = 4, in forward order
    assert select_frozen({"x": 1.0, "y": 1.0, "z": 0.0}, 0.5) == ["x", "z"]  # ties: earlier layer first


def test_freezing_lowers_trainable_fraction_and_training_macs():
    model = build_model("resnet20")
    macs = layer_macs(model)
    full = training_macs_per_sample(macs, layer_trainable(model))
    forward = sum(macs.values())
    assert full == 3 * forward - macs[next(iter(macs))]  # no input gradient for the first layer
    names = [name for name, _, _ in conv_layers(model)]
    apply_freezing(model, names[: len(names) // 2])
    assert 0 < trainable_fraction(model) < 1
    partial = training_macs_per_sample(macs, layer_trainable(model))
    assert forward < partial < full


def test_freezing_ranks_the_convolutions_of_the_prunable_blocks_by_default():
    """N of ceil(eta * N): the authors' trace scores each block's convolutions only."""
    expected = {"resnet110": (108, 109), "resnet152": (150, 151), "mobilenetv2": (51, 57)}
    for name, (blocks, every) in expected.items():
        model = build_model(name)
        assert len(scored_layers(model)) == blocks and len(scored_layers(model, "all")) == every, name
    model = build_model("mobilenetv2")
    scores = {name: float(i) for i, (name, _, _) in enumerate(conv_layers(model))}  # earlier layers move less
    frozen = choose_frozen(model, scores, 0.7)
    assert len(frozen) == 36  # ceil(0.7 * 51); with every convolution it would be ceil(0.7 * 57) = 40
    assert len(choose_frozen(model, scores, 0.7, "all")) == 40
    assert "conv1" not in frozen and "conv1" in choose_frozen(model, scores, 0.7, "all")  # the stem is not ranked
    assert all(".shortcut." not in name for name in frozen)


def test_a_trace_without_scores_for_the_models_layers_is_refused():
    with pytest.raises(ValueError, match="no score for"):
        choose_frozen(build_model("resnet20"), {"conv1": 0.0}, 0.3)


def test_training_macs_count_the_teachers_forward_pass():
    """Every fine-tuning batch also runs the KD teacher: its forward MACs are part of the work."""
    model = build_model("resnet14")
    macs = layer_macs(model)
    forward = sum(macs.values())
    first = macs[next(iter(macs))]
    assert training_macs_per_sample(macs, layer_trainable(model)) == 3 * forward - first
    teacher = count_macs(build_model("resnet14"))
    assert teacher == forward
    assert training_macs_per_sample(macs, layer_trainable(model), teacher) == 4 * forward - first
