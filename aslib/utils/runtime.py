"""Where and with what a number was computed: seeding, device choice, and the code fingerprint."""

from __future__ import annotations

import hashlib
import os
import platform
import random
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

__all__ = ["FINGERPRINT_PACKAGES", "code_fingerprint", "describe_device", "resolve_device", "seed_everything",
           "user_stacklevel"]

#: The packages whose versions enter :func:`code_fingerprint`: the numerical stack, each pinned in pyproject.toml
#: (unpinned, a fresh install on 2026-12-03 changed printed numbers of notebooks 02, 04, 05 and 07 at one commit).
FINGERPRINT_PACKAGES: tuple[str, ...] = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "pandas")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, numpy's and torch's global generators; return a fresh ``torch.Generator`` seeded too."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else is checked and returned as a device."""
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for CUDA, but no CUDA device is available")
    return resolved


def describe_device(device: str | torch.device = "auto") -> str:
    """A short description of where numbers were computed, for results files and tables.

    E.g. ``"cuda: NVIDIA H100 80GB HBM3 (1 visible)"`` or ``"cpu: x86_64, 2 cores, 2 torch threads"``.
    """
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        index = resolved.index if resolved.index is not None else torch.cuda.current_device()
        return f"cuda: {torch.cuda.get_device_name(index)} ({torch.cuda.device_count()} visible)"
    return f"cpu: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def code_fingerprint() -> str:
    """A 16-hex-digit digest of the code that produces results: every ``aslib/**/*.py`` source and the
    versions of :data:`FINGERPRINT_PACKAGES`.

    A results record carrying another fingerprint was produced by other code (or another numerical stack),
    and is stale: it must be rerun, never shown as current.
    """
    digest = hashlib.sha256()
    package_root = Path(__file__).resolve().parents[1]  # aslib/
    for path in sorted(package_root.rglob("*.py")):
        digest.update(path.relative_to(package_root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    for name in FINGERPRINT_PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"{name}=={version}\n".encode())
    return digest.hexdigest()[:16]


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` in the function calling this name the first caller outside
    the aslib package (the user's line, e.g. their ``train(...)``), however deep inside aslib the warning is raised."""
    package = str(Path(__file__).resolve().parents[1])
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level
