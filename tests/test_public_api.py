"""The public interface at ``import aslib``: learned shuffles in any network (convert, penalise, harden), and the
README's "Use learned shuffles in your own network" section, executed as it stands."""

import re

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

import aslib
import aslib.models
import aslib.nn.layers
import aslib.nn.shuffles
import aslib.solver.qap
from aslib.core.penalty import permutation_matrix
from aslib.nn.layers import shuffle_indices
from helpers import REPO_ROOT, assert_doubly_stochastic, tiny_shufflenet

HOMES = (aslib.nn.layers, aslib.nn.shuffles, aslib.models, aslib.solver.qap)


def test_every_public_name_is_its_home_modules_object_and_documented():
    assert "quadratic_assignment" in aslib.__all__
    for name in aslib.__all__:
        obj = getattr(aslib, name)
        assert obj.__doc__ and obj.__doc__.strip(), f"aslib.{name} has no docstring"
        homes = [m for m in HOMES if getattr(m, name, None) is obj]
        assert homes, f"aslib.{name} is not the object of aslib.nn, aslib.models or aslib.solver"
        if callable(obj) and not isinstance(obj, type):
            assert obj.__annotations__.get("return") is not None, f"aslib.{name} has no return annotation"


def _shuffles(model: nn.Module) -> list[nn.Module]:
    kinds = (aslib.ChannelShuffle, aslib.FixedPermutation, aslib.LearnedShuffle)
    return [m for m in model.modules() if isinstance(m, kinds)]


def _reference_perm(module: nn.Module, channels: int) -> torch.Tensor:
    if isinstance(module, aslib.ChannelShuffle):
        return torch.arange(channels).reshape(module.groups, -1).T.flatten()
    return module.perm.clone()


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))


@pytest.mark.parametrize("kind", ["fixed", "random"])
@pytest.mark.parametrize("family", ["v1", "v2"])
def test_learn_shuffles_at_the_permutation_keeps_the_network_function(family, kind):
    if family == "v1":
        model = tiny_shufflenet(kind)
        x = torch.randn(3, 1, 12, 12)
    else:
        model = aslib.shufflenet_v2(shuffle=kind, stages_out_channels=(8, 16, 32, 64, 128), stages_repeats=(1, 2, 1))
        x = torch.randn(3, 3, 12, 12)
    _randomise_batchnorm(model)
    model.eval()
    before = _shuffles(model)
    widths = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a: widths.update({id(mod): a[0].shape[1]})) for m in before]
    with torch.no_grad():
        expected = model(x)
    for h in hooks:
        h.remove()
    perms = [_reference_perm(m, widths[id(m)]) for m in before]
    assert aslib.learn_shuffles(model, init="permutation") is model
    after = _shuffles(model)
    assert len(after) == len(before) and all(isinstance(m, aslib.LearnedShuffle) for m in after)
    for layer, perm in zip(after, perms):
        assert torch.equal(layer.matrix(), permutation_matrix(perm))
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)
    assert float(aslib.shuffle_penalty(model).detach()) == pytest.approx(0.0, abs=1e-6)


def test_learn_shuffles_uniform_and_random_starts():
    model = aslib.learn_shuffles(tiny_shufflenet("fixed"), init="uniform")
    for layer in _shuffles(model):
        c = layer.channels
        assert torch.allclose(layer.matrix(), torch.full((c, c), 1.0 / c))
    noisy = aslib.learn_shuffles(tiny_shufflenet("fixed"), init="uniform", noise=0.3, seed=1)
    for layer in _shuffles(noisy):
        assert_doubly_stochastic(layer.matrix().detach())
        assert (layer.matrix() - 1.0 / layer.channels).abs().max() > 1e-3
    first = [m.matrix() for m in _shuffles(aslib.learn_shuffles(tiny_shufflenet("fixed"), init="random", seed=5))]
    again = [m.matrix() for m in _shuffles(aslib.learn_shuffles(tiny_shufflenet("fixed"), init="random", seed=5))]
    other = [m.matrix() for m in _shuffles(aslib.learn_shuffles(tiny_shufflenet("fixed"), init="random", seed=6))]
    for M, N in zip(first, again):
        assert torch.equal(M, N)
        assert torch.equal(M.sum(0), torch.ones(M.shape[0])) and set(M.unique().tolist()) == {0.0, 1.0}
    assert any(not torch.equal(M, N) for M, N in zip(first, other))


