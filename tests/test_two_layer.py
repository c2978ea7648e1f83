"""Two-layer teacher-student example: each set-up's closed form against Monte Carlo, the set-ups' symmetries and
convexity, the solvers and restarts, the verdicts (the verdicts of notebook 03's smoke run are checked in
test_notebooks.py, which runs every notebook once)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from aslib.examples import two_layer as tl
from aslib.core.penalty import l12_penalty, permutation_matrix, project_doubly_stochastic
from aslib.study.verdicts import Verdict


def test_relu_mean_and_kernel_match_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    d, samples = 5, 400_000
    u = torch.randn(d, generator=gen, dtype=torch.float64)
    v = torch.randn(d, generator=gen, dtype=torch.float64)
    pairs = [(u, v), (u, 2.0 * u), (u, -0.5 * u), (u, v - (v @ u) / (u @ u) * u)]  # generic, t = 0, pi, pi/2
    x = torch.randn(samples, d, generator=gen, dtype=torch.float64)
    for a, b in pairs:
        prod = torch.relu(x @ a) * torch.relu(x @ b)
        se = prod.std() / math.sqrt(samples)
        closed = tl.relu_kernel(a[None], b[None])[0, 0]
        assert abs(closed - prod.mean()) < 4 * se + 1e-6  # se = 0 when t = pi (the product is 0)
    mean_mc = torch.relu(x @ u)
    assert abs(tl.relu_mean(u) - mean_mc.mean()) < 4 * mean_mc.std() / math.sqrt(samples)


def test_relu_kernel_closed_values():
    w = torch.tensor([[3.0, 4.0]], dtype=torch.float64)  # |w| = 5
    assert tl.relu_kernel(w, w).item() == pytest.approx(25.0 / 2.0)  # t = 0: E[relu(z)^2] |w|^2 = |w|^2 / 2
    assert tl.relu_kernel(w, -w).item() == pytest.approx(0.0, abs=1e-5)
    orthogonal = torch.tensor([[-4.0, 3.0]], dtype=torch.float64)
    assert tl.relu_kernel(w, orthogonal).item() == pytest.approx(25.0 / (2.0 * math.pi))


def _literal_student(setup, a, W, M, x):
    """The student networks written unit by unit, independently of the module (the oracle for network_output)."""
    relu = torch.relu
    if setup == "between":
        return sum(a[k] * relu(x @ (M[k] @ W)) for k in range(len(a)))
    if setup == "after":
        return sum(a[k] * M[k, j] * relu(x @ W[j]) for k in range(len(a)) for j in range(len(a)))
    if setup == "input":
        return sum(a[k] * relu(x @ (W[k] @ M)) for k in range(len(a)))
    return sum(a[k] * M[k, j] * (x @ W[j]) for k in range(len(a)) for j in range(len(a)))


@pytest.mark.parametrize("setup", tl.SETUPS)
def test_each_closed_form_matches_monte_carlo_and_vanishes_only_at_the_planted_permutation(setup):
    problem = tl.make_teacher_student(m=5, d=4, seed=3, setup=setup)
    n = problem.size
    assert n == (4 if setup == "input" else 5)
    gen = torch.Generator().manual_seed(1)
    M = project_doubly_stochastic(torch.rand(n, n, generator=gen, dtype=torch.float64), sweeps=50)
    x = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    assert torch.allclose(tl.network_output(problem, M, x), _literal_student(setup, problem.a[0], problem.W[0], M, x))
    for candidate in (M, torch.eye(n, dtype=torch.float64), torch.full((n, n), 1.0 / n, dtype=torch.float64)):
        estimate, se = tl.monte_carlo_loss(problem, candidate, samples=400_000, seed=2)
        assert se > 0
        assert abs(tl.population_loss(problem, candidate[None]).item() - estimate) < 4 * se
    P = problem.planted()
    assert tl.population_loss(problem, P).item() == pytest.approx(0.0, abs=1e-12)
    swapped = problem.perm.clone()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]
    assert tl.population_loss(problem, permutation_matrix(swapped, torch.float64)).item() > 1e-3
    energy, _ = tl.monte_carlo_loss(problem, torch.zeros(n, n, dtype=torch.float64), samples=400_000, seed=4)
    assert tl.teacher_energy(problem).item() == pytest.approx(energy.item(), rel=0.02)


def test_between_and_after_agree_on_permutations_and_differ_inside():
    # sigma(Q W x) = Q sigma(W x) for a permutation Q, so the two set-ups are one combinatorial problem
    between = tl.make_teacher_student(m=5, d=5, batch=3, seed=7, setup="between")
    after = tl.make_teacher_student(m=5, d=5, batch=3, seed=7, setup="after")
    assert torch.equal(between.perm, after.perm) and torch.equal(between.W, after.W)
    Q = permutation_matrix(torch.stack([torch.randperm(5, generator=torch.Generator().manual_seed(b)) for b in range(3)]),
                           torch.float64)
    assert torch.allclose(tl.population_loss(between, Q), tl.population_loss(after, Q))
    inside = torch.full((3, 5, 5), 0.2, dtype=torch.float64)
    assert not torch.allclose(tl.population_loss(between, inside), tl.population_loss(after, inside))


def test_success_is_up_to_the_set_ups_symmetries():
    # tied output weights make swapping the two units a symmetry of between, after and linear
    for setup in ("between", "after", "linear"):
        problem = tl.make_teacher_student(m=4, d=4, seed=0, setup=setup)
        problem.a[0, 1] = problem.a[0, 0]
        swapped = problem.perm.clone()
        swapped[0, [0, 1]] = swapped[0, [1, 0]]
        assert tl.population_loss(problem, permutation_matrix(swapped, torch.float64)).item() < 1e-12
    # equal columns of W make swapping two inputs a symmetry of input
    problem = tl.make_teacher_student(m=4, d=4, seed=0, setup="input")
    problem.W[0, :, 1] = problem.W[0, :, 0]  # column j of W P is column i of W where perm[i] = j
    swapped = problem.perm.clone()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]
    assert tl.population_loss(problem, permutation_matrix(swapped, torch.float64)).item() < 1e-12


def test_convexity_gap_separates_the_convex_set_ups():
    gaps = {setup: tl.convexity_gap(tl.make_teacher_student(5, 5, 4, seed=1, setup=setup), pairs=50)
            for setup in tl.SETUPS}
    assert gaps["after"] <= 1e-12 and gaps["linear"] <= 1e-12
    assert gaps["between"] > 0.01 and gaps["input"] > 0.01


def test_after_loss_is_flat_on_the_slice():
    # every doubly stochastic M with M^T a = P^T a is a minimiser: here (P + R) / 2 with R^T a = P^T a
    problem = tl.make_teacher_student(m=4, d=4, seed=2, setup="after")
    problem.a[0, 2] = problem.a[0, 3]
    R = problem.planted().clone()
    R[0, [2, 3]] = R[0, [3, 2]]
    middle = (problem.planted() + R) / 2
    assert l12_penalty(middle).item() > 1.0
    assert tl.population_loss(problem, middle).item() < 1e-12


def test_batched_loss_equals_loop():
    problem = tl.make_teacher_student(m=4, d=3, batch=3, seed=5, setup="input")
    M = project_doubly_stochastic(torch.rand(3, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    batched = tl.population_loss(problem, M)
    assert batched.shape == (3, 2)
    for b in range(3):
        single = tl.TeacherStudent(problem.setup, problem.a[b:b + 1], problem.W[b:b + 1], problem.perm[b:b + 1])
        assert torch.allclose(batched[b], tl.population_loss(single, M[b:b + 1])[0])


def test_gradient_is_finite_at_the_solution():
    for setup in tl.SETUPS:
        problem = tl.make_teacher_student(m=4, d=4, seed=0, setup=setup)
        M = problem.planted().requires_grad_(True)
        tl.population_loss(problem, M).sum().backward()
        assert bool(torch.isfinite(M.grad).all()), setup


@pytest.mark.parametrize("setup", tl.SETUPS)
def test_solvers_return_permutations_with_their_closed_form_loss(setup):
    problem = tl.make_teacher_student(m=4, d=4, batch=6, seed=1, setup=setup)
    results = {method: tl.learn_permutation(problem, method, seed=0, iters=200) for method in tl.TWO_LAYER_METHODS}
    for method, result in results.items():
        expected = tl.population_loss(problem, permutation_matrix(result.col_ind, torch.float64))
        assert torch.allclose(result.fun, expected), method
        recovered = (result.col_ind == problem.perm).all(-1)
        assert torch.equal(recovered, result.fun < 1e-9), method  # a distinct: only P has loss 0
    # The penalty drives the relaxed matrix towards a permutation; without it M stays fractional.
    assert l12_penalty(results["l12"].M).mean() < l12_penalty(results["relaxed"].M).mean()


def test_restarts_return_the_best_of_the_same_independent_starts():
    # k restarts draw the same starts as k copies of each instance, so they must return the minimum over them
    problem = tl.make_teacher_student(m=5, d=5, batch=4, seed=3, setup="after")
    k = 3
    together = tl.learn_permutation(problem, "l12", restarts=k, seed=11, iters=150)
    apart = tl.learn_permutation(problem.repeat(k), "l12", seed=11, iters=150)
    best = apart.fun.reshape(4, k).min(-1)
    assert torch.allclose(together.fun, best.values)
    assert torch.equal(together.col_ind, apart.col_ind.reshape(4, k, 5)[torch.arange(4), best.indices])


def test_comparison_table_and_best_of():
    table = tl.comparison_table(("after", "input"), (3, 4), ("l12", "relaxed"), instances=3, starts=3, iters=100)
    assert len(table) == 2 * 2 * 2 * 3 * 3
    assert (table["success"] == table["exact"]).all()  # generic instances: no symmetry beyond P itself
    assert ((table["penalty"] > -1e-9) & (table["distance"] >= 0)).all()
    # l12 and relaxed see the same instances and starts: their (instance, start) grids coincide
    keys = ["setup", "n", "instance", "start"]
    assert table[table["method"] == "l12"][keys].reset_index(drop=True).equals(
        table[table["method"] == "relaxed"][keys].reset_index(drop=True))
    best = tl.best_of(table, 2)
    assert len(best) == 2 * 2 * 2 * 3 and (best["start"] < 2).all()
    first_two = table[table["start"] < 2].groupby(["setup", "n", "method", "instance"])
    assert (best.set_index(["setup", "n", "method", "instance"])["rounded_loss"].sort_index()
            == first_two["rounded_loss"].min().sort_index()).all()
    summary = tl.summarise_success(table, 3)
    any_success = table.groupby(["setup", "n", "method", "instance"])["success"].any().groupby(["setup", "n", "method"]).mean()
    assert (summary.set_index(["setup", "n", "method"])["success_best"].sort_index() == any_success.sort_index()).all()


def _fake_table(first_wins: list[bool], second_wins: list[bool]) -> pd.DataFrame:
    rows = []
    for method, wins in (("l12", first_wins), ("relaxed", second_wins)):
        for i, win in enumerate(wins):
            rows.append({"setup": "after", "n": 4, "method": method, "instance": i, "start": 0,
                         "success": win, "rounded_loss": 0.0 if win else 1.0})
    return pd.DataFrame(rows)


def test_compare_success_answers_yes_no_and_not_shown_from_paired_differences():
    many = 20
    assert tl.compare_success(_fake_table([True] * many, [False] * many), "after", "l12", "relaxed").answer == "yes"
    assert tl.compare_success(_fake_table([False] * many, [True] * many), "after", "l12", "relaxed").answer == "no"
    same = tl.compare_success(_fake_table([True] * many, [True] * many), "after", "l12", "relaxed")
    assert same.answer == "not shown" and same.p == 1.0
    one_off = tl.compare_success(_fake_table([True] + [False] * (many - 1), [False] * many), "after", "l12", "relaxed")
    assert one_off.answer == "not shown" and "+0.05" in one_off.evidence  # 1 of 20 is within the noise


def _starts_table(rates_first, rates_second, starts=4):
    """Success of l12 and relaxed on each instance: the first ``round(rate * starts)`` starts succeed."""
    rows = []
    for method, rates in (("l12", rates_first), ("relaxed", rates_second)):
        for i, rate in enumerate(rates):
            for s in range(starts):
                win = s < round(rate * starts)
                rows.append({"setup": "after", "n": 4, "method": method, "instance": i, "start": s,
                             "success": win, "rounded_loss": 0.0 if win else 1.0})
    return pd.DataFrame(rows)


def test_single_start_rates_are_counted_by_instance_not_by_start():
    from scipy import stats

    first, second = [1.0, 0.5, 0.75, 0.25, 1.0, 0.5], [0.75, 0.5, 0.25, 0.25, 0.5, 0.5]
    v = tl.compare_success(_starts_table(first, second), "after", "l12", "relaxed")
    # 6 instances, each the mean of its 4 starts: the paired t-test over instances, not over 24 starts
    assert v.p == pytest.approx(stats.ttest_rel(first, second).pvalue, rel=1e-9)
    assert "6 instances paired" in v.evidence and "each the mean of its 4 starts" in v.evidence
    assert v.question == "after, single start: l12 finds the teacher more often than relaxed"


def test_claim_verdicts_correct_the_notebooks_tests_together():
    table = _starts_table([1.0, 0.5, 0.75, 0.25, 1.0, 0.5], [0.75, 0.5, 0.25, 0.25, 0.5, 0.5])
    other = Verdict("the best lam / iteration setting beats l12's default", "not shown", "e", p=0.3, sign=1)
    out = tl.claim_verdicts(table, 4, [other])
    tests = [v for v in out if v.is_test]
    assert len(tests) == 3 and out[-1].question == other.question  # single start, best of 4, the other
    raw = sorted(v.p for v in tests)
    expected = [min(1.0, 3 * raw[0]), max(min(1.0, 3 * raw[0]), min(1.0, 2 * raw[1]))]
    expected.append(max(expected[1], raw[2]))
    assert sorted(v.p_holm for v in tests) == pytest.approx(expected)
    [claim] = [v for v in out if "supports the paper's claim" in v.question]
    assert claim.answer == "no" and not claim.is_test  # relaxed's best of 4 is above 1/2


def test_bad_input_is_refused_with_a_clear_error():
    problem = tl.make_teacher_student(m=3, d=2, seed=0)
    with pytest.raises(ValueError, match="unknown method"):
        tl.learn_permutation(problem, "gumbel")
    with pytest.raises(ValueError, match="lam must be >= 0"):
        tl.learn_permutation(problem, "l12", lam=-0.1)
    with pytest.raises(ValueError, match="unknown setup"):
        tl.make_teacher_student(setup="middle")
    with pytest.raises(ValueError, match="M must have shape"):
        tl.population_loss(problem, torch.eye(4, dtype=torch.float64)[None])
    with pytest.raises(ValueError, match="m must be"):
        tl.make_teacher_student(m=0)
    with pytest.raises(ValueError, match="input dimension"):
        tl.relu_kernel(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="one instance"):
        tl.monte_carlo_loss(tl.make_teacher_student(m=3, d=2, batch=2), torch.eye(3, dtype=torch.float64))
    problem.a[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tl.learn_permutation(problem, "l12")


def test_notebook_03s_verdict_cells_run_on_tiny_settings():
    # the code path of notebook 03's sections 4 and 6 (the grid computed before the verdicts, Holm over both)
    table = tl.comparison_table(["after"], [3], instances=3, starts=2, iters=30, seed=0)
    schedule = tl.schedule_table("after", 3, [0.3], [30], instances=3, starts=2, seed=0)
    tests = tl.claim_verdicts(table, 2, [tl.schedule_verdict(schedule)])
    claim_verdicts, schedule_verdicts = tests[:-1], tests[-1:]
    assert schedule_verdicts[0].question.startswith("after, single start: l12 lam=")
    assert len([v for v in claim_verdicts if "finds the teacher" in v.question]) == 4  # relaxed, sinkhorn x 2
    corrected = [v for v in tests if v.is_test]
    assert corrected and all(v.p_holm is not None and v.p_holm >= v.p for v in corrected)
    assert all(v.answer in ("yes", "no", "not shown") for v in corrected)
