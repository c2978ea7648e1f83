"""Data sets for the image classification experiments: train / validation / test splits from one call.

``load_dataset(name, root="data", ...)`` returns a :class:`DataSplits` for

- ``"digits"``: scikit-learn's 8x8 handwritten digits (1797 images, 1 channel, 10 classes), shipped
  inside scikit-learn, so it runs anywhere; a fixed 20% of it (seeded by ``DIGITS_TEST_SEED``) is the
  test set.
- ``"mnist"``: torchvision's MNIST reader on the four IDX files in ``<root>/MNIST/raw`` (28x28, 1 channel,
  60,000 training and 10,000 test images), normalised by the training images' mean and standard deviation
  and, like the digits, never augmented.
- ``"cifar10"`` / ``"cifar100"``: torchvision's CIFAR readers on ``<root>/cifar-10-batches-py`` and
  ``<root>/cifar-100-python`` (32x32, 3 channels), with random crop (padding 4) and horizontal flip.
- ``"imagenet"``: ``torchvision.datasets.ImageFolder`` on ``<root>/imagenet/train`` and
  ``<root>/imagenet/val`` (one folder per class in both), with RandomResizedCrop and flip for training
  and Resize + CenterCrop for evaluation; the official validation set serves as the test set.

In every case the validation split is held out of the *training* set by a seeded permutation
(``split_seed``, ``val_fraction``), so that no choice is ever made on the test set. Nothing is ever
downloaded: a missing data set raises ``FileNotFoundError`` with the expected path and how to get it
(see ``data/README.md``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from aslib.training.batches import PixelSpec

if TYPE_CHECKING:
    from torchvision import datasets

# torchvision is imported inside the functions that need it: importing it takes seconds, and the digits
# (the default everywhere, and every test's data set) do without it.

__all__ = [
    "DATASETS",
    "DATASET_INFO",
    "DatasetInfo",
    "DIGITS_TEST_SEED",
    "DataSplits",
    "TransformedSubset",
    "cifar_class",
    "load_dataset",
    "split_indices",
]



@dataclass(frozen=True)
class DatasetInfo:
    """What is known of a data set without loading it: sizes before any split, input shape, classes, stem.

    Attributes:
        train_size: images in the official training set (the validation split is held out of these).
        test_size: images in the official test set (ImageNet: the validation set, used as test set).
        in_channels, input_size: image channels and height (= width) as the model sees them.
        num_classes: label count.
        stem: the model stem that fits the input size (see :data:`aslib.models.STEMS`).
    """

    train_size: int
    test_size: int
    in_channels: int
    input_size: int
    num_classes: int
    stem: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return (self.in_channels, self.input_size, self.input_size)


#: The one table of data-set facts; every other module reads sizes, shapes and classes from here.
DATASET_INFO: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(train_size=1438, test_size=359, in_channels=1, input_size=8, num_classes=10, stem="cifar"),
    "mnist": DatasetInfo(60_000, 10_000, 1, 28, 10, "cifar"),
    "cifar10": DatasetInfo(50_000, 10_000, 3, 32, 10, "cifar"),
    "cifar100": DatasetInfo(50_000, 10_000, 3, 32, 100, "cifar"),
    "imagenet": DatasetInfo(1_281_167, 50_000, 3, 224, 1000, "imagenet"),
}

#: Names accepted by :func:`load_dataset`.
DATASETS: tuple[str, ...] = tuple(DATASET_INFO)

#: Seed of the fixed digits train/test split (the same test images whatever the run's seed).
DIGITS_TEST_SEED: int = 0

# Per-channel mean and standard deviation of the training images (values in [0, 1]), the usual constants.
_MNIST_STATS = ((0.1307,), (0.3081,))
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_PIXEL_STATS = {"mnist": _MNIST_STATS, "cifar10": _CIFAR10_STATS, "cifar100": _CIFAR100_STATS}
_CIFAR_PADDING = 4

_IMAGENET_URL = "https://image-net.org/download-images.php"


@dataclass(frozen=True)
class DataSplits:
    """A data set's three splits and what a model needs to know about its inputs.

    Attributes:
        name: one of :data:`DATASETS`.
        train: training examples (with augmentation), items ``(image (C, H, W) float, label int)``.
        val: held out of the training set, evaluation transform; ``None`` when ``val_fraction == 0``.
        test: the test set, evaluation transform.
        num_classes, in_channels, input_size: label count, image channels, image height (= width).
        stem: the model stem that fits the input size, ``"cifar"`` (small images) or ``"imagenet"``.
        classes: class names, index = label.
    """

    name: str
    train: Dataset
    val: Dataset | None
    test: Dataset
    num_classes: int
    in_channels: int
    input_size: int
    stem: str
    classes: tuple[str, ...]


class TransformedSubset(Dataset):
    """``base[indices[i]]`` with ``transform`` applied to the image: one base data set, several views.

    The training and validation splits share one base data set (loaded once) but use different transforms.
    ``pixels`` says what ``transform`` does to the stored pixels, for the tensor pipeline
    (:mod:`aslib.training.batches`); ``None`` where there is no tensor form (ImageNet).
    """

    def __init__(self, base: Dataset, indices: Sequence[int] | np.ndarray, transform: Callable | None = None,
                 pixels: PixelSpec | None = None):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image, label = self.base[int(self.indices[i])]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(label)


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)`` into ``(kept, held_out)`` with ``round(fraction * n)`` held out.

    Both arrays are in the order of one seeded random permutation (a function of ``(n, seed)`` only), so
    a prefix of ``kept`` is a random subset of it.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fraction must lie in [0, 1), got {fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    n_out = int(round(fraction * n))
    return perm[n_out:], perm[:n_out]


def cifar_class(name: str, *, verify_checksums: bool = True) -> type[datasets.CIFAR10]:
    """torchvision's CIFAR-10 or CIFAR-100 reader, optionally with the md5 checks switched off.

    torchvision compares each file's md5 with the official one; files in the same format but with other
    contents (a test's tiny data set) fail that check. The unchecked variant is a subclass whose file
    lists carry ``md5 = None``, which ``torchvision.datasets.utils.check_integrity`` reads as "the file
    must exist" and nothing more: file names, pickle format, keys and array shapes are read by torchvision's
    own code as before.
    """
    from torchvision import datasets

    if name not in ("cifar10", "cifar100"):
        raise ValueError(f"unknown CIFAR data set {name!r}: choose cifar10 or cifar100")
    base = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    if verify_checksums:
        return base
    return type(
        f"{base.__name__}Unchecked",
        (base,),
        {
            "train_list": [[fname, None] for fname, _ in base.train_list],
            "test_list": [[fname, None] for fname, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
            "__doc__": f"{base.__name__} without the md5 comparison (format and file checks kept).",
        },
    )


def _require_files(what: str, folder: Path, names: Sequence[str], how: str) -> None:
    """``FileNotFoundError`` listing the missing files of a data set and how to get them."""
    if not folder.is_dir():
        expected = f"the folder {folder} (holding {', '.join(names)})"
    else:
        missing = [str(folder / name) for name in names if not (folder / name).exists()]
        if not missing:
            return
        expected = ", ".join(missing)
    raise FileNotFoundError(
        f"{what} not found: expected {expected}. {how} (see data/README.md; nothing is downloaded automatically)"
    )


def _load_digits() -> tuple[Dataset, Dataset, None, None, tuple[str, ...]]:
    """The digits as ``(N, 1, 8, 8)`` tensors scaled to [0, 1], then normalised by the training images'
    mean and standard deviation (computed here, once; no per-item transform)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)
    labels = torch.from_numpy(digits.target).long()
    train_idx, test_idx = (np.sort(i) for i in split_indices(len(labels), 0.2, DIGITS_TEST_SEED))
    images = (images - images[train_idx].mean()) / images[train_idx].std()
    train = torch.utils.data.TensorDataset(images[train_idx], labels[train_idx])
    test = torch.utils.data.TensorDataset(images[test_idx], labels[test_idx])
    return train, test, None, None, tuple(str(k) for k in range(10))


