"""Command ``data``: ``data import`` writes a labelled image set in the pipeline's format,
``data synth`` the generated CIFAR-format set, ``data fetch`` the real CIFAR-10."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from icepick.commands.common import seed_int

__all__ = ["register"]

log = logging.getLogger(__name__)

_SOURCES = "cifar10, cifar100, fashion-mnist, mnist, digits, imagefolder, imagenet, tinyimagenet"  # icepick.data.SOURCES (not imported: torch)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data import``, ``data synth`` and ``data fetch``."""
    parser = subparsers.add_parser("data", help="put a data set on disk (imported, generated or CIFAR-10)")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    imp = sub.add_parser(
        "import", help="write a labelled image set once into the pipeline's on-disk format (with manifest.json)",
        description="Write a labelled image set into OUT/ as one uint8 .npy of images and one of labels per split "
                    "(the official CIFAR-10 files stay as they are) and OUT/manifest.json (classes, image shape, what "
                    "was done to the images, counts, split, augmentation, normalisation, md5 of every file).",
    )
    imp.add_argument("--source", required=True,
                     help=f"one of {_SOURCES}: the official CIFAR-10/CIFAR-100 (downloaded, or from --path), "
                          "Fashion-MNIST/MNIST (the four IDX files, from --path or downloaded), scikit-learn's 8x8 "
                          "digits (pip install 'icepick[digits]'), or --path with one sub-folder of images per "
                          "class (or train/ and test/ folders of them, whose split is kept), or ImageNet-1k / "
                          "Tiny-ImageNet in their official layouts (--path; validation images as the test split)")
    imp.add_argument("--path", type=Path, default=None,
                     help="imagefolder: the folder of class folders; cifar10/cifar100: a folder holding the "
                          "official folder or .tar.gz, or the .tar.gz; fashion-mnist/mnist: the folder holding the "
                          "IDX files (e.g. /usr/share/datasets/fashion-mnist); downloaded when absent; imagenet: the "
                          "folder holding train/<wnid>/ and val/ (class folders, or flat with ILSVRC2012_devkit_t12/); "
                          "tinyimagenet: the tiny-imagenet-200 folder")
    imp.add_argument("--out", required=True, type=Path, help="data folder to write")
    imp.add_argument("--seed", type=seed_int, default=None,
                     help="seed of the stratified train/test split (digits, imagefolder; default 0), or of the "
                          "--train-fraction subset (imagenet, tinyimagenet; default 0)")
    imp.add_argument("--test-fraction", type=float, default=None,
                     help="share of each class held out for the test split (digits, imagefolder; default 0.2)")
    imp.add_argument("--train-fraction", type=float, default=None,
                     help="imagenet, tinyimagenet: keep this share of the training images, each class in proportion "
                          "(0.1: the follow-up's fine-tuning set); default all")
    imp.add_argument("--workers", type=int, default=None,
                     help="imagenet, tinyimagenet: processes decoding the images (default: the CPUs, at most 8)")
    imp.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                     help="whether random horizontal flips suit the images (default: yes, but not for digits and mnist)")
    imp.add_argument("--size", type=int, default=None,
                     help="make every image SIZExSIZE (default: the images' own size when they share one; digits: 32; "
                          "imagenet: 224; tinyimagenet: 64)")
    imp.add_argument("--channels", type=int, default=None, help="1 (grey) or 3 (RGB) (default: the images' own; digits: 3)")
    imp.add_argument("--fit", default=None,
                     help="how --size is reached: resize (shorter side to SIZE, centre crop; default) or pad (centred "
                          "on a black canvas, no resampling)")
    imp.add_argument("--force", action="store_true",
                     help="replace whatever OUT holds (without it: only an empty folder or an earlier import "
                          "of the same source)")
    imp.set_defaults(func=_import)

    synth = sub.add_parser("synth", help="write a generated data set in the CIFAR-10 on-disk format (no download)")
    synth.add_argument("--out", required=True, type=Path, help="data folder; files go to OUT/cifar-10-batches-py/")
    synth.add_argument("--train", required=True, type=int, help="number of training images (>= 10)")
    synth.add_argument("--test", required=True, type=int, help="number of test images (>= 10)")
    synth.add_argument("--seed", type=seed_int, default=0, help="generator seed")
    synth.add_argument("--difficulty", default="standard", help="generator preset: standard or easy (smoke runs)")
    synth.add_argument("--force", action="store_true",
                       help="write even where OUT holds other data (without it: only an empty folder or an "
                            "earlier generated set)")
    synth.set_defaults(func=_synth)

    fetch = sub.add_parser("fetch", help="download the real CIFAR-10 (or check files placed by hand)")
    fetch.add_argument("--root", required=True, type=Path, help="data folder; files go to ROOT/cifar-10-batches-py/")
    fetch.add_argument("--force", action="store_true",
                       help="download over whatever ROOT holds (other data, or CIFAR-10 files whose md5 differs)")
    fetch.set_defaults(func=_fetch)


def _import(args: argparse.Namespace) -> int:
    from icepick.data import import_dataset

    from icepick.data.manifest import read_manifest

    info = import_dataset(args.source, args.out, args.path, seed=args.seed, test_fraction=args.test_fraction,
                          flip=args.flip, size=args.size, channels=args.channels, fit=args.fit, force=args.force,
                          train_fraction=args.train_fraction, workers=args.workers)
    transform = read_manifest(args.out)[0].get("transform")
    c, h, w = info.image_shape
    log.info("imported %s into %s: %d classes, %d train%s and %d test images of %dx%d, %d channel%s (images: %s); "
             "%s augmentation, flips %s; data set %s", info.source, args.out, info.num_classes, info.n_train,
             f", {info.n_val} val" if info.n_val else "", info.n_test, w, h, c, "s" if c != 1 else "", transform,
             info.augmentation.replace("_", " "), "on" if info.flip else "off", info.digest)
    return 0


def _synth(args: argparse.Namespace) -> int:
    from icepick.data import synth_cifar10

    folder = synth_cifar10(args.out, n_train=args.train, n_test=args.test, seed=args.seed,
                           difficulty=args.difficulty, force=args.force)
    log.info("wrote a generated CIFAR-format data set (%d train, %d test, seed %d) to %s",
             args.train, args.test, args.seed, folder)
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from icepick.data import fetch_cifar10

    fetch_cifar10(args.root, force=args.force)
    log.info("CIFAR-10 is present and intact under %s", args.root)
    return 0
