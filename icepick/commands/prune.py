"""Commands ``trace``, ``run`` and ``weight-shift``: the pruning experiments of the paper."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from icepick.algorithm import RunConfig, load_teacher, read_trace, run_experiment
from icepick.data import check_classes, dataset_info, load_experiment_data
from icepick.analysis import WeightShiftConfig, shift_trace, trace_record, weight_shift_table
from icepick.commands.common import add_device_args, seed_int, setup_device
from icepick.config import ConfigError
from icepick.criteria import CRITERIA
from icepick.distributed import Dist, backend_for, from_env, init, is_main, process_threads, rank_device, shutdown
from icepick.finetune import FinetuneConfig
from icepick.model_files import load_model
from icepick.pruning import conv_layers
from icepick.records import write_csv, write_json
from icepick.runtime import configure_backends, resolve_device, set_threads

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the trace, run and weight-shift subcommands."""
    _register_trace(subparsers)
    _register_run(subparsers)
    _register_weight_shift(subparsers)
    _register_blocks(subparsers)


def _register_blocks(subparsers: argparse._SubParsersAction) -> None:
    from icepick.models import model_names

    p = subparsers.add_parser("blocks", help="list the pruning steps a model would take (its blocks or groups)")
    p.add_argument("--model", required=True,
                   help=f"{', '.join(model_names())}, torchvision:<builder> or python:<module>:<factory>")
    p.add_argument("--num-classes", type=int, default=10, help="outputs of the classifier")
    p.add_argument("--input-shape", type=_shape_value, default=(3, 32, 32),
                   help="CxHxW of the images, e.g. 3x224x224 or 1x28x28 (default 3x32x32)")
    p.add_argument("--ratio", type=float, default=RunConfig.ratio, help="r: what pruning every step at r leaves")
    p.add_argument("--coupled", action="store_true", help="also the groups that feed a residual addition")
    p.set_defaults(func=_blocks)


def _blocks(args: argparse.Namespace) -> int:
    """List the steps (each pruned at --ratio in turn, to show what it removes) and, for a model outside
    the paper's families, how a grouped convolution constrains a step and which groups are no step and
    why (``icepick.pruning.ConvGroup``)."""
    from icepick.models import build_model
    from icepick.pruning import block_width, count_params, prunable_blocks, prune_block, step_convs

    model = build_model(args.model, args.num_classes, input_shape=args.input_shape)
    steps = prunable_blocks(model, args.coupled)
    touched = step_convs(model, args.coupled)
    groups = _spec_groups(model)
    params = count_params(model)
    print(f"{args.model}: {len(steps)} pruning steps, {params:,} parameters")
    print(f"{'step':>4}  {'name':<28} {'filters':>7} {'removed at r=' + format(args.ratio, 'g'):>16}  convolutions it touches")
    for i, (name, block) in enumerate(steps, 1):
        width = block_width(block)
        kept = prune_block(model, name, args.ratio)
        note = f"  [{groups[name].note}]" if name in groups and groups[name].note else ""
        print(f"{i:>4}  {name:<28} {width:>7} {width - len(kept):>16}  {', '.join(touched[name])}{note}")
    print(f"every step pruned at r = {args.ratio:g}: {count_params(model):,} parameters "
          f"(alpha = {count_params(model) / params:.3f})")
    others = [g for name, g in groups.items() if name not in touched]
    if others:
        print(f"not steps ({len(others)} group{'s' if len(others) > 1 else ''}):")
        for g in others:
            print(f"      {g.name:<28} {g.reason()}")
    return 0


def _spec_groups(model) -> dict:
    """A spec model's groups by name (``icepick.pruning.conv_groups``); none for the paper's models."""
    from icepick.models import is_model_spec
    from icepick.pruning import conv_groups

    if not is_model_spec(str(getattr(model, "arch_name", ""))):
        return {}
    return {g.name: g for g in conv_groups(model)}


