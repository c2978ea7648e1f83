"""The experiment of :mod:`aslib.examples.permuted_input`: the model, the arms, one training run per arm through
:func:`~aslib.training.train.fit`, and the verdicts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from aslib.training.data import DataSplits
from aslib.core.checks import check_positive_int
from aslib.models.common import conv_bn
from aslib.nn.layers import LearnedShuffle
from aslib.study.arms import SHUFFLE_ARMS, arm_config
from aslib.study.verdicts import Verdict, chance_test, compare_means, holm, verdict
from aslib.training.config import TrainConfig
from aslib.training.state import TrainState
from aslib.training.train import fit
from aslib.utils.runtime import seed_everything

from aslib.examples.permuted_input.pixels import (
    PermutedPixels,
    load_permuted_splits,
    permute_pixels,
    recovery_measures,
)

__all__ = [
    "ARMS",
    "ArmResult",
    "PRETRAINED_ARMS",
    "PermutedInputConfig",
    "PixelShuffleNet",
    "arm_train_config",
    "build_model",
    "example_images",
    "run_arm",
    "run_experiment",
    "small_cnn",
    "unscrambling_verdicts",
]

#: The arms of the experiment, in the order of the results table.
ARMS: tuple[str, ...] = ("oracle", "scrambled", "l12", "relaxed", "l12_pretrained", "relaxed_pretrained")
#: Arms whose CNN is the oracle arm's trained CNN, frozen (only ``M`` is trained).
PRETRAINED_ARMS: tuple[str, ...] = ("l12_pretrained", "relaxed_pretrained")



# --- the model ---------------------------------------------------------------------------------------


def small_cnn(in_channels: int, num_classes: int, width: int = 16) -> nn.Sequential:
    """``(B, in_channels, H, W) -> (B, num_classes)``: three 3x3 conv-BN-ReLU blocks (``w, 2w, 4w``
    channels, a 2x2 max-pool after the second), global average pooling, a linear classifier."""
    check_positive_int(in_channels, "in_channels")
    check_positive_int(num_classes, "num_classes")
    check_positive_int(width, "width")
    return nn.Sequential(
        conv_bn(in_channels, width, 3),
        conv_bn(width, 2 * width, 3),
        nn.MaxPool2d(2),
        conv_bn(2 * width, 4 * width, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


class PixelShuffleNet(nn.Module):
    """An optional learned shuffle of the ``H W`` pixel positions, then ``cnn``.

    ``(B, C, H, W) -> (B, H W, C)`` (positions as dimension 1), ``y[:, k] = sum_p M[k, p] x[:, p]`` (or the
    gather ``x[:, perm]`` once hardened), back to ``(B, C, H, W)``, then ``cnn``. ``shuffle=None`` is the
    CNN alone.
    """

    def __init__(self, cnn: nn.Module, shuffle: LearnedShuffle | None = None) -> None:
        super().__init__()
        self.shuffle = shuffle
        self.cnn = cnn

    def unscramble(self, x: torch.Tensor) -> torch.Tensor:
        """The images after the shuffle (``x`` itself without one), shape ``(B, C, H, W)``."""
        if self.shuffle is None:
            return x
        if x.ndim != 4:
            raise ValueError(f"PixelShuffleNet expects images (B, C, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height * width != self.shuffle.channels:
            raise ValueError(f"the shuffle acts on {self.shuffle.channels} positions, the images have "
                             f"{height}x{width}")
        y = self.shuffle(x.flatten(2).transpose(1, 2))
        return y.transpose(1, 2).unflatten(2, (height, width)).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn(self.unscramble(x))


def build_model(arm: str, config: TrainConfig, splits: DataSplits, width: int,
                pretrained: nn.Module | None = None) -> PixelShuffleNet:
    """The model of ``arm`` (:data:`ARMS`), initialised from ``config.seed``: the CNN's weights are the
    same in every arm; the learned arms add a shuffle started at ``config.shuffle_init`` with
    ``config.shuffle_noise`` (``"shuffle"`` has no meaning over pixels and is refused). The
    :data:`PRETRAINED_ARMS` copy the weights of ``pretrained`` (a trained :func:`small_cnn`) into the CNN
    and freeze them (``requires_grad = False``; BatchNorm still normalises with batch statistics in
    training and is recalibrated after rounding)."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")
    if (arm in PRETRAINED_ARMS) != (pretrained is not None):
        raise ValueError(f"arm {arm!r} {'needs' if arm in PRETRAINED_ARMS else 'takes no'} pretrained CNN")
    torch.manual_seed(config.seed)
    cnn = small_cnn(splits.in_channels, splits.num_classes, width)
    if pretrained is not None:
        cnn.load_state_dict(pretrained.state_dict())
        cnn.requires_grad_(False)
    shuffle = None
    if arm != "oracle" and arm != "scrambled":
        if config.shuffle_init == "shuffle":
            raise ValueError("shuffle_init='shuffle' (ShuffleNet's channel shuffle) has no meaning over pixel "
                             "positions; use uniform, identity or random")
        generator = torch.Generator().manual_seed(config.seed + 1)
        shuffle = LearnedShuffle(splits.input_size ** 2, config.shuffle_init, noise=config.shuffle_noise,
                                 generator=generator, parameterisation=config.shuffle_parameterisation)
    return PixelShuffleNet(cnn, shuffle)


