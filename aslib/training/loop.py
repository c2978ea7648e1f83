"""The pieces every training loop of the package shares, whatever network it trains.

* :func:`penalised_step`: one optimizer step on ``cross_entropy(model(x), y) + lam * sum_l P(M_l)``, then the
  projection of every learned shuffle ``M_l`` back toward the doubly stochastic matrices (or, for
  mirror-parameterised shuffles, their own mirror step);
* :func:`warmup_lam` and :func:`penalty_weight`: the penalty weight ``lam_t``, ramped linearly from 0 over the
  warm-up steps; :func:`hard_phase_start`: the step at which the hard phase rounds every shuffle;
* :func:`training_batches`: an epoch's batches, from the tensor pipeline or a ``DataLoader``;
* :func:`make_optimizer`: SGD whose groups keep weight decay off the shuffle matrices;
* :func:`evaluate` and :func:`recalibrate_batchnorm`;
* :class:`SettledShuffles`: progressive hardening, freezing a learned shuffle once its rounding is settled;
* :func:`round_and_evaluate`: the finish of a run (evaluate soft, round every shuffle to its permutation,
  evaluate, recalibrate BatchNorm, evaluate again).

Used by :func:`aslib.training.train.fit`, :mod:`aslib.examples.permuted_input` and :mod:`aslib.training.speed`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from aslib.training.batches import PIPELINES, TensorBatches, TensorImages, eval_batches, tensor_images
from aslib.training.config import TrainConfig
from aslib.training.distributed import ProcessGroup, all_reduce_sum, average_buffers
from aslib.nn.shuffles import (
    harden_shuffles_,
    learned_shuffles,
    mirror_parameters,
    mirror_shuffles_,
    project_shuffles_,
    shuffle_parameters,
    shuffle_penalty,
    shuffle_stats,
    soft_mirror_shuffles,
)
from aslib.core.penalties import DEFAULT_PENALTY
from aslib.core.penalty import ROUNDING_THRESHOLD

__all__ = ["batch_sums", "evaluate", "hard_phase_start", "make_optimizer", "penalised_step", "penalty_weight",
           "recalibrate_batchnorm", "round_and_evaluate", "Rounded", "select_pipeline", "SettledShuffles",
           "training_batches", "warmup_lam"]

Autocast = Callable[[], Any]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD (``config``'s ``lr``, ``momentum``, ``nesterov``) with up to three parameter groups: decayed weights,
    undecayed norm/bias, undecayed shuffles (learning rate ``lr * shuffle_lr_scale``).

    Group names are in ``group["name"]``: ``"decay"`` (conv and linear weights, ``weight_decay``),
    ``"no_decay"`` (BatchNorm parameters and biases, i.e. every parameter with ``ndim <= 1``; weight decay
    0 unless ``config.decay_norm_and_bias``) and ``"shuffle"`` (the learned ``M``, weight decay 0: decay would pull
    them toward ``J/n``, against the penalty). Nesterov applies only with ``momentum > 0``. Mirror-parameterised
    shuffles are in no group: :func:`penalised_step` moves them.
    """
    shuffle_ids = {id(p) for p in shuffle_parameters(model)}
    mirror_ids = {id(p) for p in mirror_parameters(model)}
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "shuffle": []}
    for p in model.parameters():
        if not p.requires_grad or id(p) in mirror_ids:
            continue
        if id(p) in shuffle_ids:
            groups["shuffle"].append(p)
        elif p.ndim <= 1 and not config.decay_norm_and_bias:
            groups["no_decay"].append(p)
        else:
            groups["decay"].append(p)
    weight_decay = config.weight_decay
    decay = {"decay": weight_decay, "no_decay": weight_decay if config.decay_norm_and_bias else 0.0, "shuffle": 0.0}
    lr = {"decay": config.lr, "no_decay": config.lr, "shuffle": config.lr * config.shuffle_lr_scale}
    param_groups = [{"params": ps, "weight_decay": decay[name], "lr": lr[name], "name": name}
                    for name, ps in groups.items() if ps]
    return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum,
                           nesterov=config.nesterov and config.momentum > 0)


def warmup_lam(lam: float, step: float, warmup_steps: float) -> float:
    """``lam_t = lam * min(1, (step + 1) / warmup_steps)``, ``lam`` without warm-up and 0 for ``step < 0``
    (``step`` counts optimizer steps from 0, possibly shifted to start the penalty later)."""
    if step < 0:
        return 0.0
    return lam * min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else lam


def penalty_weight(config: TrainConfig, step: int, steps_per_epoch: int, lam: float | None = None) -> float:
    """``lam_t`` at optimizer step ``step`` (from 0): 0 before ``penalty_start_epoch``, then ramped linearly over
    ``lam_warmup_epochs`` to ``lam`` (default ``config.lam``; :func:`warmup_lam`)."""
    return warmup_lam(config.lam if lam is None else lam, step - config.penalty_start_epoch * steps_per_epoch,
                      config.lam_warmup_epochs * steps_per_epoch)


