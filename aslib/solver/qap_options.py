"""Checking and reading the input of :func:`aslib.solver.qap.quadratic_assignment` as scipy's ``quadratic_assignment``
does: the matrices, the fixed pairs and guesses (:func:`node_orders`, :func:`guess_start`), the starts they ask for
(:func:`penalty_starts`), the options.

The same error types as scipy (``ValueError`` for bad values, ``TypeError`` for a non-integer ``maxiter``), with
messages that start as scipy's do, plus the value found; unknown options are warned about with scipy's
``OptimizeWarning`` and ignored. :func:`as_real_tensor` is the one conversion of a matrix argument shared by
``quadratic_assignment`` and :func:`aslib.examples.graph_matching.match_graphs`.
"""

from __future__ import annotations

import numbers
import operator
import warnings
from typing import Any

import numpy as np
import torch
from scipy.optimize import OptimizeWarning

from aslib.core.checks import as_generator
from aslib.core.penalty import ROUNDING_THRESHOLD, random_doubly_stochastic
from aslib.solver.relaxation import SolverConfig, random_starts

__all__ = ["as_real_tensor", "check_matrices", "check_maxiter", "check_pairs", "check_polish", "check_start",
           "check_tol", "guess_start", "node_orders", "numpy_generator",
           "penalty_starts", "torch_generator", "warn_unknown_options", "POLISH_METHODS"]

#: ``polish`` values of ``"l12"`` and ``"relaxed"`` (``True`` is ``"faq"``): what runs after the solve.
POLISH_METHODS: tuple[str, ...] = ("2opt", "faq")


def as_real_tensor(X: Any, name: str) -> torch.Tensor:
    """A numpy array (or nested list), or a torch tensor, of booleans, integers or floats as a float64 CPU tensor
    of the same shape; complex or other values raise ``ValueError`` naming ``name``."""
    if isinstance(X, torch.Tensor):
        kind = "c" if X.is_complex() else "b" if X.dtype == torch.bool else "f"
        dtype: Any = X.dtype
    else:
        X = np.asarray(X)
        kind, dtype = X.dtype.kind, X.dtype
    if kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers (bool, integer or float), got {dtype}")
    tensor = X.detach().cpu() if isinstance(X, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(X))
    return tensor.to(torch.float64)