# --- one arm -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PermutedInputConfig:
    """The experiment: training settings (a :class:`TrainConfig`; ``lam`` is the penalised arms', the relaxed
    arms use 0; its ``shuffle_lr_scale``, ``penalty_start_epoch`` and ``shuffle_parameterisation`` act on the
    pixel shuffle as on a network's; each arm writes its run under ``<train.output_dir>/<arm>/seed=<seed>``),
    the latent permutation's seed and the CNN width."""

    train: TrainConfig = field(default_factory=TrainConfig)
    permutation_seed: int = 1234
    width: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.train, TrainConfig):
            raise ValueError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        check_positive_int(self.width, "width")
        if isinstance(self.permutation_seed, bool) or not isinstance(self.permutation_seed, int) \
                or self.permutation_seed < 0:
            raise ValueError(f"permutation_seed must be a non-negative integer, got {self.permutation_seed!r}")


@dataclass
class ArmResult:
    """One arm's outcome (accuracies are fractions of the test set, final epoch, nothing chosen on test).

    ``test_acc_hard`` is after rounding the shuffle and recalibrating BatchNorm (equal to ``test_acc`` for
    arms without a shuffle); ``recovery`` holds :func:`recovery_measures` of the rounded permutation
    (empty without a shuffle); ``matrix`` the soft ``M`` at the end of training; ``history`` one row per epoch
    (:data:`~aslib.training.state.HISTORY_COLUMNS`); ``model`` the final (hardened) model.
    """

    arm: str
    test_acc: float
    test_acc_hard: float
    test_acc_hard_no_recalibration: float
    final_penalty: float
    recovery: dict[str, float]
    permutation: list[int] | None
    matrix: torch.Tensor | None = field(repr=False)
    history: pd.DataFrame = field(repr=False)
    seconds: float
    model: nn.Module = field(repr=False)

    def row(self) -> dict[str, Any]:
        """The arm's line of the results table."""
        return {"arm": self.arm, "test_acc": self.test_acc, "test_acc_hard": self.test_acc_hard,
                "test_acc_hard_no_recalibration": self.test_acc_hard_no_recalibration,
                "final_penalty": self.final_penalty, **self.recovery, "seconds": self.seconds}


def arm_train_config(arm: str, config: PermutedInputConfig) -> TrainConfig:
    """The :class:`TrainConfig` that :func:`run_arm` passes to :func:`~aslib.training.train.fit` for ``arm``:
    ``config.train`` with the parameterisation and penalty weight of the arm of the same name in
    :data:`aslib.study.arms.SHUFFLE_ARMS` (``"l12"``: the projected step with ``lam``; ``"relaxed"``: ``lam = 0``),
    and the arm's own output folder."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")
    tc = config.train
    shuffle_arm = arm.removesuffix("_pretrained")
    if shuffle_arm in SHUFFLE_ARMS:
        tc = arm_config(tc, shuffle_arm)
    return dataclasses.replace(tc, output_dir=str(Path(config.train.output_dir) / arm / f"seed={tc.seed}"))


def run_arm(arm: str, config: PermutedInputConfig, pretrained: nn.Module | None = None) -> ArmResult:
    """Train one arm with :func:`~aslib.training.train.fit` and evaluate it (soft, then rounded + BatchNorm
    recalibrated), as the module says.

    ``pretrained``: the trained CNN (``run_arm("oracle", config).model.cnn``) the :data:`PRETRAINED_ARMS`
    start from and keep frozen; ``None`` for the other arms. Everything else is :func:`fit`'s: SGD with the
    shuffle matrix's learning rate ``lr * shuffle_lr_scale``, the penalty schedule, checkpoints, data order.
    """
    tc = arm_train_config(arm, config)
    seed_everything(tc.seed)
    splits, latent = load_permuted_splits(tc, None if arm == "oracle" else config.permutation_seed)
    model = build_model(arm, tc, splits, config.width, pretrained)
    soft: dict[str, torch.Tensor] = {}

    def keep_matrix(state: TrainState) -> None:  # M before rounding, as it ends training
        if state.epoch == tc.epochs and model.shuffle is not None and not model.shuffle.is_hardened:
            soft["matrix"] = model.shuffle.matrix().detach().cpu().clone()

    result = fit(model, splits, tc, [keep_matrix])
    recovery: dict[str, float] = {}
    permutation = None
    if result.permutations:
        assert latent is not None
        permutation = result.permutations[0]
        recovery = recovery_measures(torch.tensor(permutation), latent, splits.input_size, splits.input_size)
    matrix = soft.get("matrix")
    if matrix is None and permutation is not None:  # hardened during training (harden_after): M is its permutation
        matrix = model.shuffle.matrix().detach().cpu()
    return ArmResult(arm=arm, test_acc=result.test_acc_soft, test_acc_hard=result.test_acc_hard,
                     test_acc_hard_no_recalibration=result.test_acc_hard_no_recalibration,
                     final_penalty=result.final_penalty, recovery=recovery, permutation=permutation, matrix=matrix,
                     history=result.history, seconds=result.seconds, model=result.model)


def run_experiment(config: PermutedInputConfig, arms: tuple[str, ...] = ARMS) -> tuple[pd.DataFrame, dict[str, ArmResult]]:
    """Run ``arms`` in the order of :data:`ARMS`; return the results table (one row per arm,
    :meth:`ArmResult.row`) and the results. The :data:`PRETRAINED_ARMS` need ``"oracle"`` among ``arms``."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise ValueError(f"unknown or no arms {unknown!r}; valid: {', '.join(ARMS)}")
    if "oracle" not in arms and any(a in PRETRAINED_ARMS for a in arms):
        raise ValueError("the pretrained arms start from the oracle arm's CNN: include 'oracle' in arms")
    results: dict[str, ArmResult] = {}
    for arm in sorted(set(arms), key=ARMS.index):
        pretrained = results["oracle"].model.cnn if arm in PRETRAINED_ARMS else None
        results[arm] = run_arm(arm, config, pretrained)
    table = pd.DataFrame([r.row() for r in results.values()])
    return table, results


