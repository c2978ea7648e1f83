"""A model's learned shuffles together: make them, find them, penalise, project, harden, and summarise them.

The training loop calls these once per step or epoch on the whole model (:mod:`aslib.training.loop`); each acts on
every :class:`~aslib.nn.layers.LearnedShuffle` of the model, in module order. On a GPU, matrices of equal size
are stacked and handled in one batched call (fewer kernel launches); on a CPU one at a time (no stack copies).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from aslib.core.checks import as_generator, check_fraction
from aslib.core.penalties import DEFAULT_PENALTY, get_penalty
from aslib.core.penalty import ROUNDING_THRESHOLD, max_row_deficit, penalty_at_uniform
from aslib.nn.layers import ChannelShuffle, FixedPermutation, LearnedShuffle, shuffle_indices, soft_matrices
from aslib.nn.parameterisations import get_parameterisation

__all__ = [
    "LEARN_INITS",
    "RoundingWarning",
    "anneal_shuffles_",
    "fix_shuffles",
    "fixed_permutations",
    "ShuffleHealth",
    "UNIFORM_FRACTION",
    "shuffle_health",
    "harden",
    "harden_shuffles_",
    "learn_shuffles",
    "layer_penalties",
    "learned_shuffles",
    "mirror_parameters",
    "mirror_shuffles_",
    "project_shuffles_",
    "shuffle_parameters",
    "shuffle_penalty",
    "shuffle_stats",
    "soft_mirror_shuffles",
]


def learned_shuffles(model: nn.Module) -> list[LearnedShuffle]:
    """Every :class:`LearnedShuffle` in ``model`` (soft or hardened), in ``model.modules()`` order."""
    return [m for m in model.modules() if isinstance(m, LearnedShuffle)]


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _soft_groups(model: nn.Module) -> list[list[LearnedShuffle]]:
    """The soft learned shuffles of ``model`` in batches for :func:`shuffle_penalty` and
    :func:`project_shuffles_`: on a GPU grouped by channel count and parameterisation (one batched kernel per
    group, fewer launches); on a CPU one layer per batch (stacking would copy every matrix twice a step, and
    a CPU gains nothing from fewer launches)."""
    groups: dict[tuple, list[LearnedShuffle]] = {}
    for i, layer in enumerate(learned_shuffles(model)):
        if not layer.is_hardened:
            assert layer.weight is not None
            key = (layer.channels, layer.parameterisation, layer.sinkhorn_iters, layer.sinkhorn_tau)
            groups.setdefault(key if layer.weight.device.type == "cuda" else (i,), []).append(layer)
    return list(groups.values())


def _stacked_weights(group: list[LearnedShuffle]) -> torch.Tensor:
    weights = [layer.weight for layer in group]
    if len(weights) == 1:  # a view, no copy
        return weights[0].unsqueeze(0)  # type: ignore[union-attr]
    return torch.stack(weights)  # type: ignore[arg-type]


def _stacked_matrices(group: list[LearnedShuffle]) -> torch.Tensor:
    return soft_matrices(group[0], _stacked_weights(group))


def shuffle_penalty(model: nn.Module, *, mirror: bool = True, penalty: str = DEFAULT_PENALTY) -> torch.Tensor:
    """``sum_l P(M_l)``, ``P`` the penalty named ``penalty`` (:data:`aslib.core.penalties.PENALTIES`, default the
    l1-2), over the learned shuffles of ``model``: a differentiable 0-dim tensor on the model's
    device (0 when there are none or all are hardened). ``mirror=False`` leaves out the shuffles whose
    parameterisation applies the penalty in its own update rather than the loss (``penalty_in_loss`` false:
    the mirror step, :func:`mirror_shuffles_`).

    On a GPU matrices of equal size are stacked and penalised in one batched call (fewer kernel launches); on a
    CPU each matrix is penalised where it lies, without the copies of a stack.
    """
    total, chosen = torch.zeros((), device=_model_device(model)), get_penalty(penalty)
    for group in _soft_groups(model):
        if mirror or group[0].scheme.penalty_in_loss:
            total = total + chosen.fused(_stacked_matrices(group)).sum()
    return total


@torch.no_grad()
def project_shuffles_(model: nn.Module, sweeps: int = 1) -> None:
    """:meth:`LearnedShuffle.project_` on every soft learned shuffle (call after each optimizer step): the
    update :meth:`~aslib.nn.parameterisations.Parameterisation.project` of its parameterisation.

    On a GPU matrices of equal size are projected as one batch, then copied back into their parameters; on a
    CPU one at a time, in place (no stack, no copy). Layers whose parameterisation has no such update
    (Sinkhorn, mirror) are left alone.
    """
    for group in _soft_groups(model):
        scheme = group[0].scheme
        if not scheme.projects:
            continue
        if len(group) == 1:
            group[0].project_(sweeps)
            continue
        projected = scheme.project(_stacked_weights(group), sweeps)
        assert projected is not None
        for layer, matrix in zip(group, projected.unbind(0)):
            layer.weight.copy_(matrix)  # type: ignore[union-attr]


@torch.no_grad()
def mirror_shuffles_(shuffles: nn.Module | Iterable[LearnedShuffle], lam: float, step: float,
                     sweeps: int = 1, penalty: str = DEFAULT_PENALTY) -> int:
    """:meth:`LearnedShuffle.mirror_update_` on every soft mirror-parameterised shuffle of ``shuffles`` (a model,
    or learned shuffles already gathered from one), with the penalty named ``penalty``; call after the backward
    pass of a loss that leaves their penalty out. Returns how many moved."""
    layers = learned_shuffles(shuffles) if isinstance(shuffles, nn.Module) else shuffles
    return sum(layer.mirror_update_(lam, step, sweeps, penalty) for layer in layers)


@torch.no_grad()
def anneal_shuffles_(model: nn.Module, fraction: float, tau_end: float) -> None:
    """Set the temperature of every learned shuffle whose parameterisation holds logits (``"sinkhorn"``,
    ``"gumbel_sinkhorn"``: not ``holds_matrix``, moved by an optimizer) to ``tau_0 (tau_end / tau_0)^fraction``,
    ``tau_0`` its temperature when built and ``fraction`` in ``[0, 1]`` the share of training done."""
    for layer in learned_shuffles(model):
        if not layer.scheme.holds_matrix and layer.scheme.optimizer_moves:
            start = layer.sinkhorn_tau_start
            layer.sinkhorn_tau = start * (tau_end / start) ** min(max(fraction, 0.0), 1.0)


def harden_shuffles_(model: nn.Module) -> list[torch.Tensor]:
    """:meth:`LearnedShuffle.harden` on every learned shuffle; returns their permutations in order."""
    return [layer.harden() for layer in learned_shuffles(model)]


def harden(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """The network for inference: ``model`` with every learned shuffle rounded to its Hungarian permutation
    (:meth:`LearnedShuffle.harden`), so that each is the index gather ``y = x[:, perm]`` with no parameter and
    no multiply-add. Returns a copy (``model`` keeps its soft matrices) unless ``inplace``; other modules,
    their weights and the training mode are unchanged. BatchNorm statistics are not re-estimated: where
    rounding changed the network (a shuffle above the rounding threshold), recalibrate them on training data."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    hardened = model if inplace else copy.deepcopy(model)
    harden_shuffles_(hardened)
    return hardened


