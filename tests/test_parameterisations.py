"""The parameterisation registry: the built-in parameterisations against independent oracles, and a new one
added by one class and one registration, trained and solved end to end."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

import aslib.solver.relaxation as relaxation
from aslib.core.penalty import (
    mirror_step,
    normalise_rows_and_columns,
    project_doubly_stochastic,
    round_to_permutation,
    sinkhorn,
)
from aslib.models import get_model
from aslib.nn.layers import LearnedShuffle
from aslib.nn.parameterisations import (
    PARAMETERISATIONS,
    GumbelSinkhorn,
    Mirror,
    Parameterisation,
    Projected,
    Sinkhorn,
    get_parameterisation,
    gumbel_noise,
    parameterisation_fields,
    register_parameterisation,
    unregister_parameterisation,
)
from aslib.nn.shuffles import anneal_shuffles_, learned_shuffles, shuffle_parameters
from aslib.solver.relaxation import SolverConfig, solve_permutation
from aslib.study.arms import SHUFFLE_ARMS, Arm
from aslib.training.config import TrainConfig
from aslib.training.data import load_dataset
from aslib.training.loop import make_optimizer, penalised_step


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the registry -------------------------------------------------------------------------------------


def test_the_registry_names_the_built_in_parameterisations_once() -> None:
    assert list(PARAMETERISATIONS) == ["projected", "mirror", "sinkhorn", "gumbel_sinkhorn"]
    assert [type(p) for p in PARAMETERISATIONS.values()] == [Projected, Mirror, Sinkhorn, GumbelSinkhorn]
    assert all(get_parameterisation(name).name == name for name in PARAMETERISATIONS)
    assert not hasattr(relaxation, "SOLVER_PARAMETERISATIONS")
    import aslib.nn.layers as layers
    assert not hasattr(layers, "PARAMETERISATIONS")
    choices = TrainConfig.__dataclass_fields__["shuffle_parameterisation"].metadata["choices"]
    assert tuple(choices) == tuple(PARAMETERISATIONS)


def test_unknown_names_are_refused_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown parameterisation 'softmax'; valid: projected, mirror, sinkhorn"):
        get_parameterisation("softmax")
    with pytest.raises(ValueError, match="unknown parameterisation 'softmax'"):
        SolverConfig(parameterisation="softmax")
    with pytest.raises(ValueError, match="unknown parameterisation 'softmax'"):
        Arm("learned", parameterisation="softmax")
    with pytest.raises(ValueError, match="already registered"):
        register_parameterisation("mirror", Mirror())
    with pytest.raises(ValueError, match="built-in"):
        unregister_parameterisation("projected")
    with pytest.raises(TypeError, match="Parameterisation"):
        register_parameterisation("thing", object())  # type: ignore[arg-type]


def test_what_each_parameterisation_states() -> None:
    projected, mirror, sink = (get_parameterisation(n) for n in ("projected", "mirror", "sinkhorn"))
    assert (projected.holds_matrix, projected.optimizer_moves, projected.penalty_in_loss) == (True, True, True)
    assert (mirror.holds_matrix, mirror.optimizer_moves, mirror.penalty_in_loss) == (True, False, False)
    assert (sink.holds_matrix, sink.optimizer_moves, sink.penalty_in_loss) == (False, True, True)
    assert (projected.projects, mirror.projects, sink.projects) == (True, False, False)
    gumbel = get_parameterisation("gumbel_sinkhorn")
    assert (gumbel.holds_matrix, gumbel.optimizer_moves, gumbel.penalty_in_loss, gumbel.projects) == (
        False, True, True, False)
    assert parameterisation_fields() == ("projection_sweeps", "mirror_lam", "mirror_step", "shuffle_tau_end")


def test_arms_read_the_fields_of_their_parameterisation() -> None:
    assert SHUFFLE_ARMS["relaxed"].irrelevant() == ("lam", "mirror_lam", "mirror_step", "shuffle_tau_end")
    assert SHUFFLE_ARMS["l12"].irrelevant() == ("mirror_lam", "mirror_step", "shuffle_tau_end")
    assert SHUFFLE_ARMS["sinkhorn"].irrelevant() == ("lam", "projection_sweeps", "mirror_lam", "mirror_step")
    assert SHUFFLE_ARMS["l12_mirror"].irrelevant() == ("lam", "shuffle_tau_end")
    assert SHUFFLE_ARMS["fixed"].irrelevant() == SHUFFLE_ARMS["none"].irrelevant()
    assert SHUFFLE_ARMS["l12_mirror"].scheme is get_parameterisation("mirror")


# --- the built-in parameterisations against independent oracles ---------------------------------------


def test_projected_update_is_the_projection_of_the_stepped_matrix() -> None:
    layer = LearnedShuffle(6, "uniform", noise=0.4, generator=_gen(1))
    grad = torch.randn(6, 6, generator=_gen(2))
    with torch.no_grad():
        stepped = layer.weight - 0.3 * grad
        layer.weight.copy_(stepped)
    layer.project_(3)
    torch.testing.assert_close(layer.weight.detach(), project_doubly_stochastic(stepped, 3), rtol=0, atol=0)
    stacked = torch.randn(2, 5, 5, generator=_gen(3))
    torch.testing.assert_close(get_parameterisation("projected").project(stacked, 2),
                               project_doubly_stochastic(stacked, 2), rtol=0, atol=0)


def test_sinkhorn_forward_is_sinkhorn_of_the_logits_from_the_log_of_the_start() -> None:
    layer = LearnedShuffle(6, "shuffle", groups=2, parameterisation="sinkhorn", sinkhorn_iters=7, sinkhorn_tau=0.5)
    base = LearnedShuffle(6, "shuffle", groups=2).weight.detach()
    torch.testing.assert_close(layer.weight.detach(), 0.5 * base.clamp_min(1e-3).log(), rtol=0, atol=0)
    torch.testing.assert_close(layer.matrix(), sinkhorn(layer.weight, 7, 0.5), rtol=0, atol=0)
    stacked = torch.randn(3, 4, 4, generator=_gen(4))
    torch.testing.assert_close(get_parameterisation("sinkhorn").matrices(stacked, 5, 0.7), sinkhorn(stacked, 5, 0.7))
    assert get_parameterisation("sinkhorn").project(stacked, 1) is None
    assert "sinkhorn(iters=7, tau=0.5)" in repr(layer)


def _mirror_oracle(M: torch.Tensor, g: torch.Tensor, lam: float, eta: float, sweeps: int) -> torch.Tensor:
    """``normalise(M * exp(-eta (C(g) / max|C(g)| + lam grad P(M))))``, written out in float64."""
    M, g = M.double(), g.double()
    centred = g - g.mean(-1, keepdim=True) - g.mean(-2, keepdim=True) + g.mean((-2, -1), keepdim=True)
    grad_p = 2 - M / M.norm(dim=-1, keepdim=True) - M / M.norm(dim=-2, keepdim=True)
    X = M * torch.exp(-eta * (centred / centred.abs().amax((-2, -1), keepdim=True) + lam * grad_p))
    for _ in range(sweeps):
        X = X / X.sum(-2, keepdim=True)
        X = X / X.sum(-1, keepdim=True)
    return X


def test_mirror_update_is_the_mirror_step_of_the_loss_gradient() -> None:
    layer = LearnedShuffle(6, "uniform", noise=0.5, generator=_gen(5), parameterisation="mirror")
    M = layer.weight.detach().clone()
    g = torch.randn(6, 6, generator=_gen(6))
    layer.weight.grad = g.clone()
    assert layer.mirror_update_(1.5, 0.3, 2)
    torch.testing.assert_close(layer.weight.detach(), mirror_step(M, g, 1.5, 0.3, 2, torch.finfo(g.dtype).tiny),
                               rtol=0, atol=0)
    torch.testing.assert_close(layer.weight.detach().double(), _mirror_oracle(M, g, 1.5, 0.3, 2), rtol=1e-5, atol=1e-6)
    assert layer.weight.grad is None and shuffle_parameters(nn.Sequential(layer)) == []


def test_the_solver_steps_are_the_parameterisations_updates() -> None:
    n, batch = 5, 2
    C = torch.randn(batch, 1, n, n, generator=_gen(7), dtype=torch.float64)
    loss_fn = lambda M: -(C * M).sum((-2, -1))  # noqa: E731
    start = project_doubly_stochastic(1 + torch.rand(batch, 1, n, n, generator=_gen(8), dtype=torch.float64), 5)
    for name in ("projected", "mirror"):
        config = SolverConfig(parameterisation=name, iters=1, step=0.2, lam=0.5, lam_start=1.0, sweeps=2)
        result = solve_permutation(loss_fn, batch, n, config, initial=start.clone(), step_scale=0.5)
        if name == "projected":
            expected = project_doubly_stochastic(start + 0.2 * 0.5 * C - 0.2 * 0.5 * 0.5 * _penalty_grad(start), 2)
        else:
            expected = _mirror_oracle(start, -C.expand_as(start), 0.5, 0.2, 2)
        torch.testing.assert_close(result.starts_M, expected, rtol=1e-9, atol=1e-12)
    config = SolverConfig(parameterisation="sinkhorn", iters=3, step=0.1, sinkhorn_iters=6, tau_end=0.3)
    logits = torch.randn(batch, 1, n, n, generator=_gen(9), dtype=torch.float64)
    X = logits.clone().requires_grad_(True)
    adam = torch.optim.Adam([X], lr=0.1)
    for t in range(3):
        adam.zero_grad()
        loss_fn(sinkhorn(X, 6, config.tau_at(t))).sum().backward()
        adam.step()
    result = solve_permutation(loss_fn, batch, n, config, initial=logits.clone())
    torch.testing.assert_close(result.starts_M, sinkhorn(X.detach(), 6, 0.3), rtol=0, atol=0)


def _penalty_grad(M: torch.Tensor) -> torch.Tensor:
    """The l1-2 penalty's gradient ``2 - M / ||M_i|| - M / ||M^j||`` on a positive ``M``."""
    return 2 - M / M.norm(dim=-1, keepdim=True) - M / M.norm(dim=-2, keepdim=True)


