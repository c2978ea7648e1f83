"""Every notebook runs through the real runner with the `smoke` profile, and the numbers it records hold.

The committed notebooks' default runs are checked separately by nbval (`make test` runs both).
"""

from pathlib import Path

import pytest

from aslib.io import load_results
from aslib.reproduce import find_notebooks, load_profile, run_profile


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    runs = run_profile(load_profile("smoke"), runs_dir=tmp / "runs", figures_dir=tmp / "figures", show_progress=False)
    return {r.notebook: r for r in runs}, tmp / "runs" / "smoke", tmp / "figures"


def test_every_notebook_runs(smoke_runs):
    runs, _, _ = smoke_runs
    assert set(runs) == {p.stem for p in find_notebooks()}
    failed = {name: run.error for name, run in runs.items() if run.status != "ok"}
    assert not failed


def test_01_penalty_facts(smoke_runs):
    _, out, figures = smoke_runs
    r = load_results(out, "01_penalty_and_error_bounds")
    assert r["n"] == 4 and r["n_random"] == 200
    assert r["max_penalty_on_permutations"] < 1e-12 < r["min_penalty_inside"]
    assert r["min_concavity_gap"] >= -1e-12
    assert r["max_penalty_inside"] <= r["penalty_at_uniform"] + 1e-12
    assert r["max_gradient_formula_error"] < 1e-10
    assert r["max_lipschitz_ratio"] <= r["lipschitz_constant"]
    assert r["error_bound_l1_violations"] == 0 and r["error_bound_max_violations"] == 0
    assert r["argmax_is_hungarian_when_condition"] is True
    assert r["max_lp_gradient_on_path"] > 100 * r["max_l12_gradient_on_path"]
    assert {p.name for p in figures.iterdir()} >= {"01_error_bound.png", "01_error_bound.pdf"}