def _add_data_args(p: argparse.ArgumentParser, ratio: float = RunConfig.ratio) -> None:
    from icepick.models import model_names

    d = RunConfig()
    p.add_argument("--pretrained", required=True,
                   help="the trained model: an icepick model file (icepick pretrain), or your own weights with --model "
                        "(a state dict, a saved module, or torchvision's IMAGENET1K_V1 when its classes are the data's)")
    p.add_argument("--model", default=None,
                   help=f"the architecture of --pretrained ({', '.join(model_names())}, torchvision:<builder> "
                        "or python:<module>:<factory>): needed for your own weights; an icepick file of another "
                        "one is an error")
    p.add_argument("--normalize", default="model", choices=("model", "data", "none"),
                   help="what the model's inputs are normalised with: model = what its file records (else the data "
                        "set's statistics), data, or none (0..1 values, a model that normalises itself)")
    p.add_argument("--data", required=True, type=Path, help="data directory holding cifar-10-batches-py/")
    p.add_argument("--seed", type=seed_int, default=d.seed, help="seed of the fine-tunings' data order")
    p.add_argument("--ratio", type=float, default=ratio, help="r: fraction of each pruned block's filters removed")
    p.add_argument("--decision-split", default=d.decision_split, help="test (paper) or val (held out of training)")
    p.add_argument("--val-size", type=int, default=d.val_size, help="images held out when --decision-split val")
    from icepick.data.stream import DATA_MEMORY_SHARE

    p.add_argument("--data-memory", type=_memory_value, default=None,
                   help="bytes of images to hold in memory (8G, 512M; 0 streams every split of an import); larger "
                        f"splits are read from disk a batch at a time (default: auto, {100 * DATA_MEMORY_SHARE:g}%% of the "
                        "memory the images would live in: the host's, on a GPU the smaller of the GPU's and the host's)")


def _memory_value(text: str) -> int | None:
    """--data-memory: bytes (8G, 512M, 0) or auto."""
    from icepick.data.stream import parse_memory

    try:
        return parse_memory(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("data_memory: ")) from None


def _add_finetune_args(p: argparse.ArgumentParser) -> None:
    d = FinetuneConfig()
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="fine-tuning batch size")
    p.add_argument("--kd-temperature", type=float, default=d.kd_temperature, help="T of the distillation term")
    p.add_argument("--kd-weight", type=float, default=d.kd_weight, help="weight of the distillation term (0 = CE only)")
    p.add_argument("--max-batches", type=int, default=d.max_batches, help="cap per fine-tuning (0 = one epoch)")


def _finetune_config(args: argparse.Namespace, **extra) -> FinetuneConfig:
    return FinetuneConfig(
        batch_size=args.batch_size, kd_temperature=args.kd_temperature, kd_weight=args.kd_weight,
        max_batches=args.max_batches, precision=args.precision, **extra,
    )


def _shape_value(text: str) -> tuple[int, int, int]:
    """--input-shape: 'CxHxW' (3x224x224)."""
    try:
        values = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be CxHxW such as 3x32x32 or 1x28x28, not {text!r}")
    return values  # type: ignore[return-value]


