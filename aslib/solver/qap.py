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

``"relaxed"`` is the same with ``lam = 0``: the relaxation and a final rounding.

Maximising, ``"l12"`` runs a quick stage first (larger steps, fewer of them) and the full solve from the
same starts only where the quick stage neither certified its answer nor saw its starts agree
(:class:`QuickStage`, :func:`default_qap_config`).

``polish`` (an option of ``"l12"`` and ``"relaxed"``, inside the timed call, skipped when an exact match
certified the answer optimal): ``"2opt"`` runs scipy's 2-opt from the rounded answer; ``True`` (``"faq"``)
runs scipy's FAQ from the relaxed matrices of the best starts, keeps the best answer (the rounding
included) and runs 2-opt from it; minimising, the solve before it is then a short one with more starts,
a start generator for FAQ. An addition to the penalty method, reported separately from it in the benchmark.

Each method is one function ``_quadratic_assignment_<method>(A, B, **options)``, its keyword arguments its options;
:func:`quadratic_assignment` checks ``A`` and ``B``, refuses options a method does not take and dispatches. Prefer
(``benchmarks/qap_benchmark.py``, ``docs/tuning.md``) ``"l12"`` on graph matching with symmetries, ``"faq"`` where one
FAQ call is enough, ``"l12"`` with ``polish=True`` on minimised flow x distance problems, ``"2opt"`` to polish.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.optimize
import torch
from scipy.optimize import OptimizeResult

from aslib.core.checks import as_generator, check_positive_int
from aslib.core.penalty import ROUNDING_THRESHOLD, check_square, random_doubly_stochastic
from aslib.utils.runtime import resolve_device
from aslib.solver.relaxation import SolverConfig, random_starts, replace_given, solve_permutation

__all__ = ["FAQ_POLISH_STARTS", "POLISH_METHODS", "QAP_METHODS", "QuickStage", "default_qap_config",
           "quadratic_assignment", "solve_qap"]


@dataclass(frozen=True)
class QuickStage:
    """The first stage of maximising ``"l12"``: the full config with ``step`` and ``iters`` changed; the full solve
    runs, from the same starts, only where it ends with neither a certificate nor agreeing starts (the better kept)."""

    step: float = 2.0
    iters: int = 225


def default_qap_config(maximize: bool, penalised: bool = True, polish: bool | str = False) -> SolverConfig:
    """Our settings of the ``"l12"`` solve (``penalised=False``: the same with ``lam = 0``, ``"relaxed"``;
    ``polish``: the option of that name, which changes the minimising settings, see the end). How they were
    chosen: ``docs/tuning.md``.

    Always: one Sinkhorn sweep per mirror step, ``lam`` ramped geometrically over 80% of the steps, a start
    settled once ``P(M) <= 0.05`` (then ``sum |M - R| <= 0.1``) with its rounding unchanged over 10 steps.

    * Maximising: 8 random starts near ``J/n`` (``init_noise = 1``), at most 450 steps of ``eta = 1``,
      ``lam`` from 0.03 to 1; ``"l12"`` first runs a :class:`QuickStage` (``eta = 2``, at most 225 steps, the
      ramp over 180) from the same starts.
    * Minimising: 8 far spread starts (``init_noise = 100``), at most 300 steps of ``eta = 0.3``, ``lam`` from
      0.003 to 0.3.
    * Minimising with ``polish=True`` or ``"faq"``, the solve only generates starts for FAQ: 24 starts near
      ``J/n`` (``init_noise = 1``), 20 steps of ``eta = 1`` (the same ``lam`` ramp, over 16 steps)."""
    lam = (1.0 if maximize else 0.3) if penalised else 0.0
    config = SolverConfig(parameterisation="mirror", iters=450 if maximize else 300, step=1.0 if maximize else 0.3,
                          lam=lam, lam_start=0.03 if maximize else 0.01, ramp=0.8, sweeps=1, restarts=8,
                          init_noise=1.0 if maximize else 100.0, settle_tol=0.05, check_every=10, record_every=10)
    if not maximize and (polish is True or polish == "faq"):
        config = replace(config, iters=20, restarts=24, step=1.0, init_noise=1.0)
    return config


