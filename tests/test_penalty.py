"""The facts about the l1-2 penalty (docs/mathematics.md), checked on many random matrices against independent oracles."""

import itertools
import math

import numpy as np
import pytest
import torch

from aslib.core.penalty import (
    ROUNDING_THRESHOLD,
    is_permutation_matrix,
    l12_penalty,
    lipschitz_constant,
    lp_penalty,
    max_row_deficit,
    penalty_at_uniform,
    permutation_error_bound,
    permutation_matrix,
    project_doubly_stochastic,
    random_doubly_stochastic,
    random_permutation,
    round_to_permutation,
    sinkhorn,
)
import aslib.core.penalty as pen
from aslib.core.theory import near_permutations
from conftest import DEVICES


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def numpy_penalty(M: np.ndarray) -> float:
    """Independent oracle: the definition, written with numpy loops."""
    total = 0.0
    for line in list(M) + list(M.T):
        total += np.sum(np.abs(line)) - np.sqrt(np.sum(line**2))
    return total


def test_penalty_matches_definition_on_single_and_batch(gen):
    M = torch.randn(7, 5, 5, generator=gen, dtype=torch.float64)
    batch = l12_penalty(M)
    assert batch.shape == (7,)
    for b in range(7):
        assert l12_penalty(M[b]).item() == pytest.approx(numpy_penalty(M[b].numpy()), rel=1e-12)
        assert batch[b].item() == pytest.approx(numpy_penalty(M[b].numpy()), rel=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_exactness_zero_on_permutations_positive_elsewhere(n, gen):
    perms = permutation_matrix(random_permutation(n, (200,), generator=gen), torch.float64)
    assert torch.all(l12_penalty(perms).abs() < 1e-12)
    inner = random_doubly_stochastic(n, (500,), generator=gen)
    not_perm = ~is_permutation_matrix(inner, tol=1e-9)
    # a point of D_n that is not a permutation has a row with two non-zeros: strictly positive penalty
    assert torch.all(l12_penalty(inner[not_perm]) > 1e-6)
    assert torch.all(l12_penalty(inner[~not_perm]).abs() < 1e-9)


def test_vector_l1_at_least_l2_with_equality_iff_one_nonzero(gen):
    x = torch.randn(1000, 6, generator=gen, dtype=torch.float64)
    x = x * (torch.rand(1000, 6, generator=gen, dtype=torch.float64) < 0.4)
    gap = x.abs().sum(-1) - x.norm(dim=-1)
    nonzeros = (x != 0).sum(-1)
    assert torch.all(gap >= -1e-12)
    assert torch.all(gap[nonzeros <= 1].abs() < 1e-12)
    assert torch.all(gap[nonzeros >= 2] > 0)


@pytest.mark.parametrize("n", [2, 4, 9])
def test_closed_form_on_birkhoff_polytope_and_maximum_at_uniform(n, gen):
    M = random_doubly_stochastic(n, (500,), generator=gen)
    closed = 2 * n - M.norm(dim=-1).sum(-1) - M.norm(dim=-2).sum(-1)
    torch.testing.assert_close(l12_penalty(M), closed)
    uniform = torch.full((n, n), 1.0 / n, dtype=torch.float64)
    assert l12_penalty(uniform).item() == pytest.approx(2 * n * (1 - 1 / math.sqrt(n)))
    assert penalty_at_uniform(n) == pytest.approx(l12_penalty(uniform).item())
    assert torch.all(l12_penalty(M) <= penalty_at_uniform(n) + 1e-12)


def test_concave_on_birkhoff_polytope(gen):
    A = random_doubly_stochastic(5, (1000,), generator=gen)
    B = random_doubly_stochastic(5, (1000,), generator=gen)
    t = torch.rand(1000, 1, 1, generator=gen, dtype=torch.float64)
    mix = l12_penalty(t * A + (1 - t) * B)
    chord = t.flatten() * l12_penalty(A) + (1 - t.flatten()) * l12_penalty(B)
    assert torch.all(mix >= chord - 1e-12)


def test_gradient_formula_matches_autograd(gen):
    M = (torch.rand(50, 6, 6, generator=gen, dtype=torch.float64) + 0.01).requires_grad_(True)
    (grad,) = torch.autograd.grad(l12_penalty(M).sum(), M)
    Md = M.detach()
    formula = 2 - Md / Md.norm(dim=-1, keepdim=True) - Md / Md.norm(dim=-2, keepdim=True)
    torch.testing.assert_close(grad, formula)
    assert torch.all((formula >= 0) & (formula <= 2))


def test_gradient_finite_at_zero_rows():
    M = torch.zeros(4, 4, dtype=torch.float64)
    M[0, 1] = 1.0
    M.requires_grad_(True)
    l12_penalty(M).backward()
    assert torch.isfinite(M.grad).all()


@pytest.mark.parametrize("n", [2, 3, 6])
def test_lipschitz_bound(n, gen):
    M = torch.rand(2000, n, n, generator=gen, dtype=torch.float64)
    M = M * (torch.rand(2000, n, n, generator=gen, dtype=torch.float64) < 0.5)
    N = (M + 0.05 * torch.randn(2000, n, n, generator=gen, dtype=torch.float64)).clamp_min(0)
    distance = (M - N).flatten(-2).norm(dim=-1)
    moved = distance > 0
    ratio = (l12_penalty(M) - l12_penalty(N)).abs()[moved] / distance[moved]
    assert moved.sum() > 1000
    assert torch.all(ratio <= lipschitz_constant(n) + 1e-9)


@pytest.mark.parametrize("n", [2, 3, 6])
def test_lipschitz_constant_is_attained_in_the_limit(n):
    # N = I + t (J - I): each row and column term is (n - 1) t + O(t^2), so P(N) ~ 2 n (n - 1) t while
    # ||N - I||_F = t sqrt(n (n - 1)): the ratio tends to 2 sqrt(n (n - 1)), the constant is tight.
    eye = torch.eye(n, dtype=torch.float64)
    t = 1e-7
    N = eye + t * (1 - eye)
    ratio = (l12_penalty(N) - l12_penalty(eye)).abs() / (N - eye).norm()
    assert ratio.item() == pytest.approx(lipschitz_constant(n), rel=1e-5)


def test_lp_penalty_gradient_unbounded_but_l12_bounded():
    for x in [1e-2, 1e-4, 1e-6]:
        M = torch.eye(3, dtype=torch.float64) * (1 - 2 * x) + x
        M.requires_grad_(True)
        (g_lp,) = torch.autograd.grad(lp_penalty(M, 0.5), M)
        (g_l12,) = torch.autograd.grad(l12_penalty(M), M)
        assert g_lp[0, 1].item() == pytest.approx(0.5 * x**-0.5)
        assert abs(g_l12[0, 1].item()) <= 2.0


@pytest.mark.parametrize("n", [3, 5, 10])
def test_error_bound_against_true_rounding_error(n, gen):
    M, _ = near_permutations(n, 3000, generator=gen)
    bound = permutation_error_bound(M)
    held = bound.condition_holds
    assert held.float().mean() > 0.2, "the sample should contain many matrices where the bound applies"
    R = permutation_matrix(bound.perm[held], torch.float64)
    Mh = M[held]
    assert torch.all((Mh - R).abs().sum((-2, -1)) <= bound.l1_bound[held] + 1e-12)
    assert torch.all((Mh - R).abs().amax((-2, -1)) <= bound.max_bound[held] + 1e-12)
    # where the condition holds the row argmax is a permutation and agrees with the Hungarian rounding
    assert torch.equal(bound.perm[held].sort(-1).values, torch.arange(n).expand(int(held.sum()), n))
    assert torch.equal(round_to_permutation(Mh), bound.perm[held])
    assert torch.all(bound.penalty[held] < ROUNDING_THRESHOLD)


def test_error_bound_refuses_matrix_outside_birkhoff_polytope():
    with pytest.raises(ValueError, match="doubly stochastic"):
        permutation_error_bound(torch.rand(4, 4))
    with pytest.raises(ValueError, match="negative"):
        permutation_error_bound(-torch.eye(3))


def test_max_row_deficit():
    M = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    assert max_row_deficit(M).item() == pytest.approx(1 - math.sqrt(0.5))


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_round_to_permutation_against_brute_force(n, gen):
    M = torch.rand(20, n, n, generator=gen, dtype=torch.float64)
    perms = round_to_permutation(M)
    assert perms.shape == (20, n)
    for b in range(20):
        best = max(itertools.permutations(range(n)), key=lambda p: sum(M[b, i, p[i]].item() for i in range(n)))
        assert tuple(perms[b].tolist()) == best


def test_round_to_permutation_is_identity_on_permutations(gen):
    perm = random_permutation(12, (30,), generator=gen)
    assert torch.equal(round_to_permutation(permutation_matrix(perm)), perm)


def test_is_permutation_matrix():
    assert bool(is_permutation_matrix(torch.eye(4)))
    assert not bool(is_permutation_matrix(torch.full((3, 3), 1 / 3)))
    two_in_a_row = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert not bool(is_permutation_matrix(two_in_a_row))
    assert is_permutation_matrix(torch.stack([torch.eye(2), 1 - torch.eye(2), torch.ones(2, 2)])).tolist() == [
        True, True, False]


def test_permutation_matrix_convention():
    perm = torch.tensor([2, 0, 1])
    R = permutation_matrix(perm)
    x = torch.tensor([10.0, 20.0, 30.0])
    assert torch.equal(R @ x, x[perm])
    with pytest.raises(ValueError, match="not a permutation"):
        permutation_matrix(torch.tensor([0, 0, 1]))


@pytest.mark.parametrize("sweeps", [1, 3])
def test_projection_in_place_equals_the_out_of_place_one_bit_for_bit(sweeps, gen):
    M = torch.randn(4, 7, 7, generator=gen, dtype=torch.float64)
    M[0, 2] = -1.0  # a row that is empty after clamping
    M[1, :, 5] = -1.0  # an empty column
    M[2] = -1.0  # everything empty
    expected = project_doubly_stochastic(M, sweeps)
    weight = torch.nn.Parameter(M.clone())
    out = project_doubly_stochastic(weight, sweeps, inplace=True)
    assert out is weight and torch.equal(weight.data, expected)


@pytest.mark.parametrize("inplace", [False, True])
def test_projection_reaches_birkhoff_polytope(inplace, gen):
    M = torch.randn(10, 6, 6, generator=gen, dtype=torch.float64).abs() + 0.1
    out = project_doubly_stochastic(M, sweeps=200, inplace=inplace)
    assert (out is M) == inplace
    torch.testing.assert_close(out.sum(-1), torch.ones(10, 6, dtype=torch.float64))
    torch.testing.assert_close(out.sum(-2), torch.ones(10, 6, dtype=torch.float64))
    assert torch.all(out >= 0)


def test_projection_one_sweep_makes_rows_stochastic_and_clamps(gen):
    M = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    out = project_doubly_stochastic(M, sweeps=1)
    torch.testing.assert_close(out.sum(-1), torch.ones(6, dtype=torch.float64))
    assert torch.all(out >= 0)


def test_projection_safe_on_all_zero_rows_and_columns():
    M = torch.zeros(4, 4)
    M[0, 0] = 1.0
    M[1, :] = -1.0  # clamps to an all-zero row
    out = project_doubly_stochastic(M, sweeps=50)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(-1), torch.ones(4), atol=1e-5, rtol=0)
    # the support forces M[0, 0] -> 1, which alternating normalisation only approaches slowly
    column_error = [(project_doubly_stochastic(M, sweeps=k).sum(-2) - 1).abs().max() for k in (5, 50, 500)]
    assert column_error[0] > column_error[1] > column_error[2]
    assert column_error[2] < 2e-3


