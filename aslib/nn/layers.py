"""Channel-shuffle layers: ShuffleNet's fixed shuffle, a fixed arbitrary permutation, and the learned one.

A shuffle of ``c`` channels is a permutation matrix ``R`` applied along the channel axis,
``y[:, k] = sum_j R[k, j] x[:, j] = x[:, perm[k]]`` with ``R[k, perm[k]] = 1``. ShuffleNet fixes
``perm = shuffle_indices(c, g)``; AutoShuffleNet (:class:`LearnedShuffle`) trains a doubly stochastic
``M`` in its place, drives it to a permutation with the l1-2 penalty, rounds it with the Hungarian
algorithm (:meth:`LearnedShuffle.harden`) and then runs the gather ``x[:, perm]``, at the cost of the
fixed shuffle. A learned shuffle can instead be parameterised by logits through Sinkhorn's
normalisation (the baseline the paper compares with). :mod:`aslib.nn.shuffles` acts on every learned
shuffle of a model at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aslib.core.checks import check_fraction, check_positive, check_positive_int
from aslib.core.penalties import DEFAULT_PENALTY
from aslib.core.penalty import fused_l12_penalty, permutation_matrix, project_doubly_stochastic, round_to_permutation
from aslib.nn.parameterisations import Parameterisation, get_parameterisation

__all__ = [
    "INITS",
    "SHUFFLE_KINDS",
    "ChannelShuffle",
    "FixedPermutation",
    "LearnedShuffle",
    "make_shuffle",
    "MATMUL_MAX_POSITIONS",
    "mix_channels",
    "soft_matrices",
    "shuffle_indices",
]

#: Initialisations of :class:`LearnedShuffle`.
INITS: tuple[str, ...] = ("shuffle", "identity", "uniform", "random")
#: What :func:`make_shuffle` builds: ShuffleNet's shuffle, the learned one, no shuffle, a fixed random one.
SHUFFLE_KINDS: tuple[str, ...] = ("fixed", "learned", "none", "random")
#: Defaults of the Sinkhorn parameterisation (:mod:`aslib.nn.parameterisations`): normalisation sweeps and
#: temperature. With ``tau = 1`` the logits ``log B`` of a doubly stochastic ``B`` give back ``B``; 20 sweeps
#: keep the row sums exact and the column sums within about 1e-3 of 1 there.
SINKHORN_ITERS = 20
SINKHORN_TAU = 1.0

# Sweeps used to bring a random or noisy initial matrix onto D_n (only at construction).
_INIT_SWEEPS = 50


def _check_groups(channels: int | None, groups: int) -> None:
    check_positive_int(groups, "groups")
    if channels is not None and channels % groups:
        raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")


def _check_input(x: torch.Tensor, channels: int | None, name: str) -> None:
    """Refuse anything but a tensor of shape ``(B, channels, ...)`` (any channel count if ``None``)."""
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} expects a tensor of shape (B, C, ...), got {shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} expected {channels} channels, got {x.shape[1]}")


def shuffle_indices(channels: int, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle as a gather: ``idx = arange(c).reshape(g, c // g).T.flatten()``, ``out[:, k] = in[:, idx[k]]``.

    Returns a long tensor of shape ``(channels,)``; ``permutation_matrix(idx)`` is the shuffle's matrix.
    """
    check_positive_int(channels, "channels")
    _check_groups(channels, groups)
    return torch.arange(channels).reshape(groups, channels // groups).T.flatten()


class ChannelShuffle(nn.Module):
    """ShuffleNet's fixed shuffle of ``c = g n`` channels: ``out[:, k] = in[:, idx[k]]`` (see :func:`shuffle_indices`).

    Input ``(B, c, ...)``, output of the same shape. No parameters, no buffers; runs as torch's native
    ``channel_shuffle`` (a reshape ``(B, g, n, ...) -> (B, n, g, ...)``). ``channels``, when given, fixes ``c``
    (inputs of another width are refused), so that :func:`aslib.nn.shuffles.learn_shuffles` can replace the
    layer by a :class:`LearnedShuffle` without running the network; ``None`` accepts any multiple of ``groups``.
    """

    def __init__(self, groups: int, channels: int | None = None) -> None:
        super().__init__()
        _check_groups(None, groups)
        if channels is not None:
            check_positive_int(channels, "channels")
            _check_groups(channels, groups)
        self.groups = groups
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.channels, "ChannelShuffle")
        if x.shape[1] % self.groups:
            raise ValueError(f"ChannelShuffle: {x.shape[1]} channels are not divisible by groups={self.groups}")
        if x.ndim == 2:  # torch's channel_shuffle wants at least one spatial dimension
            return F.channel_shuffle(x.unsqueeze(-1), self.groups).squeeze(-1)
        return F.channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}" + (f", channels={self.channels}" if self.channels is not None else "")