def shuffle_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The ``weight`` parameters (``M`` or logits) of the soft learned shuffles that an optimizer moves (to
    put in an optimizer group without weight decay): those whose parameterisation has ``optimizer_moves``
    (every one but the mirror-parameterised)."""
    return [layer.weight for layer in learned_shuffles(model) if layer.weight is not None and not layer.is_mirror]


def soft_mirror_shuffles(model: nn.Module) -> list[LearnedShuffle]:
    """The learned shuffles of ``model`` not yet hardened that no optimizer moves (the mirror-parameterised):
    those that :func:`mirror_shuffles_` moves."""
    return [layer for layer in learned_shuffles(model) if layer.is_mirror and not layer.is_hardened]


def mirror_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The ``M`` parameters of the soft mirror-parameterised shuffles: they need gradients but no optimizer
    (:func:`mirror_shuffles_` moves them)."""
    return [layer.weight for layer in soft_mirror_shuffles(model)]


@torch.no_grad()
def layer_penalties(model: nn.Module) -> list[float]:
    """``[P(M_0), P(M_1), ...]``: the l1-2 penalty of each learned shuffle in :func:`learned_shuffles` order
    (0 for a hardened one)."""
    return [float(layer.penalty()) for layer in learned_shuffles(model)]


@torch.no_grad()
def shuffle_stats(model: nn.Module) -> dict[str, float]:
    """Summary of the learned shuffles for a training log (plain floats).

    Keys:
        ``num_shuffles``: number of learned shuffles (soft or hardened).
        ``penalty``: ``sum_l P(M_l)`` (hardened layers count 0).
        ``max_penalty``: ``max_l P(M_l)``.
        ``max_row_deficit``: ``max_l max_i (1 - ||M_l[i, :]||_2)``, half the bound on ``max |M - R|``.
        ``max_marginal_error``: ``max_l`` of the largest ``|row or column sum - 1|`` (distance from ``D_n``).
        ``rounding_fraction``: fraction of layers with ``P(M_l) < ROUNDING_THRESHOLD`` (where the row
        argmax is provably a permutation and the error bound holds).
    With no learned shuffle every key but ``num_shuffles`` and ``penalty`` is NaN.
    """
    layers = learned_shuffles(model)
    if not layers:
        nan = math.nan
        return {"num_shuffles": 0.0, "penalty": 0.0, "max_penalty": nan, "max_row_deficit": nan,
                "max_marginal_error": nan, "rounding_fraction": nan}
    penalties, deficits, marginals = [], [], []
    for layer in layers:
        M = layer.matrix().float()
        penalties.append(float(layer.penalty()))
        deficits.append(float(max_row_deficit(M)))
        marginals.append(float(torch.cat([M.sum(0), M.sum(1)]).sub(1.0).abs().max()))
    return {
        "num_shuffles": float(len(layers)),
        "penalty": math.fsum(penalties),
        "max_penalty": max(penalties),
        "max_row_deficit": max(deficits),
        "max_marginal_error": max(marginals),
        "rounding_fraction": sum(p < ROUNDING_THRESHOLD for p in penalties) / len(layers),
    }


