"""Plotting: one function per figure, each returning a matplotlib ``Figure``; ``save_figure`` writes it.

Figures are saved as PNG and PDF with fixed metadata (no creation date, no version string), so a figure
regenerated from the same numbers is byte-for-byte the same file and git shows no change.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from aslib.io import atomic_write

__all__ = ["save_figure"]

_METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
}


def save_figure(
    fig: Figure,
    name: str,
    figures_dir: str | os.PathLike[str],
    formats: tuple[str, ...] = ("png", "pdf"),
    dpi: int = 150,
) -> list[Path]:
    """Save ``fig`` as ``<figures_dir>/<name>.<fmt>`` for each format, atomically and reproducibly."""
    if not name or "/" in name:
        raise ValueError(f"invalid figure name {name!r}")
    paths = []
    for fmt in formats:
        if fmt not in _METADATA:
            raise ValueError(f"unknown figure format {fmt!r}; use one of {sorted(_METADATA)}")
        path = Path(figures_dir) / f"{name}.{fmt}"
        atomic_write(
            path,
            lambda f, fmt=fmt: fig.savefig(f, format=fmt, dpi=dpi, bbox_inches="tight", metadata=_METADATA[fmt]),
        )
        paths.append(path)
    return paths
