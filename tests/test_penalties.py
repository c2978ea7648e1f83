"""The penalty registry (aslib/core/penalties.py): each penalty against numpy closed forms, brute force over all
permutations, finite differences and its stated constants, and every caller reaching it by name."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from aslib.core.penalties import (
    DEFAULT_PENALTY,
    PENALTIES,
    Entropy,
    L12,
    Lp,
    Penalty,
    TransformedL1,
    get_penalty,
    register_penalty,
    unregister_penalty,
)
from aslib.core.penalty import (
    ROUNDING_THRESHOLD,
    fused_l12_penalty,
    l12_penalty,
    mirror_step,
    permutation_matrix,
    random_doubly_stochastic,
)
from aslib.core.theory import near_permutations, penalty_facts
from aslib.examples import graph_matching as gm
from aslib.examples import two_layer as tl
from aslib.nn.shuffles import learned_shuffles, shuffle_penalty
from aslib.solver.qap import quadratic_assignment
from aslib.solver.relaxation import SolverConfig, solve_permutation
from aslib.training.config import TrainConfig, parse_args
from aslib.training.loop import make_optimizer, penalised_step
from helpers import mirror_layer, tiny_shufflenet

NAMES = ("l12", "lp", "tl1", "entropy")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def numpy_value(name: str, M: np.ndarray) -> float:
    """Independent oracle: each penalty's definition in numpy, entry by entry (docs/mathematics.md)."""
    n = M.shape[-1]
    if name == "l12":
        lines = list(M) + list(M.T)
        return float(sum(np.abs(x).sum() - np.sqrt((x**2).sum()) for x in lines))
    x = np.abs(M).ravel()
    if name == "lp":
        p, eps = 0.5, 1e-3
        return float(sum((v + eps) ** p - eps**p for v in x) - n * ((1 + eps) ** p - eps**p))
    if name == "tl1":
        return float(sum(2.0 * v / (1.0 + v) for v in x) - n)
    return float(sum(-v * math.log(v) for v in x if v > 0))


def numpy_sinkhorn(X: np.ndarray, sweeps: int = 500) -> np.ndarray:
    """A doubly stochastic matrix from a positive one by alternate normalisation (a second construction of D_n)."""
    for _ in range(sweeps):
        X = X / X.sum(0, keepdims=True)
        X = X / X.sum(1, keepdims=True)
    return X


# --- the registry -------------------------------------------------------------------------------------


def test_the_registry_holds_the_four_penalties_the_paper_s_first() -> None:
    assert tuple(PENALTIES) == NAMES and DEFAULT_PENALTY == "l12"
    assert [type(p) for p in PENALTIES.values()] == [L12, Lp, TransformedL1, Entropy]
    assert all(get_penalty(name).name == name for name in NAMES)
    assert tuple(TrainConfig.__dataclass_fields__["shuffle_penalty"].metadata["choices"]) == NAMES
    assert TrainConfig().shuffle_penalty == SolverConfig().penalty == "l12"


def test_unknown_names_and_bad_registrations_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown penalty 'l0'; valid: l12, lp, tl1, entropy"):
        get_penalty("l0")
    with pytest.raises(ValueError, match="unknown penalty"):
        SolverConfig(penalty="l0")
    with pytest.raises(ValueError, match="unknown shuffle_penalty"):
        TrainConfig(shuffle_penalty="l0")
    with pytest.raises(ValueError, match="already registered"):
        register_penalty("lp", Lp())
    with pytest.raises(ValueError, match="built-in"):
        unregister_penalty("entropy")
    with pytest.raises(TypeError, match="Penalty"):
        register_penalty("thing", object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="p must lie in"):
        Lp(1.0)
    with pytest.raises(ValueError, match="a must be"):
        TransformedL1(0.0)
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        get_penalty("tl1").value(np.eye(3))  # type: ignore[arg-type]


def test_a_registered_penalty_is_valid_everywhere_then_gone() -> None:
    register_penalty("tl1_a2", TransformedL1(2.0))
    try:
        TrainConfig(shuffle_penalty="tl1_a2")
        assert SolverConfig(penalty="tl1_a2").penalty == "tl1_a2"
        assert get_penalty("tl1_a2").lipschitz(3) == pytest.approx(3 * 1.5)
    finally:
        unregister_penalty("tl1_a2")
    assert "tl1_a2" not in PENALTIES


def test_the_command_line_takes_the_penalty_and_the_temperature() -> None:
    config, _ = parse_args(["--shuffle-penalty", "entropy", "--shuffle-tau-end", "0.1"])
    assert (config.shuffle_penalty, config.shuffle_tau_end) == ("entropy", 0.1)
    with pytest.raises(ValueError, match="shuffle_tau_end must be >= 0"):
        TrainConfig(shuffle_tau_end=-1.0)


