"""Algorithm 1 (ICE-Pick) and the baseline, end to end on a small model and generated data."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

import icepick.algorithm as algorithm
from icepick.algorithm import RunConfig, run_experiment
from icepick.data import load_experiment_data
from icepick.analysis import freeze_trace
from icepick.config import ConfigError
from icepick.finetune import FinetuneConfig
from icepick.models import build_model
from icepick.model_files import load_model, save_model

TIME_COLUMNS = ["t_prune", "t_test", "t_finetune", "t_step", "t_cumulative", "t_report"]
STEPS = 5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A resnet20 briefly trained on generated CIFAR-format data (module-scoped: ~20 s)."""
    from icepick.data import synth_cifar10, train_batches

    root = tmp_path_factory.mktemp("algo")
    data_dir = root / "data"
    synth_cifar10(data_dir, n_train=768, n_test=384, seed=0, difficulty="easy")
    data = load_experiment_data(data_dir, torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model("resnet20")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    for epoch in range(6):
        for x, y in train_batches(data.train, 64, seed=epoch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    path = root / "pretrained.pt"
    save_model(model, path)
    return path, data_dir, data


@pytest.fixture(scope="module")
def teacher_labelled(pretrained, tmp_path_factory):
    """A constructed case for the accuracy claims: ``pretrained`` with the BatchNorm statistics of
    its training images, and the same images labelled with its own predictions, so that the
    unpruned model is right on every image (acc_orig is 100% by construction), any prune that
    changes its predictions costs accuracy, and fine-tuning, whose KD teacher is that very model
    and whose labels agree with it, has all of it to win back. Returns ``(path, data_dir, data)``
    as ``pretrained`` does.

    The statistics are re-estimated on one epoch of the (augmented) training batches that
    pretraining and fine-tuning see (a cumulative average; no weight changes), as a pretraining
    that ends at a low rate leaves them: six epochs at lr 0.1 leave running statistics that lag
    the weights, and then the train-mode passes of any fine-tuning move the unpruned model's
    predictions too (31.5% -> 51% of the true labels here once re-estimated).
    """
    import dataclasses

    from icepick.data import ExperimentData, eval_batches, train_batches
    from icepick.evaluate import fold_batchnorm
    from icepick.runtime import MEMORY_FORMAT

    path, data_dir, data = pretrained
    model, _ = load_model(path)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the pass
    model.train()
    with torch.no_grad():
        for x, _ in train_batches(data.train, 64, seed=0):
            model(x)
    for bn in norms:
        bn.momentum = 0.1
    out = tmp_path_factory.mktemp("teacher_labelled") / "pretrained.pt"
    save_model(model.eval(), out)
    net = fold_batchnorm(model)  # the arithmetic of the run's own tests (a CPU's batch of 128)

    def labelled(split):
        with torch.inference_mode():
            predicted = [net(x).argmax(dim=1) for x, _ in eval_batches(split, 128, MEMORY_FORMAT)]
        return dataclasses.replace(split, labels=torch.cat(predicted))

    test = labelled(data.test)
    return out, data_dir, ExperimentData(labelled(data.train), test, test, data.info)


def _run(pretrained, tmp_path, name="run", trace=None, **overrides):
    path, _, data = pretrained
    ft = FinetuneConfig(batch_size=64, early_halt=overrides.pop("early_halt", 0), max_batches=6)
    cfg = RunConfig(max_steps=STEPS, finetune=ft, **overrides)
    out = tmp_path / name
    summary = run_experiment(cfg, path, data, out / "steps.csv", out / "summary.json", out / "pruned.pt",
                             trace=trace, show_progress=False)
    return summary, pd.read_csv(out / "steps.csv")


def _theta_between_skips_and_a_fine_tuning(pretrained, tmp_path) -> tuple[float, int]:
    """A threshold that skips the first ``k`` steps of a run and fine-tunes step ``k + 1``, by
    construction: ``(theta, k)``.

    A run that fine-tunes nothing (theta 100) records the decision split's correct-image count
    after each prune. Until its first fine-tuning a run at any theta makes the same prunes and
    the same counts, bit for bit (the same process, the same arithmetic), so theta half an image
    below the drop of the first step whose count is under every earlier one's (``k + 1``, k >= 1)
    skips the steps before it (each at least half an image under theta) and fine-tunes it. No
    margin of the model's accuracies is involved: only that five prunes do not all leave at
    least as many images right as the first one did (51 images fewer after the fifth here).
    """
    summary, steps = _run(pretrained, tmp_path, "untuned", theta=100.0)
    assert not steps["finetuned"].any()
    correct = steps["decision_correct"].astype(int).tolist()
    k = next((i for i in range(1, len(correct)) if correct[i] < min(correct[:i])), None)
    assert k is not None, f"no prune after the first lowered the count below every earlier one: {correct}"
    return 100 * (summary["decision_correct_orig"] - correct[k] - 0.5) / summary["decision_samples"], k


@pytest.mark.slow
def test_fine_tunes_exactly_when_the_drop_reaches_theta(pretrained, tmp_path):
    theta, k = _theta_between_skips_and_a_fine_tuning(pretrained, tmp_path)
    summary, steps = _run(pretrained, tmp_path, theta=theta)
    assert steps["finetuned"].tolist()[:k + 1] == [False] * k + [True]  # skipped, then fine-tuned
    # every drop is a whole number of images, half an image (0.13 points) from theta: no float tie
    assert (steps["finetuned"] == (steps["drop"] >= theta)).all()
    skipped = steps[~steps["finetuned"]]
    assert (skipped["ft_batches"] == 0).all() and (skipped["lr"] == 0).all() and (skipped["train_macs"] == 0).all()
    assert (skipped["acc"] == skipped["acc_pruned"]).all()
    assert summary["n_finetunes"] == int(steps["finetuned"].sum())


@pytest.mark.slow
def test_baseline_fine_tunes_after_every_step_at_the_fixed_rate(pretrained, tmp_path):
    summary, steps = _run(pretrained, tmp_path, method="baseline", lr_policy="fixed", eta=0.0, theta=100.0)
    assert steps["finetuned"].all() and summary["n_finetunes"] == STEPS
    assert (steps["lr"] == 1e-3).all()
    assert (steps["trainable_fraction"] == 1.0).all()
    assert (steps["ft_batches"] == 6).all()


@pytest.mark.slow
def test_icepick_with_an_unreachable_threshold_fine_tunes_every_step(pretrained, tmp_path):
    _, steps = _run(pretrained, tmp_path, theta=-100.0)
    assert steps["finetuned"].all()
    assert (steps["lr"] <= 1e-3).all() and (steps["lr"] >= 2.5e-4).all()


#: r of the accuracy test: at the default 0.4 a prune can cost so little that fine-tuning's own noise
#: (augmented batches, SGD) outweighs it (one pretraining seed lost 15 images in its first fine-tuning)
RECOVERY_RATIO = 0.7


@pytest.mark.slow
def test_accuracy_falls_with_pruning_and_recovers_with_fine_tuning(teacher_labelled, tmp_path):
    """On the fixture's own labels which step loses or wins how many images is its model's luck, and
    that model is another one on another CPU: trained at lr 0.1, float rounding (kernels, threads)
    grows into other weights (31.5% right here, 29.4% with AVX2 kernels; 3 of 5 prunes lowered the
    accuracy in either, not the same 3, where the old bound asked for 4, which SSE4.1 kernels met).
    On labels the model gave itself every run starts from a known answer (``teacher_labelled``),
    and each bound below is a third or less of the smallest value measured on the models of five
    pretraining seeds and of three kernel sets (AVX-512, AVX2, SSE4.1): the comments' numbers, in
    points."""
    summary, steps = _run(teacher_labelled, tmp_path, "tuned", theta=-100.0, ratio=RECOVERY_RATIO)
    untuned_summary, untuned = _run(teacher_labelled, tmp_path, "untuned", theta=100.0, ratio=RECOVERY_RATIO)
    assert summary["acc_orig"] == untuned_summary["acc_orig"] == 100.0  # right on every image, by construction
    assert steps["finetuned"].all() and not untuned["finetuned"].any()
    before = pd.Series([100.0, *steps["acc"].iloc[:-1]])  # the accuracy each prune starts from
    falls = before - steps["acc_pruned"]
    gains = steps["acc_finetuned"] - steps["acc_pruned"]
    # pruning costs accuracy: the first prune, all five with nothing in between, and each on average
    assert falls.iloc[0] > 7.0  # measured 21.1 .. 73.2
    assert 100.0 - untuned_summary["final_acc"] > 19.0  # measured 59.6 .. 88.5
    assert falls.mean() > 4.0  # measured 13.1 .. 27.8
    # fine-tuning wins some back: on average, and by the run's end
    assert gains.mean() > 1.5  # measured 4.8 .. 14.7
    assert summary["final_acc"] - untuned_summary["final_acc"] > 5.0  # measured 16.7 .. 51.6


def test_a_drop_of_exactly_theta_fine_tunes_whatever_the_float_rounding():
    """65.49% -> 63.99% on 10,000 images is 150 images, a drop of exactly 1.5 points; in floats
    65.49 - 63.99 is 1.4999999999999929 and would be skipped."""
    assert 65.49 - 63.99 < 1.5
    assert algorithm.drop_reaches_theta(6549, 6399, 10_000, 1.5)
    assert not algorithm.drop_reaches_theta(6549, 6400, 10_000, 1.5)
    assert algorithm.drop_reaches_theta(300, 299, 360, 0.25) and not algorithm.drop_reaches_theta(300, 300, 360, 0.0001)
    assert algorithm.drop_reaches_theta(300, 300, 360, 0.0) and algorithm.drop_reaches_theta(300, 310, 360, -100.0)


@pytest.mark.slow
def test_fine_tuning_counts_the_teachers_forward_pass_in_its_training_macs(pretrained, tmp_path):
    from icepick.freezing import layer_trainable, training_macs_per_sample
    from icepick.pruning import count_macs, layer_macs

    path, _, _ = pretrained
    summary, steps = _run(pretrained, tmp_path, method="baseline", lr_policy="fixed", theta=0.0)
    unpruned, _ = load_model(path)
    assert summary["teacher_macs_per_sample"] == count_macs(unpruned) > 0
    pruned, _ = load_model(tmp_path / "run" / "pruned.pt")  # the model of the last step
    per_sample = training_macs_per_sample(layer_macs(pruned), layer_trainable(pruned), count_macs(unpruned))
    assert steps["train_macs"].iloc[-1] == steps["ft_samples"].iloc[-1] * per_sample


@pytest.mark.slow
def test_with_a_held_out_decision_split_the_test_passes_are_timed_apart(pretrained, tmp_path):
    path, data_dir, _ = pretrained
    data = load_experiment_data(data_dir, torch.device("cpu"), "val", 256)
    ft = FinetuneConfig(batch_size=64, early_halt=0, max_batches=2)
    cfg = RunConfig(max_steps=3, finetune=ft, theta=-100.0, decision_split="val", val_size=256)
    out = tmp_path / "val"
    summary = run_experiment(cfg, path, data, out / "steps.csv", out / "summary.json", out / "pruned.pt",
                             show_progress=False)
    steps = pd.read_csv(out / "steps.csv")
    # the method evaluates the decision split once per prune; the test split only for the records
    assert (steps["eval_samples"] == 256).all() and (steps["report_samples"] == 2 * len(data.test)).all()
    assert (steps["t_report"] > 0).all()
    assert (steps["t_step"] == steps["t_prune"] + steps["t_test"] + steps["t_finetune"]).all()
    assert summary["report_seconds"] == pytest.approx(steps["t_report"].sum())
    assert summary["decision_samples"] == 256 and summary["test_samples"] == len(data.test)


@pytest.mark.slow
def test_an_early_halt_interval_longer_than_a_fine_tuning_is_refused(pretrained, tmp_path):
    with pytest.raises(ConfigError, match=r"early_halt: 100 batches is not shorter than one fine-tuning \(6 batches of 64 here\)"):
        _run(pretrained, tmp_path, theta=1.5, early_halt=100)


@pytest.mark.slow
def test_pruning_shrinks_the_model_step_by_step(pretrained, tmp_path):
    summary, steps = _run(pretrained, tmp_path, theta=1.5)
    assert (steps["params"].diff().dropna() < 0).all()
    assert (steps["alpha"] < 1).all() and steps["alpha"].is_monotonic_decreasing
    pruned, _ = load_model(tmp_path / "run" / "pruned.pt")
    assert sum(p.numel() for p in pruned.parameters()) == summary["final_params"] == steps["params"].iloc[-1]


@pytest.mark.slow
def test_every_record_field_is_filled(pretrained, tmp_path):
    summary, steps = _run(pretrained, tmp_path, theta=-100.0)
    assert list(steps.columns) == algorithm.STEP_COLUMNS
    assert not steps.isna().any().any()  # every step fine-tuned, so acc_finetuned is filled too
    for key in ["final_acc", "total_seconds", "total_seconds_with_trace", "n_finetunes", "total_train_macs",
                "final_params", "final_alpha", "final_macs", "acc_orig"]:
        assert summary[key] is not None and not (isinstance(summary[key], float) and math.isnan(summary[key]))
    prov = summary["provenance"]
    assert {"python", "torch", "icepick", "device", "git_commit"} <= set(prov)
    assert summary["config"]["seed"] == 0 and summary["seed"] == 0
    assert summary["total_train_macs"] == steps["train_macs"].sum() > 0


def _records(steps: pd.DataFrame) -> pd.DataFrame:
    return steps.drop(columns=TIME_COLUMNS)


@pytest.mark.slow
def test_one_seed_gives_identical_records_and_another_seed_differs(pretrained, tmp_path):
    _, a = _run(pretrained, tmp_path, "a", theta=-100.0, seed=3)
    _, b = _run(pretrained, tmp_path, "b", theta=-100.0, seed=3)
    _, c = _run(pretrained, tmp_path, "c", theta=-100.0, seed=4)
    pd.testing.assert_frame_equal(_records(a), _records(b))
    assert not _records(a).equals(_records(c))


@pytest.mark.slow
def test_a_killed_run_resumes_and_ends_with_the_same_records(pretrained, tmp_path, monkeypatch):
    _, uninterrupted = _run(pretrained, tmp_path, "whole", theta=1.5, seed=1)
    real_step = algorithm._run_step
    calls = {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(algorithm, "_run_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        _run(pretrained, tmp_path, "resumed", theta=1.5, seed=1)
    out = tmp_path / "resumed"
    assert not (out / "summary.json").exists() and not (out / "steps.csv").exists()
    assert (out / "summary.json.state.pt").exists()
    monkeypatch.setattr(algorithm, "_run_step", real_step)
    calls["n"] = 0
    _, resumed = _run(pretrained, tmp_path, "resumed", theta=1.5, seed=1)
    pd.testing.assert_frame_equal(_records(resumed), _records(uninterrupted))
    assert not (out / "summary.json.state.pt").exists()


@pytest.mark.slow
def test_freezing_from_a_trace_keeps_the_chosen_layers_frozen(pretrained, tmp_path):
    path, _, data = pretrained
    model, _ = load_model(path)
    teacher, _ = load_model(path)
    trace = freeze_trace(model, teacher, data.train, 0.4, 1e-3, FinetuneConfig(batch_size=64, max_batches=4))
    assert trace["seconds"] > 0 and trace["train_macs"] > 0
    assert all(row["score"] >= 0 for row in trace["layers"])
    summary, steps = _run(pretrained, tmp_path, trace=trace, theta=-100.0, eta=0.7)
    full_summary, full = _run(pretrained, tmp_path, "full", theta=-100.0, eta=0.0)
    assert (steps["trainable_fraction"] < full["trainable_fraction"]).all()
    assert summary["total_train_macs"] < full_summary["total_train_macs"]
    assert summary["trace_seconds"] == trace["seconds"]
    assert summary["total_seconds_with_trace"] == pytest.approx(summary["total_seconds"] + trace["seconds"])


@pytest.mark.slow
def test_early_halt_stops_fine_tuning_once_the_drop_is_below_theta(pretrained, tmp_path):
    _, steps = _run(pretrained, tmp_path, theta=1.5, early_halt=1)
    halted = steps[steps["halted_early"]]
    assert (halted["ft_batches"] < 6).all()
    assert (halted["drop"] >= 1.5).all()  # it fine-tuned in the first place


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"method": "magnitude"}, "method: 'magnitude' is not allowed; choose one of 'icepick', 'baseline'"),
        ({"ratio": 1.0}, r"ratio: 1.0 is out of range; it must lie in \(0.0, 1.0\)"),
        ({"eta": -0.1}, r"eta: -0.1 is out of range"),
        ({"theta": float("inf")}, "theta: inf is not a finite number"),
        ({"delta": 2e-3}, r"delta: 0.002 is out of range"),
        ({"seed": 1.5}, "seed: 1.5 is not an integer"),
        ({"method": "baseline", "eta": 0.3, "lr_policy": "fixed"}, "eta: 0.3 is not allowed for method 'baseline'"),
        ({"method": "oneshot", "eta": 0.3, "lr_policy": "fixed"}, "eta: 0.3 is not allowed for method 'oneshot'"),
        ({"method": "oneshot", "lr_policy": "icepick"}, "lr_policy: method 'oneshot' fine-tunes at the fixed rate"),
        ({"decision_split": "train"}, "decision_split: 'train' is not allowed"),
        ({"method": "baseline", "lr_policy": "fixed", "finetune": FinetuneConfig(lr_shape="one_cycle")},
         "lr_shape: 'one_cycle' is not allowed for method 'baseline', which fine-tunes at a constant rate"),
        ({"freeze_layers": "stem"}, "freeze_layers: 'stem' is not allowed; choose one of 'blocks', 'all'"),
        ({"criterion": "l3"}, "criterion: 'l3' is not allowed; choose one of 'l1', 'l2', 'random'"),
        ({"criterion_batches": 0}, "criterion_batches: 0 is out of range"),
    ],
)
def test_bad_run_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**overrides)


