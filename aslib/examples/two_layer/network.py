"""The closed-form teacher-student network of :mod:`aslib.examples.two_layer`: kernels, instances, losses."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from aslib.core.checks import as_generator, check_positive_int
from aslib.core.penalty import check_square, permutation_matrix, project_doubly_stochastic


__all__ = [
    "CONVEX_SETUPS",
    "SETUPS",
    "SUCCESS_RTOL",
    "TWO_LAYER_ALTERNATIVES",
    "TWO_LAYER_METHODS",
    "TeacherStudent",
    "check_setup",
    "convexity_gap",
    "make_teacher_student",
    "monte_carlo_loss",
    "network_output",
    "population_loss",
    "relu_kernel",
    "relu_mean",
    "setup_kernel",
    "teacher_energy",
]

TWO_LAYER_METHODS = ("l12", "relaxed", "sinkhorn")
#: Further methods accepted everywhere, left out of the default comparison: ``"lp"``, ``"tl1"``, ``"entropy"``
#: (``"l12"`` with that penalty) and ``"gumbel_sinkhorn"`` (``"sinkhorn"`` with Gumbel noise).
TWO_LAYER_ALTERNATIVES = ("lp", "tl1", "entropy", "gumbel_sinkhorn")
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


def setup_kernel(U: torch.Tensor, V: torch.Tensor, setup: str) -> torch.Tensor:
    """``E[sigma(U x) sigma(V x)^T]``: :func:`relu_kernel`, or ``U V^T`` for the linear set-up."""
    return U @ V.transpose(-1, -2) if setup == "linear" else relu_kernel(U, V)


def check_setup(setup: str) -> str:
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
    n = d if check_setup(setup) == "input" else m
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
        return _quad(u, setup_kernel(W, W, setup), u)
    A, B = (P @ W, M @ W) if setup == "between" else (W @ P, W @ M)
    return _quad(a, setup_kernel(A, A, setup), a) - 2.0 * _quad(a, setup_kernel(A, B, setup), a) + _quad(a, setup_kernel(B, B, setup), a)


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


