"""Model files: a pruned model round-trips exactly with its image shape and normalisation;
damaged or foreign files fail naming the file; a user's own weights (a state dict, a saved
module, torchvision's named weights from the local cache) load into the model their spec builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from icepick.config import ConfigError
from icepick.model_files import ensure_model_file, is_model_file, load_model, load_weights, save_model
from icepick.models import build_model
from icepick.pruning import model_widths, prune_block

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name).eval()


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2_w025"])
def test_save_load_round_trip_is_exact_for_a_pruned_model(name, tmp_path):
    model = _model(name)
    prune_block(model, 1, 0.4)
    prune_block(model, 3, 0.6)
    path = tmp_path / "sub" / "model.pt"
    save_model(model, path, meta={"step": 2, "acc": 91.5, "note": None, "blocks": ["a", "b"]})
    loaded, meta = load_model(path)
    assert meta == {"step": 2, "acc": 91.5, "note": None, "blocks": ["a", "b"]}
    assert loaded.arch_name == name and loaded.num_classes == 10
    assert model_widths(loaded) == model_widths(model)
    assert not loaded.training
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["model.pt"]  # no temp files left


def test_load_without_meta(tmp_path):
    path = tmp_path / "m.pt"
    save_model(build_model("resnet20"), path)
    _, meta = load_model(path)
    assert meta == {}


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    save_model(build_model("resnet20"), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="damaged or truncated model file.*rerun the step that wrote it") as err:
        load_model(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"not a model at all", None])
def test_not_an_icepick_model_is_a_clear_error(tmp_path, content):
    path = tmp_path / "model.pt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="damaged or truncated model file|not an icepick model file") as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_meta_must_be_plain_data(tmp_path):
    with pytest.raises(ValueError, match="meta"):
        save_model(build_model("resnet20"), tmp_path / "m.pt", meta={"x": object()})
    assert not (tmp_path / "m.pt").exists()




# ---------------------------------------------------------------- the image shape and normalisation travel with the file


def test_a_model_file_keeps_the_image_shape_and_normalisation(tmp_path):
    model = build_model("resnet20", num_classes=4, input_shape=(1, 28, 28))
    model.normalization = {"mean": [0.286], "std": [0.353]}
    save_model(model, tmp_path / "m.pt")
    loaded, _ = load_model(tmp_path / "m.pt")
    assert loaded.input_shape == (1, 28, 28) and loaded.normalization == {"mean": [0.286], "std": [0.353]}
    assert loaded.conv1.in_channels == 1 and loaded.trained_on is None


def test_messages_never_tell_a_user_to_delete_a_file(tmp_path):
    for content in (b"", b"not a model"):
        path = tmp_path / "mine.pt"
        path.write_bytes(content)
        with pytest.raises(ValueError) as err:
            load_model(path)
        assert "delete" not in str(err.value)


# ---------------------------------------------------------------- a user's own weights


def _tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("python:custom_cnn:tiny_net", 10)
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        model.train()
        model(torch.randn(16, 3, 32, 32) * 3 + 1)
    return model.eval()


def _same_function(a: torch.nn.Module, b: torch.nn.Module, shape=(3, 32, 32)) -> bool:
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("wrap", ["plain", "checkpoint", "dataparallel"])
def test_a_state_dict_of_a_users_model_loads_with_its_spec(tmp_path, wrap):
    model = _tiny()
    state = model.state_dict()
    if wrap == "checkpoint":
        state = {"epoch": 3, "state_dict": state, "optimizer": {"lr": 0.1}}
    elif wrap == "dataparallel":
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, tmp_path / "weights.pt")
    loaded = load_weights(tmp_path / "weights.pt", "python:custom_cnn:tiny_net", 10, (3, 32, 32))
    assert _same_function(loaded.model, model) and loaded.replaced == []
    assert loaded.model.arch_name == "python:custom_cnn:tiny_net" and "weights file" in loaded.origin


def test_a_whole_saved_module_loads_with_its_spec(tmp_path):
    model = _tiny()
    torch.save(model, tmp_path / "module.pt")
    loaded = load_weights(tmp_path / "module.pt", "python:custom_cnn:tiny_net", 10, (3, 32, 32))
    assert _same_function(loaded.model, model)


def test_own_weights_without_a_spec_ask_for_model_in_one_line(tmp_path):
    torch.save(_tiny().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ConfigError, match=r"is not an icepick model file; give --model SPEC") as err:
        load_weights(tmp_path / "weights.pt", None, 10, (3, 32, 32))
    assert "\n" not in str(err.value) and "delete" not in str(err.value)
    with pytest.raises(ValueError, match="give it with --model SPEC|read with --model SPEC"):
        load_model(tmp_path / "weights.pt")


def test_weights_of_another_architecture_are_one_line(tmp_path):
    torch.save(_tiny().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ConfigError, match=r"does not fit resnet20 \(\d+ missing and \d+ unexpected weights"):
        load_weights(tmp_path / "weights.pt", "resnet20", 10, (3, 32, 32))


def test_a_classifier_of_another_class_count_needs_pretrain_init(tmp_path):
    torch.save(_tiny().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ConfigError, match=r"fc is \[10, 16\] where the model needs \[4, 16\].*icepick pretrain --init"):
        load_weights(tmp_path / "weights.pt", "python:custom_cnn:tiny_net", 4, (3, 32, 32))
    loaded = load_weights(tmp_path / "weights.pt", "python:custom_cnn:tiny_net", 4, (3, 32, 32), allow_new_head=True)
    assert loaded.replaced == ["fc"] and loaded.model.fc.out_features == 4
    source = _tiny().state_dict()
    assert torch.equal(loaded.model.state_dict()["block_a.weight"], source["block_a.weight"])


def test_ensure_model_file_converts_own_weights_once_and_keeps_icepick_files(tmp_path):
    torch.save(_tiny().state_dict(), tmp_path / "weights.pt")
    out = ensure_model_file(tmp_path / "weights.pt", "python:custom_cnn:tiny_net", 10, (3, 32, 32),
                            tmp_path / "converted.pt")
    assert out == str(tmp_path / "converted.pt") and is_model_file(out)
    assert ensure_model_file(out, None, 10, (3, 32, 32), tmp_path / "again.pt") == out
    assert not (tmp_path / "again.pt").exists()
    with pytest.raises(ConfigError, match=r"holds a python:custom_cnn:tiny_net model, not resnet20 \(--model\)"):
        ensure_model_file(out, "resnet20", 10, (3, 32, 32), tmp_path / "x.pt")


# ---------------------------------------------------------------- torchvision's named weights, from the local cache


@pytest.fixture()
def resnet18_cache(tmp_path, monkeypatch):
    """torchvision's resnet18 IMAGENET1K_V1 file in a torch hub cache of the test's own (random
    weights of the real architecture, saved where and as torchvision keeps the real file)."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=1000)
    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    file.parent.mkdir(parents=True)
    torch.save(net.state_dict(), file)
    return net.eval()


