"""icepick.train (pretraining), icepick.evaluate and the data/pretrain commands."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from icepick import train as train_mod
from icepick.config import ConfigError
from icepick.data import load_split, synth_cifar10, train_batches
from icepick.evaluate import accuracy
from icepick.train import EPOCH_COLUMNS, PretrainConfig, checkpoint_path, learning_rate, pretrain


def _cfg(**kw) -> PretrainConfig:
    base = dict(model="resnet20", epochs=2, lr=0.05, batch_size=64, device="cpu", schedule="cosine")
    base.update(kw)
    return PretrainConfig(**base)


def _outputs(tmp_path, name="run"):
    d = tmp_path / name
    return d / "pretrained.pt", d / "epochs.csv", d / "pretrain.json"


# ------------------------------------------------------------------------------------------
# Recipe and configuration
# ------------------------------------------------------------------------------------------


def test_resnet_recipe_is_step_at_100_and_150_of_200_epochs():
    cfg = PretrainConfig(model="resnet110")
    assert cfg.resolved_schedule == "step" and cfg.resolved_weight_decay == 1e-4
    assert cfg.milestone_epochs() == (100, 150)
    lrs = {e: learning_rate(cfg, e) for e in (0, 99, 100, 149, 150, 199)}
    assert lrs[0] == lrs[99] == 0.1
    assert math.isclose(lrs[100], 0.01) and math.isclose(lrs[149], 0.01)
    assert math.isclose(lrs[150], 0.001) and math.isclose(lrs[199], 0.001)


def test_milestones_may_be_absolute_epochs_and_scale_as_fractions():
    assert PretrainConfig(model="resnet20", epochs=20, milestones=(5, 12)).milestone_epochs() == (5, 12)
    assert PretrainConfig(model="resnet20", epochs=20).milestone_epochs() == (10, 15)
    short = PretrainConfig(model="resnet20", epochs=3)  # both fractions round to epoch 2
    assert short.milestone_epochs() == (2, 2)
    assert [learning_rate(short, e) for e in range(3)] == pytest.approx([0.1, 0.1, 0.001])


def test_deep_resnets_warm_up_by_default_and_the_others_do_not():
    """He et al. 2016, Sec. 4.2: the 110-layer net needs a warm-up at lr/10; 'auto' applies it from 110 layers."""
    for model in ("resnet110", "resnet152", "resnet110_w050", "resnet152_w050"):
        assert PretrainConfig(model=model).uses_warmup, model
    for model in ("resnet20", "resnet56", "resnet56_w050", "mobilenetv2"):
        assert not PretrainConfig(model=model).uses_warmup, model
    assert not PretrainConfig(model="resnet110", warmup="off").uses_warmup
    assert PretrainConfig(model="mobilenetv2_w025", warmup="on").uses_warmup


def _epoch_lrs(split, cfg, warmup):
    """The learning rate of every SGD step of one epoch of ``_train_epoch`` at lr 0.1."""
    from icepick.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen, step = [], opt.step
    opt.step = lambda: (seen.append(opt.param_groups[0]["lr"]), step())[1]
    _, _, warm = train_mod._train_epoch(model, opt, split, cfg, 0, torch.device("cpu"), 0.1, warmup)
    return seen, warm


def test_the_warm_up_trains_at_a_tenth_of_the_rate_until_the_training_error_falls_below_the_threshold(synth_splits):
    from icepick.data import subset

    split = subset(synth_splits[0], torch.arange(64))  # 32 batches of 2
    cfg = _cfg(model="resnet14", batch_size=2, warmup="on", warmup_error=100.0)
    warmup = train_mod.Warmup(active=True)
    lrs, warm = _epoch_lrs(split, cfg, warmup)  # an error below 100% over a full window of 20 batches ends it
    assert lrs == pytest.approx([0.01] * 20 + [0.1] * 12)
    assert warm == 20 and warmup.iterations == 20 and not warmup.active
    never = _cfg(model="resnet14", batch_size=2, warmup="on", warmup_error=1e-9)  # no window is that good
    warmup = train_mod.Warmup(active=True)
    lrs, warm = _epoch_lrs(split, never, warmup)
    assert lrs == pytest.approx([0.01] * 32) and warm == 32 and warmup.active


def test_mobilenetv2_recipe_is_cosine_with_wd_5e4():
    cfg = PretrainConfig(model="mobilenetv2")
    assert cfg.resolved_schedule == "cosine" and cfg.resolved_weight_decay == 5e-4
    assert learning_rate(cfg, 0) == 0.1
    assert math.isclose(learning_rate(cfg, 100), 0.05)
    assert learning_rate(cfg, 199) < 1e-4
    # torch's CosineAnnealingLR stepped per epoch gives the same values
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=200)
    for epoch in range(200):
        assert math.isclose(opt.param_groups[0]["lr"], learning_rate(cfg, epoch), rel_tol=1e-9, abs_tol=1e-12)
        opt.step()
        sched.step()


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"model": "resnet999"}, "model"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"schedule": "linear"}, "schedule"),
        ({"milestones": (0.75, 0.5)}, "milestones"),
        ({"milestones": (2.5,)}, "milestones"),
        ({"milestones": (300,)}, "milestones"),
        ({"gamma": 0.0}, "gamma"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"n_train": 0}, "n_train"),
        ({"precision": "fp8"}, "precision"),
    ],
)
def test_bad_settings_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        PretrainConfig(**{"model": "resnet20", **overrides})


# ------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------


class _Oracle(nn.Module):
    """Always predicts class ``predict`` (so its accuracy is that class's share)."""

    def __init__(self, predict: int) -> None:
        super().__init__()
        self.predict = predict
        self.lin = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(torch.full((x.shape[0],), self.predict), 10).float()


def test_accuracy_is_a_percentage_and_restores_the_mode(synth_splits):
    _, test = synth_splits
    model = _Oracle(predict=3).train()
    expected = 100.0 * (test.labels == 3).sum().item() / len(test)
    assert accuracy(model, test, batch_size=50) == pytest.approx(expected)
    assert model.training
    model.eval()
    accuracy(model, test)
    assert not model.training


# ------------------------------------------------------------------------------------------
# Pretraining
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pretrain_writes_every_output(synth_root, tmp_path):
    from icepick.model_files import load_model

    out_model, out_csv, out_json = _outputs(tmp_path)
    summary = pretrain(_cfg(), synth_root, out_model, out_csv, out_json)
    epochs = pd.read_csv(out_csv)
    assert list(epochs.columns) == EPOCH_COLUMNS
    assert epochs["epoch"].tolist() == [1, 2]
    assert epochs["lr"].tolist() == pytest.approx([0.05, 0.025])
    assert (epochs["seconds"] > 0).all() and epochs["test_acc"].between(0, 100).all()
    written = json.loads(out_json.read_text())
    assert written == json.loads(json.dumps(summary))
    assert {"model", "epochs", "final_test_acc", "seconds", "config", "provenance"} <= set(written)
    assert written["final_test_acc"] == pytest.approx(epochs["test_acc"].iloc[-1])
    assert written["config"]["model"] == "resnet20" and written["provenance"]["torch"] == torch.__version__
    model, meta = load_model(out_model, "cpu")
    assert model.arch_name == "resnet20" and meta["test_acc"] == pytest.approx(written["final_test_acc"])
    test = load_split(synth_root, "test", "cpu")
    assert accuracy(model, test) == pytest.approx(written["final_test_acc"])
    assert not checkpoint_path(out_model).exists()


class _Killed(Exception):
    pass


def _whole_and_killed(cfg, root, tmp_path, kill_after: int):
    """Outputs of an uninterrupted pretraining and of one killed after epoch ``kill_after`` and
    then rerun (the epochs the rerun trained are returned too)."""
    whole = _outputs(tmp_path, "whole")
    pretrain(cfg, root, *whole)

    def kill(epoch, row):
        if epoch == kill_after:
            raise _Killed

    parts = _outputs(tmp_path, "parts")
    with pytest.raises(_Killed):
        pretrain(cfg, root, *parts, on_epoch_end=kill)
    assert checkpoint_path(parts[0]).exists() and not parts[0].exists() and not parts[2].exists()
    seen = []
    pretrain(cfg, root, *parts, on_epoch_end=lambda epoch, row: seen.append(epoch))
    return whole, parts, seen


def _same_weights(a_path, b_path) -> None:
    from icepick.model_files import load_model

    a, _ = load_model(a_path, "cpu")
    b, _ = load_model(b_path, "cpu")
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), name


