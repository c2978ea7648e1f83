"""Tests of ShuffleNet v1/v2 with fixed, learned, random and no shuffles."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn

from aslib.nn.layers import ChannelShuffle, FixedPermutation, LearnedShuffle, shuffle_indices
from aslib.nn.shuffles import harden_shuffles_, learned_shuffles, project_shuffles_, shuffle_penalty
from aslib.models import (
    MODEL_NAMES,
    get_model,
    count_flops,
    count_parameters,
    shufflenet_v1,
    shufflenet_v2,
)

# Tiny configurations (8x8 single-channel images, as the digits data set): every unit type is present,
# a stride-2 first unit in each stage and stride-1 units in stage 3.
V1_TINY = {"groups": 3, "width": 0.25, "stages_repeats": (1, 2, 1), "in_channels": 1, "num_classes": 10}
V2_TINY = {"stages_out_channels": (8, 16, 32, 64, 128), "stages_repeats": (1, 2, 1), "in_channels": 1,
           "num_classes": 10}
TINY_BUILDERS: dict[str, tuple[Callable[..., nn.Module], dict]] = {"v1": (shufflenet_v1, V1_TINY), "v2": (shufflenet_v2, V2_TINY)}


def _tiny(arch: str, shuffle: str, **kwargs) -> nn.Module:
    builder, config = TINY_BUILDERS[arch]
    torch.manual_seed(0)
    return builder(shuffle=shuffle, **{**config, **kwargs})


def _digits(batch: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _shuffle_modules(model: nn.Module) -> list[nn.Module]:
    return [unit.shuffle for unit in model.modules() if hasattr(unit, "shuffle")]


# --- every architecture builds and runs --------------------------------------------------------------------

@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
def test_shufflenet_v1_every_group_count_runs(groups: int) -> None:
    model = get_model(f"shufflenet_v1_g{groups}", shuffle="learned", num_classes=7)
    assert len(learned_shuffles(model)) == 16
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 7)


@pytest.mark.parametrize("width", ["0.5", "1.0", "1.5", "2.0"])
def test_shufflenet_v2_every_width_runs(width: str) -> None:
    model = get_model(f"shufflenet_v2_{width}", shuffle="learned", num_classes=7)
    assert len(learned_shuffles(model)) == 16
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 7)


def test_shufflenet_v2_matches_torchvision() -> None:
    """With the ImageNet stem and the fixed shuffle, the 1.0x network is torchvision's, weight for weight."""
    ours = shufflenet_v2(1.0, shuffle="fixed", stem="imagenet", num_classes=1000).eval()
    reference = torchvision.models.shufflenet_v2_x1_0(weights=None).eval()
    theirs = reference.state_dict()
    assert len(ours.state_dict()) == len(theirs)
    mapped = {}
    for (key, value), other in zip(ours.state_dict().items(), theirs.values()):
        assert value.shape == other.shape, key
        mapped[key] = other
    ours.load_state_dict(mapped)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours(x), reference(x))
    assert count_flops(ours, (1, 3, 224, 224)) == count_flops(reference, (1, 3, 224, 224))


@pytest.mark.parametrize("groups, mflops", [(1, 143), (2, 140), (3, 137), (4, 133), (8, 137)])
def test_shufflenet_v1_complexity_matches_published_table(groups: int, mflops: int) -> None:
    """ShuffleNet v1 1x on 224x224 ImageNet costs about 140M multiply-adds for every group count
    (Zhang et al. 2018, Table 1: 143, 140, 137, 133, 137 MFLOPs)."""
    model = shufflenet_v1(groups, shuffle="fixed", stem="imagenet", num_classes=1000)
    assert count_flops(model, (1, 3, 224, 224)) / 2e6 == pytest.approx(mflops, rel=0.015)


@pytest.mark.parametrize("arch", ["v1", "v2"])
@pytest.mark.parametrize("size", [1, 2, 8])
def test_small_inputs_reach_the_classifier(arch: str, size: int) -> None:
    for stem in ("cifar", "imagenet"):
        model = _tiny(arch, "learned", stem=stem).eval()
        assert model(torch.randn(3, 1, size, size)).shape == (3, 10)