def test_projection_fixes_permutations_and_keeps_gradient(gen):
    R = permutation_matrix(random_permutation(7, generator=gen), torch.float64)
    torch.testing.assert_close(project_doubly_stochastic(R, sweeps=3), R)
    M = torch.rand(5, 5, generator=gen, requires_grad=True)
    project_doubly_stochastic(M).sum().backward()
    assert M.grad is not None


def test_sinkhorn_is_doubly_stochastic_and_sharpens(gen):
    logits = torch.randn(8, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    S = sinkhorn(logits, iters=200)
    torch.testing.assert_close(S.sum(-1), torch.ones(8, 5, dtype=torch.float64))
    torch.testing.assert_close(S.sum(-2), torch.ones(8, 5, dtype=torch.float64))
    S.sum().backward()
    assert logits.grad is not None
    sharp = sinkhorn(logits.detach(), iters=200, tau=0.01)
    assert torch.all(l12_penalty(sharp) < l12_penalty(S.detach()))


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(3, 4), "square"),
        (torch.rand(3), "shape"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "NaN"),
        (torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), "NaN or inf"),
        (torch.eye(3, dtype=torch.long), "floating"),
        (np.eye(3), "torch.Tensor"),
        (torch.zeros(0, 0), "n >= 1"),
    ],
)
@pytest.mark.parametrize(
    "fn", [l12_penalty, project_doubly_stochastic, round_to_permutation, is_permutation_matrix, sinkhorn]
)
def test_bad_input_raises_value_error_naming_problem(fn, bad, message):
    with pytest.raises(ValueError, match=message):
        fn(bad)


