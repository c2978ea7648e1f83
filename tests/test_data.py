"""The data module on tiny data sets written in the real on-disk formats, and on the embedded digits."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aslib.training.data import DIGITS_TEST_SEED, load_dataset, split_indices

CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465])
CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616])
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """``cifar-10-batches-py`` with ``data_batch_1..5``, ``test_batch`` and ``batches.meta``; returns the
    arrays written (images as (N, 32, 32, 3) uint8 in file order)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, size=per_batch).tolist()
        _pickle(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "data": x, "labels": y})
        train_x.append(x)
        train_y += y
    tx = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    ty = rng.integers(0, 10, size=n_test).tolist()
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": tx, "labels": ty})
    _pickle(folder / "batches.meta", {"label_names": [f"class{k}" for k in range(10)], "num_vis": 3072})
    hwc = lambda a: a.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # noqa: E731
    return {"train_x": hwc(np.vstack(train_x)), "train_y": np.array(train_y), "test_x": hwc(tx), "test_y": np.array(ty)}


def write_cifar100(root: Path, n_train: int = 20, n_test: int = 4) -> dict[str, np.ndarray]:
    """``cifar-100-python/{train,test,meta}`` with fine and coarse labels."""
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, size=n).tolist()
        coarse = [f // 5 for f in fine]
        _pickle(folder / split, {"filenames": [f"{i}.png" for i in range(n)], "data": x,
                                 "fine_labels": fine, "coarse_labels": coarse})
        out[f"{split}_y"] = np.array(fine)
    _pickle(folder / "meta", {"fine_label_names": [f"fine{k}" for k in range(100)],
                              "coarse_label_names": [f"coarse{k}" for k in range(20)]})
    return out


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format by its definition: two zero bytes, type code 0x08 (unsigned byte), the number of
    dimensions, each dimension as a big-endian uint32, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 12, n_test: int = 5, seed: int = 3) -> dict[str, np.ndarray]:
    """``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` with random 28x28 images; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        out[f"{split}_x"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        out[f"{split}_y"] = rng.integers(0, 10, size=n).astype(np.uint8)
        _write_idx(folder / f"{split}-images-idx3-ubyte", out[f"{split}_x"])
        _write_idx(folder / f"{split}-labels-idx1-ubyte", out[f"{split}_y"])
    return out


def write_image_folder(root: Path, classes=("ant", "bee", "cat"), n_train=4, n_val=2) -> None:
    """``imagenet/{train,val}/<class>/*`` with small PNG and JPEG images of different sizes."""
    rng = np.random.default_rng(2)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            d = root / "imagenet" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                h, w = 20 + i, 24 + 2 * i
                img = Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
                img.save(d / f"{c}_{i}.{'png' if i % 2 else 'JPEG'}")


def test_split_indices_is_a_seeded_partition():
    kept, out = split_indices(50, 0.2, seed=3)
    assert len(out) == 10 and len(kept) == 40
    assert sorted(np.concatenate([kept, out]).tolist()) == list(range(50))
    again = split_indices(50, 0.2, seed=3)
    assert np.array_equal(kept, again[0]) and np.array_equal(out, again[1])
    assert not np.array_equal(np.sort(out), np.sort(split_indices(50, 0.2, seed=4)[1]))
    with pytest.raises(ValueError, match="fraction"):
        split_indices(10, 1.0, seed=0)


def test_digits_splits_and_normalisation():
    from sklearn.datasets import load_digits

    s = load_dataset("digits", val_fraction=0.25, split_seed=5)
    assert (s.num_classes, s.in_channels, s.input_size, s.stem) == (10, 1, 8, "cifar")
    assert len(s.train) + len(s.val) + len(s.test) == 1797
    assert set(s.train.indices).isdisjoint(s.val.indices)
    assert len(s.val) == round(0.25 * (len(s.train) + len(s.val)))
    # the test set does not depend on the validation seed
    other = load_dataset("digits", val_fraction=0.1, split_seed=6)
    x0, y0 = s.test[7]
    x1, y1 = other.test[7]
    assert torch.equal(x0, x1) and y0 == y1
    reseeded = load_dataset("digits", val_fraction=0.25, split_seed=6)
    assert not np.array_equal(s.val.indices[:20], reseeded.val.indices[:20])
    # an independent oracle: the digits image, rescaled and normalised by the training images' statistics
    digits = load_digits()
    _, test_idx = split_indices(1797, 0.2, DIGITS_TEST_SEED)
    train_images = np.delete(digits.images, test_idx, axis=0) / 16.0
    mean, std = train_images.mean(), train_images.std(ddof=1)
    j = int(np.sort(test_idx)[7])
    np.testing.assert_allclose(x0[0].numpy(), (digits.images[j] / 16.0 - mean) / std, rtol=1e-5, atol=1e-5)
    assert y0 == digits.target[j]
    xs = torch.stack([s.train[i][0] for i in range(len(s.train))])
    assert xs.dtype == torch.float32 and xs.shape[1:] == (1, 8, 8)
    assert abs(xs.mean().item()) < 0.05 and abs(xs.std().item() - 1) < 0.05


def test_digits_without_validation_and_with_a_limit():
    s = load_dataset("digits", val_fraction=0.0, max_train_samples=100)
    assert s.val is None and len(s.train) == 100


def test_cifar10_format_round_trip(tmp_path):
    written = write_cifar10(tmp_path)
    s = load_dataset("cifar10", tmp_path, val_fraction=0.2, verify_checksums=False)
    assert (s.num_classes, s.in_channels, s.input_size, s.stem) == (10, 3, 32, "cifar")
    assert s.classes[3] == "class3"
    assert len(s.train) == 24 and len(s.val) == 6 and len(s.test) == 5
    assert sorted(np.concatenate([s.train.indices, s.val.indices]).tolist()) == list(range(30))
    # evaluation transform: ToTensor + the CIFAR-10 normalisation, checked against the raw bytes
    for i in range(len(s.test)):
        x, y = s.test[i]
        expected = (written["test_x"][i] / 255.0 - CIFAR10_MEAN) / CIFAR10_STD
        np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)
        assert y == written["test_y"][i]
    for i in range(len(s.val)):
        x, y = s.val[i]
        j = s.val.indices[i]
        np.testing.assert_allclose(x.permute(1, 2, 0).numpy(),
                                   (written["train_x"][j] / 255.0 - CIFAR10_MEAN) / CIFAR10_STD, atol=1e-5)
        assert y == written["train_y"][j]


def test_cifar10_augmentation_is_a_padded_crop_with_optional_flip(tmp_path):
    written = write_cifar10(tmp_path)
    s = load_dataset("cifar10", tmp_path, val_fraction=0.0, verify_checksums=False)
    j = s.train.indices[0]
    raw = (written["train_x"][j] / 255.0 - CIFAR10_MEAN) / CIFAR10_STD  # (32, 32, 3)
    # padding is applied before ToTensor/Normalize, so padded pixels are (0 - mean) / std
    padded = np.broadcast_to(-CIFAR10_MEAN / CIFAR10_STD, (40, 40, 3)).copy()
    padded[4:36, 4:36] = raw
    candidates = [padded[a:a + 32, b:b + 32] for a in range(9) for b in range(9)]
    candidates += [c[:, ::-1] for c in candidates]
    torch.manual_seed(0)
    draws = [s.train[0][0].permute(1, 2, 0).numpy() for _ in range(6)]
    for d in draws:
        assert min(np.abs(d - c).max() for c in candidates) < 1e-5
    assert any(np.abs(d - draws[0]).max() > 0 for d in draws[1:])


def test_mnist_idx_round_trip(tmp_path):
    written = write_mnist(tmp_path)
    s = load_dataset("mnist", tmp_path, val_fraction=0.25, split_seed=2)
    assert (s.num_classes, s.in_channels, s.input_size, s.stem) == (10, 1, 28, "cifar")
    assert s.classes[0].startswith("0") and s.classes[9].startswith("9")
    assert len(s.train) == 9 and len(s.val) == 3 and len(s.test) == 5
    assert sorted(np.concatenate([s.train.indices, s.val.indices]).tolist()) == list(range(12))
    assert np.array_equal(np.sort(s.val.indices), np.sort(split_indices(12, 0.25, 2)[1]))
    normalise = lambda a: (a / 255.0 - 0.1307) / 0.3081  # noqa: E731
    for split, source in ((s.test, "t10k"), (s.val, "train"), (s.train, "train")):
        for i in range(len(split)):
            x, y = split[i]
            j = split.indices[i]
            assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
            # the training split too: no augmentation, every draw is the image itself
            np.testing.assert_allclose(x[0].numpy(), normalise(written[f"{source}_x"][j]), atol=1e-5)
            assert y == written[f"{source}_y"][j]
    limited = load_dataset("mnist", tmp_path, val_fraction=0.0, max_train_samples=4)
    assert limited.val is None and len(limited.train) == 4


def test_mnist_missing_or_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("mnist", tmp_path)
    assert str(tmp_path / "MNIST" / "raw") in str(err.value)
    assert "train-images-idx3-ubyte.gz" in str(err.value) and "download=True" in str(err.value)
    written = write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("mnist", tmp_path)
    expected = str(err.value).split(". Download")[0]
    assert expected.endswith(str(raw / "t10k-labels-idx1-ubyte")) and "t10k-images" not in expected
    _write_idx(raw / "t10k-labels-idx1-ubyte", written["t10k_y"][:-1])  # one label short
    with pytest.raises(ValueError, match="4 labels"):
        load_dataset("mnist", tmp_path)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x77\x01" + bytes(8))  # unknown type code
    with pytest.raises(ValueError, match="not valid IDX"):
        load_dataset("mnist", tmp_path)


def test_cifar_checksums_are_checked_by_default(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(ValueError, match="md5"):
        load_dataset("cifar10", tmp_path)


def test_cifar100_format(tmp_path):
    written = write_cifar100(tmp_path)
    s = load_dataset("cifar100", tmp_path, val_fraction=0.25, verify_checksums=False)
    assert s.num_classes == 100 and s.in_channels == 3 and len(s.train) == 15 and len(s.val) == 5
    assert [s.test[i][1] for i in range(4)] == written["test_y"].tolist()
    assert s.test[0][0].shape == (3, 32, 32)


def test_image_folder_tree(tmp_path):
    write_image_folder(tmp_path)
    s = load_dataset("imagenet", tmp_path, val_fraction=0.25, image_size=16)
    assert s.classes == ("ant", "bee", "cat") and s.num_classes == 3
    assert (s.in_channels, s.input_size, s.stem) == (3, 16, "imagenet")
    assert len(s.train) == 9 and len(s.val) == 3 and len(s.test) == 6
    assert [s.test[i][1] for i in range(6)] == [0, 0, 1, 1, 2, 2]
    for ds in (s.train, s.val, s.test):
        assert ds[0][0].shape == (3, 16, 16)


def test_missing_data_sets_say_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in str(err.value)
    with pytest.raises(FileNotFoundError, match="cifar-100-python.tar.gz"):
        load_dataset("cifar100", tmp_path)
    with pytest.raises(FileNotFoundError, match="image-net.org") as err:
        load_dataset("imagenet", tmp_path)
    assert str(tmp_path / "imagenet") in str(err.value)
    # one missing file is named exactly
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", tmp_path, verify_checksums=False)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_4") in str(err.value)
    assert "data_batch_3" not in str(err.value)


def test_image_folder_problems(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "imagenet" / "val" / "dog").mkdir()
    with pytest.raises(FileNotFoundError, match="incomplete"):  # a class folder without images
        load_dataset("imagenet", tmp_path)
    (tmp_path / "imagenet" / "val" / "dog").rmdir()
    (tmp_path / "imagenet" / "train" / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imagenet" / "train" / "dog" / "d.png")
    with pytest.raises(ValueError, match="class folders differ"):
        load_dataset("imagenet", tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "cifar11"}, "unknown data set 'cifar11'"),
    ({"name": "digits", "val_fraction": 1.0}, "fraction"),
    ({"name": "digits", "max_train_samples": 0}, "max_train_samples"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(**kwargs)


def test_dataset_info_matches_the_digits_as_loaded():
    from aslib.training.data import DATASET_INFO, DATASETS, load_dataset

    assert DATASETS == tuple(DATASET_INFO)
    info = DATASET_INFO["digits"]
    splits = load_dataset("digits", val_fraction=0.0)
    assert (len(splits.train), len(splits.test)) == (info.train_size, info.test_size)
    assert splits.train[0][0].shape == info.input_shape
    assert (splits.num_classes, splits.stem) == (info.num_classes, info.stem)


def test_dataset_info_matches_files_in_each_format(tmp_path):
    """Shapes, classes and stems of the table against what the loaders read (sizes: tests/test_real_data.py)."""
    from aslib.training.data import DATASET_INFO

    write_mnist(tmp_path)
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    write_image_folder(tmp_path)
    for name in ("mnist", "cifar10", "cifar100", "imagenet"):
        info = DATASET_INFO[name]
        s = load_dataset(name, tmp_path, val_fraction=0.0, verify_checksums=False)
        assert s.test[0][0].shape == info.input_shape, name
        assert (s.stem, s.in_channels, s.input_size) == (info.stem, info.in_channels, info.input_size), name
        if name != "imagenet":  # the tiny image folder has 3 classes
            assert s.num_classes == info.num_classes, name
