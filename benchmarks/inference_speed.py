"""Command line for :mod:`aslib.training.speed`: inference and training speed of AutoShuffleNet against ShuffleNet.

Goals: inference ratio hardened / fixed >= 0.98, training step ratio learned / fixed < 1.3. What is timed
and how is in the docstring of ``aslib/training/speed.py``. Example::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/inference_speed.py --model shufflenet_v2_1.0 --device cpu \\
        --batch-sizes 64 1 256
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from aslib.core.checks import check_positive_int
from aslib.utils.io import save_results
from aslib.models import MODEL_NAMES
from aslib.training.speed import SpeedConfig, measure_speed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = SpeedConfig()
    parser.add_argument("--model", default=defaults.model, choices=MODEL_NAMES)
    parser.add_argument("--stem", default=defaults.stem, choices=("cifar", "imagenet"))
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--num-classes", type=int, default=defaults.num_classes)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[defaults.batch_size],
                        help="one measurement per batch size; the training step is timed at the first only")
    parser.add_argument("--inference-images", type=int, default=defaults.batch_size * defaults.inference_batches,
                        help="images per inference timing (at least one forward pass)")
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--lam", type=float, default=defaults.lam, help="penalty weight in the learned step")
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--output-dir", default=None, help="also save the figures as inference_speed.json here")
    args = parser.parse_args(argv)
    rows = []
    for i, batch_size in enumerate(args.batch_sizes):
        cfg = SpeedConfig(model=args.model, stem=args.stem, image_size=args.image_size,
                          num_classes=args.num_classes, batch_size=check_positive_int(batch_size, "batch size"),
                          inference_batches=max(1, check_positive_int(args.inference_images, "--inference-images")
                                                // batch_size),
                          repeats=args.repeats, warmup=args.warmup, lam=args.lam, device=args.device,
                          threads=args.threads, seed=args.seed, show_progress=not args.no_progress,
                          time_training=i == 0)
        results = measure_speed(cfg)
        _report(cfg, results)
        rows.append({**asdict(cfg), **results})
    if args.output_dir is not None:
        save_results(args.output_dir, "inference_speed", {"measurements": rows})


def _report(cfg: SpeedConfig, results: dict) -> None:
    print(f"{cfg.model}, {cfg.stem} stem, {cfg.image_size}x{cfg.image_size}, batch {cfg.batch_size} "
          f"({cfg.inference_batches} forward passes per timing), "
          f"{results['device']}, {results['threads']} thread(s), median of {cfg.repeats} interleaved repeats")
    print(f"parameters  fixed {results['fixed_params']:,}  hardened {results['hardened_params']:,}  "
          f"soft (training) {results['soft_params']:,}")
    print(f"FLOPs/image fixed {results['fixed_flops']:,}  hardened {results['hardened_flops']:,}  "
          f"soft (training) {results['soft_flops']:,}")
    print(f"inference   fixed {results['fixed_images_per_s']:.1f} img/s  hardened "
          f"{results['hardened_images_per_s']:.1f} img/s  ratio {results['inference_ratio']:.3f} (goal >= 0.98)")
    if cfg.time_training:
        print(f"train step  fixed {results['fixed_step_ms']:.1f} ms  learned {results['learned_step_ms']:.1f} ms  "
              f"ratio {results['train_step_ratio']:.3f} (goal < 1.3)")


if __name__ == "__main__":
    main()
