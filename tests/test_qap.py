"""The quadratic assignment front end with scipy's interface (aslib.solver.qap), against brute force and scipy."""

from __future__ import annotations

import itertools
import warnings
from dataclasses import replace

import numpy as np
import pytest
import scipy.optimize
import torch

import aslib
from aslib.solver import qap, qap_polish
from aslib.solver import relaxation as solver
from aslib.examples import graph_matching as gm
from aslib.solver.qap import QUICK_STAGES, QuickStage, default_qap_config, solve_qap


def brute_force(A: np.ndarray, B: np.ndarray, maximize: bool) -> float:
    """The optimum of tr(A^T P B P^T) over all n! permutations, from the definition."""
    values = [float(np.trace(A.T @ np.eye(len(A))[list(p)] @ B @ np.eye(len(A))[list(p)].T))
              for p in itertools.permutations(range(len(A)))]
    return max(values) if maximize else min(values)


def trace_objective(A: np.ndarray, B: np.ndarray, col_ind: np.ndarray) -> float:
    P = np.eye(len(A))[col_ind]
    return float(np.trace(A.T @ P @ B @ P.T))


@pytest.mark.parametrize("maximize", [False, True])
def test_l12_beats_a_random_permutation_on_small_weighted_asymmetric_problems(maximize):
    # A local method: it need not reach the brute-force optimum here, but its answer must be a permutation
    # with the stated objective and better than the average permutation (a collapse to J/n would not be).
    rng = np.random.default_rng(1)
    for _ in range(3):
        A, B = rng.normal(size=(6, 6)) * 50.0, rng.exponential(size=(6, 6))  # asymmetric, any sign and scale
        res = aslib.quadratic_assignment(A, B, options={"maximize": maximize, "rng": 0, "restarts": 16})
        assert isinstance(res, scipy.optimize.OptimizeResult)
        assert sorted(res.col_ind.tolist()) == list(range(6))
        assert res.fun == pytest.approx(trace_objective(A, B, res.col_ind))
        values = [trace_objective(A, B, np.array(p)) for p in itertools.permutations(range(6))]
        assert (res.fun > np.mean(values)) if maximize else (res.fun < np.mean(values))
        if not maximize:  # spread starts (default_qap_config): within 5% of the optimum on these
            best = brute_force(A, B, maximize)
            assert abs(res.fun - best) <= 0.05 * abs(best)


def test_l12_reaches_the_brute_force_optimum_of_small_weighted_symmetric_matching():
    rng = np.random.default_rng(5)
    for _ in range(3):
        A = rng.random((7, 7))
        A = A + A.T
        perm = rng.permutation(7)
        noise = 0.05 * rng.random((7, 7))
        B = A[np.ix_(perm, perm)] + noise + noise.T
        res = aslib.quadratic_assignment(A, B, options={"maximize": True, "rng": 0})
        assert res.fun == pytest.approx(brute_force(A, B, True))


def test_answer_does_not_depend_on_the_scale_of_the_matrices():
    rng = np.random.default_rng(2)
    A, B = rng.random((12, 12)), rng.random((12, 12))
    base = aslib.quadratic_assignment(A, B, options={"rng": 0})
    for scale in (1e-4, 1e4):
        scaled = aslib.quadratic_assignment(scale * A, B, options={"rng": 0})
        assert np.array_equal(scaled.col_ind, base.col_ind)