def check_matrices(A: Any, B: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``A`` and ``B`` as float64 tensors ``(n, n)`` (``n = 0`` allowed), checked in scipy's order: each square, two
    dimensions, the same size, then (ours) finite."""
    A, B = as_real_tensor(A, "A"), as_real_tensor(B, "B")
    A, B = (X.reshape(1, -1) if X.ndim < 2 else X for X in (A, B))  # as numpy's atleast_2d
    for X, name in ((A, "A"), (B, "B")):
        if X.shape[0] != X.shape[1]:
            raise ValueError(f"`{name}` must be square, got shape {tuple(X.shape)}")
    if A.ndim != 2 or B.ndim != 2:
        raise ValueError(f"`A` and `B` must have exactly two dimensions, got shapes {tuple(A.shape)} and "
                         f"{tuple(B.shape)}")
    if A.shape != B.shape:
        raise ValueError(f"`A` and `B` matrices must be of equal size, got {tuple(A.shape)} and {tuple(B.shape)}")
    for X, name in ((A, "A"), (B, "B")):
        if not bool(torch.isfinite(X).all()):
            raise ValueError(f"`{name}` contains NaN or inf")
    return A, B


def check_pairs(pairs: Any, n: int, name: str) -> np.ndarray:
    """``partial_match`` or ``partial_guess``: an integer array ``(m, 2)`` of pairs (node ``pairs[i, 0]`` of ``A``
    with node ``pairs[i, 1]`` of ``B``), ``m <= n``, indices in ``[0, n)``, each column without repeats; None is
    ``(0, 2)``. A single pair may be given as ``[a, b]``."""
    if pairs is None:
        return np.zeros((0, 2), dtype=np.int64)
    array = np.atleast_2d(np.asarray(pairs.cpu() if isinstance(pairs, torch.Tensor) else pairs))
    if array.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if array.ndim != 2:
        raise ValueError(f"`{name}` must have exactly two dimensions, got shape {array.shape}")
    if array.shape[1] != 2:
        raise ValueError(f"`{name}` must have two columns, got shape {array.shape}")
    if array.shape[0] > n:
        what = "seeds" if name == "partial_match" else "entries"
        raise ValueError(f"`{name}` can have only as many {what} as there are nodes ({n}), got {array.shape[0]}")
    if array.dtype.kind not in "iuf" or not np.array_equal(array, np.round(array)):
        raise ValueError(f"`{name}` must hold integer node indices, got {array.dtype}")
    array = array.astype(np.int64)
    if (array < 0).any():
        raise ValueError(f"`{name}` must contain only positive or zero indices, got {int(array.min())}")
    if (array >= n).any():
        raise ValueError(f"`{name}` entries must be less than number of nodes ({n}), got {int(array.max())}")
    if len(set(array[:, 0])) < len(array) or len(set(array[:, 1])) < len(array):
        raise ValueError(f"`{name}` column entries must be unique (a node in one pair at most)")
    return array


def check_maxiter(maxiter: Any) -> int | None:
    """``maxiter``: None (the method's own) or a positive integer; a non-integer is a ``TypeError`` as in scipy."""
    if maxiter is None:
        return None
    if isinstance(maxiter, bool):
        raise TypeError(f"'maxiter' must be an integer, got {maxiter!r}")
    try:
        value = operator.index(maxiter)
    except TypeError:
        raise TypeError(f"'maxiter' must be an integer, got {maxiter!r}") from None
    if value <= 0:
        raise ValueError(f"'maxiter' must be a positive integer, got {value}")
    return value


def check_tol(tol: Any) -> float | None:
    """``tol`` of the penalty methods: None or a number in ``(0, ROUNDING_THRESHOLD)`` (below it the error bound
    holds)."""
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"'tol' must be a positive float, got {tol!r}")
    if not 0 < tol < ROUNDING_THRESHOLD:
        raise ValueError(f"'tol' must be a positive float below {ROUNDING_THRESHOLD:.4f} (where the error bound "
                         f"holds), got {tol!r}")
    return float(tol)


def check_polish(polish: Any) -> bool | str:
    """``polish`` checked, ``True`` read as ``"faq"``."""
    if not (isinstance(polish, bool) or (isinstance(polish, str) and polish in POLISH_METHODS)):
        raise ValueError(f"polish must be True, False or one of {POLISH_METHODS}, got {polish!r}")
    return "faq" if polish is True else polish


def check_start(P0: Any, size: int) -> torch.Tensor | None:
    """``P0``: ``"barycenter"`` or ``"randomized"`` (None returned) or a doubly stochastic matrix ``(size, size)``,
    ``size = n - m`` for ``m`` fixed pairs, returned as a float64 tensor."""
    if isinstance(P0, str):
        if P0 not in ("barycenter", "randomized"):
            raise ValueError(f"Invalid 'P0' parameter string {P0!r}: use 'barycenter', 'randomized' or a matrix")
        return None
    start = as_real_tensor(P0, "P0")
    start = start.reshape(1, -1) if start.ndim < 2 else start
    if tuple(start.shape) != (size, size):
        raise ValueError(f"`P0` matrix must have shape m' x m', where m'=n-m: ({size}, {size}), got "
                         f"{tuple(start.shape)}")
    ones = torch.ones(size, dtype=torch.float64)
    if bool((start < 0).any()) or not (torch.allclose(start.sum(0), ones, atol=1e-6)
                                       and torch.allclose(start.sum(1), ones, atol=1e-6)):
        raise ValueError("`P0` matrix must be doubly stochastic (nonnegative, rows and columns summing to 1)")
    return start


def node_orders(n: int, seeds: np.ndarray, shuffle: bool, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The node orders of ``A`` and ``B`` the solve sees: the fixed pairs first, then the free nodes in increasing
    order (``shuffle``: those of ``B`` in a random order, so that ties between them break at random)."""
    free_a, free_b = (np.setdiff1d(np.arange(n), seeds[:, c]) for c in (0, 1))
    if shuffle:
        free_b = free_b[torch.randperm(len(free_b), generator=generator).numpy()]
    return np.concatenate([seeds[:, 0], free_a]), np.concatenate([seeds[:, 1], free_b])


def guess_start(guess: np.ndarray, order_a: np.ndarray, order_b: np.ndarray, m: int) -> torch.Tensor:
    """The doubly stochastic start ``(n', n')`` of ``partial_guess``: 1 at each guessed pair of free nodes (in the
    solve's order), the unguessed rows spread evenly over the unguessed columns; pairs with a fixed node ignored."""
    size = len(order_a) - m
    position_a = {int(v): i for i, v in enumerate(order_a[m:])}
    position_b = {int(v): i for i, v in enumerate(order_b[m:])}
    pairs = [(position_a[int(x)], position_b[int(y)]) for x, y in guess if x in position_a and y in position_b]
    start = torch.zeros(size, size, dtype=torch.float64)
    rows = np.setdiff1d(np.arange(size), [r for r, _ in pairs])
    columns = np.setdiff1d(np.arange(size), [c for _, c in pairs])
    for r, c in pairs:
        start[r, c] = 1.0
    if len(rows):
        start[np.ix_(rows, columns)] = 1.0 / len(rows)
    return start


def penalty_starts(config: SolverConfig, P0: Any, start: torch.Tensor | None, n: int,
                    generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """The ``(1, restarts, n, n)`` starts shared by every stage: drawn as :func:`random_starts` draws them
    (``P0="randomized"``: uniform random doubly stochastic matrices), the caller's ``start`` first."""
    shape = (1, config.restarts, n, n)
    if isinstance(P0, str) and P0 == "randomized":
        initial = random_doubly_stochastic(n, shape[:2], generator=generator).to(dtype)
    else:
        initial = random_starts(config, shape, generator, dtype)
    if start is not None:
        initial[0, 0] = start.clamp_min(1e-6).to(dtype)
    return initial


def torch_generator(rng: Any) -> torch.Generator:
    """The torch generator of the penalty methods from scipy's ``rng``: None (torch's global generator draws the
    seed, so ``torch.manual_seed`` fixes it), a nonnegative int, a ``numpy.random.Generator`` or ``RandomState``
    (one integer drawn from it seeds the torch generator) or a ``torch.Generator`` (used as it is)."""
    if isinstance(rng, np.random.Generator):
        return as_generator(int(rng.integers(2**31)))
    if isinstance(rng, np.random.RandomState):
        return as_generator(int(rng.randint(2**31)))
    if rng is None or isinstance(rng, torch.Generator):
        return as_generator(rng)
    if isinstance(rng, bool) or not isinstance(rng, (int, np.integer)) or rng < 0:
        raise ValueError(f"rng must be None, a nonnegative int, a numpy Generator or RandomState, or a "
                         f"torch.Generator, got {rng!r}")
    return as_generator(int(rng))


def numpy_generator(rng: Any) -> np.random.Generator:
    """The numpy generator of scipy's methods from ``rng``: None (fresh entropy, as scipy), an int, a
    ``numpy.random.Generator`` (itself), a ``RandomState`` or a ``torch.Generator`` (one integer drawn seeds it)."""
    if isinstance(rng, np.random.RandomState):
        return np.random.default_rng(int(rng.randint(2**31)))
    if isinstance(rng, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=rng)))
    if rng is not None and not isinstance(rng, (int, np.integer, np.random.Generator)) or isinstance(rng, bool):
        raise ValueError(f"rng must be None, a nonnegative int, a numpy Generator or RandomState, or a "
                         f"torch.Generator, got {rng!r}")
    return np.random.default_rng(rng)


def warn_unknown_options(method: str, options: dict[str, Any], accepted: list[str]) -> dict[str, Any]:
    """``options`` without those ``method`` does not take, each of which is warned about with scipy's
    ``OptimizeWarning`` (scipy's behaviour), naming the accepted ones."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        warnings.warn(f"Unknown solver options: {', '.join(unknown)} (ignored; method {method!r} accepts "
                      f"{accepted})", OptimizeWarning, stacklevel=3)
    return {name: value for name, value in options.items() if name in accepted}
