"""The batched tensor data pipeline: a split held as one tensor on the training device, augmented per batch.

The per-sample path (a ``DataLoader`` calling PIL transforms image by image) costs one Python call chain per
image; here a split is one ``uint8`` tensor ``images`` of shape ``(N, H, W, C)`` (the layout torchvision's CIFAR
and MNIST readers store) on the device, and a batch of indices ``b`` becomes, in a few tensor operations,

* the random crop with zero padding ``p`` and the horizontal flip: per image an offset ``(dy, dx)`` drawn
  uniformly from ``{0..2p}^2`` and a flip bit, then one gather
  ``x[i, :, r, s] = padded[b_i, dy_i + r, col_i(s), :]`` with ``col_i(s) = dx_i + (W - 1 - s)`` if flipped,
  ``dx_i + s`` otherwise (torchvision's ``RandomCrop(padding=p)`` followed by ``RandomHorizontalFlip``);
* ``ToTensor`` and ``Normalize`` fused: ``x = (x / 255 - mean) / std`` per channel, in the same float32
  operations, so the evaluation batches equal the PIL path's to the last bit.

The batch comes out as ``(B, C, H, W)`` in the channels-last memory format (the gather lays it out so) or
contiguous. The order of a training epoch is the sampler's (the same ``DistributedSampler`` as the per-sample
loader) and the augmentation draws come from the loader's generator, which the training loop seeds per
``(seed, epoch, rank)``: an epoch is a function of these only, and a run resumed at an epoch boundary continues
exactly. Data sets without augmentation (digits, MNIST) give the per-sample loader's batches exactly.

A split has a tensor form when :func:`aslib.training.data.load_dataset` attached a :class:`PixelSpec` to it
(CIFAR, MNIST, digits); ImageNet (files decoded per image) stays on the per-sample path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["PIPELINES", "PixelSpec", "TensorBatches", "TensorImages", "eval_batches", "tensor_images"]

#: ``TrainConfig.data_pipeline`` values: ``"auto"`` (tensor where a split has a tensor form), ``"tensor"``
#: (required: an error otherwise), ``"pil"`` (the per-sample ``DataLoader`` always).
PIPELINES: tuple[str, ...] = ("auto", "tensor", "pil")


@dataclass(frozen=True)
class PixelSpec:
    """How a split's stored pixels become the model's input (what its per-sample transform does).

    Attributes:
        mean, std: per-channel normalisation of ``pixels / 255``; ``None`` for pixels stored already normalised
            as floats (the digits).
        pad: zero padding of the random crop (0: no crop).
        flip: random horizontal flips.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    pad: int = 0
    flip: bool = False

    @property
    def augments(self) -> bool:
        return self.pad > 0 or self.flip