# --- each penalty against independent oracles ----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_value_equals_the_numpy_definition(name: str) -> None:
    M = torch.rand(5, 4, 4, generator=_gen(1), dtype=torch.float64)
    if name != "entropy":  # the entropy is stated for M >= 0 only
        M = M - 0.3
    got = get_penalty(name).value(M)
    assert got.shape == (5,)
    expected = [numpy_value(name, m) for m in M.numpy()]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_zero_on_every_permutation_of_four_by_brute_force(name: str) -> None:
    perms = permutation_matrix(torch.tensor(list(itertools.permutations(range(4)))), torch.float64)
    assert perms.shape == (24, 4, 4)
    values = get_penalty(name).value(perms)
    assert float(values.abs().max()) < 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_positive_on_random_doubly_stochastic_matrices(name: str) -> None:
    penalty = get_penalty(name)
    birkhoff = random_doubly_stochastic(5, (300,), generator=_gen(2))
    assert float(penalty.value(birkhoff).min()) > 1e-3
    rng = np.random.default_rng(3)
    normalised = torch.from_numpy(np.stack([numpy_sinkhorn(rng.random((5, 5)) + 0.01) for _ in range(50)]))
    assert float(penalty.value(normalised).min()) > 1e-3
    # a mixture of two permutations that differ by a transposition: the smallest interior points
    for t in (1e-4, 0.3, 0.5):
        M = (1 - t) * torch.eye(5, dtype=torch.float64) + t * torch.eye(5, dtype=torch.float64)[[1, 0, 2, 3, 4]]
        assert float(penalty.value(M)) > 0


@pytest.mark.parametrize("name", ("l12", "lp", "tl1"))
def test_the_lipschitz_bound_holds_on_sampled_pairs_and_is_reached_at_zero(name: str) -> None:
    penalty, n = get_penalty(name), 5
    L = penalty.lipschitz(n)
    g = _gen(4)
    sparse = torch.rand(400, n, n, generator=g, dtype=torch.float64)
    sparse = sparse * (torch.rand(400, n, n, generator=g, dtype=torch.float64) < 0.3)
    M = torch.cat([sparse, torch.rand(400, n, n, generator=g, dtype=torch.float64)])
    N = torch.cat([sparse + 1e-7 * torch.rand(400, n, n, generator=g, dtype=torch.float64),
                   torch.rand(400, n, n, generator=g, dtype=torch.float64)])
    ratio = (penalty.value(M) - penalty.value(N)).abs() / (M - N).flatten(-2).norm(dim=-1)
    assert float(ratio.max()) <= L * (1 + 1e-6)
    if name != "l12":  # separable: |P(delta J) - P(0)| / ||delta J||_F -> n phi'(0)
        delta = 1e-7
        at_zero = float(penalty.value(torch.full((n, n), delta, dtype=torch.float64)) - penalty.value(
            torch.zeros(n, n, dtype=torch.float64))) / (n * delta)
        assert at_zero == pytest.approx(L, rel=1e-3)


def test_the_stated_constants() -> None:
    n = 6
    assert get_penalty("l12").lipschitz(n) == pytest.approx(2 * math.sqrt(n * (n - 1)))
    assert get_penalty("lp").lipschitz(n) == pytest.approx(n * 0.5 * 1e-3 ** -0.5)
    assert get_penalty("tl1").lipschitz(n) == pytest.approx(n * 2.0)
    assert get_penalty("entropy").lipschitz(n) is None and Lp(0.5, 0.0).lipschitz(n) is None
    assert get_penalty("l12").rounding_threshold == ROUNDING_THRESHOLD and get_penalty("l12").error_factor == 2
    assert Lp(0.5, 0.0).rounding_threshold == pytest.approx(2 ** 0.5 - 1)
    assert TransformedL1(3.0).rounding_threshold == pytest.approx(1 / 7)
    assert get_penalty("entropy").rounding_threshold == pytest.approx(math.log(2))
    assert get_penalty("tl1").error_factor == pytest.approx(3.0)