def _load_mnist(root: Path) -> tuple[Dataset, Dataset, Callable, Callable, tuple[str, ...]]:
    """torchvision's MNIST on ``<root>/MNIST/raw`` (the four uncompressed IDX files); ``ToTensor`` then the
    normalisation ``(x - 0.1307) / 0.3081`` for every split (no augmentation: flips and crops change digits)."""
    from torchvision import datasets, transforms

    folder = root / "MNIST" / "raw"
    files = [Path(url).stem for url, _ in datasets.MNIST.resources]  # "train-images-idx3-ubyte.gz" -> "...ubyte"
    mirror = datasets.MNIST.mirrors[0]
    _require_files(
        "MNIST",
        folder,
        files,
        f"Download {', '.join(f + '.gz' for f in files)} from {mirror} and gunzip them into {folder}, or run "
        f"python -c \"import torchvision; torchvision.datasets.MNIST('{root}', download=True)\"",
    )
    try:
        train = datasets.MNIST(str(root), train=True, download=False)
        test = datasets.MNIST(str(root), train=False, download=False)
    except (AssertionError, KeyError, RuntimeError, ValueError) as err:  # torchvision's IDX reader asserts
        raise ValueError(f"MNIST files in {folder} are not valid IDX files: {type(err).__name__}: {err}") from err
    for split, ds in (("train", train), ("t10k", test)):
        if len(ds.data) != len(ds.targets):
            raise ValueError(f"MNIST {split} files in {folder} disagree: {len(ds.data)} images, "
                             f"{len(ds.targets)} labels")
    evaluate = transforms.Compose([transforms.ToTensor(), transforms.Normalize(*_MNIST_STATS)])
    return train, test, evaluate, evaluate, tuple(train.classes)


