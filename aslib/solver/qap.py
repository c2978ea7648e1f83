r"""The quadratic assignment problem with scipy's interface: the l1-2 penalty method beside FAQ and 2-opt.

scipy's ``quadratic_assignment(A, B)`` minimises (or with ``maximize=True`` maximises)

.. math::
    \mathrm{fun}(P) = \mathrm{tr}(A^\top P B P^\top) = \sum_{ij} A_{ij} B_{\pi(i)\pi(j)}

over permutation matrices ``P`` (``P[i, col_ind[i]] = 1``). :func:`quadratic_assignment` takes the same
arguments and returns the same ``OptimizeResult``; ``method="faq"`` and ``"2opt"`` call scipy itself.

``"l12"`` relaxes ``P`` to ``M in D_n`` and runs the penalised mirror descent of :mod:`aslib.solver.relaxation` on a
relaxed loss that equals the objective up to a constant on permutations (``||A P||_F = ||A||_F`` and
``||P B||_F = ||B||_F`` there):

* maximising symmetric ``A`` and ``B`` (graph matching): ``f(M) = ||A M - M B||_F^2 = ||A||^2 + ||B||^2 -
  2 tr(A^T M B M^T)`` on ``Pi_n``, the paper's loss, convex on ``D_n``, zero exactly at an isomorphism (a
  certificate of optimality);
* otherwise: ``s tr(A^T M B M^T)`` itself (``s = -1`` when maximising; indefinite). The convex alternatives
  gave worse answers in our trials: ``||A M + M B||_F^2`` (minimising) gaps several times larger on flow x
  distance instances, ``||A M - M B||_F^2`` on asymmetric weighted matrices (maximising) fewer optima
  reached on brute-forced n = 6 instances.

``"relaxed"`` is the same with ``lam = 0``: the relaxation and a final rounding.

Maximising, ``"l12"`` runs a quick stage first (larger steps, fewer of them) and the full solve from the
same starts only where the quick stage neither certified its answer nor saw its starts agree
(:func:`default_qap_config`).

``polish`` (an option of ``"l12"`` and ``"relaxed"``, inside the timed call, skipped when an exact match
certified the answer optimal): ``"2opt"`` runs scipy's 2-opt from the rounded answer; ``True`` (``"faq"``)
runs scipy's FAQ from the relaxed matrices of the best starts, keeps the best answer (the rounding
included) and runs 2-opt from it; minimising, the solve before it is then a short one with more starts,
a start generator for FAQ. An addition to the penalty method, reported separately from it in the benchmark.

When to prefer which (measured by ``benchmarks/qap_benchmark.py``, one instance at a time on a CPU, one thread; its
latest figures are in ``benchmarks/results/qap_benchmark_cpu.txt``): on graph matching with symmetries the penalty
(``"l12"``) finds what FAQ and 2-opt miss in the same time: an isomorphism on random 3-regular graphs, grids and
cycles, where FAQ given as many restarts as fit in l12's time finds fewer (on the regular graphs and cycles, almost
none), and every planted matching of noisy Erdos-Renyi graphs where FAQ in that time recovers most vertices but not
all. But on a CPU one l12 solve costs tens of FAQ calls, so where one FAQ call is good enough (planted weighted
problems) use FAQ. On weighted facility-layout style problems (nonnegative flow x distance, minimised) l12 alone is
worse than FAQ with restarts, but with ``polish=True`` its mean gap is smaller than FAQ's in the same time.
``"2opt"`` from random starts was the weakest everywhere; use it to polish an answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.optimize
import torch
from scipy.optimize import OptimizeResult

from aslib.core.checks import as_generator, check_positive_int
from aslib.core.penalty import ROUNDING_THRESHOLD, check_square, random_doubly_stochastic
from aslib.utils.runtime import resolve_device
from aslib.solver.relaxation import SolverConfig, random_starts, solve_permutation

__all__ = ["POLISH_METHODS", "QAP_METHODS", "default_qap_config", "quadratic_assignment", "solve_qap"]

QAP_METHODS: tuple[str, ...] = ("l12", "relaxed", "faq", "2opt")


def default_qap_config(maximize: bool, penalised: bool = True, polish: bool | str = False) -> SolverConfig:
    """Our settings of the ``"l12"`` solve (``penalised=False``: the same with ``lam = 0``, ``"relaxed"``;
    ``polish``: the option of that name, which changes the minimising settings, see the end).

    One Sinkhorn sweep per mirror step, ``lam`` ramped geometrically over 80% of the steps, a start settled
    once ``P(M) <= 0.05`` (then ``sum |M - R| <= 0.1``) with its rounding unchanged over 10 steps.
    Maximising (chosen on 3-regular graphs n = 30 and noisy Erdos-Renyi graphs n = 50, seeds 0 and 1 of
    ``benchmarks/qap_benchmark.py``): 8 random starts near ``J/n`` (``init_noise = 1``), at most 450
    steps of ``eta = 1``, ``lam`` from 0.03 to 1 (a final 0.3 left noisy instances inside ``D_n``, far from
    a vertex; starting at 0.03 rather than 0.003 found an isomorphism on 18 of 20 regular graphs against
    17, in 202 and 239 steps on average against 316 and 295). Minimising: at most 300 steps of ``eta = 0.3``, ``lam``
    from 0.003 to 0.3, 8 far spread starts (``init_noise = 100``), which reached the optimum of 5 of 6
    brute-forced n = 6 instances against 3 of 6 for starts near ``J/n`` (local optima of the trace attract
    nearby starts alike). 32 starts x 100 steps of ``eta = 1`` gave a smaller gap on 8 flow x distance
    instances n = 30 (1.6% against 2.2% to the best of 60 FAQ calls, in about the same time) but with 16
    starts missed the optimum of a brute-forced n = 6 instance by 16%, so it is not the default.

    Maximising, ``"l12"`` first runs a quick stage (:data:`QUICK_STAGE`: ``eta = 2``, at most 225 steps, the
    ramp over 180) from the same starts, and the settings above only where it ends with neither a
    certificate nor agreeing starts; the better answer is kept, so a stage that fails costs time, not
    accuracy. Chosen among ``eta`` 2 or 3 and 100 to 225 steps on 3-regular graphs n = 30 (seed 0: 10
    instances, seeds 1 and 2: 20 each, as in the benchmark), where it certified 7, 16 and 13 of them and the
    median time per FAQ call went from 66x, 49x and 36x to 46x, 34x and 31x (mean 60x, 55x, 46x to 63x,
    45x, 48x) with the same isomorphisms found (10, 19 and 17); noisy Erdos-Renyi n = 50 (seed 0, every
    quick stage agreed, recovery 1.00): 38x to 19x; cycles n = 30: 38x to 21x. (``eta = 3``, 150 steps:
    faster where it certifies, but it did on only 2 of 10 at seed 0: median 94x.)

    Minimising with ``polish=True`` or ``"faq"``, the solve only generates starts for FAQ (whose answers beat l12's
    own on these problems): 24 starts near ``J/n`` (``init_noise = 1``), 20 steps of ``eta = 1`` (the same ``lam``
    ramp, over 16 steps). Chosen on 20 flow x distance instances n = 30 each of seeds 1 and 2 (the benchmark reports
    seed 0) against FAQ restarts given the same time, with the polish from the 12 best starts: mean objective 0.25%
    and 0.30% below FAQ's, better on 12 instances of 20, worse on 7 and 6; the default 8 starts x 300 steps followed
    by FAQ from all 8: 0.54% above, better on 2 (seed 1). The unpolished answer of these settings is worse (mean
    objective 4550 against 4430 on seed 1), hence only with that polish."""
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

    Half the products of the direct form (``R = A M - M B``, then ``A^T R - R B^T``), which were most of a
    step's time on a CPU at ``n = 30..50``.
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


#: Maximising with ``"l12"`` (and no ``maxiter``), a first stage with these settings changed (the same
#: starts, ``lam`` and stopping rule): the full solve runs, from the same starts, only when this stage
#: ends with neither a certificate nor agreeing starts, and the better answer of the two is kept.
QUICK_STAGE: dict[str, Any] = {"step": 2.0, "iters": 225}

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


def _polish_starts(solved: OptimizeResult) -> np.ndarray:
    """The relaxed matrices ``(k, n, n)`` of the ``k = min(FAQ_POLISH_STARTS, restarts)`` starts of smallest
    rounded loss (ties: in start order) of the first instance of :func:`solve_qap`'s result."""
    M, fun = solved.starts_M[0].cpu().double().numpy(), solved.starts_fun[0].cpu().double().numpy()
    return M[np.argsort(fun, kind="stable")[:FAQ_POLISH_STARTS]]


