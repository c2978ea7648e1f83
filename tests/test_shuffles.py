"""Tests of aslib.nn.shuffles: a model's learned shuffles together (found, penalised, projected, hardened, summarised)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import aslib.nn.layers
import aslib.nn.shuffles

from aslib.nn.layers import LearnedShuffle
from aslib.nn.shuffles import (
    harden_shuffles_,
    layer_penalties,
    learned_shuffles,
    project_shuffles_,
    shuffle_parameters,
    shuffle_penalty,
    shuffle_stats,
)
from aslib.core.penalty import (
    ROUNDING_THRESHOLD,
    l12_penalty,
    max_row_deficit,
    round_to_permutation,
)

from helpers import assert_doubly_stochastic, mirror_layer


def _toy_model() -> nn.Sequential:
    g = torch.Generator().manual_seed(0)
    return nn.Sequential(
        LearnedShuffle(6, "uniform", noise=0.3, generator=g),
        nn.Conv2d(6, 6, 1),
        LearnedShuffle(6, "random", generator=g),
        nn.Conv2d(6, 4, 1),
        LearnedShuffle(4, "uniform", noise=0.5, generator=g),
    )


def test_learned_shuffles_and_parameters() -> None:
    model = _toy_model()
    layers = learned_shuffles(model)
    assert layers == [model[0], model[2], model[4]]
    assert [id(p) for p in shuffle_parameters(model)] == [id(layer.weight) for layer in layers]
    model[2].harden()
    assert [id(p) for p in shuffle_parameters(model)] == [id(model[0].weight), id(model[4].weight)]


def test_shuffle_penalty_sums_layer_penalties_with_gradient() -> None:
    model = _toy_model()
    total = shuffle_penalty(model)
    assert total.ndim == 0
    expected = sum(float(l12_penalty(layer.weight.detach())) for layer in learned_shuffles(model))
    torch.testing.assert_close(float(total.detach()), expected)
    total.backward()
    assert all(layer.weight.grad is not None for layer in learned_shuffles(model))
    empty = shuffle_penalty(nn.Conv2d(2, 2, 1))
    assert empty.ndim == 0 and float(empty) == 0.0


def test_project_shuffles_matches_layer_projection() -> None:
    model, reference = _toy_model(), _toy_model()
    for m in (model, reference):
        with torch.no_grad():
            for layer in learned_shuffles(m):
                layer.weight.add_(0.1 * torch.randn(layer.weight.shape, generator=torch.Generator().manual_seed(9)))
    project_shuffles_(model, sweeps=3)
    for layer in learned_shuffles(reference):
        layer.project_(sweeps=3)
    for a, b in zip(learned_shuffles(model), learned_shuffles(reference)):
        torch.testing.assert_close(a.weight, b.weight)
        torch.testing.assert_close(a.weight.sum(1), torch.ones(a.channels))


def test_harden_shuffles_returns_hungarian_permutations() -> None:
    model = _toy_model()
    expected = [round_to_permutation(layer.weight.detach()) for layer in learned_shuffles(model)]
    perms = harden_shuffles_(model)
    assert all(torch.equal(p, e) for p, e in zip(perms, expected))
    assert all(layer.is_hardened for layer in learned_shuffles(model))
    assert float(shuffle_penalty(model)) == 0.0 and shuffle_parameters(model) == []


def test_shuffle_stats() -> None:
    model = _toy_model()
    layers = learned_shuffles(model)
    penalties = [float(l12_penalty(layer.weight.detach())) for layer in layers]
    stats = shuffle_stats(model)
    assert stats["num_shuffles"] == 3
    torch.testing.assert_close(stats["penalty"], sum(penalties))
    torch.testing.assert_close(stats["max_penalty"], max(penalties))
    torch.testing.assert_close(stats["max_row_deficit"],
                               max(float(max_row_deficit(layer.weight.detach())) for layer in layers))
    assert stats["max_marginal_error"] < 1e-5
    # Only the random permutation start lies below the rounding threshold.
    assert penalties[1] == 0.0 and min(penalties[0], penalties[2]) > ROUNDING_THRESHOLD
    assert stats["rounding_fraction"] == pytest.approx(1 / 3)
    harden_shuffles_(model)
    hard = shuffle_stats(model)
    assert hard["penalty"] == 0.0 and hard["rounding_fraction"] == 1.0 and hard["max_row_deficit"] == 0.0
    none = shuffle_stats(nn.Conv2d(2, 2, 1))
    assert none["num_shuffles"] == 0 and none["penalty"] == 0.0 and math.isnan(none["rounding_fraction"])


def test_model_helpers_handle_both_parameterisations_together() -> None:
    g = torch.Generator().manual_seed(0)
    layers = [LearnedShuffle(6, "uniform", noise=0.3, generator=g, parameterisation=p)
              for p in ("projected", "sinkhorn", "projected", "sinkhorn")]
    model = nn.Sequential(*layers, LearnedShuffle(4, "random", generator=g, parameterisation="sinkhorn"))
    penalties = [float(layer.penalty().detach()) for layer in learned_shuffles(model)]
    assert layer_penalties(model) == penalties
    total = shuffle_penalty(model)
    assert float(total.detach()) == pytest.approx(math.fsum(penalties), rel=1e-6)
    total.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in shuffle_parameters(model)[:4])
    assert shuffle_stats(model)["penalty"] == pytest.approx(math.fsum(penalties))
    with torch.no_grad():
        for layer in layers:
            layer.weight.add_(0.05)
    logits = [layer.weight.detach().clone() for layer in layers[1::2]]
    project_shuffles_(model)
    assert_doubly_stochastic(layers[0].weight.detach(), atol=0.05)
    assert all(torch.equal(a, layer.weight) for a, layer in zip(logits, layers[1::2]))


def test_mirror_shuffles_move_every_soft_mirror_layer_and_stay_out_of_the_loss_penalty() -> None:
    model = nn.Sequential(mirror_layer(6, 0), LearnedShuffle(6, "uniform", noise=0.5), mirror_layer(6, 1))
    mirrors = [model[0], model[2]]
    assert aslib.nn.shuffles.mirror_parameters(model) == [m.weight for m in mirrors]
    assert aslib.nn.shuffles.shuffle_parameters(model) == [model[1].weight]
    torch.testing.assert_close(aslib.nn.shuffles.shuffle_penalty(model, mirror=False), model[1].penalty())
    torch.testing.assert_close(aslib.nn.shuffles.shuffle_penalty(model),
                               sum(layer.penalty() for layer in learned_shuffles(model)))
    model(torch.randn(3, 6, 2, 2)).square().sum().backward()
    before = [m.weight.detach().clone() for m in model]
    assert aslib.nn.shuffles.mirror_shuffles_(model, 1.0, 0.3) == 2
    assert not torch.equal(model[0].weight, before[0]) and not torch.equal(model[2].weight, before[2])
    assert torch.equal(model[1].weight.detach(), before[1])
