"""Training ShuffleNet / AutoShuffleNet: one config, one ``train`` function, a command line.

The objective of a step is

    loss = cross_entropy(model(x), y) + lam_t * sum_l P(M_l)

with ``P`` the l1-2 penalty of each learned shuffle ``M_l`` and ``lam_t`` ramped linearly from 0 to
``lam`` over the first ``lam_warmup_epochs`` epochs. SGD with momentum and a per-step cosine schedule
updates the weights; after every optimizer step each ``M_l`` is projected back toward the doubly
stochastic matrices (clamp, then ``projection_sweeps`` column/row normalisations); a shuffle parameterised
by Sinkhorn's normalisation of logits (``shuffle_parameterisation="sinkhorn"``) is doubly stochastic by
construction and is not projected. Weight decay applies to convolution and linear weights only: never to
the ``M_l`` (decay pulls them toward ``J/n``, against the penalty) and, unless ``decay_norm_and_bias``, not
to BatchNorm parameters and biases.

At the end the test set is evaluated with the soft ``M_l``; then every shuffle is rounded to its
Hungarian permutation (a gather, ShuffleNet's inference cost), the BatchNorm statistics are re-estimated
on training batches, and the test set is evaluated again. Every reported number is the final epoch's;
nothing is chosen on the test set.

Runs are resumable: a checkpoint (model, optimizer, scheduler, grad scaler, RNG states, history) is
written atomically after every epoch, and the data order of epoch ``e`` is a function of ``(seed, e)``, so
a run killed at any moment and resumed ends exactly as an uninterrupted one (bit for bit on a CPU with a
fixed thread count). Under ``torchrun`` the same code runs data-parallel (DistributedDataParallel,
``batch_size`` is the global batch); rank 0 writes every file.

Command line: ``python -m aslib.train --dataset cifar10 --model shufflenet_v1_g3 --lam 1e-3 ...``
(``--help`` lists every field of :class:`TrainConfig`), ``--resume`` to continue a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import random
import sys
import time
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from aslib.data import DATASETS, load_dataset
from aslib.io import atomic_write, save_results, save_table
from aslib.layers import (
    INITS,
    PARAMETERISATIONS,
    SHUFFLE_KINDS,
    harden_shuffles_,
    layer_penalties,
    project_shuffles_,
    shuffle_parameters,
    shuffle_penalty,
    shuffle_stats,
)
from aslib.models import MODEL_NAMES, build_model, count_parameters
from aslib.progress import progress
from aslib.runtime import resolve_device, seed_everything

__all__ = [
    "CHECKPOINT_NAME",
    "HISTORY_COLUMNS",
    "LAYER_PENALTIES_NAME",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "config_changes",
    "evaluate",
    "main",
    "make_optimizer",
    "model_for",
    "parse_args",
    "recalibrate_batchnorm",
    "train",
]

#: Columns of the per-epoch history (``history.csv``).
HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch", "lr", "lam", "train_loss", "train_acc", "val_loss", "val_acc",
    "penalty", "max_row_deficit", "rounding_fraction", "seconds",
)

CHECKPOINT_NAME = "checkpoint.pt"
#: Per-epoch penalty of each learned shuffle (``<name>.csv``: ``epoch``, ``layer_0``, ``layer_1``, ...).
LAYER_PENALTIES_NAME = "layer_penalties"
_AMP_DTYPES = ("bfloat16", "float16")


def _option(text: str, *, choices: Sequence[Any] | None = None, low: float | None = None,
            high: float | None = None, open_high: bool = False) -> dict[str, Any]:
    """Field metadata: the help text and the allowed values, read by both validation and the command line."""
    return {"help": text, "choices": tuple(choices) if choices is not None else None, "low": low, "high": high,
            "open_high": open_high}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Every field is also a command-line option (``--field-name``)."""

    # data
    dataset: str = field(default="digits", metadata=_option("data set", choices=DATASETS))
    data_root: str = field(default="data", metadata=_option("data folder (see data/README.md)"))
    val_fraction: float = field(default=0.1, metadata=_option(
        "fraction of the training set held out for validation", low=0.0, high=1.0, open_high=True))
    split_seed: int = field(default=0, metadata=_option("seed of the validation split", low=0))
    augment: bool = field(default=True, metadata=_option("random crops and flips (CIFAR, ImageNet)"))
    max_train_samples: int | None = field(default=None, metadata=_option(
        "use only this many training examples (quick runs)", low=1))
    image_size: int = field(default=224, metadata=_option("ImageNet crop size", low=1))
    verify_checksums: bool = field(default=True, metadata=_option("check CIFAR files' md5 sums"))
    # model
    model: str = field(default="shufflenet_v1_g3", metadata=_option("architecture", choices=MODEL_NAMES))
    shuffle: str = field(default="learned", metadata=_option(
        "channel shuffle: fixed (ShuffleNet), learned (AutoShuffleNet), none, random", choices=SHUFFLE_KINDS))
    shuffle_init: str = field(default="uniform", metadata=_option(
        "start of learned shuffles (from 'shuffle', the penalty keeps M at ShuffleNet's permutation)",
        choices=INITS))
    shuffle_noise: float = field(default=0.1, metadata=_option(
        "mix a random doubly stochastic matrix into the learned shuffles' start (moves 'uniform' off the "
        "penalty's stationary point)", low=0.0, high=1.0))
    shuffle_parameterisation: str = field(default="projected", metadata=_option(
        "learned shuffles hold M itself, projected on the doubly stochastic matrices (projected), or logits "
        "through Sinkhorn's normalisation (sinkhorn)", choices=PARAMETERISATIONS))
    stages_repeats: tuple[int, ...] = field(default=(4, 8, 4), metadata=_option("units per stage (3 numbers)"))
    model_kwargs: dict[str, Any] = field(default_factory=dict, metadata=_option(
        "further builder arguments as JSON, e.g. '{\"width\": 0.25}' (v1) or "
        "'{\"stages_out_channels\": [8, 16, 32, 64, 128]}' (v2)"))
    # optimisation
    epochs: int = field(default=10, metadata=_option("training epochs", low=1))
    batch_size: int = field(default=64, metadata=_option("global batch size (split over processes)", low=1))
    eval_batch_size: int = field(default=256, metadata=_option("batch size for evaluation", low=1))
    lr: float = field(default=0.1, metadata=_option("peak learning rate (cosine schedule to 0)", low=0.0))
    momentum: float = field(default=0.9, metadata=_option("SGD momentum", low=0.0, high=1.0, open_high=True))
    nesterov: bool = field(default=True, metadata=_option("Nesterov momentum"))
    weight_decay: float = field(default=5e-4, metadata=_option(
        "weight decay of conv and linear weights (never of the shuffle matrices)", low=0.0))
    decay_norm_and_bias: bool = field(default=False, metadata=_option(
        "also decay BatchNorm parameters and biases"))
    lam: float = field(default=0.03, metadata=_option("weight of the l1-2 penalty (0: convex relaxation)", low=0.0))
    lam_warmup_epochs: float = field(default=0.0, metadata=_option(
        "ramp lam linearly from 0 over this many epochs", low=0.0))
    projection_sweeps: int = field(default=1, metadata=_option(
        "column/row normalisations per projection after each step", low=1))
    recalibration_batches: int = field(default=50, metadata=_option(
        "training batches to re-estimate BatchNorm statistics after rounding (0: keep them)", low=0))
    # run
    seed: int = field(default=0, metadata=_option("seed of initialisation, data order and augmentation", low=0,
                                                  high=2**32, open_high=True))
    device: str = field(default="auto", metadata=_option("auto, cpu, cuda or cuda:N"))
    amp: bool = field(default=True, metadata=_option("mixed precision on CUDA (ignored on CPU)"))
    amp_dtype: str = field(default="bfloat16", metadata=_option(
        "autocast dtype; float16 adds a gradient scaler", choices=_AMP_DTYPES))
    output_dir: str = field(default="runs/train", metadata=_option(
        "folder of checkpoint.pt, history.csv, result.json, model.pt"))
    checkpoint: bool = field(default=True, metadata=_option("write a checkpoint after every epoch"))
    num_workers: int = field(default=0, metadata=_option("data loader worker processes", low=0))
    show_progress: bool = field(default=True, metadata=_option("progress bars"))

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if typing.get_origin(hints[f.name]) is tuple and isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            _check_type(f.name, value, hints[f.name])
            meta = f.metadata
            if value is None or isinstance(value, (dict, tuple)):
                continue
            if meta["choices"] is not None and value not in meta["choices"]:
                raise ValueError(f"unknown {f.name} {value!r}; valid: {', '.join(map(str, meta['choices']))}")
            if meta["low"] is not None and value < meta["low"]:
                raise ValueError(f"{f.name} must be >= {meta['low']}, got {value!r}")
            if meta["high"] is not None and (value >= meta["high"] if meta["open_high"] else value > meta["high"]):
                raise ValueError(f"{f.name} must be {'<' if meta['open_high'] else '<='} {meta['high']}, got {value!r}")
        if len(self.stages_repeats) != 3 or any(r < 1 for r in self.stages_repeats):
            raise ValueError(f"stages_repeats needs 3 positive integers, got {self.stages_repeats!r}")
        clash = sorted(set(self.model_kwargs) & set(_MODEL_ARGUMENTS_SET_HERE))
        if clash:
            raise ValueError(f"model_kwargs may not set {', '.join(clash)}: the data set or a TrainConfig field does")
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values (tuples as lists), e.g. for JSON."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        return cls(**values)