class FixedPermutation(nn.Module):
    """A fixed, non-learned channel permutation ``out[:, k] = in[:, perm[k]]``, stored as the buffer ``perm``.

    The "random fixed permutation" control: as cheap as ShuffleNet's shuffle, but the permutation is an
    arbitrary one rather than the hand-designed one. Build it with :meth:`random`.
    """

    perm: torch.Tensor

    def __init__(self, perm: torch.Tensor) -> None:
        super().__init__()
        permutation_matrix(perm)  # validates that perm is a permutation of 0..n-1
        if perm.ndim != 1:
            raise ValueError(f"perm must have shape (n,), got {tuple(perm.shape)}")
        self.channels = perm.numel()
        self.register_buffer("perm", perm.detach().clone().long())

    @classmethod
    def random(cls, channels: int, generator: torch.Generator | None = None) -> FixedPermutation:
        """A uniformly random permutation of ``channels`` channels drawn from ``generator``."""
        check_positive_int(channels, "channels")
        return cls(torch.randperm(channels, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.channels, "FixedPermutation")
        return x.index_select(1, self.perm)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def _with_noise(base: torch.Tensor, noise: float, generator: torch.Generator | None) -> torch.Tensor:
    """``(1 - noise) B + noise S`` on ``D_n`` for ``B = base (c, c)`` and ``S`` a random doubly stochastic matrix
    (uniform entries projected on ``D_n``); ``base`` itself when ``noise = 0``."""
    if noise <= 0:
        return base
    c = base.shape[0]
    random_ds = project_doubly_stochastic(torch.rand(c, c, generator=generator), _INIT_SWEEPS)
    return project_doubly_stochastic((1.0 - noise) * base + noise * random_ds, _INIT_SWEEPS)


class LearnedShuffle(nn.Module):
    r"""AutoShuffleNet's learned shuffle: a doubly stochastic ``M`` (the parameter ``weight``, ``c x c``).

    Soft (training) state: ``y[:, k] = sum_j M[k, j] x[:, j]`` (:func:`mix_channels`: a 1x1 convolution
    without bias, or one matrix product on small feature maps), so
    ``M = permutation_matrix(shuffle_indices(c, g))`` computes exactly :class:`ChannelShuffle` ``(g)``.
    Keep ``M`` in ``D_n`` with :meth:`project_` after each optimizer step, add ``lam * penalty()`` to the
    loss, and exclude ``weight`` from weight decay (decay pulls ``M`` toward ``J/n``). (On a GPU that allows
    TF32 the soft product may be rounded to TF32; the hardened gather is always exact.)

    Hardened (inference) state, after :meth:`harden`: ``M`` is rounded to the nearest permutation
    (Hungarian, :func:`~aslib.core.penalty.round_to_permutation`), the parameter is removed and the layer is
    the gather ``y = x[:, perm]`` with ``perm`` a long buffer: no parameter, no multiply-adds. The state
    travels with ``state_dict``: a soft layer loading a hardened state dict becomes hardened (and the
    reverse).

    Args:
        channels: ``c``; inputs have shape ``(B, c, ...)``.
        init: ``"shuffle"`` (ShuffleNet's shuffle with ``groups``), ``"identity"``, ``"uniform"`` (``J/c``)
            or ``"random"`` (a random permutation drawn from ``generator``).
        groups: groups of the ``"shuffle"`` initialisation (required there, ignored otherwise).
        noise: in ``[0, 1]``; the initial matrix is ``(1 - noise) B + noise S`` with ``B`` the matrix of
            ``init`` and ``S`` a random doubly stochastic matrix (uniform entries projected on ``D_n``), so
            it stays in ``D_n``. ``noise > 0`` moves a uniform start off the penalty's stationary point.
        generator: source of randomness for ``"random"`` and ``noise``.
        parameterisation: the name of a registered parameterisation (:mod:`aslib.nn.parameterisations`,
            the object is :attr:`scheme`). ``"projected"``: above. ``"sinkhorn"``: ``weight`` holds logits ``L``
            and the matrix is ``M = sinkhorn(L, sinkhorn_iters, sinkhorn_tau)`` (differentiable, in ``D_n`` up to
            Sinkhorn's tolerance, so :meth:`project_` does nothing). The logits start at
            ``tau * log(max(B, 1e-3))`` for the initial matrix ``B`` above, so ``M`` starts (nearly) at ``B``.
            :meth:`penalty`, :meth:`harden` and ``state_dict`` act on ``M`` exactly as for the projected layer.
            ``"mirror"``: ``weight`` holds ``M`` as for ``"projected"``, but no optimizer moves it: after each
            backward pass :meth:`mirror_update_` takes a multiplicative step with the loss gradient, which
            cannot collapse ``M`` to ``J/n`` as clamping after a large Euclidean step can. Entries that start
            at 0 stay at 0, so start it with ``noise > 0`` (or at ``"uniform"``). ``"gumbel_sinkhorn"``: logits as for
            ``"sinkhorn"``, with fresh Gumbel noise on them in a training pass and :meth:`harden` the Hungarian
            assignment of the logits themselves.
        sinkhorn_iters, sinkhorn_tau: Sinkhorn's sweeps and temperature (see :data:`SINKHORN_ITERS`).
    """

    perm: torch.Tensor | None

    def __init__(
        self,
        channels: int,
        init: str = "shuffle",
        *,
        groups: int | None = None,
        noise: float = 0.0,
        generator: torch.Generator | None = None,
        parameterisation: str = "projected",
        sinkhorn_iters: int = SINKHORN_ITERS,
        sinkhorn_tau: float = SINKHORN_TAU,
    ) -> None:
        super().__init__()
        check_positive_int(channels, "channels")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
        check_fraction(noise, "noise", closed=True)
        get_parameterisation(parameterisation)  # validation
        check_positive_int(sinkhorn_iters, "sinkhorn_iters")
        check_positive(sinkhorn_tau, "sinkhorn_tau")
        self.channels = channels
        self.init = init
        self.parameterisation = parameterisation
        self.sinkhorn_iters = sinkhorn_iters
        self.sinkhorn_tau = float(sinkhorn_tau)
        #: the temperature when built, from which :func:`aslib.nn.shuffles.anneal_shuffles_` anneals
        self.sinkhorn_tau_start = self.sinkhorn_tau
        if init == "shuffle":
            if groups is None:
                raise ValueError("init='shuffle' needs groups")
            base = permutation_matrix(shuffle_indices(channels, groups))
        elif init == "identity":
            base = torch.eye(channels)
        elif init == "uniform":
            base = torch.full((channels, channels), 1.0 / channels)
        else:
            base = permutation_matrix(torch.randperm(channels, generator=generator))
        base = self.scheme.initial_weight(_with_noise(base, noise, generator), self.sinkhorn_tau)
        self.weight: nn.Parameter | None = nn.Parameter(base)
        self.register_buffer("perm", None)

    @classmethod
    def from_permutation(
        cls,
        perm: torch.Tensor,
        *,
        noise: float = 0.0,
        generator: torch.Generator | None = None,
        parameterisation: str = "projected",
        sinkhorn_iters: int = SINKHORN_ITERS,
        sinkhorn_tau: float = SINKHORN_TAU,
    ) -> LearnedShuffle:
        """A soft learned shuffle that starts at the permutation ``perm`` (shape ``(c,)``, ``y = x[:, perm]``):
        ``M = (1 - noise) R + noise S`` with ``R = permutation_matrix(perm)`` and ``S`` as for ``noise`` in the
        constructor, so with ``noise = 0`` it computes exactly what ``x[:, perm]`` computes. ``init`` reads
        ``"permutation"``."""
        permutation_matrix(perm)  # validates that perm is a permutation of 0..c-1
        if perm.ndim != 1:
            raise ValueError(f"perm must have shape (c,), got {tuple(perm.shape)}")
        check_fraction(noise, "noise", closed=True)
        layer = cls(perm.numel(), "identity", parameterisation=parameterisation, sinkhorn_iters=sinkhorn_iters,
                    sinkhorn_tau=sinkhorn_tau)
        base = _with_noise(permutation_matrix(perm.detach().cpu().long()).float(), noise, generator)
        layer.weight = nn.Parameter(layer.scheme.initial_weight(base, layer.sinkhorn_tau))
        layer.init = "permutation"
        return layer

    @property
    def scheme(self) -> Parameterisation:
        """The parameterisation object named by :attr:`parameterisation`."""
        return get_parameterisation(self.parameterisation)

    @property
    def is_mirror(self) -> bool:
        """Whether ``M`` is moved by :meth:`mirror_update_` (the parameterisation's gradient step) rather than
        by an optimizer."""
        return not self.scheme.optimizer_moves

    @property
    def is_hardened(self) -> bool:
        """Whether the layer has been rounded to its permutation (a gather, no parameter)."""
        return self.perm is not None

    def matrix(self) -> torch.Tensor:
        """The current ``c x c`` matrix: ``M = scheme.matrices(weight)`` when soft (the weight itself, or e.g.
        ``sinkhorn(weight)``; differentiable), the permutation matrix of ``perm`` when hardened."""
        if self.perm is not None:
            return permutation_matrix(self.perm)
        assert self.weight is not None
        return soft_matrices(self, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.channels, "LearnedShuffle")
        perm = self.perm
        if perm is not None:
            return x.index_select(1, perm)
        return mix_channels(self.matrix().to(x.dtype), x)

    def penalty(self) -> torch.Tensor:
        """``P(M)``, the l1-2 penalty (0-dim; differentiable, see :func:`fused_l12_penalty`); exactly 0 once
        hardened."""
        if self.perm is not None:
            return torch.zeros((), device=self.perm.device)
        return fused_l12_penalty(self.matrix())

    @torch.no_grad()
    def project_(self, sweeps: int = 1) -> None:
        """The parameterisation's update after an optimizer step, in place (:meth:`Parameterisation.project`):
        for ``"projected"`` clamp >= 0, then ``sweeps`` column/row normalisations; nothing for the Sinkhorn
        parameterisation (its ``M`` is in ``D_n`` by construction) nor for the mirror one (its update
        normalises)."""
        if self.weight is not None:
            self.scheme.project(self.weight, sweeps, inplace=True)

    @torch.no_grad()
    def mirror_update_(self, lam: float, step: float, sweeps: int = 1, penalty: str = DEFAULT_PENALTY) -> bool:
        """The mirror parameterisation's step, in place: ``M <- mirror_step(M, weight.grad, lam, step, sweeps)``
        with the gradient of the penalty named ``penalty`` (:data:`aslib.core.penalties.PENALTIES`)
        (:func:`aslib.core.penalty.mirror_step`: ``M * exp(-step * (C(g) / max|C(g)| + lam * grad P(M)))``,
        normalised), ``g = weight.grad`` the gradient of the loss *without* the penalty, which this step adds.
        ``step`` is the largest change of ``log M`` the loss gradient can make; ``lam`` weighs the penalty's
        gradient against that normalised loss gradient (so it is not the ``lam`` of the projected layer,
        whose penalty enters the loss). Returns False, leaving ``M`` alone, when the layer is hardened,
        moved by an optimizer, has no gradient, or the gradient is not finite (a skipped mixed-precision step).

        The step consumes the gradient (``weight.grad`` is None afterwards, whether the step was taken or
        skipped): no optimizer holds ``M``, so no ``zero_grad`` clears it, and the next backward pass would
        otherwise add to it, making every step follow the sum of all earlier gradients."""
        if self.weight is None or not self.is_mirror or self.weight.grad is None:
            return False
        grad, self.weight.grad = self.weight.grad, None
        if not bool(torch.isfinite(grad.sum())):  # any NaN or inf entry makes the sum non-finite (one cheap pass)
            return False
        new = self.scheme.gradient_step(self.weight, grad, lam, step, sweeps, penalty)
        if new is None:
            return False
        self.weight.copy_(new)
        return True

    @torch.no_grad()
    def permutation(self) -> torch.Tensor:
        """The permutation ``perm`` (shape ``(c,)``) that :meth:`harden` would use, without hardening."""
        if self.perm is not None:
            return self.perm.clone()
        assert self.weight is not None
        return round_to_permutation(self.scheme.rounding_scores(self.weight, self.sinkhorn_iters, self.sinkhorn_tau))

    def harden(self) -> torch.Tensor:
        """Round ``M`` to its Hungarian permutation and become the gather ``x[:, perm]``; returns ``perm``.

        Drops the parameter ``weight`` (an optimizer built before holds a stale reference to it). Calling
        it again is a no-op.
        """
        if self.perm is None:
            perm = self.permutation()
            self._become_hard(perm)
        assert self.perm is not None
        return self.perm

    def _become_hard(self, perm: torch.Tensor) -> None:
        self.weight = None  # stays registered as None: absent from parameters() and state_dict()
        self.perm = perm

    def _become_soft(self, like: torch.Tensor) -> None:
        self.perm = None
        self.weight = nn.Parameter(torch.empty(self.channels, self.channels, device=like.device))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:  # type: ignore[no-untyped-def]
        # Switch between soft and hardened to match the incoming state before the default loading.
        has_perm = prefix + "perm" in state_dict
        has_weight = prefix + "weight" in state_dict
        if has_perm and not has_weight and self.perm is None:
            assert self.weight is not None
            self._become_hard(torch.empty(self.channels, dtype=torch.long, device=self.weight.device))
        elif has_weight and not has_perm and self.perm is not None:
            self._become_soft(self.perm)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        extra = self.scheme.describe(self.sinkhorn_iters, self.sinkhorn_tau)
        return f"channels={self.channels}, init={self.init!r}{extra}, hardened={self.is_hardened}"


#: Largest feature map (``H * W`` positions) that :func:`mix_channels` mixes by a matrix product rather than a 1x1
#: convolution: measured on a 2-core CPU for ShuffleNet v2 1.0x (benchmarks/results/progressive_hardening_*.txt).
MATMUL_MAX_POSITIONS = 16


def mix_channels(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y[:, k] = sum_j M[k, j] x[:, j]`` for ``M (c, c)`` and ``x (B, c, ...)``; ``y`` has the shape of ``x``.

    For a 4-d ``x`` with more than :data:`MATMUL_MAX_POSITIONS` positions: a 1x1 convolution with weight
    ``M[:, :, None, None]``. Otherwise one matrix product over a channels-last view,
    ``y = (x.movedim(1, -1) @ M^T).movedim(-1, 1)``, returned in the memory format of ``x`` (contiguous, or
    channels-last for a channels-last ``x``, which the product gives without a copy): the same sums (equal up to
    floating-point summation order), but on a CPU it skips the convolution's per-call overhead, which dominates
    on the small feature maps of late stages (on large ones the convolution is faster in a whole network).
    On a GPU the product follows torch's matmul precision, the convolution cuDNN's (TF32 where allowed).
    """
    if x.ndim == 4 and x.shape[2] * x.shape[3] > MATMUL_MAX_POSITIONS:
        return F.conv2d(x, M[:, :, None, None])
    y = torch.matmul(x.movedim(1, -1), M.t()).movedim(-1, 1)
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return y  # already laid out channels-last, as the input was: no copy
    return y.contiguous()


def soft_matrices(layer: LearnedShuffle, weights: torch.Tensor) -> torch.Tensor:
    """The matrices ``M`` of ``weights`` (``(..., c, c)``, stacked parameters of layers configured like
    ``layer``): ``layer.scheme.matrices(weights, sinkhorn_iters, sinkhorn_tau)`` (the weights themselves, or e.g.
    their Sinkhorn normalisation), of ``scheme.perturb(weights)`` in a training pass with gradients (Gumbel noise
    for ``"gumbel_sinkhorn"``; the weights themselves otherwise)."""
    if layer.training and torch.is_grad_enabled():
        weights = layer.scheme.perturb(weights)
    return layer.scheme.matrices(weights, layer.sinkhorn_iters, layer.sinkhorn_tau)


def make_shuffle(
    kind: str,
    channels: int,
    groups: int,
    *,
    init: str = "shuffle",
    noise: float = 0.0,
    generator: torch.Generator | None = None,
    parameterisation: str = "projected",
) -> nn.Module:
    """The shuffle module a ShuffleNet unit uses for ``kind`` in :data:`SHUFFLE_KINDS`.

    ``"fixed"``: :class:`ChannelShuffle` ``(groups)``; ``"learned"``: :class:`LearnedShuffle` (``init``,
    ``noise``, ``parameterisation``, ``groups`` for the shuffle initialisation); ``"none"``: identity; ``"random"``:
    :class:`FixedPermutation` drawn from ``generator``. ``channels`` is validated against ``groups`` for
    every kind, so all arms accept exactly the same architectures.
    """
    if kind not in SHUFFLE_KINDS:
        raise ValueError(f"unknown shuffle {kind!r}; valid: {', '.join(SHUFFLE_KINDS)}")
    shuffle_indices(channels, groups)  # validation
    if kind == "fixed":
        return ChannelShuffle(groups, channels)
    if kind == "learned":
        return LearnedShuffle(channels, init, groups=groups, noise=noise, generator=generator,
                              parameterisation=parameterisation)
    if kind == "random":
        return FixedPermutation.random(channels, generator)
    return nn.Identity()