def test_random_starts_are_the_parameterisations_starts() -> None:
    shape = (2, 3, 4, 4)
    for name in PARAMETERISATIONS:
        config = SolverConfig(parameterisation=name, init_noise=0.5)
        starts = relaxation.random_starts(config, shape, _gen(10))
        if name in ("sinkhorn", "gumbel_sinkhorn"):  # logits
            expected = 0.5 * torch.randn(shape, generator=_gen(10), dtype=torch.float64)
        else:
            expected = project_doubly_stochastic((1 + 0.5 * torch.rand(shape, generator=_gen(10),
                                                                       dtype=torch.float64)) / 4, 3)
        torch.testing.assert_close(starts, expected, rtol=0, atol=0)


# --- a new parameterisation: one class, one registration ----------------------------------------------


class RowSoftmax(Parameterisation):
    """Logits ``L``, ``M = normalise(softmax(L / tau, rows), iters)``: row softmax then column/row sweeps."""

    def initial_weight(self, base: torch.Tensor, tau: float) -> torch.Tensor:
        return tau * base.clamp_min(1e-3).log()

    def matrices(self, weights: torch.Tensor, iters: int, tau: float) -> torch.Tensor:
        return normalise_rows_and_columns(torch.softmax(weights / tau, -1), iters)


@pytest.fixture
def row_softmax():
    scheme = register_parameterisation("row_softmax", RowSoftmax())
    yield scheme
    unregister_parameterisation("row_softmax")
    assert "row_softmax" not in PARAMETERISATIONS


