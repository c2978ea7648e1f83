"""What a training run leaves and resumes from: the state callbacks see, the result, the file names, checkpoints.

:func:`aslib.training.train.fit` writes, after every epoch, ``history.csv`` (:data:`HISTORY_COLUMNS`),
``layer_penalties.csv`` and :data:`CHECKPOINT_NAME` (model, optimizer, scheduler, RNG states of every rank), and at
the end ``result.json`` (:meth:`TrainResult.summary`) and ``model.pt``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from aslib.training.config import TrainConfig, config_changes
from aslib.training.distributed import ProcessGroup
from aslib.utils.runtime import code_fingerprint

__all__ = [
    "CHECKPOINT_NAME",
    "HISTORY_COLUMNS",
    "LAYER_PENALTIES_NAME",
    "Callback",
    "TrainResult",
    "TrainState",
    "load_checkpoint",
    "rng_state",
    "run_permutations",
    "set_rng_state",
]

#: Columns of the per-epoch history (``history.csv``).
HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch", "lr", "lam", "train_loss", "train_acc", "val_loss", "val_acc",
    "penalty", "max_row_deficit", "rounding_fraction", "seconds",
)

CHECKPOINT_NAME = "checkpoint.pt"
#: Per-epoch penalty of each learned shuffle (``<name>.csv``: ``epoch``, ``layer_0``, ``layer_1``, ...).
LAYER_PENALTIES_NAME = "layer_penalties"


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
        fixed_permutations: the permutations of the fixed :class:`~aslib.nn.layers.FixedPermutation` layers (a
            random arm's, or those given by ``TrainConfig.shuffle_permutations_from``), in module order.
        hardened_epochs: per learned shuffle, the epoch after which progressive hardening or the hard phase froze
            it (``harden_after``, ``hard_phase``; 0: rounded at the end).
        unsettled_shuffles, uniform_shuffles: how many learned shuffles were rounded with ``P(M)`` above the
            rounding threshold, and how many of them at or near ``J/n``
            (:func:`~aslib.nn.shuffles.shuffle_health`); ``unsettled_layers`` names the former. A run with
            any warns (:class:`~aslib.nn.shuffles.RoundingWarning`): its rounded accuracy is not the soft one's.
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
    fixed_permutations: list[list[int]]
    hardened_epochs: list[int]
    unsettled_shuffles: int
    uniform_shuffles: int
    unsettled_layers: list[str]
    num_parameters: int
    num_parameters_inference: int
    seconds: float
    model: nn.Module = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """Plain values for ``result.json``: every field but ``history`` and ``model``, and the
        :func:`~aslib.utils.runtime.code_fingerprint` of the code that computed them (a run whose fingerprint differs
        from the current code's is stale)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("history", "model")}
        out["config"] = self.config.to_dict()
        out["code_fingerprint"] = code_fingerprint()
        return out


def rng_state(loader_generator: torch.Generator) -> dict[str, Any]:
    """Python's, numpy's, torch's (and CUDA's) global generator states and the loader's, for a checkpoint."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "loader": loader_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    loader_generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path, config: TrainConfig, group: ProcessGroup) -> dict[str, Any]:
    """The checkpoint at ``path``, refused when it was written for another configuration or process count."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    differ = config_changes(ckpt["config"], config)
    if differ:
        raise ValueError(f"cannot resume {path}: the configuration changed ({', '.join(differ)})")
    if len(ckpt["rng"]) != group.world:
        raise ValueError(f"cannot resume {path}: written by {len(ckpt['rng'])} processes, now {group.world}")
    return ckpt


def run_permutations(folder: str | os.PathLike[str]) -> list[list[int]]:
    """The rounded permutations (``permutations``) of the finished run in ``folder``, from its ``result.json``.
    Raises ``FileNotFoundError`` naming the file when the run has not finished."""
    path = Path(folder) / "result.json"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: the run whose permutations are to be used has not finished")
    return [list(map(int, p)) for p in json.loads(path.read_text())["permutations"]]
