r"""Graph matching: find the permutation that best aligns two graphs, a loss in closed form.

Given adjacency matrices ``A`` and ``B`` of two graphs on ``n`` vertices, solve

.. math::
    \min_{M \in \Pi_n} f(M) = \|A M - M B\|_F^2 .

A permutation ``M`` with ``M[i, perm[i]] = 1`` makes ``(M B M^T)[i, j] = B[perm[i], perm[j]]``, so
``f(M) = ||A - M B M^T||_F^2``: twice the number of vertex pairs whose edge status disagrees when vertex
``i`` of ``A`` is matched to vertex ``perm[i]`` of ``B``. Relaxed to doubly stochastic ``M``, ``f`` is a
convex quadratic; for ``k``-regular ``A`` and ``B``, ``A J = k J = J B`` so ``J/n`` has relaxed loss 0 and
tells nothing about the matching. That is the paper's argument for the l1-2 penalty.

Instances carry a planted permutation: ``B[perm[i], perm[j]] = A'[i, j]`` where ``A'`` is ``A`` with
noise, so ``A M* = M* B`` for ``M* = permutation_matrix(perm)`` when there is no noise.

Methods of :func:`match_graphs` (all return the same :class:`MatchResult`):

* ``"l12"``: the paper's method, projected gradient on ``f + lam_t P`` over ``D_n``
  (:mod:`aslib.examples.solver`, parameterisation ``"projected"``) with the step ``2 / L``,
  ``L = 2 (||A||_2 + ||B||_2)^2`` the smoothness constant of ``f``, ``lam_t`` ramped geometrically
  from ``lam / 100`` to ``lam`` over the first 80% of the iterations, and ``restarts`` random starts near
  ``J/n``, keeping the one whose rounded permutation has the smallest ``f`` (:func:`default_config`).
* ``"relaxed"``: the same solver with ``lam = 0`` (the convex relaxation, then Hungarian rounding).
* ``"sinkhorn"``: ``M = sinkhorn(X, tau)`` with Adam on the logits and ``tau`` annealed, no penalty.
* ``"faq"`` and ``"2opt"``: ``scipy.optimize.quadratic_assignment`` with ``maximize=True`` (for a
  permutation ``||A M - M B||^2 = ||A||^2 + ||B||^2 - 2 tr(A^T M B M^T)``, so minimising ``f`` is
  maximising scipy's objective); ``restarts`` calls, keeping the best: FAQ's first from scipy's default
  start (the barycenter ``J/n``) and the others from random permutation matrices; every 2-opt call from
  a random permutation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pandas as pd
import torch
from scipy.optimize import quadratic_assignment

from aslib.examples.solver import SolverConfig, apply_overrides, solve_permutation
from aslib.penalty import check_square, permutation_matrix
from aslib.progress import progress
from aslib.runtime import resolve_device

__all__ = [
    "FAMILIES",
    "METHODS",
    "GraphInstances",
    "MatchResult",
    "default_config",
    "edge_disagreement",
    "erdos_renyi",
    "grid_graph",
    "cycle_graph",
    "make_instances",
    "match_graphs",
    "matching_loss",
    "plant",
    "random_regular",
    "recovery",
    "recovery_table",
    "summarise",
]

METHODS = ("l12", "relaxed", "sinkhorn", "faq", "2opt")
FAMILIES = ("erdos_renyi", "regular", "cycle", "grid")


@dataclass
class GraphInstances:
    """A batch of matching problems with a planted answer.

    Attributes:
        A, B: ``(batch, n, n)`` symmetric 0/1 adjacency matrices (float64), no self-loops.
        perm: ``(batch, n)`` planted permutation: ``B[perm[i], perm[j]] = A'[i, j]``, ``A'`` the noisy ``A``.
    """

    A: torch.Tensor
    B: torch.Tensor
    perm: torch.Tensor


def _generator(seed: int | torch.Generator) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or a torch.Generator, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _symmetric_bernoulli(batch: int, n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """``(batch, n, n)`` symmetric 0/1 matrices, zero diagonal, each upper pair 1 with probability ``p``."""
    upper = (torch.rand(batch, n, n, generator=gen, dtype=torch.float64) < p).triu(1)
    return (upper + upper.transpose(-1, -2)).to(torch.float64)


def plant(A: torch.Tensor, noise: float = 0.0, seed: int | torch.Generator = 0) -> GraphInstances:
    """Hide a random permutation: flip each vertex pair of ``A`` with probability ``noise``, then relabel.

    Returns ``B`` with ``B[perm[i], perm[j]] = A'[i, j]``, i.e. ``B = M*^T A' M*`` for
    ``M* = permutation_matrix(perm)``; ``A`` itself is returned unchanged.
    """
    check_square(A, "A")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must lie in [0, 1], got {noise}")
    gen = _generator(seed)
    A = A.to(torch.float64).reshape(-1, *A.shape[-2:])
    batch, n = A.shape[0], A.shape[-1]
    flips = _symmetric_bernoulli(batch, n, noise, gen)
    noisy = (A - flips).abs()
    perm = torch.stack([torch.randperm(n, generator=gen) for _ in range(batch)])
    P = permutation_matrix(perm, torch.float64)
    B = P.transpose(-1, -2) @ noisy @ P
    return GraphInstances(A=A, B=B, perm=perm)


def erdos_renyi(n: int, p: float = 0.2, noise: float = 0.0, batch: int = 1,
                seed: int | torch.Generator = 0) -> GraphInstances:
    """``G(n, p)`` graphs, each vertex pair flipped with probability ``noise`` before relabelling."""
    _check_size(n, batch)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    gen = _generator(seed)
    return plant(_symmetric_bernoulli(batch, n, p, gen), noise, gen)


def random_regular(n: int, k: int = 3, noise: float = 0.0, batch: int = 1,
                   seed: int | torch.Generator = 0) -> GraphInstances:
    """Uniform random ``k``-regular graphs (``networkx.random_regular_graph``; ``n k`` must be even)."""
    _check_size(n, batch)
    if not (0 <= k < n and (n * k) % 2 == 0):
        raise ValueError(f"a {k}-regular graph on {n} vertices needs 0 <= k < n and n*k even")
    gen = _generator(seed)
    seeds = torch.randint(0, 2**31 - 1, (batch,), generator=gen).tolist()
    A = torch.stack([
        torch.from_numpy(nx.to_numpy_array(nx.random_regular_graph(k, n, seed=s), nodelist=range(n)))
        for s in seeds
    ])
    return plant(A, noise, gen)


def cycle_graph(n: int, noise: float = 0.0, batch: int = 1, seed: int | torch.Generator = 0) -> GraphInstances:
    """The cycle ``C_n`` (2-regular, ``2n`` automorphisms), relabelled."""
    _check_size(n, batch)
    if n < 3:
        raise ValueError(f"a cycle needs n >= 3, got {n}")
    A = torch.from_numpy(nx.to_numpy_array(nx.cycle_graph(n), nodelist=range(n)))
    return plant(A.expand(batch, n, n), noise, seed)


def grid_graph(rows: int, cols: int, noise: float = 0.0, batch: int = 1,
               seed: int | torch.Generator = 0) -> GraphInstances:
    """The ``rows x cols`` grid graph (``n = rows * cols``), relabelled."""
    _check_size(rows * cols, batch)
    G = nx.convert_node_labels_to_integers(nx.grid_2d_graph(rows, cols), ordering="sorted")
    n = rows * cols
    A = torch.from_numpy(nx.to_numpy_array(G, nodelist=range(n)))
    return plant(A.expand(batch, n, n), noise, seed)


def make_instances(family: str, n: int, noise: float = 0.0, batch: int = 1,
                   seed: int | torch.Generator = 0, *, p: float = 0.2, k: int = 3) -> GraphInstances:
    """One entry point over :data:`FAMILIES`; a grid uses the most square ``rows x cols = n``."""
    if family == "erdos_renyi":
        return erdos_renyi(n, p, noise, batch, seed)
    if family == "regular":
        return random_regular(n, k, noise, batch, seed)
    if family == "cycle":
        return cycle_graph(n, noise, batch, seed)
    if family == "grid":
        rows = max(r for r in range(1, int(n**0.5) + 1) if n % r == 0)
        return grid_graph(rows, n // rows, noise, batch, seed)
    raise ValueError(f"unknown graph family {family!r}; use one of {FAMILIES}")


def _check_size(n: int, batch: int) -> None:
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not (isinstance(batch, int) and batch >= 1):
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")


def matching_loss(A: torch.Tensor, B: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``||A M - M B||_F^2`` over the last two dimensions (broadcasting), shape ``(...)``."""
    return (A @ M - M @ B).square().sum((-2, -1))