def _check_type(name: str, value: Any, hint: Any) -> None:
    """``ValueError`` unless ``value`` fits the annotation (``bool`` is not accepted as a number)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if origin is tuple:
        ok = isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    elif origin is dict:
        ok = isinstance(value, dict)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ValueError(f"{name} must be of type {getattr(hint, '__name__', hint)}, got {value!r}")


# Builder arguments that the data set or TrainConfig's own fields decide (see model_for).
_MODEL_ARGUMENTS_SET_HERE = ("num_classes", "in_channels", "stem", "shuffle", "shuffle_init", "shuffle_noise",
                             "shuffle_seed", "shuffle_parameterisation", "stages_repeats")

# Fields that may change when a run is resumed (they do not change what is computed).
_RESUMABLE_CHANGES = ("output_dir", "show_progress", "num_workers", "checkpoint", "device")
_DEFAULTS = TrainConfig().to_dict()


@dataclass
class TrainState:
    """What a callback sees at the end of an epoch (``epoch`` counts completed epochs, from 1)."""

    config: TrainConfig
    epoch: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: pd.DataFrame
    metrics: dict[str, float]
    rank: int = 0


Callback = Callable[[TrainState], None]


@dataclass
class TrainResult:
    """The outcome of :func:`train`; every accuracy is the final epoch's (fractions in [0, 1]).

    Attributes:
        history: one row per epoch, columns :data:`HISTORY_COLUMNS`.
        test_acc_soft, test_loss_soft: test set, learned shuffles still soft (doubly stochastic ``M``).
        test_acc_hard, test_loss_hard: test set after rounding to permutations and BatchNorm recalibration.
        test_acc_hard_no_recalibration: after rounding, before recalibration.
        rounding_change: ``test_acc_hard - test_acc_soft``.
        final_penalty: ``sum_l P(M_l)`` before rounding; ``final_rounding_fraction`` the fraction of shuffles
            with ``P(M_l) < ROUNDING_THRESHOLD``.
        permutations: the rounded permutations, one list per learned shuffle (``y = x[:, perm]``).
        num_parameters: trainable scalars during training (the ``M_l`` included);
            ``num_parameters_inference`` after rounding.
        seconds: training wall time, summed over resumed parts.
        model: the final (rounded, recalibrated) model.
    """

    config: TrainConfig
    history: pd.DataFrame
    test_acc_soft: float
    test_loss_soft: float
    test_acc_hard: float
    test_loss_hard: float
    test_acc_hard_no_recalibration: float
    rounding_change: float
    final_val_acc: float
    final_penalty: float
    final_rounding_fraction: float
    permutations: list[list[int]]
    num_parameters: int
    num_parameters_inference: int
    seconds: float
    model: nn.Module = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """Plain values for ``result.json``: every field but ``history`` and ``model``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("history", "model")}
        out["config"] = self.config.to_dict()
        return out


