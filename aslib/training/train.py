"""Training one network: :func:`fit` trains a model it is given, :func:`train` builds it from names first.

The objective of a step (:func:`aslib.training.loop.penalised_step`) is

    loss = cross_entropy(model(x), y) + lam_t * sum_l P(M_l)

with ``P`` the penalty named ``shuffle_penalty`` (default the l1-2) of each learned shuffle ``M_l`` and ``lam_t``
(:func:`~aslib.training.loop.penalty_weight`) 0 before ``penalty_start_epoch``, then ramped linearly to ``lam`` over ``lam_warmup_epochs``
epochs. SGD with momentum and a per-step cosine schedule updates the weights (the shuffle matrices at
``lr * shuffle_lr_scale``); after every optimizer step each ``M_l`` takes its parameterisation's update
(:mod:`aslib.nn.parameterisations`): projected back toward the doubly stochastic matrices (clamp, then
``projection_sweeps`` column/row normalisations), or a mirror step with the penalty inside it (the mirror shuffles'
penalty is not in the loss), or nothing for (Gumbel-)Sinkhorn logits, doubly stochastic by construction, whose
temperature ``shuffle_tau_end`` (if set) anneals per epoch. Weight decay applies to convolution and linear weights only
(:func:`aslib.training.loop.make_optimizer`).

For the last ``hard_phase`` of the steps (default a tenth) every learned shuffle is rounded to its Hungarian
permutation (a gather, ShuffleNet's inference cost) and the rest of the network trains on with them fixed. At the
end (:func:`aslib.training.loop.round_and_evaluate`) the test set is evaluated; shuffles still soft (``hard_phase =
0``, the paper's recipe) are then rounded, the BatchNorm statistics re-estimated on training batches, and the test
set evaluated again. Every reported number is the final epoch's; nothing is chosen on the test set.

Runs are resumable: a checkpoint (model, optimizer, scheduler, grad scaler, RNG states, history) is
written atomically after every epoch, and the data order of epoch ``e`` is a function of ``(seed, e)``, so
a run killed at any moment and resumed ends exactly as an uninterrupted one (bit for bit on a CPU with a
fixed thread count). Under ``torchrun`` the same code runs data-parallel (DistributedDataParallel,
``batch_size`` is the global batch); rank 0 writes every file.

Command line: ``python -m aslib.training.train --dataset cifar10 --model shufflenet_v1_g3 --lam 1e-3 ...``
(``--help`` lists every field of :class:`~aslib.training.config.TrainConfig`), ``--resume`` to continue a run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from aslib.training.config import TrainConfig, parse_args
from aslib.training.data import DataSplits, load_dataset
from aslib.training.distributed import ProcessGroup, all_reduce_sum, average_buffers, join_process_group
from aslib.utils.io import atomic_write, save_results, save_table
from aslib.nn.shuffles import (
    RoundingWarning,
    ShuffleHealth,
    anneal_shuffles_,
    fix_shuffles,
    fixed_permutations,
    layer_penalties,
    learned_shuffles,
    shuffle_health,
    shuffle_stats,
)
from aslib.training.loop import (
    SettledShuffles,
    batch_sums,
    evaluate,
    hard_phase_start,
    make_optimizer,
    penalty_weight,
    penalised_step,
    round_and_evaluate,
    training_batches,
    warmup_lam,
)
from aslib.training.batches import TensorBatches
from aslib.models import count_parameters, from_config
from aslib.training.state import (
    CHECKPOINT_NAME,
    HISTORY_COLUMNS,
    LAYER_PENALTIES_NAME,
    Callback,
    TrainResult,
    TrainState,
    load_checkpoint,
    rng_state,
    run_permutations,
    set_rng_state,
)
from aslib.utils.progress import progress
from aslib.utils.runtime import resolve_device, seed_everything, user_stacklevel

__all__ = ["fit", "main", "train"]

# --- pieces of the loop ------------------------------------------------------------------------------


def _autocast(device: torch.device, config: TrainConfig):  # noqa: ANN202
    """bf16/fp16 autocast on CUDA when ``amp``; nothing on CPU."""
    if config.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=getattr(torch, config.amp_dtype))
    return nullcontext()


def _loader_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the loader's generator (worker seeds) in ``epoch`` on ``rank``: a function of these only."""
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**32)  # numpy accepts seeds below 2**32