def _penalty_method(penalised: bool) -> Callable[..., OptimizeResult]:
    def method(A: torch.Tensor, B: torch.Tensor, *, maximize: bool = False, P0: Any = "barycenter",
               rng: Any = None, maxiter: int | None = None, tol: float | None = None, restarts: int | None = None,
               lam: float | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float64, polish: bool | str = False) -> OptimizeResult:
        start_time = time.perf_counter()
        if not (isinstance(polish, bool) or (isinstance(polish, str) and polish in POLISH_METHODS)):
            raise ValueError(f"polish must be True, False or one of {POLISH_METHODS}, got {polish!r}")
        polish = "faq" if polish is True else polish
        if tol is not None and not (isinstance(tol, (int, float)) and 0 < tol < ROUNDING_THRESHOLD):
            raise ValueError(
                f"tol must lie in (0, {ROUNDING_THRESHOLD:.4f}) (below it the error bound holds), got {tol!r}")
        config = default_qap_config(bool(maximize), penalised, polish)
        overrides = {"iters": maxiter, "settle_tol": tol, "restarts": restarts, "lam": lam}
        config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
        generator = as_generator(int(rng.integers(2**31)) if isinstance(rng, np.random.Generator) else rng)
        n = A.shape[-1]
        start = None
        if isinstance(P0, str) and P0 not in ("barycenter", "randomized"):
            raise ValueError(f"P0 must be 'barycenter', 'randomized' or a matrix, got {P0!r}")
        if not isinstance(P0, str):
            start = _as_matrix(P0, "P0")
            if start.shape != A.shape or bool((start < 0).any()) or not (
                    torch.allclose(start.sum(0), torch.ones(n, dtype=torch.float64), atol=1e-6)
                    and torch.allclose(start.sum(1), torch.ones(n, dtype=torch.float64), atol=1e-6)):
                raise ValueError(f"P0 must be a doubly stochastic matrix of shape {tuple(A.shape)}")
        # maximising with l12's default length: a quick stage first, the full solve only where it fails
        stages = ([replace(config, **QUICK_STAGE), config] if maximize and penalised and maxiter is None
                  else [config])
        a, b = A.numpy(), B.numpy()
        best, best_fun, nit, stages_run = None, None, 0, 0
        shape = (1, config.restarts, n, n)
        if isinstance(P0, str) and P0 == "randomized":  # drawn as random_starts draws
            initial = random_doubly_stochastic(n, shape[:2], generator=generator).to(dtype)
        else:  # every stage from the same starts, those of the one solve without the quick stage
            initial = random_starts(config, shape, generator, dtype)
            if start is not None:  # the caller's start first, then random starts
                initial[0, 0] = start.clamp_min(1e-6).to(dtype)
        for stage in stages:
            stages_run += 1
            solved = solve_qap(A[None], B[None], stage, maximize=bool(maximize), initial=initial,
                               generator=generator, dtype=dtype, device=device)
            nit += solved.nit
            fun = _objective(a, b, solved.col_ind[0].cpu().numpy())
            if best is None or ((fun > best_fun) if maximize else (fun < best_fun)):
                best, best_fun = solved, fun
            if bool(solved.certified[0] or solved.agreed[0]):
                break
        solved, unpolished = best, best_fun
        col_ind = solved.col_ind[0].cpu().numpy()
        if polish and not bool(solved.certified[0]):  # a certified answer is optimal: nothing to polish
            col_ind = (_two_opt(a, b, col_ind, bool(maximize)) if polish == "2opt" else
                       _faq_polish(a, b, col_ind, _polish_starts(solved), bool(maximize)))
        return OptimizeResult(col_ind=col_ind, fun=_objective(a, b, col_ind), unpolished_fun=unpolished,
                              nit=nit, M=solved.M[0].cpu().numpy(), certified=bool(solved.certified[0]),
                              agreed=bool(solved.agreed[0]), settled=int(solved.settled[0]),
                              restarts=config.restarts, stages=stages_run,
                              seconds=time.perf_counter() - start_time)
    return method


