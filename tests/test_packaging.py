"""The project installs what it uses, the same way through pip and conda, and has a CLI."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower()


def test_environment_yml_installs_what_pyproject_declares():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    declared |= {_name(r) for extra in project["optional-dependencies"].values() for r in extra}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_name(r) for r in pip_section if not r.startswith("-e")}
    assert listed == declared
    assert "python=3.11" in env["dependencies"]


def test_cli_lists_the_pipeline_subcommands():
    out = subprocess.run([sys.executable, "-m", "icepick", "--help"], capture_output=True, text=True, check=True)
    for command in ["data", "pretrain", "trace", "run", "weight-shift"]:
        assert re.search(rf"^ {{4}}{command}(\s|$)", out.stdout, re.M), command


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme.split("\n## ")[0]
    assert "make test" in ci


def test_the_command_line_process_ends_with_all_its_output_written(tmp_path, capsys):
    """`python -m icepick` ends its process without Python's teardown; what it printed and
    logged is all there first (stdout to a file is block-buffered, so nothing may be lost)."""
    from icepick.cli import main

    args = ["cost", "--configfile", str(ROOT / "config" / "smoke.yaml")]
    assert main(args) == 0
    expected = capsys.readouterr().out
    out_file = tmp_path / "out.txt"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as in a workflow job
    with open(out_file, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "icepick", *args], stdout=out, stderr=subprocess.PIPE,
                              text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert out_file.read_text() == expected and len(expected) > 1000
    failed = subprocess.run([sys.executable, "-m", "icepick", "cost", "--configfile", str(tmp_path / "missing.yaml")],
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2 and "missing.yaml" in failed.stderr


def test_a_listing_read_only_in_part_ends_quietly():
    """`icepick blocks ... | head -1`: when the reader goes away, no error and exit code 0."""
    proc = subprocess.Popen([sys.executable, "-m", "icepick", "blocks", "--model", "mobilenetv2_w025"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away after one line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0 and first.startswith(b"mobilenetv2_w025: 17 pruning steps")
    assert "error" not in stderr


def test_each_subcommand_is_registered_by_the_module_the_cli_imports_for_it():
    import argparse
    import importlib

    from icepick.cli import COMMAND_MODULES, COMMANDS

    registered = {}
    for module in COMMAND_MODULES:
        subparsers = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(subparsers)
        registered.update({name: module for name in subparsers.choices})
    assert registered == COMMANDS


@pytest.mark.parametrize("command, absent, present", [
    ("table", ["torch"], ["pandas"]),  # a table or figure job never pays `import torch`
    ("run", ["pandas", "torchvision"], ["torch"]),  # a pruning run never pays for the reports
])
def test_a_command_imports_only_what_it_needs(command, absent, present):
    code = ("import json, sys; from icepick.cli import build_parser; "
            f"build_parser([{command!r}]); "
            f"print(json.dumps({{m: m in sys.modules for m in {absent + present!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    assert not any(loaded[m] for m in absent) and all(loaded[m] for m in present), loaded