# --- distributed helpers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1


def _setup_distributed(device: torch.device) -> _Dist:
    """Join the process group that ``torchrun`` describes (or one the caller already initialised)."""
    if dist.is_available() and dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size())
    # torchrun's contract: RANK / WORLD_SIZE / MASTER_ADDR in the environment (init_method "env://").
    if dist.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return _Dist(dist.get_rank(), dist.get_world_size(), owns_group=True)
    return _Dist()


def _batch_sums(loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[summed loss, correct, count]`` of a batch (``loss`` the batch mean) in float64, on the device: summed
    over an epoch without a device synchronisation per step."""
    n = torch.tensor(len(y), dtype=torch.float64, device=y.device)
    return torch.stack([loss.detach().double() * n, (logits.argmax(1) == y).sum().double(), n])


def _all_reduce_sum(totals: torch.Tensor, env: _Dist) -> list[float]:
    if env.active:
        dist.all_reduce(totals)
    return totals.tolist()


def _average_buffers(model: nn.Module, env: _Dist) -> None:
    """Make every rank's buffers (BatchNorm statistics) equal: float ones averaged, others from rank 0."""
    if not env.active:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(env.world)
        else:
            dist.broadcast(buffer, 0)


# --- pieces of the loop ------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD with up to three parameter groups: decayed weights, undecayed norm/bias, undecayed shuffles.

    Group names are in ``group["name"]``: ``"decay"`` (conv and linear weights, ``weight_decay``),
    ``"no_decay"`` (BatchNorm parameters and biases, i.e. every parameter with ``ndim <= 1``; weight decay
    0 unless ``decay_norm_and_bias``) and ``"shuffle"`` (the learned ``M``, weight decay 0).
    """
    shuffle_ids = {id(p) for p in shuffle_parameters(model)}
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "shuffle": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in shuffle_ids:
            groups["shuffle"].append(p)
        elif p.ndim <= 1 and not config.decay_norm_and_bias:
            groups["no_decay"].append(p)
        else:
            groups["decay"].append(p)
    decay = {"decay": config.weight_decay, "no_decay": config.weight_decay if config.decay_norm_and_bias else 0.0,
             "shuffle": 0.0}
    param_groups = [{"params": ps, "weight_decay": decay[name], "name": name} for name, ps in groups.items() if ps]
    return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and
                           config.momentum > 0)


def _autocast(device: torch.device, config: TrainConfig):  # noqa: ANN202
    """bf16/fp16 autocast on CUDA when ``amp``; nothing on CPU."""
    if config.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=getattr(torch, config.amp_dtype))
    return nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 256, device: torch.device | str = "cpu",
             autocast: Callable[[], Any] = nullcontext, num_workers: int = 0,
             env: _Dist | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) on ``dataset``: ``(loss, acc)``.

    Under data parallelism each rank takes every ``world``-th example and the sums are all-reduced, so every
    example counts once.
    """
    env = env or _Dist()
    device = torch.device(device)
    if env.active:
        dataset = Subset(dataset, range(env.rank, len(dataset), env.world))
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                           pin_memory=device.type == "cuda"):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast():
            logits = model(x)
        totals += _batch_sums(F.cross_entropy(logits.float(), y), logits, y)
    model.train(was_training)
    loss_sum, correct, count = _all_reduce_sum(totals, env)
    if count == 0:
        raise ValueError("cannot evaluate on an empty data set")
    return loss_sum / count, correct / count


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]], num_batches: int, *,
                          device: torch.device | str = "cpu", autocast: Callable[[], Any] = nullcontext) -> int:
    """Re-estimate every BatchNorm's running mean and variance from ``num_batches`` batches.

    Resets the running statistics, then forwards the batches in train mode without gradients with
    ``momentum = None`` (a cumulative average, so every batch weighs the same); restores the modules'
    momenta and the model's mode. Returns the number of batches used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or num_batches <= 0:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    used = 0
    for x, _ in batches:
        if used >= num_batches:
            break
        with autocast():
            model(x.to(device))
        used += 1
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return used


def _lam_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """``lam`` ramped linearly over the first ``lam_warmup_epochs`` epochs (``step`` counts from 0)."""
    if config.lam_warmup_epochs <= 0:
        return config.lam
    return config.lam * min(1.0, (step + 1) / (config.lam_warmup_epochs * steps_per_epoch))


def _loader_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the loader's generator (worker seeds) in ``epoch`` on ``rank``: a function of these only."""
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**32)  # numpy accepts seeds below 2**32


