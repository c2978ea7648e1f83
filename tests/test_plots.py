"""The figures plot what their verdicts test, with named axes, stated error bars, bars from 0 and readable matrices."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from aslib.study import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    matplotlib.pyplot.close("all")


def test_recovery_plots_the_mean_over_instances_with_standard_errors():
    rows = [{"family": "regular", "n": n, "method": m, "instance": i, "isomorphic": bool((i + n + (m == "l12")) % 2)}
            for n in (12, 20) for m in ("l12", "faq") for i in range(4)]
    table = pd.DataFrame(rows)
    fig = plots.plot_recovery(table, x="n", metric="isomorphic", title="regular graphs")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "isomorphism found (fraction)" and ax.get_xlabel() == "size n"
    assert "standard error" in ax.get_title()
    [l12] = [c for c in ax.containers if c.get_label() == "l12"]
    expected = table[table["method"] == "l12"].assign(v=lambda t: t["isomorphic"].astype(float)).groupby("n")["v"]
    assert np.allclose(l12.lines[0].get_ydata(), expected.mean().to_numpy())
    low, high = (segment[:, 1] for segment in np.array(l12.lines[2][0].get_segments()).transpose(1, 0, 2))
    assert np.allclose((high - low) / 2, expected.std(ddof=1).to_numpy() / 2)  # sem = std / sqrt(4)


def test_bar_charts_start_at_zero_and_state_their_error_bars():
    summary = pd.DataFrame({"dataset": "cifar10", "model": "v1", "arm": ["fixed", "none", "l12"], "lam": [0, 0, 0.01],
                            "shuffle_init": [None, None, "uniform"], "test_acc_hard_mean": [0.93, 0.94, 0.95],
                            "test_acc_hard_std": [0.01, 0.01, 0.01]})
    ax = plots.plot_arm_comparison(summary).axes[0]
    assert ax.get_ylim() == (0.0, 1.0)
    assert ax.get_ylabel() == "test accuracy after rounding\n(mean ± std over seeds)"


def test_success_rates_carry_binomial_standard_errors():
    summary = pd.DataFrame({"setup": "after", "n": [4, 6], "method": "l12", "success_best": [0.5, 0.9],
                            "instances": [10, 10]})
    fig = plots.plot_success_by_setup(summary)
    [bars] = fig.axes[0].containers
    segments = np.array(bars.lines[2][0].get_segments())
    half = (segments[:, 1, 1] - segments[:, 0, 1]) / 2
    assert np.allclose(half, np.sqrt([0.5 * 0.5 / 10, 0.9 * 0.1 / 10]))
    assert "binomial standard error" in fig._suptitle.get_text()


def test_curves_are_drawn_at_their_iterations():
    loss, penalty = np.linspace(1, 0, 46), np.linspace(5, 0, 46)
    fig = plots.plot_loss_and_penalty({"l12": (loss, penalty)}, record_every=10)
    line = fig.axes[0].lines[0]
    assert line.get_xdata()[-1] == 450 and "every 10th recorded" in fig.axes[0].get_xlabel()


def test_a_large_matrix_is_shown_as_row_maxima_and_a_zoomed_block():
    rng = np.random.default_rng(0)
    n = 784
    M = np.full((n, n), 0.2 / n)
    perm = rng.permutation(n)
    M[np.arange(n), perm] += 0.8
    fig = plots.plot_matrix_heatmap(M, xlabel="original pixel j")
    dots, block = fig.axes[:2]  # the two panels (their colour bars follow)
    offsets = dots.collections[0].get_offsets()
    assert np.array_equal(offsets[:, 0], perm) and np.array_equal(offsets[:, 1], np.arange(n))
    assert block.images[0].get_array().shape == (64, 64)
    assert dots.get_xlabel() == block.get_xlabel() == "original pixel j"
    small = plots.plot_matrix_heatmap(np.eye(8))
    assert len(small.axes) == 2 and small.axes[0].images[0].get_array().shape == (8, 8)


def test_training_curves_name_their_axes():
    history = pd.DataFrame({"epoch": [1, 2], "val_acc": [0.5, 0.6], "penalty": [3.0, 1.0]})
    fig = plots.plot_training_curves({"l12": history})
    assert [ax.get_ylabel() for ax in fig.axes] == ["validation accuracy", "total penalty $\\sum_l P(M_l)$"]
    assert plots.axis_label("some_column") == "some column"
