"""Numerical experiments behind notebook 01: each checks one fact about the l1-2 penalty on ``D_n``, and
:func:`penalty_facts` the same facts for any penalty of the registry :data:`aslib.core.penalties.PENALTIES`.

Every function is seeded through a ``torch.Generator`` and returns plain tensors or a pandas table, so
the notebook only calls and plots, and the tests can assert the same facts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pandas as pd
import torch

from aslib.core.penalties import Penalty
from aslib.core.penalty import (
    l12_penalty,
    permutation_error_bound,
    permutation_matrix,
    project_doubly_stochastic,
    random_doubly_stochastic,
    random_permutation,
    round_to_permutation,
)

__all__ = [
    "concavity_gaps",
    "error_bound_experiment",
    "gradient_along_path",
    "lipschitz_ratios",
    "near_permutations",
    "penalty_facts",
    "simplex_slice",
]


def near_permutations(
    n: int, count: int, *, max_noise: float = 0.5, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` doubly stochastic matrices near random permutations, and those permutations.

    ``M = (1 - a) R + a S(U)`` with ``R`` a random permutation matrix, ``U`` a matrix of independent
    ``U(0, 1)`` entries and ``S`` the alternating normalisation run to convergence (100 sweeps of
    :func:`aslib.core.penalty.project_doubly_stochastic`, fast on a dense positive matrix), and
    ``a = max_noise * V^2`` with ``V ~ U(0, 1)`` (squared, so that many matrices lie close to their
    permutation, where the error bound applies). A convex combination of points of ``D_n`` is in ``D_n``.
    Returns ``M`` of shape ``(count, n, n)`` (float64) and ``perm`` of shape ``(count, n)``.
    """
    perm = random_permutation(n, (count,), generator=generator)
    R = permutation_matrix(perm, torch.float64)
    U = torch.rand(count, n, n, generator=generator, dtype=torch.float64)
    a = max_noise * torch.rand(count, 1, 1, generator=generator, dtype=torch.float64) ** 2
    return (1 - a) * R + a * project_doubly_stochastic(U, sweeps=100), perm


def error_bound_experiment(
    n: int, count: int, *, max_noise: float = 0.5, generator: torch.Generator | None = None
) -> pd.DataFrame:
    """Compare the error bounds of :func:`aslib.core.penalty.permutation_error_bound` with the true errors.

    One row per matrix: ``penalty``, ``condition_holds``, ``true_l1 = sum |M - R|`` and ``l1_bound``,
    ``true_max = max |M - R|`` and ``max_bound``, with ``R`` the row-argmax permutation, and whether the
    Hungarian rounding agrees with the row argmax (``argmax_is_hungarian``).
    """
    M, _ = near_permutations(n, count, max_noise=max_noise, generator=generator)
    bound = permutation_error_bound(M)
    hungarian = round_to_permutation(M)
    R = torch.nn.functional.one_hot(bound.perm, n).to(M.dtype)
    return pd.DataFrame(
        {
            "penalty": bound.penalty.numpy(),
            "condition_holds": bound.condition_holds.numpy(),
            "true_l1": (M - R).abs().sum((-2, -1)).numpy(),
            "l1_bound": bound.l1_bound.numpy(),
            "true_max": (M - R).abs().amax((-2, -1)).numpy(),
            "max_bound": bound.max_bound.numpy(),
            "argmax_is_hungarian": (hungarian == bound.perm).all(-1).numpy(),
        }
    )