#: A soft learned shuffle whose penalty is at least this fraction of ``P(J/n)`` counts as (near) the uniform
#: matrix ``J/n``: its rows are nearly flat, and its rounding is nearly arbitrary.
UNIFORM_FRACTION = 0.9


class RoundingWarning(UserWarning):
    """A run ends with learned shuffles that are not (yet) permutations: rounding them changes the network."""


@dataclass(frozen=True)
class ShuffleHealth:
    """Where a model's soft learned shuffles stand before rounding, by module name and ``P(M)``.

    ``unsettled``: ``P(M) >= ROUNDING_THRESHOLD`` (the row argmax is not provably a permutation, the rounding
    may change the function); ``uniform``: among those, ``P(M) >= UNIFORM_FRACTION * P(J/n)``. Hardened
    shuffles are permutations and never appear.
    """

    unsettled: tuple[tuple[str, float], ...]
    uniform: tuple[tuple[str, float], ...]

    @property
    def healthy(self) -> bool:
        return not self.unsettled

    def message(self, total: int) -> str:
        """One line naming the layers (at most eight of each kind) and their penalties."""
        def names(layers: tuple[tuple[str, float], ...]) -> str:
            shown = ", ".join(f"{name} (P = {p:.3g})" for name, p in layers[:8])
            return shown + (f" and {len(layers) - 8} more" if len(layers) > 8 else "")
        line = (f"{len(self.unsettled)} of {total} learned shuffles end above the rounding threshold "
                f"{ROUNDING_THRESHOLD:.3f}, so rounding changes the network: {names(self.unsettled)}")
        if self.uniform:
            line += (f"; {len(self.uniform)} of them are at or near the uniform matrix J/n (P >= "
                     f"{UNIFORM_FRACTION:g} P(J/n)), where rounding is nearly arbitrary: {names(self.uniform)}")
        return line


