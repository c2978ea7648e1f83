"""End-to-end training throughput, data loading included: the per-image PIL loader in NCHW against the defaults.

Each task is one epoch of :func:`aslib.training.train.fit` on real CIFAR-10 (``--train-images`` training images,
no validation split, a 256-image test set so that the final evaluation costs little); its time is the main
thread's CPU time from the call of ``fit`` to the end of the epoch, which covers the loader, the forward and
backward passes, the optimizer and the shuffles' own step (CPU time rather than wall time, so that other
processes on a shared machine do not count; run with one torch thread and ``num_workers=0``, as here). Set-ups:

* ``before``: ``data_pipeline="pil"`` (a ``DataLoader`` calling RandomCrop, flip, ToTensor, Normalize per image)
  and ``channels_last=False``, the defaults until this benchmark;
* ``after``: the defaults of :class:`~aslib.training.config.TrainConfig` (the tensor pipeline of
  :mod:`aslib.training.batches`, channels-last);

each with ShuffleNet's fixed shuffle and with the learned one (the default parameterisation). Tasks are
interleaved in alternating order (:func:`aslib.training.speed.interleaved`); the medians give images per second,
``after / before`` per arm and ``learned / fixed`` step time per set-up. Example::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/training_throughput.py --out benchmarks/results/training_throughput_cpu.txt
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aslib.models import from_config
from aslib.training.config import TrainConfig
from aslib.training.data import TransformedSubset, load_dataset
from aslib.training.speed import SpeedConfig, interleaved
from aslib.training.train import fit
from aslib.utils.runtime import describe_device, seed_everything

#: The networks timed: the cifar-cpu profile's model, and ShuffleNet v2 1.0x (the GPU goal of issue 22).
MODELS = {"cifar-cpu": dict(model="shufflenet_v1_g8", model_kwargs={"width": 0.25}, stages_repeats=(2, 4, 2)),
          "v2": dict(model="shufflenet_v2_1.0", model_kwargs={}, stages_repeats=(4, 8, 4))}
SETUPS = {"before": dict(data_pipeline="pil", channels_last=False),
          "tensor only": dict(channels_last=False), "channels-last only": dict(data_pipeline="pil"), "after": {}}
ARMS = {"fixed": dict(shuffle="fixed", lam=0.0), "learned": dict(shuffle="learned")}


def _epoch_task(splits, config: TrainConfig, seconds: list[float]):  # noqa: ANN001, ANN202
    """One training epoch through ``fit``, appending to ``seconds`` the time from the call of ``fit`` to the end of
    the epoch (the end-of-epoch callback). On the CPU the CPU time of this thread: with one torch thread and the
    loader in the main process that is all the work, and unlike wall time it does not count what other processes
    take. On a GPU the wall time, the device synchronised."""
    cuda = config.device.startswith("cuda")
    clock = time.perf_counter if cuda else time.thread_time

    def ended(state) -> None:  # noqa: ANN001
        if cuda:
            torch.cuda.synchronize()
        seconds.append(clock() - start[0])

    start = [0.0]

    def run() -> None:
        seed_everything(config.seed)
        model = from_config(config, num_classes=splits.num_classes, in_channels=splits.in_channels, stem=splits.stem)
        start[0] = clock()
        fit(model, splits, config, callbacks=[ended])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--train-images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=0, help="untimed rounds first (1 on a GPU: kernel selection)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (on a GPU: wall time, --model v2 for issue 22)")
    parser.add_argument("--model", choices=sorted(MODELS), default="cifar-cpu")
    parser.add_argument("--setups", nargs="+", choices=sorted(SETUPS), default=list(SETUPS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_dataset("cifar10", args.data_root, val_fraction=0.0, max_train_samples=args.train_images,
                          verify_checksums=False)
    small_test = TransformedSubset(splits.test.base, np.arange(256), splits.test.transform, splits.test.pixels)
    splits = dataclasses.replace(splits, test=small_test)
    seconds: dict[str, list[float]] = {}
    tasks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for setup in args.setups:
            for arm, arm_options in ARMS.items():
                name = f"{setup} {arm}"
                config = TrainConfig(dataset="cifar10", **MODELS[args.model], **arm_options, **SETUPS[setup],
                                     device=args.device, epochs=1,
                                     batch_size=args.batch_size, val_fraction=0.0, recalibration_batches=0,
                                     checkpoint=False, show_progress=False,
                                     output_dir=f"{tmp}/{setup.replace(' ', '_')}_{arm}")
                seconds[name] = []
                tasks[name] = _epoch_task(splits, config, seconds[name])
        interleaved(tasks, SpeedConfig(repeats=args.repeats, warmup=args.warmup, show_progress=True),
                    torch.device(args.device), "epochs")
    images = len(splits.train) // args.batch_size * args.batch_size
    median = {name: statistics.median(s[args.warmup:]) for name, s in seconds.items()}  # warm-up rounds dropped
    clock = "wall time, synchronised" if args.device.startswith("cuda") else "CPU time of the one thread"
    spec = MODELS[args.model]
    lines = [f"training epoch through fit ({clock}), CIFAR-10 ({images} training images, batch {args.batch_size}), "
             f"{spec['model']} {spec['model_kwargs'] or ''} stages {spec['stages_repeats']}; medians of {args.repeats} "
             f"interleaved rounds after {args.warmup}; {describe_device(torch.device(args.device))}"]
    for name in seconds:
        lines.append(f"  {name:<26} {images / median[name]:7.0f} img/s  ({median[name]:.2f} s per epoch)")
    if "before" in args.setups:
        for setup in args.setups:
            for arm in ARMS if setup != "before" else ():
                lines.append(f"{setup} / before throughput, {arm}: "
                             f"{median[f'before {arm}'] / median[f'{setup} {arm}']:.2f}")
    for setup in args.setups:
        lines.append(f"learned / fixed epoch time, {setup}: {median[f'{setup} learned'] / median[f'{setup} fixed']:.2f}")
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