def _rng_state(loader_generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "loader": loader_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    loader_generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def model_for(config: TrainConfig, *, num_classes: int, in_channels: int, stem: str, **overrides: Any) -> nn.Module:
    """The model ``config`` trains, for a data set of ``num_classes`` and ``in_channels`` with ``stem``.

    ``overrides`` replace the shuffle settings taken from ``config`` (e.g. ``shuffle="fixed"`` for the
    reference ShuffleNet of the same architecture).
    """
    arguments = dict(num_classes=num_classes, in_channels=in_channels, stem=stem,
                     shuffle=config.shuffle, shuffle_init=config.shuffle_init, shuffle_noise=config.shuffle_noise,
                     shuffle_seed=config.seed, shuffle_parameterisation=config.shuffle_parameterisation,
                     stages_repeats=config.stages_repeats)
    assert set(arguments) == set(_MODEL_ARGUMENTS_SET_HERE)
    unknown = sorted(set(overrides) - set(arguments))
    if unknown:
        raise ValueError(f"cannot override {', '.join(unknown)}; overridable: {', '.join(sorted(arguments))}")
    arguments.update(overrides)
    try:
        return build_model(config.model, **arguments, **config.model_kwargs)
    except TypeError as err:  # an argument the builder does not take
        raise ValueError(f"model_kwargs {config.model_kwargs} do not fit {config.model}: {err}") from err


def config_changes(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """The fields (as ``"name: old -> new"``) in which ``config`` computes something other than the saved
    configuration (``TrainConfig.to_dict`` form); fields that cannot change a result are ignored, and a
    field the saved configuration lacks (it predates the field) counts as having had its default."""
    now = config.to_dict()
    was = {**_DEFAULTS, **saved}
    return [f"{k}: {was.get(k)!r} -> {now[k]!r}" for k in sorted(now)
            if k not in _RESUMABLE_CHANGES and was.get(k) != now[k]]


def _check_resumable(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    differ = config_changes(saved, config)
    if differ:
        raise ValueError(f"cannot resume {path}: the configuration changed ({', '.join(differ)})")


# --- the loop ----------------------------------------------------------------------------------------


def train(config: TrainConfig, callbacks: Sequence[Callback | Any] = (), *, resume: bool = False) -> TrainResult:
    """Train, round and evaluate as the module docstring describes; write the results into ``output_dir``.

    Args:
        config: the run.
        callbacks: called after every epoch with a :class:`TrainState`; each is a callable or an object
            with an ``on_epoch_end(state)`` method (on every rank; ``state.rank`` tells which).
        resume: continue from ``<output_dir>/checkpoint.pt`` if it exists (the configuration must match
            except for :data:`_RESUMABLE_CHANGES`); without a checkpoint the run starts afresh.

    Files (rank 0): ``checkpoint.pt``, ``history.csv`` and ``layer_penalties.csv`` (``P(M_l)`` of each learned
    shuffle, columns ``layer_<l>`` in :func:`~aslib.layers.learned_shuffles` order) after each epoch, and at the end
    ``result.json`` (:meth:`TrainResult.summary`) and ``model.pt`` (the rounded model's ``state_dict``).
    """
    hooks = [c.on_epoch_end if hasattr(c, "on_epoch_end") else c for c in callbacks]
    if not all(callable(h) for h in hooks):
        raise ValueError("each callback must be callable or have an on_epoch_end(state) method")
    device = resolve_device(config.device)
    env = _setup_distributed(device)
    if env.active and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", env.rank)) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if config.batch_size % env.world:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {env.world} processes")
    try:
        return _train(config, hooks, resume, device, env)
    finally:
        if env.owns_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, hooks: list[Callback], resume: bool, device: torch.device, env: _Dist) -> TrainResult:
    output_dir = Path(config.output_dir)
    checkpoint_path = output_dir / CHECKPOINT_NAME
    is_main = env.rank == 0
    seed_everything(config.seed)
    splits = load_dataset(
        config.dataset, config.data_root, val_fraction=config.val_fraction, split_seed=config.split_seed,
        augment=config.augment, max_train_samples=config.max_train_samples, image_size=config.image_size,
        verify_checksums=config.verify_checksums,
    )
    model = model_for(config, num_classes=splits.num_classes, in_channels=splits.in_channels, stem=splits.stem).to(device)
    if env.active:  # same initialisation everywhere, but each rank its own augmentation stream
        seed_everything(_loader_seed(config.seed, -1, env.rank))
    num_parameters = count_parameters(model)
    optimizer = make_optimizer(model, config)

    per_rank_batch = config.batch_size // env.world
    sampler = DistributedSampler(splits.train, num_replicas=env.world, rank=env.rank, shuffle=True,
                                 seed=config.seed, drop_last=False)
    loader_generator = torch.Generator()
    # drop_last: a final batch of one example would break BatchNorm on 1x1 feature maps.
    loader = DataLoader(splits.train, batch_size=per_rank_batch, sampler=sampler, drop_last=True,
                        num_workers=config.num_workers, generator=loader_generator,
                        pin_memory=device.type == "cuda")
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"the training set ({len(splits.train)} examples) is smaller than one batch "
                         f"({per_rank_batch} per process)")
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda"
                                  and config.amp_dtype == "float16")
    autocast = lambda: _autocast(device, config)  # noqa: E731
    run_eval = functools.partial(evaluate, model, batch_size=config.eval_batch_size, device=device, autocast=autocast,
                                 num_workers=config.num_workers, env=env)

    history: list[dict[str, float]] = []
    penalty_rows: list[dict[str, float]] = []
    start_epoch, seconds_before = 0, 0.0
    if resume and checkpoint_path.is_file():
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        _check_resumable(ckpt["config"], config, checkpoint_path)
        if len(ckpt["rng"]) != env.world:
            raise ValueError(f"cannot resume {checkpoint_path}: written by {len(ckpt['rng'])} processes, "
                             f"now {env.world}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"][env.rank], loader_generator)
        history = ckpt["history"]
        penalty_rows = ckpt.get("layer_penalties", [])
        start_epoch, seconds_before = ckpt["epoch"], ckpt["seconds"]

    net: nn.Module = model
    if env.active:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    started = time.perf_counter()
    epochs_bar = progress(total=config.epochs, initial=start_epoch, enabled=config.show_progress and is_main,
                          desc="epochs")
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        loader_generator.manual_seed(_loader_seed(config.seed, epoch, env.rank))
        net.train()
        totals = torch.zeros(3, dtype=torch.float64, device=device)
        lam_t, lr_t = config.lam, optimizer.param_groups[0]["lr"]
        bar = progress(loader, enabled=config.show_progress and is_main, desc=f"epoch {epoch + 1}/{config.epochs}",
                       leave=False)
        for i, (x, y) in enumerate(bar):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast():
                logits = net(x)
            ce = F.cross_entropy(logits.float(), y)
            lam_t = _lam_at(config, epoch * steps_per_epoch + i, steps_per_epoch)
            loss = ce + lam_t * shuffle_penalty(model) if lam_t > 0 else ce
            lr_t = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            project_shuffles_(model, config.projection_sweeps)
            totals += _batch_sums(ce, logits, y)
        bar.close()
        _average_buffers(model, env)
        loss_sum, correct, count = _all_reduce_sum(totals, env)
        val_loss, val_acc = run_eval(splits.val) if splits.val is not None else (math.nan, math.nan)
        stats = shuffle_stats(model)
        penalty_rows.append({"epoch": epoch + 1,
                             **{f"layer_{i}": p for i, p in enumerate(layer_penalties(model))}})
        history.append({
            "epoch": epoch + 1, "lr": lr_t, "lam": lam_t,
            "train_loss": loss_sum / count, "train_acc": correct / count, "val_loss": val_loss, "val_acc": val_acc,
            "penalty": stats["penalty"], "max_row_deficit": stats["max_row_deficit"],
            "rounding_fraction": stats["rounding_fraction"], "seconds": time.perf_counter() - t0,
        })
        rng = _rng_state(loader_generator)
        if env.active:
            gathered: list[Any] = [None] * env.world
            dist.all_gather_object(gathered, rng)
            rngs = gathered
        else:
            rngs = [rng]
        if is_main:
            save_table(output_dir, "history", pd.DataFrame(history, columns=HISTORY_COLUMNS))
            save_table(output_dir, LAYER_PENALTIES_NAME, pd.DataFrame(penalty_rows))
            if config.checkpoint:
                ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1,
                        "rng": rngs, "history": history, "layer_penalties": penalty_rows,
                        "config": config.to_dict(),
                        "seconds": seconds_before + time.perf_counter() - started}
                atomic_write(checkpoint_path, lambda f: torch.save(ckpt, f))
        state = TrainState(config, epoch + 1, model, optimizer, pd.DataFrame(history, columns=HISTORY_COLUMNS),
                           history[-1], env.rank)
        for hook in hooks:
            hook(state)
        epochs_bar.set_postfix(val_acc=f"{val_acc:.3f}", penalty=f"{stats['penalty']:.3g}", refresh=False)
        epochs_bar.update()
    epochs_bar.close()

    seconds = seconds_before + time.perf_counter() - started
    return _finish(config, model, splits, sampler, loader, history, num_parameters, seconds, device, autocast,
                   run_eval, env)


