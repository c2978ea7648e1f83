"""Helpers shared by the test files (``from helpers import ...``; pytest puts this folder on the path): the
repository's root, independent oracles and the tiniest models."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from aslib.models import get_model
from aslib.nn.layers import LearnedShuffle

#: The repository's root folder.
REPO_ROOT = Path(__file__).resolve().parents[1]


def assert_doubly_stochastic(M: torch.Tensor, atol: float = 1e-5) -> None:
    assert bool((M >= 0).all())
    ones = torch.ones(M.shape[-1], dtype=M.dtype)
    torch.testing.assert_close(M.sum(-1), ones, atol=atol, rtol=0)
    torch.testing.assert_close(M.sum(-2), ones, atol=atol, rtol=0)


def conv_mix(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The former forward of a soft learned shuffle: a 1x1 convolution (4-d input) or an einsum."""
    if x.ndim == 4:
        return F.conv2d(x, M[:, :, None, None])
    return torch.einsum("kj,bj...->bk...", M, x)


def mirror_layer(channels: int = 6, seed: int = 0) -> LearnedShuffle:
    return LearnedShuffle(channels, "uniform", noise=0.5, generator=torch.Generator().manual_seed(seed),
                          parameterisation="mirror")


def tiny_shufflenet(shuffle: str = "learned", **kwargs) -> nn.Module:
    return get_model("shufflenet_v1_g3", num_classes=10, in_channels=1, stem="cifar", shuffle=shuffle,
                       width=0.25, stages_repeats=(1, 1, 1), **kwargs)
