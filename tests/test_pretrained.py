"""torchvision's ShuffleNet v2 as aslib's (:mod:`aslib.models.pretrained`): torchvision's own network is the
oracle. Its models are initialised at random here (nothing downloads); BatchNorm statistics are randomised so
that every tensor copied matters."""

import pytest
import torch
import torchvision
from torch import nn

import aslib
from aslib.models.pretrained import torchvision_key


def _torchvision(builder: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, builder)(weights=None, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return model.eval()


@pytest.mark.parametrize("builder, width", [("shufflenet_v2_x0_5", 0.5), ("shufflenet_v2_x1_0", 1.0)])
def test_from_torchvision_computes_torchvisions_function(builder, width):
    reference = _torchvision(builder)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
    for source in (reference, reference.state_dict()):
        model = aslib.from_torchvision(source).eval()
        assert isinstance(model, aslib.models.ShuffleNetV2) and model.width == width
        assert aslib.count_parameters(model) == sum(p.numel() for p in reference.parameters())
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
    # then the shuffles become learned, started at torchvision's permutation: the same function again
    aslib.learn_shuffles(model, init="permutation")
    assert len(aslib.shuffle_parameters(model)) == 16
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
        # and hardened (every matrix is a permutation already, so rounding changes nothing)
        torch.testing.assert_close(aslib.harden(model)(x), expected, rtol=0, atol=1e-5)


def test_from_torchvision_with_learned_shuffles_at_the_fixed_shuffle_and_other_heads():
    reference = _torchvision("shufflenet_v2_x0_5", seed=1, num_classes=7)
    x = torch.randn(3, 3, 40, 40)
    model = aslib.from_torchvision(reference, shuffle="learned", shuffle_parameterisation="sinkhorn").eval()
    assert model.num_classes == 7
    with torch.no_grad():
        expected = reference(x)
        # Sinkhorn's logits start near, not at, the permutation matrix: the soft network is close, the hard exact
        torch.testing.assert_close(aslib.harden(model)(x), expected, rtol=0, atol=1e-5)
    layers = [m for m in model.modules() if isinstance(m, aslib.LearnedShuffle)]
    assert len(layers) == 16 and all(layer.parameterisation == "sinkhorn" for layer in layers)


def test_from_torchvision_takes_a_weights_enum_through_its_get_state_dict():
    reference = _torchvision("shufflenet_v2_x0_5", seed=2)

    class Weights:  # the part of torchvision's WeightsEnum that from_torchvision uses
        def get_state_dict(self, progress: bool = True):
            return reference.state_dict()

    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(aslib.from_torchvision(Weights()).eval()(x), reference(x), rtol=0, atol=1e-5)


def test_torchvision_keys_map_one_to_one_onto_aslibs():
    state = torchvision.models.shufflenet_v2_x0_5(weights=None).state_dict()
    own = aslib.shufflenet_v2(0.5, shuffle="fixed", stem="imagenet", num_classes=1000).state_dict()
    mapped = [torchvision_key(k) for k in state]
    assert sorted(mapped) == sorted(own)
    assert all(own[torchvision_key(k)].shape == v.shape for k, v in state.items())
    with pytest.raises(ValueError, match="not a key"):
        torchvision_key("layer1.0.conv1.weight")


def test_from_torchvision_refuses_other_networks_and_objects():
    with pytest.raises(ValueError, match="not a torchvision ShuffleNet v2"):
        aslib.from_torchvision(torchvision.models.resnet18(weights=None))
    state = torchvision.models.shufflenet_v2_x0_5(weights=None).state_dict()
    del state["stage3.1.branch2.0.weight"]
    with pytest.raises(ValueError, match="lacks 1 tensors"):
        aslib.from_torchvision(state)
    with pytest.raises(TypeError, match="source"):
        aslib.from_torchvision(42)
