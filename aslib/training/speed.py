"""Speed of AutoShuffleNet against ShuffleNet, measured in one run on one device.

* inference: a hardened AutoShuffleNet (every learned shuffle rounded to a permutation, run as the gather
  ``x[:, perm]``) against ShuffleNet with its fixed shuffle, in images per second;
* training: a step of the soft AutoShuffleNet (``c x c`` shuffle matrices, penalty, projection after the
  step) against a step of ShuffleNet.

Both models share every weight but the shuffles (the hardened permutations are random ones, as after
training). Timings are interleaved (the two models alternate, in alternating order, ``repeats`` times)
and the medians are compared, so slow drifts of a shared machine hit both alike. The command line is
``benchmarks/inference_speed.py``; notebook 04 calls :func:`measure_speed` for its results table.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from aslib.training.config import TrainConfig
from aslib.training.data import DATASET_INFO
from aslib.nn.shuffles import harden_shuffles_
from aslib.training.loop import make_optimizer, penalised_step
from aslib.models import count_flops, count_parameters, from_config, get_model
from aslib.utils.progress import progress
from aslib.utils.runtime import resolve_device, seed_everything

__all__ = ["SpeedConfig", "interleaved", "measure_speed", "speed_config_for", "train_step", "training_throughput"]


@dataclass(frozen=True)
class SpeedConfig:
    """What to time (the command line's ``--help`` describes each field).

    ``model_kwargs`` go to :func:`aslib.models.get_model` (e.g. ``{"width": 0.25, "stages_repeats": (1, 1, 1)}``).
    ``time_training = False`` times inference only (the training figures are then NaN).
    """

    model: str = "shufflenet_v2_1.0"
    stem: str = "cifar"
    image_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    model_kwargs: dict = field(default_factory=dict)
    batch_size: int = 64
    inference_batches: int = 4
    repeats: int = 15
    warmup: int = 3
    lam: float = 1e-3
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0
    show_progress: bool = True
    time_training: bool = True


def speed_config_for(config: TrainConfig, **overrides: Any) -> SpeedConfig:
    """A :class:`SpeedConfig` for the architecture a training run uses (its data set's input shape)."""
    info = DATASET_INFO[config.dataset]
    size = config.image_size if config.dataset == "imagenet" else info.input_size
    return SpeedConfig(model=config.model, stem=info.stem, image_size=size, in_channels=info.in_channels,
                       num_classes=info.num_classes,
                       model_kwargs={**config.model_kwargs, "stages_repeats": config.stages_repeats}, **overrides)


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


def interleaved(tasks: dict[str, Callable[[], None]], cfg: SpeedConfig, device: torch.device,
                desc: str) -> dict[str, list[float]]:
    """Seconds per call of each task over ``cfg.repeats`` rounds after ``cfg.warmup`` untimed ones, alternating
    the order every round (so the slow drifts of a shared machine fall on every task alike)."""
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


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> Callable[[], None]:
    """One step of the training loop on the batch ``(x, y)``, as a closure to time: :func:`penalised_step` with
    the loop's optimizer groups (:func:`make_optimizer`) and ``config``'s ``lam``, ``projection_sweeps``,
    ``mirror_lam`` and ``mirror_step`` (the step size at the peak learning rate), so that projected, Sinkhorn
    and mirror-parameterised learned shuffles are all timed as they train."""
    optimizer = make_optimizer(model, config)

    def step() -> None:
        penalised_step(model, x, y, optimizer, config.lam, projection_sweeps=config.projection_sweeps,
                       mirror_lam=config.mirror_lam, mirror_step_size=config.mirror_step)

    return step


def _inference(model: nn.Module, x: torch.Tensor, batches: int) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            for _ in range(batches):
                model(x)

    return run


def measure_speed(cfg: SpeedConfig) -> dict[str, float | str | int]:
    """Time training steps (soft learned against fixed) and inference (hardened against fixed).

    Returns parameters and FLOPs per image of the three models (fixed, soft, hardened), images per second
    of fixed and hardened, milliseconds per training step of fixed and soft (NaN unless
    ``cfg.time_training``), and the two ratios.
    """
    device = resolve_device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    common = {"stem": cfg.stem, "num_classes": cfg.num_classes, "in_channels": cfg.in_channels, **cfg.model_kwargs}
    fixed = get_model(cfg.model, shuffle="fixed", **common).to(device)
    learned = get_model(cfg.model, shuffle="learned", shuffle_init="random", shuffle_seed=cfg.seed, **common)
    learned.load_state_dict(fixed.state_dict(), strict=False)
    learned.to(device)
    x = torch.randn(cfg.batch_size, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    y = torch.randint(cfg.num_classes, (cfg.batch_size,), device=device)
    shape = (1, cfg.in_channels, cfg.image_size, cfg.image_size)
    soft_params, soft_flops = count_parameters(learned), count_flops(learned, shape)

    fixed.train(), learned.train()
    train = {"fixed": [math.nan], "learned": [math.nan]}
    if cfg.time_training:
        train = interleaved({"fixed": train_step(fixed, x, y, TrainConfig(lr=0.01, lam=0.0)),
                              "learned": train_step(learned, x, y, TrainConfig(lr=0.01, lam=cfg.lam))},
                             cfg, device, "train steps")

    harden_shuffles_(learned)
    fixed.eval(), learned.eval()
    infer = interleaved({"fixed": _inference(fixed, x, cfg.inference_batches),
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


def training_throughput(config: TrainConfig, device: torch.device | str, *, steps: int = 3, warmup: int = 1) -> float:
    """Training images per second of ``config``'s network (architecture, shuffle, memory format, batch size) on
    ``device``: the median over ``steps`` timed steps of :func:`train_step`, after ``warmup`` untimed ones, on
    random inputs of its data set's shape. Data loading is not included (on the tensor pipeline it is a few
    gathers per batch); what a run's time estimate (:func:`aslib.runner.sweep.plan`) divides by."""
    device = resolve_device(str(device))
    info = DATASET_INFO[config.dataset]
    size = config.image_size if config.dataset == "imagenet" else info.input_size
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    seed_everything(config.seed)
    model = from_config(config, num_classes=info.num_classes, in_channels=info.in_channels,
                        stem=info.stem).to(device, memory_format=memory_format)
    x = torch.randn(config.batch_size, info.in_channels, size, size, device=device)
    y = torch.randint(info.num_classes, (config.batch_size,), device=device)
    step = train_step(model.train(), x.contiguous(memory_format=memory_format), y, config)
    timed = _timer(device)
    for _ in range(warmup):
        step()
    return config.batch_size / statistics.median([timed(step) for _ in range(steps)])