def test_torchvision_weights_come_from_the_local_cache_with_their_normalisation(resnet18_cache):
    loaded = load_weights("IMAGENET1K_V1", "torchvision:resnet18", 1000, (3, 64, 64))
    assert _same_function(loaded.model, resnet18_cache, (3, 64, 64))
    assert loaded.normalization == {"mean": pytest.approx([0.485, 0.456, 0.406]),
                                    "std": pytest.approx([0.229, 0.224, 0.225])}
    assert "ResNet18_Weights.IMAGENET1K_V1" in loaded.origin


def test_torchvision_weights_not_in_the_cache_are_one_line_and_nothing_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"is not in the local cache .*nothing is downloaded here") as err:
        load_weights("IMAGENET1K_V1", "torchvision:resnet18", 1000, (3, 64, 64))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"torchvision has no weights 'IMAGENET9K' for resnet18 \(it has: IMAGENET1K_V1"):
        load_weights("IMAGENET9K", "torchvision:resnet18", 1000, (3, 64, 64))


def test_grey_images_through_colour_weights_are_the_colour_model_on_the_grey_image(resnet18_cache):
    """A 1-channel stem whose weights are the colour stem's summed over colours computes, on a grey
    image, exactly what the colour model computes on that image repeated into 3 channels."""
    loaded = load_weights("IMAGENET1K_V1", "torchvision:resnet18", 1000, (1, 64, 64))
    assert loaded.model.conv1.in_channels == 1 and loaded.replaced == []
    grey = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(grey), resnet18_cache(grey.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_the_same_model_saves_to_the_same_bytes(tmp_path):
    """A run's saved state is tied to its pretrained file's bytes: converting the same weights again
    (a restarted `icepick run --pretrained <your weights>`) must give the same file, or it starts over."""
    torch.manual_seed(0)
    model = build_model("resnet20")
    save_model(model, tmp_path / "a.pt", {"kind": "x"})
    save_model(model, tmp_path / "b.pt", {"kind": "x"})
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
