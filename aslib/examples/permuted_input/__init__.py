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

:mod:`.pixels` holds the latent permutation, the scrambled data and the recovery measures, :mod:`.experiment` the
model, the arms, their runs and the verdicts; both are importable from here.
"""

from aslib.examples.permuted_input.experiment import (
    ARMS,
    ArmResult,
    PRETRAINED_ARMS,
    PermutedInputConfig,
    PixelShuffleNet,
    arm_train_config,
    build_model,
    example_images,
    run_arm,
    run_experiment,
    small_cnn,
    unscrambling_verdicts,
)
from aslib.examples.permuted_input.pixels import (
    PermutedPixels,
    exact_recovery,
    inverse_permutation,
    load_permuted_splits,
    neighbourhood_recovery,
    permute_pixels,
    random_pixel_permutation,
    recovery_measures,
    symmetric_recovery,
)

__all__ = [
    "ARMS",
    "ArmResult",
    "PRETRAINED_ARMS",
    "PermutedInputConfig",
    "PermutedPixels",
    "PixelShuffleNet",
    "arm_train_config",
    "build_model",
    "exact_recovery",
    "example_images",
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
    "unscrambling_verdicts",
]