def _scipy_method(name: str) -> Callable[..., OptimizeResult]:
    def method(A: torch.Tensor, B: torch.Tensor, *, restarts: int = 1, rng: Any = None, P0: Any = None,
               **options: Any) -> OptimizeResult:  # P0 is only in _OPTIONS["faq"]
        restarts = check_positive_int(restarts, "restarts")
        rng = np.random.default_rng(rng)
        a, b = A.numpy(), B.numpy()
        best, nit = None, 0
        for r in range(restarts):
            opts = dict(options, rng=rng)
            if P0 is not None and r == 0:
                opts["P0"] = P0
            elif name == "faq" and r > 0:
                opts["P0"] = "randomized"
            res = scipy.optimize.quadratic_assignment(a, b, method=name, options=opts)
            nit += int(res.nit)
            better = best is None or (res.fun > best.fun if options.get("maximize") else res.fun < best.fun)
            best = res if better else best
        best.nit, best.restarts = nit, restarts
        return best
    return method


#: ``methods[method](A, B, **options)``, as scipy dispatches.
_METHODS: dict[str, Callable[..., OptimizeResult]] = {
    "l12": _penalty_method(True), "relaxed": _penalty_method(False),
    "faq": _scipy_method("faq"), "2opt": _scipy_method("2opt"),
}
_PENALTY_OPTIONS = frozenset({"maximize", "P0", "rng", "maxiter", "tol", "restarts", "device", "dtype", "polish"})
#: The options each method accepts (scipy's own, plus ``restarts``; scipy only warns about others).
_OPTIONS: dict[str, frozenset[str]] = {
    "l12": _PENALTY_OPTIONS | {"lam"}, "relaxed": _PENALTY_OPTIONS,
    "faq": frozenset({"maximize", "partial_match", "rng", "P0", "shuffle_input", "maxiter", "tol", "restarts"}),
    "2opt": frozenset({"maximize", "partial_match", "rng", "partial_guess", "restarts"}),
}


