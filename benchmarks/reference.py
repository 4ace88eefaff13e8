"""The reference: fine-tuning and evaluation written the way the authors' public code does it.

A benchmark baseline only, never used by the pipeline. It renders the facts listed in
docs/method.md ("The authors' loop, as facts") and nothing slower than that code really is:

* data: a torchvision-style dataset that turns each uint8 image into a PIL image and runs
  ``RandomHorizontalFlip, RandomCrop(32, 4), ToTensor, Normalize``; a ``DataLoader`` with
  batch 128, ``shuffle=True``, ``num_workers=0`` and ``pin_memory`` (which only acts on
  a GPU machine); the test loader the same without augmentation, batch 128;
* the model wrapped in ``nn.DataParallel`` (on a CPU a plain call), fp32, NCHW;
* per batch: ``zero_grad()``; the student's logits; the teacher's logits with autograd on and
  the teacher's parameters requiring grad (a copy of the unpruned model), so backward also
  runs through the teacher; CE + ``kl_div(log_softmax(z/2), softmax(z_t/2), 'sum') / batch``;
  backward; a plain ``torch.optim.SGD`` step (its default implementation for the device);
* evaluation under ``torch.no_grad`` in eval mode, batch 128, one ``.item()`` per batch.

Choices that make it no slower than the original: the teacher is in eval mode, no per-batch
logging or ``loss.item()``, and the per-channel normalisation and the flip setting are the
data set's, as the pipeline's (the authors' ImageNet constants cost the same, but would
shift the inputs the pretrained models were trained on; a set whose manifest says no flips,
such as the digits, gets none, in both arms).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from icepick.data import BASE_FOLDER, CIFAR10_MEAN, CIFAR10_STD, MANIFEST, MARKER, Split, dataset_info, load_split
from icepick.data.manifest import read_manifest
from icepick.pruning import conv_layers, prunable_blocks, prune_block
from icepick.runtime import synchronize
from icepick.schedule import step_lr

__all__ = [
    "ArrayCIFAR10",
    "cifar10_datasets",
    "train_loader",
    "test_loader",
    "make_teacher",
    "reference_finetune",
    "reference_accuracy",
    "reference_prune_loop",
]


class ArrayCIFAR10(Dataset):
    """torchvision's ``CIFAR10.__getitem__`` over in-memory images: PIL image, then the transform.

    Holds the images as uint8 HWC numpy arrays and the labels as a list of ints, as
    torchvision's class does after reading the pickled batches.
    """

    def __init__(self, split: Split, transform) -> None:
        self.data = np.ascontiguousarray(split.images.cpu().numpy().transpose(0, 2, 3, 1))
        self.targets = split.labels.cpu().tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        from PIL import Image

        img, target = self.data[index], self.targets[index]
        img = Image.fromarray(img)
        return self.transform(img), target


def _transforms(augment: bool, mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD,
                flip: bool = True, size: int = 32):
    """The authors' transform: (flip,) crop with padding 4, ToTensor, Normalize; no augmentation for a test set."""
    import torchvision.transforms as T

    steps = (([T.RandomHorizontalFlip()] if flip else []) + [T.RandomCrop(size, padding=4)]) if augment else []
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


def _file_md5s(root: Path) -> dict[str, str] | None:
    """md5 per file name of an imported (manifest) or generated (marker) set; None for the real CIFAR-10."""
    if (root / MANIFEST).is_file():
        return {Path(name).name: md5 for name, md5 in read_manifest(root)[0]["files"].items()}
    marker = root / BASE_FOLDER / MARKER
    return json.loads(marker.read_text())["files"] if marker.exists() else None


def cifar10_datasets(root: str | Path) -> tuple[Dataset, Dataset]:
    """torchvision's ``CIFAR10`` train and test sets under ``root`` with the authors' transforms.

    A set in icepick's own array format (``.npy`` per split) is read with :func:`load_split`
    into :class:`ArrayCIFAR10`, which renders torchvision's ``__getitem__`` over the same
    images. For the pickled CIFAR layout the files must be there (``download=False``);
    torchvision checks every file's md5 against
    the official list; for a set ``icepick.data.synth_cifar10`` generated or ``icepick data
    import`` wrote, against the md5s its marker or manifest records (the same check, other
    sums). Normalisation and flips are the data set's (:func:`icepick.data.dataset_info`).
    """
    from torchvision.datasets import CIFAR10

    info = dataset_info(root)
    if info.layout != "cifar-10-python":  # icepick's own array format: torchvision has no reader for it
        train, test = load_split(root, "train"), load_split(root, "test")
        return (ArrayCIFAR10(train, _transforms(True, info.mean, info.std, info.flip, train.images.shape[-1])),
                ArrayCIFAR10(test, _transforms(False, info.mean, info.std)))
    cls = CIFAR10
    files = _file_md5s(Path(root))
    if files is not None:
        cls = type("StoredCIFAR10", (CIFAR10,), {
            "train_list": [[f"data_batch_{i}", files[f"data_batch_{i}"]] for i in range(1, 6)],
            "test_list": [["test_batch", files["test_batch"]]],
            "meta": {**CIFAR10.meta, "md5": files[CIFAR10.meta["filename"]]},
        })
    return (cls(str(root), train=True, transform=_transforms(True, info.mean, info.std, info.flip), download=False),
            cls(str(root), train=False, transform=_transforms(False, info.mean, info.std), download=False))


