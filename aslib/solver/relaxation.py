r"""One optimisation loop for learning a permutation matrix ``M`` from a differentiable loss.

The problem is ``min_{M in Pi_n} f(M)`` for a batch of independent instances. It is relaxed to
``M in D_n`` (doubly stochastic) and solved in one of the registered parameterisations
(:data:`aslib.nn.parameterisations.PARAMETERISATIONS`; each one's solver step is its ``solver_run``):

* ``"mirror"`` (default): entropic mirror descent on ``f(M) + lam_t * P(M)`` over ``D_n``
  (``P`` is :func:`aslib.core.penalty.l12_penalty`). With ``G = C(grad f) / max|C(grad f)| + lam_t grad P``,
  where ``C(X) = X - row means - column means + overall mean`` removes what ``D_n`` cannot feel (the
  divisor is floored at ``1e-3 L``, ``L = 1/step_scale`` a bound on the gradient's entries that the caller
  passes, so that rounding noise around a stationary point such as ``J/n`` is not blown up to full steps),
  one step (:func:`aslib.core.penalty.mirror_step`) is

  .. math::
      M \leftarrow \mathrm{normalise}(M \odot \exp(-\eta G)),

  ``normalise`` being ``sweeps`` Sinkhorn sweeps (:func:`aslib.core.penalty.normalise_rows_and_columns`). The
  step is multiplicative, so ``M`` stays strictly positive and cannot collapse to ``J/n`` however large the
  gradient; dividing ``grad f`` by its own largest centred entry makes ``eta`` and ``lam`` independent of the
  scale and sign of the problem (``f`` and ``c f`` give the same iterates for any ``c > 0``).
* ``"projected"``: the Euclidean variant. A gradient step of size ``step * step_scale`` on
  ``f + lam_t P`` and then :func:`aslib.core.penalty.project_doubly_stochastic` (clamp and normalise). With
  nonnegative data and a large step every entry is clamped to 0 and the projection returns ``J/n``; it is
  kept for the two-layer example, whose step is set from its curvature.
* ``"sinkhorn"`` (the baseline): ``M = sinkhorn(X, sinkhorn_iters, tau_t)`` with unconstrained logits
  ``X`` optimised by Adam on ``f(M)`` (no penalty); ``tau_t`` anneals geometrically ``tau_start -> tau_end``.
* ``"gumbel_sinkhorn"``: the same with fresh Gumbel noise added to ``X`` at every step (drawn from the solve's
  ``generator``), rounded by the Hungarian assignment of the final logits.

``penalty`` names the penalty ``P`` of the penalised parameterisations (:data:`aslib.core.penalties.PENALTIES`,
default the l1-2 penalty); the stopping rule, the records and the choice among tied starts below always read
the l1-2 penalty, whose error bound they rely on.

``lam_t`` (both penalised parameterisations) grows geometrically from ``lam * lam_start`` to ``lam`` over
the first ``ramp`` fraction of the iterations and then stays at ``lam``: the loss shapes ``M`` before the
penalty forces it to a vertex. With ``lam = 0`` this is the plain relaxation.

Restarts: ``restarts`` random starts per instance run together as one batch. Starts are
``normalise(J/n + init_noise * U / n)`` with ``U`` uniform on ``[0, 1)`` (``X0 = init_noise * N(0, 1)``
logits for ``"sinkhorn"``), or the caller's ``initial`` matrices. ``J/n`` itself is avoided: there the
penalty's gradient is constant, so it is stationary for ``P`` and, on regular graphs, for ``f``.

Stopping (``settle_tol`` set): every ``check_every`` steps each start's row-wise argmax ``R`` is read.
Where ``R`` hits every column once it is a Hungarian rounding of ``M`` (each row takes its largest entry);
by the error bound (:func:`aslib.core.penalty.permutation_error_bound`), ``P(M) < ROUNDING_THRESHOLD`` on
``D_n`` makes it so, with ``sum_ij |M_ij - R_ij| <= 2 P(M)``. A start is *settled*, and stops moving, once
``P(M) <= settle_tol`` and ``R`` is the same as at the previous check. An instance ends

* when all its starts are settled;
* when its starts agree, every start's ``R`` being a permutation, unchanged since the previous check,
  and all one and the same: at two checks in a row, or at one check where every start is also *confident*
  (``P(M)`` below the threshold, or every row's top entry above 1/2, which makes ``R`` the unique
  Hungarian rounding). Either rule ends an instance, so it ends no later than under each alone (why both:
  ``docs/tuning.md``);
* as soon as one start's ``R`` is a permutation whose loss reaches the caller's ``lower_bound`` (a
  certificate of optimality, e.g. 0 for an exact graph match: a permutation of that loss is optimal,
  however far ``M`` still is from it).

The solve ends when every instance has ended or after ``iters`` steps. No Hungarian solve runs inside the
loop: each start is rounded once at the end (``R`` itself where it is a permutation, see ``_round``).

The answer of each instance is the start whose rounded permutation has the smallest loss (among equals,
the one with the smallest penalty, i.e. nearest a vertex).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from scipy.optimize import OptimizeResult

from aslib.core.checks import check_fraction, check_nonnegative, check_positive, check_positive_int
from aslib.core.penalties import DEFAULT_PENALTY, get_penalty
from aslib.core.penalty import ROUNDING_THRESHOLD, l12_penalty, permutation_matrix, round_to_permutation
from aslib.nn.parameterisations import get_parameterisation
from aslib.utils.progress import progress

__all__ = [
    "GradientFn",
    "LossFn",
    "OptimizeResult",
    "SelectFn",
    "SolverConfig",
    "random_starts",
    "replace_given",
    "solve_permutation",
]

#: ``loss_fn(M)`` maps ``M`` of shape ``(batch, restarts, n, n)`` to the loss of shape ``(batch, restarts)``.
LossFn = Callable[[torch.Tensor], torch.Tensor]
#: ``gradient(M)``: the gradient of ``loss_fn`` at ``M``, shape ``(batch, restarts, n, n)``.
GradientFn = Callable[[torch.Tensor], torch.Tensor]
#: ``select(index)``: the loss and gradient (or None) of the instances ``index`` only.
SelectFn = Callable[[torch.Tensor], tuple[LossFn, "GradientFn | None"]]

#: Centred gradient entries below this fraction of the caller's bound ``1/step_scale`` count as noise.
_GRADIENT_NOISE = 1e-3


@dataclass(frozen=True)
class SolverConfig:
    """Settings of :func:`solve_permutation` (see the module docstring for what each does).

    Attributes:
        parameterisation: a name in :data:`aslib.nn.parameterisations.PARAMETERISATIONS`.
        iters: most optimisation steps.
        step: ``eta`` of the mirror step; for ``"projected"`` a multiple of ``step_scale`` (``1/L``,
            ``L`` the smoothness constant the problem passes); Adam's learning rate for the logit parameterisations.
        lam: final penalty weight (``>= 0``; 0 is the plain relaxation).
        lam_start: the continuation starts at ``lam * lam_start``.
        ramp: fraction of ``iters`` over which ``lam_t`` grows to ``lam``.
        sweeps: normalisation sweeps per step.
        restarts: random starts per instance.
        init_noise: size of the random perturbation of the start.
        tau_start, tau_end, sinkhorn_iters: the Sinkhorn temperature schedule and its iterations.
        record_every: keep the loss and penalty every this many iterations.
        settle_tol: stop a start once ``P(M) <= settle_tol`` and its rounding is unchanged between two
            checks (must be ``< ROUNDING_THRESHOLD``); None runs every start for ``iters`` steps.
        check_every: steps between two stopping checks.
        cpu_threads: torch threads used by the loop on a CPU (restored afterwards), or None to leave
            torch's setting; default 1 (measured: ``docs/tuning.md``).
        penalty: a name in :data:`aslib.core.penalties.PENALTIES`, the ``P`` that ``lam`` weighs.
    """

    parameterisation: str = "mirror"
    iters: int = 300
    step: float = 1.0
    lam: float = 0.0
    lam_start: float = 0.01
    ramp: float = 0.5
    sweeps: int = 3
    restarts: int = 1
    init_noise: float = 1.0
    tau_start: float = 1.0
    tau_end: float = 0.05
    sinkhorn_iters: int = 20
    record_every: int = 1
    settle_tol: float | None = None
    check_every: int = 10
    cpu_threads: int | None = 1
    penalty: str = DEFAULT_PENALTY

    def __post_init__(self) -> None:
        scheme = get_parameterisation(self.parameterisation)  # validation
        get_penalty(self.penalty)
        for name in ("iters", "restarts", "sweeps", "sinkhorn_iters", "record_every", "check_every"):
            check_positive_int(getattr(self, name), name)
        check_nonnegative(self.lam, "lam")
        check_positive(self.step, "step")
        check_fraction(self.ramp, "ramp", closed=True)
        if not (check_positive(self.lam_start, "lam_start") <= 1):
            raise ValueError(f"lam_start must lie in (0, 1], got {self.lam_start!r}")
        check_positive(self.tau_start, "tau_start")
        check_positive(self.tau_end, "tau_end")
        check_nonnegative(self.init_noise, "init_noise")
        if self.settle_tol is not None and not 0 < check_positive(self.settle_tol, "settle_tol") < ROUNDING_THRESHOLD:
            raise ValueError(f"settle_tol must lie in (0, {ROUNDING_THRESHOLD:.4f}), got {self.settle_tol!r}")
        if self.settle_tol is not None and not scheme.holds_matrix:
            raise ValueError(f"settle_tol needs the matrix itself as the variable, not {self.parameterisation!r}")
        if self.cpu_threads is not None:
            check_positive_int(self.cpu_threads, "cpu_threads")

    def lam_at(self, t: int) -> float:
        """The continuation ``lam_t``: geometric from ``lam * lam_start`` to ``lam`` over ``ramp * iters``."""
        ramp_iters = self.ramp * self.iters
        if self.lam == 0 or t >= ramp_iters:
            return self.lam
        return self.lam * self.lam_start ** (1.0 - t / ramp_iters)

    def tau_at(self, t: int) -> float:
        """The Sinkhorn temperature, geometric from ``tau_start`` to ``tau_end``."""
        frac = t / max(self.iters - 1, 1)
        return self.tau_start * (self.tau_end / self.tau_start) ** frac


def replace_given(config: SolverConfig, /, **changes: object) -> SolverConfig:
    """``dataclasses.replace(config, **changes)`` without the changes that are None (an entry point's options
    left unset), so every caller overrides a config the same way; the new config is validated by
    :class:`SolverConfig`."""
    return replace(config, **{name: value for name, value in changes.items() if value is not None})


def _round(M: torch.Tensor) -> torch.Tensor:
    """Hungarian rounding of ``M (..., n, n)``, skipping the Hungarian solve where its answer is known.

    Where the row-wise argmax hits every column once, it maximises ``<M, R>`` over permutations (each row
    takes its largest entry, the most any permutation can take there), so it is used directly (unique
    unless a row's top entry is tied); other matrices go to :func:`aslib.core.penalty.round_to_permutation`.
    """
    perms = M.argmax(-1)
    slow = ~_distinct(perms)
    if bool(slow.any()):
        perms[slow] = round_to_permutation(M[slow])
    return perms


def _distinct(perms: torch.Tensor) -> torch.Tensor:
    """Whether each row-wise argmax ``(..., n)`` hits every column once (is a permutation), shape ``(...)``.
    Sorting is used rather than ``one_hot``, whose input check alone cost more than the stopping rule's
    other work on a CPU."""
    n = perms.shape[-1]
    return (perms.sort(-1).values == torch.arange(n, device=perms.device)).all(-1)


def _vertices(perms: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The 0/1 matrices ``R[..., i, perms[..., i]] = 1`` of shape ``(..., n, n)``, unchecked (the callers
    have checked ``perms`` with :func:`_distinct`)."""
    n = perms.shape[-1]
    return torch.zeros((*perms.shape, n), dtype=dtype, device=perms.device).scatter_(-1, perms.unsqueeze(-1), 1.0)


def random_starts(config: SolverConfig, shape: tuple[int, ...], generator: torch.Generator | None,
                  dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """The random starts of :func:`solve_permutation` (module docstring), drawn on the CPU, of ``shape``
    ``(..., n, n)``: the parameterisation's ``solver_starts`` (logits for ``"sinkhorn"``, a point of ``D_n``
    near ``J/n`` for ``"mirror"`` and ``"projected"``). The numbers are always drawn in float64 and then
    rounded to ``dtype``: torch draws other numbers from the same seed in float32, so float32 and float64
    solves would otherwise start from unrelated points."""
    return get_parameterisation(config.parameterisation).solver_starts(config, shape, generator, dtype, device)


def solve_permutation(
    loss_fn: LossFn,
    batch: int,
    n: int,
    config: SolverConfig,
    *,
    step_scale: torch.Tensor | float = 1.0,
    gradient: GradientFn | None = None,
    select: SelectFn | None = None,
    lower_bound: torch.Tensor | float | None = None,
    initial: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> OptimizeResult:
    """Minimise ``loss_fn`` over permutations by the relaxation in ``config`` (module docstring).

    Args:
        loss_fn: ``M (batch, restarts, n, n) -> (batch, restarts)``, differentiable unless ``gradient``
            is given.
        batch, n: number of instances and matrix size.
        config: the solver settings.
        step_scale: ``1/L`` for each instance, a float or a tensor ``(batch,)``: ``"projected"`` steps by
            ``step / L``; ``"mirror"`` treats centred gradient entries below ``1e-3 L`` as rounding noise.
        gradient: the closed-form gradient of ``loss_fn`` (saves autograd's work per step); None: autograd.
        select: ``select(index)`` returns ``(loss_fn, gradient)`` for the instances ``index`` (a long tensor)
            alone; with it (``"mirror"``, ``settle_tol`` set) instances that have ended leave the batch, so a
            batch no longer pays for them while its slowest instance runs on.
        lower_bound: a value no permutation's loss goes below, a float or ``(batch,)``; a start whose
            rounded loss reaches it (within ``1e-6`` relative) certifies its instance, which then ends.
        initial: ``(batch, restarts, n, n)`` starting matrices (points of ``D_n``; ``"sinkhorn"``: logits)
            in place of the random starts.
        generator: seeds the random starts (drawn on the CPU, so CPU and CUDA runs start alike).

    Returns:
        scipy's ``OptimizeResult`` for the batch: ``col_ind (batch, n)`` the best start's permutation
        (``R[i, col_ind[i]] = 1``), ``fun (batch,)`` its loss, ``M (batch, n, n)`` its final relaxed matrix,
        ``starts_col_ind (batch, restarts, n)``, ``starts_fun (batch, restarts)`` and ``starts_M (batch,
        restarts, n, n)`` the same for every start,
        ``loss_history`` and ``penalty_history`` ``(records, batch)`` its ``f(M_t)`` and ``P(M_t)``,
        ``nit`` the steps run, ``certified (batch,)`` whether ``lower_bound`` was reached, ``agreed (batch,)``
        whether the starts agreed, ``settled (batch,)`` the number of settled starts, ``seconds`` the wall time.
    """
    device = torch.device(device)
    threads = torch.get_num_threads()
    if device.type == "cpu" and config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    try:
        return _solve(loss_fn, batch, n, config, step_scale, gradient, select, lower_bound, initial, generator,
                      dtype, device, show_progress)
    finally:
        torch.set_num_threads(threads)


class _Stopping:
    """Bookkeeping of the stopping rule (module docstring) for ``(batch, restarts)`` starts."""

    def __init__(self, config: SolverConfig, loss_fn: LossFn, lower_bound: torch.Tensor | float | None,
                 shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> None:
        self.tol, self.loss_fn, self.dtype = config.settle_tol, loss_fn, dtype
        self.bound = (None if lower_bound is None else
                      torch.as_tensor(lower_bound, dtype=dtype, device=device).reshape(-1, 1))
        self.previous = torch.full((*shape, 1), -1, dtype=torch.long, device=device)
        self.settled = torch.zeros(shape, dtype=torch.bool, device=device)
        self.certified = torch.zeros(shape[0], dtype=torch.bool, device=device)
        self.agreed = torch.zeros(shape[0], dtype=torch.bool, device=device)
        self.ended = torch.zeros(shape[0], dtype=torch.bool, device=device)
        #: ``(batch, restarts, 1, 1)``, 1 for starts that still move, once some start has stopped; else None
        self.moving: torch.Tensor | None = None
        #: ``(batch,)``: whether the starts agreed at the previous check
        self.agreeing = torch.zeros(shape[0], dtype=torch.bool, device=device)

    def update(self, M: torch.Tensor) -> bool:
        """Read the roundings of ``M``, settle starts, and say whether every instance has ended."""
        top, perms = M.max(-1)
        unchanged = (perms == self.previous).all(-1)
        penalty = l12_penalty(M, check_finite=False)
        distinct = _distinct(perms)  # then the argmax is a Hungarian rounding (see _round)
        candidate = distinct & (penalty <= self.tol)
        self.settled |= candidate & unchanged
        self.previous = perms
        if self.bound is not None and bool(distinct.any()):
            rounded = self.loss_fn(_vertices(perms, self.dtype))
            reached = distinct & (rounded <= self.bound + 1e-6 * self.bound.abs().clamp_min(1.0))
            self.certified |= reached.any(-1)
        if perms.shape[1] > 1:  # starts agree: every start rounds, stably, to one and the same permutation
            same = (perms == perms[:, :1]).all(-1)
            stable = distinct & unchanged & same
            confident = (penalty < ROUNDING_THRESHOLD) | (top > 0.5).all(-1)
            agreeing = stable.all(-1)
            self.agreed |= (agreeing & self.agreeing) | (stable & confident).all(-1)
            self.agreeing = agreeing
        self.ended = self.certified | self.agreed | self.settled.all(-1)
        frozen = self.settled | self.ended.unsqueeze(-1)
        if bool(frozen.any()):
            self.moving = (~frozen)[..., None, None].to(self.dtype)
        return bool(self.ended.all())


def _solve(loss_fn: LossFn, batch: int, n: int, config: SolverConfig, step_scale: torch.Tensor | float,
           gradient: GradientFn | None, select: SelectFn | None, lower_bound: torch.Tensor | float | None,
           initial: torch.Tensor | None, generator: torch.Generator | None, dtype: torch.dtype, device: torch.device,
           show_progress: bool) -> OptimizeResult:
    start = time.perf_counter()
    shape = (batch, config.restarts, n, n)
    if initial is not None:
        if tuple(initial.shape) != shape:
            raise ValueError(f"initial must have shape {shape}, got {tuple(initial.shape)}")
        X = initial.to(device, dtype)
    else:
        X = random_starts(config, shape, generator, dtype, device)
    scale = torch.as_tensor(step_scale, dtype=dtype, device=device).reshape(-1, 1, 1, 1)
    if scale.shape[0] not in (1, batch):
        raise ValueError(f"step_scale must be a float or have shape ({batch},), got {tuple(scale.shape)}")
    noise_floor = (_GRADIENT_NOISE / scale).clamp_min(torch.finfo(dtype).tiny)
    stopping = _Stopping(config, loss_fn, lower_bound, shape[:2], dtype, device) if config.settle_tol else None
    run = get_parameterisation(config.parameterisation).solver_run(config, X, scale, noise_floor, loss_fn, gradient,
                                                                   generator=generator)
    losses, penalties = [], []
    t = 0
    for t in progress(range(config.iters), enabled=show_progress, desc=config.parameterisation):
        record = t % config.record_every == 0 or t == config.iters - 1
        loss, penalty = run.step(t, config.lam_at(t), record, None if stopping is None else stopping.moving)
        if record:
            losses.append(loss.detach())
            penalties.append(penalty.detach())
        if stopping is not None:
            run.X = run.X.detach()
            if (t + 1) % config.check_every == 0:
                if stopping.update(run.X):
                    break
                if select is not None and run.leaves_batch and bool(stopping.ended.any()):
                    active = (~stopping.ended).nonzero().squeeze(-1)  # ended instances leave the batch
                    run.restrict(active, select(active),
                                 noise_floor[active] if noise_floor.shape[0] == batch else noise_floor)
    with torch.no_grad():
        M_final = run.final()
        if not bool(torch.isfinite(M_final).all()):
            raise FloatingPointError("the solver diverged (non-finite M); lower config.step")
        perms = _round(run.rounding_scores(M_final))
        rounded = loss_fn(permutation_matrix(perms, dtype))
        # among the starts of smallest rounded loss, the one nearest a vertex (smallest penalty)
        tied = rounded <= rounded.min(-1, keepdim=True).values
        best = torch.where(tied, l12_penalty(M_final, check_finite=False), torch.inf).argmin(-1)
    rows = torch.arange(batch, device=device)
    perm, fun = perms[rows, best], rounded[rows, best]
    settled = stopping.settled.sum(-1) if stopping is not None else torch.zeros(batch, dtype=torch.long)
    certified, agreed = ((stopping.certified, stopping.agreed) if stopping is not None else
                         (torch.zeros(batch, dtype=torch.bool), torch.zeros(batch, dtype=torch.bool)))
    return OptimizeResult(
        col_ind=perm, fun=fun, M=M_final[rows, best], starts_col_ind=perms, starts_fun=rounded, starts_M=M_final,
        loss_history=torch.stack(losses)[:, rows, best].cpu(),
        penalty_history=torch.stack(penalties)[:, rows, best].cpu(),
        nit=t + 1, certified=certified, agreed=agreed, settled=settled, seconds=time.perf_counter() - start,
    )