def _halt_value(text: str) -> float:
    """--early-halt: '0.25' (a fraction of an epoch) or '100' (batches), kept as given."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a fraction of an epoch or a number of batches, not {text!r}") from None
    return int(value) if value >= 1 and value == int(value) else value


def _register_trace(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "trace", help="freeze trace: prune the first block at --ratio, fine-tune one epoch, score every conv by its weight shift")
    _add_data_args(p)
    _add_finetune_args(p)
    p.add_argument("--base-lr", type=float, default=RunConfig.base, help="learning rate of the trace's fine-tuning")
    p.add_argument("--out", required=True, type=Path, help="trace JSON")
    add_device_args(p)
    p.set_defaults(func=_trace)


def _shift_setup(args: argparse.Namespace):
    """What trace and weight-shift share: fine-tuning config, device, data, student and teacher."""
    ft_cfg = _finetune_config(args, early_halt=0)  # a full epoch, no threshold: nothing to halt for
    model = _check_pretrained(args, Path(str(args.out) + ".pretrained.pt"))
    device = setup_device(args)
    torch.manual_seed(args.seed)
    data = load_experiment_data(args.data, device, args.decision_split, args.val_size,
                                normalization=_normalization(args.normalize, model), data_memory=args.data_memory)
    model, _ = load_model(args.pretrained, device)
    check_classes(model, data.info, args.pretrained)
    teacher = load_teacher(args.pretrained, device)
    return ft_cfg, device, data, model, teacher


def _trace(args: argparse.Namespace) -> int:
    ft_cfg, device, data, model, teacher = _shift_setup(args)
    record = trace_record(model, teacher, data, args.ratio, args.base_lr, ft_cfg, args.seed, device,
                          {"decision_split": args.decision_split, "val_size": args.val_size})
    write_json(args.out, record)
    log.info("freeze trace of %s: %d layers scored in %.1fs", model.arch_name, len(record["layers"]), record["seconds"])
    return 0


def _register_run(subparsers: argparse._SubParsersAction) -> None:
    d = RunConfig()
    p = subparsers.add_parser("run", help="one pruning experiment: ICE-Pick (Algorithm 1), the baseline or the one-shot baseline")
    _add_data_args(p)
    _add_finetune_args(p)
    p.add_argument("--trace", type=Path, default=None, help="freeze trace JSON (needed when eta > 0)")
    p.add_argument("--method", default=d.method, help="icepick (Algorithm 1), baseline (fine-tune after every step) or oneshot (prune every "
                        "block at once, then fine-tune one epoch per block)")
    p.add_argument("--lr-policy", default=None, help="icepick (Eq. 1) or fixed; default icepick, baseline and oneshot: fixed")
    p.add_argument("--theta", type=float, default=d.theta, help="accuracy-drop threshold in points, -100 to 100 (a negative value fine-tunes at every step; the workflow schema allows >= 0 only)")
    p.add_argument("--eta", type=float, default=d.eta, help="fraction of conv layers frozen")
    p.add_argument("--base", type=float, default=d.base, help="Eq. 1 base / the fixed learning rate")
    p.add_argument("--delta", type=float, default=d.delta, help="Eq. 1 Delta")
    p.add_argument("--p", type=float, default=d.p, help="Eq. 1 p")
    p.add_argument("--beta", type=float, default=d.beta, help="Eq. 1 beta")
    p.add_argument("--lr-shape", default=d.finetune.lr_shape, help="constant or one_cycle (not for the baseline)")
    p.add_argument("--early-halt", type=_halt_value, default=d.finetune.early_halt,
                   help="Figure 1 case (4): check the accuracy every so often and stop fine-tuning once the drop is "
                        "below theta; a fraction in (0, 1) of the fine-tuning's batches, a whole number of batches, "
                        "or 0 for full epochs (the authors' code); the baseline never halts")
    p.add_argument("--freeze-bn-stats", action="store_true", help="keep frozen layers' BN statistics fixed")
    p.add_argument("--freeze-layers", default=d.freeze_layers,
                   help="layers ranked for freezing (N of ceil(eta*N)): blocks (the convolutions of the prunable "
                        "blocks, the authors' trace) or all (every convolution)")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="prune only the first N blocks (0 = all)")
    p.add_argument("--criterion", default=d.criterion,
                   help=f"how a block's filters are ranked, lowest removed: {', '.join(CRITERIA)} (the paper: l1; "
                        "docs/method.md, 'Pruning criteria')")
    p.add_argument("--coupled", action="store_true",
                   help="a model outside the paper's families: also prune the groups whose channels feed a residual "
                        "addition (python -m icepick blocks lists them)")
    p.add_argument("--criterion-batches", type=int, default=d.criterion_batches,
                   help="training batches that taylor and mean_activation read at each step")
    p.add_argument("--no-eval-cache", action="store_true",
                   help="evaluate the whole model every time, instead of starting a pass after a prune at the pruned "
                        "block from the activations the last pass kept (same counts; docs/performance.md)")
    p.add_argument("--steps-out", required=True, type=Path, help="per-step CSV")
    p.add_argument("--summary-out", required=True, type=Path, help="summary JSON")
    p.add_argument("--model-out", required=True, type=Path, help="pruned model file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    lr_policy = args.lr_policy or ("fixed" if args.method in ("baseline", "oneshot") else "icepick")
    cfg = RunConfig(
        method=args.method, lr_policy=lr_policy, theta=args.theta, eta=args.eta, ratio=args.ratio,
        seed=args.seed, base=args.base, delta=args.delta, p=args.p, beta=args.beta,
        decision_split=args.decision_split, val_size=args.val_size, freeze_bn_stats=args.freeze_bn_stats,
        freeze_layers=args.freeze_layers, max_steps=args.max_steps, eval_cache=not args.no_eval_cache,
        criterion=args.criterion, criterion_batches=args.criterion_batches, coupled=args.coupled,
        finetune=_finetune_config(args, lr_shape=args.lr_shape, early_halt=args.early_halt),
    )
    trace = read_trace(args.trace)
    model = _check_pretrained(args, Path(str(args.summary_out) + ".pretrained.pt"))
    if trace is not None and cfg.eta > 0:
        _check_trace_matches(trace, model, args.pretrained, args.trace)
    dist = from_env()
    device = _run_device(args, dist)
    torch.manual_seed(cfg.seed)
    data = load_experiment_data(args.data, device, cfg.decision_split, cfg.val_size, cfg.val_seed,
                                _normalization(args.normalize, model), data_memory=args.data_memory)
    summary = run_experiment(cfg, args.pretrained, data, args.steps_out, args.summary_out, args.model_out,
                             trace, device, show_progress=not args.no_progress and is_main(dist), dist=dist)
    log.info("final accuracy %.2f%% after %d fine-tunings, %.1fs", summary["final_acc"],
             summary["n_finetunes"], summary["total_seconds"])
    shutdown(dist)  # not on an error: torchrun then stops the other processes
    return 0


def _run_device(args: argparse.Namespace, dist: Dist) -> torch.device:
    """The device of this process. One process: :func:`setup_device` (a GPU slot of this machine).
    A process of ``torchrun`` (icepick.distributed): its node's share of ``--threads``, the GPU of
    its local rank (or the CPU), the process group joined; other ranks log warnings only."""
    if not dist.active:
        return setup_device(args)
    if not is_main(dist):
        logging.getLogger("icepick").setLevel(logging.WARNING)
    set_threads(process_threads(args.threads, dist))
    device = resolve_device(rank_device(dist, args.device))
    init(dist, device)
    configure_backends(device, args.precision)
    log.info("process %d of %d on %s (%s)", dist.rank, dist.world_size, device, backend_for(device))
    return device


def _check_pretrained(args: argparse.Namespace, converted: Path) -> torch.nn.Module:
    """The --pretrained model (on the CPU), after checking it is the architecture --model names.

    Your own weights (a state dict, a saved module, torchvision's named weights) are read as
    --model for the data's classes and image shape and written once as an icepick model file
    to ``converted``; ``args.pretrained`` then names that file.
    """
    from icepick.model_files import ensure_model_file

    if args.model is not None:
        from icepick.models import check_model_name

        check_model_name(args.model)
    info = dataset_info(args.data)
    args.pretrained = Path(ensure_model_file(args.pretrained, args.model, info.num_classes, info.image_shape,
                                             converted))
    model, _ = load_model(args.pretrained, "cpu")
    return model


def _normalization(choice: str, model: torch.nn.Module):
    """--normalize as :func:`icepick.data.load_experiment_data` takes it: 'model' is what the model's
    file records ('none', or its mean and std), the data's statistics when it records nothing."""
    if choice == "none":
        return None
    if choice == "data":
        return "data"
    recorded = getattr(model, "normalization", None)
    if recorded is None:
        return "data"
    return None if recorded == "none" else recorded


def _check_trace_matches(trace: dict, model: torch.nn.Module, pretrained: Path, trace_path: Path) -> None:
    names = [name for name, _, _ in conv_layers(model)]
    traced = [row["layer"] for row in trace.get("layers", [])]
    if traced != names:
        raise ConfigError(f"trace: {trace_path} was written for model {trace.get('model')!r}, "
                          f"not for {model.arch_name!r} ({pretrained}); rerun `icepick trace` for this model")


def _register_weight_shift(subparsers: argparse._SubParsersAction) -> None:
    w = WeightShiftConfig()
    p = subparsers.add_parser("weight-shift", help="Section 4.1: per-layer weight shift along iterative pruning")
    _add_data_args(p, w.ratio)
    _add_finetune_args(p)
    p.add_argument("--steps", type=int, default=w.steps, help="pruning steps to trace")
    p.add_argument("--lr", type=float, default=w.lr, help="fine-tuning learning rate (paper: 0.001)")
    p.add_argument("--out", required=True, type=Path, help="tidy CSV: model, step, layer, layer_index, shift")
    add_device_args(p)
    p.set_defaults(func=_weight_shift)


def _weight_shift(args: argparse.Namespace) -> int:
    ft_cfg, device, data, model, teacher = _shift_setup(args)
    shifts, _ = shift_trace(model, teacher, data.train, args.ratio, args.steps, args.lr, ft_cfg, args.seed,
                            show_progress=True)
    write_csv(args.out, weight_shift_table(model.arch_name, shifts))
    return 0