def _finish(config: TrainConfig, model: nn.Module, splits: Any, sampler: DistributedSampler, loader: DataLoader,
            history: list[dict[str, float]], num_parameters: int, seconds: float, device: torch.device,
            autocast: Callable[[], Any], run_eval: Callable[[Dataset], tuple[float, float]],
            env: _Dist) -> TrainResult:
    """Soft test accuracy, rounding, BatchNorm recalibration, hard test accuracy; write the result files."""
    test = lambda: run_eval(splits.test)  # noqa: E731
    stats = shuffle_stats(model)
    test_loss_soft, test_acc_soft = test()
    permutations = [p.tolist() for p in harden_shuffles_(model)]
    test_loss_raw, test_acc_raw = test() if permutations else (test_loss_soft, test_acc_soft)
    test_loss_hard, test_acc_hard = test_loss_raw, test_acc_raw
    if permutations and config.recalibration_batches > 0:
        # The recalibration batches are those of a further epoch, ordered by (seed, epochs) like any other.
        sampler.set_epoch(config.epochs)
        loader.generator.manual_seed(_loader_seed(config.seed, config.epochs, env.rank))
        recalibrate_batchnorm(model, loader, config.recalibration_batches, device=device, autocast=autocast)
        _average_buffers(model, env)
        test_loss_hard, test_acc_hard = test()
    last = history[-1] if history else {}
    result = TrainResult(
        config=config,
        history=pd.DataFrame(history, columns=HISTORY_COLUMNS),
        test_acc_soft=test_acc_soft,
        test_loss_soft=test_loss_soft,
        test_acc_hard=test_acc_hard,
        test_loss_hard=test_loss_hard,
        test_acc_hard_no_recalibration=test_acc_raw,
        rounding_change=test_acc_hard - test_acc_soft,
        final_val_acc=float(last.get("val_acc", math.nan)),
        final_penalty=stats["penalty"],
        final_rounding_fraction=stats["rounding_fraction"],
        permutations=permutations,
        num_parameters=num_parameters,
        num_parameters_inference=count_parameters(model),
        seconds=seconds,
        model=model,
    )
    if env.rank == 0:
        output_dir = Path(config.output_dir)
        save_results(output_dir, "result", result.summary())
        state = model.state_dict()
        atomic_write(output_dir / "model.pt", lambda f: torch.save(state, f))
    return result


