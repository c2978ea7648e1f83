"""The loaders and one short training run on the real data sets, wherever ``data/`` holds them.

Each test needs a real data set in the repository's ``data/`` folder (``data/README.md`` says how to get it;
CI materialises a copy there first) and is reported as skipped, with the missing path, where it is not.
The CIFAR-10 copy on the project's machines is not byte-identical to the official files, so it is read
with ``verify_checksums=False``; counts and pixel statistics below are what the official files give.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from aslib.training.data import DATASET_INFO, load_dataset

from helpers import REPO_ROOT

DATA = REPO_ROOT / "data"
CIFAR10_FOLDER = DATA / "cifar-10-batches-py"
MNIST_FOLDER = DATA / "MNIST" / "raw"

needs_cifar10 = pytest.mark.skipif(not CIFAR10_FOLDER.is_dir(), reason=f"no CIFAR-10 in {CIFAR10_FOLDER}")
needs_mnist = pytest.mark.skipif(not MNIST_FOLDER.is_dir(), reason=f"no MNIST in {MNIST_FOLDER}")

# The published per-channel statistics of the training images (pixel values in [0, 1]).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def _byte_moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 images ``(..., C)``, scaled to [0, 1], from exact
    histograms of the 256 byte values (no float copy of the whole set)."""
    values = np.arange(256) / 255.0
    hists = [np.bincount(images[..., c].ravel(), minlength=256) for c in range(images.shape[-1])]
    mean = np.array([h @ values / h.sum() for h in hists])
    var = np.array([h @ values**2 / h.sum() for h in hists]) - mean**2
    return mean, np.sqrt(var)


def _channel_moments(dataset, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over every pixel of every image of ``dataset``."""
    total = total_sq = None
    count = 0
    for x, _ in DataLoader(dataset, batch_size=batch_size):
        x = x.double().transpose(0, 1).flatten(1)  # (C, N H W)
        total = x.sum(1) if total is None else total + x.sum(1)
        total_sq = (x * x).sum(1) if total_sq is None else total_sq + (x * x).sum(1)
        count += x.shape[1]
    mean = total / count
    return mean.numpy(), (total_sq / count - mean * mean).sqrt().numpy()


def _counts(name: str) -> None:
    info = DATASET_INFO[name]
    s = load_dataset(name, DATA, val_fraction=0.1, split_seed=0, verify_checksums=False)
    assert (len(s.train) + len(s.val), len(s.test)) == (info.train_size, info.test_size)
    assert len(s.val) == round(0.1 * info.train_size)
    assert set(s.train.indices.tolist()).isdisjoint(s.val.indices.tolist())
    assert (s.num_classes, s.in_channels, s.input_size) == (info.num_classes, info.in_channels, info.input_size)
    for split in (s.train, s.test):  # every class present, roughly balanced (both sets are)
        labels = np.bincount(np.asarray(split.base.targets)[split.indices], minlength=info.num_classes)
        assert labels.min() > 0.8 * len(split) / info.num_classes


@needs_cifar10
def test_cifar10_counts_and_classes():
    _counts("cifar10")
    assert load_dataset("cifar10", DATA, verify_checksums=False).classes[:3] == ("airplane", "automobile", "bird")


@needs_mnist
def test_mnist_counts_and_classes():
    _counts("mnist")


@needs_cifar10
def test_cifar10_pixel_statistics():
    s = load_dataset("cifar10", DATA, val_fraction=0.0, augment=False, verify_checksums=False)
    # the raw training bytes (an oracle independent of the transforms) give the published constants
    raw_mean, raw_std = _byte_moments(s.train.base.data)
    np.testing.assert_allclose(raw_mean, CIFAR10_MEAN, atol=1e-4)
    np.testing.assert_allclose(raw_std, CIFAR10_STD, atol=1e-4)
    # what the loader yields for a subset is that subset's bytes, standardised by the constants
    subset = Subset(s.train, range(0, len(s.train), 10))
    sub_mean, sub_std = _byte_moments(s.train.base.data[s.train.indices[subset.indices]])
    mean, std = _channel_moments(subset)
    np.testing.assert_allclose(mean, (sub_mean - CIFAR10_MEAN) / CIFAR10_STD, atol=1e-4)
    np.testing.assert_allclose(std, sub_std / CIFAR10_STD, atol=1e-4)


@needs_mnist
def test_mnist_pixel_statistics():
    s = load_dataset("mnist", DATA, val_fraction=0.0)
    images = s.train.base.data.numpy()[..., None]  # (N, 28, 28, 1) uint8
    raw_mean, raw_std = _byte_moments(images)
    np.testing.assert_allclose([raw_mean[0], raw_std[0]], [MNIST_MEAN, MNIST_STD], atol=1e-4)
    subset = Subset(s.train, range(0, len(s.train), 10))
    sub_mean, sub_std = _byte_moments(images[s.train.indices[subset.indices]])
    mean, std = _channel_moments(subset)
    np.testing.assert_allclose(mean, (sub_mean - MNIST_MEAN) / MNIST_STD, atol=1e-4)
    np.testing.assert_allclose(std, sub_std / MNIST_STD, atol=1e-4)


@needs_cifar10
def test_a_short_cifar10_run_beats_chance_clearly(tmp_path):
    """About a minute of one-thread CPU training of an AutoShuffleNet (l1-2 penalty, then rounding)."""
    from aslib.training.train import TrainConfig, train

    torch.set_num_threads(1)
    config = TrainConfig(
        dataset="cifar10", data_root=str(DATA), verify_checksums=False, max_train_samples=5000,
        model="shufflenet_v1_g8", model_kwargs={"width": 0.25}, stages_repeats=(1, 1, 1),
        shuffle="learned", lam=0.03, epochs=2, batch_size=64, recalibration_batches=20, device="cpu",
        checkpoint=False, show_progress=False, output_dir=str(tmp_path),
    )
    result = train(config)
    # chance is 0.10 on the 10,000 test images (1,000 exact, 9,000 JPEG-decoded on the project's machines)
    assert result.test_acc_soft > 0.25
    assert result.test_acc_hard > 0.25
    assert (tmp_path / "result.json").is_file() and (tmp_path / "layer_penalties.csv").is_file()
