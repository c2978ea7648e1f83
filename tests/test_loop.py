"""Tests of aslib.training.loop: the pieces of a training step (the penalised step, optimizer groups, evaluation,
BatchNorm recalibration, progressive hardening, the mirror step)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import aslib.core.penalties
import aslib.nn.layers
import aslib.nn.shuffles
from aslib.core.penalty import l12_penalty
from aslib.models import get_model
from aslib.nn.layers import LearnedShuffle
from aslib.nn.shuffles import learned_shuffles, shuffle_parameters
from aslib.training.config import TrainConfig
from aslib.training.data import load_dataset
from aslib.training.loop import SettledShuffles, evaluate, make_optimizer, penalised_step, recalibrate_batchnorm
from aslib.training.loop import penalty_weight

from helpers import conv_mix, tiny_shufflenet


def test_penalised_step_matches_the_former_formulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """One training step of a ShuffleNet v2 with learned shuffles, new code against the former one (1x1
    convolution, autograd's l1-2 penalty, every equal-size matrix stacked): same loss, same weights after."""
    torch.manual_seed(0)
    new = get_model("shufflenet_v2_0.5", shuffle="learned", shuffle_init="uniform", shuffle_noise=0.3,
                    stages_repeats=(2, 1, 1), in_channels=1).double()
    old = get_model("shufflenet_v2_0.5", shuffle="learned", shuffle_init="uniform", shuffle_noise=0.3,
                    stages_repeats=(2, 1, 1), in_channels=1).double()
    old.load_state_dict(new.state_dict())
    x = torch.randn(8, 1, 8, 8, dtype=torch.float64)
    y = torch.arange(8) % 10
    config = TrainConfig(lr=0.05, lam=0.1)
    ce_new, logits_new = penalised_step(new, x, y, make_optimizer(new, config), 0.1)
    stacked_groups = lambda model: [[layer for layer in learned_shuffles(model) if layer.channels == c]  # noqa: E731
                                    for c in sorted({layer.channels for layer in learned_shuffles(model)})]
    with monkeypatch.context() as patch:
        patch.setattr(aslib.nn.layers, "mix_channels", conv_mix)
        for module in (aslib.nn.layers, aslib.core.penalties):  # the l1-2 penalty of the registry calls the fused one
            patch.setattr(module, "fused_l12_penalty", lambda M: l12_penalty(M, check_finite=False))
        patch.setattr(aslib.nn.shuffles, "_soft_groups", stacked_groups)
        assert any(len(group) > 1 for group in stacked_groups(old))  # the stacked path is exercised
        ce_old, logits_old = penalised_step(old, x, y, make_optimizer(old, config), 0.1)
    torch.testing.assert_close(ce_new, ce_old, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logits_new, logits_old, rtol=1e-10, atol=1e-10)
    for (name, a), b in zip(new.state_dict().items(), old.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("decay_norm_and_bias", [False, True])
def test_optimizer_groups_exclude_shuffles_from_weight_decay(decay_norm_and_bias):
    model = tiny_shufflenet()
    config = TrainConfig(weight_decay=1e-3, decay_norm_and_bias=decay_norm_and_bias)
    groups = {g["name"]: g for g in make_optimizer(model, config).param_groups}
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(groups["shuffle"]["params"]) == ids(shuffle_parameters(model)) and groups["shuffle"]["weight_decay"] == 0
    norms = [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    biases = [m.bias for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None]
    convs = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert ids(convs) <= ids(groups["decay"]["params"]) and groups["decay"]["weight_decay"] == 1e-3
    if decay_norm_and_bias:
        assert "no_decay" not in groups
        assert ids(norms + biases) <= ids(groups["decay"]["params"])
    else:
        assert ids(groups["no_decay"]["params"]) == ids(norms + biases) and groups["no_decay"]["weight_decay"] == 0
    every = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in model.parameters())


def test_batchnorm_recalibration_is_the_average_over_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    model.eval()
    batches = [(torch.randn(8, 2, 4, 4) * (k + 1) + k, None) for k in range(5)]
    used = recalibrate_batchnorm(model, batches, 3)
    assert used == 3 and not model.training and model[1].momentum == 0.1
    with torch.no_grad():
        feats = [model[0](x) for x, _ in batches[:3]]
    means = torch.stack([f.mean((0, 2, 3)) for f in feats])
    variances = torch.stack([f.permute(1, 0, 2, 3).reshape(3, -1).var(1, unbiased=True) for f in feats])
    torch.testing.assert_close(model[1].running_mean, means.mean(0))
    torch.testing.assert_close(model[1].running_var, variances.mean(0))
    assert model[1].num_batches_tracked.item() == 3


def test_evaluate_matches_a_direct_computation():
    torch.manual_seed(1)
    model = tiny_shufflenet("fixed").eval()
    test = load_dataset("digits").test
    loss, acc = evaluate(model, test, batch_size=50)
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        logits = model(x)
    assert acc == (logits.argmax(1) == y).sum().item() / len(y)
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)


def test_settled_shuffles_harden_after_their_patience_and_only_then():
    at_permutation = LearnedShuffle(6, "random", generator=torch.Generator().manual_seed(0))
    at_uniform = LearnedShuffle(6, "uniform")
    model = nn.Sequential(at_permutation, at_uniform)
    settled = SettledShuffles(2)
    assert settled.update_(model, 1) == [] and not at_permutation.is_hardened
    assert settled.update_(model, 2) == [0] and at_permutation.is_hardened and not at_uniform.is_hardened
    assert at_permutation.perm.tolist() == torch.randperm(6, generator=torch.Generator().manual_seed(0)).tolist()
    assert settled.update_(model, 3) == [] and settled.hardened_at == {0: 2}
    assert SettledShuffles(0).update_(nn.Sequential(LearnedShuffle(4, "identity")), 1) == []


def test_mirror_shuffles_get_no_optimizer_and_take_their_own_step():
    from aslib.training.loop import penalised_step
    from aslib.core.penalty import mirror_step

    model = tiny_shufflenet(shuffle_init="uniform", shuffle_noise=0.1, shuffle_parameterisation="mirror")
    layers = learned_shuffles(model)
    assert layers and all(layer.is_mirror for layer in layers)
    groups = {g["name"]: g for g in make_optimizer(model, TrainConfig()).param_groups}
    assert "shuffle" not in groups  # no optimizer moves M: SGD's clamped steps are what the mirror step avoids
    every = {id(p) for g in groups.values() for p in g["params"]}
    assert every == {id(p) for p in model.parameters()} - {id(layer.weight) for layer in layers}
    x, y = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 10
    before = [layer.weight.detach().clone() for layer in layers]
    reference = copy.deepcopy(model)
    optimizer = make_optimizer(model, TrainConfig())
    with pytest.raises(ValueError, match="mirror_step_size > 0"):  # mirror shuffles that would never move
        penalised_step(model, x, y, optimizer, lam=5.0)
    assert all(torch.equal(layer.weight.detach(), old) for layer, old in zip(layers, before))
    penalised_step(model, x, y, optimizer, lam=5.0, mirror_lam=2.0, mirror_step_size=0.25)
    # M's gradient is the cross-entropy's alone (lam, the loss weight, does not reach mirror shuffles) and
    # the step is mirror_step with mirror_lam and the step size
    torch.nn.functional.cross_entropy(reference(x), y).backward()
    for layer, old, ref in zip(layers, before, learned_shuffles(reference)):
        torch.testing.assert_close(ref.weight.detach(), old)
        expected = mirror_step(old, ref.weight.grad, 2.0, 0.25, 1, torch.finfo(old.dtype).tiny)
        torch.testing.assert_close(layer.weight.detach(), expected)
    # a second step follows the second batch's gradient only: the first was consumed, not summed into it
    x2 = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    second = copy.deepcopy(model)
    torch.nn.functional.cross_entropy(second(x2), y).backward()
    after_first = [layer.weight.detach().clone() for layer in layers]
    penalised_step(model, x2, y, optimizer, lam=5.0, mirror_lam=2.0, mirror_step_size=0.25)
    for layer, old, ref in zip(layers, after_first, learned_shuffles(second)):
        expected = mirror_step(old, ref.weight.grad, 2.0, 0.25, 1, torch.finfo(old.dtype).tiny)
        torch.testing.assert_close(layer.weight.detach(), expected)


def test_shuffle_matrices_get_their_own_learning_rate_and_the_schedule_keeps_the_ratio():
    model = tiny_shufflenet(shuffle_init="uniform", shuffle_noise=0.1)
    optimizer = make_optimizer(model, TrainConfig(lr=0.2, shuffle_lr_scale=5.0))
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert lrs == {"decay": 0.2, "no_decay": 0.2, "shuffle": pytest.approx(1.0)}
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    optimizer.step(), scheduler.step()
    groups = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert groups["shuffle"] == pytest.approx(5.0 * groups["decay"]) and groups["decay"] < 0.2


def test_penalty_weight_is_zero_before_the_start_then_ramps_to_lam():
    config = TrainConfig(lam=0.5, penalty_start_epoch=1.0, lam_warmup_epochs=2.0)
    steps_per_epoch = 10
    weights = [penalty_weight(config, step, steps_per_epoch) for step in range(40)]
    assert weights[:10] == [0.0] * 10  # the first epoch, before the start
    # then a linear ramp over 20 steps: (k + 1) / 20 of lam at the k-th step after the start
    assert weights[10:30] == pytest.approx([0.5 * (k + 1) / 20 for k in range(20)])
    assert weights[30:] == [0.5] * 10
    assert penalty_weight(TrainConfig(lam=0.5), 0, steps_per_epoch) == 0.5  # no start, no warm-up
    with pytest.raises(ValueError, match="shuffle_lr_scale"):
        TrainConfig(shuffle_lr_scale=0.0)
    with pytest.raises(ValueError, match="penalty_start_epoch"):
        TrainConfig(penalty_start_epoch=-1.0)