# --- command line ------------------------------------------------------------------------------------


def _parse_optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def _parse_json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"width\": 0.5}'")
    return value


def _build_parser() -> argparse.ArgumentParser:
    """One option per :class:`TrainConfig` field, its type, default, choices and help read from the field."""
    parser = argparse.ArgumentParser(prog="python -m aslib.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        option = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "default": getattr(defaults, f.name), "help": f.metadata["help"]}
        if f.metadata["choices"] is not None:
            kwargs["choices"] = f.metadata["choices"]
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            kwargs.update(type=int, nargs="+")
        elif typing.get_origin(hint) is dict:
            kwargs.update(type=_parse_json_object, metavar="JSON")
        elif typing.get_origin(hint) in (typing.Union, types.UnionType):
            kwargs.update(type=_parse_optional_int, metavar="INT|none")
        else:
            kwargs["type"] = hint
        parser.add_argument(option, **kwargs)
    parser.add_argument("--resume", action="store_true",
                        help="continue from <output-dir>/checkpoint.pt when it exists")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, bool]:
    """``(config, resume)`` from command-line arguments; a bad value exits with a message naming it."""
    parser = _build_parser()
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    args["stages_repeats"] = tuple(args["stages_repeats"])
    try:
        return TrainConfig(**args), resume
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: train, then print the result summary as JSON (rank 0)."""
    config, resume = parse_args(argv)
    try:
        result = train(config, resume=resume)
    except (FileNotFoundError, ValueError) as err:  # missing data, bad option combination: no traceback
        print(f"python -m aslib.train: error: {err}", file=sys.stderr)
        return 1
    if dist.is_available() and int(os.environ.get("RANK", "0")) != 0:
        return 0
    summary = {k: v for k, v in result.summary().items() if k not in ("config", "permutations")}
    print(json.dumps(summary, indent=2, sort_keys=True), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
