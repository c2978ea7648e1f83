r"""The quadratic assignment problem with scipy's interface: the l1-2 penalty method beside FAQ and 2-opt.

scipy's ``quadratic_assignment(A, B)`` minimises (or with ``maximize=True`` maximises)

.. math::
    \mathrm{fun}(P) = \mathrm{tr}(A^\top P B P^\top) = \sum_{ij} A_{ij} B_{\pi(i)\pi(j)}

over permutation matrices ``P`` (``P[i, col_ind[i]] = 1``). :func:`quadratic_assignment` takes the same
arguments and returns the same ``OptimizeResult``; ``method="faq"`` and ``"2opt"`` call scipy itself.

``"l12"`` relaxes ``P`` to ``M in D_n`` and runs the penalised mirror descent of :mod:`aslib.solver.relaxation` on
a loss equal to the objective up to a constant on permutations (``||A P||_F = ||A||_F``, ``||P B||_F = ||B||_F``):

* maximising symmetric ``A`` and ``B`` (graph matching): ``f(M) = ||A M - M B||_F^2 = ||A||^2 + ||B||^2 -
  2 tr(A^T M B M^T)`` on ``Pi_n``, the paper's loss, convex on ``D_n``, zero exactly at an isomorphism (a
  certificate of optimality);
* otherwise: ``s tr(A^T M B M^T)`` itself (``s = -1`` when maximising; indefinite; the convex alternatives
  tried in its place: ``docs/tuning.md``).

``"relaxed"`` is the same with ``lam = 0``: the relaxation and a final rounding. Both take scipy's options with
scipy's meaning: ``partial_match`` (fixed pairs, seeded matching: the solve runs on the free nodes, the fixed
ones adding a linear term, :func:`_seeded_loss`), ``partial_guess`` (the first start), ``shuffle_input``, ``P0``.

Maximising, ``"l12"`` runs the :data:`QUICK_STAGES` in turn (larger steps, fewer of them), then the full solve,
each from the same starts and only where the stages before neither certified their answer nor saw their starts
agree (:class:`QuickStage`, :func:`default_qap_config`).

``polish`` (an option of ``"l12"`` and ``"relaxed"``, inside the timed call, skipped when an exact match
certified the answer optimal) runs scipy's 2-opt, or FAQ then 2-opt, from the answer (:mod:`.qap_polish`);
``"l12"``'s default when minimising nonnegative matrices (:func:`default_polish`).

Each method is one function ``_quadratic_assignment_<method>(A, B, **options)`` (scipy's: :mod:`.qap_baselines`),
its keyword arguments its options; :func:`quadratic_assignment` checks ``A`` and ``B`` (:mod:`.qap_options`), warns
about options a method does not take (scipy's ``OptimizeWarning``) and dispatches.

When to prefer which (``benchmarks/results/qap_benchmark_cpu.txt``: seed 0, 10 instances per family, n = 30, 50
for Erdos-Renyi G(n, 0.2); one thread of a loaded 2-core x86_64 CPU, methods interleaved per instance; "x": median
time per scipy FAQ call; peers: graspologic 3.4.4 ``graph_match``, FAQ and GOAT (``transport=True``), pygmtools
0.6.0 RRWM, IPFP, SM on the Lawler affinity):

* Graphs with symmetries (random 3-regular, cycles, grids): ``"l12"`` found an isomorphism on 10/10 of each (99x,
  20x, 4x; certified). No peer did on regular graphs or cycles, even restarted for l12's time; on grids scipy's
  FAQ so restarted found 3/10, graspologic's FAQ and GOAT, RRWM, IPFP and SM none.
* Noisy Erdos-Renyi (2% and 5% of pairs flipped): ``"l12"`` (8x, 6x), one GOAT call (3.8x, 4.5x) and RRWM at 2%
  (182x) recovered every vertex; FAQ for l12's time 84% and 58%. GOAT is as accurate and 1.3 to 2.1 times faster.
* Planted weighted QAP (asymmetric, 1% noise): every method but 2-opt and SM found the planted answer; one FAQ call
  is enough.
* Flow x distance, minimised: ``"l12"`` (its default faq polish, 21x) has a mean gap of 0.30% to the best found,
  FAQ restarted for that time 0.43%, graspologic's FAQ 1.9%, GOAT 2.2%, unpolished l12 2.0%.
* ``"2opt"`` from random starts was the weakest in l12's time everywhere: use it as ``polish="2opt"``.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from scipy.optimize import OptimizeResult

from aslib.utils.runtime import resolve_device
from aslib.solver.qap_baselines import quadratic_assignment_2opt, quadratic_assignment_faq
from aslib.solver.qap_options import (POLISH_METHODS, check_matrices, check_maxiter, check_pairs, check_polish,
                                      check_start, check_tol, guess_start, node_orders,
                                      penalty_starts, torch_generator, warn_unknown_options)
from aslib.solver.qap_polish import FAQ_POLISH_STARTS, objective, polish_answer, polish_starts
from aslib.solver.relaxation import SolverConfig, replace_given, solve_permutation

__all__ = ["FAQ_POLISH_STARTS", "POLISH_METHODS", "QAP_METHODS", "QUICK_STAGES", "QuickStage", "QuickStages",
           "default_polish", "default_qap_config", "quadratic_assignment", "quick_stages", "solve_qap", "solve_staged"]


@dataclass(frozen=True)
class QuickStage:
    """A stage run before the full solve of maximising ``"l12"``: the full config with ``step`` and ``iters``
    changed; the next stage runs, from the same starts, only where it ends with neither a certificate nor agreeing
    starts (the best stage kept)."""

    step: float = 2.0
    iters: int = 225


#: What ``quick_stage`` takes: one :class:`QuickStage`, a sequence of them run in turn, or None (none).
QuickStages = QuickStage | tuple[QuickStage, ...] | None

#: The quick stages of maximising ``"l12"`` by default: a short one, then :class:`QuickStage`'s defaults.
QUICK_STAGES: tuple[QuickStage, ...] = (QuickStage(step=4.0, iters=30), QuickStage())


def quick_stages(quick: Any) -> tuple[QuickStage, ...]:
    """``quick`` (a :class:`QuickStage`, a tuple or list of them, or None) as a tuple; anything else raises."""
    stages = () if quick is None else (quick,) if isinstance(quick, QuickStage) else quick
    if not isinstance(stages, (tuple, list)) or not all(isinstance(q, QuickStage) for q in stages):
        raise ValueError(f"quick_stage must be a QuickStage, a sequence of them or None, got {quick!r}")
    return tuple(stages)


def default_qap_config(maximize: bool, penalised: bool = True, polish: bool | str = False) -> SolverConfig:
    """Our settings of the ``"l12"`` solve (``penalised=False``: the same with ``lam = 0``, ``"relaxed"``;
    ``polish``: the option of that name, which changes the minimising settings, see the end). How they were
    chosen: ``docs/tuning.md``.

    Always: one Sinkhorn sweep per mirror step, ``lam`` ramped geometrically over 80% of the steps, a start
    settled once ``P(M) <= 0.05`` (then ``sum |M - R| <= 0.1``) with its rounding unchanged over 10 steps.

    * Maximising: 8 random starts near ``J/n`` (``init_noise = 1``), at most 450 steps of ``eta = 1``,
      ``lam`` from 0.03 to 1; ``"l12"`` first runs the :data:`QUICK_STAGES` from the same starts (``eta = 4``, at
      most 30 steps, the ramp over 24; then ``eta = 2``, at most 225 steps, the ramp over 180).
    * Minimising: 8 far spread starts (``init_noise = 100``), at most 300 steps of ``eta = 0.3``, ``lam`` from
      0.003 to 0.3.
    * Minimising with ``polish=True`` or ``"faq"`` (``"l12"``'s default there, :func:`default_polish`), the solve
      only generates starts for FAQ: 24 far spread starts (``init_noise = 100``), 20 steps of ``eta = 1`` (the same
      ``lam`` ramp, over 16 steps)."""
    lam = (1.0 if maximize else 0.3) if penalised else 0.0
    config = SolverConfig(parameterisation="mirror", iters=450 if maximize else 300, step=1.0 if maximize else 0.3,
                          lam=lam, lam_start=0.03 if maximize else 0.01, ramp=0.8, sweeps=1, restarts=8,
                          init_noise=1.0 if maximize else 100.0, settle_tol=0.05, check_every=10, record_every=10)
    if not maximize and (polish is True or polish == "faq"):
        config = replace(config, iters=20, restarts=24, step=1.0)
    return config


def default_polish(maximize: bool, A: torch.Tensor, B: torch.Tensor) -> bool | str:
    """``"l12"``'s ``polish`` when none is given: ``"faq"`` when minimising nonnegative ``A`` and ``B`` (weighted
    flow x distance problems, where FAQ from the relaxed starts beats the penalty's own rounding), else none
    (graph matching ends on a certificate or agreeing starts; on matrices of any sign the spread starts of the
    unpolished solve reach better optima). Measured: ``docs/tuning.md``."""
    return "faq" if not maximize and bool((A >= 0).all() and (B >= 0).all()) else False


LossPair = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def _relaxed_loss(A: torch.Tensor, B: torch.Tensor, maximize: bool, frobenius: bool, seeds: int = 0) -> LossPair:
    """The relaxed loss of the module docstring and its gradient, for ``A``, ``B`` of shape ``(batch, 1, n, n)``.

    The gradient is written as two matrix products per step, each batched over the starts:

    * symmetric ``A``, ``B`` (``frobenius``): ``grad ||A M - M B||^2 = 2 A^2 M - 4 A M B + 2 M B^2
      = [2 A^2 | -4 A] [M ; M B] + M (2 B^2)``, with ``M [B | 2 B^2]`` the first product;
    * otherwise: ``grad s tr(A^T M B M^T) = s (A M B^T + A^T M B) = [s A | s A^T] [M B^T ; M B]``, with
      ``M [B^T | B]`` the first product.

    Half the products of the direct form (``R = A M - M B``, then ``A^T R - R B^T``; ``docs/tuning.md``).
    With ``seeds = m > 0`` fixed pairs first: :func:`_seeded_loss`.
    """
    if seeds:
        return _seeded_loss(A, B, maximize, frobenius, seeds)
    At, Bt = A.transpose(-1, -2), B.transpose(-1, -2)
    sign = -1.0 if maximize else 1.0
    n = A.shape[-1]

    def right(M: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """``M @ X`` for ``M (batch, restarts, n, n)``, ``X (batch, 1, n, m)``: one product of ``(restarts n, n)``
        by ``(n, m)`` per instance (a CPU computes one larger product faster than ``restarts`` small ones)."""
        b, r, n, _ = M.shape
        return (M.reshape(b, r * n, n) @ X.squeeze(1)).reshape(b, r, n, X.shape[-1])

    if frobenius:
        right_factors = torch.cat([B, 2.0 * (B @ B)], -1)
        left_factors = torch.cat([2.0 * (A @ A), -4.0 * A], -1)

        def loss(M: torch.Tensor) -> torch.Tensor:
            return (A @ M).sub_(right(M, B)).square_().sum((-2, -1))

        def gradient(M: torch.Tensor) -> torch.Tensor:
            Y = right(M, right_factors)
            return (left_factors @ torch.cat([M, Y[..., :n]], -2)).add_(Y[..., n:])
    else:
        right_factors = torch.cat([Bt, B], -1)
        left_factors = torch.cat([A, At], -1).mul_(sign)

        def loss(M: torch.Tensor) -> torch.Tensor:
            return sign * (A * (right(M, B) @ M.transpose(-1, -2))).sum((-2, -1))

        def gradient(M: torch.Tensor) -> torch.Tensor:
            Y = right(M, right_factors)
            return left_factors @ torch.cat([Y[..., :n], Y[..., n:]], -2)
    return loss, gradient


def _seeded_loss(A: torch.Tensor, B: torch.Tensor, maximize: bool, frobenius: bool, m: int) -> LossPair:
    """The relaxed loss of :func:`_relaxed_loss` when the first ``m`` nodes of ``A`` are matched to the first ``m``
    of ``B`` (``P = diag(I_m, M)``, ``M (n - m, n - m)``; blocks ``A = [[A11, A12], [A21, A22]]``, ``C = A21 B21^T +
    A12^T B12``): ``tr(A^T P B P^T) = <A11, B11> + <C, M> + tr(A22^T M B22 M^T)``, so

    * ``frobenius``: ``||A P - P B||_F^2 = ||A11 - B11||^2 + ||A12 M - B12||^2 + ||A21 - M B21||^2 + ||A22 M -
      M B22||^2`` (0 still certifies), gradient ``2 (A^2)_22 M - 4 A22 M B22 + 2 M (B^2)_22 - 2 C``;
    * otherwise ``s tr(A^T P B P^T)``, gradient ``s (A22 M B22^T + A22^T M B22 + C)``."""
    A11, A12, A21, A22 = A[..., :m, :m], A[..., :m, m:], A[..., m:, :m], A[..., m:, m:]
    B11, B12, B21, B22 = B[..., :m, :m], B[..., :m, m:], B[..., m:, :m], B[..., m:, m:]
    linear = A21 @ B21.transpose(-1, -2) + A12.transpose(-1, -2) @ B12
    if frobenius:
        A2, B2 = (A @ A)[..., m:, m:], (B @ B)[..., m:, m:]
        fixed = (A11 - B11).square().sum((-2, -1))

        def loss(M: torch.Tensor) -> torch.Tensor:
            return ((A22 @ M - M @ B22).square().sum((-2, -1)) + (A21 - M @ B21).square().sum((-2, -1))
                    + (A12 @ M - B12).square().sum((-2, -1)) + fixed)

        def gradient(M: torch.Tensor) -> torch.Tensor:
            return 2.0 * (A2 @ M) - 4.0 * (A22 @ M @ B22) + 2.0 * (M @ B2) - 2.0 * linear
    else:
        sign = -1.0 if maximize else 1.0
        fixed = (A11 * B11).sum((-2, -1))

        def loss(M: torch.Tensor) -> torch.Tensor:
            quadratic = (A22 * (M @ B22 @ M.transpose(-1, -2))).sum((-2, -1))
            return sign * (quadratic + (linear * M).sum((-2, -1)) + fixed)

        def gradient(M: torch.Tensor) -> torch.Tensor:
            return sign * (A22 @ M @ B22.transpose(-1, -2) + A22.transpose(-1, -2) @ M @ B22 + linear)
    return loss, gradient


def solve_qap(A: torch.Tensor, B: torch.Tensor, config: SolverConfig, *, maximize: bool,
              seeds: int = 0, initial: torch.Tensor | None = None, generator: torch.Generator | None = None,
              dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
              show_progress: bool = False) -> OptimizeResult:
    """The batched solve behind ``"l12"`` and ``"relaxed"``: ``A``, ``B`` of shape ``(batch, n, n)``, checked by
    the caller, the first ``seeds`` nodes of ``A`` matched to the first of ``B`` (the variable is then ``(n - seeds,
    n - seeds)``). Returns :func:`aslib.solver.relaxation.solve_permutation`'s result, whose ``fun`` is the relaxed
    loss of the module docstring at the rounded permutation (maximising symmetric matrices: the edge disagreement
    ``||A P - P B||_F^2``, with 0 as the certificate)."""
    dev = resolve_device(device)
    frobenius = maximize and bool(torch.equal(A, A.transpose(-1, -2)) and torch.equal(B, B.transpose(-1, -2)))
    A4, B4 = A.to(dev, dtype).unsqueeze(1), B.to(dev, dtype).unsqueeze(1)
    loss, gradient = _relaxed_loss(A4, B4, maximize, frobenius, seeds)
    # |gradient entries| <= its spectral norm <= these bounds on D_n (||M||_2 = 1 for doubly stochastic M; with
    # seeds the gradient is a block of the full one at diag(I, M))
    norm_a, norm_b = (torch.linalg.matrix_norm(X.to(torch.float64), 2) for X in (A, B))
    bound = 2.0 * (norm_a + norm_b).square() if frobenius else 2.0 * norm_a * norm_b
    return solve_permutation(loss, A.shape[0], A.shape[-1] - seeds, config, gradient=gradient,
                             select=lambda index: _relaxed_loss(A4[index], B4[index], maximize, frobenius, seeds),
                             step_scale=(1.0 / bound.clamp_min(1e-300)).to(dev),
                             lower_bound=0.0 if frobenius else None, initial=initial, generator=generator,
                             dtype=dtype, device=dev, show_progress=show_progress)


def _stage_history(runs: list[tuple[OptimizeResult, int]], name: str) -> torch.Tensor:
    """``(records, batch)``: the history ``name`` of each instance's chosen ``(result, index)``, an instance
    with fewer records held at its last one (as the solver holds an instance that has ended)."""
    columns = [solved[name][:, k] for solved, k in runs]
    records = max(len(c) for c in columns)
    return torch.stack([torch.cat([c, c[-1:].expand(records - len(c))]) for c in columns], 1)


def solve_staged(A: torch.Tensor, B: torch.Tensor, config: SolverConfig, quick: QuickStages, *,
                 maximize: bool, initial: torch.Tensor, seeds: int = 0, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
                 show_progress: bool = False) -> OptimizeResult:
    """The one solve of the penalty methods, behind :func:`quadratic_assignment` and
    :func:`aslib.examples.graph_matching.match_graphs`: ``A``, ``B`` float64 ``(batch, n, n)`` (the first ``seeds``
    nodes matched, see :func:`solve_qap`), ``initial (batch, restarts, n', n')``. The quick stages (``quick``:
    a :class:`QuickStage`, a sequence of them or None) run in turn, then ``config``, each from the same starts on
    the instances that no stage before certified or saw agree; each instance keeps the stage of best objective
    ``tr(A^T P B P^T)`` (the first on ties).

    Returns :func:`solve_qap`'s fields for each instance's chosen stage (``col_ind (batch, n')``, ``fun``, ``M``,
    ``starts_*``, ``certified``, ``agreed``, ``settled``, the histories), ``objective (batch,)`` its objective,
    ``stages (batch,)`` the stages it ran and ``nit`` the steps of all stages."""
    stages = [replace(config, step=q.step, iters=q.iters) for q in quick_stages(quick)] + [config]
    a, b = A.numpy(), B.numpy()
    batch, fixed = A.shape[0], np.arange(seeds)
    chosen: list[tuple[OptimizeResult, int] | None] = [None] * batch
    best = np.zeros(batch)
    stages_run, nit = np.zeros(batch, dtype=np.int64), 0
    active = torch.arange(batch)
    for stage in stages:
        solved = solve_qap(A[active], B[active], stage, maximize=maximize, seeds=seeds, initial=initial[active],
                           generator=generator, dtype=dtype, device=device, show_progress=show_progress)
        nit += solved.nit
        for k, i in enumerate(active.tolist()):
            stages_run[i] += 1
            fun = objective(a[i], b[i], np.concatenate([fixed, seeds + solved.col_ind[k].cpu().numpy()]))
            if chosen[i] is None or ((fun > best[i]) if maximize else (fun < best[i])):
                chosen[i], best[i] = (solved, k), fun
        active = active[~(solved.certified | solved.agreed).cpu()]
        if not len(active):
            break
    runs = [run for run in chosen if run is not None]
    fields = {name: torch.stack([solved[name][k] for solved, k in runs])
              for name in ("col_ind", "fun", "M", "starts_col_ind", "starts_fun", "starts_M", "certified",
                           "agreed", "settled")}
    return OptimizeResult(fields, objective=best, stages=stages_run, nit=nit,
                          loss_history=_stage_history(runs, "loss_history"),
                          penalty_history=_stage_history(runs, "penalty_history"))


def _forced(A: np.ndarray, B: np.ndarray, seeds: np.ndarray, restarts: int, start_time: float) -> OptimizeResult:
    """The answer when at most one node is free (``n = 0``, or ``partial_match`` fixes ``n - 1`` or ``n`` pairs),
    with scipy's ``nit``: 0 when nothing is free, 1 when the one free node is matched."""
    n = len(A)
    order_a, order_b = node_orders(n, seeds, False, torch.Generator())
    col_ind = np.zeros(n, dtype=np.int64)
    col_ind[order_a] = order_b
    fun = objective(A, B, col_ind)
    return OptimizeResult(col_ind=col_ind, fun=fun, unpolished_fun=fun, nit=n - len(seeds), M=np.eye(n)[col_ind],
                          certified=True, agreed=True, settled=0, restarts=restarts, stages=0,
                          seconds=time.perf_counter() - start_time)


def _solve_penalised(A: torch.Tensor, B: torch.Tensor, config: SolverConfig, quick: QuickStages, *,
                     maximize: bool, P0: Any, rng: Any, partial_match: Any, partial_guess: Any, shuffle_input: bool,
                     device: str | torch.device, dtype: torch.dtype, polish: bool | str,
                     start_time: float) -> OptimizeResult:
    """What ``"l12"`` and ``"relaxed"`` share: the fixed pairs and the start checked, :func:`solve_staged` on the
    free nodes, then the polish; the result of :func:`quadratic_assignment` for the penalty methods."""
    n, a, b = A.shape[0], A.numpy(), B.numpy()
    seeds, guess = check_pairs(partial_match, n, "partial_match"), check_pairs(partial_guess, n, "partial_guess")
    m = len(seeds)
    start = check_start(P0, n - m)
    if start is not None and len(guess):
        raise ValueError("give P0 as a matrix or partial_guess, not both (each sets the first start)")
    generator = torch_generator(rng)
    if n - m <= 1:
        return _forced(a, b, seeds, config.restarts, start_time)
    order_a, order_b = node_orders(n, seeds, bool(shuffle_input), generator)
    relabelled = m > 0 or bool(shuffle_input)
    columns = np.argsort(order_b[m:])  # the solve's free columns in increasing node order (scipy's P0)
    if start is not None:
        start = start[:, columns.argsort()]
    elif len(guess):
        start = guess_start(guess, order_a, order_b, m)
    initial = penalty_starts(config, P0, start, n - m, generator, dtype)
    As, Bs = (A[order_a][:, order_a], B[order_b][:, order_b]) if relabelled else (A, B)
    solved = solve_staged(As[None], Bs[None], config, quick, maximize=maximize, initial=initial, seeds=m,
                          generator=generator, dtype=dtype, device=device)
    free = solved.col_ind[0].cpu().numpy()
    col_ind = np.concatenate([np.arange(m), m + free]) if relabelled else free
    if relabelled:
        col_ind = order_b[col_ind][np.argsort(order_a)]
    unpolished = objective(a, b, col_ind)
    if polish and not bool(solved.certified[0]):  # a certified answer is optimal: nothing to polish
        starts = polish_starts(solved, columns) if polish == "faq" else np.zeros(0)
        col_ind = polish_answer(polish, a, b, col_ind, maximize, seeds, starts)
    M = solved.M[0].cpu().numpy()
    if relabelled:  # M in the caller's labels, 1 at each fixed pair
        free_M, M = M, np.zeros((n, n), dtype=M.dtype)
        M[np.ix_(order_a[m:], order_b[m:])] = free_M
        M[seeds[:, 0], seeds[:, 1]] = 1.0
    return OptimizeResult(col_ind=col_ind, fun=objective(a, b, col_ind), unpolished_fun=unpolished,
                          nit=solved.nit, M=M, certified=bool(solved.certified[0]), agreed=bool(solved.agreed[0]),
                          settled=int(solved.settled[0]), restarts=config.restarts, stages=int(solved.stages[0]),
                          seconds=time.perf_counter() - start_time)


def _quadratic_assignment_l12(A: torch.Tensor, B: torch.Tensor, *, maximize: bool = False, P0: Any = "barycenter",
                              rng: Any = None, partial_match: Any = None, partial_guess: Any = None,
                              shuffle_input: bool = False, maxiter: int | None = None, tol: float | None = None,
                              restarts: int | None = None, lam: float | None = None, penalty: str | None = None,
                              device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                              polish: bool | str | None = None,
                              quick_stage: QuickStages = QUICK_STAGES) -> OptimizeResult:
    """The penalty method (options: :func:`quadratic_assignment`); options left None keep :func:`default_qap_config`'s
    values. Maximising, ``quick_stage`` runs first unless it is None or ``maxiter`` is given (one solve then)."""
    start_time = time.perf_counter()
    polish = check_polish(default_polish(bool(maximize), A, B) if polish is None else polish)
    maxiter = check_maxiter(maxiter)
    config = replace_given(default_qap_config(bool(maximize), True, polish), iters=maxiter, settle_tol=check_tol(tol),
                           restarts=restarts, lam=lam, penalty=penalty)
    quick = quick_stages(quick_stage) if maximize and maxiter is None else None
    return _solve_penalised(A, B, config, quick, maximize=bool(maximize), P0=P0, rng=rng, partial_match=partial_match,
                            partial_guess=partial_guess, shuffle_input=shuffle_input, device=device, dtype=dtype,
                            polish=polish, start_time=start_time)


def _quadratic_assignment_relaxed(A: torch.Tensor, B: torch.Tensor, *, maximize: bool = False,
                                  P0: Any = "barycenter", rng: Any = None, partial_match: Any = None,
                                  partial_guess: Any = None, shuffle_input: bool = False,
                                  maxiter: int | None = None, tol: float | None = None, restarts: int | None = None,
                                  device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                                  polish: bool | str = False) -> OptimizeResult:
    """The relaxation: ``"l12"`` with ``lam = 0`` and no quick stage (options: :func:`quadratic_assignment`)."""
    start_time = time.perf_counter()
    polish = check_polish(polish)
    config = replace_given(default_qap_config(bool(maximize), False, polish), iters=check_maxiter(maxiter),
                           settle_tol=check_tol(tol), restarts=restarts)
    return _solve_penalised(A, B, config, None, maximize=bool(maximize), P0=P0, rng=rng, partial_match=partial_match,
                            partial_guess=partial_guess, shuffle_input=shuffle_input, device=device, dtype=dtype,
                            polish=polish, start_time=start_time)


#: ``_METHODS[method](A, B, **options)``, as scipy dispatches; each function's keyword arguments are its options.
_METHODS: dict[str, Callable[..., OptimizeResult]] = {
    "l12": _quadratic_assignment_l12, "relaxed": _quadratic_assignment_relaxed,
    "faq": quadratic_assignment_faq, "2opt": quadratic_assignment_2opt,
}
QAP_METHODS: tuple[str, ...] = tuple(_METHODS)


def _accepted_options(method: str) -> list[str]:
    """The options ``method`` takes: the keyword-only arguments of its function, sorted."""
    parameters = inspect.signature(_METHODS[method]).parameters.values()
    return sorted(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def quadratic_assignment(A: Any, B: Any, method: str = "l12", options: dict[str, Any] | None = None) -> OptimizeResult:
    """Solve ``min`` (or ``max``) over permutations of ``tr(A^T P B P^T)``, as ``scipy.optimize.quadratic_assignment``.

    Args:
        A, B: square real matrices of the same shape ``(n, n)`` (``n = 0`` allowed), numpy arrays, lists or torch
            tensors of booleans, integers or floats; weighted, asymmetric, of any sign and scale.
        method: one of :data:`QAP_METHODS`: ``"l12"`` (the penalty method), ``"relaxed"`` (no penalty),
            ``"faq"`` or ``"2opt"`` (scipy's).
        options: the keyword arguments of the method's function; others are warned about (``OptimizeWarning``)
            and ignored. scipy's, with scipy's meaning: ``maximize``, ``rng`` (None, an int, a numpy ``Generator``
            or ``RandomState``, or a ``torch.Generator``), ``partial_match`` (fixed pairs ``(m, 2)``),
            ``P0`` (``"barycenter"``: random starts near ``J/n``; ``"randomized"``; or a doubly stochastic
            ``(n - m, n - m)`` matrix, the first start), ``partial_guess`` (pairs making the first start),
            ``shuffle_input`` (the free nodes of ``B`` relabelled at random, so ties break at random),
            ``maxiter`` (mirror steps per start), ``tol`` (the penalty below which a start whose rounding is
            unchanged is settled, so ``sum |M - R| <= 2 tol``). Ours: ``restarts`` (random starts; for scipy's
            methods the number of calls, the best kept, FAQ's later ones from ``P0="randomized"``), ``lam`` and
            ``penalty`` (``"l12"``: final penalty weight, and the penalty by name,
            :data:`aslib.core.penalties.PENALTIES`, default the l1-2), ``device`` and ``dtype`` (float64 by default; the starts are
            drawn in float64 for both), ``polish`` (inside the call; ``"2opt"``: scipy's 2-opt from the rounded
            answer; ``True`` or ``"faq"``: scipy's FAQ from the relaxed matrices of the :data:`FAQ_POLISH_STARTS`
            starts of smallest rounded loss, the best kept, then 2-opt; minimising, it also changes the solve,
            see :func:`default_qap_config`; skipped after a certificate; ``"l12"``'s default: :func:`default_polish`),
            ``quick_stage`` (``"l12"``, maximising: a :class:`QuickStage` or a sequence of them run first, default
            :data:`QUICK_STAGES`; None: none; ignored when ``maxiter`` is given).

    Returns:
        ``OptimizeResult`` with ``col_ind`` (``P[i, col_ind[i]] = 1``), ``fun`` (``tr(A^T P B P^T)``), ``nit``;
        the penalty methods add ``M`` (the best start's relaxed matrix, ``(n, n)``, 1 at fixed pairs),
        ``certified`` (an exact match was found: optimal), ``agreed``, ``settled`` (starts settled),
        ``restarts``, ``stages`` (the stages run: maximising ``"l12"``, quick stages and the full one),
        ``seconds`` and ``unpolished_fun``. At most one free node (``n = 0``, or ``m >= n - 1``): the forced
        answer, with scipy's ``nit`` (0, or 1 for the one free node).

    Raises:
        ValueError: as scipy (non-square or mismatched matrices, a bad ``partial_match``, ``P0``, ``tol``), NaN or
            inf, an unknown method. TypeError: a non-integer ``maxiter``, as scipy.
    """
    A, B = check_matrices(A, B)
    key = method.lower() if isinstance(method, str) else method
    if key not in _METHODS:
        raise ValueError(f"method {method!r} must be in {QAP_METHODS}")
    options = warn_unknown_options(key, dict(options or {}), _accepted_options(key))
    return _METHODS[key](A, B, **options)
