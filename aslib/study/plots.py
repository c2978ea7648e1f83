"""Plotting: one function per figure, each returning a matplotlib ``Figure``; ``save_figure`` writes it.

Figures are saved as PNG and PDF with fixed metadata (no creation date, no version string), so a figure
regenerated from the same numbers is byte-for-byte the same file and git shows no change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.tri as mtri
from matplotlib.figure import Figure

from aslib.utils.io import atomic_write

#: Axis labels for the columns the figures plot (a column without one is shown with spaces for underscores).
_LABELS = {
    "recovery": "vertices recovered",
    "isomorphic": "isomorphism found",
    "exact": "planted permutation found",
    "noise": "edge flip probability",
    "n": "size n",
    "success": "teacher's permutation found, single start",
    "success_best": "teacher's permutation found, best of k starts",
    "val_acc": "validation accuracy",
    "train_acc": "training accuracy",
    "train_loss": "training loss",
    "penalty": "total penalty $\\sum_l P(M_l)$",
    "test_acc_hard": "test accuracy after rounding",
    "test_acc_soft": "test accuracy before rounding",
}


def axis_label(column: str) -> str:
    """The human name of a plotted column (``"val_acc"`` -> ``"validation accuracy"``)."""
    return _LABELS.get(column, column.replace("_", " "))


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


def owned_figures(figures_dir: str | Path, stem: str) -> dict[Path, tuple[int, int]]:
    """The figures notebook ``stem`` (``NN_name``) owns in ``figures_dir``: ``NN_*.png`` and ``.pdf``, top level only,
    each with its ``(inode, mtime_ns)``: a figure rewritten by :func:`aslib.utils.io.atomic_write` gets a new inode."""
    number = stem.split("_", 1)[0]
    if not number.isdigit():
        raise ValueError(f"a notebook's stem starts with its number, got {stem!r}")
    found = {}
    for fmt in _METADATA:
        for path in Path(figures_dir).glob(f"{number}_*.{fmt}"):
            if path.is_file():
                info = path.stat()
                found[path] = (info.st_ino, info.st_mtime_ns)
    return found


def remove_stale_figures(figures_dir: str | Path, stem: str, before: Mapping[Path, tuple[int, int]]) -> list[Path]:
    """Delete the figures of ``stem`` that its run did not write: those of ``before`` (:func:`owned_figures` taken
    before the run) still with the same inode and modification time. Only a run that wrote at least one of its
    figures there deletes anything (a notebook that draws nothing into ``figures_dir`` owns nothing in it).
    Returns the deleted paths."""
    now = owned_figures(figures_dir, stem)
    stale = [path for path, stamp in now.items() if before.get(path) == stamp]
    if len(stale) == len(now):  # nothing written by this run
        return []
    for path in stale:
        path.unlink()
    return stale


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
    """Scatter of the true rounding errors against their bounds (``aslib.core.theory.error_bound_experiment``)."""
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

    ``slices`` holds ``(xy, values)`` pairs from :func:`aslib.core.theory.simplex_slice`.
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


# --- notebook 07: undoing an unknown input permutation ---------------------------------------------


def plot_image_rows(rows: dict, *, cmap: str = "gray_r") -> Figure:
    """A grid of images: one row per entry of ``rows`` (label -> ``(N, C, H, W)`` numpy array), one column per image.

    One channel is drawn with ``cmap``; three channels as RGB after scaling each image to [0, 1].
    """
    labels = list(rows)
    n = len(rows[labels[0]])
    fig, axes = plt.subplots(len(labels), n, figsize=(1.1 * n + 1.2, 1.15 * len(labels)), squeeze=False)
    for r, label in enumerate(labels):
        for c in range(n):
            ax = axes[r][c]
            image = rows[label][c]
            if image.shape[0] == 1:
                ax.imshow(image[0], cmap=cmap)
            else:
                image = (image - image.min()) / (image.max() - image.min() + 1e-12)
                ax.imshow(image.transpose(1, 2, 0))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return fig


def plot_matrix_heatmap(matrix, *, title: str = "", xlabel: str = "input position j",
                        ylabel: str = "output position k", zoom: int = 64) -> Figure:
    """Heat map of a (doubly stochastic or permutation) ``n x n`` matrix ``M[k, j]``, colour scale from 0.

    Above ``zoom`` rows one cell is below a pixel and the map renders as a flat field, so the figure has two panels
    instead: every row's largest entry as a point at ``(argmax_j M[k, j], k)``, coloured by its value (a
    permutation is ``n`` points of value 1, the uniform matrix points of value ``1/n``), and the top-left
    ``zoom x zoom`` block as a heat map on its own scale.
    """
    import numpy as np

    M = np.asarray(matrix, dtype=float)
    n = M.shape[0]
    if n <= zoom:
        fig, ax = plt.subplots(figsize=(4.4, 3.8))
        image = ax.imshow(M, cmap="viridis", interpolation="nearest", vmin=0.0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        fig.colorbar(image, ax=ax, shrink=0.85, label="$M_{kj}$")
        fig.tight_layout()
        return fig
    fig, (dots, block) = plt.subplots(1, 2, figsize=(9.4, 4.0))
    top = M.max(axis=1)
    points = dots.scatter(M.argmax(axis=1), np.arange(n), c=top, s=2, cmap="viridis", vmin=0.0, vmax=max(top.max(), 1e-12))
    dots.set_xlim(-0.5, n - 0.5)
    dots.set_ylim(n - 0.5, -0.5)
    dots.set_aspect("equal")
    dots.set_title(f"largest entry of each of the {n} rows", fontsize=9)
    fig.colorbar(points, ax=dots, shrink=0.85, label="$\\max_j M_{kj}$")
    image = block.imshow(M[:zoom, :zoom], cmap="viridis", interpolation="nearest", vmin=0.0)
    block.set_title(f"rows and columns 0 to {zoom - 1}, own scale", fontsize=9)
    fig.colorbar(image, ax=block, shrink=0.85, label="$M_{kj}$")
    for ax in (dots, block):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- notebooks 02 and 03: examples with a closed-form loss ----------------------------------------


def plot_loss_and_penalty(histories: dict, *, record_every: int = 1, title: str = "") -> Figure:
    """Loss and l1-2 penalty against the solver's iterations, one line per method.

    ``histories`` maps a label to ``(loss, penalty)``, two 1-D sequences of the same length, recorded every
    ``record_every`` iterations (:class:`aslib.solver.relaxation.SolverConfig`'s ``record_every``): record ``i`` is
    drawn at iteration ``i * record_every``.
    """
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for label, (loss, penalty) in histories.items():
        steps = np.arange(len(loss)) * record_every
        axes[0].plot(steps, loss, label=label)
        axes[1].plot(steps, penalty, label=label)
    axes[0].set_yscale("symlog", linthresh=1e-3)
    axes[0].set_ylabel("loss $f(M_t)$")
    axes[1].set_ylabel("penalty $P(M_t)$")
    for ax in axes:
        ax.set_xlabel("solver iteration t" + (f" (every {record_every}th recorded)" if record_every > 1 else ""))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Loss and penalty along the iterations")
    fig.tight_layout()
    return fig


def plot_matrix_panels(matrices: dict, *, title: str = "") -> Figure:
    """Heat maps of several ``n x n`` matrices side by side on one colour scale ``[0, 1]`` (label -> matrix)."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.2 * len(matrices) + 0.8, 3.2), squeeze=False)
    image = None
    for ax, (label, matrix) in zip(axes[0], matrices.items()):
        image = ax.imshow(matrix, cmap="viridis", interpolation="nearest", vmin=0.0, vmax=1.0)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.85, label="$M_{ij}$")
    if title:
        fig.suptitle(title)
    return fig


