r"""Penalties that vanish on the doubly stochastic matrices exactly at the permutations, and their registry.

Every penalty ``P`` maps ``M (..., n, n)`` to ``P(M)`` of shape ``(...)`` (differentiable) and says what is
known about it (``docs/mathematics.md`` section 13): its closed-form gradient, its Lipschitz constant in the
Frobenius norm on non-negative matrices (None where it has none), and the rounding threshold ``T`` and factor
``c`` of its error bound: for ``M in D_n`` with ``P(M) < T`` the row-wise argmax ``R`` is a permutation and
``sum_ij |M_ij - R_ij| <= c P(M)``.

* ``"l12"`` (the paper's, the default): :func:`~aslib.core.penalty.l12_penalty`,
  ``sum_i (||M_i||_1 - ||M_i||_2) + sum_j (||M^j||_1 - ||M^j||_2)``; ``L = 2 sqrt(n (n - 1))``,
  ``T = 2 (1 - 1/sqrt 2)``, ``c = 2``.
* The separable penalties ``P(M) = sum_ij phi(|M_ij|) - n phi(1)`` with ``phi`` strictly concave on
  ``[0, inf)``, ``phi(0) = 0``: each row of a point of ``D_n`` contributes ``sum_j phi(M_ij) - phi(1) >= 0``
  (``phi`` is subadditive), zero iff the row has one non-zero entry, so ``P = 0`` on ``D_n`` exactly at the
  permutations. ``L = n sup phi'``, ``T = 2 phi(1/2) - phi(1)``, ``c = 1/T``.

  * ``"lp"``: ``phi(x) = (x + eps)^p - eps^p``, ``0 < p < 1`` (the Lp penalty of
    :func:`~aslib.core.penalty.lp_penalty`, smoothed by ``eps`` so that ``phi'(0) = p eps^(p-1)`` is finite;
    ``eps = 0``: no Lipschitz constant, ``phi'(x) = p x^(p-1)`` is unbounded at 0). Registered: ``p = 1/2``,
    ``eps = 1e-3``.
  * ``"tl1"``: the transformed l1, ``phi(x) = rho_a(x) = (a + 1) x / (a + x)``, ``phi'(0) = (a + 1) / a``.
    Registered: ``a = 1``.
  * ``"entropy"``: ``phi(x) = -x log x`` on ``M >= 0`` (``phi(1) = 0``): ``P(M) = -sum_ij M_ij log M_ij``, the
    implicit penalty of annealed Sinkhorn; no Lipschitz constant (``phi'(x) = -log x - 1`` is unbounded at 0).

A new penalty is one :class:`Penalty` (or :class:`SeparablePenalty`) instance and one call of
:func:`register_penalty`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from aslib.core.penalty import ROUNDING_THRESHOLD, check_square, fused_l12_penalty, l12_penalty, lp_penalty
from aslib.utils.registry import Registry

__all__ = [
    "DEFAULT_PENALTY",
    "PENALTIES",
    "Entropy",
    "L12",
    "Lp",
    "Penalty",
    "SeparablePenalty",
    "TransformedL1",
    "get_penalty",
    "register_penalty",
    "unregister_penalty",
]

#: The penalty every configuration uses unless told otherwise: the paper's.
DEFAULT_PENALTY = "l12"


class Penalty:
    """A penalty on ``(..., n, n)`` matrices: its value, gradient and the constants of its facts.

    Attributes:
        name: the registry key (set by :func:`register_penalty`).
        rounding_threshold: ``T``: on ``D_n``, ``P(M) < T`` makes the row-wise argmax a permutation ``R``.
        error_factor: ``c``: then ``sum_ij |M_ij - R_ij| <= c P(M)``.
    """

    name: str = ""
    rounding_threshold: float = 0.0
    error_factor: float = math.inf

    def value(self, M: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
        """``P(M)``, shape ``(...)``, differentiable."""
        raise NotImplementedError

    def fused(self, M: torch.Tensor) -> torch.Tensor:
        """``P(M)`` for the training loop's hot path (no checks); by default :meth:`value` unchecked."""
        return self.value(M, check_finite=False)

    def gradient(self, M: torch.Tensor) -> torch.Tensor:
        """``dP/dM`` in closed form, shape of ``M`` (where ``P`` is differentiable)."""
        raise NotImplementedError

    @property
    def mirror_gradient(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """What :func:`~aslib.core.penalty.mirror_step` adds for the penalty: :meth:`gradient` (None: the
        l1-2 gradient written into the step)."""
        return self.gradient

    def lipschitz(self, n: int) -> float | None:
        """``L`` with ``|P(M) - P(N)| <= L ||M - N||_F`` for non-negative ``n x n`` ``M``, ``N`` (None: no such ``L``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class L12(Penalty):
    """The paper's l1-2 penalty, :func:`~aslib.core.penalty.l12_penalty` (``docs/mathematics.md`` sections 2-7)."""

    rounding_threshold = ROUNDING_THRESHOLD
    error_factor = 2.0

    def value(self, M: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
        """:func:`~aslib.core.penalty.l12_penalty`."""
        return l12_penalty(M, check_finite=check_finite)

    def fused(self, M: torch.Tensor) -> torch.Tensor:
        """:func:`~aslib.core.penalty.fused_l12_penalty` (its backward in one pass)."""
        return fused_l12_penalty(M)

    def gradient(self, M: torch.Tensor) -> torch.Tensor:
        """``2 sgn(M_ij) - M_ij / ||M_i||_2 - M_ij / ||M^j||_2`` (a zero line contributes 0)."""
        rows, cols = torch.linalg.vector_norm(M, dim=-1), torch.linalg.vector_norm(M, dim=-2)
        inv_rows = torch.where(rows > 0, rows.reciprocal(), torch.zeros_like(rows)).unsqueeze(-1)
        inv_cols = torch.where(cols > 0, cols.reciprocal(), torch.zeros_like(cols)).unsqueeze(-2)
        return 2.0 * M.sgn() - M * (inv_rows + inv_cols)

    @property
    def mirror_gradient(self) -> None:
        return None

    def lipschitz(self, n: int) -> float:
        """``2 sqrt(n (n - 1))`` (:func:`~aslib.core.penalty.lipschitz_constant`)."""
        return 2.0 * math.sqrt(n * (n - 1))


class SeparablePenalty(Penalty):
    r"""``P(M) = sum_ij phi(|M_ij|) - n phi(1)``, ``phi`` strictly concave on ``[0, inf)`` with ``phi(0) = 0``.

    A subclass gives :meth:`phi` and :meth:`dphi` (on tensors ``x >= 0``) and ``slope_at_zero`` (``phi'(0+)``,
    ``inf`` where unbounded). Threshold ``T = 2 phi(1/2) - phi(1)`` and factor ``c = 1/T``.
    """

    slope_at_zero: float = math.inf

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dphi(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _phi(self, x: float) -> float:
        return float(self.phi(torch.tensor(x, dtype=torch.float64)))

    @property
    def rounding_threshold(self) -> float:  # type: ignore[override]
        return 2.0 * self._phi(0.5) - self._phi(1.0)

    @property
    def error_factor(self) -> float:  # type: ignore[override]
        return 1.0 / self.rounding_threshold

    def value(self, M: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
        """``sum_ij phi(|M_ij|) - n phi(1)``."""
        check_square(M, check_finite=check_finite)
        return self.phi(M.abs()).sum((-2, -1)) - M.shape[-1] * self._phi(1.0)

    def gradient(self, M: torch.Tensor) -> torch.Tensor:
        """``phi'(|M_ij|) sgn(M_ij)``."""
        return self.dphi(M.abs()) * M.sgn()

    def lipschitz(self, n: int) -> float | None:
        """``n phi'(0+)``: ``|phi(x) - phi(y)| <= phi'(0) |x - y|`` and ``sum |M - N| <= n ||M - N||_F``."""
        return None if math.isinf(self.slope_at_zero) else n * self.slope_at_zero


class Lp(SeparablePenalty):
    """``phi(x) = (x + eps)^p - eps^p``, ``0 < p < 1``: ``P(M) = lp_penalty(M, p, eps) - n (1 + eps)^p -
    n (n - 1) eps^p`` (:func:`~aslib.core.penalty.lp_penalty` is ``sum_ij (|M_ij| + eps)^p``)."""

    def __init__(self, p: float = 0.5, eps: float = 1e-3) -> None:
        if not 0.0 < p < 1.0:
            raise ValueError(f"p must lie in (0, 1), got {p!r}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self.p, self.eps = float(p), float(eps)
        self.slope_at_zero = math.inf if eps == 0 else p * eps ** (p - 1.0)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.eps).pow(self.p) - self.eps**self.p

    def dphi(self, x: torch.Tensor) -> torch.Tensor:
        return self.p * (x + self.eps).pow(self.p - 1.0)

    def value(self, M: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
        """``lp_penalty(M, p, eps) - n (1 + eps)^p - n (n - 1) eps^p``."""
        check_square(M, check_finite=False)
        n = M.shape[-1]
        constant = n * (1.0 + self.eps) ** self.p + n * (n - 1) * self.eps**self.p
        return lp_penalty(M, self.p, eps=self.eps) - constant

    def __repr__(self) -> str:
        return f"Lp({self.name!r}, p={self.p:g}, eps={self.eps:g})"


class TransformedL1(SeparablePenalty):
    """``phi(x) = rho_a(x) = (a + 1) x / (a + x)``, ``a > 0`` (``phi(1) = 1``): ``P(M) = sum_ij rho_a(|M_ij|) - n``."""

    def __init__(self, a: float = 1.0) -> None:
        if not a > 0:
            raise ValueError(f"a must be > 0, got {a!r}")
        self.a = float(a)
        self.slope_at_zero = (a + 1.0) / a

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return (self.a + 1.0) * x / (self.a + x)

    def dphi(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * (self.a + 1.0) / (self.a + x).square()

    def __repr__(self) -> str:
        return f"TransformedL1({self.name!r}, a={self.a:g})"


class Entropy(SeparablePenalty):
    """``phi(x) = -x log x`` (``0 log 0 = 0``), for ``M >= 0``: ``P(M) = -sum_ij M_ij log M_ij``; no Lipschitz
    constant (``phi'(0+) = inf``), so autograd's gradient at an exact 0 is ``inf``."""

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.entr(x)

    def dphi(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.log(x) - 1.0

    def value(self, M: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
        """``-sum_ij M_ij log M_ij`` (``entr``; ``-inf`` where an entry is negative)."""
        check_square(M, check_finite=check_finite)
        return torch.special.entr(M).sum((-2, -1))

    def gradient(self, M: torch.Tensor) -> torch.Tensor:
        """``-log M_ij - 1`` (``+inf`` at 0)."""
        return self.dphi(M)


#: The penalties by name, the default first.
PENALTIES: Registry[Penalty] = Registry("penalty", Penalty)


#: Add a penalty under a new name (``register_penalty(name, obj)``), remove one, look one up (errors list the names).
register_penalty = PENALTIES.register
unregister_penalty = PENALTIES.unregister
get_penalty = PENALTIES.lookup


register_penalty("l12", L12())
register_penalty("lp", Lp(0.5, 1e-3))
register_penalty("tl1", TransformedL1(1.0))
register_penalty("entropy", Entropy())
PENALTIES.seal()
