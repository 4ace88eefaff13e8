"""Pruning does what the method says: L1 filter removal per block, physical, exact, safe."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from icepick.models import InvertedResidual, build_model
from icepick.model_files import load_model, save_model
from icepick.pruning import conv_layers, count_macs, count_params, layer_macs, model_widths, prunable_blocks, prune_block

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so equivalence checks mean something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.2)
    return model


def _model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _randomize_bn(build_model(name), seed + 1)


def _independent_removed(conv_weight: torch.Tensor, ratio: float) -> list[int]:
    """The ceil(r*C) smallest-L1 filters, computed filter by filter in Python (ties: lower index)."""
    norms = [float(conv_weight[i].abs().sum()) for i in range(conv_weight.shape[0])]
    n_remove = math.ceil(round(ratio * len(norms), 9))
    return sorted(sorted(range(len(norms)), key=lambda i: (norms[i], i))[:n_remove])


# ---------------------------------------------------------------- which filters


@pytest.mark.parametrize("name,block,ratio", [
    ("resnet20", 0, 0.4), ("resnet20", 4, 0.6), ("resnet20", "layer3.2", 0.4),
    ("mobilenetv2_w025", 0, 0.4), ("mobilenetv2_w025", "layers.7", 0.6),
])
def test_prune_block_removes_exactly_the_smallest_l1_filters(name, block, ratio):
    model = _model(name)
    blocks = dict(prunable_blocks(model))
    blk = blocks[block] if isinstance(block, str) else prunable_blocks(model)[block][1]
    width = blk.conv1.out_channels
    weight = blk.conv1.weight.detach().clone()
    removed = _independent_removed(weight, ratio)
    kept = prune_block(model, block, ratio)

    assert kept.dtype == torch.long
    assert kept.tolist() == [i for i in range(width) if i not in removed]
    assert len(removed) == math.ceil(ratio * width)
    new = width - len(removed)
    assert torch.equal(blk.conv1.weight, weight[kept])  # the survivors are untouched
    assert blk.conv1.weight.shape[0] == blk.conv1.out_channels == new
    assert blk.bn1.num_features == new and blk.bn1.running_mean.shape == (new,)
    if isinstance(blk, InvertedResidual):
        assert blk.conv2.weight.shape == (new, 1, 3, 3) and blk.conv2.groups == new
        assert blk.conv2.in_channels == blk.conv2.out_channels == new
        assert blk.bn2.num_features == new
        assert blk.conv3.in_channels == new and blk.conv3.weight.shape[1] == new
    else:
        assert blk.conv2.in_channels == new and blk.conv2.weight.shape[1] == new
        assert blk.conv2.out_channels == blk.bn2.num_features  # block output untouched
    assert model_widths(model)[[n for n, b in prunable_blocks(model) if b is blk][0]] == new


def test_ties_are_broken_by_index():
    model = _model("resnet20")
    blk = model.layer1[0]
    with torch.no_grad():
        blk.conv1.weight.fill_(0.5)  # all 16 filters have the same norm
    kept = prune_block(model, 0, 0.4)  # removes ceil(6.4) = 7: indices 0..6
    assert kept.tolist() == list(range(7, 16))


def test_ratio_times_width_float_noise_does_not_remove_an_extra_filter():
    model = build_model("resnet20", widths={"layer1.0": 10})
    kept = prune_block(model, 0, 0.7)  # 0.7 * 10 == 7.000000000000001 in floating point
    assert len(kept) == 3


# ------------------------------------------------------------------ equivalence


@pytest.mark.parametrize("name,block", [
    ("resnet20", "layer1.1"),   # identity shortcut
    ("resnet20", "layer2.0"),   # stride 2, padded shortcut
    ("mobilenetv2_w025", "layers.0"),   # t = 1
    ("mobilenetv2_w025", "layers.2"),   # stride 1, residual add
    ("mobilenetv2_w025", "layers.3"),   # stride 2, no residual
    ("mobilenetv2", "layers.1"),        # stride 1, 1x1 conv shortcut
])
def test_pruned_model_equals_unpruned_with_removed_channels_zeroed_at_the_consumer(name, block):
    model = _model(name).eval()
    reference = copy.deepcopy(model)
    blk = dict(reference.named_modules())[block]
    width = blk.conv1.out_channels
    kept = prune_block(model, block, 0.4)
    removed = sorted(set(range(width)) - set(kept.tolist()))
    consumer = blk.conv3 if isinstance(blk, InvertedResidual) else blk.conv2
    with torch.no_grad():
        consumer.weight[:, removed] = 0.0
        expected = reference(X)
        got = model(X)
    assert count_params(model) < count_params(reference)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_zeroing_the_consumer_is_not_a_no_op():
    """Guard for the equivalence test: the removed channels did matter."""
    model = _model("resnet20").eval()
    reference = copy.deepcopy(model)
    prune_block(model, "layer1.1", 0.4)
    with torch.no_grad():
        assert not torch.allclose(model(X), reference(X), atol=1e-4)


# --------------------------------------------------------------- all blocks, alpha


def _expected_params_after_pruning_all(model: nn.Module, ratio: float) -> int:
    total = count_params(model)
    for _, blk in prunable_blocks(model):
        c = blk.conv1.out_channels
        k = math.ceil(ratio * c)
        c_in = blk.conv1.in_channels
        kh, kw = blk.conv1.kernel_size
        if isinstance(blk, InvertedResidual):
            # conv1 (c_in x 1x1), bn1 (2), depthwise conv2 (3x3), bn2 (2), conv3 inputs (c_out)
            total -= k * (c_in + 2 + 9 + 2 + blk.conv3.out_channels)
        else:
            # conv1 (c_in x 3x3), bn1 (2), conv2 inputs (c_out x 3x3)
            total -= k * (c_in * kh * kw + 2 + blk.conv2.out_channels * 9)
    return total


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2_w025"])
def test_pruning_every_block_gives_the_expected_alpha_and_still_trains(name):
    model = _model(name)
    original = count_params(model)
    expected = _expected_params_after_pruning_all(model, 0.4)
    expected_widths = {n: b.conv1.out_channels - math.ceil(0.4 * b.conv1.out_channels) for n, b in prunable_blocks(model)}
    for i in range(len(prunable_blocks(model))):
        prune_block(model, i, 0.4)
    assert count_params(model) == expected
    assert model_widths(model) == expected_widths
    alpha = count_params(model) / original
    assert alpha == pytest.approx(expected / original)
    assert 0.4 < alpha < 0.75

    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = F.cross_entropy(model(X), torch.tensor([0, 1, 2, 3]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    # every parameter with a real gradient moved (a BN bias that feeds a train-mode BN only
    # through a per-channel shift gets a ~1e-9 gradient, which is mathematically right)
    moving = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().max() > 1e-6]
    assert "linear.weight" in moving and "conv1.weight" in moving
    assert all(not torch.equal(dict(model.named_parameters())[n], before[n]) for n in moving)
    for name_, blk in prunable_blocks(model):
        assert not torch.equal(blk.conv1.weight, before[f"{name_}.conv1.weight"])


# ------------------------------------------------------------------ side effects


def test_requires_grad_flags_are_preserved_by_name():
    model = _model("resnet20")
    frozen = {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer1.0.bn1.bias", "layer2.1.conv2.weight"}
    for n, p in model.named_parameters():
        p.requires_grad_(n not in frozen)
    prune_block(model, 0, 0.4)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen


@pytest.mark.parametrize("train", [True, False])
def test_mode_and_bn_statistics_are_unchanged(train):
    model = _model("mobilenetv2_w025")
    model.train(train)
    model.layers[5].eval()  # a mixed state must survive too
    modes = {n: m.training for n, m in model.named_modules()}
    buffers = {n: b.clone() for n, b in model.named_buffers() if not n.startswith("layers.0.")}
    prune_block(model, 0, 0.4)
    assert {n: m.training for n, m in model.named_modules()} == modes
    for n, b in model.named_buffers():
        if n in buffers:
            assert torch.equal(b, buffers[n]), n


def test_prune_block_works_inside_no_grad_and_with_an_example_input():
    model = _model("resnet20")
    with torch.no_grad():
        kept = prune_block(model, 2, 0.4, example_input=torch.randn(2, 3, 32, 32))
    assert len(kept) == 16 - 7


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize("ratio", [1.5, 0.0, 1.0, -0.1, True, "0.4", float("nan")])
def test_bad_ratio_is_a_clear_error(ratio):
    with pytest.raises(ValueError, match="ratio: .* is out of range; it must lie in \\(0, 1\\)"):
        prune_block(build_model("resnet20"), 0, ratio)


def test_ratio_that_would_remove_every_filter_is_refused():
    with pytest.raises(ValueError, match="at least one filter must remain"):
        prune_block(build_model("resnet20"), 0, 0.99)  # ceil(0.99 * 16) = 16


@pytest.mark.parametrize("block", [60, 9, -1])
def test_block_index_out_of_range_is_a_clear_error(block):
    with pytest.raises(ValueError, match=rf"block {block} is out of range; resnet20 has 9 prunable blocks \(0\.\.8\)"):
        prune_block(build_model("resnet20"), block, 0.4)


@pytest.mark.parametrize("block", ["layer4.0", "layer1", "conv1"])
def test_unknown_block_name_is_a_clear_error(block):
    with pytest.raises(ValueError, match=f"unknown block '{block}'; resnet20 has blocks layer1.0"):
        prune_block(build_model("resnet20"), block, 0.4)


def test_failed_prune_leaves_the_model_untouched():
    model = build_model("resnet20")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError):
        prune_block(model, 0, 0.99)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


# ------------------------------------------------------------------- conv layers


def test_conv_layers_pair_every_conv_with_its_bn():
    res = build_model("resnet20")
    layers = conv_layers(res)
    assert len(layers) == 19
    assert [n for n, _, _ in layers][:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    assert all(bn is not None and bn.num_features == conv.out_channels for _, conv, bn in layers)
    mods = dict(res.named_modules())
    assert layers[1][2] is mods["layer1.0.bn1"]

    mob = build_model("mobilenetv2")
    names = [n for n, _, _ in conv_layers(mob)]
    assert names[0] == "conv1" and names[-1] == "conv2"
    assert "layers.1.shortcut.0" in names
    assert len(names) == 1 + 17 * 3 + 4 + 1  # stem, 3 per block, 4 shortcut convs, head
    assert dict((n, bn) for n, _, bn in conv_layers(mob))["layers.1.shortcut.0"] is mob.layers[1].shortcut[1]


# -------------------------------------------------------------------------- MACs

# measured forward MACs per 32x32 image (convs + linear), pinned
EXACT_MACS = {
    "resnet20": 40_551_040,
    "resnet110": 252_887_680,
    "resnet152": 351_978_112,
    "mobilenetv2": 91_154_944,
    "mobilenetv2_w025": 8_384_128,
}
PAPER_MACS = {"resnet110": 255e6, "resnet152": 355e6, "mobilenetv2": 95e6}


@pytest.mark.parametrize("name", sorted(EXACT_MACS))
def test_count_macs_is_exact_and_near_the_paper(name):
    model = build_model(name)
    macs = count_macs(model)
    assert macs == EXACT_MACS[name]
    if name in PAPER_MACS:
        assert abs(macs - PAPER_MACS[name]) / PAPER_MACS[name] < 0.05


def test_layer_macs_are_per_layer_in_forward_order_and_restore_the_mode():
    model = build_model("resnet20").train()
    per_layer = layer_macs(model)
    assert model.training and all(m.training for m in model.modules())
    assert list(per_layer)[0] == "conv1" and list(per_layer)[-1] == "linear"
    assert per_layer["conv1"] == 32 * 32 * 16 * 3 * 9
    assert per_layer["linear"] == 64 * 10
    assert per_layer["layer3.0.conv1"] == 8 * 8 * 64 * 32 * 9
    assert sum(per_layer.values()) == count_macs(model)
    assert len(per_layer) == 19 + 1


def test_pruning_reduces_macs_as_expected():
    model = build_model("resnet20")
    before = layer_macs(model)
    prune_block(model, "layer1.0", 0.4)  # 16 -> 9 filters
    after = layer_macs(model)
    assert after["layer1.0.conv1"] == before["layer1.0.conv1"] * 9 // 16
    assert after["layer1.0.conv2"] == before["layer1.0.conv2"] * 9 // 16
    assert after["layer1.1.conv1"] == before["layer1.1.conv1"]


# ------------------------------------------------------------- repeated / copies


def test_a_block_can_be_pruned_again_and_after_deepcopy_and_load(tmp_path):
    model = _model("resnet20")
    prune_block(model, 0, 0.4)  # 16 -> 9
    twin = copy.deepcopy(model)
    assert len(prune_block(twin, 0, 0.4)) == 5  # 9 -> 5, graph rebuilt on the copy
    assert model.layer1[0].conv1.out_channels == 9  # the original is untouched
    save_model(twin, tmp_path / "m.pt")
    loaded, _ = load_model(tmp_path / "m.pt")
    assert len(prune_block(loaded, "layer1.0", 0.4)) == 3
    assert loaded.layer1[0].conv2.in_channels == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pruning_counting_and_loading_on_cuda(tmp_path):
    model = _model("mobilenetv2_w025").cuda()
    cpu_macs = count_macs(copy.deepcopy(model).cpu())
    assert count_macs(model) == cpu_macs
    kept = prune_block(model, 2, 0.4)
    assert kept.device.type == "cpu"
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert all(b.device.type == "cuda" for b in model.buffers())
    save_model(model, tmp_path / "m.pt")
    loaded, _ = load_model(tmp_path / "m.pt", device="cuda")
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(X.cuda()), model(X.cuda()))


# ------------------------------------------------------- any CNN (model specs)


def test_a_cnns_steps_are_the_groups_that_feed_no_addition_and_no_classifier_in_forward_order():
    from icepick.pruning import block_convs, conv_groups, step_convs

    model = build_model("python:custom_cnn:tiny_net")
    assert [name for name, _ in prunable_blocks(model)] == ["block_a", "plain1"]
    assert [name for name, _ in prunable_blocks(model, coupled=True)] == ["stem", "block_a", "plain1"]
    groups = {g.name: g for g in conv_groups(model)}
    assert groups["stem"].coupled and not groups["stem"].classifier
    assert groups["plain2"].classifier
    assert step_convs(model) == {"block_a": ["block_a", "block_b"], "plain1": ["plain1", "plain2"]}
    assert block_convs(model) == ["block_a", "block_b", "plain1", "plain2"]


def test_pruning_a_cnns_step_removes_the_smallest_l1_filters_and_the_inputs_that_read_them():
    model = build_model("python:custom_cnn:tiny_net")
    weight, reader = model.block_a.weight.detach().clone(), model.block_b.weight.detach().clone()
    removed = _independent_removed(weight, 0.4)  # ceil(0.4 * 12) = 5
    kept = prune_block(model, "block_a", 0.4)
    assert kept.tolist() == [i for i in range(12) if i not in removed] and len(kept) == 7
    assert torch.equal(model.block_a.weight, weight[kept]) and model.block_a_bn.num_features == 7
    assert torch.equal(model.block_b.weight, reader[:, kept])  # block_b reads only the survivors
    assert model.block_b.out_channels == 8 and model.stem.out_channels == 8  # the residual path is untouched
    assert model_widths(model) == {"stem": 8, "block_a": 7, "plain1": 10}


def test_a_pruned_cnn_is_rebuilt_from_its_widths():
    model = build_model("torchvision:resnet18")
    for name in ("layer1.0.conv1", "layer3.1.conv1"):
        prune_block(model, name, 0.6)
    rebuilt = build_model("torchvision:resnet18", widths=model_widths(model))
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))
    assert rebuilt.layer1[0].conv1.out_channels == 25 and rebuilt.layer3[1].conv2.in_channels == 102


def test_a_cnn_torch_pruning_cannot_trace_is_named_in_one_line():
    from custom_cnn import grey_net

    model = grey_net()  # build_model refuses it earlier: it cannot classify a 3x32x32 image
    model.arch_name = "python:custom_cnn:grey_net"
    with pytest.raises(ValueError, match=r"^model python:custom_cnn:grey_net: Torch-Pruning cannot trace it on a "
                                         r"3x32x32 image \(RuntimeError: [^\n]*\)$"):
        prunable_blocks(model)


def test_a_cnn_without_a_prunable_group_has_no_steps():
    assert prunable_blocks(build_model("python:custom_cnn:head_only")) == []


@pytest.mark.parametrize("name,steps", [("torchvision:resnet18", 8), ("torchvision:vgg11_bn", 7),
                                        ("torchvision:mobilenet_v3_small", 21)])
def test_torchvision_models_have_the_expected_steps(name, steps):
    model = build_model(name)
    assert len(prunable_blocks(model)) == steps


# ------------------------------------------- any CNN: output, grouped convolutions, safety


def _classifies(model: nn.Module, shape=(3, 32, 32)) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(model.eval()(torch.randn(2, *shape)).shape)


def test_a_convolutional_classifier_is_the_models_output_and_never_a_step():
    from icepick.pruning import conv_groups

    model = build_model("python:custom_cnn:all_conv_net")
    groups = {g.name: g for g in conv_groups(model)}
    assert groups["classifier"].output and not groups["classifier"].offered
    assert "model's output" in groups["classifier"].reason()
    assert [name for name, _ in prunable_blocks(model, coupled=True)] == ["conv1", "conv2"]
    for name in ("conv1", "conv2"):
        prune_block(model, name, 0.6)
    assert model.conv2.out_channels == 6 and model.classifier.in_channels == 6 and model.classifier.out_channels == 10
    assert _classifies(model) == (2, 10)


def test_squeezenets_classifier_is_no_step_and_every_step_keeps_the_ten_classes():
    model = build_model("torchvision:squeezenet1_0")  # its classifier is a 1x1 convolution
    steps = [name for name, _ in prunable_blocks(model, coupled=True)]
    assert len(steps) == 25 and "classifier.1" not in steps and steps[-1] == "features.12.expand3x3"
    for name in steps:
        prune_block(model, name, 0.6)
    assert model.classifier[1].out_channels == 10 and _classifies(model) == (2, 10)


def test_a_prune_that_breaks_the_model_is_undone_and_named():
    model = build_model("python:custom_cnn:scaled_net")  # conv1's channels meet a buffer Torch-Pruning cannot see
    before = copy.deepcopy(model.state_dict())
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.conv2.weight.requires_grad_(False)
    model.train()
    with pytest.raises(ValueError, match=r"^pruning step 'conv1' of python:custom_cnn:scaled_net breaks the model "
                                         r"\(it no longer runs on a 3x32x32 image: RuntimeError: [^\n]*\); the prune "
                                         r"was undone, the model is as before: stop before this step \(--max-steps\)[^\n]*$"):
        prune_block(model, "conv1", 0.4)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert model.conv1.out_channels == 8 and model.conv2.in_channels == 8 and model.training
    assert not model.conv2.weight.requires_grad and model.conv1.weight.requires_grad and len(flags) == 6
    assert _classifies(model) == (2, 10)


def test_a_prune_that_changes_the_class_count_is_refused(monkeypatch):
    import icepick.pruning as pruning

    model = build_model("python:custom_cnn:tiny_net")
    before = copy.deepcopy(model.state_dict())
    monkeypatch.setattr(model, "num_classes", 7)  # what a prune that cut the classifier would look like
    with pytest.raises(ValueError, match=r"^pruning step 'block_a' of python:custom_cnn:tiny_net breaks the model "
                                         r"\(it would give \(1, 10\) for 1 3x32x32 image\(s\), not \(1, 7\)\)"):
        pruning.prune_block(model, "block_a", 0.4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _zeroed_grouped(model: nn.Module, reader: nn.Conv2d, removed: list[int]) -> nn.Module:
    """``model`` with ``reader``'s input channels ``removed`` zeroed (what pruning them must equal)."""
    clone = copy.deepcopy(model)
    conv = clone.get_submodule(next(n for n, m in model.named_modules() if m is reader))
    per = conv.in_channels // conv.groups
    with torch.no_grad():
        for c in removed:  # input channel c is position c % per of channel group c // per
            group, pos = divmod(c, per)
            rows = conv.out_channels // conv.groups
            conv.weight[group * rows:(group + 1) * rows, pos] = 0
    return clone


