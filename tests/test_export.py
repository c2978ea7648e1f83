"""Hardened networks leave PyTorch: ``torch.export`` and ``torch.onnx.export`` (the default exporter, built on
``torch.export``, and the TorchScript-based ``dynamo=False``), with ONNX Runtime's outputs against PyTorch's.
onnx, onnxscript and onnxruntime come with the ``export`` extra (and ``make env``)."""

import numpy as np
import pytest
import torch

import aslib

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # the default exporter translates through it


def _hardened(family: str = "v2") -> torch.nn.Module:
    if family == "v2":
        model = aslib.shufflenet_v2(shuffle="learned", shuffle_init="uniform", shuffle_noise=0.5, num_classes=5,
                                    stages_out_channels=(8, 16, 32, 64, 96), stages_repeats=(1, 2, 1))
    else:
        model = aslib.get_model("shufflenet_v1_g3", shuffle="learned", shuffle_init="random", shuffle_seed=3,
                                num_classes=5, width=0.25, stages_repeats=(1, 1, 1))
    return aslib.harden(model).eval()


def _session(path) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter's notice
@pytest.mark.parametrize("dynamo", [True, False])
@pytest.mark.parametrize("family", ["v2", "v1"])
def test_onnx_runtime_computes_what_the_hardened_network_computes(tmp_path, dynamo, family):
    model = _hardened(family)
    path = tmp_path / "model.onnx"
    x = torch.randn(2, 3, 24, 24)
    if dynamo:
        torch.onnx.export(model, (x,), path, dynamic_shapes=({0: torch.export.Dim("batch")},))
    else:
        with pytest.warns(torch.jit.TracerWarning):  # the input checks read shapes, fixed by tracing
            torch.onnx.export(model, (x,), path, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    graph = onnx.load(str(path)).graph
    onnx.checker.check_model(onnx.load(str(path)))
    # each hardened shuffle is one gather along the channels, and no c x c matrix is left in the file
    gathers = [n for n in graph.node if n.op_type == "Gather"]
    hardened = [m for m in model.modules() if isinstance(m, aslib.LearnedShuffle)]
    assert len(gathers) >= len(hardened)
    assert not any(len(t.dims) == 2 and t.dims[0] == t.dims[1] == m.channels
                   for t in graph.initializer for m in hardened)
    session = _session(path)
    name = session.get_inputs()[0].name
    for batch in (1, 3):
        images = torch.randn(batch, 3, 24, 24)
        with torch.no_grad():
            expected = model(images).numpy()
        (got,) = session.run(None, {name: images.numpy()})
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_torch_export_of_a_hardened_network_matches_eager():
    model = _hardened("v2")
    x = torch.randn(2, 3, 20, 20)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    gathers = [n for n in program.graph.nodes if n.op == "call_function" and "index_select" in str(n.target)]
    assert len(gathers) == sum(isinstance(m, aslib.LearnedShuffle) for m in model.modules())
    images = torch.randn(4, 3, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(images), model(images), rtol=0, atol=1e-6)


def test_the_hardened_network_exports_the_fixed_networks_tensors_but_its_permutations(tmp_path):
    """A hardened ShuffleNet holds in ONNX what the fixed one holds, plus one index vector per shuffle."""
    kwargs = dict(num_classes=5, stages_out_channels=(8, 16, 32, 64, 96), stages_repeats=(1, 2, 1))
    fixed = aslib.shufflenet_v2(shuffle="fixed", **kwargs).eval()
    hardened = aslib.harden(aslib.learn_shuffles(aslib.shufflenet_v2(shuffle="fixed", **kwargs), init="random"))
    sizes = {}
    for name, model in (("fixed", fixed), ("hardened", hardened.eval())):
        path = tmp_path / f"{name}.onnx"
        torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), path)
        graph = onnx.load(str(path)).graph
        sizes[name] = sum(int(np.prod(t.dims)) for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    assert sizes["hardened"] == sizes["fixed"] > 0  # no float tensor beyond the fixed network's


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_the_legacy_exporter_refuses_the_fixed_shuffle_but_not_the_hardened_one(tmp_path):
    """torch 2.14's TorchScript-based exporter has no ``aten::channel_shuffle``: the fixed ShuffleNet exports only
    through the default exporter, the hardened network (gathers) through both."""
    kwargs = dict(num_classes=5, stages_out_channels=(8, 16, 32, 64, 96), stages_repeats=(1, 1, 1))
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(torch.onnx.errors.UnsupportedOperatorError, match="channel_shuffle"):
        torch.onnx.export(aslib.shufflenet_v2(shuffle="fixed", **kwargs).eval(), (x,), tmp_path / "f.onnx",
                          dynamo=False)
    hardened = aslib.harden(aslib.shufflenet_v2(shuffle="learned", **kwargs)).eval()
    torch.onnx.export(hardened, (x,), tmp_path / "h.onnx", dynamo=False)
    session = _session(tmp_path / "h.onnx")
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, hardened(x).numpy(), rtol=1e-4, atol=1e-5)
