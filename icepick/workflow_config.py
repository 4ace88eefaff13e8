"""Checks of the workflow's configuration, each problem one line that names the key and what to do.

Torch-free, like :mod:`icepick.grid`: the Snakefile calls these before it plans a job, so that a
mistake fails ``snakemake -n`` with one line instead of Snakemake's page-long schema dump, or
instead of a job failing later with the reason only in its log.

* :func:`schema_errors`: the configuration against ``workflow/schemas/config.schema.yaml``
  before Snakemake's ``validate`` (which then fills in the defaults): a misspelt key with the
  nearest valid one (``finetune.batchsize: not a key; did you mean finetune.batch_size?``), a
  wrong type or an out-of-range value with the key, the value and what is allowed.
* :func:`model_errors`: a ``python:<module>:<factory>`` whose module cannot be found from the
  working directory or whose source defines no such factory (read, never imported), a
  ``torchvision:<builder>`` that torchvision does not have (torchvision is imported only when
  such a model is configured).
* :func:`path_errors`: ``data.path`` and the ``pretrained:`` weights files that do not exist.
* :func:`run_launcher` and :func:`run_resources`: how a pruning run starts and what it asks
  for with ``gpus_per_run`` and ``nodes_per_run`` (one process; ``torchrun`` on one node;
  ``srun`` + ``torchrun``'s c10d rendezvous on several SLURM nodes).

Example::

    >>> schema = {"type": "object", "additionalProperties": False, "properties": {
    ...     "finetune": {"type": "object", "additionalProperties": False, "properties": {
    ...         "batch_size": {"type": "integer", "minimum": 1}}}}}
    >>> schema_errors({"finetune": {"batchsize": 64}}, schema)
    ['finetune.batchsize: not a key; did you mean finetune.batch_size?']
    >>> schema_errors({"finetune": {"batch_size": 0}}, schema)
    ['finetune.batch_size: 0 is out of range; it must be an integer >= 1']
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from icepick.grid import is_model_spec, is_weights_file

__all__ = ["load_schema", "schema_errors", "model_errors", "path_errors", "exit_on_errors", "run_launcher",
           "run_resources", "RDZV_PORT"]

_TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
               "null": "null", "array": "a list", "object": "a mapping"}
#: Sources whose data.path, when given, must exist (digits and synthetic take none).
PATH_SOURCES = {
    "imagefolder": "the image folder (one sub-folder of images per class)",
    "fashion-mnist": "the folder holding the four IDX files, or null to download them",
    "mnist": "the folder holding the four IDX files, or null to download them",
    "cifar10": "the folder holding cifar-10-batches-py/ or cifar-10-python.tar.gz (or the .tar.gz), or null to "
               "download it",
    "cifar100": "the folder holding cifar-100-python/ or cifar-100-python.tar.gz (or the .tar.gz), or null to "
                "download it",
    "imagenet": "the ImageNet-1k folder holding train/<wnid>/ and val/ (class folders, or flat with "
                "ILSVRC2012_devkit_t12/)",
    "tinyimagenet": "the tiny-imagenet-200 folder (wnids.txt, train/, val/)",
}


def load_schema(path: str | os.PathLike) -> dict[str, Any]:
    """The workflow's schema (YAML)."""
    import yaml

    return yaml.safe_load(Path(path).read_text())


def exit_on_errors(errors: Iterable[str]) -> None:
    """Stop Snakemake with ``errors``, one line each, and exit status 1; nothing when there are none."""
    errors = list(dict.fromkeys(errors))
    if errors:
        sys.exit("\n".join(errors))


# ---------------------------------------------------------------- the schema