def test_nonnegative_flow_and_distance_do_not_collapse_to_the_barycenter():
    # The old projected step clamped every entry to 0 here and rounded J/n to the identity.
    rng = np.random.default_rng(3)
    xy = np.array([(i // 4, i % 4) for i in range(16)])
    D = np.abs(xy[:, None] - xy[None]).sum(-1).astype(float)
    F = np.triu(rng.integers(0, 10, (16, 16)) * (rng.random((16, 16)) < 0.4), 1)
    F = (F + F.T).astype(float) * 1000.0
    res = aslib.quadratic_assignment(F, D, options={"rng": 0, "polish": False})  # the solve's own answer
    assert res.settled > 0 and np.abs(res.M - 1.0 / 16).max() > 0.4  # a start ended near a vertex
    identity = trace_objective(F, D, np.arange(16))
    faq = aslib.quadratic_assignment(F, D, "faq", {"rng": 0, "restarts": 10}).fun
    assert res.fun < identity and res.fun <= 1.1 * faq


def test_float32_and_float64_give_the_same_answer():
    inst = gm.erdos_renyi(20, 0.3, noise=0.02, batch=4, seed=4)
    for b in range(4):
        answers = [aslib.quadratic_assignment(inst.A[b], inst.B[b], options={"maximize": True, "rng": 0,
                                                                               "dtype": dtype}).col_ind
                   for dtype in (torch.float32, torch.float64)]
        assert np.array_equal(*answers)


def test_exact_match_is_a_certificate_that_ends_the_solve_early():
    inst = gm.random_regular(20, 3, batch=1, seed=0)
    res = aslib.quadratic_assignment(inst.A[0].numpy(), inst.B[0].numpy(), options={"maximize": True, "rng": 0})
    assert res.certified and res.nit < 300
    assert res.fun == pytest.approx(float((inst.A[0] ** 2).sum()))  # tr(A^T P B P^T) = ||A||^2: an isomorphism


def test_maximising_l12_runs_each_stage_only_where_the_earlier_ones_fail():
    inst = gm.random_regular(20, 3, batch=1, seed=0)
    A, B = inst.A[0].numpy(), inst.B[0].numpy()
    options = {"maximize": True, "rng": 0}
    staged = aslib.quadratic_assignment(A, B, options=options)
    config = default_qap_config(True)
    assert [(q.step, q.iters) for q in QUICK_STAGES] == [(4.0, 30), (2.0, 225)]
    assert staged.certified or staged.agreed
    # each quick stage alone from the same starts: the call ran them in turn up to the first that certified or agreed
    alone = [solve_qap(inst.A, inst.B, replace(config, step=q.step, iters=q.iters), maximize=True,
                       generator=torch.Generator().manual_seed(0)) for q in QUICK_STAGES]
    ended = [bool(s.certified[0] or s.agreed[0]) for s in alone]
    assert True in ended, "a quick stage ends this instance"
    k = ended.index(True) + 1
    assert staged.stages == k and staged.nit == sum(s.nit for s in alone[:k]) and staged.nit < config.iters
    assert staged.fun == max(trace_objective(A, B, s.col_ind[0].numpy()) for s in alone[:k])  # the best stage kept
    # stages too short for any check end with neither a certificate nor agreement: every later one runs
    short = QuickStage(step=config.step, iters=5)
    first = solve_qap(inst.A, inst.B, replace(config, iters=5), maximize=True,
                      generator=torch.Generator().manual_seed(0))
    full = aslib.quadratic_assignment(A, B, options=dict(options, maxiter=config.iters))  # one stage, same starts
    for quick, count in ((short, 1), ((short, short), 2), ([short], 1)):
        both = aslib.quadratic_assignment(A, B, options=dict(options, quick_stage=quick))
        assert full.stages == 1 and both.stages == count + 1 and both.nit == 5 * count + full.nit
        assert both.fun == max(full.fun, trace_objective(A, B, first.col_ind[0].numpy()))  # the better of them
    unstaged = aslib.quadratic_assignment(A, B, options=dict(options, quick_stage=None))
    assert unstaged.stages == 1 and np.array_equal(unstaged.col_ind, full.col_ind) and unstaged.nit == full.nit
    # an explicit maxiter, minimising, and "relaxed" run one stage
    for method, opts in (("l12", dict(options, maxiter=100, quick_stage=short)), ("l12", {"rng": 0}),
                         ("relaxed", options)):
        res = aslib.quadratic_assignment(A, B, method, opts)
        assert res.stages == 1
    for bad in ("quick", (short, 3), QuickStage):
        with pytest.raises(ValueError, match="quick_stage must be a QuickStage"):
            aslib.quadratic_assignment(A, B, options=dict(options, quick_stage=bad))


def test_each_method_takes_the_keyword_arguments_of_its_function_as_options():
    A = np.arange(16.0).reshape(4, 4)
    common = ["maximize", "restarts", "rng"]
    seeded = ["P0", "partial_guess", "partial_match", "shuffle_input"]
    accepted = {
        "l12": common + seeded + ["device", "dtype", "lam", "maxiter", "penalty", "polish", "quick_stage", "tol"],
        "relaxed": common + seeded + ["device", "dtype", "maxiter", "polish", "tol"],
        "faq": common + ["P0", "maxiter", "partial_match", "shuffle_input", "tol"],
        "2opt": common + ["partial_guess", "partial_match"],
    }
    assert qap.QAP_METHODS == ("l12", "relaxed", "faq", "2opt")
    for method, names in accepted.items():
        assert qap._accepted_options(method) == sorted(names)
        # as scipy: options a method does not take are warned about (OptimizeWarning) and ignored
        with pytest.warns(scipy.optimize.OptimizeWarning, match="Unknown solver options: bogus, other") as record:
            warned = aslib.quadratic_assignment(A, A, method, {"bogus": 1, "other": 2, "rng": 0})
        assert str(sorted(names)) in str(record[0].message)
        plain = aslib.quadratic_assignment(A, A, method, {"rng": 0})
        assert np.array_equal(warned.col_ind, plain.col_ind) and warned.fun == plain.fun


def test_closed_form_gradient_equals_autograd():
    inst = gm.erdos_renyi(10, 0.3, noise=0.1, batch=2, seed=5)
    config = solver.SolverConfig(iters=60, lam=0.3, restarts=3, step=0.5)
    A4, B4 = inst.A.unsqueeze(1), inst.B.unsqueeze(1)
    loss = lambda M: gm.matching_loss(A4, B4, M)  # noqa: E731
    by_autograd = solver.solve_permutation(loss, 2, 10, config, generator=torch.Generator().manual_seed(0))
    by_formula = solve_qap(inst.A, inst.B, config, maximize=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(by_autograd.col_ind, by_formula.col_ind)
    assert torch.allclose(by_autograd.M, by_formula.M, atol=1e-10)


@pytest.mark.parametrize("method", ["faq", "2opt"])
def test_scipy_methods_are_delegated(method):
    rng = np.random.default_rng(6)
    A, B = rng.random((9, 9)), rng.random((9, 9))
    ours = aslib.quadratic_assignment(A, B, method, {"rng": 7})
    theirs = scipy.optimize.quadratic_assignment(A, B, method, {"rng": np.random.default_rng(7)})
    assert np.array_equal(ours.col_ind, theirs.col_ind) and ours.fun == theirs.fun
    best_of_five = aslib.quadratic_assignment(A, B, method, {"rng": 7, "restarts": 5})
    assert best_of_five.fun <= ours.fun and best_of_five.restarts == 5


def test_bad_input_is_refused_with_a_clear_error():
    A = np.eye(4)
    nan, inf = A.copy(), A.copy()
    nan[0, 1], inf[1, 2] = np.nan, np.inf
    cases = [((A[:, :3], A[:, :3]), "`A` must be square"), ((A, np.eye(5)), "must be of equal size"),
             ((A, nan), "NaN"), ((inf, A), "NaN or inf"), ((A, A, "simplex"), "must be in"),
             ((A, A, "l12", {"P0": np.ones((4, 4))}), "`P0` matrix must be doubly stochastic"),
             ((A, A, "l12", {"tol": 2.0}), "'tol' must be a positive float"), ((A, A.astype(complex)), "real numbers"),
             ((A, A, "faq", {"restarts": 0}), "restarts"), ((np.ones((2, 4, 4)), np.ones((2, 4, 4))), "must be square"),
             ((np.ones((4, 4, 4)), np.ones((4, 4, 4))), "exactly two dimensions"),
             ((A, A, "l12", {"P0": "uniform"}), "Invalid 'P0'"), ((A, A, "l12", {"restarts": 0}), "restarts")]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            aslib.quadratic_assignment(*args)


def test_a_start_at_the_answer_is_certified_at_the_first_check():
    inst = gm.random_regular(24, 3, batch=1, seed=2)
    P0 = np.eye(24)[inst.perm[0].numpy()]  # the planted permutation matrix: an isomorphism
    res = aslib.quadratic_assignment(inst.A[0], inst.B[0], options={"maximize": True, "P0": P0,
                                                                    "rng": np.random.default_rng(0)})
    assert res.certified and res.nit == 10  # the first check (every 10 steps) ends the solve
    assert np.array_equal(res.col_ind, inst.perm[0].numpy())


@pytest.mark.parametrize("maximize", [False, True])
def test_trace_gradient_equals_autograd(maximize):
    from aslib.solver.qap import _relaxed_loss

    gen = torch.Generator().manual_seed(4)
    A, B = (torch.randn(2, 1, 6, 6, generator=gen, dtype=torch.float64) for _ in range(2))
    M = torch.rand(2, 3, 6, 6, generator=gen, dtype=torch.float64).requires_grad_(True)
    loss, gradient = _relaxed_loss(A, B, maximize, frobenius=False)
    expected_loss = (-1.0 if maximize else 1.0) * torch.einsum("bij,brik,bkl,brjl->br", A[:, 0], M, B[:, 0], M)
    assert torch.allclose(loss(M), expected_loss, atol=1e-12)
    (by_autograd,) = torch.autograd.grad(loss(M).sum(), M)
    assert torch.allclose(gradient(M.detach()), by_autograd, atol=1e-12)


@pytest.mark.parametrize("polish", [True, "faq", "2opt"])
@pytest.mark.parametrize("maximize", [False, True])
def test_polish_returns_a_two_opt_local_optimum_no_worse_than_the_rounding(maximize, polish):
    rng = np.random.default_rng(8)
    A, B = rng.exponential(size=(12, 12)), rng.exponential(size=(12, 12))
    options = {"maximize": maximize, "rng": 1, "maxiter": 40, "polish": False}
    res = aslib.quadratic_assignment(A, B, options=dict(options, polish=polish))
    config = replace(default_qap_config(maximize, polish=polish), iters=40)  # the same solve, then the polish
    plain = solve_qap(torch.from_numpy(A)[None], torch.from_numpy(B)[None], config, maximize=maximize,
                      generator=torch.Generator().manual_seed(1))
    assert res.unpolished_fun == pytest.approx(trace_objective(A, B, plain.col_ind[0].numpy()))
    if polish == "2opt" or maximize:
        assert res.unpolished_fun == pytest.approx(aslib.quadratic_assignment(A, B, options=options).fun)
    assert res.fun == pytest.approx(trace_objective(A, B, res.col_ind))
    assert sorted(res.col_ind) == list(range(12))
    assert (res.fun >= res.unpolished_fun) if maximize else (res.fun <= res.unpolished_fun)
    for i, j in itertools.combinations(range(12), 2):  # no swap of two assignments improves the answer
        swapped = res.col_ind.copy()
        swapped[[i, j]] = swapped[[j, i]]
        value = trace_objective(A, B, swapped)
        assert (value <= res.fun + 1e-9) if maximize else (value >= res.fun - 1e-9)
    for bad in ("yes", "FAQ", 1, "auto"):
        with pytest.raises(ValueError, match="polish must be True, False or one of"):
            aslib.quadratic_assignment(A, B, options={"polish": bad})


def test_faq_polish_is_no_worse_than_faq_from_each_start():
    # with at most FAQ_POLISH_STARTS starts the "faq" polish runs FAQ from every start's relaxed matrix:
    # its answer is at least as good as each of these FAQ answers and as the rounding
    rng = np.random.default_rng(3)
    A, B = rng.exponential(size=(10, 10)), rng.exponential(size=(10, 10))
    options = {"rng": 2, "maxiter": 30, "restarts": 3}
    res = aslib.quadratic_assignment(A, B, options=dict(options, polish="faq"))
    config = replace(default_qap_config(False, polish="faq"), iters=30, restarts=3)
    assert config.step == 1.0 and config.init_noise == 100.0  # the minimising settings of this polish
    starts = solve_qap(torch.from_numpy(A)[None], torch.from_numpy(B)[None], config, maximize=False,
                       generator=torch.Generator().manual_seed(2)).starts_M[0]
    assert starts.shape == (3, 10, 10)
    for M in starts.numpy():
        P0 = qap_polish._doubly_stochastic(M)
        assert (P0 >= 0).all() and np.allclose(P0.sum(0), 1, atol=1e-12) and np.allclose(P0.sum(1), 1, atol=1e-12)
        faq = scipy.optimize.quadratic_assignment(A, B, method="faq", options={"P0": P0, "rng": np.random.default_rng(0)})
        assert res.fun <= faq.fun + 1e-9
    assert res.fun <= res.unpolished_fun + 1e-9


def test_l12_polishes_by_default_only_when_minimising_nonnegative_matrices():
    rng = np.random.default_rng(6)
    for _ in range(3):
        F = np.triu(rng.integers(1, 10, (12, 12)) * (rng.random((12, 12)) < 0.4), 1).astype(float)
        D = rng.exponential(size=(12, 12))
        F, D = F + F.T, D + D.T
        default = aslib.quadratic_assignment(F, D, options={"rng": 0})
        explicit = aslib.quadratic_assignment(F, D, options={"rng": 0, "polish": "faq"})
        plain = aslib.quadratic_assignment(F, D, options={"rng": 0, "polish": False})
        assert np.array_equal(default.col_ind, explicit.col_ind) and default.restarts == 24  # the faq polish
        assert default.fun <= default.unpolished_fun + 1e-9 and default.fun == pytest.approx(
            trace_objective(F, D, default.col_ind))
        assert default.fun <= plain.fun + 1e-9  # no worse than the unpolished default solve on these
        for options in ({"maximize": True}, {}):  # maximising, or a matrix of either sign: no polish
            G = F if options else F - 3.0
            off = aslib.quadratic_assignment(G, D, options=dict(options, rng=0))
            unpolished = aslib.quadratic_assignment(G, D, options=dict(options, rng=0, polish=False))
            assert np.array_equal(off.col_ind, unpolished.col_ind) and off.fun == off.unpolished_fun


def test_polish_settings():
    assert default_qap_config(False, polish=True) == default_qap_config(False, polish="faq")
    assert default_qap_config(False, polish="faq").restarts == 24 and default_qap_config(False, polish="faq").iters == 20
    for polish in (False, "2opt"):
        assert default_qap_config(False, polish=polish) == default_qap_config(False)
    for polish in (False, True, "faq", "2opt"):  # maximising keeps its settings (and its certificate)
        assert default_qap_config(True, polish=polish) == default_qap_config(True)


def test_doubly_stochastic_start_for_faq():
    n = 8
    vertex = np.eye(n)[np.random.default_rng(0).permutation(n)]
    for M in (vertex, 0.9 * vertex + 0.1 / n, np.full((n, n), 1.0 / n)):
        X = qap_polish._doubly_stochastic(M)
        assert (X > 0).all() and np.abs(X.sum(0) - 1).max() < 1e-12 and np.abs(X.sum(1) - 1).max() < 1e-12
        assert (X.argmax(1) == M.argmax(1)).all() or np.allclose(M, 1.0 / n)
        assert np.abs(X - M).max() <= 2e-3


def test_float32_and_float64_agree_on_flow_times_distance():
    # nonnegative, minimised, many local optima: a test of the starts as much as of the steps
    rng = np.random.default_rng(9)
    xy = np.array([(i // 4, i % 4) for i in range(16)])
    D = np.abs(xy[:, None] - xy[None]).sum(-1).astype(float)
    for _ in range(3):
        F = np.triu(rng.integers(1, 10, (16, 16)) * (rng.random((16, 16)) < 0.4), 1).astype(float)
        answers = [aslib.quadratic_assignment(F + F.T, D, options={"rng": 3, "dtype": dtype})
                   for dtype in (torch.float32, torch.float64)]
        assert answers[0].fun == pytest.approx(answers[1].fun, rel=1e-9)


@pytest.mark.parametrize("polish", [True, "2opt"])
def test_polish_draws_nothing_from_numpy_global_rng_and_warns_nothing(polish):
    # notebooks seed numpy's global RNG; scipy warns (to stderr, which nbval compares) when a call of its QAP
    # would fall back on it, so every scipy call of the polish passes its own generator
    rng = np.random.default_rng(4)
    A, B = rng.exponential(size=(9, 9)), rng.exponential(size=(9, 9))
    np.random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = aslib.quadratic_assignment(A, B, options={"polish": polish, "rng": 0, "maxiter": 20})
    np.random.seed(1)  # another global state: the same answer
    again = aslib.quadratic_assignment(A, B, options={"polish": polish, "rng": 0, "maxiter": 20})
    assert list(first.col_ind) == list(again.col_ind)
