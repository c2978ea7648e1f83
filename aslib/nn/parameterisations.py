r"""How a learned permutation matrix ``M`` is held and moved: one class per parameterisation, and their registry.

A parameterisation says how the stored variable ``W`` (a layer's ``weight``, or the solver's batch of
starts, stacked ``(..., n, n)``) becomes the matrix ``M`` of the forward pass, how ``W`` starts from a doubly
stochastic matrix ``B``, and how ``W`` moves after a step. Both :class:`~aslib.nn.layers.LearnedShuffle`
(training) and :func:`~aslib.solver.relaxation.solve_permutation` (batched instances ``(batch, restarts, n, n)``)
use these objects, by name from :data:`PARAMETERISATIONS`:

* ``"projected"`` (the paper's): ``W = M``. Training: an SGD step on ``loss + lam P(M)``, then the projection
  ``M <- project(M) = normalise(max(M, 0))`` (:func:`~aslib.core.penalty.project_doubly_stochastic`: clamp,
  then ``sweeps`` column/row normalisations). Solver: ``M <- project(M - step * step_scale * grad(f + lam_t P))``.
* ``"mirror"``: ``W = M``, moved by no optimizer. After the backward pass of a loss without the penalty,
  the entropic mirror step (:func:`~aslib.core.penalty.mirror_step`)

  .. math::
      M \leftarrow \mathrm{normalise}\bigl(M \odot \exp(-\eta\, (C(g) / \max|C(g)| + \lambda \nabla P(M)))\bigr),

  ``g`` the loss gradient and ``C`` its centring (:func:`~aslib.core.penalty.centre`); the penalty acts in
  the step, not in the loss. The solver floors ``max|C(g)|`` at ``1e-3 / step_scale``; a layer at the
  dtype's smallest normal number.
* ``"sinkhorn"`` (the baseline): ``W = L`` logits, ``M = sinkhorn(L, iters, tau)``
  (:func:`~aslib.core.penalty.sinkhorn`), starting at ``L = tau * log(max(B, 1e-3))``. An optimizer moves
  ``L``; nothing follows its step. The solver runs Adam on ``f(M)`` alone (no penalty) with ``tau``
  annealed; a training loss may add ``lam P(M)``.
* ``"gumbel_sinkhorn"`` (Mena et al. 2018): ``W = L`` logits as for ``"sinkhorn"``, but the forward pass of a
  training layer and every solver step use ``M = sinkhorn(L + G, iters, tau)``, ``G`` fresh i.i.d. standard
  Gumbel noise (``-log E``, ``E ~ Exp(1)``); evaluation uses ``sinkhorn(L, iters, tau)``, and the hard
  permutation is the Hungarian assignment of the logits ``L`` themselves (:meth:`Parameterisation.rounding_scores`;
  ``log sinkhorn(L)`` differs from ``L / tau`` by row and column constants only). The temperature is annealed:
  in the solver by ``tau_at(t)`` as for ``"sinkhorn"``, in training per epoch by ``TrainConfig.shuffle_tau_end``.

The penalised parameterisations (``"projected"``, ``"mirror"``) optimise the penalty named by the solver's
``penalty`` (:data:`aslib.core.penalties.PENALTIES`, default the l1-2); what a solve records is always the
l1-2 penalty, the measure of distance to a vertex that its stopping rule and error bound read.

A new parameterisation is one subclass of :class:`Parameterisation` (overriding what differs from holding
logits ``W`` mapped by :meth:`Parameterisation.matrices`, moved by an optimizer) and one call of
:func:`register_parameterisation`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from aslib.core.penalties import DEFAULT_PENALTY, get_penalty
from aslib.core.penalty import l12_penalty, mirror_step, project_doubly_stochastic, sinkhorn
from aslib.utils.registry import Registry

__all__ = [
    "PARAMETERISATIONS",
    "GumbelSinkhorn",
    "Mirror",
    "Parameterisation",
    "Projected",
    "Sinkhorn",
    "SolverRun",
    "SolverSettings",
    "get_parameterisation",
    "gumbel_noise",
    "parameterisation_fields",
    "register_parameterisation",
    "unregister_parameterisation",
]

# Floor of the initial matrix before its logarithm (the Sinkhorn start of a permutation: zeros become 1e-3).
_SINKHORN_LOG_FLOOR = 1e-3


class SolverSettings(Protocol):
    """What a parameterisation reads from :class:`~aslib.solver.relaxation.SolverConfig`."""

    step: float
    sweeps: int
    init_noise: float
    sinkhorn_iters: int
    tau_end: float
    penalty: str

    def tau_at(self, t: int) -> float: ...


class SolverRun:
    """One solve's variable ``X (batch, restarts, n, n)`` and its step, for :func:`solve_permutation`'s loop.

    Attributes:
        X: the current variable (``M`` itself, or logits).
        leaves_batch: whether :meth:`restrict` can drop ended instances from the batch.
    """

    leaves_batch = False

    def __init__(self, X: torch.Tensor) -> None:
        self.X = X

    def step(self, t: int, lam_t: float, record: bool,
             moving: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Step ``t`` with penalty weight ``lam_t``; ``moving (batch, restarts, 1, 1)`` is 1 for the starts
        that still move (None: all). Returns ``f(M_t)`` and ``P(M_t)``, shape ``(batch, restarts)``, of the
        matrix before the step (at least where ``record``; otherwise they may be None)."""
        raise NotImplementedError

    def restrict(self, active: torch.Tensor, fns: tuple[Callable, Callable | None],
                 floor: torch.Tensor) -> None:
        """Step only the instances ``active`` from now on, with their ``(loss_fn, gradient)`` and noise floor."""
        raise NotImplementedError(f"{type(self).__name__} keeps every instance in its batch")

    def final(self) -> torch.Tensor:
        """The matrices ``M`` of the final variable (no gradient)."""
        return self.X.detach()

    def rounding_scores(self, final: torch.Tensor) -> torch.Tensor:
        """What the Hungarian rounding maximises ``<., R>`` of: the final matrices ``final`` themselves."""
        return final