def schema_errors(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every problem of ``config`` against the JSON schema ``schema``, one line each (empty when none).

    Checks the keywords the workflow's schema uses (type, enum, minimum, maximum and their
    exclusive forms, pattern, minLength, minItems, uniqueItems, items, properties,
    additionalProperties); ``validate`` afterwards checks the rest and fills in the defaults.
    A pattern is named by the schema's ``x-allowed`` words where it has them.
    """
    errors: list[str] = []
    _check(config, schema, "", schema, errors)
    return errors


def _check(value: Any, schema: Mapping[str, Any], path: str, root: Mapping[str, Any], errors: list[str]) -> None:
    name = path or "the configuration"
    types = _types(schema)
    if types and not any(_is_type(value, t) for t in types):
        errors.append(f"{name}: {_show(value)} ({_type_of(value)}) is not allowed; it must be {_allowed(schema)}")
        return
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        errors.append(f"{name}: {_show(value)} is not allowed; it must be {_allowed(schema)}")
        return
    if _is_type(value, "number") and not _in_range(value, schema):
        errors.append(f"{name}: {_show(value)} is out of range; it must be {_allowed(schema)}")
        return
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or ("pattern" in schema and not re.search(schema["pattern"], value)):
            errors.append(f"{name}: {_show(value)} is not allowed; it must be {_allowed(schema)}")
            return
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{name}: {_show(value)} is too short; it must be {_allowed(schema)}")
            return
        if isinstance(schema.get("items"), Mapping):
            before = len(errors)
            for i, item in enumerate(value):
                _check(item, schema["items"], f"{path}[{i}]", root, errors)
            if len(errors) > before:
                return
        if schema.get("uniqueItems"):
            seen: list[Any] = []
            for item in value:
                if any(_same(item, s) for s in seen):
                    errors.append(f"{name}: {_show(value)} lists {_show(item)} twice; give each once")
                    return
                seen.append(item)
    if isinstance(value, Mapping):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            key_path = f"{path}.{key}" if path else str(key)
            if key in properties:
                _check(item, properties[key], key_path, root, errors)
            elif extra is False:
                errors.append(_unknown_key(str(key), path, properties, root))
            elif isinstance(extra, Mapping):
                _check(item, extra, key_path, root, errors)


def _unknown_key(key: str, parent: str, properties: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """'a.b: not a key; did you mean a.c?': the nearest key at that level (difflib), else the
    same name elsewhere in the schema, else the keys of that level."""
    prefix = f"{parent}." if parent else ""
    where = f"{prefix}{key}: not a key" + (f" of {parent}" if parent else " of the configuration")
    close = difflib.get_close_matches(key, list(properties), n=1, cutoff=0.6)
    if not close:  # a case slip: Batch_Size
        close = [p for p in properties if p.lower() == key.lower()][:1]
    if close:
        return f"{prefix}{key}: not a key; did you mean {prefix}{close[0]}?"
    elsewhere = [p for p in _all_keys(root) if p.rsplit(".", 1)[-1].lower() == key.lower()]
    if elsewhere:
        return f"{where}; did you mean {' or '.join(elsewhere[:4])}?"
    return f"{where}; its keys are {', '.join(properties)}"


def _all_keys(schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of the schema, depth first."""
    out = []
    for key, sub in (schema.get("properties") or {}).items():
        out.append(prefix + key)
        if isinstance(sub, Mapping):
            out += _all_keys(sub, f"{prefix}{key}.")
    return out


def _types(schema: Mapping[str, Any]) -> list[str]:
    t = schema.get("type")
    return [] if t is None else [t] if isinstance(t, str) else list(t)


def _is_type(value: Any, t: str) -> bool:
    """JSON Schema's types (a bool is no number; 2.0 is an integer)."""
    if t == "null":
        return value is None
    if t == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if t == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, (int, float))
    if t == "string":
        return isinstance(value, str)
    if t == "array":
        return isinstance(value, list)
    if t == "object":
        return isinstance(value, Mapping)
    return True  # a type this checker does not know: validate's


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    for t in ("null", "integer", "number", "string", "array", "object"):
        if _is_type(value, t):
            return _TYPE_WORDS[t]
    return type(value).__name__


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _in_range(x: float, schema: Mapping[str, Any]) -> bool:
    return not (("minimum" in schema and x < schema["minimum"]) or ("maximum" in schema and x > schema["maximum"])
                or ("exclusiveMinimum" in schema and x <= schema["exclusiveMinimum"])
                or ("exclusiveMaximum" in schema and x >= schema["exclusiveMaximum"]))


def _bounds(schema: Mapping[str, Any]) -> str:
    parts = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in schema:
            parts.append(f"{sign} {_show(schema[key])}")
    return f" {' and '.join(parts)}" if parts else ""


