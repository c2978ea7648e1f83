r"""A teacher-student two-layer network whose student must learn a permutation: four set-ups, losses in closed form.

The model (ours; the paper's exact set-up is not available). Input ``x ~ N(0, I_d)``, output weights ``a``
of shape ``(m,)``, hidden weights ``W`` of shape ``(m, d)``, a hidden permutation ``P =
permutation_matrix(perm)`` (``P[i, perm[i]] = 1``) and the learned matrix ``M``. The student knows ``a`` and
``W``; the set-up decides where the permutation sits (:data:`SETUPS`):

============  ==============================  ==============================  ===========  ============
set-up        teacher ``f(x)``                student ``g_M(x)``              ``M`` size   convex in M
============  ==============================  ==============================  ===========  ============
``between``   ``a^T sigma(P W x)``            ``a^T sigma(M W x)``            ``m``        no
``after``     ``a^T P sigma(W x)``            ``a^T M sigma(W x)``            ``m``        yes
``input``     ``a^T sigma(W P x)``            ``a^T sigma(W M x)``            ``d``        no
``linear``    ``a^T P W x``                   ``a^T M W x``                   ``m``        yes
============  ==============================  ==============================  ===========  ============

``sigma = ReLU`` except in ``linear`` (``sigma`` the identity, where "between" and "after" coincide).

Loss: the population risk ``L(M) = E_x[(f(x) - g_M(x))^2]`` in closed form. With the kernel
``K(u, v) = E[sigma(u.x) sigma(v.x)]``, which is ``|u||v| (sin t + (pi - t) cos t) / (2 pi)``,
``t = angle(u, v)``, for the ReLU and ``u.v`` for the identity, a network ``alpha^T sigma(A x)`` against
``beta^T sigma(B x)`` has the risk

.. math::
    R = \alpha^T K(A, A) \alpha - 2 \alpha^T K(A, B) \beta + \beta^T K(B, B) \beta .

* ``between``: ``alpha = beta = a``, ``A = P W``, ``B = M W``. ``input``: ``A = W P``, ``B = W M``.
* ``after`` and ``linear`` share the hidden features, so ``R`` is the convex quadratic
  ``L(M) = (M^T a - P^T a)^T K (M^T a - P^T a)`` with ``K = K(W, W)`` (``W W^T`` for ``linear``). Every
  doubly stochastic ``M`` with ``M^T a = P^T a`` minimises it: a slice of the Birkhoff polytope, of which
  ``P`` is the only permutation when the entries of ``a`` are distinct. The relaxation alone cannot tell
  ``P`` from the rest of the slice; the penalty's exactness can.

Success is "the rounded permutation ``Q`` computes the teacher's function", ``L(Q) = 0`` (relative to the
teacher's energy ``E[f^2]``), i.e. ``Q = P`` up to the symmetries of the set-up (hidden units with equal
output weights, inputs with equal columns of ``W``); for generic instances only ``Q = P`` does. The methods
are those of graph matching: ``"l12"``, ``"relaxed"`` (``lam = 0``) and ``"sinkhorn"``, all through
:func:`aslib.solver.relaxation.solve_permutation` (called in :func:`learn_permutation` only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd
from scipy.optimize import OptimizeResult
import torch

from aslib.core.checks import as_generator, check_nonnegative, check_positive_int
from aslib.core.penalty import check_square, l12_penalty, permutation_matrix, project_doubly_stochastic
from aslib.utils.progress import progress
from aslib.utils.runtime import resolve_device
from aslib.solver.relaxation import SolverConfig, replace_given, solve_permutation
from aslib.study.verdicts import Verdict, significance, verdict

__all__ = [
    "CONVEX_SETUPS",
    "SETUPS",
    "SUCCESS_RTOL",
    "TWO_LAYER_METHODS",
    "TeacherStudent",
    "best_of",
    "claim_verdicts",
    "compare_success",
    "comparison_table",
    "convexity_gap",
    "failure_verdicts",
    "learn_permutation",
    "make_teacher_student",
    "monte_carlo_loss",
    "network_output",
    "population_loss",
    "relu_kernel",
    "relu_mean",
    "schedule_table",
    "schedule_verdict",
    "summarise_success",
    "teacher_energy",
    "two_layer_config",
]

TWO_LAYER_METHODS = ("l12", "relaxed", "sinkhorn")
SETUPS = ("between", "after", "input", "linear")
#: The set-ups whose loss is a convex quadratic in ``M`` (the relaxation's minimisers form a slice).
CONVEX_SETUPS = ("after", "linear")
#: A rounded permutation succeeds when ``L(Q) <= SUCCESS_RTOL * E[f^2]``.
SUCCESS_RTOL = 1e-8


def relu_mean(w: torch.Tensor) -> torch.Tensor:
    """``E[sigma(w . x)] = |w| / sqrt(2 pi)`` for ``x ~ N(0, I)``; ``w`` of shape ``(..., d)`` -> ``(...)``."""
    return torch.linalg.vector_norm(w, dim=-1) / math.sqrt(2.0 * math.pi)


def relu_kernel(U: torch.Tensor, V: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    r"""``K[..., k, l] = E[sigma(u_k . x) sigma(v_l . x)]`` for rows ``u_k`` of ``U (..., p, d)``, ``v_l`` of
    ``V (..., q, d)``; shape ``(..., p, q)``.

    Written as ``(s + (pi - t) u.v) / (2 pi)`` with ``s = sqrt(|u|^2 |v|^2 - (u.v)^2) = |u||v| sin t`` and
    ``t = atan2(s, u.v)``, which equals ``|u||v| (sin t + (pi - t) cos t) / (2 pi)``. ``atan2`` keeps the
    angle accurate and differentiable where ``u`` and ``v`` are parallel (at the solution, ``t = 0``), where
    ``arccos`` has an infinite derivative; ``s^2`` is clamped at ``eps`` before the square root for the
    same reason (a change of at most ``sqrt(eps) / (2 pi)`` in the value).
    """
    if U.shape[-1] != V.shape[-1]:
        raise ValueError(f"U and V must have the same input dimension, got {U.shape[-1]} and {V.shape[-1]}")
    dots = U @ V.transpose(-1, -2)
    norms = torch.linalg.vector_norm(U, dim=-1).unsqueeze(-1) * torch.linalg.vector_norm(V, dim=-1).unsqueeze(-2)
    sine_part = (norms.square() - dots.square()).clamp_min(eps).sqrt()
    angle = torch.atan2(sine_part, dots)
    return (sine_part + (math.pi - angle) * dots) / (2.0 * math.pi)


def _kernel(U: torch.Tensor, V: torch.Tensor, setup: str) -> torch.Tensor:
    """``E[sigma(U x) sigma(V x)^T]``: :func:`relu_kernel`, or ``U V^T`` for the linear set-up."""
    return U @ V.transpose(-1, -2) if setup == "linear" else relu_kernel(U, V)


def _check_setup(setup: str) -> str:
    if setup not in SETUPS:
        raise ValueError(f"unknown setup {setup!r}; use one of {SETUPS}")
    return setup


@dataclass(frozen=True)
class TeacherStudent:
    """A batch of instances of one set-up: ``a (batch, m)``, ``W (batch, m, d)`` (known to the student) and
    the hidden ``perm (batch, n)``, ``n = d`` for ``"input"`` and ``m`` otherwise."""

    setup: str
    a: torch.Tensor
    W: torch.Tensor
    perm: torch.Tensor

    @property
    def size(self) -> int:
        """``n``, the size of the learned matrix."""
        return self.perm.shape[-1]

    def planted(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The teacher's permutation matrix ``P``, shape ``(batch, n, n)``."""
        return permutation_matrix(self.perm, dtype)

    def repeat(self, times: int) -> TeacherStudent:
        """Each instance ``times`` times in a row (``batch * times`` instances), e.g. one per random start."""
        return replace(self, a=self.a.repeat_interleave(times, 0), W=self.W.repeat_interleave(times, 0),
                       perm=self.perm.repeat_interleave(times, 0))


