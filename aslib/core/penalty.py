"""The l1-2 penalty on doubly stochastic matrices, the projection onto them, and rounding.

Notation (see ``docs/mathematics.md``): ``Pi_n`` is the set of n x n permutation matrices and ``D_n`` the set of
doubly stochastic matrices (``M >= 0``, every row and column sums to 1), the Birkhoff polytope whose
vertices are ``Pi_n``.

Every function accepts one matrix of shape ``(n, n)`` or a batch of shape ``(..., n, n)`` and works on
any device. Functions that return tensors keep autograd where that makes sense (``l12_penalty``,
``lp_penalty``, ``sinkhorn``, ``project_doubly_stochastic`` when not in place).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = [
    "MIRROR_FLOOR",
    "ROUNDING_THRESHOLD",
    "ErrorBound",
    "centre",
    "check_square",
    "fused_l12_penalty",
    "is_permutation_matrix",
    "l12_penalty",
    "lipschitz_constant",
    "lp_penalty",
    "max_row_deficit",
    "mirror_step",
    "normalise_rows_and_columns",
    "penalty_at_uniform",
    "permutation_error_bound",
    "permutation_matrix",
    "project_doubly_stochastic",
    "random_doubly_stochastic",
    "random_permutation",
    "round_to_permutation",
    "sinkhorn",
]

#: If ``M`` is doubly stochastic and ``l12_penalty(M) < ROUNDING_THRESHOLD = 2 (1 - 1/sqrt(2))``, every
#: row of ``M`` has one entry above 1/2 and the row-wise argmax is a permutation (see
#: :func:`permutation_error_bound`).
ROUNDING_THRESHOLD: float = 2.0 * (1.0 - 1.0 / math.sqrt(2.0))


def check_square(
    M: torch.Tensor,
    name: str = "M",
    *,
    nonnegative: bool = False,
    check_finite: bool = True,
) -> None:
    """Raise ``ValueError`` unless ``M`` is a floating tensor of shape ``(..., n, n)`` with ``n >= 1``.

    With ``check_finite`` NaN and inf are refused; with ``nonnegative`` negative entries are refused.
    Both checks read the values, which on CUDA costs a device synchronisation.
    """
    if not isinstance(M, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(M).__name__}")
    if not (M.is_floating_point()):
        raise ValueError(f"{name} must have a floating dtype, got {M.dtype}")
    if M.ndim < 2:
        raise ValueError(f"{name} must have shape (..., n, n), got shape {tuple(M.shape)}")
    if M.shape[-1] != M.shape[-2]:
        raise ValueError(f"{name} must be square in its last two dimensions, got shape {tuple(M.shape)}")
    if M.shape[-1] == 0:
        raise ValueError(f"{name} must have n >= 1, got shape {tuple(M.shape)}")
    if check_finite and not bool(torch.isfinite(M).all()):
        raise ValueError(f"{name} contains NaN or inf")
    if nonnegative and bool((M < 0).any()):
        raise ValueError(f"{name} has negative entries, the statement needs {name} >= 0")


def l12_penalty(M: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
    r"""The row plus column l1-2 penalty.

    .. math::
        P(M) = \sum_i (\|M_{i,:}\|_1 - \|M_{i,:}\|_2) + \sum_j (\|M_{:,j}\|_1 - \|M_{:,j}\|_2)

    ``P >= 0`` everywhere, with equality on a row (column) iff it has at most one non-zero entry; on
    ``D_n``, ``P(M) = 0`` iff ``M`` is a permutation matrix (exactness), and
    ``P(M) = 2n - sum_i ||M_i||_2 - sum_j ||M^j||_2``, a concave function maximal at ``J/n``.
    For ``M >= 0`` its gradient is ``2 - M_ij/||M_i||_2 - M_ij/||M^j||_2``.

    Args:
        M: ``(..., n, n)`` floating tensor.
        check_finite: refuse NaN and inf (a device sync on CUDA; hot loops may turn it off).

    Returns:
        Tensor of shape ``(...)``: the penalty of each matrix in the batch.
    """
    check_square(M, check_finite=check_finite)
    rows = M.abs().sum(-1) - torch.linalg.vector_norm(M, dim=-1)
    cols = M.abs().sum(-2) - torch.linalg.vector_norm(M, dim=-2)
    return rows.sum(-1) + cols.sum(-1)


class _FusedL12(torch.autograd.Function):
    """``P(M)`` of a batch ``(..., n, n)`` with a hand-written backward (see :func:`fused_l12_penalty`)."""

    @staticmethod
    def forward(ctx, M: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rows = torch.linalg.vector_norm(M, dim=-1)  # (..., n): ||M[i, :]||_2
        cols = torch.linalg.vector_norm(M, dim=-2)  # (..., n): ||M[:, j]||_2
        ctx.save_for_backward(M, rows, cols)
        absolute = M.abs()  # summed line by line as in l12_penalty (the same rounding)
        return (absolute.sum(-1) - rows).sum(-1) + (absolute.sum(-2) - cols).sum(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        M, rows, cols = ctx.saved_tensors
        # d||x||_2/dx = x / ||x||_2, and 0 at x = 0 (torch's choice for vector_norm, kept here).
        inv_rows = torch.where(rows > 0, rows.reciprocal(), torch.zeros_like(rows)).unsqueeze(-1)
        inv_cols = torch.where(cols > 0, cols.reciprocal(), torch.zeros_like(cols)).unsqueeze(-2)
        dP = (2.0 * M.sgn()).sub_(M * (inv_rows + inv_cols))
        return dP.mul_(grad[..., None, None])


def fused_l12_penalty(M: torch.Tensor) -> torch.Tensor:
    r"""The l1-2 penalty of :func:`l12_penalty` (shape ``(...)`` for ``M (..., n, n)``), with
    its gradient computed in one pass instead of through autograd's graph of ``abs`` and two norms:

    .. math::
        P(M) = \sum_i (\|M_{i,:}\|_1 - \|M_{i,:}\|_2) + \sum_j (\|M_{:,j}\|_1 - \|M_{:,j}\|_2), \qquad
        \frac{\partial P}{\partial M_{ij}} = 2\,\mathrm{sgn}(M_{ij}) - \frac{M_{ij}}{\|M_{i,:}\|_2}
        - \frac{M_{ij}}{\|M_{:,j}\|_2}

    (``docs/mathematics.md`` section 5; the subgradients at 0 are autograd's: ``sgn(0) = 0`` and a zero
    norm contributes 0). Equal to ``l12_penalty`` and its autograd gradient up to floating-point rounding;
    no finiteness check (the training loop's hot path). :func:`l12_penalty` stays the reference whose
    autograd gradient the tests and notebook 01 compare the formula with.
    """
    return _FusedL12.apply(M)


def lp_penalty(M: torch.Tensor, p: float = 0.5, *, eps: float = 0.0) -> torch.Tensor:
    r"""The ``L_p`` penalty ``sum_ij (|M_ij| + eps)^p`` with ``0 < p < 1``, the non-Lipschitz alternative.

    Its derivative ``p (|x| + eps)^(p-1)`` is unbounded as ``x -> 0`` when ``eps = 0``; the l1-2 penalty's
    is bounded by 2. Returns a tensor of shape ``(...)``.
    """
    check_square(M)
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    return (M.abs() + eps).pow(p).sum((-2, -1))


def penalty_at_uniform(n: int) -> float:
    """``P(J/n) = 2n (1 - 1/sqrt(n))``: the maximum of the l1-2 penalty on ``D_n``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return 2.0 * n * (1.0 - 1.0 / math.sqrt(n))


def lipschitz_constant(n: int) -> float:
    """``2 sqrt(n (n - 1))``: ``|P(M) - P(N)| <= L ||M - N||_F`` for non-negative n x n ``M`` and ``N``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return 2.0 * math.sqrt(n * (n - 1))


def max_row_deficit(M: torch.Tensor) -> torch.Tensor:
    """``max_i (1 - ||M[i, :]||_2)``, of shape ``(...)``: half the bound on ``max_ij |M_ij - R_ij|``."""
    check_square(M)
    return (1.0 - torch.linalg.vector_norm(M, dim=-1)).amax(-1)


def _fill_empty(M: torch.Tensor, dim: int) -> torch.Tensor:
    """Replace every all-zero line along ``dim`` by the uniform line ``1/n`` (so it can be normalised)."""
    n = M.shape[-1]
    empty = M.sum(dim, keepdim=True) <= 0
    return torch.where(empty, torch.full_like(M, 1.0 / n), M)


def project_doubly_stochastic(
    M: torch.Tensor, sweeps: int = 1, *, inplace: bool = False, check_finite: bool = True
) -> torch.Tensor:
    """Map ``M`` towards ``D_n``: clamp to ``>= 0``, then ``sweeps`` times normalise columns, then rows.

    This is the projection used after each optimizer step (alternating normalisation, i.e. Sinkhorn
    sweeps on the clamped matrix). After any number of sweeps the rows sum to 1 exactly (up to rounding);
    the columns converge to 1 as ``sweeps`` grows. A row or column that is all zero after clamping is
    replaced by the uniform ``1/n`` line instead of dividing by zero.

    Args:
        M: ``(..., n, n)`` floating tensor.
        sweeps: number of column-then-row normalisations, ``>= 1``.
        inplace: write into ``M`` (under ``torch.no_grad``, for parameters) and return it; otherwise
            return a new tensor, differentiable with respect to ``M``.
        check_finite: refuse NaN and inf (a device sync on CUDA; the training loop turns it off).
    """
    check_square(M, check_finite=check_finite)
    if not isinstance(sweeps, int) or sweeps < 1:
        raise ValueError(f"sweeps must be an integer >= 1, got {sweeps!r}")
    if inplace:  # the same operations in place: no copy of M per step (the training loop's hot path)
        with torch.no_grad():
            X, fill = M.detach().clamp_min_(0.0), 1.0 / M.shape[-1]
            X.masked_fill_(X.sum(-1, keepdim=True) <= 0, fill).masked_fill_(X.sum(-2, keepdim=True) <= 0, fill)
            for _ in range(sweeps):
                X.div_(X.sum(-2, keepdim=True)).div_(X.sum(-1, keepdim=True))
        return M
    return normalise_rows_and_columns(_fill_empty(_fill_empty(M.clamp_min(0.0), -1), -2), sweeps)


def normalise_rows_and_columns(X: torch.Tensor, sweeps: int = 1) -> torch.Tensor:
    """``sweeps`` Sinkhorn sweeps on a positive ``X (..., n, n)``: divide every column by its sum, then every
    row. Rows then sum to 1 exactly (up to rounding) and columns converge to 1. No checks: for callers that
    keep ``X > 0`` (the mirror step of :mod:`aslib.solver.relaxation`); others use :func:`project_doubly_stochastic`."""
    for _ in range(sweeps):
        X = X / X.sum(-2, keepdim=True)
        X = X / X.sum(-1, keepdim=True)
    return X


#: Entries of a mirror iterate are kept at or above this value, so no row or column can underflow to
#: zero in float32 (a floor far below any entry that matters for rounding).
MIRROR_FLOOR = 1e-30


def centre(X: torch.Tensor) -> torch.Tensor:
    """``X - row means - column means + overall mean`` over the last two dimensions: the part of ``X`` that
    moves within ``D_n`` (a gradient's component along the doubly stochastic matrices' affine hull).
    Two passes over ``X``: the overall mean is taken off the small row means first."""
    row_means = X.mean(-1, keepdim=True)
    return X.sub(row_means - row_means.mean(-2, keepdim=True)).sub_(X.mean(-2, keepdim=True))


def mirror_step(M: torch.Tensor, grad: torch.Tensor, lam: float, step: float, sweeps: int,
                floor: torch.Tensor | float,
                penalty_gradient: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    r"""One entropic mirror-descent step on ``f + lam * P`` over ``D_n`` from ``M > 0``, shape ``(..., n, n)``.

    .. math::
        G = \frac{C(\nabla f)}{\max(\max_{ij} |C(\nabla f)_{ij}|, \text{floor})} + \lambda \nabla P(M),
        \qquad M \leftarrow \mathrm{normalise}(M \odot \exp(-\eta G)),

    ``C`` is :func:`centre`, ``grad = nabla f`` the loss gradient at ``M`` (same shape), ``eta = step``,
    ``grad P = 2 - M / ||M_i||_2 - M / ||M^j||_2`` in closed form (the l1-2 penalty; another penalty passes
    its ``penalty_gradient``, :mod:`aslib.core.penalties`), and ``normalise`` ``sweeps`` column/row
    sweeps (:func:`normalise_rows_and_columns`). The step is multiplicative, so ``M`` stays strictly positive
    and cannot collapse to ``J/n`` however large the gradient (the failure of clamping after a Euclidean
    step); dividing by the largest centred entry makes ``step`` the largest change of ``log M`` the loss can
    ask for, whatever the scale of ``f``, so ``lam`` weighs the penalty against a loss gradient of largest
    entry 1. ``floor`` (a float or a tensor broadcasting against ``(..., 1, 1)``) keeps rounding noise around
    a stationary point from being blown up to a full step.

    The penalty's part is not centred: a factor constant along a row or a column is undone by the
    normalisation. Written as few full passes over the tensors as the formula allows: on a CPU at
    ``n = 30..500`` these passes, not the arithmetic, are most of a step's time.
    """
    exponent = centre(grad)
    # max |entry| as max(max, -min): on a CPU about 15 times faster than vector_norm(inf) or aminmax
    biggest = torch.maximum(exponent.amax((-2, -1), keepdim=True), exponent.amin((-2, -1), keepdim=True).neg_())
    exponent.mul_(-step / torch.clamp_min(biggest, floor))
    if lam > 0 and penalty_gradient is not None:
        exponent.add_(penalty_gradient(M), alpha=-step * lam)
    elif lam > 0:
        squares = M.square()
        inverse_norms = squares.sum(-1, keepdim=True).rsqrt_() + squares.sum(-2, keepdim=True).rsqrt_()
        exponent.addcmul_(M, inverse_norms, value=step * lam)
    return normalise_rows_and_columns(exponent.exp_().mul_(M).clamp_min_(MIRROR_FLOOR), sweeps)


def sinkhorn(logits: torch.Tensor, iters: int = 20, tau: float = 1.0) -> torch.Tensor:
    r"""Differentiable Sinkhorn normalisation of ``exp(logits / tau)``, computed in the log domain.

    ``log S <- log S - logsumexp_rows``, then ``- logsumexp_columns``, ``iters`` times; the result is
    row-stochastic and approximately column-stochastic, and tends to a permutation as ``tau -> 0``.
    This is the baseline parameterisation of ``D_n``; the paper's method instead keeps ``M`` itself in
    ``D_n`` by projection.
    """
    check_square(logits, "logits")
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an integer >= 1, got {iters!r}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    log_s = logits / tau
    for _ in range(iters):
        log_s = log_s - torch.logsumexp(log_s, dim=-2, keepdim=True)
        log_s = log_s - torch.logsumexp(log_s, dim=-1, keepdim=True)
    return log_s.exp()


def round_to_permutation(M: torch.Tensor) -> torch.Tensor:
    """The permutation closest to ``M``: ``argmax_{R in Pi_n} <M, R>`` by the Hungarian algorithm.

    Solved with ``scipy.optimize.linear_sum_assignment`` on ``-M`` (in float64, on the CPU).

    Returns:
        Long tensor ``perm`` of shape ``(..., n)`` on ``M``'s device with ``R[i, perm[i]] = 1``; for a
        layer that maps ``y = M x``, the rounded layer is the gather ``y = x[perm]``.
    """
    check_square(M)
    n = M.shape[-1]
    flat = M.detach().to("cpu", torch.float64).reshape(-1, n, n).numpy()
    perms = np.empty((flat.shape[0], n), dtype=np.int64)
    for b, matrix in enumerate(flat):
        rows, cols = linear_sum_assignment(-matrix)
        perms[b, rows] = cols
    return torch.from_numpy(perms).reshape(*M.shape[:-1]).to(M.device)


def permutation_matrix(perm: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The matrix ``R`` of shape ``(..., n, n)`` with ``R[i, perm[i]] = 1`` for ``perm`` of shape ``(..., n)``."""
    if not isinstance(perm, torch.Tensor) or perm.dtype not in (torch.int32, torch.int64):
        raise ValueError("perm must be an integer torch.Tensor of shape (..., n)")
    if perm.ndim < 1:
        raise ValueError("perm must have shape (..., n)")
    n = perm.shape[-1]
    sorted_perm = perm.sort(-1).values
    if not bool((sorted_perm == torch.arange(n, device=perm.device)).all()):
        raise ValueError("perm is not a permutation of 0..n-1")
    return torch.nn.functional.one_hot(perm.long(), n).to(dtype)


def random_permutation(n: int, batch: tuple[int, ...] = (), *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniformly random permutations of ``0..n-1``, shape ``(*batch, n)`` (long)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return torch.rand(*batch, n, generator=generator).argsort(-1)


def random_doubly_stochastic(
    n: int,
    batch: tuple[int, ...] = (),
    *,
    vertices: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Random points of ``D_n``, shape ``(*batch, n, n)``, as convex combinations of random permutations.

    By Birkhoff-von Neumann every point of ``D_n`` is such a combination; ``vertices`` permutations
    (default ``n``) are mixed with Dirichlet(1) weights, so the result is exactly doubly stochastic.
    """
    k = n if vertices is None else vertices
    if k < 1:
        raise ValueError(f"vertices must be >= 1, got {k}")
    perms = permutation_matrix(random_permutation(n, (*batch, k), generator=generator), dtype)
    weights = -torch.rand(*batch, k, generator=generator, dtype=dtype).log()
    weights = weights / weights.sum(-1, keepdim=True)
    return (weights[..., None, None] * perms).sum(-3)


def is_permutation_matrix(M: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Whether each matrix is a permutation matrix up to ``tol`` (entries within tol of 0 or 1, one 1 per
    row and per column). Returns a bool tensor of shape ``(...)`` (0-dim for a single matrix)."""
    check_square(M)
    near_one = (M - 1).abs() <= tol
    near_zero = M.abs() <= tol
    entries_ok = (near_one | near_zero).all(-1).all(-1)
    one_per_row = (near_one.sum(-1) == 1).all(-1)
    one_per_col = (near_one.sum(-2) == 1).all(-1)
    return entries_ok & one_per_row & one_per_col


@dataclass(frozen=True)
class ErrorBound:
    """What :func:`permutation_error_bound` proves about a doubly stochastic ``M`` (shapes ``(...)``).

    Attributes:
        penalty: ``P(M)``.
        condition_holds: ``P(M) < ROUNDING_THRESHOLD``; where False the bounds below say nothing.
        perm: row-wise argmax of ``M``, shape ``(..., n)``; a permutation wherever the condition holds.
        l1_bound: ``2 P(M)``, bounds ``sum_ij |M_ij - R_ij|``.
        max_bound: ``2 max_i (1 - ||M_i||_2)``, bounds ``max_ij |M_ij - R_ij|``.
    """

    penalty: torch.Tensor
    condition_holds: torch.Tensor
    perm: torch.Tensor
    l1_bound: torch.Tensor
    max_bound: torch.Tensor


def permutation_error_bound(M: torch.Tensor, *, atol: float = 1e-5) -> ErrorBound:
    r"""The error bound: a small penalty puts a doubly stochastic ``M`` close to a permutation.

    If ``M in D_n`` and ``P(M) < 2 (1 - 1/sqrt 2)``, then every row term ``1 - ||M_i||_2`` is below
    ``1 - 1/sqrt 2``, so ``||M_i||_2 > 1/sqrt 2`` and (as ``||x||_2^2 <= max(x) ||x||_1``) the row maximum
    exceeds 1/2; the maxima lie in distinct columns since columns sum to 1, so the row-wise argmax is a
    permutation ``R``. Row ``i`` then contributes ``2 (1 - m_i) <= 2 (1 - ||M_i||_2^2) <= 4 (1 - ||M_i||_2)``
    to ``sum |M - R|``; counting the same sum by columns as well gives
    ``sum_ij |M_ij - R_ij| <= 4 min(P_rows, P_cols) <= 2 P(M)`` and
    ``max_ij |M_ij - R_ij| <= max_i (1 - m_i) <= 2 max_i (1 - ||M_i||_2)``.

    Raises ``ValueError`` unless ``M`` is doubly stochastic to within ``atol``.
    """
    check_square(M, nonnegative=True)
    one = torch.ones((), dtype=M.dtype, device=M.device)
    if not (torch.allclose(M.sum(-1), one.expand(M.shape[:-1]), atol=atol)
            and torch.allclose(M.sum(-2), one.expand(M.shape[:-1]), atol=atol)):
        raise ValueError(f"M is not doubly stochastic to within atol={atol}: rows or columns do not sum to 1")
    penalty = l12_penalty(M)
    return ErrorBound(
        penalty=penalty,
        condition_holds=penalty < ROUNDING_THRESHOLD,
        perm=M.argmax(-1),
        l1_bound=2.0 * penalty,
        max_bound=2.0 * max_row_deficit(M),
    )
