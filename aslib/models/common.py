"""What ShuffleNet v1 and v2 share: the stem, the classifier head, the network skeleton, the shuffle choice.

Both networks are ``stem -> stages -> head``; the stem is either the CIFAR one (32x32 inputs: 3x3 conv,
stride 1, no max-pool) or the ImageNet one (224x224: 3x3 conv stride 2, then 3x3 max-pool stride 2), and
the head is an optional 1x1 convolution, global average pooling (so any spatial size >= 1 works) and a
linear classifier. Every unit takes its channel shuffle from a :class:`ShuffleOptions`, so the fixed,
learned, random and absent shuffles build the same network around it with the same state-dict keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from aslib.core.checks import as_generator, check_positive_int
from aslib.nn.layers import INITS, SHUFFLE_KINDS, make_shuffle
from aslib.nn.parameterisations import PARAMETERISATIONS

__all__ = ["STEMS", "ShuffleNet", "ShuffleOptions", "Stem", "conv_bn", "make_divisible"]

#: Stems: ``"cifar"`` (stride 1, no pooling) and ``"imagenet"`` (overall stride 4).
STEMS: tuple[str, ...] = ("cifar", "imagenet")


def make_divisible(value: float, divisor: int) -> int:
    """The multiple of ``divisor`` nearest to ``value`` (halves round up), at least ``divisor``."""
    return max(divisor, int(value / divisor + 0.5) * divisor)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, *, groups: int = 1,
            relu: bool = True) -> nn.Sequential:
    """``Conv2d`` (no bias, padding ``kernel_size // 2``) -> ``BatchNorm2d`` -> optional ``ReLU``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Stem(nn.Sequential):
    """``(B, in_channels, H, W) -> (B, out_channels, H', W')``: ``H' = H`` (cifar) or ``ceil(H / 4)`` (imagenet)."""

    def __init__(self, in_channels: int, out_channels: int, kind: str = "cifar") -> None:
        if kind not in STEMS:
            raise ValueError(f"unknown stem {kind!r}; valid: {', '.join(STEMS)}")
        check_positive_int(in_channels, "in_channels")
        layers: list[nn.Module] = [conv_bn(in_channels, out_channels, 3, 1 if kind == "cifar" else 2)]
        if kind == "imagenet":
            layers.append(nn.MaxPool2d(3, 2, 1))
        super().__init__(*layers)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kind = kind


@dataclass(frozen=True)
class ShuffleOptions:
    """Which channel shuffle the units use, and how a learned or random one starts.

    Attributes:
        kind: ``"fixed"`` (ShuffleNet), ``"learned"`` (AutoShuffleNet; with penalty weight 0 it is the convex
            relaxation), ``"none"`` or ``"random"`` (a fixed permutation drawn once from ``seed``).
        init, noise: :class:`~aslib.nn.layers.LearnedShuffle` initialisation (``init="shuffle"`` starts at the
            fixed shuffle of the unit's group count).
        seed: seeds the generator that draws ``"random"`` permutations and learned ``"random"``/``noise`` starts,
            layer after layer, so a model's shuffles depend on this seed only.
        parameterisation: how a learned shuffle holds ``M``, a name in
            :data:`~aslib.nn.parameterisations.PARAMETERISATIONS`: ``"projected"`` (the matrix, kept in ``D_n``
            by projection), ``"mirror"`` (the matrix, moved by the mirror step) or ``"sinkhorn"`` (logits
            through Sinkhorn's normalisation).
    """

    kind: str = "learned"
    init: str = "shuffle"
    noise: float = 0.0
    seed: int = 0
    parameterisation: str = "projected"
    _generator: torch.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in SHUFFLE_KINDS:
            raise ValueError(f"unknown shuffle {self.kind!r}; valid: {', '.join(SHUFFLE_KINDS)}")
        if self.init not in INITS:
            raise ValueError(f"unknown shuffle init {self.init!r}; valid: {', '.join(INITS)}")
        if self.parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"unknown shuffle parameterisation {self.parameterisation!r}; valid: "
                             f"{', '.join(PARAMETERISATIONS)}")
        object.__setattr__(self, "_generator", as_generator(self.seed))

    def make(self, channels: int, groups: int) -> nn.Module:
        """The shuffle of a unit with ``channels`` channels whose fixed shuffle has ``groups`` groups."""
        return make_shuffle(self.kind, channels, groups, init=self.init, noise=self.noise,
                            generator=self._generator, parameterisation=self.parameterisation)


class ShuffleNet(nn.Module):
    """``stem -> stages -> [1x1 conv_bn + ReLU to head_channels] -> global average pool -> linear``.

    Input ``(B, stem.in_channels, H, W)`` with ``H, W >= 1``; output logits ``(B, num_classes)``.
    """

    def __init__(self, stem: Stem, stages: Sequence[nn.Module], stage_channels: int, num_classes: int,
                 head_channels: int | None = None) -> None:
        super().__init__()
        check_positive_int(num_classes, "num_classes")
        self.in_channels = stem.in_channels
        self.num_classes = num_classes
        self.stem = stem
        self.stages = nn.Sequential(*stages)
        features = stage_channels
        self.conv_last: nn.Module = nn.Identity()
        if head_channels is not None:
            self.conv_last = conv_bn(stage_channels, head_channels, 1)
            features = head_channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected images of shape (B, {self.in_channels}, H, W), got {shape}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}")
        x = self.conv_last(self.stages(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
