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

Methods of :func:`match_graphs` (all return scipy's ``OptimizeResult``):

* ``"l12"``: the paper's method, ``f + lam_t P`` over ``D_n`` by the penalised mirror descent of
  :mod:`aslib.solver.relaxation` (:func:`aslib.solver.qap.solve_staged` with ``maximize=True``, whose relaxed loss is
  ``f``: the solve of ``quadratic_assignment(maximize=True)``, its quick stages first),
  with ``lam_t`` ramped geometrically from ``0.03 lam`` to ``lam`` over 80% of the steps and ``restarts``
  random starts near ``J/n``, keeping the one whose rounded permutation has the smallest ``f``; an instance
  ends early once every start has settled on its rounding, its starts agree on one rounding, or one start
  matches exactly (``f = 0``) (:func:`graph_matching_config`).
* ``"relaxed"``: the same solver with ``lam = 0`` (the convex relaxation, then rounding).
* ``"sinkhorn"``: ``M = sinkhorn(X, tau)`` with Adam on the logits and ``tau`` annealed, no penalty.
* ``"lp"``, ``"tl1"``, ``"entropy"``: ``"l12"``'s solver and settings with that penalty in place of the l1-2
  (:data:`aslib.core.penalties.PENALTIES`; the same ``lam``).
* ``"gumbel_sinkhorn"``: ``"sinkhorn"``'s settings with Gumbel noise on the logits (Mena et al. 2018).
* ``"faq"`` and ``"2opt"``: ``scipy.optimize.quadratic_assignment`` with ``maximize=True`` through
  :func:`aslib.solver.qap.quadratic_assignment` (for a permutation ``||A M - M B||^2 = ||A||^2 + ||B||^2 -
  2 tr(A^T M B M^T)``, so minimising ``f`` is maximising scipy's objective); ``restarts`` calls, keeping
  the best: FAQ's first from scipy's default start (the barycenter ``J/n``) and the others from random
  doubly stochastic matrices; every 2-opt call from a random permutation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import networkx as nx
import numpy as np
import pandas as pd
import torch
from scipy.optimize import OptimizeResult

from aslib.core.checks import as_generator, check_positive_int
from aslib.core.penalty import ROUNDING_THRESHOLD, check_square, l12_penalty, permutation_matrix
from aslib.solver.qap import QUICK_STAGES, default_qap_config, quadratic_assignment, solve_staged
from aslib.solver.qap_options import as_real_tensor
from aslib.solver.relaxation import SolverConfig, random_starts, replace_given, solve_permutation
from aslib.utils.progress import progress
from aslib.utils.runtime import resolve_device
from aslib.study.verdicts import Verdict, compare_means, holm, verdict

__all__ = [
    "FAMILIES",
    "GRAPH_ALTERNATIVES",
    "GRAPH_METHODS",
    "GraphInstances",
    "PENALTY_METHODS",
    "compare_metric",
    "cycle_graph",
    "edge_disagreement",
    "endpoint_verdicts",
    "erdos_renyi",
    "graph_matching_config",
    "grid_graph",
    "make_instances",
    "match_graphs",
    "matching_loss",
    "plant",
    "random_regular",
    "recovery",
    "recovery_table",
    "recovery_verdicts",
    "summarise_recovery",
]

GRAPH_METHODS = ("l12", "relaxed", "sinkhorn", "faq", "2opt")
#: Further methods every function here accepts, left out of the default comparison (:data:`GRAPH_METHODS`).
GRAPH_ALTERNATIVES = ("lp", "tl1", "entropy", "gumbel_sinkhorn")
#: The methods that run :func:`aslib.solver.qap.solve_staged` with a penalty of that name (``"l12"`` the paper's).
PENALTY_METHODS = ("l12", "lp", "tl1", "entropy")
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
    gen = as_generator(seed)
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
    gen = as_generator(seed)
    return plant(_symmetric_bernoulli(batch, n, p, gen), noise, gen)


def random_regular(n: int, k: int = 3, noise: float = 0.0, batch: int = 1,
                   seed: int | torch.Generator = 0) -> GraphInstances:
    """Uniform random ``k``-regular graphs (``networkx.random_regular_graph``; ``n k`` must be even)."""
    _check_size(n, batch)
    if not (0 <= k < n and (n * k) % 2 == 0):
        raise ValueError(f"a {k}-regular graph on {n} vertices needs 0 <= k < n and n*k even")
    gen = as_generator(seed)
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
    check_positive_int(n, "n")
    check_positive_int(batch, "batch")


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


def graph_matching_config(method: str) -> SolverConfig:
    """The solver settings used for ``method`` unless ``match_graphs`` is given a ``config``.

    ``"l12"``: :func:`aslib.solver.qap.default_qap_config` for maximising (at most 450 mirror steps of
    ``eta = 1``, one Sinkhorn sweep each, ``lam`` ramped from 0.03 to 1 over 80% of the steps, 8 random
    starts, early stop once settled, agreed or certified). ``"relaxed"``: the same with ``lam = 0``. ``"sinkhorn"``: 300 Adam
    steps (learning rate 0.1) on the logits, 10 Sinkhorn iterations, ``tau`` from 1 to 0.05, 8 random
    starts (ours: ``docs/tuning.md``). ``"lp"``, ``"tl1"``, ``"entropy"``: ``"l12"``'s with that penalty;
    ``"gumbel_sinkhorn"``: ``"sinkhorn"``'s with that parameterisation.
    """
    if method in PENALTY_METHODS:
        return replace(default_qap_config(maximize=True), penalty=method)
    if method == "relaxed":
        return default_qap_config(maximize=True, penalised=False)
    if method in ("sinkhorn", "gumbel_sinkhorn"):
        return SolverConfig(parameterisation=method, iters=300, step=0.1, restarts=8, sinkhorn_iters=10)
    raise ValueError(f"method {method!r} has no solver config; use one of "
                     f"{tuple(m for m in GRAPH_METHODS + GRAPH_ALTERNATIVES if m not in ('faq', '2opt'))}")


def _validate(A: torch.Tensor | np.ndarray, B: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``A``, ``B`` as :func:`aslib.solver.qap.quadratic_assignment` reads them (bool, integer or float numpy
    arrays or torch tensors, as float64), of shape ``(n, n)`` or ``(batch, n, n)``, as ``(batch, n, n)``."""
    A, B = as_real_tensor(A, "A"), as_real_tensor(B, "B")
    check_square(A, "A")
    check_square(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"A and B must have the same shape, got {tuple(A.shape)} and {tuple(B.shape)}")
    if A.ndim > 3:
        raise ValueError(f"A and B must have shape (n, n) or (batch, n, n), got {tuple(A.shape)}")
    return A.reshape(-1, *A.shape[-2:]), B.reshape(-1, *B.shape[-2:])


def match_graphs(
    A: torch.Tensor | np.ndarray,
    B: torch.Tensor | np.ndarray,
    method: str = "l12",
    *,
    lam: float | None = None,
    restarts: int | None = None,
    iters: int | None = None,
    config: SolverConfig | None = None,
    seed: int | torch.Generator = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    show_progress: bool = False,
) -> OptimizeResult:
    """Solve ``min_{M in Pi_n} ||A M - M B||_F^2`` for one instance ``(n, n)`` or a batch ``(batch, n, n)``.

    ``"l12"`` and ``"relaxed"`` run :func:`aslib.solver.qap.solve_staged`, the solve of
    ``aslib.quadratic_assignment(A, B, method, {"maximize": True, "rng": seed})``, with its defaults (its starts,
    float64, ``"l12"``'s quick stages unless ``config`` or ``iters`` is given): on one instance both give the same
    permutation. Use ``quadratic_assignment`` for one problem with scipy's interface (weighted or asymmetric
    matrices, minimising, ``partial_match``, ``polish``); use this for batches of graph-matching instances solved
    together, with the edge disagreement as ``fun`` and the loss and penalty histories.

    Args:
        A, B: adjacency (or any real) matrices of the same shape, torch tensors or numpy arrays of booleans,
            integers or floats (read as float64, as ``quadratic_assignment`` reads them).
        method: one of :data:`GRAPH_METHODS` or :data:`GRAPH_ALTERNATIVES` (see the module docstring).
        lam: penalty weight for ``"l12"`` and the other penalty methods (overrides the config; must be ``>= 0``).
        restarts: random starts (overrides the config; for scipy's methods the number of calls).
        iters: most solver iterations (overrides the config; ignored by scipy's methods).
        config: solver settings for the torch methods (else :func:`graph_matching_config`;
            ``"relaxed"`` always runs with ``lam = 0``).
        seed: seeds the random starts.
        device: where the torch solvers run (``"cpu"``, ``"cuda"``, ``"auto"``); scipy runs on the CPU.
        dtype: floating type of the torch solvers (float64, as ``quadratic_assignment``).

    Returns:
        scipy's ``OptimizeResult`` for the batch: ``col_ind (batch, n)`` (vertex ``i`` of A matches
        ``col_ind[i]`` of B), ``fun (batch,)`` the edge disagreement ``f`` at it, ``M (batch, n, n)`` the final
        relaxed matrix (the permutation matrix for scipy's methods), ``loss_history`` and ``penalty_history``
        ``(records, batch)`` (empty for scipy's), ``nit`` (iterations; for scipy the largest total ``nit``),
        ``seconds`` (wall time of the call), ``method`` and ``config`` (None for scipy's methods).
    """
    if method not in GRAPH_METHODS + GRAPH_ALTERNATIVES:
        raise ValueError(f"unknown method {method!r}; use one of {GRAPH_METHODS + GRAPH_ALTERNATIVES}")
    if lam is not None and not lam >= 0:  # checked before the scipy methods, which ignore it
        raise ValueError(f"lam must be >= 0, got {lam}")
    if restarts is not None:
        check_positive_int(restarts, "restarts")
    A, B = _validate(A, B)
    gen = as_generator(seed)
    start = time.perf_counter()
    if method in ("faq", "2opt"):
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        results = [quadratic_assignment(A[i], B[i], method, {"maximize": True, "restarts": restarts or 1, "rng": rng})
                   for i in range(A.shape[0])]
        perm = torch.from_numpy(np.stack([r.col_ind for r in results])).long()
        empty = torch.empty(0, A.shape[0], dtype=torch.float64)
        return OptimizeResult(col_ind=perm, fun=edge_disagreement(A.double().cpu(), B.double().cpu(), perm),
                              M=permutation_matrix(perm, torch.float64), loss_history=empty, penalty_history=empty,
                              nit=max(int(r.nit) for r in results), seconds=time.perf_counter() - start,
                              method=method, config=None)
    cfg = replace_given(config or graph_matching_config(method), restarts=restarts, iters=iters,
                        lam=0.0 if method == "relaxed" else lam if method in PENALTY_METHODS else None)
    if method in ("sinkhorn", "gumbel_sinkhorn"):
        dev = resolve_device(device)
        A4, B4 = A.to(dev, dtype).unsqueeze(1), B.to(dev, dtype).unsqueeze(1)
        solved = solve_permutation(lambda M: matching_loss(A4, B4, M), A.shape[0], A.shape[-1], cfg,
                                   generator=gen, dtype=dtype, device=dev, show_progress=show_progress)
    else:  # quadratic_assignment's solve: its starts, and its quick stages unless config or iters is given
        quick = QUICK_STAGES if method == "l12" and config is None and iters is None else None
        initial = random_starts(cfg, (A.shape[0], cfg.restarts, A.shape[-1], A.shape[-1]), gen, dtype)
        solved = solve_staged(A, B, cfg, quick, maximize=True, initial=initial, generator=gen, dtype=dtype,
                              device=device, show_progress=show_progress)
    solved.update(seconds=time.perf_counter() - start, method=method, config=cfg)
    return solved


def recovery_table(
    family: str,
    sizes: tuple[int, ...] | list[int],
    noises: tuple[float, ...] | list[float],
    methods: tuple[str, ...] | list[str] = GRAPH_METHODS,
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
    divided by ``instances``) with :func:`graph_matching_config`, or ``restarts`` starts and ``iters`` steps
    where given; scipy's methods get ``scipy_restarts`` calls per instance. Columns:
    ``family, n, noise, method, instance, recovery`` (fraction of vertices matched to the planted
    partner), ``exact`` (recovery == 1), ``isomorphic`` (edge disagreement 0), ``disagreement``
    (``||A Q - Q B||_F^2`` after rounding), ``planted_disagreement`` (the same for the planted
    permutation: with noise, a lower value than this beats the planted answer), ``reached`` (the answer is
    certified a permutation: an exact match reached, or the final ``M``'s l1-2 penalty below
    ``ROUNDING_THRESHOLD``, which makes its rounding the row-wise argmax; always for scipy's), ``seconds``.
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
        rec = recovery(result.col_ind.cpu(), inst.perm)
        loss = result.fun.double().cpu()
        planted = edge_disagreement(inst.A, inst.B, inst.perm)
        reached = result.get("certified", torch.zeros(instances, dtype=torch.bool)).cpu() | (
            l12_penalty(result.M.double().cpu()) < ROUNDING_THRESHOLD)
        for b in range(instances):
            rows.append({
                "family": family, "n": n, "noise": noise, "method": method, "instance": b,
                "recovery": rec[b].item(), "exact": bool(rec[b] == 1), "isomorphic": bool(loss[b] == 0),
                "disagreement": loss[b].item(), "planted_disagreement": planted[b].item(),
                "reached": bool(reached[b]), "seconds": result.seconds / instances,
            })
    return pd.DataFrame(rows)


def summarise_recovery(table: pd.DataFrame) -> pd.DataFrame:
    """Means over instances of a :func:`recovery_table`, one row per family, n, noise and method."""
    metrics = ["recovery", "exact", "isomorphic", "disagreement", "planted_disagreement", "seconds"]
    return (table.groupby(["family", "n", "noise", "method"], sort=False)[metrics].mean()
            .reset_index())


def compare_metric(table: pd.DataFrame, first: str, second: str, metric: str, families: tuple[str, ...] | list[str],
                   question: str) -> Verdict:
    """Whether ``first`` scores higher than ``second`` on ``metric`` over the same instances of ``families``
    (rows of a :func:`recovery_table`): :func:`aslib.study.verdicts.compare_means` paired over instances (the
    paired t-test, or the exact sign test when every difference is the same), "n/a" when a method was not run.
    The verdict carries its raw p; :func:`recovery_verdicts` Holm-corrects the notebook's tests together.
    """
    rows = table[table["family"].isin(list(families))]
    keys = ["family", "n", "noise", "instance"]
    scores = {m: rows[rows["method"] == m].set_index(keys)[metric].astype(float) for m in (first, second)}
    if any(s.empty for s in scores.values()):
        return verdict(question, None, f"{first if scores[first].empty else second} not run")
    a, b = scores[first].align(scores[second], join="inner")
    return compare_means(question, a.to_numpy(), b.to_numpy(), paired=True, over="instances", digits=2)


def endpoint_verdicts(from_barycenter: torch.Tensor, penalties: Mapping[str, float]) -> list[Verdict]:
    """Where the solvers of one instance end (notebook 02, section 1): the relaxation started at ``J/n`` stays
    there (``from_barycenter``: its final ``M``, ``(n, n)``), and ``l12`` ends at a vertex while the relaxation
    ends inside ``D_n`` (``penalties``: the final ``P(M)`` of ``"l12"`` and ``"relaxed"``)."""
    n = from_barycenter.shape[-1]
    shift = (from_barycenter - torch.full((n, n), 1.0 / n)).abs().max().item()
    return [
        verdict("the relaxation started at J/n stays at J/n", shift < 1e-6, f"max |M - J/n| = {shift:.0e}"),
        verdict(f"l12 ends at a vertex (penalty below {ROUNDING_THRESHOLD:.3f}) and the relaxation inside D_n",
                penalties["l12"] < ROUNDING_THRESHOLD < penalties["relaxed"],
                f"final penalty {penalties['l12']:.2f} vs {penalties['relaxed']:.2f}"),
    ]


def recovery_verdicts(table: pd.DataFrame, scipy_restarts: int, others: Sequence[Verdict] = ()) -> list[Verdict]:
    """The comparisons of a :func:`recovery_table` over every family (notebook 02, section 2), each by
    :func:`compare_metric`: l12 against every other method on regular graphs (isomorphisms found), against
    relaxed and FAQ on Erdos-Renyi graphs (vertices recovered), against relaxed on cycles and grids
    (isomorphisms); ``scipy_restarts`` (the calls of scipy's methods per instance) is named in the questions.
    These and ``others`` (the notebook's other verdicts, e.g. those of
    :func:`aslib.examples.penalty_study.graph_penalty_verdicts`) are notebook 02's tests
    (:func:`endpoint_verdicts` are criteria), Holm-corrected together (:func:`aslib.study.verdicts.holm`); the
    corrected ``others`` close the list, in their order."""
    calls = f"({scipy_restarts} calls)"
    comparisons = [
        ("relaxed", "isomorphic", ["regular"], "l12 finds more isomorphisms than relaxed on regular graphs"),
        ("sinkhorn", "isomorphic", ["regular"], "l12 finds more isomorphisms than sinkhorn on regular graphs"),
        ("faq", "isomorphic", ["regular"], f"l12 finds more isomorphisms than FAQ {calls} on regular graphs"),
        ("2opt", "isomorphic", ["regular"], f"l12 finds more isomorphisms than 2-opt {calls} on regular graphs"),
        ("relaxed", "recovery", ["erdos_renyi"], "l12 recovers more vertices than relaxed on Erdos-Renyi graphs"),
        ("faq", "recovery", ["erdos_renyi"], f"l12 recovers more vertices than FAQ {calls} on Erdos-Renyi graphs"),
        ("relaxed", "isomorphic", ["cycle", "grid"], "l12 finds more isomorphisms than relaxed on cycles and grids"),
    ]
    return holm([compare_metric(table, "l12", other, metric, families, question)
                 for other, metric, families, question in comparisons] + list(others))