class TensorImages:
    """A split as tensors on ``device``: ``images (N, H, W, C)`` (``uint8``, or float when stored normalised) and
    ``labels (N,)`` (long); :meth:`batch` turns indices into a model batch (see the module docstring)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: PixelSpec, device: torch.device | str):
        if images.ndim != 4 or labels.shape != images.shape[:1]:
            raise ValueError(f"expected images (N, H, W, C) and labels (N,), got {tuple(images.shape)} and "
                             f"{tuple(labels.shape)}")
        if spec.mean is not None and images.dtype != torch.uint8:
            raise ValueError(f"pixels to normalise must be uint8, got {images.dtype}")
        self.device = torch.device(device)
        self.spec = spec
        self.labels = labels.to(self.device, torch.long)
        p = spec.pad
        padded = torch.nn.functional.pad(images.permute(0, 3, 1, 2), (p, p, p, p)) if p else images.permute(0, 3, 1, 2)
        self.padded = padded.permute(0, 2, 3, 1).contiguous().to(self.device)  # (N, H + 2p, W + 2p, C)
        self.height, self.width = int(images.shape[1]), int(images.shape[2])
        channels = int(images.shape[3])
        self.mean = self.std = None
        if spec.mean is not None:
            self.mean = torch.as_tensor(spec.mean, dtype=torch.float32, device=self.device).view(1, channels, 1, 1)
            self.std = torch.as_tensor(spec.std, dtype=torch.float32, device=self.device).view(1, channels, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None, *, augment: bool = False,
              channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x (B, C, H, W) float32, y (B,))`` of the images at ``index``; ``augment`` draws crops and flips from
        ``generator`` (a CPU generator: the draws are the same on every device)."""
        index = index.to(self.device)
        b, h, w, p = len(index), self.height, self.width, self.spec.pad
        rows = torch.arange(h, device=self.device).expand(b, h)
        cols = torch.arange(w, device=self.device).expand(b, w)
        if augment and self.spec.augments:
            offsets = torch.randint(0, 2 * p + 1, (2, b), generator=generator).to(self.device)
            flips = torch.rand(b, generator=generator).lt(0.5).to(self.device) if self.spec.flip else None
            if flips is not None:
                cols = torch.where(flips[:, None], w - 1 - cols, cols)
            rows, cols = rows + offsets[0, :, None], cols + offsets[1, :, None]
        else:
            rows, cols = rows + p, cols + p
        x = self.padded[index[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        x = x.permute(0, 3, 1, 2)  # a channels-last (B, C, H, W) view
        if self.mean is not None:
            x = x.to(torch.float32).div(255).sub_(self.mean).div_(self.std)
        if channels_last:
            return x.contiguous(memory_format=torch.channels_last), self.labels[index]
        # a fresh row-major tensor: for C = 1 the permuted view already counts as contiguous, yet its strides
        # are channels-last ones, and convolutions would then pick other kernels than for the per-sample batch
        return torch.empty(x.shape, dtype=x.dtype, device=x.device).copy_(x), self.labels[index]


def tensor_images(dataset: Dataset, device: torch.device | str) -> TensorImages | None:
    """The tensor form of a split made by :func:`~aslib.training.data.load_dataset` (cached on it per device), or
    ``None`` for a data set without one (ImageNet, any other ``Dataset``)."""
    spec = getattr(dataset, "pixels", None)
    if spec is None:
        return None
    cache = dataset.__dict__.setdefault("_tensor_images", {})
    key = str(torch.device(device))
    if key not in cache:
        base, indices = dataset.base, torch.as_tensor(np.asarray(dataset.indices), dtype=torch.long)
        if hasattr(base, "tensors"):  # a TensorDataset of (N, C, H, W) floats and labels
            images, labels = base.tensors[0][indices].permute(0, 2, 3, 1), base.tensors[1][indices]
        else:  # torchvision's CIFAR (numpy (N, H, W, 3)) or MNIST (tensor (N, H, W))
            data = torch.as_tensor(np.asarray(base.data))
            images = data[indices] if data.ndim == 4 else data[indices].unsqueeze(-1)
            labels = torch.as_tensor(np.asarray(base.targets))[indices]
        cache[key] = TensorImages(images, labels, spec, device)
    return cache[key]


class TensorBatches:
    """The training batches of an epoch from a :class:`TensorImages`: the ``sampler``'s order cut into batches of
    ``batch_size`` (the last, shorter one dropped when ``drop_last``), augmented from ``generator``. Iterating
    gives ``(x, y)`` like a ``DataLoader``; ``len`` is the number of batches."""

    def __init__(self, images: TensorImages, sampler: Sampler[int] | Iterable[int], batch_size: int, *,
                 generator: torch.Generator, drop_last: bool = True, augment: bool = True,
                 channels_last: bool = False):
        self.images, self.sampler, self.batch_size = images, sampler, batch_size
        self.generator, self.drop_last, self.augment, self.channels_last = generator, drop_last, augment, channels_last

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)
        for k in range(len(self)):
            yield self.images.batch(order[k * self.batch_size:(k + 1) * self.batch_size], self.generator,
                                    augment=self.augment, channels_last=self.channels_last)


def eval_batches(images: TensorImages, batch_size: int, *, rank: int = 0, world: int = 1,
                 channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Evaluation batches in index order (every ``world``-th image from ``rank``), never augmented."""
    index = torch.arange(rank, len(images), world)
    for start in range(0, len(index), batch_size):
        yield images.batch(index[start:start + batch_size], channels_last=channels_last)
