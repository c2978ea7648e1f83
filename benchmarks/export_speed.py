"""ONNX Runtime latency of a hardened AutoShuffleNet against ShuffleNet with its fixed shuffle (goal: ratio >= 0.98).

Both networks are one ShuffleNet v2 (same weights, random; no data set): "fixed" runs ShuffleNet's
``channel_shuffle`` (in ONNX a Reshape-Transpose-Reshape), "hardened" has every shuffle made learned at a random
permutation and hardened (:func:`aslib.harden`: in ONNX one Gather along the channels), as after training. Each is
exported with ``torch.onnx.export`` (the default, torch.export-based exporter, batch dimension dynamic), checked
against PyTorch, and timed in ONNX Runtime's CPU provider with one intra-op and one inter-op thread. Timings are
interleaved (fixed, hardened, then the order flipped each round) after warm-up rounds; the table gives medians,
their ratio hardened / fixed images per second, and the median over rounds of each round's ratio. ``--eager``
adds PyTorch's eager timings of the same two networks in the same rounds, for the ratio side by side. Example::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/export_speed.py --batch-sizes 1 64 --repeats 11 --eager
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import aslib


def _networks(width: float, stem: str, seed: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    fixed = aslib.shufflenet_v2(width, shuffle="fixed", stem=stem, num_classes=1000).eval()
    learned = aslib.learn_shuffles(aslib.shufflenet_v2(width, shuffle="fixed", stem=stem, num_classes=1000),
                                   init="random", seed=seed)
    learned.load_state_dict(fixed.state_dict(), strict=False)  # same weights but the shuffles
    return {"fixed": fixed, "hardened": aslib.harden(learned).eval()}


def _session(model: torch.nn.Module, x: torch.Tensor, folder: Path, name: str) -> ort.InferenceSession:
    path = folder / f"{name}.onnx"
    torch.onnx.export(model, (x,), path, dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _timed(fn: Callable[[], object], passes: int) -> float:
    start = time.perf_counter()
    for _ in range(passes):
        fn()
    return time.perf_counter() - start


def _interleaved(tasks: dict[str, Callable[[], object]], passes: int, repeats: int,
                 warmup: int) -> dict[str, list[float]]:
    """Seconds per timing of each task, ``repeats`` rounds after ``warmup``, the order flipped every round."""
    names = list(tasks)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            seconds = _timed(tasks[name], passes)
            if r >= warmup:
                times[name].append(seconds)
    return times


def measure(batch: int, args: argparse.Namespace, nets: dict[str, torch.nn.Module],
            sessions: dict[str, ort.InferenceSession]) -> list[str]:
    x = torch.randn(batch, 3, args.image_size, args.image_size)
    feed = {name: {s.get_inputs()[0].name: x.numpy()} for name, s in sessions.items()}
    errors = []
    for name, net in nets.items():
        with torch.no_grad():
            expected = net(x).numpy()
        difference = np.abs(sessions[name].run(None, feed[name])[0] - expected).max()
        errors.append(float(difference / np.abs(expected).max()))
    passes = max(1, args.images // batch)
    tasks: dict[str, Callable[[], object]] = {
        f"onnx {name}": (lambda s=sessions[name], f=feed[name]: s.run(None, f)) for name in nets}
    if args.eager:
        def eager(net: torch.nn.Module) -> Callable[[], object]:
            def run() -> object:
                with torch.inference_mode():
                    return net(x)
            return run
        tasks.update({f"eager {name}": eager(net) for name, net in nets.items()})
    times = _interleaved(tasks, passes, args.repeats, args.warmup)
    images = batch * passes
    lines = []
    for runtime in ("onnx", "eager") if args.eager else ("onnx",):
        fixed, hard = times[f"{runtime} fixed"], times[f"{runtime} hardened"]
        paired = statistics.median(f / h for f, h in zip(fixed, hard))
        of_medians = statistics.median(fixed) / statistics.median(hard)
        lines.append(f"| {runtime} | {batch} | {passes} | {1e3 * statistics.median(fixed) / passes:.2f} | "
                     f"{1e3 * statistics.median(hard) / passes:.2f} | {images / statistics.median(fixed):.1f} | "
                     f"{images / statistics.median(hard):.1f} | {of_medians:.3f} | {paired:.3f} |")
    lines.append(f"  (batch {batch}: largest |ONNX Runtime - PyTorch| / largest |PyTorch| fixed {errors[0]:.1e}, "
                 f"hardened {errors[1]:.1e})")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=float, default=1.0, choices=(0.5, 1.0, 1.5, 2.0))
    parser.add_argument("--stem", default="imagenet", choices=("cifar", "imagenet"))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--images", type=int, default=64, help="images per timing (at least one forward pass)")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--eager", action="store_true", help="also time PyTorch eager, interleaved in the same rounds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.batch_sizes) < 1 or args.repeats < 1 or args.warmup < 0 or args.images < 1:
        parser.error("batch sizes, --repeats and --images must be positive, --warmup non-negative")
    torch.set_num_threads(1)
    nets = _networks(args.width, args.stem, args.seed)
    example = torch.randn(2, 3, args.image_size, args.image_size)
    with tempfile.TemporaryDirectory() as folder:
        sessions = {name: _session(net, example, Path(folder), name) for name, net in nets.items()}
        print(f"# ShuffleNet v2 {args.width}x, {args.stem} stem, {args.image_size}x{args.image_size}, random weights "
              f"(seed {args.seed}); onnxruntime {ort.__version__}, torch {torch.__version__}, 1 thread; "
              f"median of {args.repeats} interleaved rounds after {args.warmup}; ratios are hardened / fixed images "
              "per second (goal >= 0.98): of the two medians, and the median over rounds of each round's ratio")
        print("| runtime | batch | passes per timing | fixed ms/pass | hardened ms/pass | fixed img/s | hardened img/s "
              "| ratio of medians | median paired ratio |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for batch in args.batch_sizes:
            for line in measure(batch, args, nets, sessions):
                print(line, flush=True)


if __name__ == "__main__":
    main()
