"""One place for defaults: the workflow's schema states the library's defaults, and every
configuration file has the same keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from icepick.algorithm import RunConfig
from icepick.analysis import WeightShiftConfig
from icepick.devices import DEFAULT_JOBS_PER_GPU
from icepick.finetune import FinetuneConfig
from icepick.train import PretrainConfig

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())

# schema key -> the dataclass default it states (None in the schema: "the dataclass's own")
RUN, FT, PRE, WS = RunConfig(), FinetuneConfig(), PretrainConfig(model="resnet110"), WeightShiftConfig()
SAME_DEFAULT = {
    "jobs_per_gpu": DEFAULT_JOBS_PER_GPU,
    "precision": FT.precision,
    "eval_cache": RUN.eval_cache,
    "decision.split": RUN.decision_split,
    "decision.val_size": RUN.val_size,
    "schedule.base": RUN.base,
    "schedule.delta": RUN.delta,
    "schedule.p": RUN.p,
    "schedule.beta": RUN.beta,
    "finetune.batch_size": FT.batch_size,
    "finetune.max_batches": FT.max_batches,
    "finetune.early_halt": FT.early_halt,
    "finetune.lr_shape": FT.lr_shape,
    "finetune.kd_temperature": FT.kd_temperature,
    "finetune.kd_weight": FT.kd_weight,
    "finetune.freeze_bn_stats": RUN.freeze_bn_stats,
    "finetune.freeze_layers": RUN.freeze_layers,
    "finetune.max_steps": RUN.max_steps,
    "pretrain.epochs": PRE.epochs,
    "pretrain.seed": PRE.seed,
    "pretrain.batch_size": PRE.batch_size,
    "pretrain.schedule": PRE.schedule,
    "pretrain.warmup": PRE.warmup,
    "pretrain.warmup_factor": PRE.warmup_factor,
    "pretrain.warmup_error": PRE.warmup_error,
    "weight_shift.steps": WS.steps,
    "weight_shift.ratio": WS.ratio,
    "weight_shift.lr": WS.lr,
    "weight_shift.seed": WS.seed,
    "experiments.fig3.theta": RUN.theta,
}


def _schema_default(key: str):
    node = SCHEMA
    for part in key.split("."):
        node = node["properties"][part]
    return node["default"]


def _keys(config: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in config.items():
        out.add(prefix + key)
        if isinstance(value, dict) and key not in ("paper_role", "ratios"):  # these two map names to values
            out |= _keys(value, f"{prefix}{key}.")
    return out


@pytest.mark.parametrize("key", sorted(SAME_DEFAULT))
def test_the_schema_states_the_librarys_default(key):
    assert _schema_default(key) == SAME_DEFAULT[key]


def test_the_recipe_defaults_are_left_to_the_library():
    """null in the schema means the recipe of the model family (PretrainConfig resolves it)."""
    assert _schema_default("pretrain.lr") is None and _schema_default("pretrain.weight_decay") is None
    assert PRE.lr == 0.1 and PRE.resolved_weight_decay == 1e-4


@pytest.mark.parametrize("name", ["smoke.yaml", "test.yaml", "mini.yaml"])
def test_every_configuration_has_the_same_keys(name):
    paper = _keys(yaml.safe_load((ROOT / "config/config.yaml").read_text()))
    other = _keys(yaml.safe_load((ROOT / "config" / name).read_text()))
    assert other == paper, f"only in config.yaml: {sorted(paper - other)}; only in {name}: {sorted(other - paper)}"


# ---------------------------------------------------------------- the workflow's one-line checks
# (icepick.workflow_config; tests/test_workflow.py runs them through `snakemake -n`)

from icepick import workflow_config  # noqa: E402


def _paper() -> dict:
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "config").glob("*.yaml")))
def test_every_shipped_configuration_passes_the_schema_check(name):
    assert workflow_config.schema_errors(yaml.safe_load((ROOT / "config" / name).read_text()), SCHEMA) == []


@pytest.mark.parametrize(
    "config, line",
    [
        ({"finetune": {"batchsize": 64}}, "finetune.batchsize: not a key; did you mean finetune.batch_size?"),
        ({"pretrain": {"epoch": 3}}, "pretrain.epoch: not a key; did you mean pretrain.epochs?"),
        ({"trace_ration": 0.4}, "trace_ration: not a key; did you mean trace_ratio?"),
        ({"Finetune": {}}, "Finetune: not a key; did you mean finetune?"),
        ({"experiments": {"table1": {"eta": [0.3]}}},
         "experiments.table1.eta: not a key; did you mean experiments.table1.etas?"),
        # the right name at another level: the grid's keys live under experiments
        ({"ratios": [0.4]}, "ratios: not a key of the configuration; did you mean experiments.fig3.ratios or "
                            "experiments.table1.ratios?"),
        ({"finetune": {"zzz": 1}}, "finetune.zzz: not a key of finetune; its keys are batch_size, max_batches, "
                                   "early_halt, lr_shape, kd_temperature, kd_weight, freeze_bn_stats, freeze_layers, "
                                   "max_steps"),
    ],
)
def test_a_misspelt_key_is_one_line_with_the_nearest_valid_one(config, line):
    assert workflow_config.schema_errors(config, SCHEMA) == [line]


@pytest.mark.parametrize(
    "config, line",
    [
        ({"finetune": {"batch_size": 0}}, "finetune.batch_size: 0 is out of range; it must be an integer >= 1"),
        ({"finetune": {"batch_size": "64"}},
         "finetune.batch_size: '64' (a string) is not allowed; it must be an integer >= 1"),
        ({"trace_ratio": 1.5}, "trace_ratio: 1.5 is out of range; it must be null or a number > 0 and < 1"),
        ({"schedule": {"p": 0.7}}, "schedule.p: 0.7 is out of range; it must be a number > 0 and <= 0.5"),
        ({"experiments": {"fig3": {"ratios": [0.4, 1.5]}}},
         "experiments.fig3.ratios[1]: 1.5 is out of range; it must be a number > 0 and < 1"),
        ({"seeds": [0, 1.5]}, "seeds[1]: 1.5 (a number) is not allowed; it must be an integer >= 0"),
        ({"seeds": [0, 0]}, "seeds: [0, 0] lists 0 twice; give each once"),
        ({"precision": "fp64"}, "precision: 'fp64' is not allowed; it must be one of fp32, tf32, bf16, fp16"),
        ({"device": "gpu"}, "device: 'gpu' is not allowed; it must be auto, cpu, cuda or cuda:N"),
        ({"eval_cache": "yes"}, "eval_cache: 'yes' (a string) is not allowed; it must be true or false"),
        ({"data": {"channels": True}}, "data.channels: true (a boolean) is not allowed; it must be one of 1, 3, null"),
        ({"finetune": 3}, "finetune: 3 (an integer) is not allowed; it must be a mapping of keys to values"),
        ({"paper_role": {"resnet20": "resnet11"}},
         "paper_role.resnet20: 'resnet11' is not allowed; it must be one of resnet110, resnet152, mobilenetv2"),
        ({"pretrained": {"resnet20": ""}}, "pretrained.resnet20: '' is not allowed; it must be a non-empty string"),
        ({"models": ["foo:bar"]}, "models[0]: 'foo:bar' is not allowed; it must be a model name of icepick.models "
                                  "(resnet110, mobilenetv2, ...), torchvision:<builder> or python:<module>:<factory>"),
    ],
)
def test_a_wrong_value_is_one_line_with_the_key_the_value_and_what_is_allowed(config, line):
    assert workflow_config.schema_errors(config, SCHEMA) == [line]


@pytest.mark.parametrize(
    "overlay",
    [
        {}, {"finetune": {"batch_size": 0}}, {"finetune": {"batchsize": 1}}, {"trace_ratio": None},
        {"trace_ratio": 1}, {"seeds": [0, 1.0]}, {"seeds": [0, True]}, {"threads": 2.0}, {"threads": True},
        {"data": {"channels": 1}}, {"data": {"channels": 2}}, {"data": {"flip": None}}, {"data": {"size": None}},
        {"pretrain": {"lr": None}}, {"pretrain": {"lr": 0}}, {"device": "cuda:1"}, {"device": "cuda:"},
        {"models": []}, {"models": ["torchvision:resnet18", "python:a.b:c"]}, {"models": ["a-b"]},
        {"experiments": {"table1": {"ratios": {"default": 0.5, "x": 1}}}}, {"schedule": {"beta": 0}},
        {"experiments": {"ablation": {"arms": []}}}, {"experiments": {"criteria": {"criteria": ["l1", "l1"]}}},
    ],
)
def test_the_check_accepts_and_rejects_what_the_schema_does(overlay):
    """Never stricter than Snakemake's validate (jsonschema) on the paper's configuration with ``overlay``."""
    jsonschema = pytest.importorskip("jsonschema")
    config = _paper()
    for key, value in overlay.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    valid = jsonschema.Draft202012Validator(SCHEMA).is_valid(config)
    errors = workflow_config.schema_errors(config, SCHEMA)
    assert (errors == []) == valid, errors
    assert all("\n" not in line for line in errors)


# -- models and files that would fail only inside a job


def test_a_python_model_whose_module_or_factory_is_missing_is_one_line(tmp_path):
    (tmp_path / "my_nets.py").write_text(
        "import torch.nn as nn\nfrom torchvision.models import resnet18 as tv_resnet\n\n"
        "def make_net(num_classes=10):\n    return nn.Linear(4, num_classes)\n\n"
        "class Net(nn.Module):\n    pass\n\nalias = make_net\ntry:\n    from fast import quick\nexcept ImportError:\n"
        "    def quick(num_classes=10):\n        return make_net(num_classes)\n")
    (tmp_path / "star.py").write_text("from my_nets import *\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("raise RuntimeError('never imported by the check')\n")
    (tmp_path / "pkg" / "nets.py").write_text("def build(num_classes=10): ...\n")
    ok = ["resnet20", "python:my_nets:make_net", "python:my_nets:Net", "python:my_nets:alias", "python:my_nets:quick",
          "python:my_nets:tv_resnet", "python:star:anything", "python:pkg.nets:build"]
    assert workflow_config.model_errors(ok, tmp_path) == []
    where = tmp_path.resolve()
    assert workflow_config.model_errors(["python:my_netz:make_net"], tmp_path) == [
        f"models: python:my_netz:make_net: no module my_netz (my_netz.py or my_netz/) in the working directory "
        f"{where} or on the Python path; did you mean python:my_nets:make_net? put my_netz.py in the working "
        f"directory (where the jobs run), or add the folder that holds it to PYTHONPATH"]
    assert workflow_config.model_errors(["python:my_nets:make_nett"], tmp_path) == [
        f"models: python:my_nets:make_nett: {where / 'my_nets.py'} defines no make_nett; did you mean "
        f"python:my_nets:make_net? name a function of that module that builds the model (called as "
        f"make_nett(num_classes=N))"]
    [line] = workflow_config.model_errors(["python:pkg.other:build"], tmp_path)
    assert line.startswith("models: python:pkg.other:build: no module pkg.other (pkg/other.py or pkg/other/)")


def test_data_path_and_pretrained_weights_that_do_not_exist_are_one_line_each(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "w.pt").write_bytes(b"")
    where = tmp_path.resolve()
    fine = {"data": {"source": "imagefolder", "path": "images"},
            "pretrained": {"resnet20": "w.pt", "torchvision:resnet18": "IMAGENET1K_V1"}}
    assert workflow_config.path_errors(fine, tmp_path) == []
    assert workflow_config.path_errors({"data": {"source": "digits", "path": None}}, tmp_path) == []
    bad = {"data": {"source": "fashion-mnist", "path": "idx/"},
           "pretrained": {"resnet20": "weights/missing.pt", "resnet32": "IMAGENET1K_V1"}}
    assert workflow_config.path_errors(bad, tmp_path) == [
        f"data.path: idx/ does not exist (in the working directory {where}); give the folder holding the four IDX "
        "files, or null to download them",
        f"pretrained.resnet20: weights/missing.pt does not exist (in the working directory {where}); give the path "
        "of resnet20's weights file, or remove the entry to pretrain it",
        f"pretrained.resnet32: IMAGENET1K_V1 is no file (in the working directory {where}), and torchvision's named "
        "weights are for torchvision:<builder> models only; give the path of resnet32's weights file",
    ]
