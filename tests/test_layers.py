"""Tests of the shuffle layers: fixed shuffle, fixed permutation, learned shuffle and the model-level helpers."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn


from aslib.nn.layers import ChannelShuffle, FixedPermutation, LearnedShuffle, make_shuffle, mix_channels, shuffle_indices
from aslib.nn.shuffles import (
    project_shuffles_,
)
from aslib.core.penalty import (
    fused_l12_penalty,
    is_permutation_matrix,
    l12_penalty,
    permutation_matrix,
    project_doubly_stochastic,
    round_to_permutation,
    sinkhorn,
)

from helpers import assert_doubly_stochastic, conv_mix, mirror_layer


def _loop_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Oracle: channel b*n + a of the input (group b, position a) goes to output channel a*g + b."""
    c = x.shape[1]
    n = c // groups
    out = torch.empty_like(x)
    for b in range(groups):
        for a in range(n):
            out[:, a * groups + b] = x[:, b * n + a]
    return out


def _random_doubly_stochastic(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return project_doubly_stochastic(torch.rand(n, n, generator=g), 200)




# --- fixed shuffle and fixed permutation -------------------------------------------------------------------

@pytest.mark.parametrize("channels, groups", [(6, 1), (6, 2), (6, 3), (12, 4), (16, 8)])
def test_channel_shuffle_matches_loop_oracle(channels: int, groups: int) -> None:
    x = torch.randn(2, channels, 3, 2)
    assert torch.equal(ChannelShuffle(groups)(x), _loop_shuffle(x, groups))
    assert torch.equal(x[:, shuffle_indices(channels, groups)], _loop_shuffle(x, groups))


def test_channel_shuffle_with_two_groups_interleaves_halves() -> None:
    x = torch.arange(6.0).reshape(1, 6)
    assert ChannelShuffle(2)(x).tolist() == [[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]]


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_channel_shuffle_rejects_bad_groups(bad: object) -> None:
    with pytest.raises(ValueError, match="groups"):
        ChannelShuffle(bad)  # type: ignore[arg-type]


def test_channel_shuffle_rejects_indivisible_channels_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="7 channels are not divisible by groups=3"):
        ChannelShuffle(3)(torch.randn(2, 7, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        ChannelShuffle(2)(torch.randn(4))
    with pytest.raises(ValueError, match="divisible"):
        shuffle_indices(10, 4)


def test_fixed_permutation_gathers_and_validates() -> None:
    perm = torch.tensor([2, 0, 3, 1])
    x = torch.randn(3, 4, 2, 2)
    layer = FixedPermutation(perm)
    assert torch.equal(layer(x), torch.stack([x[:, 2], x[:, 0], x[:, 3], x[:, 1]], 1))
    assert torch.equal(layer.state_dict()["perm"], perm)
    with pytest.raises(ValueError, match="not a permutation"):
        FixedPermutation(torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="expected 4 channels, got 5"):
        layer(torch.randn(1, 5, 2, 2))


def test_random_fixed_permutation_is_seeded() -> None:
    a = FixedPermutation.random(50, torch.Generator().manual_seed(3)).perm
    b = FixedPermutation.random(50, torch.Generator().manual_seed(3)).perm
    c = FixedPermutation.random(50, torch.Generator().manual_seed(4)).perm
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a.sort().values, torch.arange(50))


def test_make_shuffle_builds_each_kind() -> None:
    assert isinstance(make_shuffle("fixed", 8, 2), ChannelShuffle)
    assert isinstance(make_shuffle("learned", 8, 2), LearnedShuffle)
    assert isinstance(make_shuffle("random", 8, 2), FixedPermutation)
    assert isinstance(make_shuffle("none", 8, 2), nn.Identity)
    with pytest.raises(ValueError, match="unknown shuffle 'learnt'"):
        make_shuffle("learnt", 8, 2)
    with pytest.raises(ValueError, match="divisible"):
        make_shuffle("none", 9, 2)


# --- learned shuffle: initialisation and forward -----------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 12, 3, 3), (2, 12), (2, 12, 5)])
def test_learned_shuffle_initialised_to_shuffle_equals_fixed_shuffle(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    layer = LearnedShuffle(12, "shuffle", groups=3)
    assert torch.equal(layer.weight.detach(), permutation_matrix(shuffle_indices(12, 3)))
    assert torch.equal(layer(x), _loop_shuffle(x, 3))


def test_learned_shuffle_mixes_channels_as_matrix_product() -> None:
    M = _random_doubly_stochastic(5, seed=0)
    layer = LearnedShuffle(5, "identity")
    with torch.no_grad():
        layer.weight.copy_(M)
    x = torch.randn(3, 5, 4, 2)
    expected = torch.zeros_like(x)
    for k in range(5):
        for j in range(5):
            expected[:, k] += M[k, j] * x[:, j]
    torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=1e-5)


def test_learned_shuffle_initialisations() -> None:
    x = torch.randn(2, 6, 3, 3)
    assert torch.equal(LearnedShuffle(6, "identity")(x), x)
    uniform = LearnedShuffle(6, "uniform")
    torch.testing.assert_close(uniform(x), x.mean(1, keepdim=True).expand_as(x))
    torch.testing.assert_close(float(uniform.penalty().detach()), 2 * 6 * (1 - 1 / math.sqrt(6)))
    a = LearnedShuffle(30, "random", generator=torch.Generator().manual_seed(1)).weight.detach()
    b = LearnedShuffle(30, "random", generator=torch.Generator().manual_seed(1)).weight.detach()
    assert bool(is_permutation_matrix(a)) and torch.equal(a, b)
    assert not torch.equal(a, torch.eye(30))


@pytest.mark.parametrize("init", ["shuffle", "identity", "uniform", "random"])
def test_noisy_initialisation_stays_doubly_stochastic(init: str) -> None:
    base = LearnedShuffle(8, init, groups=2, generator=torch.Generator().manual_seed(0)).weight.detach()
    noisy = LearnedShuffle(8, init, groups=2, noise=0.2, generator=torch.Generator().manual_seed(0))
    M = noisy.weight.detach()
    assert_doubly_stochastic(M)
    assert (M - base).abs().max() > 1e-3
    if init != "uniform":  # a light noise keeps the start's permutation
        assert torch.equal(noisy.permutation(), round_to_permutation(base))


@pytest.mark.parametrize("kwargs, match", [
    ({"channels": 0}, "channels must be a positive integer"),
    ({"channels": 6, "init": "eye"}, "unknown init 'eye'"),
    ({"channels": 6, "init": "shuffle"}, "needs groups"),
    ({"channels": 6, "init": "shuffle", "groups": 4}, "divisible"),
    ({"channels": 6, "init": "identity", "noise": 1.5}, "noise"),
])
def test_learned_shuffle_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LearnedShuffle(**kwargs)


def test_learned_shuffle_rejects_wrong_channel_count() -> None:
    layer = LearnedShuffle(8, "identity")
    with pytest.raises(ValueError, match="expected 8 channels, got 6"):
        layer(torch.randn(2, 6, 3, 3))
    layer.harden()
    with pytest.raises(ValueError, match="expected 8 channels, got 6"):
        layer(torch.randn(2, 6, 3, 3))


# --- learned shuffle: penalty, gradients, projection, rounding --------------------------------------------

def test_penalty_is_l12_of_the_matrix() -> None:
    layer = LearnedShuffle(7, "uniform", noise=0.5, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(layer.penalty(), l12_penalty(layer.weight.detach()))
    assert float(LearnedShuffle(7, "random").penalty().detach()) == 0.0


def test_gradients_reach_the_matrix() -> None:
    layer = LearnedShuffle(4, "uniform", noise=0.3, generator=torch.Generator().manual_seed(0)).double()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda M: torch.einsum("kj,bjhw->bkhw", M, x), (layer.weight,))
    layer.zero_grad()
    (layer(x).square().sum() + layer.penalty()).backward()
    M = layer.weight.detach()
    # Oracle: d/dM sum(y^2) = 2 sum_{b,h,w} y x^T, and dP/dM = 2 - M/||row||_2 - M/||column||_2 (M > 0).
    y = torch.einsum("kj,bjhw->bkhw", M, x)
    task = 2 * torch.einsum("bkhw,bjhw->kj", y, x)
    pen = 2 - M / M.norm(dim=1, keepdim=True) - M / M.norm(dim=0, keepdim=True)
    torch.testing.assert_close(layer.weight.grad, task + pen)


def test_project_restores_doubly_stochastic_matrix() -> None:
    layer = LearnedShuffle(10, "uniform", noise=0.5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.weight.add_(0.2 * torch.randn(10, 10, generator=torch.Generator().manual_seed(1)))
    assert bool((layer.weight < 0).any())
    layer.project_(sweeps=200)
    assert_doubly_stochastic(layer.weight.detach())
    layer.project_(sweeps=1)  # one sweep leaves rows exactly stochastic
    torch.testing.assert_close(layer.weight.detach().sum(1), torch.ones(10))


def test_permutation_rounds_without_hardening() -> None:
    P = permutation_matrix(torch.tensor([3, 1, 0, 2]))
    layer = LearnedShuffle(4, "identity")
    with torch.no_grad():
        layer.weight.copy_(0.7 * P + 0.3 * torch.full((4, 4), 0.25))
    assert layer.permutation().tolist() == [3, 1, 0, 2]
    assert not layer.is_hardened and layer.weight is not None


def test_harden_becomes_gather_without_parameters() -> None:
    P = permutation_matrix(torch.tensor([3, 1, 0, 2]))
    layer = LearnedShuffle(4, "identity")
    with torch.no_grad():
        layer.weight.copy_(0.7 * P + 0.3 * torch.full((4, 4), 0.25))
    x = torch.randn(5, 4, 2, 2)
    perm = layer.harden()
    assert layer.is_hardened and layer.weight is None and list(layer.parameters()) == []
    assert perm.tolist() == [3, 1, 0, 2]
    assert torch.equal(layer(x), torch.stack([x[:, 3], x[:, 1], x[:, 0], x[:, 2]], 1))
    assert float(layer.penalty()) == 0.0
    assert torch.equal(layer.matrix(), P)
    assert torch.equal(layer.harden(), perm)  # idempotent
    layer.project_()  # a no-op once hardened


def test_hardened_state_dict_round_trip_into_fresh_soft_layer() -> None:
    source = LearnedShuffle(9, "random", generator=torch.Generator().manual_seed(5))
    expected_perm = source.harden().clone()
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    fresh = LearnedShuffle(9, "identity")
    result = fresh.load_state_dict(torch.load(buffer))
    assert not result.missing_keys and not result.unexpected_keys
    assert fresh.is_hardened and fresh.weight is None and list(fresh.parameters()) == []
    assert torch.equal(fresh.perm, expected_perm)
    x = torch.randn(2, 9, 3, 3)
    assert torch.equal(fresh(x), source(x))


def test_soft_state_dict_makes_hardened_layer_soft_again() -> None:
    soft = LearnedShuffle(6, "uniform", noise=0.4, generator=torch.Generator().manual_seed(0))
    hard = LearnedShuffle(6, "identity")
    hard.harden()
    hard.load_state_dict(soft.state_dict())
    assert not hard.is_hardened and torch.equal(hard.weight.detach(), soft.weight.detach())
    x = torch.randn(2, 6, 2, 2)
    assert torch.equal(hard(x), soft(x))


# --- helpers over a model ----------------------------------------------------------------------------------













# --- the Sinkhorn parameterisation -----------------------------------------------------------------------


def _sinkhorn_layer(channels: int = 9, seed: int = 0, **kwargs) -> LearnedShuffle:
    return LearnedShuffle(channels, "uniform", noise=0.5, generator=torch.Generator().manual_seed(seed),
                          parameterisation="sinkhorn", **kwargs)


def test_sinkhorn_layer_is_doubly_stochastic_and_starts_at_the_projected_start() -> None:
    layer = _sinkhorn_layer(sinkhorn_iters=30)
    M = layer.matrix()
    assert_doubly_stochastic(M, atol=1e-3)  # rows exact, columns to Sinkhorn's tolerance
    torch.testing.assert_close(M, sinkhorn(layer.weight, 30, 1.0))
    # the same draw, projected: the Sinkhorn matrix starts where the projected one does
    projected = LearnedShuffle(9, "uniform", noise=0.5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(M, projected.weight, atol=1e-3, rtol=0)
    start = LearnedShuffle(6, "shuffle", groups=2, parameterisation="sinkhorn")
    assert start.permutation().tolist() == shuffle_indices(6, 2).tolist()
    x = torch.randn(4, 9, 3, 3)
    torch.testing.assert_close(layer(x), torch.einsum("kj,bjhw->bkhw", M, x))
    torch.testing.assert_close(layer.penalty(), l12_penalty(M))


def test_sinkhorn_gradients_reach_the_logits_and_projection_leaves_them() -> None:
    layer = _sinkhorn_layer()
    x = torch.randn(3, 9, 2, 2)
    (layer(x).square().sum() + layer.penalty()).backward()
    assert layer.weight.grad is not None and float(layer.weight.grad.abs().sum()) > 0
    before = layer.weight.detach().clone()
    layer.project_(5)
    project_shuffles_(nn.Sequential(layer))
    assert torch.equal(layer.weight, before)


def test_sinkhorn_harden_rounds_the_sinkhorn_matrix() -> None:
    layer = _sinkhorn_layer(seed=3)
    x = torch.randn(2, 9, 4, 4)
    M = layer.matrix().detach()
    perm = layer.harden()
    assert perm.tolist() == round_to_permutation(M).tolist()
    R = permutation_matrix(perm)
    assert is_permutation_matrix(R) and layer.is_hardened and list(layer.parameters()) == []
    torch.testing.assert_close(layer(x), torch.einsum("kj,bjhw->bkhw", R, x), rtol=0, atol=0)


def test_sinkhorn_state_dict_round_trip() -> None:
    source = _sinkhorn_layer(seed=1)
    fresh = _sinkhorn_layer(seed=2)
    fresh.load_state_dict(source.state_dict())
    x = torch.randn(2, 9, 3, 3)
    assert torch.equal(fresh(x), source(x))
    source.harden()
    fresh.load_state_dict(source.state_dict())
    assert fresh.is_hardened and torch.equal(fresh.perm, source.perm)
    with pytest.raises(ValueError, match="unknown parameterisation 'softmax'"):
        LearnedShuffle(4, "identity", parameterisation="softmax")
    with pytest.raises(ValueError, match="sinkhorn_tau"):
        LearnedShuffle(4, "identity", parameterisation="sinkhorn", sinkhorn_tau=0.0)




# --- the cheaper training step: same results as the former formulation ----------------------------------------



@pytest.mark.parametrize("shape", [(3, 7, 4, 5), (3, 7, 4, 4), (3, 7, 2, 3), (3, 7, 1, 1), (3, 7), (3, 7, 6)])
def test_mix_channels_equals_the_convolution_with_gradients(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(3)
    M = torch.rand(7, 7, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    out = mix_channels(M, x)
    assert out.shape == x.shape and out.is_contiguous()
    upstream = torch.randn(shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad(out, (M, x), upstream)
    ref = conv_mix(M, x)
    ref_grads = torch.autograd.grad(ref, (M, x), upstream)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 7, 4, 4), (3, 7, 5, 5)])
def test_mix_channels_keeps_a_channels_last_input_channels_last(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(5)
    M = torch.rand(7, 7, generator=g, dtype=torch.float64)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    out = mix_channels(M, x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)  # both paths: product and convolution
    torch.testing.assert_close(out, conv_mix(M, x), rtol=1e-12, atol=1e-12)


def test_fused_penalty_equals_l12_penalty_and_its_autograd_gradient() -> None:
    g = torch.Generator().manual_seed(4)
    batch = torch.rand(3, 6, 6, generator=g, dtype=torch.float64)
    batch[0, 2] = 0.0  # an empty row: zero norm, its subgradient 0 as autograd's
    batch[1, :, 4] = 0.0  # an empty column
    batch[2, 1, 3] = -0.25  # a negative entry: sgn -1
    batch[2, 0, 0] = 0.0  # a single zero entry: sgn(0) = 0
    for M in (batch, batch[1]):  # a batch and one matrix
        fused_in = M.clone().requires_grad_(True)
        ref_in = M.clone().requires_grad_(True)
        fused, ref = fused_l12_penalty(fused_in), l12_penalty(ref_in)
        assert fused.shape == ref.shape == M.shape[:-2]
        torch.testing.assert_close(fused, ref, rtol=1e-12, atol=1e-12)
        weights = torch.arange(1.0, 1.0 + fused.numel(), dtype=torch.float64).reshape(fused.shape)
        (fused * weights).sum().backward()
        (ref * weights).sum().backward()
        torch.testing.assert_close(fused_in.grad, ref_in.grad, rtol=1e-12, atol=1e-12)
    positive = torch.rand(2, 5, 5, generator=g, dtype=torch.float64).add_(0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(fused_l12_penalty, (positive,))




# --- the mirror parameterisation ----------------------------------------------------------------------



def test_mirror_update_is_the_mirror_step_of_the_loss_gradient() -> None:
    from aslib.core.penalty import mirror_step

    layer = mirror_layer()
    x = torch.randn(4, 6, 3, 3, generator=torch.Generator().manual_seed(1))
    (layer(x) ** 3).sum().backward()
    before, grad = layer.weight.detach().clone(), layer.weight.grad.clone()
    expected = mirror_step(before, grad, 0.7, 0.2, 2, torch.finfo(grad.dtype).tiny)
    assert layer.mirror_update_(0.7, 0.2, sweeps=2)
    torch.testing.assert_close(layer.weight.detach(), expected)
    assert not torch.equal(layer.weight.detach(), before) and bool((layer.weight > 0).all())
    torch.testing.assert_close(layer.weight.sum(1), torch.ones(6))  # the last sweep normalises the rows
    # project_ leaves a mirror matrix alone (its update normalises); it is M itself, like the projected layer's
    moved = layer.weight.detach().clone()
    layer.project_(sweeps=5)
    assert torch.equal(layer.weight.detach(), moved) and torch.equal(layer.matrix().detach(), moved)


def test_mirror_update_consumes_its_gradient_so_the_next_step_follows_only_the_next_gradient() -> None:
    from aslib.core.penalty import mirror_step

    layer = mirror_layer()
    generator = torch.Generator().manual_seed(2)
    (layer(torch.randn(4, 6, 3, 3, generator=generator)) ** 3).sum().backward()
    assert layer.mirror_update_(0.7, 0.2) and layer.weight.grad is None  # no optimizer would clear it
    x = torch.randn(4, 6, 3, 3, generator=generator)
    reference = mirror_layer()
    reference.weight.data.copy_(layer.weight.detach())
    (reference(x) ** 3).sum().backward()  # the second batch's gradient alone
    expected = mirror_step(layer.weight.detach().clone(), reference.weight.grad, 0.7, 0.2, 1,
                           torch.finfo(torch.float32).tiny)
    (layer(x) ** 3).sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad)  # not the sum with the first one
    assert layer.mirror_update_(0.7, 0.2)
    torch.testing.assert_close(layer.weight.detach(), expected)
    layer.weight.grad = torch.full((6, 6), float("nan"))  # a skipped step drops its gradient too
    assert not layer.mirror_update_(0.7, 0.2) and layer.weight.grad is None


def test_mirror_update_skips_what_it_cannot_use() -> None:
    layer = mirror_layer()
    start = layer.weight.detach().clone()
    assert not layer.mirror_update_(1.0, 0.3)  # no gradient yet
    for bad in (float("nan"), float("inf"), -float("inf")):  # a skipped mixed-precision step: one bad entry
        layer.weight.grad = torch.ones(6, 6)
        layer.weight.grad[2, 3] = bad
        assert not layer.mirror_update_(1.0, 0.3)
    assert torch.equal(layer.weight.detach(), start)
    projected = LearnedShuffle(6, "uniform", noise=0.5, generator=torch.Generator().manual_seed(0))
    projected.weight.grad = torch.ones(6, 6)
    assert not projected.mirror_update_(1.0, 0.3)  # only mirror layers take mirror steps
    layer.weight.grad = torch.randn(6, 6)
    layer.harden()
    assert not layer.mirror_update_(1.0, 0.3)


def test_a_large_gradient_collapses_the_projected_matrix_to_uniform_but_not_the_mirror_one() -> None:
    # nonnegative gradient entries far above 1/c: one clamped Euclidean step empties every row, and the
    # projection's refill returns exactly J/c; the multiplicative step keeps M off J/c whatever the scale
    grad = torch.rand(8, 8, generator=torch.Generator().manual_seed(2)) * 100.0 + 10.0
    projected = LearnedShuffle(8, "uniform", noise=0.5, generator=torch.Generator().manual_seed(3))
    mirror = mirror_layer(8, seed=3)
    torch.testing.assert_close(projected.weight.detach(), mirror.weight.detach())
    with torch.no_grad():
        projected.weight.sub_(0.1 * grad)
    projected.project_()
    torch.testing.assert_close(projected.weight.detach(), torch.full((8, 8), 1 / 8))
    mirror.weight.grad = grad
    mirror.mirror_update_(0.0, 0.3)
    assert float((mirror.weight.detach() - 1 / 8).abs().max()) > 0.01