def _relaxed_loss(A: torch.Tensor, B: torch.Tensor, maximize: bool, frobenius: bool) -> tuple[
        Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """The relaxed loss of the module docstring and its gradient, for ``A``, ``B`` of shape ``(batch, 1, n, n)``.

    The gradient is written as two matrix products per step, each batched over the starts:

    * symmetric ``A``, ``B`` (``frobenius``): ``grad ||A M - M B||^2 = 2 A^2 M - 4 A M B + 2 M B^2
      = [2 A^2 | -4 A] [M ; M B] + M (2 B^2)``, with ``M [B | 2 B^2]`` the first product;
    * otherwise: ``grad s tr(A^T M B M^T) = s (A M B^T + A^T M B) = [s A | s A^T] [M B^T ; M B]``, with
      ``M [B^T | B]`` the first product.

    Half the products of the direct form (``R = A M - M B``, then ``A^T R - R B^T``; ``docs/tuning.md``).
    """
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


def solve_qap(A: torch.Tensor, B: torch.Tensor, config: SolverConfig, *, maximize: bool,
              initial: torch.Tensor | None = None, generator: torch.Generator | None = None,
              dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
              show_progress: bool = False) -> OptimizeResult:
    """The batched solve behind ``"l12"`` and ``"relaxed"``: ``A``, ``B`` of shape ``(batch, n, n)``, checked by
    the caller. Returns :func:`aslib.solver.relaxation.solve_permutation`'s result, whose ``fun`` is the relaxed loss of
    the module docstring at the rounded permutation (maximising symmetric matrices: the edge disagreement
    ``||A P - P B||_F^2``, with 0 as the certificate)."""
    dev = resolve_device(device)
    frobenius = maximize and bool(torch.equal(A, A.transpose(-1, -2)) and torch.equal(B, B.transpose(-1, -2)))
    A4, B4 = A.to(dev, dtype).unsqueeze(1), B.to(dev, dtype).unsqueeze(1)
    loss, gradient = _relaxed_loss(A4, B4, maximize, frobenius)
    # |gradient entries| <= its spectral norm <= these bounds on D_n (||M||_2 = 1 for doubly stochastic M)
    norm_a, norm_b = (torch.linalg.matrix_norm(X.to(torch.float64), 2) for X in (A, B))
    bound = 2.0 * (norm_a + norm_b).square() if frobenius else 2.0 * norm_a * norm_b
    return solve_permutation(loss, A.shape[0], A.shape[-1], config, gradient=gradient,
                             select=lambda index: _relaxed_loss(A4[index], B4[index], maximize, frobenius),
                             step_scale=(1.0 / bound.clamp_min(1e-300)).to(dev),
                             lower_bound=0.0 if frobenius else None, initial=initial, generator=generator,
                             dtype=dtype, device=dev, show_progress=show_progress)


def _as_matrix(X: Any, name: str) -> torch.Tensor:
    """A numpy array or torch tensor as a float64 CPU tensor of shape ``(n, n)``, or a ``ValueError``."""
    dtype = X.dtype if isinstance(X, torch.Tensor) else np.asarray(X).dtype
    if isinstance(X, torch.Tensor):
        kind = "c" if X.is_complex() else "b" if X.dtype == torch.bool else "f"
    else:
        kind = dtype.kind
    if kind not in "iuf":
        raise ValueError(f"{name} must hold real numbers (integer or float), got {dtype}")
    X = (X.detach().cpu() if isinstance(X, torch.Tensor) else torch.from_numpy(np.asarray(X))).to(torch.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a square matrix (n, n), got shape {tuple(X.shape)}")
    check_square(X, name)
    return X


def _objective(A: np.ndarray, B: np.ndarray, col_ind: np.ndarray) -> float:
    """scipy's ``fun``: ``tr(A^T P B P^T) = sum_ij A_ij B_{col[i], col[j]}``."""
    return float((A * B[np.ix_(col_ind, col_ind)]).sum())


def _two_opt(A: np.ndarray, B: np.ndarray, col_ind: np.ndarray, maximize: bool) -> np.ndarray:
    """scipy's 2-opt local search started from the permutation ``col_ind`` (passed as a full
    ``partial_guess``, so nothing in it is random): pairs of assignments are swapped while a swap improves
    ``tr(A^T P B P^T)``. The answer is a 2-opt local optimum no worse than ``col_ind``."""
    guess = np.column_stack([np.arange(len(col_ind)), col_ind])
    result = scipy.optimize.quadratic_assignment(A, B, method="2opt",
                                                 options={"maximize": maximize, "partial_guess": guess,
                                                          "rng": np.random.default_rng(0)})  # unused: no draw
    return np.asarray(result.col_ind)


#: ``polish`` values of ``"l12"`` and ``"relaxed"`` (``True`` is ``"faq"``): what runs after the solve.
POLISH_METHODS: tuple[str, ...] = ("2opt", "faq")

#: FAQ calls of the ``"faq"`` polish: from the relaxed matrices of this many starts, those of smallest rounded loss.
FAQ_POLISH_STARTS = 12

#: Weight of ``J/n`` mixed into a start's relaxed matrix before it is handed to FAQ (see :func:`_doubly_stochastic`).
_FAQ_START_MIX = 1e-3


def _doubly_stochastic(M: np.ndarray) -> np.ndarray:
    """``M`` (near ``D_n``, nonnegative) made doubly stochastic to rounding error, as scipy's FAQ checks its ``P0``:
    ``(1 - a) M + a J/n`` with ``a = 1e-3`` (entries ``>= a/n``, so Sinkhorn converges fast even at a near-vertex
    ``M``), 20 row/column sweeps ending on the rows, then the rank-one correction ``M += 1 r^T / n``,
    ``r = 1 - column sums``, which leaves the row sums (``sum_j r_j = 0`` for a row-stochastic ``M``) and sets every
    column sum to 1. Falls back to the row-wise rounding's permutation matrix if an entry would turn negative."""
    n = M.shape[0]
    X = (1.0 - _FAQ_START_MIX) * np.clip(M, 0.0, None) + _FAQ_START_MIX / n
    for _ in range(20):
        X /= X.sum(0, keepdims=True)
        X /= X.sum(1, keepdims=True)
    X += (1.0 - X.sum(0, keepdims=True)) / n
    if (X < 0).any():
        return np.eye(n)[scipy.optimize.linear_sum_assignment(-M)[1]]
    return X


def _faq_polish(A: np.ndarray, B: np.ndarray, col_ind: np.ndarray, starts: np.ndarray,
                maximize: bool) -> np.ndarray:
    """The ``"faq"`` polish: scipy's FAQ from each relaxed matrix in ``starts (k, n, n)`` (made doubly
    stochastic by :func:`_doubly_stochastic`), the best of its answers and ``col_ind`` kept, then 2-opt from it
    (:func:`_two_opt`). Nothing is random; the answer is a 2-opt local optimum no worse than ``col_ind``."""
    best, best_fun = col_ind, _objective(A, B, col_ind)
    for M in starts:
        result = scipy.optimize.quadratic_assignment(A, B, method="faq",
                                                     options={"maximize": maximize, "P0": _doubly_stochastic(M),
                                                              "rng": np.random.default_rng(0)})  # no draw from P0
        if (result.fun > best_fun) if maximize else (result.fun < best_fun):
            best, best_fun = np.asarray(result.col_ind), float(result.fun)
    return _two_opt(A, B, best, maximize)


def _polish_starts(solved: OptimizeResult, count: int = FAQ_POLISH_STARTS) -> np.ndarray:
    """The relaxed matrices ``(k, n, n)`` of the ``k = min(count, restarts)`` starts of smallest rounded loss
    (ties: in start order) of the first instance of :func:`solve_qap`'s result."""
    M, fun = solved.starts_M[0].cpu().double().numpy(), solved.starts_fun[0].cpu().double().numpy()
    return M[np.argsort(fun, kind="stable")[:count]]


def _check_polish(polish: bool | str) -> bool | str:
    """``polish`` checked, ``True`` read as ``"faq"``."""
    if not (isinstance(polish, bool) or (isinstance(polish, str) and polish in POLISH_METHODS)):
        raise ValueError(f"polish must be True, False or one of {POLISH_METHODS}, got {polish!r}")
    return "faq" if polish is True else polish


def _check_tol(tol: float | None) -> None:
    if tol is not None and not (isinstance(tol, (int, float)) and 0 < tol < ROUNDING_THRESHOLD):
        raise ValueError(f"tol must lie in (0, {ROUNDING_THRESHOLD:.4f}) (below it the error bound holds), got {tol!r}")


def _check_start(P0: Any, A: torch.Tensor) -> torch.Tensor | None:
    """``P0``: ``"barycenter"`` or ``"randomized"`` (None returned) or a doubly stochastic matrix like ``A``."""
    if isinstance(P0, str):
        if P0 not in ("barycenter", "randomized"):
            raise ValueError(f"P0 must be 'barycenter', 'randomized' or a matrix, got {P0!r}")
        return None
    start = _as_matrix(P0, "P0")
    ones = torch.ones(A.shape[-1], dtype=torch.float64)
    if start.shape != A.shape or bool((start < 0).any()) or not (
            torch.allclose(start.sum(0), ones, atol=1e-6) and torch.allclose(start.sum(1), ones, atol=1e-6)):
        raise ValueError(f"P0 must be a doubly stochastic matrix of shape {tuple(A.shape)}")
    return start


def _penalty_starts(config: SolverConfig, P0: Any, start: torch.Tensor | None, n: int,
                    generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """The ``(1, restarts, n, n)`` starts shared by every stage: drawn as :func:`random_starts` draws them
    (``P0="randomized"``: uniform random doubly stochastic matrices), the caller's ``start`` first."""
    shape = (1, config.restarts, n, n)
    if isinstance(P0, str) and P0 == "randomized":
        return random_doubly_stochastic(n, shape[:2], generator=generator).to(dtype)
    initial = random_starts(config, shape, generator, dtype)
    if start is not None:
        initial[0, 0] = start.clamp_min(1e-6).to(dtype)
    return initial


def _solve_penalised(A: torch.Tensor, B: torch.Tensor, config: SolverConfig, quick: QuickStage | None, *,
                     maximize: bool, P0: Any, rng: Any, device: str | torch.device, dtype: torch.dtype,
                     polish: bool | str, start_time: float) -> OptimizeResult:
    """What ``"l12"`` and ``"relaxed"`` share: the solve by ``config`` (after the ``quick`` stage where it is
    given), then the polish; the result of :func:`quadratic_assignment` for the penalty methods."""
    generator = as_generator(int(rng.integers(2**31)) if isinstance(rng, np.random.Generator) else rng)
    start = _check_start(P0, A)
    initial = _penalty_starts(config, P0, start, A.shape[-1], generator, dtype)
    stages = [config] if quick is None else [replace(config, step=quick.step, iters=quick.iters), config]
    a, b = A.numpy(), B.numpy()
    best, best_fun, nit, stages_run = None, None, 0, 0
    for stage in stages:
        stages_run += 1
        solved = solve_qap(A[None], B[None], stage, maximize=maximize, initial=initial, generator=generator,
                           dtype=dtype, device=device)
        nit += solved.nit
        fun = _objective(a, b, solved.col_ind[0].cpu().numpy())
        if best is None or ((fun > best_fun) if maximize else (fun < best_fun)):
            best, best_fun = solved, fun
        if bool(solved.certified[0] or solved.agreed[0]):
            break
    solved, unpolished = best, best_fun
    col_ind = solved.col_ind[0].cpu().numpy()
    if polish and not bool(solved.certified[0]):  # a certified answer is optimal: nothing to polish
        col_ind = (_two_opt(a, b, col_ind, maximize) if polish == "2opt" else
                   _faq_polish(a, b, col_ind, _polish_starts(solved), maximize))
    return OptimizeResult(col_ind=col_ind, fun=_objective(a, b, col_ind), unpolished_fun=unpolished,
                          nit=nit, M=solved.M[0].cpu().numpy(), certified=bool(solved.certified[0]),
                          agreed=bool(solved.agreed[0]), settled=int(solved.settled[0]),
                          restarts=config.restarts, stages=stages_run, seconds=time.perf_counter() - start_time)


def _quadratic_assignment_l12(A: torch.Tensor, B: torch.Tensor, *, maximize: bool = False, P0: Any = "barycenter",
                              rng: Any = None, maxiter: int | None = None, tol: float | None = None,
                              restarts: int | None = None, lam: float | None = None, penalty: str | None = None,
                              device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                              polish: bool | str = False,
                              quick_stage: QuickStage | None = QuickStage()) -> OptimizeResult:
    """The penalty method (options: :func:`quadratic_assignment`); options left None keep :func:`default_qap_config`'s
    values. Maximising, ``quick_stage`` runs first unless it is None or ``maxiter`` is given (one solve then)."""
    start_time = time.perf_counter()
    polish = _check_polish(polish)
    _check_tol(tol)
    config = replace_given(default_qap_config(bool(maximize), True, polish), iters=maxiter, settle_tol=tol,
                           restarts=restarts, lam=lam, penalty=penalty)
    if quick_stage is not None and not isinstance(quick_stage, QuickStage):
        raise ValueError(f"quick_stage must be a QuickStage or None, got {quick_stage!r}")
    quick = quick_stage if maximize and maxiter is None else None
    return _solve_penalised(A, B, config, quick, maximize=bool(maximize), P0=P0, rng=rng, device=device,
                            dtype=dtype, polish=polish, start_time=start_time)


def _quadratic_assignment_relaxed(A: torch.Tensor, B: torch.Tensor, *, maximize: bool = False,
                                  P0: Any = "barycenter", rng: Any = None, maxiter: int | None = None,
                                  tol: float | None = None, restarts: int | None = None,
                                  device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                                  polish: bool | str = False) -> OptimizeResult:
    """The relaxation: ``"l12"`` with ``lam = 0`` and no quick stage (options: :func:`quadratic_assignment`)."""
    start_time = time.perf_counter()
    polish = _check_polish(polish)
    _check_tol(tol)
    config = replace_given(default_qap_config(bool(maximize), False, polish), iters=maxiter, settle_tol=tol,
                           restarts=restarts)
    return _solve_penalised(A, B, config, None, maximize=bool(maximize), P0=P0, rng=rng, device=device,
                            dtype=dtype, polish=polish, start_time=start_time)


def _best_of_scipy(method: str, A: torch.Tensor, B: torch.Tensor, restarts: int, rng: Any, P0: Any | None,
                   options: dict[str, Any]) -> OptimizeResult:
    """``restarts`` calls of scipy's ``method`` with ``options``, drawing from one generator seeded by ``rng``,
    the best answer kept, its ``nit`` the sum over the calls; FAQ's first call from ``P0``, the others from
    ``"randomized"`` (``P0`` None: 2-opt, which has no such option)."""
    restarts = check_positive_int(restarts, "restarts")
    rng = np.random.default_rng(rng)
    a, b = A.numpy(), B.numpy()
    best, nit = None, 0
    for r in range(restarts):
        start = {} if P0 is None else {"P0": P0 if r == 0 else "randomized"}
        res = scipy.optimize.quadratic_assignment(a, b, method=method, options=dict(options, rng=rng, **start))
        nit += int(res.nit)
        if best is None or (res.fun > best.fun if options["maximize"] else res.fun < best.fun):
            best = res
    best.nit, best.restarts = nit, restarts
    return best


def _quadratic_assignment_faq(A: torch.Tensor, B: torch.Tensor, *, maximize: bool = False,
                              partial_match: Any = None, rng: Any = None, P0: Any = "barycenter",
                              shuffle_input: bool = False, maxiter: int = 30, tol: float = 0.03,
                              restarts: int = 1) -> OptimizeResult:
    """scipy's FAQ with scipy's options and defaults, best of ``restarts`` calls (:func:`_best_of_scipy`);
    ``P0=None`` is the default start, ``"barycenter"``."""
    return _best_of_scipy("faq", A, B, restarts, rng, "barycenter" if P0 is None else P0, {
        "maximize": maximize, "partial_match": partial_match, "shuffle_input": shuffle_input, "maxiter": maxiter,
        "tol": tol})


def _quadratic_assignment_2opt(A: torch.Tensor, B: torch.Tensor, *, maximize: bool = False, rng: Any = None,
                               partial_match: Any = None, partial_guess: Any = None,
                               restarts: int = 1) -> OptimizeResult:
    """scipy's 2-opt with scipy's options and defaults, best of ``restarts`` calls (:func:`_best_of_scipy`)."""
    return _best_of_scipy("2opt", A, B, restarts, rng, None, {
        "maximize": maximize, "partial_match": partial_match, "partial_guess": partial_guess})


#: ``_METHODS[method](A, B, **options)``, as scipy dispatches; each function's keyword arguments are its options.
_METHODS: dict[str, Callable[..., OptimizeResult]] = {
    "l12": _quadratic_assignment_l12, "relaxed": _quadratic_assignment_relaxed,
    "faq": _quadratic_assignment_faq, "2opt": _quadratic_assignment_2opt,
}
QAP_METHODS: tuple[str, ...] = tuple(_METHODS)


def _accepted_options(method: str) -> list[str]:
    """The options ``method`` takes: the keyword-only arguments of its function, sorted."""
    parameters = inspect.signature(_METHODS[method]).parameters.values()
    return sorted(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _check_options(method: str, options: dict[str, Any]) -> None:
    """Refuse the options ``method`` does not take (scipy only warns about them), naming those it takes."""
    accepted = _accepted_options(method)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; it accepts {accepted}")


def quadratic_assignment(A: Any, B: Any, method: str = "l12", options: dict[str, Any] | None = None) -> OptimizeResult:
    """Solve ``min`` (or ``max``) over permutations of ``tr(A^T P B P^T)``, as ``scipy.optimize.quadratic_assignment``.

    Args:
        A, B: square real matrices of the same shape ``(n, n)``, numpy arrays or torch tensors, weighted,
            asymmetric, of any sign and scale.
        method: one of :data:`QAP_METHODS`: ``"l12"`` (the penalty method), ``"relaxed"`` (no penalty),
            ``"faq"`` or ``"2opt"`` (scipy's).
        options: the keyword arguments of the method's function. scipy's (``maximize``, ``P0``, ``rng``,
            ``maxiter``, ``tol``, and for scipy's methods any of theirs, with scipy's defaults) and ours:
            ``restarts`` (random starts; for scipy's methods the number of calls, the best kept, FAQ's later
            ones from ``P0="randomized"``), ``lam`` and ``penalty`` (``"l12"``: final penalty weight, and the penalty
            by name, :data:`aslib.core.penalties.PENALTIES`, default the l1-2), ``device`` and ``dtype``
            (where and in what precision the penalty method runs; float64 by default, the random starts drawn
            in float64 for both), ``polish`` (inside the call; ``"2opt"``: scipy's 2-opt from the rounded
            answer; ``True`` or ``"faq"``: scipy's FAQ from the relaxed matrices of the
            :data:`FAQ_POLISH_STARTS` starts of smallest rounded loss, the best answer kept, then 2-opt;
            minimising, it also changes the solve, see :func:`default_qap_config`; both are skipped after a
            certificate), ``quick_stage`` (``"l12"``, maximising: the :class:`QuickStage` run first, default
            ``QuickStage()``; None: none; ignored when ``maxiter`` is given). For ``"l12"`` and ``"relaxed"``:
            ``maxiter`` caps the mirror steps per start, ``tol`` is the penalty below which a start with an
            unchanged rounding is settled (so ``sum |M - R| <= 2 tol``), ``P0`` ``"barycenter"`` (random
            starts near ``J/n``), ``"randomized"`` or a doubly stochastic matrix (the first start).

    Returns:
        ``OptimizeResult`` with ``col_ind`` (``P[i, col_ind[i]] = 1``), ``fun`` (``tr(A^T P B P^T)``), ``nit``;
        the penalty methods add ``M`` (the best start's relaxed matrix), ``certified`` (an exact match was
        found: optimal), ``agreed`` (the starts agreed), ``settled`` (starts whose rounding settled), ``restarts``,
        ``stages`` (solves run: 2 when maximising ``"l12"``'s quick stage was followed by the full one; ``nit``
        counts the steps of both), ``seconds`` (the whole call, polish included) and ``unpolished_fun`` (the
        objective before the polish).

    Raises:
        ValueError: non-square or mismatched matrices, NaN or inf, an unknown method or option.
    """
    A, B = _as_matrix(A, "A"), _as_matrix(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"A and B must have the same shape, got {tuple(A.shape)} and {tuple(B.shape)}")
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {QAP_METHODS}")
    options = dict(options or {})
    _check_options(method, options)
    return _METHODS[method](A, B, **options)
