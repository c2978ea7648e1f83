"""Validation of user input, shared by every public entry point of the package.

Each check returns the value it was given (possibly converted) or raises ``ValueError`` naming the
argument, so that a call site reads ``n = check_positive_int(n, "n")``. Internal helpers trust their
callers and do not repeat these checks.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["as_generator", "check_fraction", "check_nonnegative", "check_positive", "check_positive_int"]


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is a positive ``int`` (not a ``bool``), else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def check_positive(value: object, name: str) -> float:
    """Return ``value`` as a ``float`` if it is a finite number > 0, else raise ``ValueError`` naming ``name``."""
    number = _check_real(value, name)
    if number <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


def check_nonnegative(value: object, name: str) -> float:
    """Return ``value`` as a ``float`` if it is a finite number >= 0, else raise ``ValueError`` naming ``name``."""
    number = _check_real(value, name)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return number


def check_fraction(value: object, name: str, *, closed: bool = False) -> float:
    """Return ``value`` as a ``float`` if it lies in (0, 1) (``[0, 1]`` when ``closed``), else raise."""
    number = _check_real(value, name)
    inside = 0 <= number <= 1 if closed else 0 < number < 1
    if not inside:
        interval = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return number


def as_generator(seed: int | torch.Generator | None) -> torch.Generator:
    """A CPU ``torch.Generator``: ``seed`` itself if it is one, else a new one seeded with ``seed``.

    ``None`` seeds from torch's global generator, so results then follow ``torch.manual_seed``.
    """
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None:
        seed = int(torch.randint(0, 2**63 - 1, (1,)))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or a torch.Generator, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))