def test_a_registered_parameterisation_is_valid_everywhere_then_gone(row_softmax) -> None:
    assert get_parameterisation("row_softmax") is row_softmax and row_softmax.name == "row_softmax"
    TrainConfig(shuffle_parameterisation="row_softmax")
    SolverConfig(parameterisation="row_softmax")
    assert Arm("learned", parameterisation="row_softmax").irrelevant() == (
        "lam", "projection_sweeps", "mirror_lam", "mirror_step", "shuffle_tau_end")
    with pytest.raises(ValueError, match="settle_tol needs the matrix itself"):
        SolverConfig(parameterisation="row_softmax", settle_tol=0.01)
    layer = LearnedShuffle(4, "identity", parameterisation="row_softmax", sinkhorn_iters=3)
    torch.testing.assert_close(layer.matrix(), RowSoftmax().matrices(torch.eye(4).clamp_min(1e-3).log(), 3, 1.0))


def test_a_new_parameterisation_trains_a_shufflenet(row_softmax) -> None:
    torch.manual_seed(0)
    model = get_model("shufflenet_v1_g3", num_classes=10, in_channels=1, stem="cifar", shuffle="learned",
                      width=0.25, stages_repeats=(1, 1, 1), shuffle_init="uniform", shuffle_noise=0.1,
                      shuffle_parameterisation="row_softmax")
    layers = learned_shuffles(model)
    assert layers and all(layer.scheme is row_softmax for layer in layers)
    optimizer = make_optimizer(model, TrainConfig(lr=0.1))
    assert {id(p) for p in optimizer.param_groups[-1]["params"]} == {id(layer.weight) for layer in layers}
    data = load_dataset("digits", max_train_samples=64).train
    x = torch.stack([data[i][0] for i in range(32)])
    y = torch.tensor([int(data[i][1]) for i in range(32)])
    before = [layer.weight.detach().clone() for layer in layers]
    for _ in range(3):
        ce, _ = penalised_step(model, x, y, optimizer, 0.1)
        assert torch.isfinite(ce)
    assert all(not torch.equal(b, layer.weight) for b, layer in zip(before, layers))
    for layer in layers:
        M = layer.matrix()
        torch.testing.assert_close(M.sum(-1), torch.ones(M.shape[0]), rtol=0, atol=1e-5)
        assert sorted(layer.harden().tolist()) == list(range(M.shape[0]))