def _load_cifar(
    name: str, root: Path, augment: bool, verify_checksums: bool
) -> tuple[Dataset, Dataset, Callable, Callable, tuple[str, ...]]:
    from torchvision import transforms

    cls = cifar_class(name, verify_checksums=verify_checksums)
    folder = root / cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    label, reader = ("CIFAR-10", "CIFAR10") if name == "cifar10" else ("CIFAR-100", "CIFAR100")
    _require_files(
        label,
        folder,
        files,
        f"Download {cls.url} and extract it into {root} (tar xzf {cls.filename} -C {root}), or run "
        f"python -c \"import torchvision; torchvision.datasets.{reader}('{root}', download=True)\"",
    )
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as err:  # torchvision's "not found or corrupted": here only a checksum mismatch
        raise ValueError(f"{label} files in {folder} fail torchvision's md5 check: {err}") from err
    stats = _CIFAR10_STATS if name == "cifar10" else _CIFAR100_STATS
    training, evaluate = _image_transforms(
        stats, [], [transforms.RandomCrop(32, padding=_CIFAR_PADDING), transforms.RandomHorizontalFlip()], augment)
    return train, test, training, evaluate, tuple(train.classes)


def _image_transforms(stats: tuple[tuple[float, ...], tuple[float, ...]], evaluate_ops: list[Callable],
                      augment_ops: list[Callable], augment: bool) -> tuple[Callable, Callable]:
    """``(training, evaluate)`` transforms of PIL images: the given ops, then ``ToTensor`` and ``Normalize(*stats)``;
    training uses ``augment_ops`` when ``augment`` and the evaluation transform otherwise."""
    from torchvision import transforms

    def compose(ops: list[Callable]) -> Callable:
        return transforms.Compose([*ops, transforms.ToTensor(), transforms.Normalize(*stats)])

    evaluate = compose(evaluate_ops)
    return (compose(augment_ops) if augment else evaluate), evaluate


def _pixel_specs(name: str, augment: bool) -> tuple[PixelSpec | None, PixelSpec | None]:
    """What the training and the evaluation transform of data set ``name`` do to its stored pixels (``None``:
    no tensor form, ImageNet)."""
    if name == "imagenet":
        return None, None
    if name == "digits":  # stored normalised, never augmented
        return PixelSpec(), PixelSpec()
    evaluate = PixelSpec(*_PIXEL_STATS[name])
    if name == "mnist" or not augment:
        return evaluate, evaluate
    return dataclasses.replace(evaluate, pad=_CIFAR_PADDING, flip=True), evaluate


