"""The models match the paper's table: sizes, blocks, outputs; and they pickle."""

from __future__ import annotations

import pickle

import pytest
import torch

from icepick.models import MODELS, PadShortcut, build_model, model_names
from icepick.pruning import count_params, model_widths, prunable_blocks

# exact parameter counts with 10 classes (measured once, pinned here)
EXACT_PARAMS = {
    "resnet14": 172_506,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet152": 2_408_474,
    "mobilenetv2": 2_296_922,
    "mobilenetv2_w050": 605_754,
    "mobilenetv2_w025": 166_474,
    "resnet56_w050": 214_546,
    "resnet110_w050": 434_290,
    "resnet152_w050": 605_202,
}
# the paper's table (docs/method.md): ~1.73M, ~2.41M, ~2.30M
PAPER_PARAMS = {"resnet110": 1.73e6, "resnet152": 2.41e6, "mobilenetv2": 2.30e6}
BLOCKS = {
    "resnet14": 6, "resnet20": 9, "resnet32": 15, "resnet56": 27, "resnet110": 54, "resnet152": 75,
    "mobilenetv2": 17, "mobilenetv2_w050": 17, "mobilenetv2_w025": 17,
    "resnet56_w050": 27, "resnet110_w050": 54, "resnet152_w050": 75,
}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_lists_all_models():
    assert model_names() == sorted(MODELS)
    assert set(model_names()) == set(EXACT_PARAMS)


@pytest.mark.parametrize("name", sorted(EXACT_PARAMS))
def test_parameter_counts_are_exact(name):
    assert count_params(build_model(name)) == EXACT_PARAMS[name]


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_counts_within_one_percent_of_the_paper(name):
    assert abs(EXACT_PARAMS[name] - PAPER_PARAMS[name]) / PAPER_PARAMS[name] < 0.01


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_counts(name):
    assert len(prunable_blocks(build_model(name))) == BLOCKS[name]


@pytest.mark.parametrize("name", sorted(EXACT_PARAMS))
def test_output_shape_and_attributes(name):
    model = build_model(name, num_classes=7).eval()
    assert model.arch_name == name and model.num_classes == 7
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError) as err:
        build_model("resnet9000")
    msg = str(err.value)
    assert msg.startswith("model: 'resnet9000' is not allowed; choose one of 'mobilenetv2', ")
    assert msg.endswith(", or torchvision:<builder> or python:<module>:<factory>")
    for name in model_names():
        assert name in msg


# ------------------------------------------------------- models beyond the paper's


def test_a_torchvision_spec_builds_that_classifier_with_the_datas_classes():
    model = build_model("torchvision:resnet18", num_classes=7)
    assert model.arch_name == "torchvision:resnet18" and model.num_classes == 7 and model.fc.out_features == 7
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_a_python_spec_calls_the_users_factory():
    model = build_model("python:custom_cnn:tiny_net", num_classes=3)
    assert type(model).__name__ == "TinyNet" and model.fc.out_features == 3


@pytest.mark.parametrize("name,message", [
    ("torchvision:resnet999", r"model: 'torchvision:resnet999': torchvision has no classification model 'resnet999'"),
    ("python:custom_cnn", r"model: 'python:custom_cnn' is not a spec; write torchvision:<builder> or "
                          r"python:<module>:<factory>"),
    ("python:no_such_module:make", r"model: 'python:no_such_module:make': cannot import make from no_such_module"),
    ("python:custom_cnn:grey_net", r"model: 'python:custom_cnn:grey_net' cannot classify a 3x32x32 image "
                                   r"\(RuntimeError: .*\); the data's images are 3x32x32: import them "
                                   r"at the size and channels the model takes \(data import --size, --channels\), or "
                                   r"give a model for these images$"),
    ("python:custom_cnn:no_num_classes", r"^model: 'python:custom_cnn:no_num_classes': no_num_classes\(\) takes no "
                                         r"num_classes; icepick calls no_num_classes\(num_classes=N\) with the data's "
                                         r"class count: add that parameter$"),
    ("python:custom_cnn:failing_net", r"^model: 'python:custom_cnn:failing_net': failing_net\(num_classes=10\) failed "
                                      r"\(RuntimeError: cannot make a net for 10 classes\); fix the factory, or give "
                                      r"one that builds the model$"),
    ("python:custom_cnn:TinyNet.forward", r"^model: 'python:custom_cnn:TinyNet.forward': cannot import TinyNet.forward "
                                          r"from custom_cnn"),
])
def test_a_spec_that_does_not_build_a_classifier_is_named(name, message):
    from icepick.config import ConfigError

    with pytest.raises(ConfigError, match=message) as err:
        build_model(name)
    assert "\n" not in str(err.value)


