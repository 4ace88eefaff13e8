"""Test(.): accuracy on a BatchNorm-folded inference copy is the model's, and leaves it as it was."""

from __future__ import annotations

import pytest
import torch

from icepick.data import eval_batches, normalize
from icepick.evaluate import Evaluator, accuracy, correct_count, fold_batchnorm, free_memory, macs_before
from icepick.pruning import count_macs, layer_macs, prunable_blocks, prune_block
from icepick.runtime import MEMORY_FORMAT


pytestmark = pytest.mark.usefixtures("one_thread")


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


# ------------------------------------------------------------------ incremental evaluation


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2_w025"])
def test_the_forward_helpers_split_the_forward_pass_exactly(name, model_and_teacher):
    """prefix then suffix (and any chain of spans) is the full forward pass bit for bit, on a folded copy."""
    from icepick.models import has_forward_span

    _, teacher = model_and_teacher(name)
    net = fold_batchnorm(teacher)
    assert has_forward_span(teacher) and has_forward_span(net)
    blocks = [block for block, _ in net.span_blocks()]
    assert blocks == [block for block, _ in prunable_blocks(teacher)]
    x = torch.randn(9, 3, 32, 32).contiguous(memory_format=MEMORY_FORMAT)
    with torch.inference_mode():
        full = net(x)
        assert torch.equal(net.forward_span(x), full)
        for block in blocks:
            assert torch.equal(net.forward_span(net.forward_span(x, None, block), block, None), full), block
        middle, late = blocks[2], blocks[-2]
        chained = net.forward_span(net.forward_span(net.forward_span(x, None, middle), middle, late), late)
        assert torch.equal(chained, full)
    with pytest.raises(ValueError, match="comes before block"):
        net.forward_span(x, late, middle)
    with pytest.raises(ValueError, match="unknown block 'layer9.0'"):
        net.forward_span(x, "layer9.0")


def _teacher_and_blocks(name, model_and_teacher):
    _, teacher = model_and_teacher(name)
    return teacher, [block for block, _ in prunable_blocks(teacher)]


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2_w025"])
def test_an_evaluation_after_a_prune_starts_at_the_pruned_block_with_the_same_count(name, model_and_teacher,
                                                                                    random_split):
    model, blocks = _teacher_and_blocks(name, model_and_teacher)
    split = random_split(70, seed=3)
    cached, full = Evaluator(split, 16), Evaluator(split, 16, cache=False)
    first = cached.evaluate(model, blocks[0])
    assert first.start is None and first.kept == blocks[0] and cached.cached_block == blocks[0]
    assert first.correct == correct_count(model, split, 16) and first.macs_saved == 0
    for k in range(3):  # prune block k, evaluate from its input, keep the input of block k + 1
        prune_block(model, blocks[k], 0.5)
        done, reference = cached.evaluate(model, blocks[k + 1]), full.evaluate(model, blocks[k + 1])
        assert done.correct == reference.correct == correct_count(model, split, 16)
        assert done.start == blocks[k] and reference.start is None and reference.macs_saved == 0
        before = macs_before(layer_macs(model), blocks[k])
        assert done.macs_saved == 70 * before > 0
        assert done.macs + done.macs_saved == reference.macs == 70 * count_macs(model)
        # what it kept is what a pass from the images computes, bit for bit, batch by batch
        net = fold_batchnorm(model)
        with torch.inference_mode():
            fresh = [net.forward_span(x, None, blocks[k + 1]) for x, _ in eval_batches(split, 16, MEMORY_FORMAT)]
        kept = cached._cache.batches
        assert len(kept) == len(fresh) == 5 and all(torch.equal(a, b) for a, b in zip(kept, fresh))
    assert cached.cache_bytes > 0 and full.cache_bytes == 0


def test_a_cache_is_not_used_once_the_layers_before_its_block_changed(model_and_teacher, random_split):
    model, blocks = _teacher_and_blocks("resnet20", model_and_teacher)
    split = random_split(40, seed=4)
    evaluator = Evaluator(split, 16)
    evaluator.evaluate(model, blocks[3])
    with torch.no_grad():
        model.conv1.weight.mul_(1.5)  # the stem changed (an optimizer step would do the same)
    prune_block(model, blocks[3], 0.5)
    done = evaluator.evaluate(model, blocks[4])
    assert done.start is None and done.macs_saved == 0 and done.correct == correct_count(model, split, 16)
    model.train()
    with torch.no_grad():  # a training-mode forward updates BN statistics only
        model(torch.randn(8, 3, 32, 32))
    model.eval()
    prune_block(model, blocks[4], 0.5)
    done = evaluator.evaluate(model, blocks[5])
    assert done.start is None and done.correct == correct_count(model, split, 16)
    prune_block(model, blocks[1], 0.5)  # a block before the cached one
    assert evaluator.evaluate(model).start is None and evaluator.cached_block is None


def test_a_cache_that_does_not_fit_is_not_kept(model_and_teacher, random_split, monkeypatch, caplog):
    from icepick import evaluate

    model, blocks = _teacher_and_blocks("resnet20", model_and_teacher)
    split = random_split(40, seed=6)
    evaluator = Evaluator(split, 16, name="test")
    monkeypatch.setattr(evaluate, "free_memory", lambda device: 4 * 40 * 16 * 32 * 32 * 4)  # just too little
    with caplog.at_level("INFO", logger="icepick.evaluate"):
        for k in range(2):
            done = evaluator.evaluate(model, blocks[k + 1])
            assert done.kept is None and evaluator.cached_block is None and done.macs_saved == 0
            prune_block(model, blocks[k + 1], 0.5)
    told = [r.getMessage() for r in caplog.records if "evaluation cache" in r.getMessage()]
    assert len(told) == 1 and "over a quarter of the free memory" in told[0]
    monkeypatch.setattr(evaluate, "free_memory", lambda device: 1 << 40)
    assert evaluator.evaluate(model, blocks[3]).kept == blocks[3]


def test_free_memory_is_read_on_a_cpu():
    assert free_memory(torch.device("cpu")) > 0
