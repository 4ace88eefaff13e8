"""Pruning criteria: each ranks a block's filters as it promises, on layers whose answer is known."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from icepick.config import ConfigError
from icepick.criteria import CRITERIA, DATA_CRITERIA, filter_scores as _filter_scores, fpgm_scores
from icepick.data import train_batches
from icepick.models import build_model
from icepick.pruning import filters_to_remove, prunable_blocks, prune_block


pytestmark = pytest.mark.usefixtures("one_thread")


def _block(name: str = "resnet20", index: int = 0):
    torch.manual_seed(0)
    model = build_model(name)
    return model, prunable_blocks(model)[index][1]


def filter_scores(model, block, criterion, **kwargs):
    return _filter_scores(model, block.conv1, block.bn1, criterion, **kwargs)


def _batches(split, n: int = 2, size: int = 16):
    return list(train_batches(split, size, seed=0, augment=False))[:n]


def _removed(scores: torch.Tensor, ratio: float) -> list[int]:
    return filters_to_remove(scores, ratio).tolist()


@pytest.mark.parametrize("name,block,ratio", [("resnet20", 0, 0.4), ("resnet20", 7, 0.6),
                                              ("mobilenetv2_w025", 5, 0.4)])
def test_the_l1_criterion_selects_exactly_what_the_paper_pruning_selects(name, block, ratio):
    model, blk = _block(name, block)
    other = copy.deepcopy(model)
    scores = filter_scores(model, blk, "l1")
    assert torch.equal(scores, blk.conv1.weight.detach().abs().sum(dim=(1, 2, 3)))
    assert torch.equal(prune_block(model, block, ratio, scores=scores), prune_block(other, block, ratio))


def test_l2_ranks_a_spread_filter_below_a_peaked_one_where_l1_does_the_opposite():
    model, blk = _block()
    with torch.no_grad():
        blk.conv1.weight.fill_(1.0)  # every other filter: L1 = 144, L2 = 12
        blk.conv1.weight[3].zero_()
        blk.conv1.weight[3, 0, 0, 0] = 3.0  # peaked: L1 = 3, L2 = 3
        blk.conv1.weight[5].zero_()
        blk.conv1.weight[5, 0] = 0.5  # spread over 9 entries: L1 = 4.5, L2 = 1.5
    assert _removed(filter_scores(model, blk, "l1"), 0.1) == [3, 5]  # ceil(1.6) = 2
    assert _removed(filter_scores(model, blk, "l1"), 0.05) == [3]
    assert _removed(filter_scores(model, blk, "l2"), 0.05) == [5]


def test_random_depends_on_the_seed_only():
    model, blk = _block()
    a = filter_scores(model, blk, "random", seed=7)
    with torch.no_grad():
        blk.conv1.weight.mul_(-3.0)
    assert torch.equal(filter_scores(model, blk, "random", seed=7), a)
    assert not torch.equal(filter_scores(model, blk, "random", seed=8), a)
    assert a.shape == (blk.conv1.out_channels,) and bool(((a >= 0) & (a < 1)).all())


def test_bn_scale_removes_the_channels_with_the_smallest_absolute_gamma():
    model, blk = _block()
    gamma = torch.linspace(1.0, 2.0, blk.bn1.num_features)
    gamma[[2, 9]] = torch.tensor([-0.01, 0.02])  # the sign does not matter
    gamma[4] = -5.0
    with torch.no_grad():
        blk.bn1.weight.copy_(gamma)
    assert _removed(filter_scores(model, blk, "bn_scale"), 0.1) == [2, 9]


def test_fpgm_removes_the_filter_at_the_geometric_median_not_the_smallest():
    conv = torch.nn.Conv2d(1, 5, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0]).view(5, 1, 1, 1))
    scores = fpgm_scores(conv)  # summed distances: 16, 13, 12, 13, 34
    assert scores.tolist() == [16.0, 13.0, 12.0, 13.0, 34.0]
    assert _removed(scores, 0.2) == [2]


def test_taylor_is_the_summed_weight_times_gradient_and_zero_for_a_filter_nothing_reads(synth_splits):
    model, blk = _block()
    unused = 6
    with torch.no_grad():
        blk.conv1.weight[unused].mul_(10.0)  # the largest L1 norm
        blk.conv2.weight[:, unused].zero_()  # ... but conv2 reads nothing from it
    batches = _batches(synth_splits[0])
    scores = filter_scores(model, blk, "taylor", batches=batches)

    reference = copy.deepcopy(model).eval()
    conv = prunable_blocks(reference)[0][1].conv1
    loss = sum(F.cross_entropy(reference(x), y, reduction="sum") for x, y in batches)
    loss.backward()
    expected = (conv.weight.detach().double() * conv.weight.grad.double()).abs().sum(dim=(1, 2, 3))
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-9)
    assert scores[unused] == 0.0 and _removed(scores, 0.05) == [unused]
    assert _removed(filter_scores(model, blk, "l1"), 0.05) != [unused]


def test_mean_activation_is_the_mean_relu_output_of_each_channel(synth_splits):
    model, blk = _block("mobilenetv2_w025", 3)
    with torch.no_grad():  # gamma 0: the channel's output is its beta everywhere
        blk.bn1.weight[[1, 4]] = 0.0
        blk.bn1.bias[1] = -2.0  # never active
        blk.bn1.bias[4] = 5.0  # always 5
    scores = filter_scores(model, blk, "mean_activation", batches=_batches(synth_splits[0]))
    assert scores[1] == 0.0 and scores[4] == pytest.approx(5.0)
    assert _removed(scores, 0.01) == [1]
    assert bool((scores >= 0).all())


def test_channel_entropy_of_known_distributions():
    from icepick.criteria import channel_entropy

    pooled = torch.tensor([  # 4 images x 5 channels; 4 bins between each channel's min and max
        [7.0, 0.0, 0.0, 0.0, 1.0],
        [7.0, 1.0, 0.0, 0.0, 1.0],
        [7.0, 2.0, 3.0, 0.0, 1.0],
        [7.0, 3.0, 3.0, 3.0, 1.0],
    ])
    h = channel_entropy(pooled, bins=4)
    # constant: 0 bits; one image per bin: log2(4) = 2; two bins of two: 1; shares 3/4 and 1/4: 0.811
    expected = torch.tensor([0.0, 2.0, 1.0, -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)), 0.0],
                            dtype=torch.float64)
    torch.testing.assert_close(h, expected)
    assert _removed(h, 0.4) == [0, 4]  # ceil(2.0) = 2: the two constant channels go first
    assert channel_entropy(torch.tensor([[0.0], [1.0]]), bins=1).tolist() == [0.0]  # one bin holds everything


def test_entropy_criterion_pools_each_channels_relu_output_per_image():
    """The layer's output is the input itself (an Identity), so each image's pooled value per channel is
    the mean of ReLU(input) over its positions, built here to land in known bins."""
    layer = torch.nn.Identity()
    model = torch.nn.Sequential(layer, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    images = torch.zeros(8, 3, 2, 2)
    images[:, 0] = 5.0  # the same for every image: 0 bits
    images[:, 1] = torch.arange(8.0).view(8, 1, 1)  # 8 distinct values into 8 bins: log2(8) = 3 bits
    images[:4, 2, 0, 0] = 4.0  # positions mixed: pooled 1.0 for four images ...
    images[4:, 2] = -3.0  # ... and ReLU(-3) = 0 for the other four: 1 bit
    batches = [(images[:5], torch.zeros(5, dtype=torch.long)), (images[5:], torch.zeros(3, dtype=torch.long))]
    from icepick.criteria import entropy_scores

    scores = entropy_scores(model, layer, batches, bins=8)
    torch.testing.assert_close(scores, torch.tensor([0.0, 3.0, 1.0], dtype=torch.float64))


def test_entropy_in_a_block_ranks_a_dead_channel_first(synth_splits):
    model, blk = _block("mobilenetv2_w025", 3)
    with torch.no_grad():  # gamma 0: the channel's output is its beta at every position of every image
        blk.bn1.weight[2] = 0.0
        blk.bn1.bias[2] = 5.0
    scores = filter_scores(model, blk, "entropy", batches=_batches(synth_splits[0]))
    assert scores[2] == 0.0 and bool((scores >= 0).all()) and bool((scores <= math.log2(100) + 1e-9).all())
    assert scores.shape == (blk.conv1.out_channels,) and float(scores.max()) > 1.0


@pytest.mark.parametrize("criterion", CRITERIA)
def test_scoring_leaves_the_model_as_it_was(criterion, synth_splits):
    model, blk = _block()
    model.train()
    model.layer1[1].conv1.weight.requires_grad_(False)  # a frozen layer stays frozen
    before = copy.deepcopy(model.state_dict())
    filter_scores(model, blk, criterion, seed=1, batches=_batches(synth_splits[0]))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    assert all(m.training for m in model.modules())
    assert not model.layer1[1].conv1.weight.requires_grad and blk.conv1.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("criterion", sorted(DATA_CRITERIA))
def test_a_data_criterion_without_batches_is_an_error(criterion):
    model, blk = _block()
    with pytest.raises(ValueError, match=f"criterion: '{criterion}' ranks filters on training batches"):
        filter_scores(model, blk, criterion)


def test_an_unknown_criterion_is_named():
    model, blk = _block()
    with pytest.raises(ConfigError, match="criterion: 'l3' is not allowed; choose one of 'l1', 'l2'"):
        filter_scores(model, blk, "l3")


def test_scores_of_the_wrong_length_are_refused():
    model, _ = _block()
    with pytest.raises(ValueError, match=r"scores: \(3,\) does not match the 16 filters of layer1.0"):
        prune_block(model, 0, 0.4, scores=torch.ones(3))


# ------------------------------------------------ bn_scale on models without BatchNorm


def test_bn_scale_on_a_model_without_batchnorm_is_refused_before_the_first_prune(tmp_path):
    import icepick

    model = build_model("python:custom_cnn:all_conv_net")  # no BatchNorm anywhere, as SqueezeNet
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(24) % 10
    with pytest.raises(ConfigError, match=r"^criterion: 'bn_scale' ranks filters by the BatchNorm after the pruned "
                                          r"convolution, but step 'conv1' of python:custom_cnn:all_conv_net has none "
                                          r"\(and 1 more of its 2 steps\); choose another criterion \(l1, l2, fpgm, "
                                          r"\.\.\.\)$"):
        icepick.iterative_prune(model, (images[:16], labels[:16]), (images[16:], labels[16:]), device="cpu",
                                criterion="bn_scale", theta=100, batch_size=8, out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "steps.csv").exists()


def test_bn_scale_names_a_later_step_without_batchnorm_at_the_first_step():
    from icepick.algorithm import RunConfig, _filter_scores

    model = build_model("python:custom_cnn:grouped_net")
    model.grouped_bn = torch.nn.Identity()  # the third step's convolution loses its BatchNorm
    cfg = RunConfig(criterion="bn_scale")
    with pytest.raises(ConfigError, match=r"^criterion: 'bn_scale' .* but step 'grouped' of "
                                          r"python:custom_cnn:grouped_net has none; choose another criterion"):
        _filter_scores(cfg, model, None, "stem", 1)
    scores = _filter_scores(RunConfig(criterion="l1"), model, None, "stem", 1)  # the others are unaffected
    assert scores.shape == (8,)


def test_bn_scale_on_squeezenet_is_one_line():
    from icepick.criteria import check_criterion
    from icepick.pruning import pruned_layers

    model = build_model("torchvision:squeezenet1_0")
    steps = [(name, pruned_layers(model, blk)[1]) for name, blk in prunable_blocks(model)]
    with pytest.raises(ConfigError, match=r"^criterion: 'bn_scale' .* step 'features.0' of torchvision:squeezenet1_0 "
                                          r"has none \(and 24 more of its 25 steps\)"):
        check_criterion("bn_scale", steps, "torchvision:squeezenet1_0")
    check_criterion("l1", steps, "torchvision:squeezenet1_0")  # the criteria that need no BatchNorm pass
