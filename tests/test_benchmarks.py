"""The optimised hot path computes what a plain one does, and the benchmark scripts run.

No benchmark runs here beyond a seconds-long smoke of ``python -m benchmarks.finetune``.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the benchmarks package lives beside icepick/, not inside it
    sys.path.insert(0, str(ROOT))

from icepick.data import Split, normalize, train_batches  # noqa: E402
from icepick.evaluate import accuracy, fold_batchnorm  # noqa: E402
from icepick.runtime import MEMORY_FORMAT  # noqa: E402
from icepick.finetune import FinetuneConfig, distillation_loss, finetune  # noqa: E402
from icepick.models import build_model  # noqa: E402


def _split(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                 torch.randint(0, 10, (n,), generator=g))


def _model_and_teacher(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A fresh model and a teacher whose BN statistics are not the identity."""
    torch.manual_seed(0)
    model = build_model(name)
    teacher = copy.deepcopy(model).train()
    with torch.no_grad():
        for _ in range(2):
            teacher(torch.randn(32, 3, 32, 32) * 2 + 0.5)
    return model, teacher.eval()


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


def test_optimised_finetune_follows_the_plain_loss_trajectory():
    init, teacher = _model_and_teacher("resnet20")
    split = _split(5 * 32, seed=3)
    fast, plain = copy.deepcopy(init), copy.deepcopy(init)
    result = finetune(fast, teacher, split, 0.01, FinetuneConfig(batch_size=32), seed=7)
    expected = _plain_losses(plain, teacher, split, 0.01, 32, seed=7)
    assert len(result.losses) == 5
    assert result.losses == pytest.approx(expected, rel=1e-4)
    assert result.mean_loss == pytest.approx(sum(expected) / 5, rel=1e-4)
    for p_fast, p_plain in zip(fast.parameters(), plain.parameters()):
        assert torch.allclose(p_fast, p_plain, atol=1e-3), "weights drifted apart beyond rounding"
    assert fast.conv1.weight.is_contiguous(memory_format=MEMORY_FORMAT)  # the student trains channels_last


def test_first_step_matches_on_mobilenet_too():
    init, teacher = _model_and_teacher("mobilenetv2_w025")
    split = _split(32, seed=4)
    result = finetune(copy.deepcopy(init), teacher, split, 0.01, FinetuneConfig(batch_size=32), seed=1)
    expected = _plain_losses(copy.deepcopy(init), teacher, split, 0.01, 32, seed=1)
    assert result.losses == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2_w025"])
def test_folded_batchnorm_computes_the_same_function(name):
    _, teacher = _model_and_teacher(name)
    folded = fold_batchnorm(teacher)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(not p.requires_grad for p in folded.parameters())
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x.contiguous(memory_format=MEMORY_FORMAT)), teacher(x), rtol=1e-4, atol=1e-5)


def test_accuracy_leaves_the_model_as_it_was():
    model, _ = _model_and_teacher("resnet20")
    model.train()
    before = {k: (v.clone(), v.stride()) for k, v in model.state_dict().items()}
    split = _split(300, seed=5)
    acc = accuracy(model, split)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key][0]) and value.stride() == before[key][1], key
    model.eval()
    with torch.no_grad():  # the plain way, NCHW, with the BNs, one batch
        plain = (model(normalize(split.images)).argmax(1) == split.labels).float().mean().item() * 100
    assert acc == pytest.approx(plain, abs=100 / 300 + 1e-9)  # at most one borderline image apart
    assert accuracy(model, split, 7) == acc  # the batch size does not matter