def concavity_gaps(n: int, count: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``P((A + B)/2) - (P(A) + P(B))/2`` for random ``A, B`` in ``D_n``: non-negative where P is concave."""
    A = random_doubly_stochastic(n, (count,), generator=generator)
    B = random_doubly_stochastic(n, (count,), generator=generator)
    return l12_penalty((A + B) / 2) - (l12_penalty(A) + l12_penalty(B)) / 2


def lipschitz_ratios(n: int, count: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``|P(M) - P(N)| / ||M - N||_F`` for random non-negative pairs, some of them sparse and close.

    Half the pairs are a sparse non-negative matrix and a small perturbation of it, where the ratio
    approaches the Lipschitz constant ``2 sqrt(n (n - 1))``; half are independent uniform matrices.
    """
    half = count // 2
    sparse = torch.rand(half, n, n, generator=generator, dtype=torch.float64)
    sparse = sparse * (torch.rand(half, n, n, generator=generator, dtype=torch.float64) < 1.0 / n)
    step = 1e-3 * torch.rand(half, n, n, generator=generator, dtype=torch.float64)
    M = torch.cat([sparse, torch.rand(count - half, n, n, generator=generator, dtype=torch.float64)])
    N = torch.cat([sparse + step, torch.rand(count - half, n, n, generator=generator, dtype=torch.float64)])
    return (l12_penalty(M) - l12_penalty(N)).abs() / (M - N).flatten(-2).norm(dim=-1)


def gradient_along_path(
    penalty: Callable[[torch.Tensor], torch.Tensor], n: int, offdiagonal: torch.Tensor
) -> torch.Tensor:
    """``dP/dM_01`` at ``M(t) = (1 - t) I + t J/n`` for each off-diagonal value ``t/n`` in ``offdiagonal``.

    Along this path in ``D_n`` the off-diagonal entries go to 0 as ``M`` approaches the identity; the
    l1-2 derivative stays bounded while the ``L_p`` derivative ``p x^(p-1)`` blows up.
    """
    t = (n * offdiagonal.to(torch.float64)).reshape(-1, 1, 1)
    M = ((1 - t) * torch.eye(n, dtype=torch.float64) + t / n).requires_grad_(True)
    (grad,) = torch.autograd.grad(penalty(M).sum(), M)
    return grad[:, 0, 1]


def simplex_slice(vertices: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points of the triangle spanned by three matrices, for a heat map of the penalty on that slice.

    Args:
        vertices: ``(3, n, n)``, e.g. three permutation matrices (a 2-D slice of ``D_n``).
        resolution: grid points per edge.

    Returns:
        ``xy`` of shape ``(k, 2)``, the points in an equilateral triangle with the vertices at
        ``(0, 0)``, ``(1, 0)``, ``(1/2, sqrt(3)/2)``, and ``M`` of shape ``(k, n, n)``, the matrices there.
    """
    if vertices.ndim != 3 or vertices.shape[0] != 3:
        raise ValueError(f"vertices must have shape (3, n, n), got {tuple(vertices.shape)}")
    steps = torch.linspace(0, 1, resolution, dtype=torch.float64)
    b1, b2 = torch.meshgrid(steps, steps, indexing="ij")
    keep = b1 + b2 <= 1 + 1e-12
    w = torch.stack([1 - b1[keep] - b2[keep], b1[keep], b2[keep]], -1).clamp_min(0)
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 3**0.5 / 2]], dtype=torch.float64)
    return w @ corners, torch.einsum("kv,vij->kij", w, vertices.to(torch.float64))


def _all_permutations(n: int) -> torch.Tensor:
    """Every permutation matrix of size ``n``, shape ``(n!, n, n)`` (float64)."""
    perms = torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long)
    return permutation_matrix(perms, torch.float64)


def penalty_facts(penalty: Penalty, n: int, count: int, *, exhaustive_n: int = 6,
                  steps: tuple[float, ...] = (1e-3, 1e-6, 1e-9),
                  generator: torch.Generator | None = None) -> dict[str, float | int | None]:
    """The facts of ``docs/mathematics.md`` section 13 for ``penalty``, measured on ``n x n`` matrices (float64).

    Returns:
        ``max_on_permutations``: ``max |P|`` over all ``exhaustive_n!`` permutation matrices of size
        ``exhaustive_n`` (brute force) and ``count`` random ones of size ``n``;
        ``min_inside``: ``min P`` over ``count`` random points of ``D_n`` (:func:`random_doubly_stochastic`);
        ``lipschitz_constant``: ``penalty.lipschitz(n)`` (None: none); ``max_lipschitz_ratio``: the largest
        ``|P(M) - P(N)| / ||M - N||_F`` over ``count`` non-negative pairs, half random sparse ``S`` and
        ``S + step U`` (``step`` the smallest of ``steps``, ``U`` uniform), half independent uniform;
        ``ratio_at_zero_<k>``: the ratio between ``0`` and ``steps[k] J``, which tends to ``n phi'(0+)`` for a
        separable penalty (unbounded without a Lipschitz constant);
        ``max_gradient_error``: the largest ``|gradient - autograd|`` at ``count`` strictly positive points of
        ``D_n``, relative to ``max(1, |autograd|)``;
        ``bound_held``: how many of ``count`` near-permutations (:func:`near_permutations`) have
        ``P < penalty.rounding_threshold``; ``bound_violations``: among them, those whose row argmax is not a
        permutation or whose ``sum |M - R|`` exceeds ``penalty.error_factor * P`` (beyond ``1e-12``).
    """
    random_perms = permutation_matrix(random_permutation(n, (count,), generator=generator), torch.float64)
    on_perms = max(float(penalty.value(_all_permutations(exhaustive_n)).abs().max()),
                   float(penalty.value(random_perms).abs().max()))
    inner = random_doubly_stochastic(n, (count,), generator=generator)
    half, step = count // 2, min(steps)
    sparse = torch.rand(half, n, n, generator=generator, dtype=torch.float64)
    sparse = sparse * (torch.rand(half, n, n, generator=generator, dtype=torch.float64) < 1.0 / n)
    M = torch.cat([sparse, torch.rand(count - half, n, n, generator=generator, dtype=torch.float64)])
    N = torch.cat([sparse + step * torch.rand(half, n, n, generator=generator, dtype=torch.float64),
                   torch.rand(count - half, n, n, generator=generator, dtype=torch.float64)])
    ratios = (penalty.value(M) - penalty.value(N)).abs() / (M - N).flatten(-2).norm(dim=-1)
    zero = torch.zeros(n, n, dtype=torch.float64)
    at_zero = {f"ratio_at_zero_{k}": float((penalty.value(zero + delta) - penalty.value(zero)).abs() / (n * delta))
               for k, delta in enumerate(steps)}
    positive = (0.5 * random_doubly_stochastic(n, (count,), generator=generator) + 0.5 / n).requires_grad_(True)
    (autograd,) = torch.autograd.grad(penalty.value(positive).sum(), positive)
    gradient_error = (penalty.gradient(positive.detach()) - autograd).abs() / autograd.abs().clamp_min(1.0)
    near, _ = near_permutations(n, count, generator=generator)
    value = penalty.value(near)
    held = value < penalty.rounding_threshold
    R = torch.nn.functional.one_hot(near.argmax(-1), n).to(near.dtype)
    is_perm = (R.sum(-2) == 1).all(-1)
    error = (near - R).abs().sum((-2, -1))
    violations = held & (~is_perm | (error > penalty.error_factor * value + 1e-12))
    constant = penalty.lipschitz(n)
    return {"max_on_permutations": on_perms, "min_inside": float(penalty.value(inner).min()),
            "lipschitz_constant": None if constant is None or math.isinf(constant) else float(constant),
            "max_lipschitz_ratio": float(ratios.max()), **at_zero,
            "max_gradient_error": float(gradient_error.max()),
            "bound_held": int(held.sum()), "bound_violations": int(violations.sum())}
