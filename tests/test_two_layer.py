"""Two-layer teacher-student example: the closed form against Monte Carlo, the planted model, the solvers."""

from __future__ import annotations

import math

import pytest
import torch

from aslib.examples import two_layer as tl
from aslib.penalty import l12_penalty, permutation_matrix, project_doubly_stochastic


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


def test_population_loss_matches_monte_carlo_and_vanishes_at_the_planted_permutation():
    problem = tl.make_teacher_student(m=5, d=4, seed=3)
    a, Wt, W, perm = problem.a[0], problem.W_teacher[0], problem.W[0], problem.perm[0]
    gen = torch.Generator().manual_seed(1)
    M = project_doubly_stochastic(torch.rand(5, 5, generator=gen, dtype=torch.float64), sweeps=50)
    for candidate in (M, torch.eye(5, dtype=torch.float64)):
        estimate, se = tl.monte_carlo_loss(a, Wt, W, candidate, samples=400_000, seed=2)
        assert abs(tl.population_loss(a, Wt, W, candidate) - estimate) < 4 * se
    P = permutation_matrix(perm, torch.float64)
    assert torch.allclose(W[perm], Wt)  # W[perm[i]] == W*[i]
    assert tl.population_loss(a, Wt, W, P).item() == pytest.approx(0.0, abs=1e-9)
    swapped = perm.clone()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert tl.population_loss(a, Wt, W, permutation_matrix(swapped, torch.float64)).item() > 1e-3


def test_gradient_is_finite_at_the_solution():
    problem = tl.make_teacher_student(m=4, d=4, seed=0)
    M = permutation_matrix(problem.perm[0], torch.float64).requires_grad_(True)
    tl.population_loss(problem.a[0], problem.W_teacher[0], problem.W[0], M).backward()
    assert bool(torch.isfinite(M.grad).all())


def test_batched_loss_equals_loop():
    problem = tl.make_teacher_student(m=4, d=3, batch=3, seed=5)
    M = project_doubly_stochastic(torch.rand(3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    batched = tl.population_loss(problem.a, problem.W_teacher, problem.W, M)
    for b in range(3):
        assert batched[b].item() == pytest.approx(
            tl.population_loss(problem.a[b], problem.W_teacher[b], problem.W[b], M[b]).item())


def test_solvers_return_permutations_with_their_closed_form_loss_and_l12_ends_near_a_vertex():
    problem = tl.make_teacher_student(m=4, d=4, batch=8, seed=1)
    results = {method: tl.learn_permutation(problem, method, seed=0) for method in tl.METHODS}
    for method, result in results.items():
        P = permutation_matrix(result.perm, torch.float64)
        expected = tl.population_loss(problem.a, problem.W_teacher, problem.W, P)
        assert torch.allclose(result.rounded_loss, expected), method
        recovered = (result.perm == problem.perm).all(-1)
        assert bool((result.rounded_loss[recovered] < 1e-9).all()), method
    # The penalty drives the relaxed matrix to (near) a permutation; without it M stays fractional.
    assert bool((l12_penalty(results["l12"].M) < l12_penalty(results["relaxed"].M)).all())
    assert l12_penalty(results["l12"].M).mean() < 0.5 < l12_penalty(results["relaxed"].M).mean()
    # With 8 starts most instances are solved exactly (loss 0 only at the planted permutation).
    best = tl.learn_permutation(problem, "l12", restarts=8, seed=0)
    recovered = (best.perm == problem.perm).all(-1)
    assert recovered.double().mean() >= 0.5
    assert torch.equal(recovered, best.rounded_loss < 1e-9)


def test_bad_input_is_refused_with_a_clear_error():
    problem = tl.make_teacher_student(m=3, d=2, seed=0)
    with pytest.raises(ValueError, match="unknown method"):
        tl.learn_permutation(problem, "gumbel")
    with pytest.raises(ValueError, match="lam must be >= 0"):
        tl.learn_permutation(problem, "l12", lam=-0.1)
    problem.a[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tl.learn_permutation(problem, "l12")
    with pytest.raises(ValueError, match="m must be"):
        tl.make_teacher_student(m=0)
    with pytest.raises(ValueError, match="input dimension"):
        tl.relu_kernel(torch.zeros(2, 3), torch.zeros(2, 4))
