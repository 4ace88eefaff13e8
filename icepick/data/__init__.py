"""Data sets on disk and device-resident batch iterators.

* **On disk**: imported image sets (:mod:`~icepick.data.importing`: CIFAR-10, CIFAR-100,
  Fashion-MNIST, MNIST, scikit-learn's digits, a folder of class folders) at any image size
  and channel count, as one uint8 ``.npy`` of images and one of labels per split
  (:mod:`~icepick.data.arrays`), with their ``manifest.json`` (:mod:`~icepick.data.manifest`);
  the real CIFAR-10 (:mod:`~icepick.data.cifar`: official md5 list, download through
  torchvision) and a generated stand-in (:mod:`~icepick.data.synth`) in CIFAR-10's own
  pickled batches (:mod:`~icepick.data.layout`). The reader (:mod:`~icepick.data.reader`)
  checks every file's md5 before reading, without importing torchvision.
* **On the device** (:mod:`~icepick.data.split`): a :class:`Split` holds a whole split as uint8
  tensors with its normalisation, flip setting and augmentation (:mod:`~icepick.data.augment`:
  the CIFAR recipe below 64 pixels, a random resized crop above); :func:`train_batches`
  shuffles and augments on the device; :func:`eval_batches` only normalises. A split larger
  than the data memory cap stays on disk and is streamed (:mod:`~icepick.data.stream`), with
  the same batches. An experiment's
  splits (train, test, decision) are an :class:`ExperimentData` (:mod:`~icepick.data.experiment`).

Example::

    synth_cifar10("data/synth", n_train=4000, n_test=1000, seed=0)
    train = load_split("data/synth", "train", "cpu")
    for x, y in train_batches(train, batch_size=128, seed=epoch):
        ...
    dataset_info("data/synth").record()  # source, digest, classes, sizes, image_shape, augmentation
"""

from __future__ import annotations

from icepick.data.cifar import OFFICIAL_MD5, fetch_cifar10, official_digest
from icepick.data.destination import DestinationError
from icepick.data.importing import (
    CIFAR100_MD5,
    IDX_MD5,
    SOURCES,
    DataSourceError,
    MissingExtraError,
    import_dataset,
    stratified_split,
)
from icepick.data.layout import (
    BASE_FOLDER,
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    MANIFEST,
    MARKER,
    DataIntegrityError,
    IncompleteDataError,
)
from icepick.data.manifest import FORMAT, DatasetInfo, dataset_info
from icepick.data.experiment import (
    ExperimentData,
    check_classes,
    in_memory_data,
    load_experiment_data,
    resolve_normalization,
)
from icepick.data.reader import load_cifar10, read_split
from icepick.data.split import (
    Split,
    as_split,
    eval_batches,
    load_split,
    normalize,
    num_train_batches,
    split_bytes,
    split_validation,
    subset,
    train_batches,
)
from icepick.data.stream import DATA_MEMORY_SHARE, DiskImages, memory_cap, parse_memory, plan_storage
from icepick.data.synth import SYNTH_DIFFICULTIES, is_synthetic, synth_cifar10

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_CLASSES",
    "BASE_FOLDER",
    "MARKER",
    "MANIFEST",
    "FORMAT",
    "OFFICIAL_MD5",
    "CIFAR100_MD5",
    "IDX_MD5",
    "SOURCES",
    "SYNTH_DIFFICULTIES",
    "DataIntegrityError",
    "IncompleteDataError",
    "DataSourceError",
    "MissingExtraError",
    "DestinationError",
    "DatasetInfo",
    "dataset_info",
    "official_digest",
    "import_dataset",
    "stratified_split",
    "fetch_cifar10",
    "synth_cifar10",
    "load_cifar10",
    "read_split",
    "is_synthetic",
    "Split",
    "load_split",
    "split_bytes",
    "DiskImages",
    "DATA_MEMORY_SHARE",
    "memory_cap",
    "parse_memory",
    "plan_storage",
    "split_validation",
    "subset",
    "train_batches",
    "num_train_batches",
    "eval_batches",
    "normalize",
    "ExperimentData",
    "load_experiment_data",
    "in_memory_data",
    "as_split",
    "check_classes",
    "resolve_normalization",
]
