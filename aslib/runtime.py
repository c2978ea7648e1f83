"""Seeding and device choice, shared by notebooks, the training loop and the examples."""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

__all__ = ["describe_device", "resolve_device", "seed_everything"]


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