@pytest.mark.parametrize("criterion", ["random", "taylor", "mean_activation"])
def test_a_run_under_another_criterion_prunes_other_filters_and_records_it(pretrained, tmp_path, criterion):
    summary, steps = _run(pretrained, tmp_path, criterion=criterion, criterion_batches=2, theta=100.0)
    assert summary["config"]["criterion"] == criterion and len(steps) == STEPS
    assert not steps["finetuned"].any()  # theta 100: pruning alone, so the accuracies compare the selections
    _, l1_steps = _run(pretrained, tmp_path, name="l1", theta=100.0)
    assert steps["params"].tolist() == l1_steps["params"].tolist()  # the same number of filters ...
    assert steps["acc_pruned"].tolist() != l1_steps["acc_pruned"].tolist()  # ... but other ones


def test_unknown_setting_names_are_rejected():
    with pytest.raises(ConfigError, match=r"unknown run setting\(s\) \['thetta'\]"):
        RunConfig.from_dict({"thetta": 1.5})
    cfg = RunConfig(theta=2.5, finetune=FinetuneConfig(early_halt=7))
    assert RunConfig.from_dict(cfg.flat()) == cfg


@pytest.mark.slow
def test_freezing_without_a_trace_is_an_error(pretrained, tmp_path):
    with pytest.raises(ConfigError, match="needs a freeze trace"):
        _run(pretrained, tmp_path, eta=0.3)


