"""Model files: a pruned model round-trips exactly; damaged or foreign files fail naming the file."""

from __future__ import annotations

import pytest
import torch

from icepick.model_files import load_model, save_model
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
    with pytest.raises(ValueError, match="delete it and rerun the step that produces it") as err:
        load_model(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"not a model at all", None])
def test_not_an_icepick_model_is_a_clear_error(tmp_path, content):
    path = tmp_path / "model.pt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="delete it and rerun") as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_meta_must_be_plain_data(tmp_path):
    with pytest.raises(ValueError, match="meta"):
        save_model(build_model("resnet20"), tmp_path / "m.pt", meta={"x": object()})
    assert not (tmp_path / "m.pt").exists()


