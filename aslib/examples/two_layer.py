r"""A teacher-student two-layer ReLU network whose student must learn a permutation: loss in closed form.

The model (ours; the paper's exact set-up is not available). Input ``x ~ N(0, I_d)``, ``sigma = ReLU``.

* Teacher: ``f(x) = sum_k a_k sigma(w*_k . x)`` with output weights ``a`` of shape ``(m,)`` and hidden
  weights ``W*`` of shape ``(m, d)`` (rows ``w*_k``).
* The student knows ``a`` and a shuffled copy of the hidden weights, ``W = P^T W*`` with
  ``P = permutation_matrix(perm)`` for a hidden ``perm`` (so ``W[perm[i]] = W*[i]``), and learns the
  ``m x m`` matrix ``M`` that sits between the layers: ``g_M(x) = sum_k a_k sigma((M W)_k . x)``.
  ``M = P`` gives ``M W = W*`` and ``g = f``; with distinct ``a_k`` and generic ``W*`` no other
  permutation does.
* Loss: the population risk ``L(M) = E_x[(f(x) - g_M(x))^2]``, in closed form through the ReLU/Gaussian
  kernel ``K(u, v) = E[sigma(u.x) sigma(v.x)] = |u||v| (sin t + (pi - t) cos t) / (2 pi)``,
  ``t = angle(u, v)``:

  .. math::
      L(M) = a^T K(W^*, W^*) a - 2 a^T K(W^*, M W) a + a^T K(M W, M W) a .

Relaxed to doubly stochastic ``M``, the rows of ``M W`` are convex combinations of the teacher's
weights, and ``L`` is not convex in ``M``. The methods are those of graph matching: ``"l12"``,
``"relaxed"`` (``lam = 0``) and ``"sinkhorn"``, all through :func:`aslib.examples.solver.solve_permutation`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch

from aslib.solver import OptimizeResult as SolveResult, SolverConfig, apply_overrides, solve_permutation
from aslib.penalty import l12_penalty, permutation_matrix
from aslib.runtime import resolve_device

__all__ = [
    "METHODS",
    "TeacherStudent",
    "default_config",
    "learn_permutation",
    "make_teacher_student",
    "monte_carlo_loss",
    "population_loss",
    "relu_kernel",
    "relu_mean",
    "success_table",
]

METHODS = ("l12", "relaxed", "sinkhorn")


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


@dataclass
class TeacherStudent:
    """A batch of instances. ``a (batch, m)``, ``W_teacher (batch, m, d)``, ``W (batch, m, d)`` the shuffled
    copy with ``W[b, perm[b, i]] = W_teacher[b, i]``, and ``perm (batch, m)``."""

    a: torch.Tensor
    W_teacher: torch.Tensor
    W: torch.Tensor
    perm: torch.Tensor


def make_teacher_student(m: int = 8, d: int = 8, batch: int = 1, seed: int | torch.Generator = 0) -> TeacherStudent:
    """Random instances: ``w*_k ~ N(0, I_d / d)`` (so ``|w*_k| ~ 1``), ``a_k ~ N(0, 1)``, a uniform ``perm``."""
    for name, value in (("m", m), ("d", d), ("batch", batch)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    gen = seed if isinstance(seed, torch.Generator) else None
    if gen is None:
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer or a torch.Generator, got {seed!r}")
        gen = torch.Generator().manual_seed(seed)
    W_teacher = torch.randn(batch, m, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    a = torch.randn(batch, m, generator=gen, dtype=torch.float64)
    perm = torch.stack([torch.randperm(m, generator=gen) for _ in range(batch)])
    P = permutation_matrix(perm, torch.float64)
    return TeacherStudent(a=a, W_teacher=W_teacher, W=P.transpose(-1, -2) @ W_teacher, perm=perm)


def population_loss(a: torch.Tensor, W_teacher: torch.Tensor, W: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``L(M) = E[(f(x) - g_M(x))^2]`` in closed form (module docstring), broadcasting over leading dims.

    Shapes: ``a (..., m)``, ``W_teacher`` and ``W (..., m, d)``, ``M (..., m, m)`` -> ``(...)``.
    """
    V = M @ W
    quad = lambda X, Y: (a.unsqueeze(-2) @ relu_kernel(X, Y) @ a.unsqueeze(-1)).squeeze(-1).squeeze(-1)  # noqa: E731
    return quad(W_teacher, W_teacher) - 2.0 * quad(W_teacher, V) + quad(V, V)


