"""Plotting: one function per figure, each returning a matplotlib ``Figure``; ``save_figure`` writes it.

Figures are saved as PNG and PDF with fixed metadata (no creation date, no version string), so a figure
regenerated from the same numbers is byte-for-byte the same file and git shows no change.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.tri as mtri
from matplotlib.figure import Figure

from aslib.io import atomic_write

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


# --- notebook 01: the penalty and its error bounds -------------------------------------------------


def plot_gradient_near_zero(entry, gradients: dict, *, title: str = "") -> Figure:
    """Log-log plot of ``|dP/dM_ij|`` against the entry ``M_ij -> 0``, one line per penalty."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, grad in gradients.items():
        ax.loglog(entry, abs(grad), marker="o", ms=3, label=label)
    ax.set_xlabel("off-diagonal entry $M_{ij}$")
    ax.set_ylabel(r"$|\partial P / \partial M_{ij}|$")
    ax.set_title(title or "Gradient of the penalty near a permutation")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return fig


def plot_error_bound(table) -> Figure:
    """Scatter of the true rounding errors against their bounds (``aslib.theory.error_bound_experiment``)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    held = table[table["condition_holds"]]
    other = table[~table["condition_holds"]]
    for ax, true, bound, name in [
        (axes[0], "true_l1", "l1_bound", r"$\sum_{ij}|M_{ij}-R_{ij}|$"),
        (axes[1], "true_max", "max_bound", r"$\max_{ij}|M_{ij}-R_{ij}|$"),
    ]:
        ax.scatter(other[bound], other[true], s=4, alpha=0.3, color="0.6", label="condition fails")
        ax.scatter(held[bound], held[true], s=4, alpha=0.5, label=r"$P(M) < 2(1-1/\sqrt{2})$")
        top = float(max(held[bound].max() if len(held) else 0, held[true].max() if len(held) else 0)) * 1.05 or 1.0
        ax.plot([0, top], [0, top], "k--", lw=1, label="bound = error")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("bound")
        ax.set_ylabel(f"true error {name}")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Error bounds against the true distance to the rounded permutation")
    fig.tight_layout()
    return fig


def plot_simplex_slices(slices: list, *, titles: list[str], vertex_labels: list[list[str]]) -> Figure:
    """Heat maps of a function on triangular slices of the Birkhoff polytope.

    ``slices`` holds ``(xy, values)`` pairs from :func:`aslib.theory.simplex_slice`.
    """
    fig, axes = plt.subplots(1, len(slices), figsize=(4.2 * len(slices), 3.8), squeeze=False)
    corners = [(0.0, 0.0), (1.0, 0.0), (0.5, 3**0.5 / 2)]
    for ax, (xy, values), title, labels in zip(axes[0], slices, titles, vertex_labels):
        tri = mtri.Triangulation(xy[:, 0], xy[:, 1])
        image = ax.tricontourf(tri, values, levels=20, cmap="viridis")
        for (x, y), label in zip(corners, labels):
            ax.annotate(label, (x, y), ha="center", va="top" if y == 0 else "bottom", fontsize=9,
                        xytext=(0, -4 if y == 0 else 4), textcoords="offset points")
        ax.set_title(title, fontsize=10, pad=16)
        ax.set_aspect("equal")
        ax.axis("off")
        fig.colorbar(image, ax=ax, shrink=0.8, label="$P(M)$")
    fig.tight_layout()
    return fig
