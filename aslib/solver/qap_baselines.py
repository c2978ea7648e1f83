"""scipy's own methods behind :func:`aslib.solver.qap.quadratic_assignment`: ``"faq"`` and ``"2opt"`` with scipy's
options and defaults, each the best of ``restarts`` calls of ``scipy.optimize.quadratic_assignment``."""

from __future__ import annotations

from typing import Any

import torch
from scipy.optimize import OptimizeResult

from aslib.core.checks import check_positive_int
from aslib.solver.qap_options import numpy_generator
from aslib.solver.qap_polish import scipy_quadratic_assignment

__all__ = ["best_of_scipy", "quadratic_assignment_2opt", "quadratic_assignment_faq"]


def best_of_scipy(method: str, A: torch.Tensor, B: torch.Tensor, restarts: int, rng: Any, P0: Any | None,
                  options: dict[str, Any]) -> OptimizeResult:
    """``restarts`` calls of scipy's ``method`` with ``options``, drawing from one generator seeded by ``rng``,
    the best answer kept, its ``nit`` the sum over the calls; FAQ's first call from ``P0``, the others from
    ``"randomized"`` (``P0`` None: 2-opt, which has no such option)."""
    restarts = check_positive_int(restarts, "restarts")
    rng = numpy_generator(rng)
    a, b = A.numpy(), B.numpy()
    best, nit = None, 0
    for r in range(restarts):
        start = {} if P0 is None else {"P0": P0 if r == 0 else "randomized"}
        res = scipy_quadratic_assignment(a, b, method=method, options=dict(options, rng=rng, **start))
        nit += int(res.nit)
        if best is None or (res.fun > best.fun if options["maximize"] else res.fun < best.fun):
            best = res
    best.nit, best.restarts = nit, restarts
    return best


def quadratic_assignment_faq(A: torch.Tensor, B: torch.Tensor, *, maximize: bool = False,
                              partial_match: Any = None, rng: Any = None, P0: Any = "barycenter",
                              shuffle_input: bool = False, maxiter: int = 30, tol: float = 0.03,
                              restarts: int = 1) -> OptimizeResult:
    """scipy's FAQ with scipy's options and defaults, best of ``restarts`` calls (:func:`best_of_scipy`);
    ``P0=None`` is the default start, ``"barycenter"``."""
    return best_of_scipy("faq", A, B, restarts, rng, "barycenter" if P0 is None else P0, {
        "maximize": maximize, "partial_match": partial_match, "shuffle_input": shuffle_input, "maxiter": maxiter,
        "tol": tol})


def quadratic_assignment_2opt(A: torch.Tensor, B: torch.Tensor, *, maximize: bool = False, rng: Any = None,
                               partial_match: Any = None, partial_guess: Any = None,
                               restarts: int = 1) -> OptimizeResult:
    """scipy's 2-opt with scipy's options and defaults, best of ``restarts`` calls (:func:`best_of_scipy`)."""
    return best_of_scipy("2opt", A, B, restarts, rng, None, {
        "maximize": maximize, "partial_match": partial_match, "partial_guess": partial_guess})