def test_a_group_that_feeds_a_grouped_convolution_loses_the_same_positions_of_every_channel_group():
    from icepick.pruning import conv_groups

    torch.manual_seed(0)
    model = _randomize_bn(build_model("python:custom_cnn:grouped_net"))
    groups = {g.name: g for g in conv_groups(model)}
    assert groups["reduce"].channel_groups == 4 and groups["grouped"].channel_groups == 4
    assert groups["reduce"].note == "feeds grouped convolution grouped (groups=4): pruned in multiples of 4"
    assert groups["grouped"].note == "is a grouped convolution (groups=4): pruned in multiples of 4"
    assert groups["narrow"].refused.startswith("feeds grouped convolution spread (groups=4): its 4 channels make 4 "
                                               "channel groups of 1")
    assert [name for name, _ in prunable_blocks(model, coupled=True)] == ["stem", "reduce", "grouped"]
    # position scores, summed over the 4 channel groups of 4: position 2 lowest, then 0
    scores = torch.tensor([1.0, 5, 0, 9] * 4) + torch.tensor([0.0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    removed = [0, 2, 4, 6, 8, 10, 12, 14]  # ceil(0.4 * 4) = 2 positions of each group: 8 filters
    reference = _zeroed_grouped(model, model.grouped, removed)
    kept = prune_block(model, "reduce", 0.4, scores=scores)
    assert kept.tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert model.reduce.out_channels == 8 and model.grouped.in_channels == 8 and model.grouped.groups == 4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference.eval()(x))


def test_a_grouped_convolutions_own_filters_go_in_equal_numbers_from_each_group():
    torch.manual_seed(0)
    model = _randomize_bn(build_model("python:custom_cnn:grouped_net"))
    prune_block(model, "reduce", 0.4)  # forward order, as a run prunes: 2 of 4 input positions per group go
    assert model.grouped.weight.shape == (16, 2, 3, 3) and model.grouped.groups == 4
    kept = prune_block(model, "grouped", 0.6)  # ceil(0.6 * 4) = 3 of 4 positions: 12 of 16 filters
    assert len(kept) == 4 and sorted({int(k) // 4 for k in kept}) == [0, 1, 2, 3]
    assert model.grouped.weight.shape == (4, 2, 3, 3) and model.grouped.groups == 4 and model.narrow.in_channels == 4
    assert _classifies(model) == (2, 10)


def test_a_grouped_convolution_left_with_one_filter_per_group_cannot_be_cut_again_and_says_so():
    model = build_model("python:custom_cnn:grouped_net")
    prune_block(model, "grouped", 0.6)  # 4 filters in 4 groups: Torch-Pruning now takes it for a depthwise one
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"^pruning step 'reduce' of python:custom_cnn:grouped_net breaks the model "
                                         r"\(.*\); the prune was undone, the model is as before: stop before "
                                         r"this step \(--max-steps\).*$"):
        prune_block(model, "reduce", 0.4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and _classifies(model) == (2, 10)


def test_a_pruned_grouped_model_is_rebuilt_from_its_widths():
    model = build_model("python:custom_cnn:grouped_net")
    prune_block(model, "reduce", 0.4)
    prune_block(model, "grouped", 0.6)
    assert model_widths(model) == {"stem": 8, "reduce": 8, "grouped": 4}
    rebuilt = build_model("python:custom_cnn:grouped_net", widths=model_widths(model))
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))
    with pytest.raises(ValueError, match=r"widths: 'reduce' -> 6 is not a multiple of 4 \(feeds grouped convolution"):
        build_model("python:custom_cnn:grouped_net", widths={"reduce": 6})


def test_regnets_grouped_convolutions_stay_valid_through_every_step():
    model = build_model("torchvision:regnet_x_400mf")
    steps = [name for name, _ in prunable_blocks(model)]
    assert len(steps) == 45
    for name in steps:
        prune_block(model, name, 0.4)
    grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert grouped and all(m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0 for m in grouped)
    block = model.trunk_output.block2[0].f
    assert block.b[0].groups == 4 and block.a[0].out_channels == 36 and block.b[0].out_channels == 36  # 64 - 4*7
    assert _classifies(model) == (2, 10)
    rebuilt = build_model("torchvision:regnet_x_400mf", widths=model_widths(model))
    rebuilt.load_state_dict(model.state_dict())