# ------------------------------------------------------------------ incremental evaluation

TINY_STEPS = 3
#: (method, decision split, theta per model): ICE-Pick with freezing (eta 0.5) at a threshold that
#: mixes skipped, fine-tuned and early-halted steps (two-batch fine-tunings, a check after the
#: first; the value here is the first one tried: :func:`_mixing_run`), the baseline, and ICE-Pick
#: deciding on a held-out val split (one-batch fine-tunings)
CACHE_CASES = {
    "icepick": ("icepick", "test", {"resnet20": 5.0, "mobilenetv2_w025": -1.0}),
    "baseline": ("baseline", "test", {"resnet20": 0.0, "mobilenetv2_w025": 0.0}),
    "val": ("icepick", "val", {"resnet20": 3.0, "mobilenetv2_w025": 1.5}),
}


def _probed_model(name: str, train) -> torch.nn.Module:
    """An untrained model with BN statistics from the data and a linear head fitted (L-BFGS) on its
    standardised features: predictions spread over the classes in seconds, not minutes of
    training. The depthwise convolutions are drawn at their fan-in gain (the registry's fan-out
    init makes an untrained MobileNetV2 give nearly the same features for every image)."""
    from icepick.data import eval_batches, train_batches

    torch.manual_seed(0)
    model = build_model(name)
    for _, block in model.span_blocks():
        if block.conv2.groups > 1:
            torch.nn.init.normal_(block.conv2.weight, std=(2 / 9) ** 0.5)
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(train_batches(train, 64, seed=0)):
            if i == 2:
                break
            model(x)
    model.eval()
    feats, labels = [], []
    hook = model.linear.register_forward_hook(lambda m, i, o: feats.append(i[0]))
    with torch.no_grad():
        for x, y in eval_batches(train, 128):
            model(x)
            labels.append(y)
    hook.remove()
    f, y = torch.cat(feats), torch.cat(labels)
    mean, spread = f.mean(0), f.std(0)
    std = spread.clamp_min(0.1 * spread.median().item())  # no feature amplified past 10x the typical one
    head = torch.nn.Linear(f.shape[1], 10)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=30)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head((f - mean) / std), y)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        model.linear.weight.copy_(head.weight / std)
        model.linear.bias.copy_(head.bias - model.linear.weight @ mean)
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Generated data (256 training / 128 test images), a probed resnet20 and mobilenetv2_w025,
    and a freeze trace of each (one batch)."""
    from icepick.data import synth_cifar10

    root = tmp_path_factory.mktemp("cache")
    synth_cifar10(root / "data", n_train=256, n_test=128, seed=1, difficulty="easy")
    data = {split: load_experiment_data(root / "data", torch.device("cpu"), split, 64) for split in ("test", "val")}
    models = {}
    for name in ("resnet20", "mobilenetv2_w025"):
        path = root / f"{name}.pt"
        save_model(_probed_model(name, data["test"].train), path)
        student, _ = load_model(path)
        teacher, _ = load_model(path)
        ft = FinetuneConfig(batch_size=32, max_batches=1)
        trace = freeze_trace(student, teacher, data["test"].train, 0.4, 1e-3, ft)
        models[name] = (path, trace)
    return root, data, models, {}


def _mixes(steps: pd.DataFrame) -> bool:
    """Whether a run skipped a step and halted a fine-tuning early (so it also fine-tuned)."""
    return bool((~steps["finetuned"]).any() and steps["halted_early"].any())


def _mixing_run(run, first: float):
    """``(theta, (summary, steps))``: the run ``run(theta)`` at the first threshold where it skips a
    step and halts a fine-tuning early: ``first``, then each threshold half an image either side of
    a drop that the run at theta 100 (no fine-tuning) records.

    Which thresholds mix the paths is the tiny models' luck: on 128 images of probed models near
    chance a step's drop is a few images, and a relative 1e-4 change of mobilenetv2_w025's weights
    left its first threshold (-1.0) with no skipped step. The run is chosen, not assumed.
    """
    tried = [first]
    result = run(first)
    if _mixes(result[1]):
        return first, result
    summary, steps = run(100.0)
    correct, n = summary["decision_correct_orig"], summary["decision_samples"]
    drops = sorted({correct - int(c) for c in steps["decision_correct"]})
    for theta in [100 * (drop + half) / n for drop in drops for half in (-0.5, 0.5)]:
        tried.append(theta)
        result = run(theta)
        if _mixes(result[1]):
            return theta, result
    pytest.fail(f"no threshold of {[round(t, 3) for t in tried]} mixes skipped and early-halted steps")


def _cache_runs(tiny, name: str, case: str):
    """The case's run with and without the evaluation cache: ((summary, steps), (summary, steps))."""
    root, data, models, done = tiny
    if (name, case) not in done:
        method, split, thetas = CACHE_CASES[case]
        path, trace = models[name]
        icepick, checks = method == "icepick", case == "icepick"  # early-halt checks in the first case only
        ft = FinetuneConfig(batch_size=32, max_batches=2 if checks else 1, early_halt=1 if checks else 0)

        def run(theta: float, cache: bool):
            cfg = RunConfig(method=method, lr_policy="icepick" if icepick else "fixed", eta=0.5 if icepick else 0.0,
                            theta=theta, decision_split=split, val_size=64, max_steps=TINY_STEPS,
                            eval_batch_size=48, eval_cache=cache, finetune=ft)
            out = root / f"{name}-{case}-{theta}-{cache}"
            summary = run_experiment(cfg, path, data[split], out / "steps.csv", out / "summary.json", out / "pruned.pt",
                                     trace=trace if icepick else None, show_progress=False)
            return summary, pd.read_csv(out / "steps.csv")

        if checks:
            theta, full = _mixing_run(lambda t: run(t, False), thetas[name])
        else:
            theta, full = thetas[name], run(thetas[name], False)
        done[(name, case)] = (run(theta, True), full)
    return done[(name, case)]