def make_teacher_student(m: int = 8, d: int = 8, batch: int = 1, seed: int | torch.Generator = 0,
                         setup: str = "between") -> TeacherStudent:
    """Random instances: ``w_k ~ N(0, I_d / d)`` (so ``|w_k| ~ 1``), ``a_k ~ N(0, 1)`` (distinct almost
    surely), a uniform ``perm`` of size ``d`` for ``"input"`` and ``m`` otherwise."""
    m, d, batch = check_positive_int(m, "m"), check_positive_int(d, "d"), check_positive_int(batch, "batch")
    gen = as_generator(seed)
    W = torch.randn(batch, m, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    a = torch.randn(batch, m, generator=gen, dtype=torch.float64)
    n = d if _check_setup(setup) == "input" else m
    perm = torch.stack([torch.randperm(n, generator=gen) for _ in range(batch)])
    return TeacherStudent(setup=setup, a=a, W=W, perm=perm)


def _broadcast(problem: TeacherStudent, M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``a``, ``W``, ``P`` reshaped to broadcast against ``M (batch, *extra, n, n)``, on ``M``'s device."""
    n, batch = problem.size, problem.a.shape[0]
    check_square(M)
    if M.shape[-1] != n or M.ndim < 3 or M.shape[0] != batch:
        raise ValueError(f"M must have shape ({batch}, ..., {n}, {n}), got {tuple(M.shape)}")
    extra = (1,) * (M.ndim - 3)
    a = problem.a.to(M.device, M.dtype).reshape(batch, *extra, -1)
    W = problem.W.to(M.device, M.dtype).reshape(batch, *extra, *problem.W.shape[1:])
    P = problem.planted(M.dtype).to(M.device).reshape(batch, *extra, n, n)
    return a, W, P


def _quad(alpha: torch.Tensor, K: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``alpha^T K beta`` over leading dims."""
    return (alpha.unsqueeze(-2) @ K @ beta.unsqueeze(-1)).squeeze(-1).squeeze(-1)


def population_loss(problem: TeacherStudent, M: torch.Tensor) -> torch.Tensor:
    """``L(M) = E[(f(x) - g_M(x))^2]`` in closed form (module docstring) for ``M (batch, ..., n, n)``,
    ``batch`` the problem's; returns shape ``(batch, ...)``."""
    a, W, P = _broadcast(problem, M)
    setup = problem.setup
    if setup in CONVEX_SETUPS:
        u = ((M - P).transpose(-1, -2) @ a.unsqueeze(-1)).squeeze(-1)
        return _quad(u, _kernel(W, W, setup), u)
    A, B = (P @ W, M @ W) if setup == "between" else (W @ P, W @ M)
    return _quad(a, _kernel(A, A, setup), a) - 2.0 * _quad(a, _kernel(A, B, setup), a) + _quad(a, _kernel(B, B, setup), a)


def teacher_energy(problem: TeacherStudent) -> torch.Tensor:
    """``E[f(x)^2]``, shape ``(batch,)``: ``L(0)``, since every student outputs 0 at ``M = 0`` (up to the
    ``eps`` of :func:`relu_kernel`, ~1e-7 relative). The scale of :data:`SUCCESS_RTOL`."""
    n = problem.size
    return population_loss(problem, torch.zeros(problem.a.shape[0], n, n, dtype=torch.float64))


def network_output(problem: TeacherStudent, M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The student ``g_M(x)`` evaluated literally (the table of the module docstring) for one instance
    (``problem.a`` of shape ``(1, m)``), ``M (n, n)`` and inputs ``x (samples, d)`` -> ``(samples,)``;
    ``M = P`` gives the teacher."""
    a, W = problem.a[0], problem.W[0]
    if problem.setup == "between":
        return torch.relu(x @ (M @ W).T) @ a
    if problem.setup == "after":
        return torch.relu(x @ W.T) @ M.T @ a
    if problem.setup == "input":
        return torch.relu(x @ (W @ M).T) @ a
    return x @ (M @ W).T @ a


def monte_carlo_loss(problem: TeacherStudent, M: torch.Tensor, samples: int = 100_000,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo estimate of ``L(M)`` for one instance (batch 1, ``M (n, n)``) and its standard error, from
    ``samples`` draws of ``x ~ N(0, I_d)`` through :func:`network_output`: the oracle for
    :func:`population_loss`."""
    if problem.a.shape[0] != 1:
        raise ValueError(f"monte_carlo_loss takes one instance, got a batch of {problem.a.shape[0]}")
    samples = check_positive_int(samples, "samples")
    x = torch.randn(samples, problem.W.shape[-1], generator=as_generator(seed), dtype=problem.W.dtype)
    sq = (network_output(problem, problem.planted()[0], x) - network_output(problem, M, x)).square()
    return sq.mean(), sq.std() / math.sqrt(samples)


def convexity_gap(problem: TeacherStudent, pairs: int = 100, seed: int = 0) -> float:
    """The largest ``L((X + Y) / 2) - (L(X) + L(Y)) / 2`` over ``pairs`` random pairs of doubly stochastic
    matrices per instance (> 0 proves ``L`` is not convex on ``D_n``; <= 0 up to rounding is consistent
    with convexity), relative to the mean ``E[f^2]`` of the instances."""
    gen = as_generator(seed)
    shape = (problem.a.shape[0], check_positive_int(pairs, "pairs"), problem.size, problem.size)
    X, Y = (project_doubly_stochastic(torch.rand(shape, generator=gen, dtype=torch.float64) ** 4, 50) for _ in range(2))
    gap = population_loss(problem, (X + Y) / 2) - (population_loss(problem, X) + population_loss(problem, Y)) / 2
    return float(gap.max() / teacher_energy(problem).mean())


def two_layer_config(method: str, setup: str = "between") -> SolverConfig:
    """Solver settings for ``method`` (ours: ``docs/tuning.md``), one random start each:
    ``"l12"`` 600 projected steps of size ``step / L``, one normalisation sweep, ``lam`` ramped
    geometrically from ``0.001`` to ``0.1`` over the first 80% of the steps; ``"relaxed"`` the same with
    ``lam = 0``; ``"sinkhorn"`` 300 Adam steps (learning rate 0.1) on the logits, 10 Sinkhorn iterations,
    ``tau`` 1 -> 0.05. ``L`` is :func:`_curvature`; ``step`` is 2 for the ReLU set-ups (whose ``L`` is a
    scale, not a bound) and 1 for the convex ones (whose ``L`` is the exact smoothness constant)."""
    step = 1.0 if _check_setup(setup) in CONVEX_SETUPS else 2.0
    if method in ("l12", "relaxed"):
        return SolverConfig(parameterisation="projected", iters=600, step=step, lam=0.1 if method == "l12" else 0.0,
                            lam_start=0.01, ramp=0.8, sweeps=1, restarts=1)
    if method == "sinkhorn":
        return SolverConfig(parameterisation="sinkhorn", iters=300, step=0.1, restarts=1, sinkhorn_iters=10)
    raise ValueError(f"unknown method {method!r}; use one of {TWO_LAYER_METHODS}")


def _curvature(problem: TeacherStudent) -> torch.Tensor:
    """Per instance, the step scale ``L``: for the convex set-ups the smoothness constant of ``L(M)``,
    ``2 |a|^2 lambda_max(K)``; for the ReLU ones ``|a|^2 max_k |w_k|^2`` (a scale for the curvature)."""
    norm_a = problem.a.square().sum(-1)
    if problem.setup in CONVEX_SETUPS:
        return 2.0 * norm_a * torch.linalg.eigvalsh(_kernel(problem.W, problem.W, problem.setup))[..., -1]
    return norm_a * torch.linalg.vector_norm(problem.W, dim=-1).square().amax(-1)


def learn_permutation(
    problem: TeacherStudent,
    method: str = "l12",
    *,
    lam: float | None = None,
    restarts: int | None = None,
    iters: int | None = None,
    config: SolverConfig | None = None,
    seed: int | torch.Generator = 0,
    device: str | torch.device = "cpu",
    show_progress: bool = False,
) -> OptimizeResult:
    """Learn ``M`` for every instance of ``problem`` by ``method``; ``result.col_ind`` should equal ``problem.perm``.

    ``lam``, ``restarts`` and ``iters`` override the config (``lam`` only for ``"l12"``; it must be ``>= 0``).
    ``result.fun`` is ``L`` at the rounded permutation (0 when the permutation is recovered).
    """
    if method not in TWO_LAYER_METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {TWO_LAYER_METHODS}")
    if lam is not None:  # checked for every method, though only "l12" uses it
        check_nonnegative(lam, "lam")
    cfg = replace_given(config or two_layer_config(method, problem.setup), restarts=restarts, iters=iters,
                        lam=0.0 if method == "relaxed" else lam if method == "l12" else None)
    for name in ("a", "W"):
        if not bool(torch.isfinite(getattr(problem, name)).all()):
            raise ValueError(f"problem.{name} contains NaN or inf")
    dev = resolve_device(device)
    return solve_permutation(lambda M: population_loss(problem, M), problem.a.shape[0], problem.size, cfg,
                             step_scale=1.0 / _curvature(problem).to(dev), generator=as_generator(seed), device=dev,
                             show_progress=show_progress)


def comparison_table(
    setups: tuple[str, ...] | list[str] = SETUPS,
    sizes: tuple[int, ...] | list[int] = (4, 6),
    methods: tuple[str, ...] | list[str] = TWO_LAYER_METHODS,
    *,
    instances: int = 10,
    starts: int = 4,
    configs: dict[str, SolverConfig] | None = None,
    iters: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    show_progress: bool = False,
) -> pd.DataFrame:
    """``instances`` random instances (``m = d = n``) per set-up and size, each solved from ``starts`` random
    starts by every method; one row per start.

    Every method sees the same instances, and ``"l12"`` and ``"relaxed"`` the same starts (``"sinkhorn"``
    draws its logits from the same seed). ``configs`` maps a method to its solver settings (default
    :func:`two_layer_config`); ``iters`` overrides the number of steps. Columns: ``setup, n, method, instance,
    start``, ``success`` (the rounded ``Q`` computes the teacher's function: ``L(Q) <= SUCCESS_RTOL E[f^2]``),
    ``exact`` (``Q = P``), ``rows_matched`` (fraction of rows with ``Q = P``), ``rounded_loss`` and
    ``relaxed_loss`` (``L`` at ``Q`` and at the final ``M``, relative to ``E[f^2]``), ``penalty``
    (``P(M)``), ``distance`` (``||M - P||_F``), ``min_entry`` (the smallest entry of ``M``), ``seconds``.
    """
    instances, starts = check_positive_int(instances, "instances"), check_positive_int(starts, "starts")
    for method in methods:
        if method not in TWO_LAYER_METHODS:
            raise ValueError(f"unknown method {method!r}; use one of {TWO_LAYER_METHODS}")
    settings = [(_check_setup(s), check_positive_int(n, "n")) for s in setups for n in sizes]
    rows = []
    for setup, n in progress(settings, enabled=show_progress, desc="two-layer"):
        problem = make_teacher_student(n, n, instances, seed=seed + 1000 * n, setup=setup).repeat(starts)
        energy = teacher_energy(problem)
        P = problem.planted()
        for method in methods:
            config = (configs or {}).get(method)
            result = learn_permutation(problem, method, iters=iters, seed=seed, device=device,
                                       config=None if config is None else replace(config, restarts=1))
            perm, M = result.col_ind.cpu(), result.M.cpu().double()
            columns = {
                "success": (result.fun.cpu() <= SUCCESS_RTOL * energy).tolist(),
                "exact": (perm == problem.perm).all(-1).tolist(),
                "rows_matched": (perm == problem.perm).double().mean(-1).tolist(),
                "rounded_loss": (result.fun.cpu() / energy).tolist(),
                "relaxed_loss": (population_loss(problem, M) / energy).tolist(),
                "penalty": l12_penalty(M).tolist(),
                "distance": torch.linalg.matrix_norm(M - P).tolist(),
                "min_entry": M.flatten(-2).amin(-1).tolist(),
            }
            for b in range(instances * starts):
                rows.append({"setup": setup, "n": n, "method": method, "instance": b // starts, "start": b % starts,
                             **{key: values[b] for key, values in columns.items()},
                             "seconds": result.seconds / (instances * starts)})
    return pd.DataFrame(rows)


def best_of(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """For every instance and method of a :func:`comparison_table`, the start of lowest ``rounded_loss``
    among its first ``k`` (what ``k`` restarts return); one row per instance."""
    k = check_positive_int(k, "k")
    first = table[table["start"] < k]
    keys = ["setup", "n", "method", "instance"]
    return first.loc[first.groupby(keys, sort=False)["rounded_loss"].idxmin()].reset_index(drop=True)


def summarise_success(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per set-up, size and method of a :func:`comparison_table`: ``success`` (single start, mean
    over every start), ``success_best`` (best of ``k`` starts, mean over instances), ``instances``,
    ``exact``, ``penalty``, ``rounded_loss``, ``relaxed_loss``, ``distance`` (means over starts),
    ``interior`` (fraction of final ``M`` with every entry > 1e-3), ``seconds``."""
    keys = ["setup", "n", "method"]
    table = table.assign(interior=table["min_entry"] > 1e-3)
    single = table.groupby(keys, sort=False)[["success", "exact", "penalty", "rounded_loss", "relaxed_loss",
                                              "distance", "interior", "seconds"]].mean()
    best = best_of(table, k).groupby(keys, sort=False)["success"].agg(["mean", "size"])
    single.insert(1, "success_best", best["mean"])
    single.insert(2, "instances", best["size"])
    return single.reset_index()


def _paired(table: pd.DataFrame, setup: str, first: str, second: str, k: int | None) -> tuple[pd.DataFrame, str]:
    """Per-instance (best of ``k``) or per-start (``k`` None) success of two methods side by side, and a label."""
    rows = table[table["setup"] == setup]
    if k is None:
        keys, label = ["n", "instance", "start"], "single start"
    else:
        rows, keys, label = best_of(rows, k), ["n", "instance"], f"best of {k}"
    wide = rows.pivot_table(index=keys, columns="method", values="success", aggfunc="first").astype(float)
    return wide[[first, second]], label


def compare_success(table: pd.DataFrame, setup: str, first: str, second: str, k: int | None = None) -> Verdict:
    """Does ``first`` find the teacher's permutation more often than ``second`` in ``setup``?

    Paired over the same instances and starts of a :func:`comparison_table` (best of ``k`` starts per
    instance, or every start when ``k`` is None), by :func:`aslib.study.verdicts.significance` (the paired t-test
    at the project's level). The evidence gives the rates per size, the pooled difference and ``p``.
    """
    wide, label = _paired(table, setup, first, second, k)
    answer, p = significance(wide[first].to_numpy(), wide[second].to_numpy(), paired=True)
    mean = float((wide[first] - wide[second]).mean())
    by_n = wide.groupby(level="n").mean()
    sizes = "/".join(str(n) for n in by_n.index)
    rates = lambda method: "/".join(f"{v:.2f}" for v in by_n[method])  # noqa: E731
    evidence = (f"{rates(first)} vs {rates(second)} at n = {sizes}; difference {mean:+.2f}, p = {p:.2g}, "
                f"{len(wide)} {'starts' if k is None else 'instances'} paired")
    return verdict(f"{setup}, {label}: {first} finds the teacher more often than {second}", answer, evidence)


def claim_verdicts(table: pd.DataFrame, k: int) -> list[Verdict]:
    """For every set-up of a :func:`comparison_table`: l12 against relaxed and against sinkhorn (single start
    and best of ``k``), and whether the set-up supports the paper's claim: the relaxation fails (its best-of-k
    rate, pooled over sizes, is below 1/2) and the penalty succeeds (l12 beats relaxed beyond the noise)."""
    verdicts = []
    for setup in dict.fromkeys(table["setup"]):
        versus = [compare_success(table, setup, "l12", other, kk) for other in ("relaxed", "sinkhorn")
                  for kk in (None, k) if other in set(table["method"])]
        verdicts += versus
        best = best_of(table[table["setup"] == setup], k).groupby("method")["success"].mean()
        beats = compare_success(table, setup, "l12", "relaxed", k).answer == "yes"
        verdicts.append(verdict(
            f"{setup} supports the paper's claim (relaxation fails, penalty succeeds)", bool(best["relaxed"] < 0.5 and beats),
            f"best of {k}: relaxed {best['relaxed']:.2f}, l12 {best['l12']:.2f}, pooled over sizes"))
    return verdicts


def failure_verdicts(table: pd.DataFrame, setup: str, k: int, *, vertex_penalty: float = 0.05,
                     slice_loss: float = 1e-3) -> list[Verdict]:
    """Where l12's failed starts end in ``setup``: near a wrong permutation (``P(M) < vertex_penalty``),
    on the relaxation's minimising set (relative loss ``< slice_loss``, fractional), or at a fractional
    point off it; and what ``k`` restarts do to its rate."""
    rows = table[(table["setup"] == setup) & (table["method"] == "l12")]
    failed = rows[~rows["success"]]
    at_vertex = failed["penalty"] < vertex_penalty
    on_slice = ~at_vertex & (failed["relaxed_loss"] < slice_loss)
    off = ~at_vertex & ~on_slice
    count = len(failed)
    answer = lambda mask: bool(mask.mean() > 0.5) if count else None  # noqa: E731
    share = lambda mask: f"{int(mask.sum())} of {count} failed starts"  # noqa: E731
    single, best = float(rows["success"].mean()), float(best_of(rows, k)["success"].mean())
    return [
        verdict(f"{setup}: most of l12's failed starts end near a wrong permutation", answer(at_vertex),
                share(at_vertex)),
        verdict(f"{setup}: most of l12's failed starts end fractional on the relaxation's minimisers",
                answer(on_slice), share(on_slice)),
        verdict(f"{setup}: most of l12's failed starts end fractional off them",
                answer(off), share(off)),
        verdict(f"{setup}: {k} restarts bring l12 to at least 0.9", best >= 0.9,
                f"{single:.2f} single start -> {best:.2f} best of {k}; independent starts predict {1 - (1 - single) ** k:.2f}"),
    ]


def schedule_table(setup: str, n: int, lams: tuple[float, ...] | list[float], iters: tuple[int, ...] | list[int], *,
                   instances: int = 10, starts: int = 4, seed: int = 0, device: str | torch.device = "cpu") -> pd.DataFrame:
    """l12 in ``setup`` at size ``n`` with every ``lam`` and number of ``iters`` (other settings
    :func:`two_layer_config`'s, which is always included), on the instances and starts of
    :func:`comparison_table`; its ``method`` column names the setting, e.g. ``"l12 lam=0.1 iters=600"``."""
    default = two_layer_config("l12", setup)
    settings = dict.fromkeys([(default.lam, default.iters)] + [(float(lam), check_positive_int(it, "iters"))
                                                                for lam in lams for it in iters])
    tables = []
    for lam, its in settings:
        config = replace(default, lam=lam, iters=its)
        table = comparison_table((setup,), (n,), ("l12",), instances=instances, starts=starts,
                                 configs={"l12": config}, seed=seed, device=device)
        tables.append(table.assign(method=f"l12 lam={lam:g} iters={its}", lam=lam, iters=its))
    return pd.concat(tables, ignore_index=True)


def schedule_verdict(table: pd.DataFrame) -> Verdict:
    """Does the best setting of a :func:`schedule_table` (highest single-start success) beat the default
    beyond the noise (:func:`compare_success`, paired over the same starts)? Choosing the best of the grid
    favours it, so a "tie" says the schedule is not what limits l12."""
    default = two_layer_config("l12", table["setup"].iloc[0])
    base = f"l12 lam={default.lam:g} iters={default.iters}"
    rates = table.groupby("method")["success"].mean()
    best = rates.drop(base).idxmax() if len(rates) > 1 else base
    if best == base:
        return verdict("the best lam / iteration setting beats l12's default", "n/a", "the grid holds only the default")
    return compare_success(table, table["setup"].iloc[0], best, base)
