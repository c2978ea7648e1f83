"""ShuffleNet v2 (Ma et al., 2018) with a fixed, learned, random or no channel shuffle.

Unit (stride 1): split the channels in halves ``x1, x2``; ``x2`` goes through ``1x1 conv -> BN -> ReLU
-> 3x3 depthwise -> BN -> 1x1 conv -> BN -> ReLU``; concatenate ``[x1, branch(x2)]`` and shuffle with 2
groups. Unit (stride 2): two branches on the whole input (``3x3 depthwise s2 -> BN -> 1x1 -> BN -> ReLU``
and the branch above with stride 2), concatenated and shuffled. Then a 1x1 conv to 1024 (2048 at 2.0x)
channels, global pooling, linear. Stage widths are ShuffleNet v2's table.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from aslib.core.checks import check_positive_int
from aslib.models.common import ShuffleNet, ShuffleOptions, Stem, conv_bn

__all__ = ["STAGE_CHANNELS_V2", "ShuffleNetV2", "ShuffleV2Unit", "shufflenet_v2"]

#: (stem, stage 2, stage 3, stage 4, last conv) channels for each width.
STAGE_CHANNELS_V2: dict[float, tuple[int, int, int, int, int]] = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}


class ShuffleV2Unit(nn.Module):
    """One ShuffleNet v2 unit ``(B, in, H, W) -> (B, out, H / stride, W / stride)``; the shuffle acts on ``out``
    channels with 2 groups."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shuffle: ShuffleOptions) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if out_channels % 2:
            raise ValueError(f"out_channels must be even, got {out_channels}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f"a stride-1 unit needs in_channels == out_channels, got {in_channels}, {out_channels}")
        half = out_channels // 2
        self.stride = stride
        self.branch1: nn.Module = nn.Identity()
        if stride == 2:
            self.branch1 = nn.Sequential(
                conv_bn(in_channels, in_channels, 3, 2, groups=in_channels, relu=False),
                conv_bn(in_channels, half, 1),
            )
        branch_in = in_channels if stride == 2 else half
        self.branch2 = nn.Sequential(
            conv_bn(branch_in, half, 1),
            conv_bn(half, half, 3, stride, groups=half, relu=False),
            conv_bn(half, half, 1),
        )
        self.shuffle = shuffle.make(out_channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.branch2(x2)], 1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], 1)
        return self.shuffle(out)


class ShuffleNetV2(ShuffleNet):
    """ShuffleNet v2; see :func:`shufflenet_v2` for the arguments."""

    def __init__(self, width: float = 1.0, *, shuffle: ShuffleOptions | None = None, stem: str = "cifar",
                 num_classes: int = 10, in_channels: int = 3, stages_repeats: Sequence[int] = (4, 8, 4),
                 stages_out_channels: Sequence[int] | None = None) -> None:
        if stages_out_channels is None:
            if width not in STAGE_CHANNELS_V2:
                raise ValueError(f"width must be one of {sorted(STAGE_CHANNELS_V2)} "
                                 f"(or pass stages_out_channels), got {width!r}")
            stages_out_channels = STAGE_CHANNELS_V2[width]
        channels = tuple(stages_out_channels)
        if len(channels) != 5:
            raise ValueError(f"stages_out_channels needs 5 entries (stem, 3 stages, last conv), got {channels}")
        for c in channels:
            check_positive_int(c, "each of stages_out_channels")
        repeats = tuple(stages_repeats)
        if len(repeats) != 3:
            raise ValueError(f"stages_repeats needs 3 entries, got {repeats}")
        for r in repeats:
            check_positive_int(r, "each of stages_repeats")
        shuffle = shuffle if shuffle is not None else ShuffleOptions()
        stem_module = Stem(in_channels, channels[0], stem)
        stages: list[nn.Module] = []
        in_c = channels[0]
        for out_c, repeat in zip(channels[1:4], repeats):
            units = [ShuffleV2Unit(in_c, out_c, 2, shuffle)]
            units += [ShuffleV2Unit(out_c, out_c, 1, shuffle) for _ in range(repeat - 1)]
            stages.append(nn.Sequential(*units))
            in_c = out_c
        super().__init__(stem_module, stages, in_c, num_classes, head_channels=channels[4])
        self.width = width
        self.stage_channels = channels


def shufflenet_v2(
    width: float = 1.0,
    shuffle: str = "learned",
    stem: str = "cifar",
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    stages_repeats: Sequence[int] = (4, 8, 4),
    stages_out_channels: Sequence[int] | None = None,
    shuffle_init: str = "shuffle",
    shuffle_noise: float = 0.0,
    shuffle_seed: int = 0,
    shuffle_parameterisation: str = "projected",
) -> ShuffleNetV2:
    """ShuffleNet v2 at ``width`` 0.5, 1.0, 1.5 or 2.0.

    Args:
        width: selects the channel table (ignored when ``stages_out_channels`` is given).
        shuffle: ``"fixed"``, ``"learned"``, ``"none"`` or ``"random"`` (see :class:`ShuffleOptions`).
        stem: ``"cifar"`` or ``"imagenet"``.
        num_classes, in_channels: classifier outputs and image channels.
        stages_repeats: units per stage (ShuffleNet v2: 4, 8, 4).
        stages_out_channels: custom (stem, stage 2, 3, 4, last conv) channels, stage widths even; e.g.
            ``(8, 16, 32, 64, 128)`` for models that train on CPU in seconds.
        shuffle_init, shuffle_noise, shuffle_seed: start of learned shuffles, seed of random ones.
        shuffle_parameterisation: how learned shuffles hold ``M``, a name in
            :data:`~aslib.nn.parameterisations.PARAMETERISATIONS` (see :class:`ShuffleOptions`).
    """
    options = ShuffleOptions(shuffle, shuffle_init, shuffle_noise, shuffle_seed, shuffle_parameterisation)
    return ShuffleNetV2(width, shuffle=options, stem=stem, num_classes=num_classes, in_channels=in_channels,
                        stages_repeats=stages_repeats, stages_out_channels=stages_out_channels)