EVAL_WORK = ["eval_macs", "eval_macs_saved"]


@pytest.mark.parametrize("case", list(CACHE_CASES))
@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2_w025"])
def test_the_evaluation_cache_changes_no_decision_and_no_accuracy(tiny, name, case):
    (summary, steps), (summary_full, steps_full) = _cache_runs(tiny, name, case)
    # every record but the times and the evaluation work: correct-image counts, accuracies, decisions
    pd.testing.assert_frame_equal(steps.drop(columns=TIME_COLUMNS + EVAL_WORK),
                                  steps_full.drop(columns=TIME_COLUMNS + EVAL_WORK))
    for key in ("acc_orig", "decision_correct_orig", "final_acc", "n_finetunes", "total_train_macs"):
        assert summary[key] == summary_full[key], key
    assert summary["config"]["eval_cache"] and not summary_full["config"]["eval_cache"]


@pytest.mark.parametrize("case", list(CACHE_CASES))
@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2_w025"])
def test_the_evaluation_cache_saves_work(tiny, name, case):
    (summary, steps), (summary_full, steps_full) = _cache_runs(tiny, name, case)
    # the same passes; the cache only moves work from done to saved
    assert (steps["eval_macs"] + steps["eval_macs_saved"] == steps_full["eval_macs"]).all()
    assert (steps_full["eval_macs_saved"] == 0).all() and summary_full["total_eval_macs_saved"] == 0
    # the pass after every prune starts at the pruned block: the previous step was skipped, or its
    # last evaluation came after its fine-tuning (with a val split: the test split's report pass)
    assert (steps["eval_macs_saved"] > 0).all()
    assert summary["total_eval_macs"] == steps["eval_macs"].sum() < summary_full["total_eval_macs"]
    assert summary["total_eval_macs_saved"] == steps["eval_macs_saved"].sum()
    if case == "icepick":  # every path: skipped, and fine-tuned with an early halt (its check's cache kept)
        assert (~steps["finetuned"]).any() and steps["halted_early"].any()


