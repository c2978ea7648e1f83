"""Graph matching: generators, the loss and scipy's sign convention against brute force, the solvers."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import quadratic_assignment
from scipy import stats

from aslib.examples import graph_matching as gm
from aslib.core.penalty import is_permutation_matrix, l12_penalty, permutation_matrix


def brute_force_min(A: torch.Tensor, B: torch.Tensor) -> float:
    """min over all n! permutations of ||A M - M B||_F^2, computed directly from the definition."""
    n = A.shape[-1]
    best = np.inf
    for p in itertools.permutations(range(n)):
        M = permutation_matrix(torch.tensor(p), A.dtype)
        best = min(best, float((A @ M - M @ B).square().sum()))
    return best


@pytest.mark.parametrize("family", gm.FAMILIES)
def test_planted_permutation_is_an_exact_isomorphism_without_noise(family):
    inst = gm.make_instances(family, 12, noise=0.0, batch=3, seed=5)
    A, B, perm = inst.A, inst.B, inst.perm
    assert torch.equal(A, A.transpose(-1, -2)) and torch.equal(B, B.transpose(-1, -2))
    assert bool((A.diagonal(dim1=-2, dim2=-1) == 0).all())
    for b in range(3):
        p = perm[b]
        assert torch.equal(B[b][p][:, p], A[b])  # B[perm[i], perm[j]] == A[i, j]
    M = permutation_matrix(perm, torch.float64)
    assert torch.equal(gm.matching_loss(A, B, M), torch.zeros(3, dtype=torch.float64))


def test_family_structure():
    regular = gm.random_regular(20, 3, batch=2, seed=0).A
    assert bool((regular.sum(-1) == 3).all())
    assert bool((gm.cycle_graph(9).A.sum(-1) == 2).all())
    grid = gm.grid_graph(3, 4).A[0]
    assert sorted(grid.sum(-1).tolist()) == [2] * 4 + [3] * 6 + [4] * 2
    assert int(grid.sum()) == 2 * (3 * 3 + 2 * 4)


def test_noise_flips_the_stated_fraction_of_vertex_pairs():
    n, batch, noise = 60, 20, 0.1
    inst = gm.erdos_renyi(n, 0.3, noise=noise, batch=batch, seed=3)
    unshuffled = torch.stack([inst.B[b][inst.perm[b]][:, inst.perm[b]] for b in range(batch)])
    flipped = (unshuffled != inst.A).triu(1).sum().item()
    pairs = batch * n * (n - 1) // 2
    sd = (pairs * noise * (1 - noise)) ** 0.5
    assert abs(flipped - noise * pairs) < 5 * sd


def test_generators_are_seeded():
    a, b = gm.random_regular(16, 4, 0.05, 2, seed=9), gm.random_regular(16, 4, 0.05, 2, seed=9)
    assert torch.equal(a.A, b.A) and torch.equal(a.B, b.B) and torch.equal(a.perm, b.perm)
    c = gm.random_regular(16, 4, 0.05, 2, seed=10)
    assert not torch.equal(a.B, c.B)


def test_scipy_sign_convention_solves_the_same_problem():
    # For a permutation, ||AM - MB||^2 = ||A||^2 + ||B||^2 - 2 tr(A^T M B M^T); scipy's fun is that trace.
    inst = gm.erdos_renyi(9, 0.4, noise=0.2, seed=1)
    A, B = inst.A[0].numpy(), inst.B[0].numpy()
    res = quadratic_assignment(A, B, method="2opt", options={"maximize": True, "rng": np.random.default_rng(0)})
    M = permutation_matrix(torch.from_numpy(res.col_ind), torch.float64)
    ours = gm.matching_loss(inst.A[0], inst.B[0], M).item()
    assert ours == pytest.approx((A**2).sum() + (B**2).sum() - 2 * res.fun)


@pytest.mark.parametrize("method", ["2opt", "faq", "l12"])
def test_methods_reach_the_brute_force_optimum_on_a_tiny_noisy_instance(method):
    inst = gm.erdos_renyi(7, 0.4, noise=0.15, seed=2)
    best = brute_force_min(inst.A[0], inst.B[0])
    result = gm.match_graphs(inst.A, inst.B, method, restarts=10, seed=0)
    assert result.fun.item() == pytest.approx(best)
    assert result.fun.item() == pytest.approx(gm.edge_disagreement(inst.A, inst.B, result.col_ind).item())


@pytest.mark.parametrize("method", gm.GRAPH_METHODS)
def test_every_method_returns_a_permutation_and_its_loss(method):
    inst = gm.erdos_renyi(10, 0.3, noise=0.05, batch=2, seed=4)
    config = None if method in ("faq", "2opt") else replace(gm.graph_matching_config(method), iters=50, restarts=2)
    result = gm.match_graphs(inst.A, inst.B, method, config=config)
    assert result.col_ind.shape == (2, 10) and result.M.shape == (2, 10, 10)
    assert bool(is_permutation_matrix(permutation_matrix(result.col_ind)).all())
    assert torch.allclose(result.fun.double(), gm.edge_disagreement(inst.A, inst.B, result.col_ind))
    assert result.seconds > 0 and result.method == method


def test_batch_equals_loop_over_instances():
    inst = gm.erdos_renyi(10, 0.3, noise=0.05, batch=3, seed=6)
    config = replace(gm.graph_matching_config("l12"), iters=200, restarts=1, init_noise=0.0)  # deterministic start
    batched = gm.match_graphs(inst.A, inst.B, "l12", config=config, dtype=torch.float64)
    for b in range(3):
        single = gm.match_graphs(inst.A[b], inst.B[b], "l12", config=config, dtype=torch.float64)
        assert torch.equal(single.col_ind[0], batched.col_ind[b])
        assert torch.allclose(single.M[0], batched.M[b], atol=1e-10)
        records = single.loss_history.shape[0]  # fewer than the batch's when this instance ended first
        assert torch.allclose(single.loss_history[:, 0], batched.loss_history[:records, b], atol=1e-8)
        after = batched.loss_history[records:, b]  # once ended, an instance stays where it ended
        assert torch.equal(after, after[:1].expand_as(after))


def test_relaxation_returns_the_uninformative_barycenter_on_regular_graphs_and_l12_recovers():
    inst = gm.random_regular(14, 3, batch=4, seed=0)
    n = 14
    barycenter = replace(gm.graph_matching_config("relaxed"), iters=100, restarts=1, init_noise=0.0)
    relaxed = gm.match_graphs(inst.A, inst.B, "relaxed", config=barycenter, dtype=torch.float64)
    assert torch.allclose(relaxed.M, torch.full((4, n, n), 1.0 / n, dtype=torch.float64))
    assert torch.allclose(relaxed.loss_history[-1], torch.zeros(4, dtype=torch.float64), atol=1e-12)
    # From random starts the relaxation still stops far from any permutation; the penalty does not.
    relaxed = gm.match_graphs(inst.A, inst.B, "relaxed", restarts=4, iters=300)
    l12 = gm.match_graphs(inst.A, inst.B, "l12", restarts=8)
    assert bool((l12_penalty(relaxed.M) > 2.0).all())
    assert bool(l12.certified.all())  # every instance ended on an exact match, with its start settled
    assert torch.equal(l12.fun, torch.zeros(4))
    for b in range(4):  # an exact isomorphism (the planted one up to an automorphism of these small graphs)
        p = l12.col_ind[b]
        assert torch.equal(inst.B[b][p][:, p], inst.A[b])


def test_numpy_input_gives_the_same_answer_as_tensors():
    inst = gm.erdos_renyi(12, 0.3, noise=0.05, batch=2, seed=8)
    from_numpy = gm.match_graphs(inst.A.numpy(), inst.B.numpy(), "l12", seed=3)
    from_torch = gm.match_graphs(inst.A, inst.B, "l12", seed=3)
    assert torch.equal(from_numpy.col_ind, from_torch.col_ind)
    assert gm.match_graphs(inst.A[0].numpy(), inst.B[0].numpy(), "faq").col_ind.shape == (1, 12)


def test_recovery_counts_matched_vertices():
    planted = torch.tensor([[0, 1, 2, 3]])
    assert gm.recovery(torch.tensor([[0, 1, 3, 2]]), planted).item() == 0.5
    with pytest.raises(ValueError, match="same shape"):
        gm.recovery(torch.tensor([0, 1]), planted)


def test_bad_input_is_refused_with_a_clear_error():
    A = gm.erdos_renyi(5, seed=0).A[0]
    with pytest.raises(ValueError, match="square"):
        gm.match_graphs(A[:, :4], A[:, :4])
    with pytest.raises(ValueError, match="same shape"):
        gm.match_graphs(A, torch.zeros(6, 6, dtype=torch.float64))
    bad = A.clone()
    bad[0, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        gm.match_graphs(A, bad)
    with pytest.raises(ValueError, match="unknown method"):
        gm.match_graphs(A, A, "simplex")
    with pytest.raises(ValueError, match="lam must be >= 0"):
        gm.match_graphs(A, A, "l12", lam=-1.0)
    with pytest.raises(ValueError, match="unknown graph family"):
        gm.make_instances("tree", 5)
    with pytest.raises(ValueError, match="regular graph"):
        gm.random_regular(5, 3)
    with pytest.raises(ValueError, match="noise"):
        gm.erdos_renyi(5, noise=1.5)


def test_fast_rounding_agrees_with_hungarian():
    from aslib.solver.relaxation import _round
    from aslib.core.penalty import project_doubly_stochastic, round_to_permutation

    gen = torch.Generator().manual_seed(0)
    perm = torch.stack([torch.randperm(8, generator=gen) for _ in range(50)])
    for sharpness in (0.5, 2.0, 20.0):  # from mostly fractional to mostly near a vertex
        M = project_doubly_stochastic(permutation_matrix(perm, torch.float64) * sharpness
                                      + torch.rand(50, 8, 8, generator=gen, dtype=torch.float64), 5)
        assert torch.equal(_round(M), round_to_permutation(M))


def test_compare_metric_pairs_instances_and_says_when_a_method_did_not_run():
    rows = [{"family": "regular", "n": 10, "noise": 0.0, "instance": i, "method": method, "exact": float(score)}
            for i in range(6) for method, score in (("l12", 1), ("faq", i % 2))]
    table = pd.DataFrame(rows)
    win = gm.compare_metric(table, "l12", "faq", "exact", ["regular"], "l12 beats faq")
    # differences 1, 0, 1, 0, 1, 0: mean 0.5, paired t = 0.5 / (0.548 / sqrt 6) = 2.24, p = 0.076
    assert win.answer == "not shown" and "6 instances paired" in win.evidence
    assert win.p == pytest.approx(stats.ttest_rel([1.0] * 6, [i % 2 for i in range(6)]).pvalue, rel=1e-9)
    assert "smallest detectable difference" in str(win)
    # every instance won: the exact sign test, p = 2^-(6-1), never p = 0
    sweep = gm.compare_metric(table.assign(exact=(table["method"] == "l12").astype(float)), "l12", "faq", "exact",
                              ["regular"], "l12 beats faq")
    assert sweep.p == pytest.approx(stats.binomtest(6, 6, 0.5).pvalue) and "sign test" in sweep.evidence
    both = pd.concat([table, table.assign(instance=table["instance"] + 6)], ignore_index=True)
    assert gm.compare_metric(both, "l12", "faq", "exact", ["regular"], "l12 beats faq").answer == "yes"
    assert gm.compare_metric(both, "faq", "l12", "exact", ["regular"], "faq beats l12").answer == "no"
    assert gm.compare_metric(table, "l12", "2opt", "exact", ["regular"], "q").answer == "n/a"


def test_endpoint_verdicts_read_the_final_matrices():
    n = 4
    barycenter = torch.full((n, n), 1.0 / n)
    lines = [str(v) for v in gm.endpoint_verdicts(barycenter, {"l12": 0.004, "relaxed": 3.0})]
    assert lines == ["the relaxation started at J/n stays at J/n: yes (max |M - J/n| = 0e+00)",
                     "l12 ends at a vertex (penalty below 0.586) and the relaxation inside D_n: yes "
                     "(final penalty 0.00 vs 3.00)"]
    moved = barycenter + 0.01 * torch.eye(n)
    answers = [v.answer for v in gm.endpoint_verdicts(moved, {"l12": 1.0, "relaxed": 3.0})]
    assert answers == ["no", "no"]


def test_recovery_verdicts_compare_l12_with_every_method_on_each_family():
    rows = []
    for family, n in (("regular", 12), ("erdos_renyi", 16), ("cycle", 12), ("grid", 12)):
        for i in range(8):
            for method in gm.GRAPH_METHODS:
                won = method == "l12" or (method == "sinkhorn" and i % 2 == 0)
                rows.append({"family": family, "n": n, "noise": 0.0, "instance": i, "method": method,
                             "isomorphic": won, "recovery": 1.0 if won else 0.125 * i})
    lines = [str(v) for v in gm.recovery_verdicts(pd.DataFrame(rows), 3)]
    # Holm over the 7 tests: 3.1e-05 x 7; 0.0013 x 6 (twice); 0.0078 x 4 = 0.031 (three times); 0.033 x 1
    sign = "every difference +1.00: sign test"
    assert lines == [
        f"l12 finds more isomorphisms than relaxed on regular graphs: yes (1.00 ± 0.00 vs 0.00 ± 0.00, "
        f"8 instances paired, {sign}, p = 0.0078, Holm 0.031)",
        "l12 finds more isomorphisms than sinkhorn on regular graphs: yes (1.00 ± 0.00 vs 0.50 ± 0.53, "
        "8 instances paired, p = 0.033, Holm 0.033)",
        f"l12 finds more isomorphisms than FAQ (3 calls) on regular graphs: yes (1.00 ± 0.00 vs 0.00 ± 0.00, "
        f"8 instances paired, {sign}, p = 0.0078, Holm 0.031)",
        f"l12 finds more isomorphisms than 2-opt (3 calls) on regular graphs: yes (1.00 ± 0.00 vs 0.00 ± 0.00, "
        f"8 instances paired, {sign}, p = 0.0078, Holm 0.031)",
        "l12 recovers more vertices than relaxed on Erdos-Renyi graphs: yes (1.00 ± 0.00 vs 0.44 ± 0.31, "
        "8 instances paired, p = 0.0013, Holm 0.0075)",
        "l12 recovers more vertices than FAQ (3 calls) on Erdos-Renyi graphs: yes (1.00 ± 0.00 vs 0.44 ± 0.31, "
        "8 instances paired, p = 0.0013, Holm 0.0075)",
        f"l12 finds more isomorphisms than relaxed on cycles and grids: yes (1.00 ± 0.00 vs 0.00 ± 0.00, "
        f"16 instances paired, {sign}, p = 3.1e-05, Holm 0.00021)",
    ]