def test_the_entropy_ratio_at_zero_grows_without_bound() -> None:
    penalty, n = get_penalty("entropy"), 4
    ratios = [float(penalty.value(torch.full((n, n), d, dtype=torch.float64))) / (n * d) for d in (1e-2, 1e-5, 1e-8)]
    np.testing.assert_allclose(ratios, [n * (math.log(1 / d) + 0.0) for d in (1e-2, 1e-5, 1e-8)], rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_autograd_and_the_closed_form_gradient_equal_finite_differences(name: str) -> None:
    penalty = get_penalty(name)
    M = (0.5 * random_doubly_stochastic(4, (3,), generator=_gen(5)) + 0.1).requires_grad_(True)
    (autograd,) = torch.autograd.grad(penalty.value(M).sum(), M)
    h, numeric = 1e-6, torch.zeros_like(M)
    with torch.no_grad():
        for b, i, j in itertools.product(range(3), range(4), range(4)):
            E = torch.zeros_like(M)
            E[b, i, j] = h
            numeric[b, i, j] = (penalty.value(M + E)[b] - penalty.value(M - E)[b]) / (2 * h)
    torch.testing.assert_close(autograd, numeric, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(penalty.gradient(M.detach()), numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_the_error_bound_holds_below_the_threshold(name: str) -> None:
    penalty = get_penalty(name)
    M, _ = near_permutations(6, 3000, generator=_gen(6))
    value = penalty.value(M)
    held = value < penalty.rounding_threshold
    assert int(held.sum()) > 100
    for m, v in zip(M[held].numpy(), value[held].tolist()):
        rows, cols = linear_sum_assignment(-m)
        assert np.array_equal(m.argmax(1), cols)  # the row argmax is the Hungarian rounding, a permutation
        R = np.eye(6)[cols]
        assert np.abs(m - R).sum() <= penalty.error_factor * v + 1e-12


def test_penalty_facts_reports_what_the_tests_check() -> None:
    for name in NAMES:
        facts = penalty_facts(get_penalty(name), 4, 200, exhaustive_n=4, generator=_gen(7))
        assert facts["max_on_permutations"] < 1e-12 < facts["min_inside"]
        assert facts["bound_violations"] == 0 < facts["bound_held"]
        assert facts["max_gradient_error"] < 1e-12
        assert (facts["lipschitz_constant"] is None) == (name == "entropy")


def test_the_default_is_the_l12_penalty_bit_for_bit() -> None:
    M = random_doubly_stochastic(7, (4,), generator=_gen(8))
    assert torch.equal(get_penalty("l12").value(M), l12_penalty(M))
    assert torch.equal(get_penalty("l12").fused(M), fused_l12_penalty(M))
    assert get_penalty("l12").mirror_gradient is None  # the mirror step's built-in closed form
    # the l1-2 gradient passed explicitly moves the mirror step as its built-in form does (the constant 2 is
    # undone by the normalisation)
    G = torch.randn(4, 7, 7, generator=_gen(9), dtype=torch.float64)
    built_in = mirror_step(M, G, 0.8, 0.5, 3, 1e-9)
    explicit = mirror_step(M, G, 0.8, 0.5, 3, 1e-9, L12().gradient)
    torch.testing.assert_close(built_in, explicit, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ("lp", "tl1", "entropy"))
def test_the_mirror_step_adds_the_named_penalty_s_gradient(name: str) -> None:
    M = random_doubly_stochastic(5, (2,), generator=_gen(10)) * 0.9 + 0.02
    G = torch.randn(2, 5, 5, generator=_gen(11), dtype=torch.float64)
    step, lam = 0.4, 0.7
    stepped = mirror_step(M, G, lam, step, 1, 1e-9, get_penalty(name).gradient)
    # oracle: the formula of mirror_step written out with the gradient taken by autograd
    X = M.clone().requires_grad_(True)
    (dP,) = torch.autograd.grad(get_penalty(name).value(X).sum(), X)
    C = G - G.mean(-1, keepdim=True) - G.mean(-2, keepdim=True) + G.mean((-2, -1), keepdim=True)
    scale = C.abs().amax((-2, -1), keepdim=True)
    Y = M * torch.exp(-step * (C / scale + lam * dP))
    Y = Y / Y.sum(-2, keepdim=True)
    Y = Y / Y.sum(-1, keepdim=True)
    torch.testing.assert_close(stepped, Y, rtol=1e-10, atol=1e-12)


# --- every caller, by name -----------------------------------------------------------------------------


def _assignment(n: int = 6, batch: int = 2):
    perms = torch.stack([torch.randperm(n, generator=_gen(20 + b)) for b in range(batch)])
    C = torch.eye(n, dtype=torch.float64)[perms] * 3 + 0.1 * torch.rand(batch, n, n, generator=_gen(21),
                                                                         dtype=torch.float64)
    return C, lambda M: -(C.unsqueeze(1) * M).sum((-2, -1))


@pytest.mark.parametrize("parameterisation", ("mirror", "projected"))
@pytest.mark.parametrize("name", ("lp", "tl1", "entropy"))
def test_the_solver_optimises_the_named_penalty(parameterisation: str, name: str) -> None:
    C, loss_fn = _assignment()
    config = SolverConfig(parameterisation=parameterisation, iters=150, step=0.5, lam=0.5, restarts=2,
                          penalty=name)
    result = solve_permutation(loss_fn, 2, 6, config, step_scale=0.3, generator=_gen(22))
    hungarian = torch.stack([torch.from_numpy(linear_sum_assignment(-c.numpy())[1]) for c in C])
    assert torch.equal(result.col_ind, hungarian)
    assert bool(torch.isfinite(result.M).all())


def test_a_different_penalty_gives_a_different_path() -> None:
    C, loss_fn = _assignment()
    runs = {name: solve_permutation(loss_fn, 2, 6, SolverConfig(iters=30, lam=1.0, penalty=name), generator=_gen(23))
            for name in NAMES}
    assert all(not torch.equal(runs["l12"].M, runs[name].M) for name in NAMES[1:])


@pytest.mark.parametrize("name", ("lp", "tl1", "entropy"))
def test_quadratic_assignment_takes_the_penalty_option(name: str) -> None:
    inst = gm.random_regular(10, 3, batch=1, seed=2)
    result = quadratic_assignment(inst.A[0], inst.B[0], "l12", {"maximize": True, "penalty": name, "rng": 0})
    assert sorted(result.col_ind.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="unknown penalty"):
        quadratic_assignment(inst.A[0], inst.B[0], "l12", {"penalty": "l0"})


@pytest.mark.parametrize("method", gm.GRAPH_ALTERNATIVES)
def test_graph_matching_accepts_the_new_methods(method: str) -> None:
    inst = gm.erdos_renyi(8, 0.4, noise=0.0, batch=2, seed=5)
    config = replace(gm.graph_matching_config(method), iters=40, restarts=2)
    assert config.penalty == (method if method in gm.PENALTY_METHODS else "l12")
    result = gm.match_graphs(inst.A, inst.B, method, config=config)
    assert result.method == method and result.col_ind.shape == (2, 8)
    assert torch.allclose(result.fun.double(), gm.edge_disagreement(inst.A, inst.B, result.col_ind))
    assert gm.graph_matching_config("l12") == replace(gm.graph_matching_config("lp"), penalty="l12")


@pytest.mark.parametrize("method", tl.TWO_LAYER_ALTERNATIVES)
def test_the_two_layer_network_accepts_the_new_methods(method: str) -> None:
    problem = tl.make_teacher_student(4, 4, 2, seed=1, setup="after")
    result = tl.learn_permutation(problem, method, iters=60)
    assert result.col_ind.shape == (2, 4)
    config = tl.two_layer_config(method, "after")
    reference = tl.two_layer_config("l12" if method in PENALTIES else "sinkhorn", "after")
    assert replace(config, penalty="l12", parameterisation=reference.parameterisation) == reference


@pytest.mark.parametrize("name", ("lp", "entropy"))
def test_training_puts_the_named_penalty_in_the_loss_and_the_mirror_step(name: str) -> None:
    torch.manual_seed(0)
    model = tiny_shufflenet(shuffle_init="uniform", shuffle_noise=0.2, shuffle_parameterisation="projected")
    matrices = [layer.matrix() for layer in learned_shuffles(model)]
    expected = sum(float(get_penalty(name).value(M.detach())) for M in matrices)
    assert float(shuffle_penalty(model, penalty=name).detach()) == pytest.approx(expected, rel=1e-6)
    # one small penalised step (lam = 1) from the same start moves M differently under two penalties
    x, y = torch.randn(8, 1, 32, 32, generator=_gen(30)), torch.arange(8) % 10
    steps = {}
    for penalty in ("l12", name):
        torch.manual_seed(0)
        m = tiny_shufflenet(shuffle_init="uniform", shuffle_noise=0.2, shuffle_parameterisation="projected")
        penalised_step(m, x, y, make_optimizer(m, TrainConfig(lr=1e-3)), 1.0, penalty=penalty)
        steps[penalty] = learned_shuffles(m)[0].matrix().detach()
    assert not torch.equal(steps["l12"], steps[name])
    # the mirror layer's step is mirror_step with the named penalty's gradient
    layer = mirror_layer(5, seed=3)
    M0 = layer.weight.detach().clone()
    grad = torch.randn(5, 5, generator=_gen(31))
    layer.weight.grad = grad.clone()
    assert layer.mirror_update_(0.6, 0.3, 1, name)
    expected_M = mirror_step(M0, grad, 0.6, 0.3, 1, torch.finfo(grad.dtype).tiny, get_penalty(name).gradient)
    torch.testing.assert_close(layer.weight.detach(), expected_M, rtol=0, atol=0)


def test_penalty_objects_state_their_interface() -> None:
    assert isinstance(get_penalty("lp"), Penalty)
    assert "p=0.5" in repr(get_penalty("lp")) and "a=1" in repr(get_penalty("tl1"))