def test_bad_options():
    with pytest.raises(ValueError, match="sweeps"):
        project_doubly_stochastic(torch.rand(3, 3), sweeps=0)
    with pytest.raises(ValueError, match="tau"):
        sinkhorn(torch.rand(3, 3), tau=0.0)
    with pytest.raises(ValueError, match="p must"):
        lp_penalty(torch.rand(3, 3), p=1.5)


@pytest.mark.parametrize("device", DEVICES)
def test_device_matches_float64_reference(device, gen):
    M = torch.rand(4, 6, 6, generator=gen)
    on_device = M.to(device)
    reference = M.double()
    torch.testing.assert_close(l12_penalty(on_device).cpu().double(), l12_penalty(reference), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        project_doubly_stochastic(on_device, 5).cpu().double(), project_doubly_stochastic(reference, 5),
        rtol=1e-5, atol=1e-6,
    )
    assert round_to_permutation(on_device).device == on_device.device
    assert torch.equal(round_to_permutation(on_device).cpu(), round_to_permutation(reference))


def test_mirror_step_follows_its_formula():
    # the fused, in-place step against the module docstring's formula written out directly
    gen = torch.Generator().manual_seed(3)
    M = pen.normalise_rows_and_columns(torch.rand(2, 3, 7, 7, generator=gen, dtype=torch.float64) + 0.1, 5)
    grad = torch.randn(2, 3, 7, 7, generator=gen, dtype=torch.float64) * 40.0
    centred = grad - grad.mean(-1, keepdim=True) - grad.mean(-2, keepdim=True) + grad.mean((-2, -1), keepdim=True)
    floor = torch.tensor(1e-3, dtype=torch.float64)
    direction = centred / torch.maximum(centred.abs().amax((-2, -1), keepdim=True), floor)
    direction = direction - 0.7 * (M / M.norm(dim=-1, keepdim=True) + M / M.norm(dim=-2, keepdim=True))
    expected = pen.normalise_rows_and_columns(M * torch.exp(-0.5 * direction), 2)
    original = grad.clone()
    assert torch.allclose(pen.mirror_step(M, grad, 0.7, 0.5, 2, floor), expected, atol=1e-13)
    assert torch.equal(grad, original)  # the caller's gradient is not overwritten