# ---------------------------------------------------------------- the one-shot baseline


def _oneshot(pretrained, tmp_path, name="oneshot", **overrides):
    return _run(pretrained, tmp_path, name, method="oneshot", lr_policy="fixed", eta=0.0, theta=0.0, **overrides)


@pytest.mark.slow
def test_one_shot_prunes_every_block_once_then_fine_tunes_one_epoch_per_block(pretrained, tmp_path):
    from icepick.finetune import finetune_batches
    from icepick.pruning import prunable_blocks

    path, _, data = pretrained
    summary, steps = _oneshot(pretrained, tmp_path)
    pruned, tuning = steps.iloc[:-1], steps.iloc[-1]
    blocks = [name for name, _ in prunable_blocks(load_model(path)[0])][:STEPS]
    assert pruned["block"].tolist() == blocks and pruned["step"].tolist() == list(range(1, STEPS + 1))
    assert not pruned["finetuned"].any() and (pruned["ft_batches"] == 0).all() and (pruned["train_macs"] == 0).all()
    assert pruned["acc_pruned"].iloc[:-1].isna().all()  # nothing evaluated in between ...
    assert 0 <= pruned["acc_pruned"].iloc[-1] <= 100  # ... but the whole pruned model, for the records
    assert tuning["block"] == algorithm.FINETUNE_ROW and tuning["step"] == STEPS + 1 and tuning["finetuned"]
    epoch = finetune_batches(len(data.train), FinetuneConfig(batch_size=64, max_batches=6))
    assert tuning["ft_batches"] == STEPS * epoch and tuning["lr"] == 1e-3 and not tuning["halted_early"]
    assert tuning["acc"] == tuning["acc_finetuned"] == summary["final_acc"]
    assert summary["n_steps"] == STEPS and summary["n_finetunes"] == 1 and summary["method"] == "oneshot"
    assert summary["total_train_macs"] == tuning["train_macs"] > 0
    assert summary["total_seconds"] == pytest.approx(steps["t_step"].sum())
    baseline, _ = _run(pretrained, tmp_path, "baseline", method="baseline", lr_policy="fixed", theta=0.0)
    assert summary["final_params"] == baseline["final_params"]  # the same filters' count, pruned at once
    assert summary["total_ft_samples"] == baseline["total_ft_samples"]  # the baseline's training, in one go


@pytest.mark.slow
def test_a_killed_one_shot_run_resumes_and_ends_with_the_same_records(pretrained, tmp_path, monkeypatch):
    _, uninterrupted = _oneshot(pretrained, tmp_path, "whole", seed=2)
    real = algorithm.finetune
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(algorithm, "finetune", dying)
    with pytest.raises(KeyboardInterrupt):
        _oneshot(pretrained, tmp_path, "resumed", seed=2)
    state = tmp_path / "resumed" / "summary.json.state.pt"
    assert load_model(state)[1]["oneshot"]["epochs"] == 2
    monkeypatch.setattr(algorithm, "finetune", real)
    _, resumed = _oneshot(pretrained, tmp_path, "resumed", seed=2)
    pd.testing.assert_frame_equal(_records(resumed), _records(uninterrupted))
    assert not state.exists()
