"""Undoing an unknown input permutation: a learned shuffle over pixel positions in front of a small CNN.

Every image's pixels are permuted by one fixed, seeded "latent" permutation ``sigma`` of the ``H W``
positions: the scrambled image is ``x_s[p] = x[sigma[p]]`` (positions flattened row-major). A
:class:`~aslib.nn.layers.LearnedShuffle` over the ``H W`` positions (the layer mixes dimension 1, so the
image is viewed as ``(B, H W, C)``) computes ``y[k] = sum_p M[k, p] x_s[p]``; hardened, ``y[k] =
x_s[perm[k]] = x[sigma[perm[k]]]``. It undoes the scrambling exactly when ``sigma[perm[k]] = k`` for
every ``k``, i.e. ``perm = sigma^{-1}``.

The arms share the CNN, the seeds and the budget (:data:`ARMS`): ``"oracle"`` (unscrambled images,
no learned layer), ``"scrambled"`` (scrambled images, no learned layer), ``"learned"`` (scrambled
images, learned layer, l1-2 penalty, then rounding and BatchNorm recalibration) and ``"relaxed"`` (the
same with ``lam = 0``, the convex relaxation). ``"learned_pretrained"`` and ``"relaxed_pretrained"``
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

Why a loop of its own rather than :func:`aslib.training.train.fit`: the shuffle's learning rate is scaled, the penalty
may start late, and the pretrained arms freeze the CNN. Its pieces are the shared ones of :mod:`aslib.training.loop`
(:func:`~aslib.training.loop.penalised_step`, :func:`~aslib.training.loop.warmup_lam`, :func:`~aslib.training.loop.make_optimizer`,
and the finish :func:`~aslib.training.loop.round_and_evaluate`), and it reads its settings from a
:class:`~aslib.training.config.TrainConfig` (fields about ShuffleNets, checkpoints and mixed precision are ignored).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from aslib.training.data import DataSplits, load_dataset
from aslib.core.checks import as_generator, check_positive_int
from aslib.training.config import TrainConfig
from aslib.nn.layers import LearnedShuffle
from aslib.nn.shuffles import shuffle_penalty, shuffle_stats
from aslib.training.loop import evaluate, make_optimizer, penalised_step, round_and_evaluate, warmup_lam
from aslib.models.common import conv_bn
from aslib.utils.progress import progress
from aslib.utils.runtime import resolve_device, seed_everything

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
    "run_arm",
    "run_experiment",
    "small_cnn",
    "symmetric_recovery",
]

#: The arms of the experiment, in the order of the results table.
ARMS: tuple[str, ...] = ("oracle", "scrambled", "learned", "relaxed", "learned_pretrained", "relaxed_pretrained")
#: Arms whose CNN is the oracle arm's trained CNN, frozen (only ``M`` is trained).
PRETRAINED_ARMS: tuple[str, ...] = ("learned_pretrained", "relaxed_pretrained")


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
                                 generator=generator)
    return PixelShuffleNet(cnn, shuffle)


# --- one arm -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PermutedInputConfig:
    """The experiment: training settings (a :class:`TrainConfig`; ``lam`` is the learned arms', the relaxed
    arms use 0), the latent permutation's seed, the CNN width, the learning-rate factor of ``M`` and the
    epoch at which the penalty starts (``lam_t = 0`` before it, then the ``lam_warmup_epochs`` ramp)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    permutation_seed: int = 1234
    width: int = 16
    shuffle_lr_scale: float = 1.0
    penalty_start_epoch: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.train, TrainConfig):
            raise ValueError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        check_positive_int(self.width, "width")
        if isinstance(self.permutation_seed, bool) or not isinstance(self.permutation_seed, int) \
                or self.permutation_seed < 0:
            raise ValueError(f"permutation_seed must be a non-negative integer, got {self.permutation_seed!r}")
        if not (isinstance(self.shuffle_lr_scale, (int, float)) and math.isfinite(self.shuffle_lr_scale)
                and self.shuffle_lr_scale > 0):
            raise ValueError(f"shuffle_lr_scale must be a positive number, got {self.shuffle_lr_scale!r}")
        if not (isinstance(self.penalty_start_epoch, (int, float)) and 0 <= self.penalty_start_epoch < math.inf):
            raise ValueError(f"penalty_start_epoch must be a number >= 0, got {self.penalty_start_epoch!r}")