def test_learn_shuffles_sizes_unsized_channel_shuffles_from_an_example_input():
    shuffle = aslib.ChannelShuffle(2)  # no channel count: learnt from the forward pass
    net = nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), shuffle, nn.Conv2d(6, 4, 1), aslib.FixedPermutation(
        torch.tensor([3, 1, 0, 2])))
    with pytest.raises(ValueError, match="example_input"):
        aslib.learn_shuffles(net)
    net.train()
    stats = net[1].running_mean.clone()
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        expected = net.eval()(x)
    net.train()
    aslib.learn_shuffles(net, example_input=x)
    assert net.training and torch.equal(net[1].running_mean, stats)  # the sizing pass moved no statistics
    assert isinstance(net[2], aslib.LearnedShuffle) and net[2].channels == 6
    assert torch.equal(net[4].matrix(), permutation_matrix(torch.tensor([3, 1, 0, 2])))
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), expected, rtol=0, atol=1e-6)


def test_a_shuffle_used_at_two_widths_is_refused_and_one_used_twice_stays_shared():
    shared = aslib.ChannelShuffle(2)
    net = nn.Sequential(shared, nn.Conv2d(4, 6, 1), shared)
    with pytest.raises(ValueError, match=r"channel counts \[4, 6\]"):
        aslib.learn_shuffles(net, example_input=torch.randn(1, 4, 3, 3))
    sized = aslib.ChannelShuffle(2, channels=4)
    twice = aslib.learn_shuffles(nn.Sequential(sized, nn.ReLU(), sized))
    assert twice[0] is twice[2] and len(aslib.shuffle_parameters(twice)) == 1


def test_soft_learned_shuffles_stay_and_hardened_ones_become_soft_at_their_permutation():
    model = tiny_shufflenet("learned", shuffle_init="uniform", shuffle_noise=0.5)
    soft = _shuffles(model)
    aslib.learn_shuffles(model, init="random", seed=3)
    assert all(a is b for a, b in zip(_shuffles(model), soft))
    hardened = aslib.harden(model)
    perms = [m.perm.clone() for m in _shuffles(hardened)]
    aslib.learn_shuffles(hardened, init="permutation", parameterisation="sinkhorn")
    for layer, perm in zip(_shuffles(hardened), perms):
        assert not layer.is_hardened and layer.parameterisation == "sinkhorn"
        assert torch.equal(layer.permutation(), perm)


def test_harden_returns_gathers_at_the_hungarian_permutation_and_leaves_the_original_soft():
    model = tiny_shufflenet("learned", shuffle_init="uniform", shuffle_noise=0.6, shuffle_seed=2).eval()
    x = torch.randn(2, 1, 12, 12)
    deployed = aslib.harden(model)
    assert deployed is not model and all(not m.is_hardened for m in _shuffles(model))
    assert all(m.is_hardened for m in _shuffles(deployed))
    assert aslib.count_parameters(model) - aslib.count_parameters(deployed) == sum(
        m.channels ** 2 for m in _shuffles(model))
    # oracle: scipy's assignment on each soft matrix, put back into the soft network as an exact permutation
    for soft, hard in zip(_shuffles(model), _shuffles(deployed)):
        M = soft.matrix().detach().double().numpy()
        rows, cols = linear_sum_assignment(-M)
        assert np.array_equal(hard.perm.numpy(), cols[np.argsort(rows)])
        with torch.no_grad():
            soft.weight.copy_(permutation_matrix(hard.perm))
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), model(x), rtol=0, atol=1e-5)
    assert aslib.harden(model, inplace=True) is model and all(m.is_hardened for m in _shuffles(model))


def test_learned_shuffle_from_permutation():
    perm = torch.tensor([2, 0, 3, 1])
    layer = aslib.LearnedShuffle.from_permutation(perm)
    x = torch.randn(3, 4, 2, 5)
    assert layer.init == "permutation"
    torch.testing.assert_close(layer(x), x[:, perm], rtol=0, atol=0)
    noisy = aslib.LearnedShuffle.from_permutation(perm, noise=0.2, generator=torch.Generator().manual_seed(0))
    assert_doubly_stochastic(noisy.matrix().detach())
    assert torch.equal(noisy.permutation(), perm)
    for bad in (torch.tensor([0, 0, 1]), torch.eye(3, dtype=torch.long)):
        with pytest.raises(ValueError, match="perm"):
            aslib.LearnedShuffle.from_permutation(bad)