def test_a_new_parameterisation_runs_through_fit(row_softmax, tmp_path) -> None:
    from aslib.training.train import fit

    torch.manual_seed(0)
    config = TrainConfig(model="shufflenet_v1_g3", model_kwargs={"width": 0.25}, stages_repeats=(1, 1, 1),
                         batch_size=32, show_progress=False, recalibration_batches=2, epochs=1, max_train_samples=96,
                         shuffle_init="uniform", shuffle_noise=0.1, shuffle_parameterisation="row_softmax",
                         lam=0.03, checkpoint=False, output_dir=str(tmp_path))
    model = get_model("shufflenet_v1_g3", num_classes=10, in_channels=1, stem="cifar", shuffle="learned",
                      width=0.25, stages_repeats=(1, 1, 1), shuffle_init="uniform", shuffle_noise=0.1,
                      shuffle_parameterisation="row_softmax")
    result = fit(model, load_dataset("digits", max_train_samples=96), config)
    assert len(result.permutations) == len(learned_shuffles(model)) > 0
    assert all(sorted(p) == list(range(len(p))) for p in result.permutations)


def test_a_new_parameterisation_solves_a_linear_assignment(row_softmax) -> None:
    n, batch = 6, 2
    perms = torch.stack([torch.randperm(n, generator=_gen(11 + b)) for b in range(batch)])
    C = torch.eye(n, dtype=torch.float64)[perms] * 3 + 0.1 * torch.rand(batch, n, n, generator=_gen(13),
                                                                         dtype=torch.float64)
    loss_fn = lambda M: -(C.unsqueeze(1) * M).sum((-2, -1))  # noqa: E731
    config = SolverConfig(parameterisation="row_softmax", iters=60, step=0.1, restarts=2, sinkhorn_iters=5)
    result = solve_permutation(loss_fn, batch, n, config, generator=_gen(14))
    assert torch.equal(result.col_ind, round_to_permutation(C))
    assert result.starts_M.shape == (batch, 2, n, n) and result.nit == 60


# --- Gumbel-Sinkhorn (Mena et al. 2018) ---------------------------------------------------------------


def test_gumbel_noise_is_seeded_and_standard_gumbel() -> None:
    a, b = gumbel_noise((200, 500), _gen(40)), gumbel_noise((200, 500), _gen(40))
    assert torch.equal(a, b) and not torch.equal(a, gumbel_noise((200, 500), _gen(41)))
    # oracle: the standard Gumbel law's mean (Euler's constant), variance pi^2 / 6 and CDF exp(-exp(-x))
    assert float(a.mean()) == pytest.approx(0.5772156649, abs=0.01)
    assert float(a.var()) == pytest.approx(math.pi**2 / 6, rel=0.02)
    for x in (-1.0, 0.0, 1.0, 3.0):
        assert float((a <= x).double().mean()) == pytest.approx(math.exp(-math.exp(-x)), abs=0.005)
    like = torch.zeros(3, dtype=torch.float32)
    assert gumbel_noise((2, 3), _gen(42), like).dtype == torch.float32


def test_gumbel_sinkhorn_is_doubly_stochastic_at_low_temperature_and_rounds_the_logits() -> None:
    scheme = get_parameterisation("gumbel_sinkhorn")
    L = torch.randn(4, 6, 6, generator=_gen(43), dtype=torch.float64)
    noisy = scheme.perturb(L, _gen(44))
    M = scheme.matrices(noisy, 1000, 0.1)
    torch.testing.assert_close(M.sum(-1), torch.ones(4, 6, dtype=torch.float64), rtol=0, atol=1e-9)
    column_error = (M.sum(-2) - 1).abs().max()
    assert column_error < 2e-3 and column_error < (scheme.matrices(noisy, 50, 0.1).sum(-2) - 1).abs().max()
    assert bool((M.amax(-1) > 0.5).all())  # at low temperature every row is dominated by one entry
    torch.testing.assert_close(scheme.matrices(L, 20, 0.5), sinkhorn(L, 20, 0.5), rtol=0, atol=0)
    assert torch.equal(noisy, scheme.perturb(L, _gen(44))) and not torch.equal(noisy, L)
    # the hard permutation: the Hungarian assignment of the logits (scipy, an independent solver)
    expected = torch.stack([torch.from_numpy(linear_sum_assignment(-x.numpy())[1]) for x in L])
    assert torch.equal(round_to_permutation(scheme.rounding_scores(L, 20, 0.5)), expected)


