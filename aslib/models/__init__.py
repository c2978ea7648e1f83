"""ShuffleNet v1 and v2 with fixed, learned (AutoShuffleNet), random or no channel shuffles.

Builders in torchvision's style (:func:`shufflenet_v1`, :func:`shufflenet_v2`), :func:`get_model` by
name as torchvision's ``get_model`` (``"shufflenet_v1_g3"``, ``"shufflenet_v2_1.0"``, see :data:`MODEL_NAMES`),
torchvision's ShuffleNet v2 and its pretrained weights as this package's (:func:`from_torchvision`), and the two
costs the paper compares: :func:`count_parameters` and :func:`count_flops`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from aslib.models.common import STEMS, ShuffleNet, ShuffleOptions
from aslib.models.pretrained import from_torchvision
from aslib.models.shufflenet_v1 import STAGE_CHANNELS_V1, ShuffleNetV1, shufflenet_v1
from aslib.models.shufflenet_v2 import STAGE_CHANNELS_V2, ShuffleNetV2, shufflenet_v2

if TYPE_CHECKING:
    from aslib.training.config import TrainConfig

__all__ = [
    "MODEL_NAMES",
    "STEMS",
    "ShuffleNet",
    "ShuffleNetV1",
    "ShuffleNetV2",
    "ShuffleOptions",
    "get_model",
    "count_flops",
    "count_parameters",
    "CONFIG_ARGUMENTS",
    "from_config",
    "from_torchvision",
    "shufflenet_v1",
    "shufflenet_v2",
]

_BUILDERS: dict[str, tuple[Any, dict[str, Any]]] = {
    **{f"shufflenet_v1_g{g}": (shufflenet_v1, {"groups": g}) for g in STAGE_CHANNELS_V1},
    **{f"shufflenet_v2_{w:.1f}": (shufflenet_v2, {"width": w}) for w in STAGE_CHANNELS_V2},
}
#: Names :func:`get_model` accepts.
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def get_model(name: str, **kwargs: Any) -> ShuffleNet:
    """Build the model ``name`` (one of :data:`MODEL_NAMES`); ``kwargs`` go to its builder (``shuffle``,
    ``stem``, ``num_classes``, ``in_channels``, ...), except the group count or width, which the name fixes."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    builder, fixed = _BUILDERS[name]
    clash = sorted(set(fixed) & set(kwargs))
    if clash:
        raise ValueError(f"model name {name!r} already sets {', '.join(clash)}; do not pass it as an argument")
    return builder(**fixed, **kwargs)


#: Builder arguments that :func:`from_config` takes from the data set or from a TrainConfig's own fields
#: (``TrainConfig.model_kwargs`` may not set them).
CONFIG_ARGUMENTS: tuple[str, ...] = ("num_classes", "in_channels", "stem", "shuffle", "shuffle_init", "shuffle_noise",
                                     "shuffle_seed", "shuffle_parameterisation", "stages_repeats")


def from_config(config: TrainConfig, *, num_classes: int, in_channels: int, stem: str, **overrides: Any) -> ShuffleNet:
    """The model ``config`` trains (``config.model`` with its shuffle fields, ``stages_repeats`` and
    ``model_kwargs``), for a data set of ``num_classes`` and ``in_channels`` with ``stem``.

    ``overrides`` replace the arguments taken from ``config`` (e.g. ``shuffle="fixed"`` for the reference
    ShuffleNet of the same architecture); only :data:`CONFIG_ARGUMENTS` may be overridden.
    """
    arguments = dict(num_classes=num_classes, in_channels=in_channels, stem=stem,
                     shuffle=config.shuffle, shuffle_init=config.shuffle_init, shuffle_noise=config.shuffle_noise,
                     shuffle_seed=config.seed, shuffle_parameterisation=config.shuffle_parameterisation,
                     stages_repeats=config.stages_repeats)
    unknown = sorted(set(overrides) - set(arguments))
    if unknown:
        raise ValueError(f"cannot override {', '.join(unknown)}; overridable: {', '.join(sorted(arguments))}")
    arguments.update(overrides)
    try:
        return get_model(config.model, **arguments, **config.model_kwargs)
    except TypeError as err:  # an argument the builder does not take
        raise ValueError(f"model_kwargs {config.model_kwargs} do not fit {config.model}: {err}") from err


def count_parameters(model: nn.Module) -> int:
    """Number of scalars in ``model.parameters()`` (learned shuffles count ``c^2`` until hardened, 0 after)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Floating-point operations of one forward pass on an input of ``input_shape`` (batch included,
    e.g. ``(1, 3, 32, 32)``), as counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions,
    matrix products and the linear layer, 2 per multiply-add. Gathers and reshapes (fixed, random and hardened
    shuffles) count 0. Runs in eval mode without gradients and restores the model's mode."""
    shape = tuple(input_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"input_shape must be positive integers, got {input_shape!r}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(shape, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
