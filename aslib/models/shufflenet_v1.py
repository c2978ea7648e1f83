"""ShuffleNet v1 (Zhang et al., 2018) with a fixed, learned, random or no channel shuffle.

Unit (stride 1): ``1x1 group conv -> BN -> ReLU -> shuffle -> 3x3 depthwise conv -> BN -> 1x1 group conv
-> BN``, added to the input, then ReLU. Unit (stride 2, the first of each stage): the same branch with a
stride-2 depthwise conv and ``out - in`` output channels, concatenated with a 3x3 stride-2 average pool of
the input, then ReLU. The bottleneck has ``out / 4`` channels, and the very first 1x1 conv (24 input
channels) is not grouped. Stage widths per group count are ShuffleNet's 1x table.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from aslib.core.checks import check_positive_int
from aslib.models.common import ShuffleNet, ShuffleOptions, Stem, conv_bn, make_divisible

__all__ = ["STAGE_CHANNELS_V1", "ShuffleNetV1", "ShuffleV1Unit", "shufflenet_v1"]

#: Output channels of stages 2, 3, 4 at width 1 for each group count (the stem has 24).
STAGE_CHANNELS_V1: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
_STEM_CHANNELS = 24


class ShuffleV1Unit(nn.Module):
    """One ShuffleNet v1 unit: ``(B, in, H, W) -> (B, out, H / stride, W / stride)``.

    The shuffle acts on the ``out / 4`` bottleneck channels with ``groups`` groups (see module docstring).
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, stride: int,
                 shuffle: ShuffleOptions, *, group_first_conv: bool = True) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f"a stride-1 unit needs in_channels == out_channels, got {in_channels}, {out_channels}")
        mid = out_channels // 4
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        self.stride = stride
        self.compress = conv_bn(in_channels, mid, 1, groups=groups if group_first_conv else 1)
        self.shuffle = shuffle.make(mid, groups)
        self.depthwise = conv_bn(mid, mid, 3, stride, groups=mid, relu=False)
        self.expand = conv_bn(mid, branch_out, 1, groups=groups, relu=False)
        self.pool = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(self.depthwise(self.shuffle(self.compress(x))))
        if self.stride == 2:
            return torch.relu(torch.cat([self.pool(x), out], 1))
        return torch.relu(x + out)


class ShuffleNetV1(ShuffleNet):
    """ShuffleNet v1 with ``groups`` in ``STAGE_CHANNELS_V1``; see :func:`shufflenet_v1` for the arguments."""

    def __init__(self, groups: int = 3, *, shuffle: ShuffleOptions | None = None, stem: str = "cifar",
                 num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 stages_repeats: Sequence[int] = (4, 8, 4)) -> None:
        if groups not in STAGE_CHANNELS_V1:
            raise ValueError(f"groups must be one of {sorted(STAGE_CHANNELS_V1)}, got {groups!r}")
        if not (isinstance(width, (int, float)) and width > 0):
            raise ValueError(f"width must be a positive number, got {width!r}")
        repeats = tuple(stages_repeats)
        if len(repeats) != 3:
            raise ValueError(f"stages_repeats needs 3 entries, got {repeats}")
        for r in repeats:
            check_positive_int(r, "each of stages_repeats")
        shuffle = shuffle if shuffle is not None else ShuffleOptions()
        # Stem channels a multiple of g and stage channels of 4g keep every grouped conv and shuffle valid.
        stem_channels = make_divisible(_STEM_CHANNELS * width, groups)
        channels = [make_divisible(c * width, 4 * groups) for c in STAGE_CHANNELS_V1[groups]]
        stem_module = Stem(in_channels, stem_channels, stem)
        stages: list[nn.Module] = []
        in_c = stem_channels
        for stage, (out_c, repeat) in enumerate(zip(channels, repeats)):
            units = [ShuffleV1Unit(in_c, out_c, groups, 2, shuffle, group_first_conv=stage > 0)]
            units += [ShuffleV1Unit(out_c, out_c, groups, 1, shuffle) for _ in range(repeat - 1)]
            stages.append(nn.Sequential(*units))
            in_c = out_c
        super().__init__(stem_module, stages, in_c, num_classes)
        self.groups = groups
        self.stage_channels = (stem_channels, *channels)


def shufflenet_v1(
    groups: int = 3,
    shuffle: str = "learned",
    stem: str = "cifar",
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    width: float = 1.0,
    stages_repeats: Sequence[int] = (4, 8, 4),
    shuffle_init: str = "shuffle",
    shuffle_noise: float = 0.0,
    shuffle_seed: int = 0,
    shuffle_parameterisation: str = "projected",
) -> ShuffleNetV1:
    """ShuffleNet v1 (``groups`` in 1, 2, 3, 4, 8).

    Args:
        groups: group count of the 1x1 convolutions and of the fixed shuffle.
        shuffle: ``"fixed"``, ``"learned"``, ``"none"`` or ``"random"`` (see :class:`ShuffleOptions`).
        stem: ``"cifar"`` or ``"imagenet"``.
        num_classes, in_channels: classifier outputs and image channels.
        width: channel multiplier (stem rounded to a multiple of ``groups``, stages to ``4 groups``); small
            values such as 0.25 give models that train on CPU in seconds.
        stages_repeats: units per stage (ShuffleNet: 4, 8, 4).
        shuffle_init, shuffle_noise, shuffle_seed: start of learned shuffles, seed of random ones.
        shuffle_parameterisation: how learned shuffles hold ``M``, a name in
            :data:`~aslib.nn.parameterisations.PARAMETERISATIONS` (see :class:`ShuffleOptions`).
    """
    options = ShuffleOptions(shuffle, shuffle_init, shuffle_noise, shuffle_seed, shuffle_parameterisation)
    return ShuffleNetV1(groups, shuffle=options, stem=stem, num_classes=num_classes, in_channels=in_channels,
                        width=width, stages_repeats=stages_repeats)