def monte_carlo_loss(a: torch.Tensor, W_teacher: torch.Tensor, W: torch.Tensor, M: torch.Tensor,
                     samples: int = 100_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo estimate of ``L(M)`` for one instance (``a (m,)``, ``W (m, d)``, ``M (m, m)``) and its
    standard error, from ``samples`` draws of ``x ~ N(0, I_d)``; the oracle for :func:`population_loss`."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, W.shape[-1], generator=gen, dtype=W.dtype)
    f = torch.relu(x @ W_teacher.T) @ a
    g = torch.relu(x @ (M @ W).T) @ a
    sq = (f - g).square()
    return sq.mean(), sq.std() / math.sqrt(samples)


def default_config(method: str) -> SolverConfig:
    """Solver settings for ``method`` (ours, chosen on m = d = 5 and 8), one random start each:
    ``"l12"`` 600 projected steps of size ``2 / L`` with ``L = ||a||^2 max_k |w*_k|^2`` (a scale for the
    curvature of ``L(M)``, not a proven bound), one normalisation sweep, ``lam`` ramped geometrically
    from 0.001 to 0.1 over the first 80% of the steps; ``"relaxed"`` the same with ``lam = 0``;
    ``"sinkhorn"`` 300 Adam steps (learning rate 0.1) on the logits, 10 Sinkhorn iterations,
    ``tau`` 1 -> 0.05."""
    if method in ("l12", "relaxed"):
        return SolverConfig(parameterisation="projected", iters=600, step=2.0, lam=0.1 if method == "l12" else 0.0,
                            lam_start=0.01, ramp=0.8, sweeps=1, restarts=1)
    if method == "sinkhorn":
        return SolverConfig(parameterisation="sinkhorn", iters=300, step=0.1, restarts=1, sinkhorn_iters=10)
    raise ValueError(f"unknown method {method!r}; use one of {METHODS}")


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
) -> SolveResult:
    """Learn ``M`` for every instance of ``problem`` by ``method``; ``result.perm`` should equal ``problem.perm``.

    ``lam``, ``restarts`` and ``iters`` override the config (``lam`` only for ``"l12"``; it must be ``>= 0``).
    ``result.rounded_loss`` is ``L`` at the rounded permutation (0 when the permutation is recovered).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    cfg = apply_overrides(config or default_config(method), method, lam=lam, restarts=restarts, iters=iters)
    for name in ("a", "W_teacher", "W"):
        if not bool(torch.isfinite(getattr(problem, name)).all()):
            raise ValueError(f"problem.{name} contains NaN or inf")
    dev = resolve_device(device)
    a, Wt, W = (t.to(dev, torch.float64).unsqueeze(1) for t in (problem.a, problem.W_teacher, problem.W))
    smooth = problem.a.square().sum(-1) * torch.linalg.vector_norm(problem.W_teacher, dim=-1).square().amax(-1)
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    batch, m = problem.a.shape
    return solve_permutation(lambda M: population_loss(a, Wt, W, M), batch, m, cfg,
                             step_scale=1.0 / smooth.to(dev), generator=gen, device=dev, show_progress=show_progress)


def success_table(
    m: int,
    d: int,
    starts: int,
    methods: tuple[str, ...] | list[str] = METHODS,
    *,
    iters: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    show_progress: bool = False,
) -> pd.DataFrame:
    """One random instance per start (``starts`` of them, solved as one batch) for each method, with
    :func:`default_config` (``iters`` overrides its number of steps).

    Columns: ``method, start, success`` (rounded permutation == planted one), ``vertices`` (fraction of
    rows matched), ``rounded_loss`` (``L`` at the rounded permutation), ``relaxed_loss`` (``L`` at the
    final relaxed ``M``), ``penalty`` (``P`` of the final ``M``), ``seconds`` (per start).
    """
    problem = make_teacher_student(m, d, starts, seed=seed)
    rows = []
    for method in methods:
        result = learn_permutation(problem, method, iters=iters, seed=seed, device=device,
                                   show_progress=show_progress)
        perm = result.perm.cpu()
        relaxed = population_loss(problem.a, problem.W_teacher, problem.W, result.M.cpu().double())
        penalty = l12_penalty(result.M.cpu())
        for b in range(starts):
            rows.append({
                "method": method, "start": b, "success": bool((perm[b] == problem.perm[b]).all()),
                "vertices": (perm[b] == problem.perm[b]).double().mean().item(),
                "rounded_loss": result.rounded_loss[b].item(), "relaxed_loss": relaxed[b].item(),
                "penalty": penalty[b].item(), "seconds": result.seconds / starts,
            })
    return pd.DataFrame(rows)
