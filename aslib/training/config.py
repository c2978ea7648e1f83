"""The configuration of one training run (:class:`TrainConfig`) and its command line.

Every field of :class:`TrainConfig` is a command-line option of ``python -m aslib.training.train`` (``--field-name``,
its help text and choices read from the field), so the two cannot drift apart. :func:`config_changes` says
in which fields a saved run differs from a configuration (what decides whether it may be resumed or reused).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aslib.training.batches import PIPELINES
from aslib.training.data import DATASETS
from aslib.nn.layers import INITS, SHUFFLE_KINDS
from aslib.core.penalties import DEFAULT_PENALTY, PENALTIES
from aslib.nn.parameterisations import PARAMETERISATIONS
from aslib.models import CONFIG_ARGUMENTS, MODEL_NAMES

__all__ = ["AMP_DTYPES", "RESUMABLE_CHANGES", "TrainConfig", "build_parser", "config_changes",
           "parse_args"]

AMP_DTYPES = ("bfloat16", "float16")
#: Fields that may change when a run is resumed or reused: they do not change what is computed.
RESUMABLE_CHANGES = ("output_dir", "show_progress", "num_workers", "checkpoint", "device")


def _option(text: str, choices: Sequence[Any] | Set[Any] | None = None) -> dict[str, Any]:
    """Field metadata read by the command line: the help text and, for a choice, the valid values (a sequence
    is copied; a set view, such as a registry's ``keys()``, stays live, so later registrations are valid)."""
    if choices is None or isinstance(choices, Set):
        return {"help": text, "choices": choices}
    return {"help": text, "choices": tuple(choices)}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Every field is also a command-line option (``--field-name``)."""

    # data
    dataset: str = field(default="digits", metadata=_option("data set", DATASETS))
    data_root: str = field(default="data", metadata=_option("data folder (see data/README.md)"))
    val_fraction: float = field(default=0.1, metadata=_option("fraction of the training set held out for validation"))
    split_seed: int = field(default=0, metadata=_option("seed of the validation split"))
    augment: bool = field(default=True, metadata=_option("random crops and flips (CIFAR, ImageNet)"))
    max_train_samples: int | None = field(default=None, metadata=_option(
        "use only this many training examples (quick runs)"))
    image_size: int = field(default=224, metadata=_option("ImageNet crop size"))
    verify_checksums: bool = field(default=True, metadata=_option("check CIFAR files' md5 sums"))
    # model
    model: str = field(default="shufflenet_v1_g3", metadata=_option("architecture", MODEL_NAMES))
    shuffle: str = field(default="learned", metadata=_option(
        "channel shuffle: fixed (ShuffleNet), learned (AutoShuffleNet), none, random", SHUFFLE_KINDS))
    shuffle_init: str = field(default="uniform", metadata=_option(
        "start of learned shuffles (from 'shuffle', the penalty keeps M at ShuffleNet's permutation)", INITS))
    shuffle_noise: float = field(default=0.1, metadata=_option(
        "mix a random doubly stochastic matrix into the learned shuffles' start (moves 'uniform' off the "
        "penalty's stationary point)"))
    shuffle_parameterisation: str = field(default="mirror", metadata=_option(
        "how learned shuffles hold and move M (aslib.nn.parameterisations): M itself moved by entropic mirror "
        "descent (mirror, the default: cannot collapse to J/n, its penalty weight is mirror_lam, see mirror_step), "
        "M itself moved by SGD and projected on the doubly stochastic matrices (projected, the paper's, weighted "
        "by lam), or logits through Sinkhorn's normalisation (sinkhorn; gumbel_sinkhorn adds Gumbel noise in training "
        "and rounds the logits); why mirror: docs/tuning.md",
        PARAMETERISATIONS.keys()))
    shuffle_penalty: str = field(default=DEFAULT_PENALTY, metadata=_option(
        "the penalty P that lam (in the loss) and mirror_lam (in the mirror step) weigh (aslib.core.penalties): "
        "the paper's l1-2 (l12, the default), smoothed Lp (lp), transformed l1 (tl1) or the entropy (entropy)",
        PENALTIES.keys()))
    shuffle_tau_end: float = field(default=0.0, metadata=_option(
        "temperature of Sinkhorn and Gumbel-Sinkhorn shuffles at the last epoch, reached geometrically per epoch "
        "from their starting temperature (0: the temperature is kept)"))
    shuffle_permutations_from: str = field(default="", metadata=_option(
        "a run's folder, relative to output_dir (or absolute): its rounded permutations (result.json's "
        "'permutations', one per learned shuffle) become this run's fixed shuffles, in module order; needs shuffle "
        "'fixed' (empty: ShuffleNet's)"))
    stages_repeats: tuple[int, ...] = field(default=(4, 8, 4), metadata=_option("units per stage (3 numbers)"))
    model_kwargs: dict[str, Any] = field(default_factory=dict, metadata=_option(
        "further builder arguments as JSON, e.g. '{\"width\": 0.25}' (v1) or "
        "'{\"stages_out_channels\": [8, 16, 32, 64, 128]}' (v2)"))
    # optimisation
    epochs: int = field(default=10, metadata=_option("training epochs"))
    batch_size: int = field(default=64, metadata=_option("global batch size (split over processes)"))
    eval_batch_size: int = field(default=256, metadata=_option("batch size for evaluation"))
    lr: float = field(default=0.1, metadata=_option("peak learning rate (cosine schedule to 0)"))
    momentum: float = field(default=0.9, metadata=_option("SGD momentum"))
    nesterov: bool = field(default=True, metadata=_option("Nesterov momentum"))
    weight_decay: float = field(default=5e-4, metadata=_option(
        "weight decay of conv and linear weights (never of the shuffle matrices)"))
    decay_norm_and_bias: bool = field(default=False, metadata=_option("also decay BatchNorm parameters and biases"))
    lam: float = field(default=0.03, metadata=_option("weight of the l1-2 penalty (0: convex relaxation)"))
    lam_warmup_epochs: float = field(default=0.0, metadata=_option("ramp lam linearly from 0 over this many epochs"))
    penalty_start_epoch: float = field(default=0.0, metadata=_option(
        "epoch at which the penalty starts (lam_t = 0 before it, then the lam_warmup_epochs ramp)"))
    shuffle_lr_scale: float = field(default=1.0, metadata=_option(
        "learning rate of the learned shuffles' matrices as a multiple of lr"))
    mirror_lam: float = field(default=2.5, metadata=_option(
        "penalty weight lam of mirror shuffles, in their step M <- normalise(M * exp(-eta (C(g) / max|C(g)| + "
        "lam grad P(M)))), i.e. against the loss gradient scaled to largest entry 1 per layer (the field lam "
        "weighs P in the loss: projected and sinkhorn shuffles); ramped like lam (default: docs/tuning.md)"))
    mirror_step: float = field(default=0.3, metadata=_option(
        "largest change of log M per step that the loss gradient makes in a mirror shuffle, at the peak "
        "learning rate: eta_t = mirror_step * lr_t / lr"))
    projection_sweeps: int = field(default=1, metadata=_option(
        "column/row normalisations per projection after each step"))
    harden_after: int = field(default=0, metadata=_option(
        "freeze a learned shuffle to its permutation once it was settled (penalty below the rounding threshold, "
        "same rounded permutation) at this many consecutive epoch ends (0: only at the end; default: "
        "docs/tuning.md)"))
    hard_phase: float = field(default=0.1, metadata=_option(
        "fraction of the training steps, at the end, for which every learned shuffle is rounded to its permutation "
        "and the rest of the network trains with the permutations fixed, so that the network trained is the "
        "network deployed (0: round at the end only, as the paper; default: docs/tuning.md)"))
    recalibration_batches: int = field(default=50, metadata=_option(
        "training batches to re-estimate BatchNorm statistics after rounding (0: keep them)"))
    channels_last: bool = field(default=True, metadata=_option(
        "train in the channels-last memory format (NHWC weights and batches; timings: docs/tuning.md)"))
    data_pipeline: str = field(default="auto", metadata=_option(
        "batches from the split held as one tensor on the device, augmented per batch (tensor), from a per-image "
        "DataLoader (pil), or tensor where the data set has a tensor form (auto: all but ImageNet)", PIPELINES))
    # run
    seed: int = field(default=0, metadata=_option("seed of initialisation, data order and augmentation"))
    device: str = field(default="auto", metadata=_option("auto, cpu, cuda or cuda:N"))
    amp: bool = field(default=True, metadata=_option("mixed precision on CUDA (ignored on CPU)"))
    amp_dtype: str = field(default="bfloat16", metadata=_option(
        "autocast dtype; float16 adds a gradient scaler", AMP_DTYPES))
    output_dir: str = field(default="runs/train", metadata=_option(
        "folder of checkpoint.pt, history.csv, result.json, model.pt"))
    checkpoint: bool = field(default=True, metadata=_option("write a checkpoint after every epoch"))
    num_workers: int = field(default=0, metadata=_option("data loader worker processes"))
    show_progress: bool = field(default=True, metadata=_option("progress bars"))

    def __post_init__(self) -> None:
        if isinstance(self.stages_repeats, list):
            object.__setattr__(self, "stages_repeats", tuple(self.stages_repeats))
        for name in ("dataset", "model", "shuffle", "shuffle_init", "shuffle_parameterisation", "shuffle_penalty",
                     "amp_dtype", "data_pipeline"):
            choices = TrainConfig.__dataclass_fields__[name].metadata["choices"]
            if not isinstance(getattr(self, name), str) or getattr(self, name) not in choices:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; valid: {', '.join(map(str, choices))}")
        for name in ("data_root", "device", "output_dir", "shuffle_permutations_from"):
            _of_type(self, name, str)
        for name in ("augment", "verify_checksums", "nesterov", "decay_norm_and_bias", "amp", "checkpoint",
                     "show_progress", "channels_last"):
            _of_type(self, name, bool)
        for name, low in (("split_seed", 0), ("image_size", 1), ("epochs", 1), ("batch_size", 1),
                          ("eval_batch_size", 1), ("projection_sweeps", 1), ("recalibration_batches", 0),
                          ("harden_after", 0),
                          ("seed", 0), ("num_workers", 0)):
            _at_least(name, _integer(self, name), low)
        if self.max_train_samples is not None:
            _at_least("max_train_samples", _integer(self, "max_train_samples"), 1)
        for name in ("lr", "weight_decay", "lam", "lam_warmup_epochs", "shuffle_noise", "val_fraction", "momentum",
                     "mirror_lam", "mirror_step", "penalty_start_epoch", "shuffle_tau_end", "hard_phase"):
            _at_least(name, _real(self, name), 0.0)
        if _real(self, "shuffle_lr_scale") <= 0:
            raise ValueError(f"shuffle_lr_scale must be > 0, got {self.shuffle_lr_scale!r}")
        if self.hard_phase >= 1:
            raise ValueError(f"hard_phase must be a fraction of the training in [0, 1), got {self.hard_phase!r}")
        if self.shuffle_permutations_from and self.shuffle != "fixed":
            raise ValueError(f"shuffle_permutations_from needs shuffle 'fixed', got shuffle {self.shuffle!r}")
        if self.shuffle_noise > 1:
            raise ValueError(f"shuffle_noise must be <= 1, got {self.shuffle_noise!r}")
        for name, high in (("val_fraction", 1.0), ("momentum", 1.0), ("seed", 2**32)):
            if getattr(self, name) >= high:  # numpy seeds stop below 2**32
                raise ValueError(f"{name} must be < {high}, got {getattr(self, name)!r}")
        repeats = self.stages_repeats
        if (not isinstance(repeats, tuple) or len(repeats) != 3
                or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in repeats)):
            raise ValueError(f"stages_repeats needs 3 positive integers, got {repeats!r}")
        _of_type(self, "model_kwargs", dict)
        clash = sorted(set(self.model_kwargs) & set(CONFIG_ARGUMENTS))
        if clash:
            raise ValueError(f"model_kwargs may not set {', '.join(clash)}: the data set or a TrainConfig field does")
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))

    @property
    def permutations_source(self) -> Path | None:
        """The folder of the run whose rounded permutations this run's fixed shuffles take
        (``shuffle_permutations_from`` read from ``output_dir``, ``..`` taken lexically: the run's own folder need not
        exist yet), or None for ShuffleNet's shuffles."""
        if not self.shuffle_permutations_from:
            return None
        return Path(os.path.normpath(Path(self.output_dir) / self.shuffle_permutations_from))

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


def _of_type(config: TrainConfig, name: str, kind: type) -> None:
    if not isinstance(getattr(config, name), kind):
        raise ValueError(f"{name} must be of type {kind.__name__}, got {getattr(config, name)!r}")


def _integer(config: TrainConfig, name: str) -> int:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be of type int, got {value!r}")
    return value


def _real(config: TrainConfig, name: str) -> float:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be of type float, got {value!r}")
    return value


def _at_least(name: str, value: float, low: float) -> None:
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")


_DEFAULTS = TrainConfig().to_dict()


def config_changes(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """The fields (as ``"name: old -> new"``) in which ``config`` computes something other than the saved
    configuration (``TrainConfig.to_dict`` form); fields that cannot change a result
    (:data:`RESUMABLE_CHANGES`) are ignored, and a field the saved configuration lacks (it predates the field)
    counts as having had its default."""
    now = config.to_dict()
    was = {**_DEFAULTS, **saved}
    return [f"{k}: {was.get(k)!r} -> {now[k]!r}" for k in sorted(now)
            if k not in RESUMABLE_CHANGES and was.get(k) != now[k]]


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


#: How the command line reads the fields that are not plain ``str``/``int``/``float``.
_SPECIAL_ARGUMENTS: dict[str, dict[str, Any]] = {
    "stages_repeats": {"type": int, "nargs": "+"},
    "model_kwargs": {"type": _parse_json_object, "metavar": "JSON"},
    "max_train_samples": {"type": _parse_optional_int, "metavar": "INT|none"},
}


def build_parser(description: str = "Train, round and evaluate one ShuffleNet / AutoShuffleNet.") -> argparse.ArgumentParser:
    """One option per :class:`TrainConfig` field (type from its default, help and choices from its metadata),
    plus ``--resume``."""
    parser = argparse.ArgumentParser(prog="python -m aslib.training.train", description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        default = getattr(defaults, f.name)
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": f.metadata["help"]}
        if f.metadata["choices"] is not None:
            kwargs["choices"] = f.metadata["choices"]
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(_SPECIAL_ARGUMENTS.get(f.name, {"type": type(default)}))
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    parser.add_argument("--resume", action="store_true", help="continue from <output-dir>/checkpoint.pt when it exists")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, bool]:
    """``(config, resume)`` from command-line arguments; a bad value exits with a message naming it."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    args["stages_repeats"] = tuple(args["stages_repeats"])
    try:
        return TrainConfig(**args), resume
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits
