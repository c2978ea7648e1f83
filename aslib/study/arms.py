"""The experiment arms the paper compares, and the named training runs of a comparison.

An *arm* (:data:`SHUFFLE_ARMS`) is the kind of channel shuffle, how a learned one is parameterised, and
whether the penalty applies. A :class:`Run` is a named :class:`~aslib.training.config.TrainConfig` whose
``output_dir`` is ``<root>/<name>``; :func:`grid` names every combination of arms and settings so that a
run keeps its folder however the comparison around it changes, and :func:`classification_runs` builds the
runs of notebooks 04 and 05 from their parameters.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aslib.training.config import TrainConfig
from aslib.training.data import DATASET_INFO
from aslib.nn.layers import SHUFFLE_KINDS
from aslib.nn.parameterisations import Parameterisation, get_parameterisation, parameterisation_fields
from aslib.nn.shuffles import learned_shuffles
from aslib.models import from_config

__all__ = [
    "Arm",
    "LEARNED_ONLY",
    "Run",
    "SHUFFLE_ARMS",
    "arm_config",
    "classification_runs",
    "fixed_shuffle_permutations",
    "grid",
    "notebook_runs",
]

#: TrainConfig fields that only matter for a learned shuffle.
LEARNED_ONLY = ("lam", "shuffle_init", "shuffle_noise", "projection_sweeps", "lam_warmup_epochs", "mirror_lam",
                "mirror_step", "penalty_start_epoch", "shuffle_lr_scale", "shuffle_penalty", "shuffle_tau_end", "hard_phase")
#: TrainConfig fields that only matter where the penalty enters the loss. The fields of each parameterisation's
#: update are its ``config_fields`` (:mod:`aslib.nn.parameterisations`).
PENALTY_ONLY = ("lam",)


@dataclass(frozen=True)
class Arm:
    """What one arm sets in a :class:`~aslib.training.train.TrainConfig`.

    Attributes:
        shuffle: the shuffle kind (``TrainConfig.shuffle``).
        uses_lam: whether the penalty weight applies (otherwise ``lam = 0``).
        parameterisation: ``TrainConfig.shuffle_parameterisation`` of a learned shuffle.
        hard_phase: ``TrainConfig.hard_phase`` of a learned shuffle; None keeps the base configuration's (0 for the
            paper's recipes, whose claims are about rounding at the end).
        source: for a fixed arm, the learned arm whose rounded permutations it retrains from scratch as fixed
            shuffles (``TrainConfig.shuffle_permutations_from``: the same seed's run of ``source``); its ``lam``
            names the source run's penalty weight (no penalty acts without a learned shuffle).
    """

    shuffle: str
    uses_lam: bool = False
    parameterisation: str = "projected"
    hard_phase: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.shuffle not in SHUFFLE_KINDS:
            raise ValueError(f"unknown shuffle {self.shuffle!r}; valid: {', '.join(SHUFFLE_KINDS)}")
        get_parameterisation(self.parameterisation)  # validation
        if self.source and self.shuffle != "fixed":
            raise ValueError(f"an arm with a source retrains fixed shuffles, got shuffle {self.shuffle!r}")

    @property
    def learned(self) -> bool:
        """Whether the arm trains a matrix (and rounds it at the end)."""
        return self.shuffle == "learned"

    @property
    def scheme(self) -> Parameterisation:
        """The parameterisation object named by :attr:`parameterisation`."""
        return get_parameterisation(self.parameterisation)

    def irrelevant(self) -> tuple[str, ...]:
        """The TrainConfig fields that cannot change this arm's result (a sweep axis over them collapses):
        every learned-only field without a learned shuffle; else ``lam`` without the penalty, and the fields
        of other parameterisations' updates that this one's ``config_fields`` lack."""
        if not self.learned:
            return tuple(f for f in LEARNED_ONLY if not (self.source and f == "lam"))
        fields = () if self.uses_lam else PENALTY_ONLY
        own = self.scheme.config_fields
        return fields + tuple(f for f in parameterisation_fields() if f not in own)


#: The arms by name. "relaxed" is the convex relaxation: a learned doubly stochastic matrix trained without
#: the penalty, then rounded at the end (as "l12" and "sinkhorn": the paper's recipes); "sinkhorn" the same with
#: the matrix parameterised by Sinkhorn's normalisation of logits (the usual baseline) instead of projected; "l12_mirror" the penalty method with the matrix moved
#: by entropic mirror descent (its penalty weight is ``mirror_lam``, not ``lam``; see
#: :meth:`aslib.nn.layers.LearnedShuffle.mirror_update_`) with the base configuration's hard phase;
#: "l12_retrained" the control that trains a network from
#: scratch with the rounded permutations of the same seed's l12 run (at each lam, started at the sweep's first
#: ``shuffle_init``) as fixed shuffles: does the permutation itself beat ShuffleNet's?
SHUFFLE_ARMS: dict[str, Arm] = {
    "fixed": Arm("fixed"),
    "none": Arm("none"),
    "random": Arm("random"),
    "relaxed": Arm("learned", hard_phase=0.0),
    "l12": Arm("learned", uses_lam=True, hard_phase=0.0),
    "sinkhorn": Arm("learned", parameterisation="sinkhorn", hard_phase=0.0),
    "l12_mirror": Arm("learned", parameterisation="mirror"),
    "l12_retrained": Arm("fixed", source="l12"),
}

@dataclass(frozen=True)
class Run:
    """One training run of a sweep: ``config.output_dir`` is its folder; ``distributed`` runs use torchrun."""

    name: str
    config: TrainConfig
    distributed: bool = False
    arm: str = ""

    @property
    def folder(self) -> Path:
        return Path(self.config.output_dir)


def arm_config(base: TrainConfig, arm: str, lam: float | None = None, *, permutations_from: str = "") -> TrainConfig:
    """``base`` with the shuffle kind, parameterisation and penalty weight of ``arm`` (lam 0 unless the arm
    uses it or names its source's); an arm with a ``source`` needs ``permutations_from``, the source run's
    folder (``TrainConfig.shuffle_permutations_from``)."""
    if arm not in SHUFFLE_ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid arms: {', '.join(SHUFFLE_ARMS)}")
    spec = SHUFFLE_ARMS[arm]
    if bool(spec.source) != bool(permutations_from):
        raise ValueError(f"permutations_from is needed by an arm with a source and by no other (arm {arm!r})")
    keeps_lam = spec.uses_lam or bool(spec.source)
    return dataclasses.replace(base, shuffle=spec.shuffle, shuffle_parameterisation=spec.parameterisation,
                               lam=(base.lam if lam is None else lam) if keeps_lam else 0.0,
                               hard_phase=base.hard_phase if spec.hard_phase is None else spec.hard_phase,
                               shuffle_permutations_from=permutations_from)


def grid(
    base: TrainConfig,
    root: str | os.PathLike[str],
    *,
    arms: Sequence[str],
    distributed: bool = False,
    **axes: Sequence[Any],
) -> list[Run]:
    """Every combination of ``arms`` and the ``axes`` (TrainConfig field -> values), as named runs.

    The name lists each axis value and the arm, e.g. ``model=shufflenet_v2_1.0/arm=l12/lam=0.001/seed=0``, so that
    a run keeps its folder (and is skipped or resumed) however the sweep around it changes. Axes that
    cannot change an arm's result (:meth:`Arm.irrelevant`: ``lam`` without the penalty, the axes of
    :data:`LEARNED_ONLY` without a learned shuffle, ``projection_sweeps`` for Sinkhorn) collapse for it. An arm with
    a ``source`` (:class:`Arm`) keeps ``lam`` and reads its permutations from the source arm's run of the same
    settings (for collapsed axes, their first value); ``source`` must be among ``arms``.
    """
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(axes) - names)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {', '.join(unknown)}")
    for arm in arms:
        if arm not in SHUFFLE_ARMS:
            raise ValueError(f"unknown arm {arm!r}; valid arms: {', '.join(SHUFFLE_ARMS)}")
        source = SHUFFLE_ARMS[arm].source
        if source and source not in arms:
            raise ValueError(f"arm {arm!r} retrains the permutations of arm {source!r}: run that arm too")
    runs: dict[str, Run] = {}
    keys = list(axes)
    for arm in arms:
        spec = SHUFFLE_ARMS[arm]
        for values in itertools.product(*(axes[k] for k in keys)):
            name, chosen = _run_name(arm, keys, dict(zip(keys, values)))
            source = ""
            if spec.source:  # the same settings' run of the source arm, as a path from this run's folder
                source = os.path.relpath(_run_name(spec.source, keys, dict(zip(keys, values)))[0], name)
            config = arm_config(dataclasses.replace(base, **chosen), arm, permutations_from=source)
            config = dataclasses.replace(config, output_dir=str(Path(root) / name))
            runs.setdefault(name, Run(name, config, distributed, arm))  # irrelevant axes collapse
    return list(runs.values())


def _run_name(arm: str, keys: Sequence[str], chosen: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The name of ``arm``'s run at the axis values ``chosen`` (those that cannot change it dropped), and them."""
    for k in SHUFFLE_ARMS[arm].irrelevant():
        chosen.pop(k, None)
    head = [f"{k}={chosen[k]}" for k in keys if k in chosen and k not in ("lam", "seed")]
    tail = [f"{k}={chosen[k]}" for k in ("lam", "seed") if k in chosen]
    return "/".join([*head, f"arm={arm}", *tail]), chosen


def classification_runs(
    *,
    root: str | os.PathLike[str],
    datasets: Sequence[str],
    models: Sequence[str],
    arms: Sequence[str],
    seeds: Sequence[int],
    lams: Sequence[float],
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 5e-4,
    stages_repeats: Sequence[int] = (4, 8, 4),
    model_kwargs: Mapping[str, Any] | None = None,
    shuffle_inits: Sequence[str] = ("uniform",),
    projection_sweeps: Sequence[int] = (1,),
    max_train_samples: int | None = None,
    data_root: str = "data",
    recalibration_batches: int = 50,
    num_workers: int = 0,
    verify_checksums: bool = True,
) -> list[Run]:
    """The runs of notebooks 04 (CIFAR, digits) and 05 (ImageNet): data sets x models x arms x ablations x seeds.

    The keyword names are the notebooks' parameter names, so the runner can print a notebook's plan
    before executing it (:func:`notebook_runs`). ImageNet runs are distributed (torchrun over every GPU).
    ``num_workers`` (data loader processes) does not enter a run's name or decide whether it is done.
    ``verify_checksums=False`` reads CIFAR files that are not the official ones (e.g. rebuilt copies).
    """
    base = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                       stages_repeats=tuple(stages_repeats), model_kwargs=dict(model_kwargs or {}),
                       max_train_samples=max_train_samples, data_root=str(data_root),
                       recalibration_batches=recalibration_batches, num_workers=num_workers,
                       verify_checksums=verify_checksums)
    return [run for dataset in datasets
            for run in grid(base, root, arms=arms, distributed=dataset == "imagenet", dataset=[dataset],
                            model=list(models), shuffle_init=list(shuffle_inits),
                            projection_sweeps=list(projection_sweeps), lam=list(lams), seed=list(seeds))]


#: Notebooks that train, and the function that turns their parameters into runs.
NOTEBOOK_RUNS = {"04_cifar": classification_runs, "05_imagenet": classification_runs}


def notebook_runs(stem: str, parameters: Mapping[str, Any]) -> list[Run] | None:
    """The runs a notebook will execute with ``parameters`` (None for a notebook that trains nothing).

    ``parameters`` is the notebook's full parameter set (with absolute ``output_dir`` and ``data_root``,
    as the runner passes them); the runs live in ``<output_dir>/<stem>/``, where the notebook puts them.
    """
    builder = NOTEBOOK_RUNS.get(stem)
    if builder is None:
        return None
    names = set(inspect.signature(builder).parameters) - {"root"}
    return builder(root=Path(parameters["output_dir"]) / stem, **{k: v for k, v in parameters.items() if k in names})


def fixed_shuffle_permutations(config: TrainConfig) -> list[list[int]]:
    """ShuffleNet's fixed shuffles of the architecture ``config`` trains, as the permutations of its learned
    shuffles (same order as ``TrainResult.permutations``), for comparison with what was learned."""
    info = DATASET_INFO[config.dataset]
    model = from_config(config, num_classes=info.num_classes, in_channels=info.in_channels, stem=info.stem,
                      shuffle="learned", shuffle_init="shuffle", shuffle_noise=0.0)
    return [layer.permutation().tolist() for layer in learned_shuffles(model)]
