"""Fine-tuning FT(.): the KD loss, freezing that really skips work, and the NaN guard."""

import math

import pytest
import torch
import torch.nn.functional as F

from icepick.data import Split
from icepick.finetune import SGD, FinetuneConfig, distillation_loss, finetune, kd_loss
from icepick.freezing import (
    apply_freezing,
    layer_trainable,
    select_frozen,
    trainable_fraction,
    training_macs_per_sample,
)
from icepick.models import build_model
from icepick.pruning import conv_layers, layer_macs


def _random_split(n: int = 64, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return Split(images, labels)


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


def test_a_frozen_layers_weights_do_not_change():
    torch.manual_seed(0)
    model = build_model("resnet20")
    teacher = build_model("resnet20").eval()
    names = [name for name, _, _ in conv_layers(model)]
    frozen = names[:4] + [names[10]]
    apply_freezing(model, frozen)
    layers = {name: (conv, bn) for name, conv, bn in conv_layers(model)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    finetune(model, teacher, _random_split(), lr=0.05, cfg=FinetuneConfig(batch_size=32), seed=0)
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


def test_nan_loss_stops_with_a_clear_error():
    model = build_model("resnet20")
    with torch.no_grad():
        model.linear.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        finetune(model, None, _random_split(32), lr=0.1, cfg=FinetuneConfig(batch_size=16), seed=0)


def test_finetune_is_deterministic_by_seed():
    def trained(seed):
        torch.manual_seed(0)
        model = build_model("resnet20")
        finetune(model, None, _random_split(), lr=0.05, cfg=FinetuneConfig(batch_size=32), seed=seed)
        return model.linear.weight.detach().clone()

    assert torch.equal(trained(1), trained(1))
    assert not torch.equal(trained(1), trained(2))


def test_max_batches_and_early_halt_cut_the_epoch_short():
    model = build_model("resnet20")
    split = _random_split(128)
    cfg = FinetuneConfig(batch_size=16, max_batches=3)
    assert finetune(model, None, split, 0.01, cfg, seed=0).batches == 3
    calls = []
    cfg = FinetuneConfig(batch_size=16, early_halt=2)
    result = finetune(model, None, split, 0.01, cfg, seed=0, should_stop=lambda: calls.append(1) or len(calls) == 2)
    assert result.halted_early and result.batches == 4 and len(calls) == 2


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
