"""The tensor data pipeline against the per-image torchvision path it replaces, on tiny data sets in the real
formats: the same evaluation batches to the last bit, crops and flips that torchvision's functional ops
reproduce from the drawn offsets, training runs identical where nothing is random, and exact resumption."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF
from test_data import CIFAR10_MEAN, CIFAR10_STD, write_cifar10, write_mnist

from aslib.training.batches import TensorBatches, tensor_images
from aslib.training.config import TrainConfig
from aslib.training.data import load_dataset
from aslib.training.train import train


@pytest.mark.parametrize("name", ["digits", "mnist", "cifar10"])
def test_evaluation_batches_equal_the_per_image_transforms_bit_for_bit(tmp_path, name):
    writer = {"mnist": write_mnist, "cifar10": write_cifar10}.get(name)
    if writer is not None:
        writer(tmp_path)
    splits = load_dataset(name, tmp_path, val_fraction=0.2, verify_checksums=False)
    for split in (splits.test, splits.val):
        images = tensor_images(split, "cpu")
        index = torch.arange(len(split)).flip(0)
        x, y = images.batch(index)
        expected = torch.stack([split[int(i)][0] for i in index])
        assert x.dtype == torch.float32 and x.shape == expected.shape and x.is_contiguous()
        assert torch.equal(x, expected) and x.stride() == expected.stride()
        assert y.tolist() == [split[int(i)][1] for i in index]


def test_a_training_batch_is_torchvisions_padded_crop_and_flip_of_the_drawn_offsets(tmp_path):
    written = write_cifar10(tmp_path)
    splits = load_dataset("cifar10", tmp_path, val_fraction=0.0, verify_checksums=False)
    images = tensor_images(splits.train, "cpu")
    index = torch.tensor([3, 0, 7, 7, 12, 29])
    x, y = images.batch(index, torch.Generator().manual_seed(5), augment=True, channels_last=True)
    assert x.is_contiguous(memory_format=torch.channels_last)
    draws = torch.Generator().manual_seed(5)  # the documented draw order: offsets (2, B), then flips (B,)
    offsets = torch.randint(0, 9, (2, len(index)), generator=draws)
    flips = torch.rand(len(index), generator=draws) < 0.5
    for k, i in enumerate(index.tolist()):
        pil = Image.fromarray(written["train_x"][splits.train.indices[i]])
        crop = TF.crop(TF.pad(pil, 4), int(offsets[0, k]), int(offsets[1, k]), 32, 32)
        crop = TF.hflip(crop) if flips[k] else crop
        expected = TF.normalize(TF.to_tensor(crop), list(CIFAR10_MEAN), list(CIFAR10_STD))
        torch.testing.assert_close(x[k], expected.float(), rtol=0, atol=1e-6)
        assert y[k] == written["train_y"][splits.train.indices[i]]


def test_crops_and_flips_cover_every_offset(tmp_path):
    write_cifar10(tmp_path)
    splits = load_dataset("cifar10", tmp_path, val_fraction=0.0, verify_checksums=False)
    images = tensor_images(splits.train, "cpu")
    generator = torch.Generator().manual_seed(0)
    seen, flipped = set(), 0
    for _ in range(60):
        state = generator.get_state()
        offsets = torch.randint(0, 9, (2, 30), generator=generator)
        flipped += int((torch.rand(30, generator=generator) < 0.5).sum())
        generator.set_state(state)
        images.batch(torch.arange(30), generator, augment=True)
        seen |= set(map(tuple, offsets.t().tolist()))
    assert seen == {(a, b) for a in range(9) for b in range(9)}
    assert 0.4 < flipped / 1800 < 0.6
    no_augment = load_dataset("cifar10", tmp_path, val_fraction=0.0, verify_checksums=False, augment=False)
    plain = tensor_images(no_augment.train, "cpu")
    x, _ = plain.batch(torch.arange(30), torch.Generator().manual_seed(1), augment=True)
    assert torch.equal(x, torch.stack([no_augment.train[i][0] for i in range(30)]))


def test_training_batches_follow_the_sampler_and_drop_the_last_short_one():
    splits = load_dataset("digits", val_fraction=0.0)
    images = tensor_images(splits.train, "cpu")
    order = list(range(len(splits.train)))[::-1]
    batches = TensorBatches(images, order, 100, generator=torch.Generator())
    assert len(batches) == len(order) // 100 == len(list(batches))
    first_x, first_y = next(iter(batches))
    assert torch.equal(first_x, torch.stack([splits.train[i][0] for i in order[:100]]))
    assert len(TensorBatches(images, order, 100, generator=torch.Generator(), drop_last=False)) == -(-len(order) // 100)


def test_digits_training_is_identical_through_either_pipeline(tmp_path):
    common = dict(epochs=2, model="shufflenet_v2_0.5", stages_repeats=(1, 1, 1), channels_last=False,
                  show_progress=False, checkpoint=False, recalibration_batches=2)
    runs = [train(TrainConfig(**common, data_pipeline=pipeline, output_dir=str(tmp_path / pipeline)))
            for pipeline in ("pil", "tensor")]
    assert runs[0].history.drop(columns="seconds").equals(runs[1].history.drop(columns="seconds"))
    assert runs[0].test_acc_hard == runs[1].test_acc_hard and runs[0].permutations == runs[1].permutations


def test_an_augmented_tensor_run_resumes_exactly(tmp_path):
    write_cifar10(tmp_path / "data", per_batch=40)
    common = dict(dataset="cifar10", data_root=str(tmp_path / "data"), verify_checksums=False, batch_size=16,
                  model="shufflenet_v2_0.5", stages_repeats=(1, 1, 1), show_progress=False, recalibration_batches=2,
                  data_pipeline="tensor")
    whole = train(TrainConfig(**common, epochs=3, output_dir=str(tmp_path / "whole")))
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**common, epochs=3, output_dir=str(tmp_path / "cut")), callbacks=[_stop_after(1)])
    resumed = train(TrainConfig(**common, epochs=3, output_dir=str(tmp_path / "cut")), resume=True)
    assert resumed.history.drop(columns="seconds").equals(whole.history.drop(columns="seconds"))
    assert resumed.test_acc_hard == whole.test_acc_hard


def _stop_after(epochs: int):  # noqa: ANN202
    """A callback interrupting the run (as Ctrl-C would) once ``epochs`` epochs are checkpointed."""
    def hook(state) -> None:  # noqa: ANN001
        if state.epoch >= epochs:
            raise KeyboardInterrupt

    return hook


def test_pipeline_choices_are_checked(tmp_path):
    with pytest.raises(ValueError, match="data_pipeline"):
        TrainConfig(data_pipeline="gpu")
    write_cifar10(tmp_path)
    splits = load_dataset("cifar10", tmp_path, verify_checksums=False)
    no_form = dataclasses.replace(splits, train=torch.utils.data.Subset(splits.train, range(10)))
    from aslib.models import from_config
    from aslib.training.train import fit

    config = TrainConfig(dataset="cifar10", data_pipeline="tensor", show_progress=False, checkpoint=False,
                         output_dir=str(tmp_path / "run"))
    model = from_config(config, num_classes=10, in_channels=3, stem="cifar")
    with pytest.raises(ValueError, match="no tensor form"):
        fit(model, no_form, config)