def quadratic_assignment(A: Any, B: Any, method: str = "l12", options: dict[str, Any] | None = None) -> OptimizeResult:
    """Solve ``min`` (or ``max``) over permutations of ``tr(A^T P B P^T)``, as ``scipy.optimize.quadratic_assignment``.

    Args:
        A, B: square real matrices of the same shape ``(n, n)``, numpy arrays or torch tensors, weighted,
            asymmetric, of any sign and scale.
        method: ``"l12"`` (the penalty method), ``"relaxed"`` (no penalty), ``"faq"`` or ``"2opt"`` (scipy's).
        options: scipy's (``maximize``, ``P0``, ``rng``, ``maxiter``, ``tol``, and for scipy's methods any of
            theirs) and ours: ``restarts`` (random starts; for scipy's methods the number of calls, the best
            kept, FAQ's later ones from ``P0="randomized"``), ``lam`` (final penalty weight), ``device`` and
            ``dtype`` (where and in what precision the penalty method runs; float64 by default; with the
            random starts drawn in float64 for both, float32 gave the same answer, up to ties, on all 60
            instances of ``benchmarks/qap_benchmark.py``, flow x distance included), ``polish`` (inside the
            call; ``"2opt"``: scipy's 2-opt from the rounded answer; ``True`` or ``"faq"``: scipy's FAQ from
            the relaxed matrices of the :data:`FAQ_POLISH_STARTS` starts of smallest rounded loss, the best
            answer kept, then 2-opt; minimising, it also changes the solve, see :func:`default_qap_config`;
            both are skipped after a certificate). For ``"l12"``: ``maxiter`` caps the mirror steps per
            start (and, maximising, replaces the quick first stage by one solve of that length), ``tol`` is the
            penalty below which a start with an unchanged rounding is settled (so ``sum |M - R| <= 2 tol``), ``P0``
            ``"barycenter"`` (random starts near ``J/n``), ``"randomized"`` or a doubly stochastic matrix (the first
            start).

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
    unknown = sorted(set(options) - _OPTIONS[method])
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; it accepts {sorted(_OPTIONS[method])}")
    return _METHODS[method](A, B, **options)
