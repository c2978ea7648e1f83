"""The permutation solver (aslib.solver.relaxation): the stopping rule, the certificate, the rounding and the starts.
The quadratic assignment front end (aslib.solver.qap) is tested in test_qap.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from aslib.solver import relaxation as solver
from aslib.examples import graph_matching as gm
from aslib.solver.qap import default_qap_config, solve_qap


def test_no_hungarian_solve_inside_the_loop(monkeypatch):
    calls = []
    original = solver.round_to_permutation
    monkeypatch.setattr(solver, "round_to_permutation", lambda M: calls.append(M.shape) or original(M))
    inst = gm.random_regular(16, 3, batch=3, seed=1)
    result = gm.match_graphs(inst.A, inst.B, "relaxed", iters=120)  # never settles: runs every step
    assert result.nit == 120 and len(calls) <= 1  # one final batched rounding at most


def test_an_argmax_that_is_an_isomorphism_certifies_far_from_a_vertex():
    # M = 0.3 R + 0.7 J/n: its argmax is the planted isomorphism R, yet P(M) is far above any settling
    # tolerance and no top entry exceeds 1/2: neither the penalty nor the top entries say M is near a vertex
    n = 20
    inst = gm.random_regular(n, 3, batch=1, seed=4)
    R = torch.eye(n, dtype=torch.float64)[inst.perm[0]]
    M = 0.3 * R + 0.7 / n
    assert float(solver.l12_penalty(M)) > 10 * 0.05 and float(M.max()) < 0.5
    config = replace(default_qap_config(maximize=True), step=1e-3, iters=200)  # steps too small to move the argmax
    result = solve_qap(inst.A, inst.B, config, maximize=True, initial=M.expand(1, config.restarts, n, n).clone())
    assert bool(result.certified[0]) and result.nit == 10  # at the first check
    assert torch.equal(result.col_ind[0], inst.perm[0]) and float(result.fun[0]) == 0.0


def test_ended_instances_leave_the_batch_without_changing_any_answer():
    from aslib.solver.qap import _relaxed_loss, default_qap_config

    inst = gm.random_regular(16, 3, batch=4, seed=3)
    A4, B4 = inst.A.unsqueeze(1), inst.B.unsqueeze(1)
    loss, gradient = _relaxed_loss(A4, B4, True, True)
    config = default_qap_config(maximize=True)
    selected = []

    def select(index):
        selected.append(index.tolist())
        return _relaxed_loss(A4[index], B4[index], True, True)

    kept = solver.solve_permutation(loss, 4, 16, config, gradient=gradient, lower_bound=0.0,
                                    generator=torch.Generator().manual_seed(0))
    dropped = solver.solve_permutation(loss, 4, 16, config, gradient=gradient, select=select, lower_bound=0.0,
                                       generator=torch.Generator().manual_seed(0))
    assert selected and len(selected[-1]) < 4  # some instance ended before the others and left the batch
    assert torch.equal(kept.col_ind, dropped.col_ind) and torch.equal(kept.M, dropped.M)
    assert kept.nit == dropped.nit and torch.equal(kept.certified, dropped.certified)


def test_starts_agree_when_their_argmax_permutations_coincide_at_two_checks_in_a_row():
    # M = 0.3 R + 0.7 J/n: P(M) is far above the rounding threshold and no top entry reaches 1/2, yet the
    # argmax R is a permutation, hence a Hungarian rounding; two starts at the same R agree once R has
    # been unchanged at two checks in a row, at two different R they never do
    n = 10
    P = [torch.eye(n, dtype=torch.float64)[torch.randperm(n, generator=torch.Generator().manual_seed(s))]
         for s in (0, 1)]
    near = lambda R: 0.3 * R + 0.7 / n  # noqa: E731
    assert float(solver.l12_penalty(near(P[0]))) > solver.ROUNDING_THRESHOLD and float(near(P[0]).max()) < 0.5
    config = solver.SolverConfig(restarts=2, settle_tol=0.05)
    for starts, agree in (((P[0], P[0]), True), ((P[0], P[1]), False)):
        stopping = solver._Stopping(config, lambda M: M.sum((-2, -1)), None, (1, 2), torch.float64, "cpu")
        M = torch.stack([near(R) for R in starts])[None]
        assert not stopping.update(M)  # the first check only records the roundings
        assert not stopping.update(M)  # unchanged once: not yet
        assert stopping.update(M) is agree and bool(stopping.agreed[0]) is agree
        assert not bool(stopping.settled.any())  # settling still needs P(M) <= settle_tol


def test_confident_starts_agree_at_the_first_check_where_their_argmax_is_unchanged():
    # every row's top entry above 1/2 makes the argmax the unique Hungarian rounding: starts that are all
    # confident and agree end their instance at once; one start short of that waits for a second check
    n = 10
    R = torch.eye(n, dtype=torch.float64)[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    confident, unsure = 0.6 * R + 0.4 / n, 0.3 * R + 0.7 / n
    assert float(confident.max(-1).values.min()) > 0.5 > float(unsure.max())
    assert float(solver.l12_penalty(confident)) > solver.ROUNDING_THRESHOLD  # confident by the top entries alone
    config = solver.SolverConfig(restarts=2, settle_tol=0.05)
    for second, checks in ((confident, 2), (unsure, 3)):
        stopping = solver._Stopping(config, lambda M: M.sum((-2, -1)), None, (1, 2), torch.float64, "cpu")
        M = torch.stack([confident, second])[None]
        ended = [stopping.update(M) for _ in range(3)]
        assert ended.index(True) + 1 == checks and bool(stopping.agreed[0])


def test_float32_starts_are_the_float64_starts_rounded():
    for parameterisation in ("mirror", "sinkhorn"):
        config = solver.SolverConfig(parameterisation=parameterisation, restarts=3, init_noise=100.0)
        starts = [solver.random_starts(config, (2, 3, 9, 9), torch.Generator().manual_seed(5), dtype)
                  for dtype in (torch.float32, torch.float64)]
        assert starts[0].dtype == torch.float32
        assert torch.equal(starts[0], starts[1].float())


def test_sinkhorn_config_refuses_a_settling_tolerance():
    with pytest.raises(ValueError, match="settle_tol"):
        solver.SolverConfig(parameterisation="sinkhorn", settle_tol=0.1)


def test_replace_given_overrides_only_what_is_given_and_validates():
    config = solver.SolverConfig(iters=300, restarts=2, lam=0.5)
    assert solver.replace_given(config, iters=None, restarts=None, lam=None) == config
    assert solver.replace_given(config, iters=40, lam=None) == replace(config, iters=40)
    assert solver.replace_given(config, lam=0.0).lam == 0.0  # 0 is given, not left out
    with pytest.raises(ValueError, match="lam must be >= 0"):
        solver.replace_given(config, lam=-1.0)