def edge_disagreement(A: torch.Tensor, B: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``||A Q - Q B||_F^2`` for ``Q = permutation_matrix(perm)``: 0 for any exact isomorphism (so an
    automorphic answer counts as correct). Shapes ``(..., n, n)``, ``(..., n)`` -> ``(...)``."""
    Q = permutation_matrix(perm, A.dtype).to(A.device)
    return matching_loss(A, B, Q)


def recovery(perm: torch.Tensor, planted: torch.Tensor) -> torch.Tensor:
    """Fraction of vertices matched to their planted partner, shape ``(...)``."""
    if perm.shape != planted.shape:
        raise ValueError(
            f"perm and planted must have the same shape, got {tuple(perm.shape)} and {tuple(planted.shape)}")
    return (perm.to(planted.device) == planted).double().mean(-1)


@dataclass
class MatchResult:
    """The answer of :func:`match_graphs` for a batch (a single instance keeps a batch of 1).

    Attributes:
        perm: ``(batch, n)`` permutations, ``M[i, perm[i]] = 1``: vertex ``i`` of A matches ``perm[i]`` of B.
        M: ``(batch, n, n)`` final relaxed matrix (the permutation matrix itself for scipy's methods).
        loss_history, penalty_history: ``(records, batch)`` ``f(M_t)`` and ``P(M_t)`` (empty for scipy).
        loss: ``(batch,)`` ``f`` at the rounded permutation (the edge disagreement).
        iterations: solver iterations (for scipy: the largest ``nit`` reported).
        seconds: wall time of the whole call.
        method: the method name.
    """

    perm: torch.Tensor
    M: torch.Tensor
    loss_history: torch.Tensor
    penalty_history: torch.Tensor
    loss: torch.Tensor
    iterations: int
    seconds: float
    method: str
    config: SolverConfig | None = field(default=None, repr=False)


def default_config(method: str) -> SolverConfig:
    """The solver settings used for ``method`` unless ``match_graphs`` is given a ``config``.

    ``"l12"``: 600 projected steps of size ``2/L``, one normalisation sweep each, ``lam`` ramped from
    0.01 to 1 over the first 80% of the steps, 16 random starts. ``"relaxed"``: the same with ``lam = 0``.
    ``"sinkhorn"``: 300 Adam steps (learning rate 0.1) on the logits, 10 Sinkhorn iterations, ``tau``
    from 1 to 0.05, 8 random starts. (Chosen by us on 3-regular graphs with n = 20 and 30.)
    """
    if method in ("l12", "relaxed"):
        return SolverConfig(parameterisation="projected", iters=600, step=2.0, lam=1.0 if method == "l12" else 0.0,
                            lam_start=0.01, ramp=0.8, sweeps=1, restarts=16)
    if method == "sinkhorn":
        return SolverConfig(parameterisation="sinkhorn", iters=300, step=0.1, restarts=8, sinkhorn_iters=10)
    raise ValueError(f"method {method!r} has no solver config; use one of {METHODS[:3]}")


def _validate(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_square(A, "A")
    check_square(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"A and B must have the same shape, got {tuple(A.shape)} and {tuple(B.shape)}")
    if A.ndim > 3:
        raise ValueError(f"A and B must have shape (n, n) or (batch, n, n), got {tuple(A.shape)}")
    return A.reshape(-1, *A.shape[-2:]), B.reshape(-1, *B.shape[-2:])


def _scipy_match(A: np.ndarray, B: np.ndarray, method: str, restarts: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Best of ``restarts`` calls of scipy's ``quadratic_assignment`` maximising ``tr(A^T M B M^T)``."""
    n = A.shape[0]
    best_perm, best_fun, nit = None, -np.inf, 0
    for r in range(restarts):
        options: dict = {"maximize": True}
        options["rng"] = rng  # 2-opt starts from a random permutation drawn from rng
        if method == "faq" and r > 0:
            options["P0"] = np.eye(n)[rng.permutation(n)]
        res = quadratic_assignment(A, B, method=method, options=options)
        nit = max(nit, int(res.nit))
        if res.fun > best_fun:
            best_perm, best_fun = res.col_ind, res.fun
    return best_perm, nit


def match_graphs(
    A: torch.Tensor,
    B: torch.Tensor,
    method: str = "l12",
    *,
    lam: float | None = None,
    restarts: int | None = None,
    iters: int | None = None,
    config: SolverConfig | None = None,
    seed: int | torch.Generator = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    show_progress: bool = False,
) -> MatchResult:
    """Solve ``min_{M in Pi_n} ||A M - M B||_F^2`` for one instance ``(n, n)`` or a batch ``(batch, n, n)``.

    Args:
        A, B: adjacency (or any real symmetric) matrices of the same shape.
        method: one of :data:`METHODS` (see the module docstring).
        lam: penalty weight for ``"l12"`` (overrides the config; must be ``>= 0``).
        restarts: random starts (overrides the config; for scipy's methods the number of calls).
        iters: solver iterations (overrides the config; ignored by scipy's methods).
        config: solver settings for ``"l12"``, ``"relaxed"``, ``"sinkhorn"`` (else :func:`default_config`).
        seed: seeds the random starts.
        device: where the torch solvers run (``"cpu"``, ``"cuda"``, ``"auto"``); scipy runs on the CPU.
        dtype: floating type of the torch solvers (float32 is about twice as fast as float64 on a CPU).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    if lam is not None and not lam >= 0:  # checked before the scipy methods, which ignore it
        raise ValueError(f"lam must be >= 0, got {lam}")
    if restarts is not None and not (isinstance(restarts, int) and restarts >= 1):
        raise ValueError(f"restarts must be an integer >= 1, got {restarts!r}")
    A, B = _validate(A, B)
    gen = _generator(seed)
    start = time.perf_counter()
    if method in ("faq", "2opt"):
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        a, b = A.detach().cpu().double().numpy(), B.detach().cpu().double().numpy()
        results = [_scipy_match(a[i], b[i], method, restarts or 1, rng) for i in range(a.shape[0])]
        perm = torch.from_numpy(np.stack([r[0] for r in results])).long()
        loss = edge_disagreement(A.double().cpu(), B.double().cpu(), perm)
        empty = torch.empty(0, A.shape[0], dtype=torch.float64)
        return MatchResult(perm=perm, M=permutation_matrix(perm, torch.float64), loss_history=empty,
                           penalty_history=empty, loss=loss, iterations=max(r[1] for r in results),
                           seconds=time.perf_counter() - start, method=method)
    cfg = apply_overrides(config or default_config(method), method, lam=lam, restarts=restarts, iters=iters)
    dev = resolve_device(device)
    A = A.to(dev, dtype)
    B = B.to(dev, dtype)
    smooth = 2.0 * (torch.linalg.matrix_norm(A, 2) + torch.linalg.matrix_norm(B, 2)).square().clamp_min(1e-12)
    A4, B4 = A.unsqueeze(1), B.unsqueeze(1)
    solved = solve_permutation(
        lambda M: matching_loss(A4, B4, M), A.shape[0], A.shape[-1], cfg,
        step_scale=1.0 / smooth, generator=gen, dtype=dtype, device=dev, show_progress=show_progress,
    )
    return MatchResult(perm=solved.perm, M=solved.M, loss_history=solved.loss_history,
                       penalty_history=solved.penalty_history, loss=solved.rounded_loss,
                       iterations=solved.iterations, seconds=time.perf_counter() - start,
                       method=method, config=cfg)


def recovery_table(
    family: str,
    sizes: tuple[int, ...] | list[int],
    noises: tuple[float, ...] | list[float],
    methods: tuple[str, ...] | list[str] = METHODS,
    *,
    instances: int = 10,
    scipy_restarts: int = 10,
    restarts: int | None = None,
    iters: int | None = None,
    seed: int = 0,
    p: float = 0.2,
    k: int = 3,
    device: str | torch.device = "cpu",
    show_progress: bool = False,
) -> pd.DataFrame:
    """Solve ``instances`` planted instances for every size, noise and method; one row per instance.

    The torch methods solve all instances of a setting as one batch (``seconds`` is the batch time
    divided by ``instances``) with :func:`default_config`, or ``restarts`` starts and ``iters`` steps
    where given; scipy's methods get ``scipy_restarts`` calls per instance. Columns:
    ``family, n, noise, method, instance, recovery`` (fraction of vertices matched to the planted
    partner), ``exact`` (recovery == 1), ``isomorphic`` (edge disagreement 0), ``disagreement``
    (``||A Q - Q B||_F^2`` after rounding), ``planted_disagreement`` (the same for the planted
    permutation: with noise, a lower value than this beats the planted answer), ``seconds``.
    """
    rows = []
    settings = [(n, noise, method) for n in sizes for noise in noises for method in methods]
    problems = {}
    for n, noise, method in progress(settings, enabled=show_progress, desc=family):
        if (n, noise) not in problems:  # every method sees the same instances
            problems[n, noise] = make_instances(family, n, noise, instances, seed + 1000 * len(problems), p=p, k=k)
        inst = problems[n, noise]
        scipy = method in ("faq", "2opt")
        result = match_graphs(inst.A, inst.B, method, seed=seed, device=device,
                              restarts=scipy_restarts if scipy else restarts, iters=iters)
        rec = recovery(result.perm.cpu(), inst.perm)
        loss = result.loss.double().cpu()
        planted = edge_disagreement(inst.A, inst.B, inst.perm)
        for b in range(instances):
            rows.append({
                "family": family, "n": n, "noise": noise, "method": method, "instance": b,
                "recovery": rec[b].item(), "exact": bool(rec[b] == 1), "isomorphic": bool(loss[b] == 0),
                "disagreement": loss[b].item(), "planted_disagreement": planted[b].item(),
                "seconds": result.seconds / instances,
            })
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Means over instances of a :func:`recovery_table`, one row per family, n, noise and method."""
    metrics = ["recovery", "exact", "isomorphic", "disagreement", "planted_disagreement", "seconds"]
    return (table.groupby(["family", "n", "noise", "method"], sort=False)[metrics].mean()
            .reset_index())
