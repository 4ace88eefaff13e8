"""Fine-tuning FT(.): the KD loss, the early-halt interval, the SGD update, the NaN guard, and the
optimised hot path computing what a plain loop does."""

import math

import copy

import pytest
import torch
import torch.nn.functional as F

from icepick.config import ConfigError
from icepick.data import train_batches
from icepick.finetune import SGD, FinetuneConfig, distillation_loss, finetune, halt_interval, kd_loss
from icepick.models import build_model
from icepick.runtime import MEMORY_FORMAT


def test_kd_loss_equals_a_hand_computation():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    T = 2.0
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        zs = sum(math.exp(v / T) for v in s_row)
        zt = sum(math.exp(v / T) for v in t_row)
        for s, t in zip(s_row, t_row):
            p_t = math.exp(t / T) / zt
            p_s = math.exp(s / T) / zs
            total += p_t * math.log(p_t / p_s)  # KL(teacher || student), no T^2 factor
    assert kd_loss(student, teacher, T).item() == pytest.approx(total / 2, rel=1e-6)
    labels = torch.tensor([1, 2])
    expected = F.cross_entropy(student, labels).item() + 0.5 * total / 2
    assert distillation_loss(student, teacher, labels, T, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_is_zero_when_student_matches_teacher():
    logits = torch.randn(4, 10)
    assert kd_loss(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_nan_loss_stops_with_a_clear_error(random_split):
    model = build_model("resnet20")
    with torch.no_grad():
        model.linear.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        finetune(model, None, random_split(32), lr=0.1, cfg=FinetuneConfig(batch_size=16), seed=0)


def test_finetune_is_deterministic_by_seed(random_split):
    def trained(seed):
        torch.manual_seed(0)
        model = build_model("resnet20")
        finetune(model, None, random_split(), lr=0.05, cfg=FinetuneConfig(batch_size=32), seed=seed)
        return model.linear.weight.detach().clone()

    assert torch.equal(trained(1), trained(1))
    assert not torch.equal(trained(1), trained(2))


def test_max_batches_and_early_halt_cut_the_epoch_short(random_split):
    model = build_model("resnet20")
    split = random_split(128)
    cfg = FinetuneConfig(batch_size=16, max_batches=3)
    assert finetune(model, None, split, 0.01, cfg, seed=0).batches == 3
    calls = []
    cfg = FinetuneConfig(batch_size=16, early_halt=2)
    result = finetune(model, None, split, 0.01, cfg, seed=0, should_stop=lambda: calls.append(1) or len(calls) == 2)
    assert result.halted_early and result.batches == 4 and len(calls) == 2


def test_the_early_halt_interval_is_a_fraction_of_the_epoch_or_a_number_of_batches(random_split):
    assert halt_interval(0.25, 391) == 98  # CIFAR-10 at batch 128: about every 100 batches, as before
    assert halt_interval(0.25, 12) == 3  # the same share of a 12-batch epoch: it checks there too
    assert halt_interval(0.25, 1) == 1
    assert halt_interval(100, 391) == 100 and halt_interval(0, 391) == 0
    calls = []
    cfg = FinetuneConfig(batch_size=16, early_halt=0.25)  # 8 batches: a check every 2
    result = finetune(build_model("resnet14"), None, random_split(128), 0.01, cfg, seed=0,
                      should_stop=lambda: calls.append(1) and False)
    assert result.batches == 8 and not result.halted_early and len(calls) == 3  # after batches 2, 4, 6
    assert FinetuneConfig().early_halt == 0.25  # on by default (Figure 1, case 4)


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan")])
def test_an_early_halt_that_is_neither_a_fraction_nor_whole_batches_is_refused(value):
    with pytest.raises(ConfigError, match="early_halt"):
        FinetuneConfig(early_halt=value)


@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 1e-4), (0.0, 1e-4), (0.9, 0.0)])
def test_our_sgd_makes_torch_optim_sgds_updates(momentum, weight_decay):
    g = torch.Generator().manual_seed(0)
    ours = [torch.randn(5, 3, generator=g, requires_grad=True), torch.randn(7, generator=g, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_(True) for p in ours]
    sgd = SGD(ours, lr=0.05, momentum=momentum, weight_decay=weight_decay)
    ref = torch.optim.SGD(theirs, lr=0.05, momentum=momentum, weight_decay=weight_decay, foreach=True)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=g) for p in ours]
        for a, b, grad in zip(ours, theirs, grads):
            a.grad, b.grad = grad.clone(), grad.clone()
        sgd.step()
        ref.step()
        sgd.zero_grad()
        ref.zero_grad(set_to_none=True)
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
            assert a.grad is None


def test_fine_tuning_does_not_import_torch_dynamo(tmp_path):
    """torch._dynamo's import is seconds of every fine-tuning job's start-up on a CPU."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from icepick.data import Split\n"
        "from icepick.finetune import FinetuneConfig, finetune\n"
        "from icepick.models import build_model\n"
        "split = Split(torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8), torch.arange(16) % 10)\n"
        "model = build_model('resnet20')\n"
        "finetune(model, build_model('resnet20'), split, 0.01, FinetuneConfig(batch_size=8), seed=0)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def _plain_losses(model, teacher, split, lr, batch_size, seed):
    """Fine-tuning the plain way: NCHW, no_grad teacher with its BNs, per-parameter SGD, zero_grad()."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, foreach=False)
    model.train()
    losses = []
    for x, y in train_batches(split, batch_size, seed=seed):
        opt.zero_grad()
        with torch.no_grad():
            z_t = teacher(x)
        loss = distillation_loss(model(x), z_t, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_optimised_finetune_follows_the_plain_loss_trajectory(model_and_teacher, random_split):
    init, teacher = model_and_teacher("resnet20")
    split = random_split(5 * 32, seed=3)
    fast, plain = copy.deepcopy(init), copy.deepcopy(init)
    result = finetune(fast, teacher, split, 0.01, FinetuneConfig(batch_size=32), seed=7)
    expected = _plain_losses(plain, teacher, split, 0.01, 32, seed=7)
    assert len(result.losses) == 5
    assert result.losses == pytest.approx(expected, rel=1e-4)
    assert result.mean_loss == pytest.approx(sum(expected) / 5, rel=1e-4)
    for p_fast, p_plain in zip(fast.parameters(), plain.parameters()):
        assert torch.allclose(p_fast, p_plain, atol=1e-3), "weights drifted apart beyond rounding"
    assert fast.conv1.weight.is_contiguous(memory_format=MEMORY_FORMAT)  # the student trains channels_last


def test_first_step_matches_on_mobilenet_too(model_and_teacher, random_split):
    init, teacher = model_and_teacher("mobilenetv2_w025")
    split = random_split(32, seed=4)
    result = finetune(copy.deepcopy(init), teacher, split, 0.01, FinetuneConfig(batch_size=32), seed=1)
    expected = _plain_losses(copy.deepcopy(init), teacher, split, 0.01, 32, seed=1)
    assert result.losses == pytest.approx(expected, rel=1e-5)