def train_loader(data: Split | Dataset, batch_size: int = 128, seed: int = 0) -> DataLoader:
    """The authors' training loader: PIL transforms with augmentation, shuffled, no workers.

    ``data``: a split (wrapped in :class:`ArrayCIFAR10` with the augmenting transforms) or a
    dataset that applies them itself (:func:`cifar10_datasets`).
    """
    dataset = (ArrayCIFAR10(data, _transforms(True, data.mean, data.std, data.flip, data.images.shape[-1]))
               if isinstance(data, Split) else data)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=0,
        pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(seed),
    )


def test_loader(data: Split | Dataset, batch_size: int = 128) -> DataLoader:
    """The authors' test loader: no augmentation, in order, batch 128 (``data`` as in :func:`train_loader`)."""
    dataset = ArrayCIFAR10(data, _transforms(False, data.mean, data.std)) if isinstance(data, Split) else data
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=0, pin_memory=torch.cuda.is_available(),
    )


def make_teacher(model: nn.Module) -> nn.Module:
    """The authors' teacher: a copy of the unpruned model, made once, parameters requiring grad."""
    teacher = copy.deepcopy(model)
    for param in teacher.parameters():
        param.requires_grad_(True)
    return teacher


def reference_finetune(
    model: nn.Module,
    teacher: nn.Module,
    loader: DataLoader,
    lr: float,
    max_batches: int = 0,
    device: torch.device | str = "cpu",
) -> int:
    """One fine-tuning epoch (or ``max_batches``) in the authors' style; returns the batches done."""
    net = nn.DataParallel(model)
    tnet = nn.DataParallel(teacher)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    teacher.eval()
    done = 0
    for x, y in loader:
        if max_batches and done >= max_batches:
            break
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        z = net(x)
        z_t = tnet(x)  # autograd tracks the teacher: backward runs through it as well
        loss = F.cross_entropy(z, y) + F.kl_div(
            F.log_softmax(z / 2, dim=1), F.softmax(z_t / 2, dim=1), reduction="sum"
        ) / x.shape[0]
        loss.backward()
        opt.step()
        done += 1
    return done


def reference_accuracy(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy in percent, the authors' way: eval mode, ``no_grad``, batch by batch."""
    net = nn.DataParallel(model)
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            _, pred = net(x).max(1)
            total += y.size(0)
            correct += pred.eq(y).sum().item()
    return 100.0 * correct / max(total, 1)


def reference_prune_loop(
    model: nn.Module,
    tr: DataLoader,
    te: DataLoader,
    ratio: float,
    theta: float,
    method: str = "icepick",
    frozen: list[str] | None = None,
    max_steps: int = 0,
    max_batches: int = 0,
    base_lr: float = 1e-3,
    device: torch.device | str = "cpu",
) -> dict:
    """Algorithm 1 (or the baseline) in the authors' style; returns what it did.

    The teacher is copied from the unpruned model once; the frozen layers (by conv name,
    with the BN after each) get ``requires_grad=False`` after every prune; the model is
    validated after every prune and again after each fine-tuning; every fine-tuning runs
    its full epoch (or ``max_batches``), at Eq. 1's rate (ICE-Pick) or ``base_lr`` (baseline).
    Pruning itself is the pipeline's ``prune_block`` (the same work for both arms).
    ``tr`` and ``te``: the training and test loaders (:func:`train_loader`, :func:`test_loader`).
    The result holds the seconds of each piece, summed over the steps, as the pipeline's step
    records split them: ``t_prune`` (prune and freeze), ``t_test`` (the evaluation after the
    prune), ``t_finetune`` (the fine-tuning and the evaluation after it).
    """
    teacher = make_teacher(model)
    params_orig = sum(p.numel() for p in model.parameters())
    acc_orig = reference_accuracy(model, te, device)
    blocks = [name for name, _ in prunable_blocks(model)]
    steps = blocks[:max_steps] if max_steps else blocks
    finetunes = 0
    acc = acc_orig
    seconds = {"t_prune": 0.0, "t_test": 0.0, "t_finetune": 0.0}

    def lap(piece: str, start: float) -> float:
        synchronize(device)
        now = time.perf_counter()
        seconds[piece] += now - start
        return now

    for name in steps:
        start = time.perf_counter()
        prune_block(model, name, ratio)
        layers = {n: (c, b) for n, c, b in conv_layers(model)}
        for param in model.parameters():
            param.requires_grad_(True)
        for layer in frozen or []:
            for module in layers[layer]:
                if module is not None:
                    for param in module.parameters():
                        param.requires_grad_(False)
        start = lap("t_prune", start)
        acc = reference_accuracy(model, te, device)
        start = lap("t_test", start)
        if method == "baseline" or acc_orig - acc >= theta:
            alpha = sum(p.numel() for p in model.parameters()) / params_orig
            lr = step_lr("fixed" if method == "baseline" else "icepick", alpha, base_lr, 7.5e-4, 0.12, 50.0)
            reference_finetune(model, teacher, tr, lr, max_batches, device)
            acc = reference_accuracy(model, te, device)
            lap("t_finetune", start)
            finetunes += 1
    return {"acc_orig": acc_orig, "final_acc": acc, "n_steps": len(steps), "n_finetunes": finetunes, **seconds}
