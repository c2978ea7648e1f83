"""torchvision's ShuffleNet v2 (``shufflenet_v2_x0_5``, ``x1_0``, ``x1_5``, ``x2_0``) as this package's
:class:`~aslib.models.shufflenet_v2.ShuffleNetV2`, weight for weight: the path from torchvision's pretrained
ImageNet weights to fine-tuning with learned shuffles.

The two networks compute the same function: the same stem (3x3 convolution, stride 2, BatchNorm, ReLU, 3x3
max-pool), the same units (split, branch, concatenate, shuffle with 2 groups), the same head. Only the names
of the tensors differ; :func:`torchvision_key` maps one to the other. torchvision's shuffle is a function call
in the unit's ``forward``, which no module replaces, so its network is rebuilt here, where each shuffle is a
module that :func:`aslib.nn.shuffles.learn_shuffles` can make learned. Nothing here imports torchvision.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from aslib.models.shufflenet_v2 import STAGE_CHANNELS_V2, ShuffleNetV2, shufflenet_v2

__all__ = ["from_torchvision", "torchvision_key"]

# torchvision's Sequential positions -> (conv_bn block, layer in the block) of aslib's branches.
_BRANCH1 = {"0": "0.0", "1": "0.1", "2": "1.0", "3": "1.1"}
_BRANCH2 = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "5": "2.0", "6": "2.1"}
_UNIT_KEY = re.compile(r"stage([234])\.(\d+)\.branch([12])\.(\d+)\.(\w+)")
_HEAD_KEY = re.compile(r"(conv1|conv5)\.([01])\.(\w+)")


def torchvision_key(key: str) -> str:
    """The name in :class:`ShuffleNetV2` (ImageNet stem) of torchvision's state-dict entry ``key``:
    ``conv1.i.* -> stem.0.i.*``, ``stage{s}.u.branch{b}.k.* -> stages.{s-2}.u.branch{b}.<block>.<layer>.*``,
    ``conv5.i.* -> conv_last.i.*``, ``fc.* -> fc.*``. Raises ``ValueError`` for a key of no ShuffleNet v2."""
    if key.startswith("fc."):
        return key
    if match := _HEAD_KEY.fullmatch(key):
        part, index, leaf = match.groups()
        return f"stem.0.{index}.{leaf}" if part == "conv1" else f"conv_last.{index}.{leaf}"
    if match := _UNIT_KEY.fullmatch(key):
        stage, unit, branch, index, leaf = match.groups()
        positions = _BRANCH1 if branch == "1" else _BRANCH2
        if index in positions:
            return f"stages.{int(stage) - 2}.{unit}.branch{branch}.{positions[index]}.{leaf}"
    raise ValueError(f"{key!r} is not a key of torchvision's ShuffleNet v2")


def _state_dict_of(source: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(source, nn.Module):
        return source.state_dict()
    if isinstance(source, Mapping):
        return source
    if callable(getattr(source, "get_state_dict", None)):  # a torchvision WeightsEnum: downloads once, then cached
        return source.get_state_dict(progress=False)
    raise TypeError("source must be a torchvision ShuffleNet v2 module, its state dict or its weights enum, "
                    f"got {type(source).__name__}")


def _architecture(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Channel widths, units per stage, classes and input channels, read off the tensors' shapes."""
    needed = ["conv1.0.weight", "conv5.0.weight", "fc.weight"] + [f"stage{s}.0.branch1.2.weight" for s in (2, 3, 4)]
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(f"not a torchvision ShuffleNet v2 state dict: missing {', '.join(missing)}")
    stages = tuple(2 * state[f"stage{s}.0.branch1.2.weight"].shape[0] for s in (2, 3, 4))
    channels = (state["conv1.0.weight"].shape[0], *stages, state["conv5.0.weight"].shape[0])
    repeats = tuple(1 + max(int(m.group(1)) for k in state if (m := re.match(rf"stage{s}\.(\d+)\.", k)))
                    for s in (2, 3, 4))
    width = next((w for w, table in STAGE_CHANNELS_V2.items() if table == channels), 1.0)
    return dict(width=width, stages_out_channels=channels, stages_repeats=repeats,
                num_classes=state["fc.weight"].shape[0], in_channels=state["conv1.0.weight"].shape[1])


def from_torchvision(
    source: Any,
    *,
    shuffle: str = "fixed",
    shuffle_init: str = "shuffle",
    shuffle_noise: float = 0.0,
    shuffle_seed: int = 0,
    shuffle_parameterisation: str = "projected",
) -> ShuffleNetV2:
    """:class:`ShuffleNetV2` (ImageNet stem) holding the weights of a torchvision ShuffleNet v2.

    Args:
        source: a torchvision ``shufflenet_v2_x*`` model, its ``state_dict()``, or its weights enum (e.g.
            ``ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1``, whose ``get_state_dict`` downloads the weights).
            Widths, units per stage, classes and input channels are read from the tensors' shapes.
        shuffle: ``"fixed"`` gives torchvision's network exactly (outputs equal in eval mode); ``"learned"``
            with ``shuffle_init="shuffle"`` and ``shuffle_noise=0`` starts every learned matrix at the fixed
            shuffle, so the outputs are again equal; the other arguments as in
            :func:`~aslib.models.shufflenet_v2.shufflenet_v2`. :func:`aslib.nn.shuffles.learn_shuffles` converts
            a fixed result later, with more choices of start.

    Raises ``TypeError`` for another kind of ``source`` and ``ValueError`` for a state dict of another network.
    """
    state = _state_dict_of(source)
    architecture = _architecture(state)
    model = shufflenet_v2(shuffle=shuffle, stem="imagenet", shuffle_init=shuffle_init, shuffle_noise=shuffle_noise,
                          shuffle_seed=shuffle_seed, shuffle_parameterisation=shuffle_parameterisation,
                          **architecture)
    renamed = {torchvision_key(k): v for k, v in state.items()}
    own = model.state_dict()
    wrong = [k for k, v in renamed.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise ValueError(f"torchvision tensors that do not fit ShuffleNet v2: {', '.join(sorted(wrong)[:5])}")
    shuffles = {k for k in own if ".shuffle." in k}  # learned matrices keep their start
    absent = sorted(set(own) - set(renamed) - shuffles)
    if absent:
        raise ValueError(f"the state dict lacks {len(absent)} tensors of ShuffleNet v2, e.g. {absent[0]}")
    model.load_state_dict(renamed, strict=False)
    return model