class Parameterisation:
    """Logits ``W`` mapped to ``M = matrices(W)`` and moved by an optimizer: the defaults a subclass overrides.

    Attributes:
        name: the registry key (set by :func:`register_parameterisation`).
        holds_matrix: whether ``W`` is ``M`` itself, a point of ``D_n`` (the solver's stopping rule reads it).
        optimizer_moves: whether an optimizer moves ``W`` (otherwise :meth:`gradient_step` does).
        penalty_in_loss: whether ``lam P(M)`` enters the training loss (otherwise the update applies it).
        config_fields: the :class:`~aslib.training.config.TrainConfig` fields of the update that concern it
            (among :func:`parameterisation_fields`; the others cannot change its result).
    """

    name: str = ""
    holds_matrix: bool = False
    optimizer_moves: bool = True
    penalty_in_loss: bool = True
    config_fields: tuple[str, ...] = ()

    # --- training (LearnedShuffle) -------------------------------------------------------------------
    def initial_weight(self, base: torch.Tensor, tau: float) -> torch.Tensor:
        """The stored weight for the initial doubly stochastic matrix ``base (c, c)``: ``base`` itself."""
        return base

    def matrices(self, weights: torch.Tensor, iters: int, tau: float) -> torch.Tensor:
        """``M`` of ``weights (..., c, c)`` (differentiable): the weights themselves."""
        return weights

    def perturb(self, weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The weights a training forward pass maps to ``M`` (noise drawn from ``generator``): ``weights``."""
        return weights

    def rounding_scores(self, weights: torch.Tensor, iters: int, tau: float) -> torch.Tensor:
        """The ``(..., c, c)`` scores whose Hungarian assignment is the hard permutation: ``matrices(weights)``."""
        return self.matrices(weights, iters, tau)

    def project(self, weights: torch.Tensor, sweeps: int, *, inplace: bool = False) -> torch.Tensor | None:
        """The update after an optimizer step of ``weights (..., c, c)`` (in place with ``inplace``), or None
        where there is none."""
        return None

    @property
    def projects(self) -> bool:
        """Whether :meth:`project` does something (a subclass overrides it), so callers can skip stacking."""
        return type(self).project is not Parameterisation.project

    def gradient_step(self, weight: torch.Tensor, grad: torch.Tensor, lam: float, step: float,
                      sweeps: int, penalty: str = DEFAULT_PENALTY) -> torch.Tensor | None:
        """The new weight from the loss gradient ``grad`` (and the penalty named ``penalty`` weighted by ``lam``)
        when no optimizer moves ``weight``, else None."""
        return None

    def describe(self, iters: int, tau: float) -> str:
        """What a layer's ``extra_repr`` adds for this parameterisation (``""``: nothing)."""
        return ""

    # --- solver (solve_permutation) ------------------------------------------------------------------
    def solver_starts(self, config: SolverSettings, shape: tuple[int, ...], generator: torch.Generator | None,
                      dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        """Random logits ``init_noise * N(0, 1)`` of ``shape``, drawn in float64 on the CPU, then cast."""
        return (config.init_noise * torch.randn(shape, generator=generator, dtype=torch.float64)).to(device, dtype)

    def solver_run(self, config: SolverSettings, X: torch.Tensor, scale: torch.Tensor, noise_floor: torch.Tensor,
                   loss_fn: Callable, gradient: Callable | None,
                   generator: torch.Generator | None = None) -> SolverRun:
        """Adam (learning rate ``config.step``) on the logits ``X`` for ``f(matrices(perturb(X), iters, tau_t))``,
        ``perturb``'s noise drawn from ``generator``."""
        return _AdamRun(self, config, X, loss_fn, generator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _AdamRun(SolverRun):
    """Logits moved by Adam on ``f(M)``, ``M = matrices(perturb(X), sinkhorn_iters, tau_t)``; the penalty is
    recorded only."""

    def __init__(self, parameterisation: Parameterisation, config: SolverSettings, X: torch.Tensor,
                 loss_fn: Callable, generator: torch.Generator | None = None) -> None:
        super().__init__(X)
        self.parameterisation, self.config, self.loss_fn = parameterisation, config, loss_fn
        self.generator = generator
        X.requires_grad_(True)
        self.optimiser = torch.optim.Adam([X], lr=config.step)

    def step(self, t: int, lam_t: float, record: bool,
             moving: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        M = self.parameterisation.matrices(self.parameterisation.perturb(self.X, self.generator),
                                           self.config.sinkhorn_iters, self.config.tau_at(t))
        loss = self.loss_fn(M)
        self.optimiser.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.optimiser.step()
        return loss, l12_penalty(M.detach(), check_finite=False)

    def final(self) -> torch.Tensor:
        with torch.no_grad():
            return self.parameterisation.matrices(self.X, self.config.sinkhorn_iters, self.config.tau_end).detach()

    def rounding_scores(self, final: torch.Tensor) -> torch.Tensor:
        """The parameterisation's :meth:`~Parameterisation.rounding_scores` (``final`` where it keeps the default)."""
        if type(self.parameterisation).rounding_scores is Parameterisation.rounding_scores:
            return final
        return self.parameterisation.rounding_scores(self.X.detach(), self.config.sinkhorn_iters, self.config.tau_end)


class _MatrixParameterisation(Parameterisation):
    """``W = M``, a point of ``D_n``; the solver starts at ``project((1 + init_noise * U) / n)``, ``U ~ U[0, 1)``."""

    holds_matrix = True

    def solver_starts(self, config: SolverSettings, shape: tuple[int, ...], generator: torch.Generator | None,
                      dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        """Near ``J/n`` in ``D_n``, drawn in float64 on the CPU (float32 draws from one seed are unrelated)."""
        n = shape[-1]
        noise = torch.rand(shape, generator=generator, dtype=torch.float64).to(device)
        start = project_doubly_stochastic((1.0 + config.init_noise * noise) / n, config.sweeps, check_finite=False)
        return start.to(dtype)


class Projected(_MatrixParameterisation):
    """``W = M``; an optimizer step, then ``M <- project_doubly_stochastic(M, sweeps)``."""

    config_fields = ("projection_sweeps",)

    def project(self, weights: torch.Tensor, sweeps: int, *, inplace: bool = False) -> torch.Tensor | None:
        """``normalise(max(W, 0))`` with ``sweeps`` column/row normalisations (in place with ``inplace``)."""
        return project_doubly_stochastic(weights, sweeps, inplace=inplace, check_finite=False)

    def solver_run(self, config: SolverSettings, X: torch.Tensor, scale: torch.Tensor, noise_floor: torch.Tensor,
                   loss_fn: Callable, gradient: Callable | None,
                   generator: torch.Generator | None = None) -> SolverRun:
        """``M <- project(M - step * scale * grad(f + lam_t P))``, by autograd, ``P`` the ``config.penalty``."""
        return _ProjectedRun(config, X, scale, loss_fn)


class _ProjectedRun(SolverRun):
    def __init__(self, config: SolverSettings, X: torch.Tensor, scale: torch.Tensor, loss_fn: Callable) -> None:
        super().__init__(X)
        self.config, self.scale, self.loss_fn = config, scale, loss_fn

    def step(self, t: int, lam_t: float, record: bool,
             moving: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        # autograd through l12_penalty: its subgradient at the exact zeros the clamp leaves is 0
        M = self.X.detach().requires_grad_(True)
        loss = self.loss_fn(M)
        chosen = get_penalty(self.config.penalty)
        penalty = chosen.value(M, check_finite=False)
        objective = loss.sum() + lam_t * penalty.sum() if lam_t > 0 else loss.sum()
        if chosen.name != DEFAULT_PENALTY:  # the record is the l1-2 penalty whatever is optimised
            penalty = l12_penalty(M.detach(), check_finite=False)
        (grad,) = torch.autograd.grad(objective, M)
        with torch.no_grad():
            X = project_doubly_stochastic(M - self.config.step * self.scale * grad, self.config.sweeps,
                                          check_finite=False)
        if moving is not None:  # stopped starts keep their matrix
            X = M.detach() + moving * (X - M.detach())
        self.X = X
        return loss, penalty


class Mirror(_MatrixParameterisation):
    """``W = M``, moved outside the optimizer by :func:`~aslib.core.penalty.mirror_step` (penalty in the step)."""

    optimizer_moves = False
    penalty_in_loss = False
    config_fields = ("projection_sweeps", "mirror_lam", "mirror_step")

    def gradient_step(self, weight: torch.Tensor, grad: torch.Tensor, lam: float, step: float,
                      sweeps: int, penalty: str = DEFAULT_PENALTY) -> torch.Tensor | None:
        """``mirror_step(M, grad, lam, step, sweeps, floor)`` with the gradient of the penalty ``penalty``,
        ``floor`` the smallest normal number of ``grad``."""
        return mirror_step(weight, grad, lam, step, sweeps, torch.finfo(grad.dtype).tiny,
                           get_penalty(penalty).mirror_gradient)

    def solver_run(self, config: SolverSettings, X: torch.Tensor, scale: torch.Tensor, noise_floor: torch.Tensor,
                   loss_fn: Callable, gradient: Callable | None,
                   generator: torch.Generator | None = None) -> SolverRun:
        """The mirror step with ``max|C(g)|`` floored at ``noise_floor``; ended instances may leave the batch."""
        return _MirrorRun(config, X, noise_floor, loss_fn, gradient)


class _MirrorRun(SolverRun):
    leaves_batch = True

    def __init__(self, config: SolverSettings, X: torch.Tensor, noise_floor: torch.Tensor, loss_fn: Callable,
                 gradient: Callable | None) -> None:
        super().__init__(X)
        self.config, self.loss_fn = config, loss_fn
        self.active: torch.Tensor | None = None
        self.part_fns: tuple[Callable, Callable | None] = (loss_fn, gradient)
        self.part_floor = noise_floor

    def step(self, t: int, lam_t: float, record: bool,
             moving: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        M, active = self.X, self.active
        part = M if active is None else M[active]
        new = mirror_step(part, _gradient(*self.part_fns, part), lam_t, self.config.step, self.config.sweeps,
                          self.part_floor, get_penalty(self.config.penalty).mirror_gradient)
        if moving is not None:
            keep = moving if active is None else moving[active]
            new = part + keep * (new - part)
        self.X = new if active is None else M.index_copy(0, active, new)
        if not record:
            return None, None
        with torch.no_grad():
            return self.loss_fn(M), l12_penalty(M, check_finite=False)

    def restrict(self, active: torch.Tensor, fns: tuple[Callable, Callable | None],
                 floor: torch.Tensor) -> None:
        self.active, self.part_fns, self.part_floor = active, fns, floor


def _gradient(loss_fn: Callable, gradient: Callable | None, M: torch.Tensor) -> torch.Tensor:
    """The gradient of ``loss_fn`` at ``M``: ``gradient(M)`` when given, else by autograd."""
    if gradient is not None:
        with torch.no_grad():
            return gradient(M)
    M = M.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(M).sum(), M)
    return grad


class Sinkhorn(Parameterisation):
    """Logits ``L``, ``M = sinkhorn(L, iters, tau)``, starting at ``L = tau * log(max(B, 1e-3))``."""

    def initial_weight(self, base: torch.Tensor, tau: float) -> torch.Tensor:
        """``tau * log(max(base, 1e-3))``: with ``tau = 1`` Sinkhorn gives back (nearly) ``base``."""
        return tau * base.clamp_min(_SINKHORN_LOG_FLOOR).log()

    config_fields = ("shuffle_tau_end",)

    def matrices(self, weights: torch.Tensor, iters: int, tau: float) -> torch.Tensor:
        """``sinkhorn(weights, iters, tau)``: ``exp(L / tau)`` normalised ``iters`` times, rows then columns."""
        return sinkhorn(weights, iters, tau)

    def describe(self, iters: int, tau: float) -> str:
        return f", sinkhorn(iters={iters}, tau={tau:g})"


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None = None,
                 like: torch.Tensor | None = None) -> torch.Tensor:
    """I.i.d. standard Gumbel noise ``G = -log E``, ``E ~ Exp(1)``, of ``shape``: drawn on the CPU in float64
    from ``generator`` (reproducible on any device), then cast to ``like``'s dtype and device; with
    ``generator`` None drawn where ``like`` lies from torch's global generator (``torch.manual_seed``)."""
    if generator is None and like is not None:
        return torch.empty(shape, dtype=like.dtype, device=like.device).exponential_().clamp_min_(1e-30).log_().neg_()
    noise = torch.empty(shape, dtype=torch.float64).exponential_(generator=generator).clamp_min_(1e-300).log_().neg_()
    return noise if like is None else noise.to(like.device, like.dtype)


class GumbelSinkhorn(Sinkhorn):
    """Logits ``L``; in training ``M = sinkhorn(L + noise * G, iters, tau)``, ``G`` fresh standard Gumbel noise
    (:func:`gumbel_noise`), in evaluation ``sinkhorn(L, iters, tau)``; hard permutation: Hungarian on ``L``."""

    def __init__(self, noise: float = 1.0) -> None:
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0, got {noise!r}")
        self.noise = float(noise)

    def perturb(self, weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``weights + noise * G``, ``G`` standard Gumbel noise (:func:`gumbel_noise`, from ``generator``)."""
        return weights + self.noise * gumbel_noise(tuple(weights.shape), generator, weights) if self.noise else weights

    def rounding_scores(self, weights: torch.Tensor, iters: int, tau: float) -> torch.Tensor:
        """The logits themselves."""
        return weights.detach()

    def describe(self, iters: int, tau: float) -> str:
        return f", gumbel_sinkhorn(iters={iters}, tau={tau:g}, noise={self.noise:g})"


#: The parameterisations by name, in the order configurations list them.
PARAMETERISATIONS: Registry[Parameterisation] = Registry("parameterisation", Parameterisation)


#: Add a parameterisation under a new name (``register_parameterisation(name, obj)``), remove one, look one up (errors list the names).
register_parameterisation = PARAMETERISATIONS.register
unregister_parameterisation = PARAMETERISATIONS.unregister
get_parameterisation = PARAMETERISATIONS.lookup


def parameterisation_fields() -> tuple[str, ...]:
    """Every TrainConfig field some registered parameterisation's update reads, first mention first."""
    return tuple(dict.fromkeys(f for p in PARAMETERISATIONS.values() for f in p.config_fields))


register_parameterisation("projected", Projected())
register_parameterisation("mirror", Mirror())
register_parameterisation("sinkhorn", Sinkhorn())
register_parameterisation("gumbel_sinkhorn", GumbelSinkhorn())
PARAMETERISATIONS.seal()