def test_a_gumbel_sinkhorn_layer_is_noisy_in_training_only_and_hardens_to_the_logits_assignment() -> None:
    layer = LearnedShuffle(6, "uniform", noise=0.5, generator=_gen(45), parameterisation="gumbel_sinkhorn")
    torch.manual_seed(0)
    first, second = layer.matrix(), layer.matrix()
    assert not torch.equal(first, second)  # fresh noise at every training pass
    layer.eval()
    torch.testing.assert_close(layer.matrix(), sinkhorn(layer.weight, layer.sinkhorn_iters, layer.sinkhorn_tau),
                               rtol=0, atol=0)
    logits = layer.weight.detach().clone()
    perm = layer.harden()
    assert torch.equal(perm, torch.from_numpy(linear_sum_assignment(-logits.numpy())[1]))
    assert "gumbel_sinkhorn(" in repr(LearnedShuffle(4, "identity", parameterisation="gumbel_sinkhorn"))


def test_anneal_shuffles_sets_a_geometric_temperature_on_logit_layers_only() -> None:
    model = nn.Sequential(LearnedShuffle(4, "identity", parameterisation="gumbel_sinkhorn", sinkhorn_tau=2.0),
                          LearnedShuffle(4, "identity", parameterisation="sinkhorn"),
                          LearnedShuffle(4, "identity", parameterisation="mirror", noise=0.1))
    for fraction in (0.0, 0.5, 1.0):
        anneal_shuffles_(model, fraction, 0.02)
        assert model[0].sinkhorn_tau == pytest.approx(2.0 * (0.01) ** fraction)
        assert model[1].sinkhorn_tau == pytest.approx(0.02 ** fraction)
        assert model[2].sinkhorn_tau == 1.0
    assert model[0].sinkhorn_tau_start == 2.0


def test_gumbel_sinkhorn_solves_a_linear_assignment_by_name_reproducibly() -> None:
    n, batch = 6, 2
    perms = torch.stack([torch.randperm(n, generator=_gen(50 + b)) for b in range(batch)])
    C = torch.eye(n, dtype=torch.float64)[perms] * 3 + 0.1 * torch.rand(batch, n, n, generator=_gen(52),
                                                                         dtype=torch.float64)
    loss_fn = lambda M: -(C.unsqueeze(1) * M).sum((-2, -1))  # noqa: E731
    config = SolverConfig(parameterisation="gumbel_sinkhorn", iters=80, step=0.1, restarts=2, sinkhorn_iters=10)
    first = solve_permutation(loss_fn, batch, n, config, generator=_gen(53))
    again = solve_permutation(loss_fn, batch, n, config, generator=_gen(53))
    other = solve_permutation(loss_fn, batch, n, config, generator=_gen(54))
    assert torch.equal(first.col_ind, round_to_permutation(C))
    assert torch.equal(first.M, again.M) and torch.equal(first.loss_history, again.loss_history)
    assert not torch.equal(first.M, other.M)
    # the same starts without the noise follow another path
    plain = solve_permutation(loss_fn, batch, n, replace(config, parameterisation="sinkhorn"), generator=_gen(53))
    assert not torch.equal(first.loss_history, plain.loss_history)  # the noise moved the path


def test_gumbel_sinkhorn_trains_through_fit_with_an_annealed_temperature(tmp_path) -> None:
    from aslib.training.train import train

    config = TrainConfig(model="shufflenet_v1_g3", model_kwargs={"width": 0.25}, stages_repeats=(1, 1, 1),
                         batch_size=32, show_progress=False, recalibration_batches=2, epochs=2, max_train_samples=96,
                         shuffle_parameterisation="gumbel_sinkhorn", shuffle_tau_end=0.25, lam=0.0,
                         checkpoint=False, output_dir=str(tmp_path))
    with pytest.warns(UserWarning):  # two epochs do not bring the shuffles to permutations
        result = train(config)
    assert all(sorted(p) == list(range(len(p))) for p in result.permutations) and result.permutations
    layers = learned_shuffles(result.model)
    assert layers and all(layer.sinkhorn_tau == pytest.approx(0.25) for layer in layers)  # the last epoch's