# --- learned against fixed ---------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_learned_initialised_to_shuffle_computes_the_fixed_model(arch: str) -> None:
    fixed = _tiny(arch, "fixed")
    learned = _tiny(arch, "learned", shuffle_init="uniform")
    result = learned.load_state_dict(fixed.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert sorted(result.missing_keys) == sorted(
        name for name, _ in learned.named_parameters() if name.endswith("shuffle.weight"))
    # The uniform start computes something else; the shuffle start is the fixed network exactly.
    x = _digits()
    assert not torch.allclose(learned.eval()(x), fixed.eval()(x))
    for layer in learned_shuffles(learned):
        with torch.no_grad():
            layer.weight.copy_(LearnedShuffle(layer.channels, "shuffle", groups=V1_TINY["groups"] if arch == "v1"
                                              else 2).weight)
    for mode in (False, True):  # eval uses running statistics, train the batch's
        assert torch.equal(learned.train(mode)(x), fixed.train(mode)(x))


@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_shuffle_init_passes_through_the_builder(arch: str) -> None:
    groups = V1_TINY["groups"] if arch == "v1" else 2
    learned = _tiny(arch, "learned")
    for layer in learned_shuffles(learned):
        assert torch.equal(layer.permutation(), shuffle_indices(layer.channels, groups))
    noisy = _tiny(arch, "learned", shuffle_init="uniform", shuffle_noise=0.1, shuffle_seed=3)
    again = _tiny(arch, "learned", shuffle_init="uniform", shuffle_noise=0.1, shuffle_seed=3)
    for a, b in zip(learned_shuffles(noisy), learned_shuffles(again)):
        assert a.init == "uniform" and torch.equal(a.weight, b.weight)


@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_hardened_model_costs_what_the_fixed_model_costs(arch: str) -> None:
    fixed = _tiny(arch, "fixed")
    learned = _tiny(arch, "learned", shuffle_init="random")
    shape = (1, 1, 8, 8)
    # Oracle for the training-time overhead: c^2 parameters and 2 c^2 H W FLOPs per learned shuffle.
    spatial: list[int] = []
    hooks = [layer.register_forward_hook(lambda m, inp, out: spatial.append(inp[0].shape[2] * inp[0].shape[3]))
             for layer in learned_shuffles(learned)]
    flops_soft = count_flops(learned, shape)
    assert learned.training  # count_flops runs in eval mode and restores the mode
    for hook in hooks:
        hook.remove()
    channels = [layer.channels for layer in learned_shuffles(learned)]
    assert count_parameters(learned) - count_parameters(fixed) == sum(c * c for c in channels)
    assert flops_soft - count_flops(fixed, shape) == sum(2 * c * c * hw for c, hw in zip(channels, spatial))
    harden_shuffles_(learned)
    assert count_parameters(learned) == count_parameters(fixed)
    assert count_flops(learned, shape) == count_flops(fixed, shape)


def test_learned_v2_has_the_papers_training_only_parameters() -> None:
    """About 1.35M extra parameters for v2 1.0x: one c x c matrix per unit, c = 116, 232, 464 (4, 8, 4 units)."""
    fixed = get_model("shufflenet_v2_1.0", shuffle="fixed")
    learned = get_model("shufflenet_v2_1.0", shuffle="learned")
    assert count_parameters(learned) - count_parameters(fixed) == 4 * 116**2 + 8 * 232**2 + 4 * 464**2


@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_harden_save_load_round_trip(arch: str) -> None:
    model = _tiny(arch, "learned", shuffle_init="uniform", shuffle_noise=0.5).eval()
    x = _digits()
    expected_perms = [layer.permutation() for layer in learned_shuffles(model)]
    perms = harden_shuffles_(model)
    assert all(torch.equal(p, e) for p, e in zip(perms, expected_perms))
    before = model(x)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = _tiny(arch, "learned", shuffle_init="identity").eval()
    fresh.load_state_dict(torch.load(buffer))  # strict: hardened keys replace the soft ones
    assert all(layer.is_hardened for layer in learned_shuffles(fresh))
    assert torch.equal(fresh(x), before)
    assert count_parameters(fresh) == count_parameters(_tiny(arch, "fixed"))


# --- training-time behaviour -------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_gradients_flow_into_every_shuffle_and_projection_keeps_it_doubly_stochastic(arch: str) -> None:
    model = _tiny(arch, "learned", shuffle_init="uniform", shuffle_noise=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(_digits(16)), torch.arange(16) % 10)
    loss.backward()  # task loss only: the convex relaxation's gradient
    for layer in learned_shuffles(model):
        assert layer.weight.grad is not None and float(layer.weight.grad.abs().sum()) > 0
    optimizer.zero_grad()
    (loss.detach() + 0.1 * shuffle_penalty(model)).backward()
    optimizer.step()
    off = [float((layer.weight.detach().sum(0) - 1).abs().max()) for layer in learned_shuffles(model)]
    assert max(off) > 1e-3  # the step left D_n
    project_shuffles_(model, sweeps=100)
    for layer in learned_shuffles(model):
        M = layer.weight.detach()
        ones = torch.ones(layer.channels)
        assert bool((M >= 0).all())
        torch.testing.assert_close(M.sum(1), ones, atol=1e-5, rtol=0)
        torch.testing.assert_close(M.sum(0), ones, atol=1e-4, rtol=0)


# --- the random and the absent shuffle ---------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_random_fixed_permutation_arm(arch: str) -> None:
    model = _tiny(arch, "random", shuffle_seed=1)
    same = _tiny(arch, "random", shuffle_seed=1)
    other = _tiny(arch, "random", shuffle_seed=2)
    layers = _shuffle_modules(model)
    assert layers and all(isinstance(m, FixedPermutation) for m in layers)
    assert all(torch.equal(a.perm, b.perm) for a, b in zip(layers, _shuffle_modules(same)))
    assert not all(torch.equal(a.perm, b.perm) for a, b in zip(layers, _shuffle_modules(other)))
    fixed = _tiny(arch, "fixed")
    assert count_parameters(model) == count_parameters(fixed)
    assert count_flops(model, (1, 1, 8, 8)) == count_flops(fixed, (1, 1, 8, 8))
    # A learned model that loads the random arm's state becomes that network, hardened.
    learned = _tiny(arch, "learned")
    learned.load_state_dict(model.state_dict())
    x = _digits()
    assert torch.equal(learned.eval()(x), model.eval()(x))


@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_no_shuffle_arm(arch: str) -> None:
    model = _tiny(arch, "none")
    assert all(isinstance(m, nn.Identity) for m in _shuffle_modules(model))
    fixed = _tiny(arch, "fixed")
    assert all(isinstance(m, ChannelShuffle) for m in _shuffle_modules(fixed))
    model.load_state_dict(fixed.state_dict())
    x = _digits()
    assert not torch.allclose(model.eval()(x), fixed.eval()(x))


# --- names and bad input -----------------------------------------------------------------------------------

def test_get_model_names() -> None:
    assert set(MODEL_NAMES) == {f"shufflenet_v1_g{g}" for g in (1, 2, 3, 4, 8)} | {
        f"shufflenet_v2_{w}" for w in ("0.5", "1.0", "1.5", "2.0")}
    model = get_model("shufflenet_v1_g8", shuffle="fixed", width=0.25, stages_repeats=(1, 1, 1))
    assert model.groups == 8
    assert get_model("shufflenet_v2_0.5", shuffle="fixed").stage_channels == (24, 48, 96, 192, 1024)
    with pytest.raises(ValueError, match="unknown model 'shufflenet_v3'; valid names: shufflenet_v1_g1"):
        get_model("shufflenet_v3")
    with pytest.raises(ValueError, match="already sets groups"):
        get_model("shufflenet_v1_g3", groups=2)


@pytest.mark.parametrize("build, match", [
    (lambda: shufflenet_v1(5), "groups must be one of"),
    (lambda: shufflenet_v1(3, width=0), "width must be a positive number"),
    (lambda: shufflenet_v1(3, stages_repeats=(1, 1)), "stages_repeats needs 3 entries"),
    (lambda: shufflenet_v1(3, stages_repeats=(1, 0, 1)), "stages_repeats"),
    (lambda: shufflenet_v2(0.75), "width must be one of"),
    (lambda: shufflenet_v2(stages_out_channels=(8, 16, 32, 64)), "needs 5 entries"),
    (lambda: shufflenet_v2(stages_out_channels=(8, 15, 32, 64, 128)), "even"),
    (lambda: shufflenet_v2(stem="mnist"), "unknown stem 'mnist'"),
    (lambda: shufflenet_v2(shuffle="learnt"), "unknown shuffle 'learnt'"),
    (lambda: shufflenet_v1(shuffle_init="eye"), "unknown shuffle init 'eye'"),
    (lambda: shufflenet_v2(num_classes=0), "num_classes"),
    (lambda: shufflenet_v2(in_channels=0), "in_channels"),
])
def test_builders_reject_bad_arguments(build: Callable[[], nn.Module], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_models_reject_bad_inputs() -> None:
    model = _tiny("v1", "learned")
    with pytest.raises(ValueError, match="expected 1 input channels, got 3"):
        model(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(1, 8, 8))
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(model, (1, 0, 8, 8))