def test_sized_channel_shuffle_refuses_other_widths_and_bad_sizes():
    layer = aslib.ChannelShuffle(3, channels=6)
    assert "channels=6" in repr(layer)
    assert torch.equal(layer(torch.arange(6.0)[None]), torch.arange(6.0)[shuffle_indices(6, 3)][None])
    with pytest.raises(ValueError, match="expected 6 channels"):
        layer(torch.randn(1, 9))
    with pytest.raises(ValueError, match="divisible"):
        aslib.ChannelShuffle(4, channels=6)
    with pytest.raises(ValueError, match="channels"):
        aslib.ChannelShuffle(2, channels=0)


def test_learn_shuffles_and_harden_refuse_bad_input():
    model = tiny_shufflenet("fixed")
    with pytest.raises(ValueError, match="init"):
        aslib.learn_shuffles(model, init="shuffle")
    with pytest.raises(ValueError, match="noise"):
        aslib.learn_shuffles(model, noise=1.5)
    with pytest.raises(ValueError, match="parameterisation"):
        aslib.learn_shuffles(model, parameterisation="adam")
    with pytest.raises(ValueError, match="seed"):
        aslib.learn_shuffles(model, seed=-1)
    with pytest.raises(ValueError, match="shuffle layer"):
        aslib.learn_shuffles(aslib.ChannelShuffle(2, channels=4))
    for function in (aslib.learn_shuffles, aslib.harden):
        with pytest.raises(TypeError, match="model"):
            function("not a network")
    assert all(isinstance(m, aslib.ChannelShuffle) for m in _shuffles(model))  # refused calls changed nothing


def readme_blocks() -> list[str]:
    """The fenced Python blocks of the README's section "Use learned shuffles in your own network", in order."""
    text = (REPO_ROOT / "README.md").read_text()
    section = re.search(r"^## Use learned shuffles in your own network\n(.*?)(?=^## )", text, re.M | re.S)
    assert section, "README has no section 'Use learned shuffles in your own network'"
    return re.findall(r"^```python\n(.*?)^```", section.group(1), re.M | re.S)


def test_readme_own_network_example_runs_as_written(tmp_path, monkeypatch):
    blocks = readme_blocks()
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)  # the export block writes net.onnx
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md (own network)", "exec"), namespace)
    net, deployed, x = namespace["net"], namespace["deployed"], namespace["x"]
    learned = _shuffles(net)
    assert len(learned) == 1 and isinstance(learned[0], aslib.LearnedShuffle) and not learned[0].is_hardened
    assert _shuffles(deployed)[0].is_hardened and not aslib.shuffle_parameters(deployed)
    M = learned[0].matrix().detach()  # one projection sweep: rows exact, columns near 1
    assert bool((M >= 0).all()) and torch.allclose(M.sum(1), torch.ones(12), atol=1e-5)
    assert aslib.shuffle_stats(net)["rounding_fraction"] == 1.0  # what the README says it prints: at a permutation
    with torch.no_grad():
        perm = _shuffles(deployed)[0].perm
        net.eval()
        learned[0].weight.copy_(permutation_matrix(perm))
        torch.testing.assert_close(deployed(x), net(x), rtol=0, atol=1e-5)

    exec(compile(blocks[1], "README.md (torchvision)", "exec"), namespace)
    model = namespace["model"]
    assert isinstance(model, aslib.models.ShuffleNetV2) and len(aslib.shuffle_parameters(model)) == 16

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    exec(compile(blocks[2], "README.md (ONNX)", "exec"), namespace)
    with torch.no_grad():
        np.testing.assert_allclose(namespace["logits"], deployed(x).numpy(), rtol=1e-4, atol=1e-5)


def test_new_learned_shuffles_live_on_the_models_device():
    model = aslib.shufflenet_v2(shuffle="fixed", stages_out_channels=(8, 16, 32, 64, 128), stages_repeats=(1, 1, 1))
    model.to("meta")  # a device other than the CPU on which the new layers are built
    aslib.learn_shuffles(model, init="uniform", noise=0.2)
    layers = [m for m in model.modules() if isinstance(m, aslib.LearnedShuffle)]
    assert layers and all(layer.weight.device.type == "meta" for layer in layers)