def hard_phase_start(config: TrainConfig, steps_per_epoch: int) -> int:
    """The optimizer step (from 0) at which the hard phase rounds every learned shuffle:
    ``round((1 - hard_phase) * epochs * steps_per_epoch)``; the total number of steps when there is none."""
    total = config.epochs * steps_per_epoch
    return round((1.0 - config.hard_phase) * total) if config.hard_phase > 0 else total


def penalised_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    lam: float,
    *,
    projection_sweeps: int = 1,
    forward: nn.Module | None = None,
    scaler: torch.amp.GradScaler | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    autocast: Autocast = nullcontext,
    mirror_lam: float = 0.0,
    mirror_step_size: float = 0.0,
    penalty: str = DEFAULT_PENALTY,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step on ``loss = cross_entropy(logits, y) + lam * sum_l P(M_l)``; returns ``(cross_entropy, logits)``.

    ``logits = forward(x)`` (``forward`` defaults to ``model``; pass the DistributedDataParallel wrapper there)
    of shape ``(B, classes)`` for ``x`` of shape ``(B, ...)`` and labels ``y`` of shape ``(B,)``. The penalty
    is left out for ``lam = 0`` (the relaxation). After the optimizer step (through ``scaler`` when given) and
    the ``scheduler`` step, every soft projected learned shuffle of ``model`` is projected with
    ``projection_sweeps`` column/row normalisations. Mirror-parameterised shuffles are not in the loss's
    penalty; after the backward pass each takes its mirror step (:meth:`LearnedShuffle.mirror_update_` with
    ``mirror_lam``, ``mirror_step_size`` and ``projection_sweeps``); a model with such shuffles needs
    ``mirror_step_size > 0``, or they would silently never move. ``P`` is the penalty named ``penalty``
    (:data:`aslib.core.penalties.PENALTIES`, default the l1-2), in the loss and in the mirror step alike.
    """
    mirror = soft_mirror_shuffles(model)
    if mirror_step_size <= 0 and mirror:
        raise ValueError("the model has mirror-parameterised learned shuffles: pass mirror_step_size > 0 "
                         "(and mirror_lam) to penalised_step, or they never move")
    with autocast():
        logits = (forward or model)(x)
    ce = F.cross_entropy(logits.float(), y)
    loss = ce + lam * shuffle_penalty(model, mirror=False, penalty=penalty) if lam > 0 else ce
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    mirror_shuffles_(mirror, mirror_lam, mirror_step_size, projection_sweeps, penalty=penalty)
    if scheduler is not None:
        scheduler.step()
    project_shuffles_(model, projection_sweeps)
    return ce, logits


def select_pipeline(pipeline: str, dataset: Dataset, device: torch.device, what: str) -> TensorImages | None:
    """The tensor form of ``dataset`` on ``device`` when ``pipeline`` asks for it and it exists, else ``None`` (the
    per-sample ``DataLoader``); ``pipeline="tensor"`` on a data set without one is an error naming it."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown data pipeline {pipeline!r}; valid: {', '.join(PIPELINES)}")
    images = tensor_images(dataset, device) if pipeline != "pil" else None
    if images is None and pipeline == "tensor":
        raise ValueError(f"data_pipeline='tensor', but the {what} ({type(dataset).__name__}) has no tensor form "
                         "(CIFAR, MNIST and the digits have one; ImageNet is decoded per image: use 'auto' or 'pil')")
    return images


def training_batches(dataset: Dataset, sampler: Sampler[int], batch_size: int, generator: torch.Generator,
                     config: TrainConfig, device: torch.device) -> DataLoader | TensorBatches:
    """An epoch's training batches in ``sampler``'s order: :class:`~aslib.training.batches.TensorBatches` on the
    data set's tensor form (augmentation drawn from ``generator``) or a ``DataLoader`` (worker seeds from it), as
    ``config.data_pipeline`` chooses. The last short batch is dropped: a batch of one example would break
    BatchNorm on 1x1 feature maps."""
    images = select_pipeline(config.data_pipeline, dataset, device, "training set")
    if images is not None:
        return TensorBatches(images, sampler, batch_size, generator=generator, drop_last=True,
                             channels_last=config.channels_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=config.num_workers,
                      generator=generator, pin_memory=device.type == "cuda")


