"""The graph-matching libraries run beside aslib by ``benchmarks/qap_benchmark.py``, each only when installed
(an optional benchmark dependency, never a test one; how to install them beside the pins: ``benchmarks/README.md``).

* graspologic's ``graph_match``: FAQ (``transport=False``) called again and again until the calls have used the
  time given (the first from the barycenter, the others from ``init_perturbation=0.5``), and GOAT
  (``transport=True``: optimal-transport steps) once and, the same way, for the time given;
* pygmtools (numpy backend) RRWM, IPFP and SM on the Lawler form ``K = kron(B, A)`` (``x^T K x = tr(A^T X B X^T)``
  for ``x`` the column-wise vectorisation of ``X``), shifted to ``K >= 0`` (a constant on permutations; negated
  first when minimising), then the Hungarian rounding; skipped where ``K`` (``n^4`` entries) would exceed
  :data:`PYGM_MAX_ENTRIES`.

Every answer is scored with scipy's objective ``tr(A^T P B P^T)`` like the other methods of the benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import OptimizeResult

try:
    from graspologic.match import graph_match
except ImportError:  # optional
    graph_match = None
try:
    import pygmtools as pygm

    pygm.set_backend("numpy")
except ImportError:  # optional
    pygm = None

#: The largest Lawler affinity ``K`` built for pygmtools (float64 entries: 8 bytes each, so 1.6 GB).
PYGM_MAX_ENTRIES = 2 * 10**8


def available() -> list[str]:
    """The peer libraries importable here."""
    return [name for name, module in (("graspologic", graph_match), ("pygmtools", pygm)) if module is not None]


def _answer(A: np.ndarray, B: np.ndarray, col_ind: np.ndarray) -> OptimizeResult:
    col_ind = np.asarray(col_ind, dtype=np.int64)
    return OptimizeResult(col_ind=col_ind, fun=float((A * B[np.ix_(col_ind, col_ind)]).sum()))


def _graspologic(A: np.ndarray, B: np.ndarray, maximize: bool, transport: bool, rng: np.random.Generator,
                 perturbation: float) -> OptimizeResult:
    result = graph_match(A, B, maximize=maximize, transport=transport, init_perturbation=perturbation,
                         rng=int(rng.integers(2**31)))
    col_ind = np.empty(len(A), dtype=np.int64)
    col_ind[result.indices_A] = result.indices_B
    return _answer(A, B, col_ind)


def _until(call: Callable[[bool], OptimizeResult], maximize: bool, budget: float) -> tuple[OptimizeResult, float, int]:
    """``call(first)`` repeated until the summed time reaches ``budget`` (at least once), the best answer kept."""
    best, spent, calls = None, 0.0, 0
    while calls == 0 or spent < budget:
        start = time.perf_counter()
        result = call(calls == 0)
        spent, calls = spent + time.perf_counter() - start, calls + 1
        if best is None or (result.fun > best.fun if maximize else result.fun < best.fun):
            best = result
    return best, spent, calls


def _pygmtools(A: np.ndarray, B: np.ndarray, maximize: bool, solver: str) -> OptimizeResult:
    K = np.kron(B, A) if maximize else -np.kron(B, A)
    K -= K.min()
    n = len(A)
    with np.errstate(divide="ignore", invalid="ignore"):  # IPFP divides by a zero curvature on flat steps
        X = pygm.hungarian(getattr(pygm, solver)(K, n, n))
    return _answer(A, B, X.argmax(1))


def peer_answers(A: np.ndarray, B: np.ndarray, maximize: bool, budget: float,
                 rng: np.random.Generator) -> dict[str, tuple[Any, float, int]]:
    """``{method: (answer, seconds, calls)}`` for every installed peer on one instance; ``budget`` is the time
    given to the repeated calls (the benchmark passes l12's time)."""
    answers: dict[str, tuple[Any, float, int]] = {}
    if graph_match is not None:
        for name, transport in (("graspologic faq", False), ("graspologic goat", True)):
            once, seconds, _ = _until(lambda first: _graspologic(A, B, maximize, transport, rng, 0.0), maximize, 0.0)
            if transport:
                answers[f"{name} (1 call)"] = (once, seconds, 1)
            answers[f"{name} (same time)"] = _until(
                lambda first: _graspologic(A, B, maximize, transport, rng, 0.0 if first else 0.5), maximize, budget)
    if pygm is not None and len(A) ** 4 <= PYGM_MAX_ENTRIES:
        for solver in ("rrwm", "ipfp", "sm"):
            answers[f"pygmtools {solver}"] = _until(lambda first: _pygmtools(A, B, maximize, solver), maximize, 0.0)
    return answers
