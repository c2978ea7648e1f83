"""Undoing an unknown input permutation: a learned shuffle over pixel positions in front of a small CNN.

Every image's pixels are permuted by one fixed, seeded "latent" permutation ``sigma`` of the ``H W``
positions: the scrambled image is ``x_s[p] = x[sigma[p]]`` (positions flattened row-major). A
:class:`~aslib.nn.layers.LearnedShuffle` over the ``H W`` positions (the layer mixes dimension 1, so the
image is viewed as ``(B, H W, C)``) computes ``y[k] = sum_p M[k, p] x_s[p]``; hardened, ``y[k] =
x_s[perm[k]] = x[sigma[perm[k]]]``. It undoes the scrambling exactly when ``sigma[perm[k]] = k`` for
every ``k``, i.e. ``perm = sigma^{-1}``.

The arms share the CNN, the seeds and the budget (:data:`ARMS`): ``"oracle"`` (unscrambled images,
no learned layer), ``"scrambled"`` (scrambled images, no learned layer), ``"l12"`` (scrambled
images, learned layer, l1-2 penalty, then rounding and BatchNorm recalibration) and ``"relaxed"`` (the
same with ``lam = 0``, the convex relaxation), named as in :data:`aslib.study.arms.SHUFFLE_ARMS`.
``"l12_pretrained"`` and ``"relaxed_pretrained"``
change the question: their CNN is the oracle arm's trained CNN, frozen, and only ``M`` is trained, i.e.
a known model whose input arrives in an unknown order (as in the paper's two-layer example, where the
teacher is known and only the permutation is sought).

Recovery is measured on the composed map ``c = sigma[perm]`` (output position ``k`` shows original pixel
``c[k]``): :func:`exact_recovery` is the fraction of positions with ``c[k] = k``; because the CNN is
translation-equivariant (and nearly so under flips), a ``c`` that is a shift or flip of the identity can
serve as well, so :func:`neighbourhood_recovery` counts the fraction of 4-neighbour pairs of output
positions whose original pixels are 4-neighbours too (1 for identity, flips, transposes; close to 1 for
cyclic shifts; about ``4 / (H W)`` for a random map), and :func:`symmetric_recovery` is the exact
recovery up to the best of the 8 symmetries of the square grid.

Each arm is one call of :func:`aslib.training.train.fit` (the training loop of every network here), so it has
every parameterisation of the learned shuffle, the shuffle's own learning-rate scale, the penalty schedule,
checkpoints and data parallelism; :class:`~aslib.training.config.TrainConfig`'s ShuffleNet fields are ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from aslib.training.data import DataSplits, load_dataset
from aslib.core.checks import check_positive_int
from aslib.models.common import conv_bn
from aslib.nn.layers import LearnedShuffle
from aslib.study.verdicts import Verdict, compare_means, verdict
from aslib.training.config import TrainConfig
from aslib.training.state import TrainState
from aslib.training.train import fit
from aslib.utils.runtime import seed_everything

__all__ = [
    "ARMS",
    "ArmResult",
    "PRETRAINED_ARMS",
    "PermutedInputConfig",
    "PermutedPixels",
    "PixelShuffleNet",
    "build_model",
    "example_images",
    "exact_recovery",
    "inverse_permutation",
    "load_permuted_splits",
    "neighbourhood_recovery",
    "permute_pixels",
    "random_pixel_permutation",
    "recovery_measures",
    "unscrambling_verdicts",
    "arm_train_config",
    "run_arm",
    "run_experiment",
    "small_cnn",
    "symmetric_recovery",
]

#: The arms of the experiment, in the order of the results table.
ARMS: tuple[str, ...] = ("oracle", "scrambled", "l12", "relaxed", "l12_pretrained", "relaxed_pretrained")
#: Arms whose CNN is the oracle arm's trained CNN, frozen (only ``M`` is trained).
PRETRAINED_ARMS: tuple[str, ...] = ("l12_pretrained", "relaxed_pretrained")


# --- the latent permutation --------------------------------------------------------------------------


def random_pixel_permutation(height: int, width: int, seed: int) -> torch.Tensor:
    """A uniformly random permutation of the ``height * width`` positions, a function of ``seed`` only."""
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    return torch.randperm(height * width, generator=torch.Generator().manual_seed(seed))


def _check_perm(perm: torch.Tensor, n: int | None = None) -> None:
    if not isinstance(perm, torch.Tensor) or perm.ndim != 1:
        raise ValueError(f"a permutation must be a 1-d tensor, got {getattr(perm, 'shape', type(perm).__name__)}")
    if n is not None and perm.numel() != n:
        raise ValueError(f"permutation of {perm.numel()} positions, expected {n}")
    if not torch.equal(torch.sort(perm.long()).values, torch.arange(perm.numel(), device=perm.device)):
        raise ValueError("not a permutation of 0..n-1")


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """``inv`` with ``inv[perm[k]] = k`` (so ``perm[inv] = inv[perm] = arange(n)``)."""
    _check_perm(perm)
    return torch.argsort(perm)


def permute_pixels(images: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``out[..., p] = images[..., sigma[p]]`` on the flattened positions of images of shape ``(..., H, W)``."""
    if not isinstance(images, torch.Tensor) or images.ndim < 2:
        raise ValueError(f"images must have shape (..., H, W), got {getattr(images, 'shape', None)}")
    height, width = images.shape[-2:]
    _check_perm(perm, height * width)
    flat = images.flatten(-2).index_select(-1, perm.to(images.device))
    return flat.unflatten(-1, (height, width))


class PermutedPixels(Dataset):
    """``(permute_pixels(image, perm), label)`` for each ``(image, label)`` of ``base`` (after its transform)."""

    def __init__(self, base: Dataset, perm: torch.Tensor) -> None:
        _check_perm(perm)
        self.base = base
        self.perm = perm.long()

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        image, label = self.base[i]
        return permute_pixels(image, self.perm), label


def load_permuted_splits(config: TrainConfig, permutation_seed: int | None) -> tuple[DataSplits, torch.Tensor | None]:
    """``load_dataset`` with ``config``'s data fields and the latent permutation of ``permutation_seed``
    (:func:`random_pixel_permutation`); every split is wrapped in :class:`PermutedPixels` (acting after the
    augmentation). ``permutation_seed=None``: the plain splits and ``None``."""
    splits = load_dataset(config.dataset, config.data_root, val_fraction=config.val_fraction,
                          split_seed=config.split_seed, augment=config.augment,
                          max_train_samples=config.max_train_samples, verify_checksums=config.verify_checksums)
    if permutation_seed is None:
        return splits, None
    latent = random_pixel_permutation(splits.input_size, splits.input_size, permutation_seed)
    wrap = lambda d: PermutedPixels(d, latent) if d is not None else None  # noqa: E731
    return dataclasses.replace(splits, train=wrap(splits.train), val=wrap(splits.val), test=wrap(splits.test)), latent


# --- recovery measures -------------------------------------------------------------------------------


