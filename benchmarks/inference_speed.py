"""Inference and training speed of AutoShuffleNet against ShuffleNet, measured in one run.

Two claims are measured here:

* inference: a hardened AutoShuffleNet (every learned shuffle rounded to a permutation, run as the gather
  ``x[:, perm]``) classifies as many images per second as ShuffleNet with its fixed shuffle
  (goal: ratio hardened / fixed >= 0.98);
* training: a step of the soft AutoShuffleNet (``c x c`` shuffle matrices, penalty, projection after the
  step) costs less than 1.3 times a step of ShuffleNet.

Both models share every weight but the shuffles (the hardened permutations are random ones, as after
training). Timings are interleaved (the two models alternate, in alternating order, ``--repeats`` times)
and the medians are compared, so slow drifts of a shared machine hit both alike. Example::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/inference_speed.py --model shufflenet_v2_1.0 --device cpu
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from aslib.io import save_results
from aslib.layers import harden_shuffles_, project_shuffles_, shuffle_parameters, shuffle_penalty
from aslib.models import MODEL_NAMES, build_model, count_flops, count_parameters
from aslib.progress import progress
from aslib.runtime import resolve_device, seed_everything


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to time; see ``--help``."""

    model: str = "shufflenet_v2_1.0"
    stem: str = "cifar"
    image_size: int = 32
    num_classes: int = 10
    batch_size: int = 64
    inference_batches: int = 4
    repeats: int = 15
    warmup: int = 3
    lam: float = 1e-3
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0
    show_progress: bool = True


def _timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    def timed(fn: Callable[[], None]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    return timed


def _interleaved(tasks: dict[str, Callable[[], None]], cfg: BenchmarkConfig, device: torch.device,
                 desc: str) -> dict[str, list[float]]:
    """Seconds per call of each task over ``cfg.repeats`` rounds, alternating the order every round."""
    timed = _timer(device)
    names = list(tasks)
    for _ in range(cfg.warmup):
        for name in names:
            tasks[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in progress(range(cfg.repeats), enabled=cfg.show_progress, desc=desc):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(timed(tasks[name]))
    return times


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float) -> Callable[[], None]:
    # Shuffle matrices go in a group without weight decay, as in training.
    shuffles = shuffle_parameters(model)
    shuffle_ids = {id(p) for p in shuffles}
    groups = [{"params": [p for p in model.parameters() if id(p) not in shuffle_ids], "weight_decay": 5e-4}]
    if shuffles:
        groups.append({"params": shuffles, "weight_decay": 0.0})
    optimizer = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y) + lam * shuffle_penalty(model)
        loss.backward()
        optimizer.step()
        project_shuffles_(model)

    return step


def _inference(model: nn.Module, x: torch.Tensor, batches: int) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            for _ in range(batches):
                model(x)

    return run


def run_benchmark(cfg: BenchmarkConfig) -> dict[str, float | str | int]:
    """Time training steps (soft learned against fixed) and inference (hardened against fixed)."""
    device = resolve_device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    common = {"stem": cfg.stem, "num_classes": cfg.num_classes, "in_channels": 3}
    fixed = build_model(cfg.model, shuffle="fixed", **common).to(device)
    learned = build_model(cfg.model, shuffle="learned", shuffle_init="random", shuffle_seed=cfg.seed, **common)
    learned.load_state_dict(fixed.state_dict(), strict=False)
    learned.to(device)
    x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=device)
    y = torch.randint(cfg.num_classes, (cfg.batch_size,), device=device)
    shape = (1, 3, cfg.image_size, cfg.image_size)
    soft_params, soft_flops = count_parameters(learned), count_flops(learned, shape)

    fixed.train(), learned.train()
    train = _interleaved({"fixed": _train_step(fixed, x, y, 0.0), "learned": _train_step(learned, x, y, cfg.lam)},
                         cfg, device, "train steps")

    harden_shuffles_(learned)
    fixed.eval(), learned.eval()
    infer = _interleaved({"fixed": _inference(fixed, x, cfg.inference_batches),
                          "hardened": _inference(learned, x, cfg.inference_batches)}, cfg, device, "inference")
    images = cfg.batch_size * cfg.inference_batches
    fixed_ips = images / statistics.median(infer["fixed"])
    hard_ips = images / statistics.median(infer["hardened"])
    fixed_step = statistics.median(train["fixed"])
    learned_step = statistics.median(train["learned"])
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "fixed_params": count_parameters(fixed),
        "hardened_params": count_parameters(learned),
        "soft_params": soft_params,
        "fixed_flops": count_flops(fixed, shape),
        "hardened_flops": count_flops(learned, shape),
        "soft_flops": soft_flops,
        "fixed_images_per_s": fixed_ips,
        "hardened_images_per_s": hard_ips,
        "inference_ratio": hard_ips / fixed_ips,
        "fixed_step_ms": 1e3 * fixed_step,
        "learned_step_ms": 1e3 * learned_step,
        "train_step_ratio": learned_step / fixed_step,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = BenchmarkConfig()
    parser.add_argument("--model", default=defaults.model, choices=MODEL_NAMES)
    parser.add_argument("--stem", default=defaults.stem, choices=("cifar", "imagenet"))
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--num-classes", type=int, default=defaults.num_classes)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--inference-batches", type=int, default=defaults.inference_batches,
                        help="forward passes per inference timing")
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--lam", type=float, default=defaults.lam, help="penalty weight in the learned step")
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--output-dir", default=None, help="also save the figures as inference_speed.json here")
    args = parser.parse_args(argv)
    cfg = BenchmarkConfig(model=args.model, stem=args.stem, image_size=args.image_size,
                          num_classes=args.num_classes, batch_size=args.batch_size,
                          inference_batches=args.inference_batches, repeats=args.repeats, warmup=args.warmup,
                          lam=args.lam, device=args.device, threads=args.threads, seed=args.seed,
                          show_progress=not args.no_progress)
    results = run_benchmark(cfg)
    print(f"{cfg.model}, {cfg.stem} stem, {cfg.image_size}x{cfg.image_size}, batch {cfg.batch_size}, "
          f"{results['device']}, {results['threads']} thread(s), median of {cfg.repeats} interleaved repeats")
    print(f"parameters  fixed {results['fixed_params']:,}  hardened {results['hardened_params']:,}  "
          f"soft (training) {results['soft_params']:,}")
    print(f"FLOPs/image fixed {results['fixed_flops']:,}  hardened {results['hardened_flops']:,}  "
          f"soft (training) {results['soft_flops']:,}")
    print(f"inference   fixed {results['fixed_images_per_s']:.1f} img/s  hardened "
          f"{results['hardened_images_per_s']:.1f} img/s  ratio {results['inference_ratio']:.3f} (goal >= 0.98)")
    print(f"train step  fixed {results['fixed_step_ms']:.1f} ms  learned {results['learned_step_ms']:.1f} ms  "
          f"ratio {results['train_step_ratio']:.3f} (goal < 1.3)")
    if args.output_dir is not None:
        save_results(args.output_dir, "inference_speed", {**asdict(cfg), **results})


if __name__ == "__main__":
    main()