@torch.no_grad()
def shuffle_health(model: nn.Module) -> ShuffleHealth:
    """:class:`ShuffleHealth` of ``model``'s soft learned shuffles, in ``model.named_modules()`` order."""
    unsettled, uniform = [], []
    for name, layer in model.named_modules():
        if isinstance(layer, LearnedShuffle) and not layer.is_hardened:
            p = float(layer.penalty())
            if p >= ROUNDING_THRESHOLD:
                unsettled.append((name or "<model>", p))
                if p >= UNIFORM_FRACTION * penalty_at_uniform(layer.channels):
                    uniform.append((name or "<model>", p))
    return ShuffleHealth(tuple(unsettled), tuple(uniform))


#: How :func:`learn_shuffles` starts each learned shuffle: at the shuffle it replaces (``"permutation"``), at the
#: uniform matrix ``J/c`` or at a random permutation.
LEARN_INITS: tuple[str, ...] = ("permutation", "uniform", "random")
_CONVERTIBLE = (ChannelShuffle, FixedPermutation, LearnedShuffle)


def _converts(module: nn.Module) -> bool:
    """A fixed shuffle, a fixed permutation or a hardened learned shuffle (a soft one is already learned)."""
    return isinstance(module, (ChannelShuffle, FixedPermutation)) or (
        isinstance(module, LearnedShuffle) and module.is_hardened)


def _observed_channels(model: nn.Module, shuffles: list[ChannelShuffle], example_input: object) -> dict[int, int]:
    """Channel counts of ``shuffles`` seen in one forward pass of ``model`` on ``example_input`` (eval mode, no
    gradient, so BatchNorm statistics do not move), by ``id``."""
    seen: dict[int, set[int]] = {id(m): set() for m in shuffles}

    def record(module: nn.Module, args: tuple) -> None:
        seen[id(module)].add(int(args[0].shape[1]))

    hooks = [m.register_forward_pre_hook(record) for m in shuffles]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    counts = {}
    for m in shuffles:
        if len(seen[id(m)]) != 1:
            raise ValueError(f"a ChannelShuffle(groups={m.groups}) saw channel counts {sorted(seen[id(m)])} in the "
                             "forward pass of example_input; it needs exactly one")
        counts[id(m)] = seen[id(m)].pop()
    return counts


def _replacement(module: nn.Module, channels: int, init: str, noise: float, generator: torch.Generator,
                 parameterisation: str, device: torch.device) -> LearnedShuffle:
    if init == "permutation":
        if isinstance(module, ChannelShuffle):
            perm = shuffle_indices(channels, module.groups)
        else:
            perm = module.perm  # type: ignore[assignment]
        layer = LearnedShuffle.from_permutation(perm, noise=noise, generator=generator,
                                                parameterisation=parameterisation)
    else:
        layer = LearnedShuffle(channels, init, noise=noise, generator=generator, parameterisation=parameterisation)
    return layer.to(device)


