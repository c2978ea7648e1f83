"""Does every learned shuffle end at a permutation? Short real-image runs over settings a user could choose.

Each run trains with ``aslib.training.train.train`` and reports, from its ``result.json`` and
``layer_penalties.csv``: the largest and the median final ``P(M_l)``, the share of layers below the rounding
threshold, how many ended at or near ``J/n`` (``P >= 0.9 P(J/n)``), the test accuracy before and after rounding
and the rounding change. With a hard phase (variants ``+hard``), "soft" is the network after the hard phase (its
shuffles already permutations), and ``val_before`` / ``val_after`` are the validation accuracies at the last epoch
end before the hard phase and at the end. Runs go ``--jobs`` at a time, one torch thread each.

``--grid`` names a preset (see :data:`GRIDS`); every run writes under ``--output`` (deleted afterwards unless
``--keep``). Example (CIFAR-10 in data/, see data/README.md)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rounding_stress.py --grid cifar10 --jobs 2 \\
        --out benchmarks/results/rounding_stress_cifar10
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from aslib.core.penalty import ROUNDING_THRESHOLD
from aslib.nn.shuffles import UNIFORM_FRACTION, RoundingWarning
from aslib.training.config import TrainConfig
from aslib.training.state import LAYER_PENALTIES_NAME
from aslib.training.train import train
from aslib.utils.runtime import describe_device

#: The base run of each preset (the settings of issue 21's report: v1 g8 at width 0.5 on 8,000 CIFAR-10 images).
BASES: dict[str, dict[str, Any]] = {
    "cifar10": dict(dataset="cifar10", model="shufflenet_v1_g8", model_kwargs={"width": 0.5}, epochs=3,
                    max_train_samples=8000, batch_size=128, lam=0.03, recalibration_batches=20, seed=4242,
                    verify_checksums=False),
    "digits": dict(dataset="digits", model="shufflenet_v1_g3", epochs=6, batch_size=64, lam=0.03,
                   recalibration_batches=20, seed=0),
}
#: What a number must say about its data (../shared/data/README.md on the project's machines).
DATA_NOTES = {"cifar10": ": exact train; test 1k exact + 9k JPEG"}
#: The hard phase of ``+hard`` variants: TrainConfig's default (``mirror+hard`` is TrainConfig's defaults).
DEFAULT_HARD_PHASE = TrainConfig().hard_phase
#: Each preset's axes: every combination is one run. ``variant`` names the shuffle's parameterisation and hard
#: phase: ``projected`` (the paper's step), ``mirror``, and either with ``+hard`` (the default hard phase, the
#: last tenth of the steps); without ``+hard`` the shuffles are rounded at the end.
GRIDS: dict[str, dict[str, list[Any]]] = {
    "cifar10": {"variant": ["projected", "mirror", "mirror+hard"],
                "model": [("shufflenet_v1_g8", {"width": 0.5}), ("shufflenet_v1_g3", {"width": 0.25}),
                          ("shufflenet_v2_0.5", {})]},
    "cifar10-lam": {"variant": ["projected"], "lam": [0.003, 0.01, 0.1]},
    "cifar10-settings": {"variant": ["mirror"], "lr": [0.05, 0.2], "batch_size": [64, 256],
                         "shuffle_init": ["uniform", "random"]},
    # issue 21's call itself (v1 g8 width 0.5, lr 0.1, batch 128, uniform start) with TrainConfig's defaults
    "cifar10-call": {"variant": ["mirror+hard"]},
    # the settings grid with TrainConfig's defaults (the mirror step and the hard phase)
    "cifar10-defaults": {"variant": ["mirror+hard"], "lr": [0.05, 0.2], "batch_size": [64, 256],
                         "shuffle_init": ["uniform", "random"]},
    # issue 21's whole grid: 8 architectures x 3 variants x 3 lam x 2 lr x 2 batch x 2 starts = 576 runs (a GPU's job)
    "cifar10-full": {"variant": ["projected", "mirror", "mirror+hard"],
                     "model": [(f"shufflenet_v1_g{g}", {"width": w}) for g in (3, 8) for w in (0.25, 0.5, 1.0)]
                     + [("shufflenet_v2_0.5", {}), ("shufflenet_v2_1.0", {})],
                     "lam": [0.003, 0.03, 0.1], "lr": [0.05, 0.2], "batch_size": [64, 256],
                     "shuffle_init": ["uniform", "random"]},
    "digits": {"variant": ["projected", "mirror", "mirror+hard"], "lam": [0.003, 0.03, 0.1],
               "shuffle_init": ["uniform", "random"]},
}


def _config(base: dict[str, Any], point: dict[str, Any], output: Path) -> TrainConfig:
    point = dict(point)
    variant = point.pop("variant")
    parameterisation, _, hard = variant.partition("+")
    if "model" in point:
        point["model"], point["model_kwargs"] = point["model"]
    fields = {**base, **point, "shuffle": "learned", "shuffle_parameterisation": parameterisation,
              "hard_phase": DEFAULT_HARD_PHASE if hard else 0.0, "show_progress": False}
    name = "-".join(f"{k}={v}" for k, v in sorted({**point, "variant": variant}.items()) if k != "model_kwargs")
    return TrainConfig(**fields, output_dir=str(output / name.replace("/", "_")))


def _run(config: TrainConfig) -> dict[str, Any]:
    torch.set_num_threads(1)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RoundingWarning)
        result = train(config)
    penalties = pd.read_csv(Path(config.output_dir) / f"{LAYER_PENALTIES_NAME}.csv").drop(columns="epoch")
    history = result.history
    # the last epoch end before the hard phase rounded the shuffles (the last one without a hard phase)
    # the epochs completed when the hard phase rounded the shuffles, as fit recorded them (all of them without one)
    soft_epochs = min(result.hardened_epochs) if config.hard_phase else config.epochs
    last_soft = max(soft_epochs, 1) - 1
    before = penalties.iloc[last_soft]
    channels = [len(p) for p in result.permutations]
    return {
        "model": config.model + "".join(f" {k}={v}" for k, v in config.model_kwargs.items()),
        "variant": config.shuffle_parameterisation + ("+hard" if config.hard_phase else ""),
        "lam": config.lam, "lr": config.lr, "batch": config.batch_size, "init": config.shuffle_init,
        "layers": len(channels), "max_penalty": float(before.max()), "median_penalty": float(before.median()),
        # where the shuffles stood when rounded (at the hard phase's start, or at the end)
        "below_threshold": 1 - result.unsettled_shuffles / len(channels), "near_uniform": result.uniform_shuffles,
        "soft": result.test_acc_soft, "rounded": result.test_acc_hard, "change": result.rounding_change,
        "val_before": float(history["val_acc"].iloc[last_soft]), "val_after": float(history["val_acc"].iloc[-1]),
        "warned": any(issubclass(w.category, RoundingWarning) for w in caught),
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="digits")
    parser.add_argument("--base", choices=sorted(BASES), help="the base run (default: the grid's data set)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--output", help="folder of the runs (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the runs' folders")
    parser.add_argument("--out", help="write <out>.csv and <out>.txt")
    args = parser.parse_args(argv)
    base = dict(BASES[args.base or args.grid.split("-")[0]], data_root=args.data_root)
    output = Path(args.output or tempfile.mkdtemp(prefix="rounding_stress_"))
    axes = GRIDS[args.grid]
    points = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    configs = [_config(base, point, output) for point in points]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(_run, configs))
    table = pd.DataFrame(rows)
    header = (f"# rounding stress, grid {args.grid}: {len(rows)} runs, {args.jobs} at a time, one torch thread each, "
              f"{time.perf_counter() - started:.0f} s; {describe_device('cpu')}\n"
              f"# base: {json.dumps(base, sort_keys=True)}\n"
              f"# penalties are the last epoch end's before rounding (the hard phase's start, or the end), below_threshold and "
              f"near_uniform where the shuffles stood when rounded; near_uniform: P >= {UNIFORM_FRACTION} P(J/n); rounding "
              f"threshold {ROUNDING_THRESHOLD:.3f}; accuracies on the test set ({base['dataset']}{DATA_NOTES.get(base['dataset'], '')})\n")
    text = header + table.to_string(index=False, float_format=lambda v: f"{v:.3f}") + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(f"{args.out}.csv", index=False)
        Path(f"{args.out}.txt").write_text(text)
    if not args.keep and not args.output:
        shutil.rmtree(output, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