def _composed(perm: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """``c = latent[perm]``: output position ``k`` of the learned layer shows original pixel ``c[k]``."""
    _check_perm(latent)
    _check_perm(perm, latent.numel())
    return latent.long()[perm.long().to(latent.device)]


def exact_recovery(perm: torch.Tensor, latent: torch.Tensor) -> float:
    """Fraction of positions ``k`` with ``latent[perm[k]] = k``: 1 iff ``perm`` is the inverse of ``latent``."""
    c = _composed(perm, latent)
    return float((c == torch.arange(c.numel(), device=c.device)).float().mean())


def _grid(height: int, width: int, n: int) -> None:
    if height * width != n:
        raise ValueError(f"a {height}x{width} grid has {height * width} positions, the permutation has {n}")


def neighbourhood_recovery(perm: torch.Tensor, latent: torch.Tensor, height: int, width: int) -> float:
    """Fraction of 4-neighbour pairs ``(k, k')`` of output positions whose original pixels ``c[k], c[k']``
    are 4-neighbours too (``c = latent[perm]``): 1 for the identity and for any flip or transpose."""
    c = _composed(perm, latent)
    _grid(height, width, c.numel())
    rows, cols = c.reshape(height, width) // width, c.reshape(height, width) % width
    pairs = [(slice(None), slice(None, -1), slice(None), slice(1, None)),  # horizontal neighbours
             (slice(None, -1), slice(None), slice(1, None), slice(None))]  # vertical neighbours
    kept = total = 0
    for r0, c0, r1, c1 in pairs:
        distance = (rows[r0, c0] - rows[r1, c1]).abs() + (cols[r0, c0] - cols[r1, c1]).abs()
        kept += int((distance == 1).sum())
        total += distance.numel()
    return kept / total if total else 1.0


def symmetric_recovery(perm: torch.Tensor, latent: torch.Tensor, height: int, width: int) -> float:
    """:func:`exact_recovery` up to a symmetry of the grid: the best, over the identity, the flips, the
    rotations (and, on a square grid, the transposes), of the fraction of positions with ``c[k] = g[k]``."""
    c = _composed(perm, latent)
    _grid(height, width, c.numel())
    ids = torch.arange(c.numel(), device=c.device).reshape(height, width)
    maps = [ids, ids.flip(0), ids.flip(1), ids.flip(0, 1)]
    if height == width:
        maps += [m.T for m in maps]
    return max(float((c == m.flatten()).float().mean()) for m in maps)


def recovery_measures(perm: torch.Tensor, latent: torch.Tensor, height: int, width: int) -> dict[str, float]:
    """The three measures above as a dict: ``exact_recovery``, ``symmetric_recovery``, ``neighbourhood_recovery``."""
    return {
        "exact_recovery": exact_recovery(perm, latent),
        "symmetric_recovery": symmetric_recovery(perm, latent, height, width),
        "neighbourhood_recovery": neighbourhood_recovery(perm, latent, height, width),
    }


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
    ``config.train`` with ``lam = 0`` for the relaxed arms and the arm's own output folder."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")
    tc = config.train
    return dataclasses.replace(tc, lam=0.0 if arm.startswith("relaxed") else tc.lam,
                               output_dir=str(Path(tc.output_dir) / arm / f"seed={tc.seed}"))


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
    ``seed``) over ``n`` pixel positions.

    An arm with a learned layer recovers more than chance when its mean number of exactly recovered positions
    exceeds ``1 + 3 / sqrt(k)`` over ``k`` seeds (a random permutation fixes 1 position on average, standard
    deviation 1); the paired questions compare arms by :func:`~aslib.study.verdicts.compare_means`.
    """
    seeds = table["seed"].nunique()
    table = table.assign(rounding_change=table["test_acc_hard"] - table["test_acc"])

    def values(arm: str, column: str) -> Any:
        return table.loc[table["arm"] == arm, column].to_numpy()

    def compare(question: str, a: str, b: str, column: str, scale: float = 1.0, digits: int = 2,
                unit: str = "") -> Verdict:
        if a not in arms or b not in arms:
            return verdict(question, None, f"{a if a not in arms else b} not among the arms")
        return compare_means(question, values(a, column), values(b, column), scale=scale, digits=digits, unit=unit)

    checks = []
    for arm in (a for a in arms if a not in ("oracle", "scrambled")):
        positions = n * values(arm, "exact_recovery")
        spread = positions.std(ddof=1) if seeds > 1 else 0
        checks.append(verdict(f"{arm} recovers more positions than chance", positions.mean() > 1 + 3 / seeds ** 0.5,
                              f"{positions.mean():.1f} ± {spread:.1f} of {n}, chance 1, {seeds} seeds"))
    return checks + [
        compare("from scratch, the penalty recovers more positions than the relaxation", "l12", "relaxed",
                "exact_recovery", scale=n, digits=1, unit="positions"),
        compare("with the frozen trained CNN, the penalty recovers more positions than the relaxation",
                "l12_pretrained", "relaxed_pretrained", "exact_recovery", scale=n, digits=1, unit="positions"),
        compare("from scratch, rounding costs the penalised arm less accuracy than the relaxed arm", "l12", "relaxed",
                "rounding_change"),
        compare("with the frozen CNN, rounding costs the penalised arm less accuracy than the relaxed arm",
                "l12_pretrained", "relaxed_pretrained", "rounding_change"),
        compare("the CNN is more accurate on ordered than on scrambled images", "oracle", "scrambled", "test_acc"),
    ]