def _load_imagenet(
    root: Path, augment: bool, image_size: int
) -> tuple[Dataset, Dataset, Callable, Callable, tuple[str, ...]]:
    from torchvision import datasets, transforms

    folder = root / "imagenet"
    how = (
        f"Get ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from {_IMAGENET_URL} (free account) and "
        f"extract them into {folder}/train/<wnid>/*.JPEG and {folder}/val/<wnid>/*.JPEG (the validation "
        "images sorted into one folder per class)"
    )
    _require_files("ImageNet", folder, ["train", "val"], how)
    try:
        train = datasets.ImageFolder(str(folder / "train"))
        test = datasets.ImageFolder(str(folder / "val"))
    except FileNotFoundError as err:  # an empty folder, or class folders without images
        raise FileNotFoundError(f"ImageNet in {folder} is incomplete: {err}. {how}") from err
    if train.classes != test.classes:
        raise ValueError(
            f"ImageNet class folders differ between {folder / 'train'} ({len(train.classes)} classes) and "
            f"{folder / 'val'} ({len(test.classes)} classes)"
        )
    training, evaluate = _image_transforms(
        _IMAGENET_STATS, [transforms.Resize(int(round(image_size / 0.875))), transforms.CenterCrop(image_size)],
        [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip()], augment)
    return train, test, training, evaluate, tuple(train.classes)


def load_dataset(
    name: str,
    root: str | os.PathLike[str] = "data",
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    augment: bool = True,
    max_train_samples: int | None = None,
    image_size: int = 224,
    verify_checksums: bool = True,
) -> DataSplits:
    """Load a data set's train / validation / test splits.

    Args:
        name: one of :data:`DATASETS`.
        root: the data folder (see ``data/README.md`` for the layout of each data set).
        val_fraction: fraction of the training set held out for validation, in ``[0, 1)``.
        split_seed: seed of the validation split (kept apart from the training seed, so that every run
            validates on the same images).
        augment: random training transforms (CIFAR: crop with padding 4 + horizontal flip; ImageNet:
            RandomResizedCrop + flip); the digits and MNIST are never augmented (flips do not preserve
            digits).
        max_train_samples: keep only the first this many training examples (after the validation split),
            for quick runs.
        image_size: ImageNet crop size (evaluation resizes to ``image_size / 0.875`` first).
        verify_checksums: compare CIFAR files with torchvision's md5 sums (turn off for data sets in the
            CIFAR format that are not the official files).

    Raises:
        ValueError: unknown name or bad option value.
        FileNotFoundError: the data set is not under ``root``; the message gives the expected path and
            how to get the data.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")
    if max_train_samples is not None and max_train_samples < 1:
        raise ValueError(f"max_train_samples must be >= 1 or None, got {max_train_samples}")
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    root = Path(root)
    if name == "digits":
        base_train, base_test, training, evaluate, classes = _load_digits()
    elif name == "mnist":
        base_train, base_test, training, evaluate, classes = _load_mnist(root)
    elif name in ("cifar10", "cifar100"):
        base_train, base_test, training, evaluate, classes = _load_cifar(name, root, augment, verify_checksums)
    else:
        base_train, base_test, training, evaluate, classes = _load_imagenet(root, augment, image_size)

    train_idx, val_idx = split_indices(len(base_train), val_fraction, split_seed)
    train_idx, val_idx = np.sort(train_idx[:max_train_samples]), np.sort(val_idx)
    image, _ = TransformedSubset(base_test, [0], evaluate)[0]
    train_pixels, eval_pixels = _pixel_specs(name, augment)
    return DataSplits(
        name=name,
        train=TransformedSubset(base_train, train_idx, training, train_pixels),
        val=TransformedSubset(base_train, val_idx, evaluate, eval_pixels) if len(val_idx) else None,
        test=TransformedSubset(base_test, np.arange(len(base_test)), evaluate, eval_pixels),
        num_classes=len(classes),
        in_channels=int(image.shape[0]),
        input_size=int(image.shape[-1]),
        stem=DATASET_INFO[name].stem,
        classes=classes,
    )