def _data_parallel(model: nn.Module, group: ProcessGroup, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when several processes train it, else ``model``."""
    if not group.active:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


# --- the loop ----------------------------------------------------------------------------------------


def train(config: TrainConfig, callbacks: Sequence[Callback | Any] = (), *, resume: bool = False) -> TrainResult:
    """Build the data set and the model ``config`` names, then :func:`fit` it (same arguments)."""
    seed_everything(config.seed)
    splits = load_dataset(
        config.dataset, config.data_root, val_fraction=config.val_fraction, split_seed=config.split_seed,
        augment=config.augment, max_train_samples=config.max_train_samples, image_size=config.image_size,
        verify_checksums=config.verify_checksums,
    )
    source = config.permutations_source  # a learned network's permutations, retrained as fixed shuffles
    given = run_permutations(source) if source is not None else None
    model = from_config(config, num_classes=splits.num_classes, in_channels=splits.in_channels, stem=splits.stem)
    if given is not None:
        fix_shuffles(model, given)
    return fit(model, splits, config, callbacks, resume=resume)


def fit(model: nn.Module, splits: DataSplits, config: TrainConfig, callbacks: Sequence[Callback | Any] = (), *,
        resume: bool = False) -> TrainResult:
    """Train ``model`` on ``splits`` as the module docstring describes, round and evaluate it; write the files.

    Nothing here depends on which network ``model`` is: its learned shuffles (if any) are found by type. The
    model and data fields of ``config`` are not read (the caller built both); ``seed`` orders the data.

    Args:
        model: any classifier ``(B, C, H, W) -> (B, classes)``, freshly initialised (by the caller's seed).
        splits: ``train``, ``val`` (or None) and ``test`` data sets.
        config: the optimisation and run fields.
        callbacks: called after every epoch with a :class:`TrainState`; each is a callable or an object
            with an ``on_epoch_end(state)`` method (on every rank; ``state.rank`` tells which).
        resume: continue from ``<output_dir>/checkpoint.pt`` if it exists (the configuration must match
            except for :data:`~aslib.training.config.RESUMABLE_CHANGES`); without a checkpoint the run starts afresh.

    Files (rank 0): ``checkpoint.pt``, ``history.csv`` and ``layer_penalties.csv`` (``P(M_l)`` of each learned
    shuffle, columns ``layer_<l>`` in :func:`~aslib.nn.shuffles.learned_shuffles` order) after each epoch, and at the
    end ``result.json`` (:meth:`TrainResult.summary`) and ``model.pt`` (the rounded model's ``state_dict``).
    """
    hooks = [c.on_epoch_end if hasattr(c, "on_epoch_end") else c for c in callbacks]
    if not all(callable(h) for h in hooks):
        raise ValueError("each callback must be callable or have an on_epoch_end(state) method")
    device = resolve_device(config.device)
    group = join_process_group(device)
    if group.active and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", group.rank)) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    try:
        if config.batch_size % group.world:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by the {group.world} processes")
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        return _fit(model.to(device, memory_format=memory_format), splits, config, hooks, resume, device, group)
    finally:
        if group.owns_group:
            dist.destroy_process_group()


@dataclass
class _Session:
    """What one call of :func:`fit` holds while it trains (one per process under data parallelism)."""

    model: nn.Module
    config: TrainConfig
    device: torch.device
    group: ProcessGroup
    optimizer: torch.optim.SGD
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    sampler: DistributedSampler
    loader: DataLoader | TensorBatches
    loader_generator: torch.Generator
    settled: SettledShuffles
    num_parameters: int
    health: ShuffleHealth | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    penalty_rows: list[dict[str, float]] = field(default_factory=list)
    start_epoch: int = 0
    seconds_before: float = 0.0

    @property
    def is_main(self) -> bool:
        return self.group.rank == 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def autocast(self):  # noqa: ANN201
        return _autocast(self.device, self.config)

    def evaluate(self, dataset: Any) -> tuple[float, float]:
        return evaluate(self.model, dataset, batch_size=self.config.eval_batch_size, device=self.device,
                        autocast=self.autocast, num_workers=self.config.num_workers, group=self.group,
                        pipeline=self.config.data_pipeline, channels_last=self.config.channels_last)

    def order_epoch(self, epoch: int) -> None:
        """Set the data order (and worker seeds) of ``epoch``: a function of ``(seed, epoch, rank)`` only."""
        self.sampler.set_epoch(epoch)
        self.loader_generator.manual_seed(_loader_seed(self.config.seed, epoch, self.group.rank))


def _start(model: nn.Module, splits: DataSplits, config: TrainConfig, device: torch.device,
           group: ProcessGroup) -> _Session:
    """The optimizer, schedule, data order and loader of a run, before any epoch."""
    if group.active:  # same initialisation everywhere, but each rank its own augmentation stream
        seed_everything(_loader_seed(config.seed, -1, group.rank))
    num_parameters = count_parameters(model)
    optimizer = make_optimizer(model, config)
    per_rank_batch = config.batch_size // group.world
    sampler = DistributedSampler(splits.train, num_replicas=group.world, rank=group.rank, shuffle=True,
                                 seed=config.seed, drop_last=False)
    loader_generator = torch.Generator()
    loader = training_batches(splits.train, sampler, per_rank_batch, loader_generator, config, device)
    if len(loader) == 0:
        raise ValueError(f"the training set ({len(splits.train)} examples) is smaller than one batch "
                         f"({per_rank_batch} per process)")
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * len(loader))
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda"
                                  and config.amp_dtype == "float16")
    return _Session(model, config, device, group, optimizer, scheduler, scaler, sampler, loader, loader_generator,
                    SettledShuffles(config.harden_after), num_parameters)


def _resume(session: _Session, path: Path) -> None:
    """Load the state of ``path`` (written by :func:`_save_epoch`) into ``session``."""
    ckpt = load_checkpoint(path, session.config, session.group)
    session.model.load_state_dict(ckpt["model"])
    session.optimizer.load_state_dict(ckpt["optimizer"])
    session.scheduler.load_state_dict(ckpt["scheduler"])
    session.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"][session.group.rank], session.loader_generator)
    session.history = ckpt["history"]
    session.penalty_rows = ckpt.get("layer_penalties", [])
    if "settled" in ckpt:
        session.settled.load_state_dict(ckpt["settled"])
    if ckpt.get("health") is not None:
        session.health = ShuffleHealth(*(tuple(tuple(x) for x in ckpt["health"][k]) for k in ("unsettled", "uniform")))
    session.start_epoch, session.seconds_before = ckpt["epoch"], ckpt["seconds"]


def _record_health(session: _Session, when: str) -> None:
    """Record, once, where the learned shuffles stand before they are rounded, and warn (rank 0) when any is not
    yet at a permutation: its rounding changes the network (:func:`~aslib.nn.shuffles.shuffle_health`)."""
    if session.health is not None:
        return
    session.health = shuffle_health(session.model)
    if not session.health.healthy and session.is_main:
        total = len(learned_shuffles(session.model))
        warnings.warn(RoundingWarning(f"{session.health.message(total)} (rounded {when})"),
                      stacklevel=user_stacklevel())


def _start_hard_phase(session: _Session, epoch: int) -> bool:
    """Round every soft learned shuffle to its permutation during epoch ``epoch`` (0-based), for the rest of
    training (``hard_phase``); returns whether any was soft."""
    soft = [(i, layer) for i, layer in enumerate(learned_shuffles(session.model)) if not layer.is_hardened]
    if not soft:
        return False
    _record_health(session, f"in epoch {epoch + 1}, for the hard phase")
    for i, layer in soft:
        layer.harden()
        session.settled.hardened_at[i] = epoch
    return True


def _train_epoch(session: _Session, net: nn.Module, epoch: int) -> tuple[torch.Tensor, float, float, nn.Module]:
    """One epoch of :func:`~aslib.training.loop.penalised_step`, entering the hard phase at its first step; returns
    the summed ``[loss, correct, count]`` of this rank, the last step's ``lam_t`` and learning rate, and the
    network to step next (rebuilt when the hard phase began: DDP must forget the rounded shuffles' parameters)."""
    config, model, optimizer, device = session.config, session.model, session.optimizer, session.device
    hard_start = hard_phase_start(config, session.steps_per_epoch)
    session.order_epoch(epoch)
    net.train()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    lam_t, lr_t = config.lam, optimizer.param_groups[0]["lr"]
    bar = progress(session.loader, enabled=config.show_progress and session.is_main,
                   desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)
    for i, (x, y) in enumerate(bar):
        memory_format = torch.channels_last if config.channels_last and x.ndim == 4 else torch.preserve_format
        x, y = x.to(device, non_blocking=True, memory_format=memory_format), y.to(device, non_blocking=True)
        step_index = epoch * session.steps_per_epoch + i
        if step_index >= hard_start and (step_index == hard_start or i == 0) and _start_hard_phase(session, epoch):
            net = _data_parallel(model, session.group, device)
        lam_t = penalty_weight(config, step_index, session.steps_per_epoch)
        lr_t = optimizer.param_groups[0]["lr"]
        mirror_lam = penalty_weight(config, step_index, session.steps_per_epoch, config.mirror_lam)
        ce, logits = penalised_step(model, x, y, optimizer, lam_t, projection_sweeps=config.projection_sweeps,
                                    forward=net, scaler=session.scaler, scheduler=session.scheduler,
                                    autocast=session.autocast, mirror_lam=mirror_lam,
                                    mirror_step_size=config.mirror_step * lr_t / config.lr if config.lr else 0.0,
                                    penalty=config.shuffle_penalty)
        totals += batch_sums(ce, logits, y)
    bar.close()
    return totals, lam_t, lr_t, net


def _record_epoch(session: _Session, splits: DataSplits, epoch: int, totals: torch.Tensor, lam_t: float,
                  lr_t: float, started: float) -> dict[str, float]:
    """Evaluate on the validation set and append the epoch's row to the history and the layer penalties."""
    model, group = session.model, session.group
    average_buffers(model, group)
    loss_sum, correct, count = all_reduce_sum(totals, group)
    val_loss, val_acc = session.evaluate(splits.val) if splits.val is not None else (math.nan, math.nan)
    stats = shuffle_stats(model)
    session.penalty_rows.append({"epoch": epoch + 1,
                                 **{f"layer_{i}": p for i, p in enumerate(layer_penalties(model))}})
    session.history.append({
        "epoch": epoch + 1, "lr": lr_t, "lam": lam_t,
        "train_loss": loss_sum / count, "train_acc": correct / count, "val_loss": val_loss, "val_acc": val_acc,
        "penalty": stats["penalty"], "max_row_deficit": stats["max_row_deficit"],
        "rounding_fraction": stats["rounding_fraction"], "seconds": time.perf_counter() - started,
    })
    return session.history[-1]


def _save_epoch(session: _Session, epoch: int, seconds: float) -> None:
    """The files of an epoch's end (rank 0): ``history.csv``, ``layer_penalties.csv`` and the checkpoint (every
    rank's RNG states gathered into it, so that each rank resumes its own stream)."""
    config, group = session.config, session.group
    rng = rng_state(session.loader_generator)
    if group.active:
        rngs: list[Any] = [None] * group.world
        dist.all_gather_object(rngs, rng)
    else:
        rngs = [rng]
    if not session.is_main:
        return
    output_dir = Path(config.output_dir)
    save_table(output_dir, "history", pd.DataFrame(session.history, columns=HISTORY_COLUMNS))
    save_table(output_dir, LAYER_PENALTIES_NAME, pd.DataFrame(session.penalty_rows))
    if config.checkpoint:
        ckpt = {"model": session.model.state_dict(), "optimizer": session.optimizer.state_dict(),
                "scheduler": session.scheduler.state_dict(), "scaler": session.scaler.state_dict(),
                "epoch": epoch + 1, "rng": rngs, "history": session.history,
                "layer_penalties": session.penalty_rows, "settled": session.settled.state_dict(),
                "health": None if session.health is None else dataclasses.asdict(session.health),
                "config": config.to_dict(), "seconds": seconds}
        atomic_write(output_dir / CHECKPOINT_NAME, lambda f: torch.save(ckpt, f))


def _finish(session: _Session, splits: DataSplits, seconds: float) -> TrainResult:
    """Round and evaluate (:func:`~aslib.training.loop.round_and_evaluate`), write ``result.json`` and ``model.pt``."""
    config, model = session.config, session.model
    _record_health(session, "at the end")
    # The recalibration batches are those of a further epoch, ordered by (seed, epochs) like any other.
    session.order_epoch(config.epochs)
    rounded = round_and_evaluate(model, lambda: session.evaluate(splits.test), session.loader,
                                 config.recalibration_batches, device=session.device, autocast=session.autocast,
                                 group=session.group)
    last = session.history[-1] if session.history else {}
    result = TrainResult(
        config=config,
        history=pd.DataFrame(session.history, columns=HISTORY_COLUMNS),
        test_acc_soft=rounded.soft[1],
        test_loss_soft=rounded.soft[0],
        test_acc_hard=rounded.hard[1],
        test_loss_hard=rounded.hard[0],
        test_acc_hard_no_recalibration=rounded.raw[1],
        rounding_change=rounded.hard[1] - rounded.soft[1],
        final_val_acc=float(last.get("val_acc", math.nan)),
        final_penalty=rounded.stats["penalty"],
        final_rounding_fraction=rounded.stats["rounding_fraction"],
        permutations=[p.tolist() for p in rounded.permutations],
        fixed_permutations=fixed_permutations(model),
        hardened_epochs=[session.settled.hardened_at.get(i, 0) for i in range(len(rounded.permutations))],
        unsettled_shuffles=len(session.health.unsettled),
        uniform_shuffles=len(session.health.uniform),
        unsettled_layers=[name for name, _ in session.health.unsettled],
        num_parameters=session.num_parameters,
        num_parameters_inference=count_parameters(model),
        seconds=seconds,
        model=model,
    )
    if session.is_main:
        output_dir = Path(config.output_dir)
        save_results(output_dir, "result", result.summary())
        weights = model.state_dict()
        atomic_write(output_dir / "model.pt", lambda f: torch.save(weights, f))
    return result


def _fit(model: nn.Module, splits: DataSplits, config: TrainConfig, hooks: list[Callback], resume: bool,
         device: torch.device, group: ProcessGroup) -> TrainResult:
    session = _start(model, splits, config, device, group)
    checkpoint_path = Path(config.output_dir) / CHECKPOINT_NAME
    if resume and checkpoint_path.is_file():
        _resume(session, checkpoint_path)
    net = _data_parallel(model, group, device)
    started = time.perf_counter()
    epochs_bar = progress(total=config.epochs, initial=session.start_epoch,
                          enabled=config.show_progress and session.is_main, desc="epochs")
    for epoch in range(session.start_epoch, config.epochs):
        t0 = time.perf_counter()
        if config.shuffle_tau_end > 0:  # Sinkhorn temperatures for this epoch (a function of the epoch: resumable)
            anneal_shuffles_(model, epoch / max(config.epochs - 1, 1), config.shuffle_tau_end)
        totals, lam_t, lr_t, net = _train_epoch(session, net, epoch)
        metrics = _record_epoch(session, splits, epoch, totals, lam_t, lr_t, t0)
        if session.settled.update_(model, epoch + 1):  # DDP must forget the parameters of frozen shuffles
            net = _data_parallel(model, group, device)
        _save_epoch(session, epoch, session.seconds_before + time.perf_counter() - started)
        state = TrainState(config, epoch + 1, model, session.optimizer,
                           pd.DataFrame(session.history, columns=HISTORY_COLUMNS), metrics, group.rank)
        for hook in hooks:
            hook(state)
        epochs_bar.set_postfix(val_acc=f"{metrics['val_acc']:.3f}", penalty=f"{metrics['penalty']:.3g}",
                               refresh=False)
        epochs_bar.update()
    epochs_bar.close()
    return _finish(session, splits, session.seconds_before + time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: train, then print the result summary as JSON (rank 0)."""
    config, resume = parse_args(argv)
    try:
        result = train(config, resume=resume)
    except (FileNotFoundError, ValueError) as err:  # missing data, bad option combination: no traceback
        print(f"python -m aslib.training.train: error: {err}", file=sys.stderr)
        return 1
    if dist.is_available() and int(os.environ.get("RANK", "0")) != 0:
        return 0
    summary = {k: v for k, v in result.summary().items() if k not in ("config", "permutations")}
    print(json.dumps(summary, indent=2, sort_keys=True), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