@dataclass
class ArmResult:
    """One arm's outcome (accuracies are fractions of the test set, final epoch, nothing chosen on test).

    ``test_acc_hard`` is after rounding the shuffle and recalibrating BatchNorm (equal to ``test_acc`` for
    arms without a shuffle); ``recovery`` holds :func:`recovery_measures` of the rounded permutation
    (empty without a shuffle); ``history`` one row per epoch; ``model`` the final (hardened) model.
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


def run_arm(arm: str, config: PermutedInputConfig, pretrained: nn.Module | None = None) -> ArmResult:
    """Train one arm and evaluate it (soft, then rounded + BatchNorm recalibrated), as the module says.

    ``pretrained``: the trained CNN (``run_arm("oracle", config).model.cnn``) the :data:`PRETRAINED_ARMS`
    start from and keep frozen; ``None`` for the other arms.

    SGD (``make_optimizer``: shuffle matrices without weight decay, their learning rate times ``shuffle_lr_scale``)
    with a per-step cosine schedule; loss ``cross_entropy + lam_t P(M)`` with ``lam_t`` zero before
    ``penalty_start_epoch``, then ramped over ``lam_warmup_epochs``; ``M`` projected toward ``D_n`` after every
    step.
    """
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")
    tc = config.train
    if arm.startswith("relaxed"):
        tc = dataclasses.replace(tc, lam=0.0)
    device = resolve_device(tc.device)
    seed_everything(tc.seed)
    splits, latent = load_permuted_splits(tc, None if arm == "oracle" else config.permutation_seed)
    model = build_model(arm, tc, splits, config.width, pretrained).to(device)
    optimizer = make_optimizer(model, tc)
    for group in optimizer.param_groups:
        if group["name"] == "shuffle":
            group["lr"] *= config.shuffle_lr_scale
    loader = DataLoader(splits.train, batch_size=tc.batch_size, shuffle=True, drop_last=True,
                        generator=as_generator(tc.seed), num_workers=tc.num_workers)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"the training set ({len(splits.train)} examples) is smaller than one batch")
    total_steps = tc.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    warmup_steps = tc.lam_warmup_epochs * steps_per_epoch
    start_step = config.penalty_start_epoch * steps_per_epoch

    history = []
    started = time.perf_counter()
    step = 0
    for epoch in progress(range(tc.epochs), enabled=tc.show_progress, desc=arm, leave=False):
        model.train()
        loss_sum = correct = count = 0.0
        lam_t = tc.lam
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            lam_t = warmup_lam(tc.lam, step - start_step, warmup_steps)
            ce, logits = penalised_step(model, x, y, optimizer, lam_t, projection_sweeps=tc.projection_sweeps,
                                        scheduler=scheduler)
            step += 1
            loss_sum += ce.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            count += len(y)
        val_loss, val_acc = (evaluate(model, splits.val, batch_size=tc.eval_batch_size, device=device)
                             if splits.val is not None else (math.nan, math.nan))
        stats = shuffle_stats(model)
        history.append({"epoch": epoch + 1, "lam": lam_t, "train_loss": loss_sum / count,
                        "train_acc": correct / count, "val_loss": val_loss, "val_acc": val_acc,
                        "penalty": stats["penalty"], "max_row_deficit": stats["max_row_deficit"]})
    seconds = time.perf_counter() - started

    final_penalty = float(shuffle_penalty(model).detach())
    matrix = model.shuffle.matrix().detach().cpu().clone() if model.shuffle is not None else None
    rounded = round_and_evaluate(
        model, lambda: evaluate(model, splits.test, batch_size=tc.eval_batch_size, device=device), loader,
        tc.recalibration_batches, device=device)
    test_acc, test_acc_raw, test_acc_hard = rounded.soft[1], rounded.raw[1], rounded.hard[1]
    recovery: dict[str, float] = {}
    permutation = None
    if rounded.permutations:
        assert latent is not None
        permutation = rounded.permutations[0].cpu()
        recovery = recovery_measures(permutation, latent, splits.input_size, splits.input_size)
        permutation = permutation.tolist()
    return ArmResult(arm=arm, test_acc=test_acc, test_acc_hard=test_acc_hard,
                     test_acc_hard_no_recalibration=test_acc_raw, final_penalty=final_penalty, recovery=recovery,
                     permutation=permutation, matrix=matrix, history=pd.DataFrame(history), seconds=seconds,
                     model=model)


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