@pytest.mark.slow
def test_a_killed_pretraining_resumes_to_the_same_weights(synth_root, tmp_path):
    cfg = _cfg(epochs=3, schedule="step", milestones=(2,))
    whole, parts, seen = _whole_and_killed(cfg, synth_root, tmp_path, kill_after=2)
    assert seen == [3]  # only the missing epoch ran
    _same_weights(whole[0], parts[0])
    ca, cb = pd.read_csv(whole[1]), pd.read_csv(parts[1])
    cols = ["epoch", "lr", "train_loss", "train_acc", "test_acc"]
    pd.testing.assert_frame_equal(ca[cols], cb[cols])


@pytest.mark.slow
def test_a_warm_up_cut_by_a_kill_resumes_where_it_stood(synth_root, tmp_path):
    """The warm-up's window of batch errors is part of the checkpoint: killed after epoch 1 (16 of
    the 20 batches the window needs), the resumed run ends the warm-up at the same batch."""
    cfg = _cfg(model="resnet14", epochs=3, batch_size=16, warmup="on", warmup_error=100.0)
    whole, parts, seen = _whole_and_killed(cfg, synth_root, tmp_path, kill_after=1)
    assert seen == [2, 3]
    ca, cb = pd.read_csv(whole[1]), pd.read_csv(parts[1])
    assert list(ca["warmup_batches"]) == list(cb["warmup_batches"]) == [16, 4, 0]
    _same_weights(whole[0], parts[0])
    assert json.loads(whole[2].read_text())["warmup_iterations"] == 20