def test_freezing_benchmark_layouts_and_theory():
    from benchmarks.freezing import frozen_layers, theory
    from icepick.pruning import conv_layers

    model = build_model("resnet20")
    names = [n for n, _, _ in conv_layers(model)]
    assert frozen_layers(names, 0.0, "prefix") == []
    assert frozen_layers(names, 0.3, "prefix") == names[:6]  # ceil(0.3 * 19)
    spread = frozen_layers(names, 0.3, "spread")
    assert len(spread) == 6 and names[0] not in spread
    full, prefix = theory(model, []), theory(model, names[:6])
    assert full["step"] == full["student"] + full["forward"]
    assert prefix["student"] < full["student"]


def test_reference_loader_renders_the_authors_transforms():
    from benchmarks.reference import reference_accuracy, test_loader, train_loader

    split = _split(20, seed=6)
    x, y = next(iter(train_loader(split, batch_size=8)))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (8,)
    model = build_model("resnet20")
    assert reference_accuracy(model, test_loader(split, 8)) == pytest.approx(accuracy(model, split), abs=5.01)


def test_reference_reads_the_data_through_torchvisions_cifar10(synth_root, synth_splits):
    """The per-process reference reads the generated set with torchvision's reader (its md5 check
    passing on the marker's sums), the same images the pipeline reads."""
    from benchmarks.reference import cifar10_datasets

    train_set, test_set = cifar10_datasets(synth_root)
    for dataset, split in zip((train_set, test_set), synth_splits):
        assert torch.equal(torch.from_numpy(dataset.data).permute(0, 3, 1, 2), split.images)
        assert list(dataset.targets) == split.labels.tolist()
    x, y = test_set[0]
    assert x.shape == (3, 32, 32) and y == synth_splits[1].labels[0].item()


def test_reference_run_prunes_and_fine_tunes_as_asked(synth_root, tmp_path):
    """The reference's whole run as a command: the baseline fine-tunes after every step; the
    pruned model is smaller; the summary states the decisions."""
    from benchmarks.reference_run import main
    from icepick.pruning import count_params, load_model, save_model

    model = build_model("resnet20")
    save_model(model, tmp_path / "m.pt", {"kind": "pretrained"})
    threads = torch.get_num_threads()
    try:
        code = main(["--pretrained", str(tmp_path / "m.pt"), "--data", str(synth_root), "--method", "baseline",
                     "--ratio", "0.5", "--max-steps", "2", "--max-batches", "1", "--batch-size", "8",
                     "--device", "cpu", "--threads", "1", "--model-out", str(tmp_path / "p.pt"),
                     "--summary-out", str(tmp_path / "s.json")])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["n_steps"], summary["n_finetunes"]) == (2, 2)
    pruned, _ = load_model(tmp_path / "p.pt")
    assert count_params(pruned) < count_params(model)


def test_reference_run_needs_a_trace_to_freeze(synth_root, tmp_path, capsys):
    from benchmarks.reference_run import main
    from icepick.pruning import save_model

    save_model(build_model("resnet20"), tmp_path / "m.pt", {"kind": "pretrained"})
    code = main(["--pretrained", str(tmp_path / "m.pt"), "--data", str(synth_root), "--eta", "0.3",
                 "--model-out", str(tmp_path / "p.pt"), "--summary-out", str(tmp_path / "s.json")])
    assert code == 2 and "--trace" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["benchmarks.finetune", "benchmarks.freezing", "benchmarks.pruning_run",
                                    "benchmarks.reference_run"])
def test_benchmark_scripts_have_help(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(["--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_finetune_benchmark_smoke(tmp_path, capsys):
    from benchmarks.finetune import main

    threads = torch.get_num_threads()
    try:
        code = main(["--cases", "smoke-resnet20", "--repeats", "1", "--batches", "1", "--eval-images", "64",
                     "--no-memory", "--threads", "1", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    figures = json.loads((tmp_path / "finetune.json").read_text())
    case = figures["cases"][0]
    assert set(case["arms"]) == {"reference", "ours"}
    assert case["finetune_ratio"]["min"] > 0 and case["eval_ratio"]["median"] > 0
    assert "| smoke-resnet20 |" in (tmp_path / "finetune.md").read_text()
