"""One optimisation loop for learning a permutation matrix ``M`` from a closed-form loss.

The problem is ``min_{M in Pi_n} f(M)`` for a batch of independent instances. It is relaxed to
``M in D_n`` (doubly stochastic) and solved in one of two parameterisations:

* ``"projected"`` (the paper's): ``M`` itself is the variable. Each iteration takes a gradient step on
  ``f(M) + lam_t * P(M)`` (``P`` is :func:`aslib.penalty.l12_penalty`) and maps back with
  :func:`aslib.penalty.project_doubly_stochastic`. With ``lam = 0`` this is the plain convex relaxation
  (when ``f`` is convex). ``lam_t`` follows a continuation: it grows geometrically from
  ``lam * lam_start`` to ``lam`` over the first ``ramp`` fraction of the iterations and then stays at
  ``lam``, so the loss shapes ``M`` before the penalty forces it to a vertex.
* ``"sinkhorn"`` (the baseline): ``M = sinkhorn(X, sinkhorn_iters, tau_t)`` with unconstrained logits
  ``X`` optimised by Adam on ``f(M)``; the temperature ``tau_t`` anneals geometrically from ``tau_start``
  to ``tau_end``, so ``M`` sharpens towards a permutation.

Restarts: ``restarts`` independent random starts per instance are solved together as one batch; each
final ``M`` is rounded to the permutation ``R`` maximising ``<M, R>`` (Hungarian,
:func:`aslib.penalty.round_to_permutation`, or the row argmax where that is provably the same), and the
start whose rounded permutation has the smallest ``f`` is returned.

Starts: ``M0 = project(J/n + init_noise * U / n)`` with ``U`` uniform on ``[0, 1)`` (projected), or
``X0 = init_noise * N(0, 1)`` logits (sinkhorn). ``J/n`` itself is not used: there the penalty's gradient
is constant, so it is a stationary point of ``P`` on ``D_n`` as well as, for regular graphs, of ``f``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from aslib.penalty import (
    l12_penalty,
    permutation_matrix,
    project_doubly_stochastic,
    round_to_permutation,
    sinkhorn,
)
from aslib.progress import progress

__all__ = ["PARAMETERISATIONS", "SolveResult", "SolverConfig", "apply_overrides", "solve_permutation"]

PARAMETERISATIONS = ("projected", "sinkhorn")

#: ``loss_fn(M)`` maps ``M`` of shape ``(batch, restarts, n, n)`` to the loss of shape ``(batch, restarts)``.
LossFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SolverConfig:
    """Settings of :func:`solve_permutation` (see the module docstring for what each does).

    Attributes:
        parameterisation: ``"projected"`` or ``"sinkhorn"``.
        iters: optimisation steps.
        step: step size of the projected gradient step, a multiple of ``1/L`` where ``L`` is the
            smoothness constant the problem passes (``step_scale`` argument), or Adam's learning rate
            for ``"sinkhorn"``.
        lam: final penalty weight (``>= 0``; 0 is the plain relaxation).
        lam_start: the continuation starts at ``lam * lam_start``.
        ramp: fraction of ``iters`` over which ``lam_t`` grows to ``lam``.
        sweeps: normalisation sweeps per projection.
        restarts: random starts per instance.
        init_noise: size of the random perturbation of the start.
        tau_start, tau_end, sinkhorn_iters: the Sinkhorn temperature schedule and its iterations.
        record_every: keep the loss and penalty every this many iterations.
        cpu_threads: torch threads used by the loop on a CPU (restored afterwards), or None to leave
            torch's setting. The default 1 is measured, not a guess: the loop's batched products of
            small matrices gain little from intra-op threads, and when the cores are shared with other
            processes two threads made the test suite's regular-graph solve ten times slower.
    """

    parameterisation: str = "projected"
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
    cpu_threads: int | None = 1

    def __post_init__(self) -> None:
        if self.parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"unknown parameterisation {self.parameterisation!r}; use one of {PARAMETERISATIONS}")
        if not (isinstance(self.iters, int) and self.iters >= 1):
            raise ValueError(f"iters must be an integer >= 1, got {self.iters!r}")
        if not (isinstance(self.restarts, int) and self.restarts >= 1):
            raise ValueError(f"restarts must be an integer >= 1, got {self.restarts!r}")
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if not self.step > 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        if not (0 < self.lam_start <= 1 and 0 <= self.ramp <= 1):
            raise ValueError("lam_start must lie in (0, 1] and ramp in [0, 1]")
        if not (self.tau_start > 0 and self.tau_end > 0):
            raise ValueError("tau_start and tau_end must be > 0")
        if not self.init_noise >= 0:
            raise ValueError(f"init_noise must be >= 0, got {self.init_noise}")
        if not (isinstance(self.record_every, int) and self.record_every >= 1):
            raise ValueError(f"record_every must be an integer >= 1, got {self.record_every!r}")
        if self.cpu_threads is not None and not (isinstance(self.cpu_threads, int) and self.cpu_threads >= 1):
            raise ValueError(f"cpu_threads must be None or an integer >= 1, got {self.cpu_threads!r}")

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


@dataclass
class SolveResult:
    """What :func:`solve_permutation` returns for a batch of ``batch`` instances of size ``n``.

    Attributes:
        perm: ``(batch, n)`` rounded permutations, ``R[i, perm[i]] = 1``, of the best start.
        M: ``(batch, n, n)`` final relaxed matrix of the best start.
        loss_history: ``(records, batch)`` loss ``f(M_t)`` of the best start (at the relaxed ``M_t``).
        penalty_history: ``(records, batch)`` ``P(M_t)`` of the best start.
        rounded_loss: ``(batch,)`` ``f`` at the rounded permutation.
        iterations: iterations run.
        seconds: wall time of the whole solve, restarts and rounding included.
    """

    perm: torch.Tensor
    M: torch.Tensor
    loss_history: torch.Tensor
    penalty_history: torch.Tensor
    rounded_loss: torch.Tensor
    iterations: int
    seconds: float


def apply_overrides(
    config: SolverConfig, method: str, *, lam: float | None, restarts: int | None, iters: int | None
) -> SolverConfig:
    """The entry points' overrides on a method's config: ``"relaxed"`` always has ``lam = 0``; ``lam``
    applies to ``"l12"`` only (and must be ``>= 0``); ``restarts`` and ``iters`` apply to every method.
    The new config is validated by :class:`SolverConfig`."""
    if lam is not None and not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if method == "relaxed":
        config = replace(config, lam=0.0)
    elif method == "l12" and lam is not None:
        config = replace(config, lam=lam)
    if restarts is not None:
        config = replace(config, restarts=restarts)
    if iters is not None:
        config = replace(config, iters=iters)
    return config


def _round(M: torch.Tensor) -> torch.Tensor:
    """Hungarian rounding of row-stochastic ``M (..., n, n)``, skipping the Hungarian solve where it is known.

    Where every row has an entry above 1/2 and these lie in distinct columns, the row-wise argmax is the
    unique maximiser of ``<M, R>`` over permutations (any other permutation takes, in each row where it
    differs, an entry ``<= 1 - max < 1/2 < max``), so it is used directly; other matrices go to
    :func:`aslib.penalty.round_to_permutation`. Near the end of a penalised run nearly all matrices
    qualify, which saves most of the (CPU) Hungarian solves of a large GPU batch.
    """
    top, perms = M.max(-1)
    n = M.shape[-1]
    distinct = torch.nn.functional.one_hot(perms, n).sum(-2).eq(1).all(-1)
    slow = ~(distinct & (top > 0.5).all(-1))
    if bool(slow.any()):
        perms[slow] = round_to_permutation(M[slow])
    return perms


def _initial(config: SolverConfig, shape: tuple[int, ...], n: int, generator: torch.Generator | None,
             dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Random starts, drawn on the CPU: logits for ``"sinkhorn"``, a point of ``D_n`` near ``J/n`` otherwise."""
    if config.parameterisation == "sinkhorn":
        return (config.init_noise * torch.randn(shape, generator=generator, dtype=dtype)).to(device)
    noise = torch.rand(shape, generator=generator, dtype=dtype).to(device)
    return project_doubly_stochastic((1.0 + config.init_noise * noise) / n, config.sweeps)