@pytest.mark.slow
def test_a_checkpoint_of_another_configuration_is_not_continued(synth_root, tmp_path):
    cfg = _cfg(epochs=2)
    out = _outputs(tmp_path)

    def stop(epoch, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, synth_root, *out, on_epoch_end=stop)
    seen = []
    pretrain(_cfg(epochs=2, lr=0.02), synth_root, *out, on_epoch_end=lambda epoch, row: seen.append(epoch))
    assert seen == [1, 2]
    assert pd.read_csv(out[1])["lr"].iloc[0] == pytest.approx(0.02)


def test_nan_loss_stops_with_an_error_naming_the_epoch(synth_root, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "_train_epoch", lambda *a, **k: (float("nan"), 10.0, 0))
    out = _outputs(tmp_path)
    with pytest.raises(FloatingPointError, match="epoch 1"):
        pretrain(_cfg(), synth_root, *out)
    assert not out[0].exists() and not out[2].exists()


def test_n_train_must_fit_the_data(synth_root, tmp_path):
    with pytest.raises(ConfigError, match="n_train"):
        pretrain(_cfg(n_train=10_000), synth_root, *_outputs(tmp_path))


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def test_cli_data_synth_and_pretrain(tmp_path, capsys):
    from icepick.cli import main

    root = tmp_path / "data"
    assert main(["data", "synth", "--out", str(root), "--train", "100", "--test", "50", "--seed", "1"]) == 0
    assert len(load_split(root, "test", "cpu")) == 50
    out = tmp_path / "out"
    args = ["pretrain", "--model", "resnet20", "--data", str(root), "--out", str(out / "m.pt"),
            "--epochs-csv", str(out / "e.csv"), "--summary", str(out / "s.json"), "--epochs", "1",
            "--milestones", "1", "--device", "cpu", "--threads", "1", "--n-train", "64"]
    assert main(args) == 0
    summary = json.loads((out / "s.json").read_text())
    assert summary["config"]["n_train"] == 64 and summary["train_images"] == 64
    assert summary["config"]["milestones"] == [1]
    assert main(args[:-2] + ["--schedule", "cosine", "--lr", "-1"]) == 2
    assert "lr" in capsys.readouterr().err


def test_cli_data_fetch_reports_missing_data(tmp_path, monkeypatch, capsys):
    import torchvision

    from icepick.cli import main

    def offline(self):
        raise OSError("offline")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    assert main(["data", "fetch", "--root", str(tmp_path)]) == 2
    assert str(tmp_path / "cifar-10-python.tar.gz") in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# The generated data set is learnable
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_small_cnn_learns_the_generated_data_well_above_chance(tmp_path):
    root = tmp_path / "learn"
    synth_cifar10(root, n_train=2000, n_test=500, seed=0)
    train, test = load_split(root, "train", "cpu"), load_split(root, "test", "cpu")

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    torch.manual_seed(0)
    model = nn.Sequential(*block(3, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2), *block(64, 128),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for epoch in range(6):
        model.train()
        for x, y in train_batches(train, batch_size=64, seed=epoch):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert accuracy(model, test) > 30.0  # chance is 10%