def batch_sums(loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[summed loss, correct, count]`` of a batch (``loss`` the batch mean) in float64, on the device: summed
    over an epoch without a device synchronisation per step."""
    n = torch.tensor(len(y), dtype=torch.float64, device=y.device)
    return torch.stack([loss.detach().double() * n, (logits.argmax(1) == y).sum().double(), n])


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 256, device: torch.device | str = "cpu",
             autocast: Autocast = nullcontext, num_workers: int = 0,
             group: ProcessGroup | None = None, pipeline: str = "auto",
             channels_last: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) on ``dataset``: ``(loss, acc)``.

    Under data parallelism (``group``) each rank takes every ``world``-th example and the sums are all-reduced,
    so every example counts once. ``pipeline`` (one of :data:`~aslib.training.batches.PIPELINES`) chooses the
    batches: the data set's tensor form (:mod:`aslib.training.batches`; the same images, to the last bit) or a
    ``DataLoader``; ``channels_last`` lays the batches out channels-last.
    """
    group = group or ProcessGroup()
    device = torch.device(device)
    images = select_pipeline(pipeline, dataset, device, "evaluation set")
    if images is not None:
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = eval_batches(
            images, batch_size, rank=group.rank, world=group.world, channels_last=channels_last)
    else:
        if group.active:
            dataset = Subset(dataset, range(group.rank, len(dataset), group.world))
        batches = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                             pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    for x, y in batches:
        x = x.to(device, non_blocking=True, memory_format=memory_format) if x.ndim == 4 else x.to(device)
        y = y.to(device, non_blocking=True)
        with autocast():
            logits = model(x)
        totals += batch_sums(F.cross_entropy(logits.float(), y), logits, y)
    model.train(was_training)
    loss_sum, correct, count = all_reduce_sum(totals, group)
    if count == 0:
        raise ValueError("cannot evaluate on an empty data set")
    return loss_sum / count, correct / count


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]], num_batches: int, *,
                          device: torch.device | str = "cpu", autocast: Autocast = nullcontext) -> int:
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


@dataclass(frozen=True)
class Rounded:
    """What :func:`round_and_evaluate` measured (losses are mean cross-entropies, accuracies fractions).

    ``soft``: learned shuffles still doubly stochastic; ``raw``: after rounding, before recalibration;
    ``hard``: after rounding and BatchNorm recalibration (all three equal without learned shuffles).
    ``stats``: :func:`~aslib.nn.shuffles.shuffle_stats` before rounding; ``permutations``: one per learned shuffle.
    """

    soft: tuple[float, float]
    raw: tuple[float, float]
    hard: tuple[float, float]
    stats: dict[str, float]
    permutations: list[torch.Tensor]


def round_and_evaluate(
    model: nn.Module,
    test: Callable[[], tuple[float, float]],
    recalibration_batches: Iterable[tuple[torch.Tensor, Any]],
    num_batches: int,
    *,
    device: torch.device | str = "cpu",
    autocast: Autocast = nullcontext,
    group: ProcessGroup | None = None,
) -> Rounded:
    """The finish of a run: ``test()`` with the soft shuffles, round every learned shuffle to its Hungarian
    permutation (:func:`~aslib.nn.shuffles.harden_shuffles_`), ``test()`` again, re-estimate BatchNorm from
    ``num_batches`` of ``recalibration_batches`` (averaged over ranks of ``group``) and ``test()`` once more.
    A model without soft learned shuffles (none, or all hardened during training) is tested once: rounding
    changes nothing there; ``num_batches = 0`` skips the recalibration."""
    stats = shuffle_stats(model)
    soft = test()
    rounds = any(not layer.is_hardened for layer in learned_shuffles(model))
    permutations = harden_shuffles_(model)
    raw = test() if rounds else soft
    hard = raw
    if rounds and num_batches > 0:
        recalibrate_batchnorm(model, recalibration_batches, num_batches, device=device, autocast=autocast)
        average_buffers(model, group or ProcessGroup())
        hard = test()
    return Rounded(soft=soft, raw=raw, hard=hard, stats=stats, permutations=permutations)


class SettledShuffles:
    """Progressive hardening: freeze each learned shuffle to its permutation once its rounding is settled.

    A soft learned shuffle is *settled* at a check when ``P(M) < ROUNDING_THRESHOLD`` (the row argmax of ``M`` is
    then provably a permutation, and the error bound of the penalty holds) and its Hungarian permutation equals
    the one of the previous check. After ``patience`` consecutive settled checks it is hardened
    (:meth:`~aslib.nn.layers.LearnedShuffle.harden`): for the rest of training it is the gather ``x[:, perm]``,
    ShuffleNet's cost, and no longer learned. ``patience = 0`` never hardens.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.counts: dict[int, int] = {}
        self.last: dict[int, list[int]] = {}
        self.hardened_at: dict[int, int] = {}

    @torch.no_grad()
    def update_(self, model: nn.Module, check: int) -> list[int]:
        """One check (e.g. at the end of epoch ``check``); returns the indices (in
        :func:`~aslib.nn.shuffles.learned_shuffles` order) of the shuffles hardened now."""
        if self.patience <= 0:
            return []
        now = []
        for i, layer in enumerate(learned_shuffles(model)):
            if layer.is_hardened:
                continue
            perm = layer.permutation().tolist() if float(layer.penalty()) < ROUNDING_THRESHOLD else None
            same = perm is not None and perm == self.last.get(i)
            self.counts[i] = self.counts.get(i, 0) + 1 if same else int(perm is not None)
            self.last[i] = perm if perm is not None else []
            if self.counts[i] >= self.patience:
                layer.harden()
                self.hardened_at[i] = check
                now.append(i)
        return now

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume the counting exactly."""
        return {"counts": dict(self.counts), "last": dict(self.last), "hardened_at": dict(self.hardened_at)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = {int(k): v for k, v in state["counts"].items()}
        self.last = {int(k): v for k, v in state["last"].items()}
        self.hardened_at = {int(k): v for k, v in state["hardened_at"].items()}