def solve_permutation(
    loss_fn: LossFn,
    batch: int,
    n: int,
    config: SolverConfig,
    *,
    step_scale: torch.Tensor | float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> SolveResult:
    """Minimise ``loss_fn`` over permutations by the relaxation in ``config`` (module docstring).

    Args:
        loss_fn: ``M (batch, restarts, n, n) -> (batch, restarts)``, differentiable.
        batch, n: number of instances and matrix size.
        config: the solver settings.
        step_scale: ``1/L`` for each instance, a float or a tensor of shape ``(batch,)``; the projected
            step is ``config.step * step_scale``.
        generator: seeds the random starts (drawn on the CPU, so CPU and CUDA runs start alike).
    """
    device = torch.device(device)
    threads = torch.get_num_threads()
    if device.type == "cpu" and config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    try:
        return _solve(loss_fn, batch, n, config, step_scale, generator, dtype, device, show_progress)
    finally:
        torch.set_num_threads(threads)


def _solve(loss_fn: LossFn, batch: int, n: int, config: SolverConfig, step_scale: torch.Tensor | float,
           generator: torch.Generator | None, dtype: torch.dtype, device: torch.device,
           show_progress: bool) -> SolveResult:
    start = time.perf_counter()
    shape = (batch, config.restarts, n, n)
    X = _initial(config, shape, n, generator, dtype, device)
    scale = torch.as_tensor(step_scale, dtype=dtype, device=device).reshape(-1, 1, 1, 1)
    if scale.shape[0] not in (1, batch):
        raise ValueError(f"step_scale must be a float or have shape ({batch},), got {tuple(scale.shape)}")
    optimiser = None
    if config.parameterisation == "sinkhorn":
        X.requires_grad_(True)
        optimiser = torch.optim.Adam([X], lr=config.step)
    losses, penalties = [], []
    M = X
    for t in progress(range(config.iters), enabled=show_progress, desc=config.parameterisation):
        if config.parameterisation == "sinkhorn":
            M = sinkhorn(X, config.sinkhorn_iters, config.tau_at(t))
            loss = loss_fn(M)
            optimiser.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimiser.step()
            penalty = l12_penalty(M.detach(), check_finite=False)
        else:
            M = X.detach().requires_grad_(True)
            loss = loss_fn(M)
            penalty = l12_penalty(M, check_finite=False)
            lam_t = config.lam_at(t)
            objective = loss.sum() + lam_t * penalty.sum() if lam_t > 0 else loss.sum()
            (grad,) = torch.autograd.grad(objective, M)
            with torch.no_grad():
                X = project_doubly_stochastic(M - config.step * scale * grad, config.sweeps)
        if t % config.record_every == 0 or t == config.iters - 1:
            losses.append(loss.detach())
            penalties.append(penalty.detach())
    with torch.no_grad():
        M_final = sinkhorn(X, config.sinkhorn_iters, config.tau_end) if optimiser is not None else X
        M_final = M_final.detach()
        if not bool(torch.isfinite(M_final).all()):
            raise FloatingPointError("the solver diverged (non-finite M); lower config.step")
        perms = _round(M_final)
        rounded = loss_fn(permutation_matrix(perms, dtype))
        best = rounded.argmin(-1)
    rows = torch.arange(batch, device=device)
    return SolveResult(
        perm=perms[rows, best],
        M=M_final[rows, best],
        loss_history=torch.stack(losses)[:, rows, best].cpu(),
        penalty_history=torch.stack(penalties)[:, rows, best].cpu(),
        rounded_loss=rounded[rows, best],
        iterations=config.iters,
        seconds=time.perf_counter() - start,
    )
