"""Training step time in the default (NCHW) and the channels-last (NHWC) memory format (``TrainConfig.channels_last``).

For each architecture and input shape, one training step (``aslib.training.speed.train_step``, batch 64, random images) of
ShuffleNet with its fixed shuffle, of AutoShuffleNet with the paper's projected step (lam 0.03) and with the mirror
step (``shuffle_parameterisation="mirror"``), each in both memory formats (weights and batch converted as
``aslib.training.train`` converts them): the six steps are interleaved in alternating order (``aslib.training.speed.interleaved``)
and their medians compared. Prints milliseconds per step, the channels-last / default ratio of each arm, and each
learned arm's ratio to the fixed one in the same format. Example::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/channels_last_speed.py --out benchmarks/results/channels_last_cpu.txt
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from aslib.training.config import TrainConfig
from aslib.utils.runtime import describe_device, seed_everything
from aslib.training.speed import SpeedConfig, interleaved, train_step
from aslib.models import from_config

#: (label, model, builder arguments, units per stage, input channels, image size)
CASES = [
    ("digits 1x8x8, v2 1.0x", "shufflenet_v2_1.0", {}, (4, 8, 4), 1, 8),
    ("CIFAR 3x32x32, v2 1.0x", "shufflenet_v2_1.0", {}, (4, 8, 4), 3, 32),
    ("CIFAR 3x32x32, v1 g8 width 0.25", "shufflenet_v1_g8", {"width": 0.25}, (2, 4, 2), 3, 32),
]
ARMS = {"fixed": dict(shuffle="fixed", lam=0.0), "l12 projected": dict(shuffle="learned", lam=0.03),
        "l12 mirror": dict(shuffle="learned", shuffle_parameterisation="mirror", lam=0.0)}


def _step(config: TrainConfig, in_channels: int, size: int, channels_last: bool):  # noqa: ANN202
    seed_everything(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = from_config(config, num_classes=10, in_channels=in_channels, stem="cifar").to(memory_format=memory_format)
    x = torch.randn(64, in_channels, size, size).contiguous(memory_format=memory_format)
    return train_step(model, x, torch.arange(64) % 10, config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="also write what is printed to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    timing = SpeedConfig(repeats=args.repeats, warmup=2, show_progress=False)
    lines = [f"training step, batch 64, medians of {args.repeats} interleaved rounds; {describe_device('cpu')}"]
    for label, model, kwargs, stages, in_channels, size in CASES:
        tasks = {}
        for arm, settings in ARMS.items():
            config = TrainConfig(model=model, model_kwargs=kwargs, stages_repeats=stages, shuffle_init="uniform",
                                 **settings)
            for channels_last in (False, True):
                tasks[(arm, channels_last)] = _step(config, in_channels, size, channels_last)
        times = interleaved({f"{a}{' cl' if c else ''}": fn for (a, c), fn in tasks.items()}, timing,
                            torch.device("cpu"), label)
        ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
        lines.append(label)
        for arm in ARMS:
            default, last = ms[arm], ms[f"{arm} cl"]
            line = (f"  {arm:14s} default {default:7.1f} ms  channels-last {last:7.1f} ms  "
                    f"(channels-last / default {last / default:.2f})")
            if arm != "fixed":
                line += (f"  x fixed: default {default / ms['fixed']:.2f}, channels-last "
                         f"{last / ms['fixed cl']:.2f}")
            lines.append(line)
    print("\n".join(lines))
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