def learn_shuffles(
    model: nn.Module,
    init: str = "permutation",
    *,
    noise: float = 0.0,
    seed: int | torch.Generator | None = 0,
    parameterisation: str = "projected",
    example_input: object = None,
) -> nn.Module:
    """Replace every channel shuffle of ``model`` by a :class:`LearnedShuffle`, in place; returns ``model``.

    Converted: :class:`ChannelShuffle` (ShuffleNet's shuffle), :class:`FixedPermutation` and hardened learned
    shuffles, wherever they sit (any module built from them, e.g. every model of :mod:`aslib.models`); soft
    learned shuffles are left as they are. Each new layer starts at the matrix ``B`` of ``init`` mixed with
    ``noise``: ``M = (1 - noise) B + noise S`` (``S`` random doubly stochastic), with ``B``

    * ``"permutation"``: the permutation matrix of the shuffle it replaces, so with ``noise = 0`` the network
      computes what it computed before (the start for fine-tuning a trained network);
    * ``"uniform"``: ``J/c``, the paper's start (a stationary point of the penalty: use ``noise > 0``);
    * ``"random"``: a random permutation.

    ``seed`` (or a generator) draws the random permutations and ``S``, layer after layer in module order.
    ``parameterisation`` names how each matrix is held and moved (:mod:`aslib.nn.parameterisations`; the
    mirror step cannot leave an entry that starts at 0, so use it with ``noise > 0`` or ``"uniform"``). The
    new layers live on the device of ``model``'s first parameter or buffer. A :class:`ChannelShuffle` built
    without ``channels`` learns its channel count from one forward pass on ``example_input`` (a tensor, or a
    tuple of positional arguments), run in eval mode without gradients. Shuffles written as function calls in a
    ``forward`` (torchvision's ShuffleNet v2) are not modules and cannot be found: convert such a network with
    :func:`aslib.models.from_torchvision` first.

    Raises ``ValueError`` for an unknown ``init`` or ``parameterisation``, ``noise`` outside ``[0, 1]``, and a
    :class:`ChannelShuffle` of unknown width without ``example_input``; ``TypeError`` if ``model`` is not a
    module. Once converted, train with ``loss + lam * shuffle_penalty(model)`` (and :func:`project_shuffles_`
    after each optimizer step), then :func:`harden`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, _CONVERTIBLE):
        raise ValueError("model is itself a shuffle layer: convert a network that holds it")
    if init not in LEARN_INITS:
        raise ValueError(f"unknown init {init!r}; valid: {', '.join(LEARN_INITS)}")
    check_fraction(noise, "noise", closed=True)
    get_parameterisation(parameterisation)  # validation
    generator = as_generator(seed)
    # every place that holds a shuffle (named_children() would list a module held twice by one parent once)
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent._modules.items()
               if child is not None and _converts(child)]
    unsized = list({id(c): c for _, _, c in targets if isinstance(c, ChannelShuffle) and c.channels is None}.values())
    if unsized and example_input is None:
        raise ValueError(f"{len(unsized)} ChannelShuffle layers were built without channels: pass example_input "
                         "(an input of model) so that one forward pass finds their widths")
    observed = _observed_channels(model, unsized, example_input) if unsized else {}
    device = _model_device(model)
    done: dict[int, LearnedShuffle] = {}  # a shuffle module used twice becomes one learned shuffle used twice
    for parent, name, child in targets:
        if id(child) not in done:
            channels = getattr(child, "channels", None) or observed[id(child)]
            done[id(child)] = _replacement(child, channels, init, noise, generator, parameterisation, device)
        setattr(parent, name, done[id(child)])
    return model


def fixed_permutations(model: nn.Module) -> list[list[int]]:
    """The permutation of every :class:`FixedPermutation` in ``model`` (random or given shuffles), in
    ``model.modules()`` order: ``out[:, k] = in[:, perm[k]]``."""
    return [m.perm.tolist() for m in model.modules() if isinstance(m, FixedPermutation)]


def fix_shuffles(model: nn.Module, permutations: Sequence[Sequence[int]]) -> nn.Module:
    """Replace the channel shuffles of ``model`` (:class:`ChannelShuffle`, :class:`FixedPermutation`, hardened
    learned shuffles), in module order, by :class:`FixedPermutation` layers of ``permutations``, in place; returns
    ``model``. The ``l``-th permutation (length ``c_l``, the ``l``-th shuffle's channels) goes to the ``l``-th
    shuffle, so a rounded network's ``TrainResult.permutations`` rebuild its shuffles in a network of the same
    architecture. Raises ``ValueError`` when the counts or the widths differ, or a shuffle's width is unknown."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent._modules.items()
               if child is not None and _converts(child)]
    shuffles = list({id(c): c for _, _, c in targets}.values())
    if len(shuffles) != len(permutations):
        raise ValueError(f"permutations: {len(permutations)} given, the model has {len(shuffles)} channel shuffles")
    device = _model_device(model)
    done: dict[int, FixedPermutation] = {}
    for layer, perm in zip(shuffles, permutations):
        channels = getattr(layer, "channels", None)
        if channels is None or len(perm) != channels:
            raise ValueError(f"permutations: a permutation of {len(perm)} channels for a shuffle of {channels}")
        done[id(layer)] = FixedPermutation(torch.as_tensor(list(perm), dtype=torch.long)).to(device)
    for parent, name, child in targets:
        setattr(parent, name, done[id(child)])
    return model