def _allowed(schema: Mapping[str, Any]) -> str:
    """What a value of ``schema`` may be, in words: 'an integer >= 1 or null', 'one of fp32, tf32, bf16'."""
    if "enum" in schema:
        return f"one of {', '.join(_show(v, quote=False) for v in schema['enum'])}"
    words = []
    types = _types(schema) or ["any"]
    for t in sorted(types, key=lambda t: t != "null"):  # 'null or a number > 0'
        word = _TYPE_WORDS.get(t, "a value")
        if t in ("integer", "number"):
            word += _bounds(schema)
        elif t == "string" and schema.get("minLength"):
            word = "a non-empty string"
        elif t == "array":
            if schema.get("minItems"):
                word += f" of at least {schema['minItems']} item(s)"
            items = schema.get("items")
            if isinstance(items, Mapping) and (_types(items) or "enum" in items):
                word += f", each {_allowed(items)}"
        elif t == "object":
            word = "a mapping of keys to values"
        if t == "string" and "pattern" in schema:  # x-allowed: the pattern in words
            word = schema.get("x-allowed") or f"{word} matching {schema['pattern']}"
        words.append(word)
    return " or ".join(words)


def _show(value: Any, quote: bool = True) -> str:
    """A value as YAML writes it: null, true, 'text' (quoted unless ``quote`` is False), [0.4, 1.5]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if quote else value
    if isinstance(value, (list, dict)):
        text = json.dumps(value, default=str)
        return text if len(text) <= 80 else text[:77] + "..."
    return repr(value)


# ---------------------------------------------------------------- models


def model_errors(models: Iterable[str], cwd: str | os.PathLike | None = None) -> list[str]:
    """One line for every model spec of ``models`` that cannot work, found when the DAG is built.

    ``python:<module>:<factory>``: the module must be found from ``cwd`` (the working directory,
    where the jobs run ``python -m icepick``) or the Python path, without running it; where its
    source is a .py file, the file must define (or import) ``factory``. ``torchvision:<builder>``:
    torchvision must have the builder (torchvision is imported, about 3 s, only when such a
    model is configured and only where it can be imported; otherwise the job checks it).
    """
    cwd = Path(cwd or os.getcwd()).resolve()
    errors = []
    builders = []
    for model in models:
        if not is_model_spec(model):
            continue  # registry names: the workflow checks them against the registry
        kind, _, rest = model.partition(":")
        if kind == "python":
            module, _, factory = rest.partition(":")
            if module and factory:
                error = _python_model_error(model, module, factory, cwd)
                if error:
                    errors.append(error)
        elif kind == "torchvision" and rest:
            builders.append((model, rest))
    if builders:
        errors += _torchvision_errors(builders)
    return errors


def _python_model_error(model: str, module: str, factory: str, cwd: Path) -> str | None:
    try:
        spec = _find_module(module, cwd)
    except Exception:  # noqa: BLE001 - a parent package that fails to import here: the job says why
        return None
    if spec is None:
        where = module.replace(".", "/")
        here = sorted({p.stem for p in cwd.glob("*.py")} | {p.parent.name for p in cwd.glob("*/__init__.py")})
        close = difflib.get_close_matches(module, here, n=1, cutoff=0.6) if "." not in module else []
        hint = f"did you mean python:{close[0]}:{factory}? " if close else ""
        return (f"models: {model}: no module {module} ({where}.py or {where}/) in the working directory {cwd} or on "
                f"the Python path; {hint}put {where}.py in the working directory (where the jobs run), or add the "
                f"folder that holds it to PYTHONPATH")
    origin = getattr(spec, "origin", None)
    if not origin or not str(origin).endswith(".py") or not os.path.isfile(origin):
        return None  # a compiled or namespace module: checked when the job imports it
    try:
        names = _module_names(Path(origin).read_text(encoding="utf-8", errors="replace"))
    except SyntaxError as err:
        return (f"models: {model}: {origin} is not valid Python (line {err.lineno}: {err.msg}); fix it, then "
                f"rerun snakemake")
    if names is None or factory in names:
        return None  # a module that makes names at run time (import *, __getattr__): the job checks it
    close = difflib.get_close_matches(factory, sorted(names), n=1, cutoff=0.6)
    hint = f"did you mean python:{module}:{close[0]}? " if close else ""
    return (f"models: {model}: {origin} defines no {factory}; {hint}name a function of that module that builds "
            f"the model (called as {factory}(num_classes=N))")


def _find_module(name: str, cwd: Path):
    """The import spec of module ``name`` as ``python -m icepick`` run in ``cwd`` would find it,
    without executing it: the path finder first (no package __init__ runs), then the import
    system's own finders (an editable install's), with ``cwd`` first on the path."""
    from importlib.machinery import PathFinder

    search: list[str] | None = [str(cwd), *sys.path]
    spec = None
    for depth, part in enumerate(name.split(".")):
        spec = PathFinder.find_spec(part, search) if search is not None else None
        if spec is None:
            if depth:
                return None  # its package is there, without it
            break
        search = list(spec.submodule_search_locations) if spec.submodule_search_locations is not None else None
    if spec is not None:
        return spec
    import importlib.util

    saved = list(sys.path)
    sys.path.insert(0, str(cwd))
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            return None  # the module or a package above it is missing
        raise  # a package above it imports something missing here: the job says
    finally:
        sys.path[:] = saved


def _module_names(source: str) -> set[str] | None:
    """The names a module's source binds at its top level (also inside if/try/with blocks), or
    None where it may bind others at run time (``from x import *``, a module ``__getattr__``,
    ``globals()``)."""
    tree = ast.parse(source)
    names: set[str] = set()

    def targets(node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                targets(elt)
        elif isinstance(node, ast.Starred):
            targets(node.value)

    def walk(body: list[ast.stmt]) -> bool:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)  # not into its body: what it binds is not the module's
                if node.name == "__getattr__":
                    return False
                continue
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    targets(target)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets(node.target)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name == "*":
                        return False
                    names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                targets(node.target)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        targets(item.optional_vars)
            blocks = [getattr(node, field, None) for field in ("body", "orelse", "finalbody")]
            blocks += [handler.body for handler in getattr(node, "handlers", None) or []]
            if not all(walk(block) for block in blocks if isinstance(block, list)):
                return False
        return True

    if not walk(tree.body):
        return None
    if any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("globals", "exec")
           for n in ast.walk(tree)):
        return None
    return names


def _torchvision_errors(builders: list[tuple[str, str]]) -> list[str]:
    try:
        import torchvision
        from torchvision import models as tv_models

        known = set(tv_models.list_models(module=tv_models))
    except Exception:  # noqa: BLE001 - no torchvision here (the jobs may run elsewhere): the job checks it
        return []
    errors = []
    for model, builder in builders:
        if builder not in known:
            close = difflib.get_close_matches(builder, sorted(known), n=1, cutoff=0.6)
            hint = f"did you mean torchvision:{close[0]}? " if close else ""
            errors.append(
                f"models: {model}: torchvision {torchvision.__version__} has no classification model {builder}; "
                f"{hint}list them with python -c 'import torchvision; print(torchvision.models.list_models())'")
    return errors


# ---------------------------------------------------------------- files


def path_errors(config: Mapping[str, Any], cwd: str | os.PathLike | None = None) -> list[str]:
    """One line for ``data.path`` (sources that read one: imagefolder, fashion-mnist, mnist,
    cifar10, cifar100) and every ``pretrained:`` weights file that does not exist, relative to
    ``cwd`` (the working directory). torchvision's named weights (IMAGENET1K_V1) are no file;
    they are for torchvision models only."""
    base = Path(cwd or os.getcwd()).resolve()
    errors = []
    data = config.get("data") or {}
    source, path = data.get("source"), data.get("path")
    if path and source in PATH_SOURCES and not _exists(path, base):
        errors.append(f"data.path: {path} does not exist{_relative(path, base)}; give {PATH_SOURCES[source]}")
    for model, weights in (config.get("pretrained") or {}).items():
        if not isinstance(weights, str):
            continue
        named = not is_weights_file(weights)
        if named and str(model).startswith("torchvision:"):
            continue  # torchvision's named weights, from the local torch hub cache: the job reads them
        if _exists(weights, base):
            continue
        if named:
            errors.append(f"pretrained.{model}: {weights} is no file{_relative(weights, base)}, and torchvision's "
                          f"named weights are for torchvision:<builder> models only; give the path of {model}'s "
                          f"weights file")
        else:
            errors.append(f"pretrained.{model}: {weights} does not exist{_relative(weights, base)}; give the path of "
                          f"{model}'s weights file, or remove the entry to pretrain it")
    return errors


def _relative(path: str, base: Path) -> str:
    """' (in the working directory BASE)' for a relative path, '' for an absolute one."""
    return "" if Path(os.path.expanduser(path)).is_absolute() else f" (in the working directory {base})"


def _exists(path: str, base: Path) -> bool:
    p = Path(os.path.expanduser(path))
    return (p if p.is_absolute() else base / p).exists()


# ---------------------------------------------------------------- runs on several GPUs

#: The c10d rendezvous port of a run on several nodes: this plus the SLURM job id modulo 10,000
#: (two jobs whose first node is the same node then take different ports).
RDZV_PORT = 29500


def run_launcher(gpus_per_run: int = 1, nodes_per_run: int = 1, tasks_per_node: int = 1) -> str:
    """What starts ``-m icepick run`` (the shell text before it) for a run on ``gpus_per_run``
    GPUs on each of ``nodes_per_run`` nodes.

    One GPU: ``python`` (the command as it always was). Several GPUs on one node: ``torchrun
    --standalone`` with one process per GPU. Several nodes (inside a SLURM job of that many
    nodes): ``srun`` starts one ``torchrun`` per node (``tasks_per_node`` of them per node; more
    than one only to try the rendezvous on one node), which meet at the c10d rendezvous on the
    job's first node, port :data:`RDZV_PORT` + the job id modulo 10,000, rendezvous id the job id.

    >>> run_launcher()
    'python'
    >>> run_launcher(4)
    'torchrun --standalone --nnodes 1 --nproc-per-node 4'
    """
    for key, value in (("gpus_per_run", gpus_per_run), ("nodes_per_run", nodes_per_run),
                       ("tasks_per_node", tasks_per_node)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}: {value!r} is out of range; it must be an integer >= 1")
    if nodes_per_run == 1 and tasks_per_node == 1:
        return "python" if gpus_per_run == 1 else f"torchrun --standalone --nnodes 1 --nproc-per-node {gpus_per_run}"
    agents = nodes_per_run * tasks_per_node
    # the job's first node, from squeue: snakemake's SLURM jobstep keeps SLURM_JOB_ID from the job's
    # environment but not SLURM_JOB_NODELIST
    head = '$(scontrol show hostnames "$(squeue -h -o %N -j "$SLURM_JOB_ID")" | head -n 1)'
    port = f"$(({RDZV_PORT} + SLURM_JOB_ID % 10000))"
    return (f"srun --nodes {nodes_per_run} --ntasks {agents} --ntasks-per-node {tasks_per_node} "
            f"torchrun --nnodes {agents} --nproc-per-node {gpus_per_run} --rdzv-backend c10d "
            f"--rdzv-endpoint {head}:{port} --rdzv-id $SLURM_JOB_ID")


def run_resources(gpus_per_run: int = 1, nodes_per_run: int = 1) -> dict[str, Any]:
    """The Snakemake resources of a run job: ``gpu`` (all its GPUs; snakemake-executor-plugin-slurm
    asks for them with ``--gpus``), and for more than one ``nodes`` 1 (``--nodes=1``: SLURM could
    otherwise spread ``--gpus`` over nodes, which ``torchrun --standalone`` does not reach). On several nodes, what the SLURM plugin needs for
    one ``torchrun`` per node: ``nodes``, ``gres`` (GPUs per node), ``tasks`` (one per node) and
    ``mpi`` (the job's command runs in the batch script and starts its tasks itself, with
    :func:`run_launcher`'s ``srun``); ``tasks_per_gpu`` 0 keeps the plugin from turning ``tasks``
    into ``--ntasks-per-gpu``.

    >>> run_resources(1)
    {'gpu': 1}
    >>> run_resources(2)
    {'gpu': 2, 'nodes': 1}
    """
    run_launcher(gpus_per_run, nodes_per_run)  # the same checks
    if nodes_per_run == 1:
        return {"gpu": gpus_per_run} if gpus_per_run == 1 else {"gpu": gpus_per_run, "nodes": 1}
    return {"nodes": nodes_per_run, "gres": f"gpu:{gpus_per_run}", "tasks": nodes_per_run, "tasks_per_gpu": 0,
            "mpi": "srun"}