def example_images(config: PermutedInputConfig, permutation: torch.Tensor | list[int] | None,
                   num_images: int = 8) -> dict[str, Any]:
    """The first ``num_images`` test images as numpy arrays ``(N, C, H, W)``: ``"original"``, ``"scrambled"``
    (by the latent permutation) and, given a learned ``permutation``, ``"unscrambled"`` (``x_s[:, perm]``)."""
    check_positive_int(num_images, "num_images")
    splits, latent = load_permuted_splits(dataclasses.replace(config.train, augment=False), config.permutation_seed)
    assert latent is not None and isinstance(splits.test, PermutedPixels)
    count = min(num_images, len(splits.test))
    original = torch.stack([splits.test.base[i][0] for i in range(count)])
    scrambled = torch.stack([splits.test[i][0] for i in range(count)])
    rows = {"original": original.numpy(), "scrambled": scrambled.numpy()}
    if permutation is not None:
        rows["unscrambled"] = permute_pixels(scrambled, torch.as_tensor(permutation)).numpy()
    return rows


def unscrambling_verdicts(table: pd.DataFrame, arms: tuple[str, ...] | list[str], n: int) -> list[Verdict]:
    """The verdicts of notebook 07 from its results table (one row per arm and seed, :meth:`ArmResult.row` and
    ``seed``) over ``n`` pixel positions, all tests, Holm-corrected together (:func:`~aslib.study.verdicts.holm`).

    An arm with a learned layer recovers more than chance by :func:`~aslib.study.verdicts.chance_test` (a random
    permutation fixes 1 position on average: the exact Poisson test of the positions recovered over seeds); the
    questions comparing two arms by :func:`~aslib.study.verdicts.compare_means`, paired by seed (every arm runs
    the same seeds).
    """
    table = table.assign(rounding_change=table["test_acc_hard"] - table["test_acc"])

    def values(arm: str, column: str) -> Any:
        return table[table["arm"] == arm].set_index("seed")[column].sort_index()

    def compare(question: str, a: str, b: str, column: str, scale: float = 1.0, digits: int = 2,
                unit: str = "") -> Verdict:
        if a not in arms or b not in arms:
            return verdict(question, None, f"{a if a not in arms else b} not among the arms")
        first, second = values(a, column), values(b, column)
        paired = first.index.equals(second.index) and first.index.is_unique
        return compare_means(question, first.to_numpy(), second.to_numpy(), paired=paired, scale=scale,
                             digits=digits, unit=unit)

    checks = [chance_test(f"{arm} recovers more positions than chance", (n * values(arm, "exact_recovery")).round(),
                          of=n) for arm in arms if arm not in ("oracle", "scrambled")]
    return holm(checks + [
        compare("from scratch, the penalty recovers more positions than the relaxation", "l12", "relaxed",
                "exact_recovery", scale=n, digits=1, unit="positions"),
        compare("with the frozen trained CNN, the penalty recovers more positions than the relaxation",
                "l12_pretrained", "relaxed_pretrained", "exact_recovery", scale=n, digits=1, unit="positions"),
        compare("from scratch, rounding costs the penalised arm less accuracy than the relaxed arm", "l12", "relaxed",
                "rounding_change"),
        compare("with the frozen CNN, rounding costs the penalised arm less accuracy than the relaxed arm",
                "l12_pretrained", "relaxed_pretrained", "rounding_change"),
        compare("the CNN is more accurate on ordered than on scrambled images", "oracle", "scrambled", "test_acc"),
    ])