def test_a_factory_with_in_channels_but_no_num_classes_is_named(tmp_path, monkeypatch):
    (tmp_path / "chan_only.py").write_text("import torch.nn as nn\n\ndef make(in_channels=3):\n"
                                           "    return nn.Conv2d(in_channels, 4, 1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"^model: 'python:chan_only:make': make\(in_channels\) takes no num_classes"):
        build_model("python:chan_only:make")


@pytest.mark.parametrize("spec,shape,steps", [("torchvision:squeezenet1_0", (3, 32, 32), 25),
                                              ("torchvision:regnet_x_400mf", (3, 32, 32), 45),
                                              ("torchvision:googlenet", (3, 32, 32), 53)])
def test_torchvision_models_with_a_conv_classifier_grouped_convs_or_aux_outputs_build_and_classify(spec, shape, steps):
    model = build_model(spec, num_classes=10, input_shape=shape).train()
    assert model.input_shape == shape and len(prunable_blocks(model)) == steps
    out = model(torch.zeros(2, *shape))  # in training mode too: GoogLeNet without its auxiliary outputs
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


@pytest.mark.parametrize("name", sorted(EXACT_PARAMS))
def test_models_pickle(name):
    model = build_model(name)
    clone = pickle.loads(pickle.dumps(model))
    assert clone.arch_name == name
    assert count_params(clone) == count_params(model)


def test_pickled_model_computes_the_same():
    model = build_model("resnet20").eval()
    clone = pickle.loads(pickle.dumps(model))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))


def test_resnet_blocks_have_the_named_layers_and_a_parameter_free_shortcut():
    model = build_model("resnet20")
    blocks = prunable_blocks(model)
    assert [n for n, _ in blocks][:4] == ["layer1.0", "layer1.1", "layer1.2", "layer2.0"]
    for _, block in blocks:
        for attr in ("conv1", "bn1", "conv2", "bn2", "shortcut"):
            assert hasattr(block, attr)
        assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    assert isinstance(model.layer2[0].shortcut, PadShortcut)
    assert isinstance(model.layer3[0].shortcut, PadShortcut)


def test_pad_shortcut_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert (y[:, :8] == 0).all() and (y[:, 24:] == 0).all()


def test_mobilenetv2_blocks_have_the_named_layers():
    model = build_model("mobilenetv2")
    blocks = prunable_blocks(model)
    assert blocks[0][0] == "layers.0" and blocks[-1][0] == "layers.16"
    first = blocks[0][1]
    assert first.conv1.in_channels == 32 and first.conv1.out_channels == 32  # t=1 still expands
    assert first.conv2.groups == 32
    # expansion widths: t * in_channels
    assert model_widths(model)["layers.1"] == 6 * 16
    assert model.linear.in_features == 1280


def test_widths_rebuild_a_narrower_architecture():
    model = build_model("resnet20", widths={"layer1.0": 5, "layer3.2": 7})
    assert model.layer1[0].conv1.out_channels == 5 and model.layer1[0].conv2.in_channels == 5
    assert model_widths(model)["layer3.2"] == 7
    mob = build_model("mobilenetv2_w025", widths={"layers.3": 11})
    assert mob.layers[3].conv2.groups == 11 and mob.layers[3].conv3.in_channels == 11
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert mob.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("widths", [{"layer9.0": 3}, {"layer1.0": 0}, {"layer1.0": 2.5}])
def test_bad_widths_raise_value_error(widths):
    with pytest.raises(ValueError, match="widths"):
        build_model("resnet20", widths=widths)