def plot_recovery(table, *, x: str, metric: str = "recovery", title: str = "") -> Figure:
    """The mean of ``metric`` over instances against column ``x`` (e.g. ``"noise"`` or ``"n"``), one line per
    ``method``, with error bars of one standard error over instances (``std / sqrt(instances)``); ``table`` has one
    row per instance (:func:`aslib.examples.graph_matching.recovery_table`). The axis runs from 0 to 1."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method, rows in table.groupby("method", sort=False):
        stats = rows[metric].astype(float).groupby(rows[x]).agg(["mean", "sem"]).sort_index()
        ax.errorbar(stats.index, stats["mean"], yerr=stats["sem"].fillna(0), marker="o", capsize=3, label=method)
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(f"{axis_label(metric)} (fraction)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title + ("\n" if title else "") + "bars: ±1 standard error over instances", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_success_by_setup(summary, *, x: str = "n", metric: str = "success_best", title: str = "") -> Figure:
    """One panel per ``setup`` of ``summary`` (a table of rates such as
    :func:`aslib.examples.two_layer.summarise_success` returns): ``metric`` against ``x``, one line per ``method``,
    with error bars ``sqrt(p (1 - p) / instances)``: the binomial standard error over instances (for the
    single-start rate, a mean over each instance's starts, an upper bound)."""
    setups = list(dict.fromkeys(summary["setup"]))
    fig, axes = plt.subplots(1, len(setups), figsize=(3.2 * len(setups), 3.3), sharey=True, squeeze=False)
    for ax, setup in zip(axes[0], setups):
        for method, rows in summary[summary["setup"] == setup].groupby("method", sort=False):
            rows = rows.sort_values(x)
            error = (rows[metric] * (1 - rows[metric]) / rows["instances"]) ** 0.5
            ax.errorbar(rows[x], rows[metric], yerr=error, marker="o", capsize=3, label=method)
        ax.set_title(setup, fontsize=10)
        ax.set_xlabel(axis_label(x))
        ax.set_xticks(sorted(set(summary[x])))
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(f"{axis_label(metric)} (fraction)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle((title + "; " if title else "") + "bars: binomial standard error over instances", fontsize=10)
    fig.tight_layout()
    return fig


# --- notebooks 04 and 05: AutoShuffleNet against ShuffleNet -----------------------------------------


def plot_training_curves(histories: dict, *, metrics: tuple[str, ...] = ("val_acc", "penalty"),
                         title: str = "") -> Figure:
    """One panel per metric of the per-epoch history (``history.csv``), one line per run label.

    The penalty panel uses a symlog axis, since it spans orders of magnitude and ends at 0 for some arms.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        if len(histories) > 10:  # the default cycle repeats after 10 colours
            ax.set_prop_cycle(color=plt.cm.tab20.colors)
        for label, history in histories.items():
            ax.plot(history["epoch"], history[metric], marker="o", ms=2.5, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(axis_label(metric))
        if metric == "penalty":
            ax.set_yscale("symlog", linthresh=1e-2)
            ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_layer_penalties(table, *, title: str = "") -> Figure:
    """``P(M_l)`` against epoch, one line per learned shuffle, from a run's ``layer_penalties.csv``
    (columns ``epoch``, ``layer_0``, ``layer_1``, ...); symlog axis from 0."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for column in [c for c in table.columns if c != "epoch"]:
        ax.plot(table["epoch"], table[column], marker="o", ms=2.5, label=column.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("penalty P(M_l)")
    ax.set_yscale("symlog", linthresh=1e-2)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_learned_permutations(learned: list, reference: list, *, layers: int = 3, title: str = "") -> Figure:
    """Learned permutations (``perm[k]`` against output channel ``k``) beside ShuffleNet's fixed shuffle."""
    count = min(layers, len(learned))
    fig, axes = plt.subplots(1, max(count, 1), figsize=(3.6 * max(count, 1), 3.4), squeeze=False)
    for i, ax in enumerate(axes[0][:count]):
        ax.plot(reference[i], "s", ms=4, mfc="none", color="0.5", label="fixed shuffle")
        ax.plot(learned[i], "o", ms=2.5, label="learned")
        same = sum(a == b for a, b in zip(learned[i], reference[i])) / len(reference[i])
        ax.set_title(f"shuffle {i}: {len(reference[i])} channels, {same:.0%} as fixed", fontsize=9)
        ax.set_xlabel("output channel k")
        ax.set_ylabel("input channel perm[k]")
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- notebook 06: results across notebooks ---------------------------------------------------------


#: Bar colours of the arms without a learned matrix (the learned ones "C0"): the baselines grey, the control that
#: retrains a learned permutation as a fixed shuffle green.
_ARM_COLOURS = {"fixed": "0.6", "none": "0.6", "random": "0.6", "l12_retrained": "C2"}


def plot_arm_comparison(summary, *, metric: str = "test_acc_hard") -> Figure:
    """Bars of ``<metric>_mean`` per arm, from 0, with error bars of one standard deviation over seeds, one panel per
    data set and model, from :func:`aslib.study.report.summarise_seeds` (the ``*_summary.csv`` tables)."""
    panels = list(summary.groupby(["dataset", "model"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.4), squeeze=False)
    for ax, ((dataset, model), rows) in zip(axes[0], panels):
        labels = [f"{arm} {lam:g}" if arm in ("l12", "l12_retrained") else arm for arm, lam in zip(rows["arm"], rows["lam"])]
        labels = [f"{label} ({init})" if isinstance(init, str) and rows["shuffle_init"].nunique() > 1 else label
                  for label, init in zip(labels, rows["shuffle_init"])]
        ax.bar(range(len(rows)), rows[f"{metric}_mean"], yerr=rows[f"{metric}_std"].fillna(0), capsize=3,
               color=[_ARM_COLOURS.get(arm, "C0") for arm in rows["arm"]])
        ax.set_xticks(range(len(rows)), labels, rotation=40, ha="right", fontsize=7)
        ax.set_ylim(0.0, 1.0)
        ax.set_title(f"{dataset}, {model}", fontsize=9)
        ax.set_ylabel(f"{axis_label(metric)}\n(mean ± std over seeds)")
    fig.tight_layout()
    return fig


def plot_lam_sweep(summary) -> Figure:
    """Rounded test accuracy and final penalty of the l12 arm against lam (log scale), one line per model
    and data set; the relaxation (lam = 0) is drawn as a dashed level where present."""
    fig, (acc_ax, pen_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    for (dataset, model), rows in summary.groupby(["dataset", "model"], sort=False):
        l12 = rows[rows["arm"] == "l12"].groupby("lam").mean(numeric_only=True).reset_index()
        if l12.empty:
            continue
        line = acc_ax.plot(l12["lam"], l12["test_acc_hard_mean"], marker="o", label=f"{dataset}, {model}")[0]
        pen_ax.plot(l12["lam"], l12["final_penalty_mean"], marker="o", color=line.get_color())
        relaxed = rows[rows["arm"] == "relaxed"]
        if not relaxed.empty:
            acc_ax.axhline(relaxed["test_acc_hard_mean"].mean(), ls="--", color=line.get_color(), lw=1)
            pen_ax.axhline(relaxed["final_penalty_mean"].mean(), ls="--", color=line.get_color(), lw=1)
    for ax, label in ((acc_ax, "test accuracy after rounding"), (pen_ax, "final penalty")):
        ax.set_xscale("log")
        ax.set_xlabel(r"penalty weight $\lambda$")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    pen_ax.set_yscale("symlog", linthresh=1e-2)
    pen_ax.set_ylim(bottom=0)
    acc_ax.legend(fontsize=7)
    fig.suptitle(r"l1-2 penalty weight, means over seeds (dashed: the relaxation, $\lambda = 0$)")
    fig.tight_layout()
    return fig
