"""Command ``pretrain``: train a model from scratch with the published recipe, or from weights
(``--init``: transfer learning, a new classifier for the data's classes), resumable."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from icepick.commands.common import add_device_args, seed_int, setup_device

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pretrain`` subcommand."""
    from icepick.models import model_names
    from icepick.train import NORMALIZE, SCHEDULES, WARMUPS, PretrainConfig

    d = PretrainConfig.__dataclass_fields__  # defaults shown in --help come from the config
    p = subparsers.add_parser("pretrain", help="pretrain a model from scratch (published recipes) or from weights "
                                               "(--init); resumes after a kill")
    p.add_argument("--model", required=True,
                   help=f"{', '.join(model_names())}, torchvision:<builder> or python:<module>:<factory>")
    p.add_argument("--data", required=True, type=Path, help="data folder (icepick data import / synth / fetch)")
    p.add_argument("--init", default=None,
                   help="start from these weights: an icepick model file, a state dict or saved module of --model, or "
                        "torchvision's named weights (IMAGENET1K_V1, from the local torch hub cache); a classifier of "
                        "another class count is replaced and trained; --epochs 0 only converts the weights into an "
                        "icepick model file")
    p.add_argument("--normalize", default=d["normalize"].default, choices=NORMALIZE,
                   help="what the model's inputs are normalised with: auto = the --init weights' own (torchvision's), "
                        "else the data set's statistics; data; none (0..1 values, a model that normalises itself)")
    p.add_argument("--out", required=True, type=Path, help="model file to write (.pt)")
    p.add_argument("--epochs-csv", required=True, type=Path, help="per-epoch CSV to write")
    p.add_argument("--summary", required=True, type=Path, help="summary JSON to write")
    p.add_argument("--epochs", type=int, default=d["epochs"].default,
                   help="training epochs (with --init a few are usual, and 0 converts without training)")
    p.add_argument("--lr", type=float, default=d["lr"].default, help="peak learning rate")
    p.add_argument("--momentum", type=float, default=d["momentum"].default, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="default: the recipe (1e-4 ResNets, 5e-4 MobileNetV2)")
    p.add_argument("--schedule", default=d["schedule"].default, choices=SCHEDULES,
                   help="auto: step for ResNets, cosine for MobileNetV2")
    p.add_argument("--milestones", type=float, nargs="+", default=list(d["milestones"].default),
                   help="step-schedule milestones: fractions of --epochs in (0, 1) or whole epochs (default 0.5 0.75)")
    p.add_argument("--gamma", type=float, default=d["gamma"].default, help="step-schedule lr factor")
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default, help="batch size")
    p.add_argument("--seed", type=seed_int, default=d["seed"].default, help="initialisation, data order and augmentation")
    p.add_argument("--n-train", type=int, default=None, help="train on a fixed random subset of N images")
    p.add_argument("--warmup", default=d["warmup"].default, choices=WARMUPS,
                   help="He et al. 2016 Sec. 4.2: start at --warmup-factor x lr until the training error is below "
                        "--warmup-error; auto = on for ResNets of 110 layers or more")
    p.add_argument("--warmup-factor", type=float, default=d["warmup_factor"].default,
                   help="warm-up rate as a fraction of --lr")
    p.add_argument("--warmup-error", type=float, default=d["warmup_error"].default,
                   help="training error (percent, last 20 batches) that ends the warm-up")
    add_device_args(p)
    p.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from icepick.train import PretrainConfig, pretrain

    milestones = tuple(int(m) if m >= 1 and m == int(m) else m for m in args.milestones)
    cfg = PretrainConfig(
        model=args.model, epochs=args.epochs, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, schedule=args.schedule, milestones=milestones, gamma=args.gamma,
        batch_size=args.batch_size, seed=args.seed, device=args.device, threads=args.threads,
        n_train=args.n_train, precision=args.precision, warmup=args.warmup,
        warmup_factor=args.warmup_factor, warmup_error=args.warmup_error, init=args.init,
        normalize=args.normalize,
    )
    setup_device(args)  # threads, and cuDNN autotuning / TF32 on GPUs as for the other commands
    summary = pretrain(cfg, args.data, args.out, args.epochs_csv, args.summary)
    log.info("pretrained %s: %.2f%% test accuracy after %d epochs (%.0f s)",
             cfg.model, summary["final_test_acc"], cfg.epochs, summary["seconds"])
    return 0
