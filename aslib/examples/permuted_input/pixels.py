"""The latent permutation of :mod:`aslib.examples.permuted_input`: scrambling the pixels of a data set, and how
much of the permutation a learned one recovers."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.utils.data import Dataset

from aslib.training.data import DataSplits, load_dataset
from aslib.core.checks import check_positive_int
from aslib.training.config import TrainConfig

__all__ = [
    "PermutedPixels",
    "exact_recovery",
    "inverse_permutation",
    "load_permuted_splits",
    "neighbourhood_recovery",
    "permute_pixels",
    "random_pixel_permutation",
    "recovery_measures",
    "symmetric_recovery",
]

# --- the latent permutation --------------------------------------------------------------------------


def random_pixel_permutation(height: int, width: int, seed: int) -> torch.Tensor:
    """A uniformly random permutation of the ``height * width`` positions, a function of ``seed`` only."""
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    return torch.randperm(height * width, generator=torch.Generator().manual_seed(seed))


def _check_perm(perm: torch.Tensor, n: int | None = None) -> None:
    if not isinstance(perm, torch.Tensor) or perm.ndim != 1:
        raise ValueError(f"a permutation must be a 1-d tensor, got {getattr(perm, 'shape', type(perm).__name__)}")
    if n is not None and perm.numel() != n:
        raise ValueError(f"permutation of {perm.numel()} positions, expected {n}")
    if not torch.equal(torch.sort(perm.long()).values, torch.arange(perm.numel(), device=perm.device)):
        raise ValueError("not a permutation of 0..n-1")


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """``inv`` with ``inv[perm[k]] = k`` (so ``perm[inv] = inv[perm] = arange(n)``)."""
    _check_perm(perm)
    return torch.argsort(perm)


def permute_pixels(images: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``out[..., p] = images[..., sigma[p]]`` on the flattened positions of images of shape ``(..., H, W)``."""
    if not isinstance(images, torch.Tensor) or images.ndim < 2:
        raise ValueError(f"images must have shape (..., H, W), got {getattr(images, 'shape', None)}")
    height, width = images.shape[-2:]
    _check_perm(perm, height * width)
    flat = images.flatten(-2).index_select(-1, perm.to(images.device))
    return flat.unflatten(-1, (height, width))


class PermutedPixels(Dataset):
    """``(permute_pixels(image, perm), label)`` for each ``(image, label)`` of ``base`` (after its transform)."""

    def __init__(self, base: Dataset, perm: torch.Tensor) -> None:
        _check_perm(perm)
        self.base = base
        self.perm = perm.long()

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        image, label = self.base[i]
        return permute_pixels(image, self.perm), label


def load_permuted_splits(config: TrainConfig, permutation_seed: int | None) -> tuple[DataSplits, torch.Tensor | None]:
    """``load_dataset`` with ``config``'s data fields and the latent permutation of ``permutation_seed``
    (:func:`random_pixel_permutation`); every split is wrapped in :class:`PermutedPixels` (acting after the
    augmentation). ``permutation_seed=None``: the plain splits and ``None``."""
    splits = load_dataset(config.dataset, config.data_root, val_fraction=config.val_fraction,
                          split_seed=config.split_seed, augment=config.augment,
                          max_train_samples=config.max_train_samples, verify_checksums=config.verify_checksums)
    if permutation_seed is None:
        return splits, None
    latent = random_pixel_permutation(splits.input_size, splits.input_size, permutation_seed)
    wrap = lambda d: PermutedPixels(d, latent) if d is not None else None  # noqa: E731
    return dataclasses.replace(splits, train=wrap(splits.train), val=wrap(splits.val), test=wrap(splits.test)), latent


# --- recovery measures -------------------------------------------------------------------------------


def _composed(perm: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """``c = latent[perm]``: output position ``k`` of the learned layer shows original pixel ``c[k]``."""
    _check_perm(latent)
    _check_perm(perm, latent.numel())
    return latent.long()[perm.long().to(latent.device)]


def exact_recovery(perm: torch.Tensor, latent: torch.Tensor) -> float:
    """Fraction of positions ``k`` with ``latent[perm[k]] = k``: 1 iff ``perm`` is the inverse of ``latent``."""
    c = _composed(perm, latent)
    return float((c == torch.arange(c.numel(), device=c.device)).float().mean())


def _grid(height: int, width: int, n: int) -> None:
    if height * width != n:
        raise ValueError(f"a {height}x{width} grid has {height * width} positions, the permutation has {n}")


def neighbourhood_recovery(perm: torch.Tensor, latent: torch.Tensor, height: int, width: int) -> float:
    """Fraction of 4-neighbour pairs ``(k, k')`` of output positions whose original pixels ``c[k], c[k']``
    are 4-neighbours too (``c = latent[perm]``): 1 for the identity and for any flip or transpose."""
    c = _composed(perm, latent)
    _grid(height, width, c.numel())
    rows, cols = c.reshape(height, width) // width, c.reshape(height, width) % width
    pairs = [(slice(None), slice(None, -1), slice(None), slice(1, None)),  # horizontal neighbours
             (slice(None, -1), slice(None), slice(1, None), slice(None))]  # vertical neighbours
    kept = total = 0
    for r0, c0, r1, c1 in pairs:
        distance = (rows[r0, c0] - rows[r1, c1]).abs() + (cols[r0, c0] - cols[r1, c1]).abs()
        kept += int((distance == 1).sum())
        total += distance.numel()
    return kept / total if total else 1.0


def symmetric_recovery(perm: torch.Tensor, latent: torch.Tensor, height: int, width: int) -> float:
    """:func:`exact_recovery` up to a symmetry of the grid: the best, over the identity, the flips, the
    rotations (and, on a square grid, the transposes), of the fraction of positions with ``c[k] = g[k]``."""
    c = _composed(perm, latent)
    _grid(height, width, c.numel())
    ids = torch.arange(c.numel(), device=c.device).reshape(height, width)
    maps = [ids, ids.flip(0), ids.flip(1), ids.flip(0, 1)]
    if height == width:
        maps += [m.T for m in maps]
    return max(float((c == m.flatten()).float().mean()) for m in maps)


def recovery_measures(perm: torch.Tensor, latent: torch.Tensor, height: int, width: int) -> dict[str, float]:
    """The three measures above as a dict: ``exact_recovery``, ``symmetric_recovery``, ``neighbourhood_recovery``."""
    return {
        "exact_recovery": exact_recovery(perm, latent),
        "symmetric_recovery": symmetric_recovery(perm, latent, height, width),
        "neighbourhood_recovery": neighbourhood_recovery(perm, latent, height, width),
    }


