"""The polish of the penalty methods of :mod:`aslib.solver.qap`: scipy's 2-opt or FAQ run from their answer.

``"2opt"``: scipy's 2-opt from the rounded answer. ``"faq"``: scipy's FAQ from the relaxed matrices of the best
starts, the best answer (the rounding included) kept, then 2-opt from it. Fixed pairs (``partial_match``) stay
fixed in both. Nothing here draws a random number: each scipy call gets its own generator, never used.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
from scipy.optimize import OptimizeResult
from scipy.optimize import quadratic_assignment as scipy_quadratic_assignment  # bound once: a patched name is not ours

__all__ = ["FAQ_POLISH_STARTS", "objective", "polish_answer", "polish_starts", "scipy_quadratic_assignment"]

#: FAQ calls of the ``"faq"`` polish: from the relaxed matrices of this many starts, those of smallest rounded loss.
FAQ_POLISH_STARTS = 12

#: Weight of ``J/n`` mixed into a start's relaxed matrix before it is handed to FAQ (see :func:`_doubly_stochastic`).
_FAQ_START_MIX = 1e-3


def objective(A: np.ndarray, B: np.ndarray, col_ind: np.ndarray) -> float:
    """scipy's ``fun``: ``tr(A^T P B P^T) = sum_ij A_ij B_{col[i], col[j]}``."""
    return float((A * B[np.ix_(col_ind, col_ind)]).sum())


def _two_opt(A: np.ndarray, B: np.ndarray, col_ind: np.ndarray, maximize: bool, seeds: np.ndarray) -> np.ndarray:
    """scipy's 2-opt local search started from the permutation ``col_ind`` (passed as a full ``partial_guess``,
    so nothing in it is random), the pairs ``seeds (m, 2)`` fixed: pairs of free assignments are swapped while a
    swap improves ``tr(A^T P B P^T)``. The answer is a 2-opt local optimum no worse than ``col_ind``."""
    guess = np.column_stack([np.arange(len(col_ind)), col_ind])
    options = {"maximize": maximize, "partial_guess": guess, "rng": np.random.default_rng(0)}  # unused: no draw
    if len(seeds):
        options["partial_match"] = seeds[np.argsort(seeds[:, 0])]  # scipy's 2-opt reads its pairs sorted
    result = scipy_quadratic_assignment(A, B, method="2opt", options=options)
    return np.asarray(result.col_ind)


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


def _faq_polish(A: np.ndarray, B: np.ndarray, col_ind: np.ndarray, starts: np.ndarray, maximize: bool,
                seeds: np.ndarray) -> np.ndarray:
    """The ``"faq"`` polish: scipy's FAQ from each relaxed matrix in ``starts (k, n', n')`` (``n' = n - m``, rows
    and columns the free nodes in increasing order, as scipy's ``P0``; made doubly stochastic by
    :func:`_doubly_stochastic`), the pairs ``seeds`` fixed, the best of its answers and ``col_ind`` kept, then 2-opt
    from it (:func:`_two_opt`). The answer is a 2-opt local optimum no worse than ``col_ind``."""
    best, best_fun = col_ind, objective(A, B, col_ind)
    options = {"maximize": maximize, "rng": np.random.default_rng(0)}  # no draw from a matrix P0
    if len(seeds):
        options["partial_match"] = seeds
    for M in starts:
        result = scipy_quadratic_assignment(A, B, method="faq",
                                                     options=dict(options, P0=_doubly_stochastic(M)))
        if (result.fun > best_fun) if maximize else (result.fun < best_fun):
            best, best_fun = np.asarray(result.col_ind), float(result.fun)
    return _two_opt(A, B, best, maximize, seeds)


def polish_starts(solved: OptimizeResult, columns: np.ndarray, count: int = FAQ_POLISH_STARTS) -> np.ndarray:
    """The relaxed matrices ``(k, n', n')`` of the ``k = min(count, restarts)`` starts of smallest rounded loss
    (ties: in start order) of the first instance of a solve's result, their columns reordered by ``columns`` (the
    free nodes of ``B`` in increasing order)."""
    M, fun = solved.starts_M[0].cpu().double().numpy(), solved.starts_fun[0].cpu().double().numpy()
    return M[np.argsort(fun, kind="stable")[:count]][..., columns]


def polish_answer(polish: bool | str, A: np.ndarray, B: np.ndarray, col_ind: np.ndarray, maximize: bool,
                  seeds: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``col_ind`` after the polish ``"2opt"`` or ``"faq"`` (``starts``: :func:`polish_starts`, read by ``"faq"``)."""
    if polish == "2opt":
        return _two_opt(A, B, col_ind, maximize, seeds)
    return _faq_polish(A, B, col_ind, starts, maximize, seeds)
