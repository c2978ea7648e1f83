"""Progressive hardening (``TrainConfig.harden_after``): training time and accuracy with and without it.

Trains the same l12 runs (same seeds, data and recipe) once with learned shuffles kept soft to the end and once
frozen to their permutation after ``--harden-after`` settled epoch ends, and prints per setting the whole run's
training seconds (wall clock of the training loop, mean ± std over seeds, and the median over seeds of its ratio
to the fixed shuffle's run of the same seed, with the range of those ratios), the CPU seconds from the end of
epoch 1 to the last epoch's end (training and validation; less sensitive than the wall clock to other load on a
shared machine, same statistics; needs ``--epochs`` >= 2), the test accuracy after rounding, how many layers
ever got below the rounding threshold (where hardening may act) and when each shuffle was frozen. The settings
run seed by seed in alternating order, so the load of a shared machine falls on all of them alike.

``--paired`` (on a machine whose speed drifts by more than the differences measured): each learned setting
runs at the same time as a fixed run of the same seed, each process pinned to its own core (the cores swap
from one pair to the next), and its ratio is taken to that fixed run, which saw the same drift. Example
(digits, the quick profile's model)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/progressive_hardening.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import torch

from aslib.training.config import TrainConfig
from aslib.core.penalty import ROUNDING_THRESHOLD
from aslib.utils.runtime import describe_device
from aslib.training.state import LAYER_PENALTIES_NAME
from aslib.training.train import train


def _mean_std(values: list[float], digits: int = 3) -> str:
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def _ratios(ratios: list[float]) -> str:
    """The median of per-seed ratios to the fixed run, with their range when there are several."""
    median = f"{statistics.median(ratios):.3f}"
    return median if len(ratios) == 1 or max(ratios) == min(ratios) else f"{median}, {min(ratios):.3f}-{max(ratios):.3f}"


def _run(config: TrainConfig, core: int | None = None, threads: int = 1) -> dict:
    """One training run: wall seconds of the loop, CPU seconds after epoch 1, rounded accuracy, when each shuffle
    froze and how far the penalties got. ``core``: pin this process to that CPU first (``--paired``)."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    torch.set_num_threads(threads)
    cpu_at_epoch_end: list[float] = []
    result = train(config, [lambda state: cpu_at_epoch_end.append(time.process_time())])
    run = {"seconds": result.seconds, "cpu": cpu_at_epoch_end[-1] - cpu_at_epoch_end[0],
           "accuracy": result.test_acc_hard, "frozen": result.hardened_epochs}
    if config.shuffle == "learned":  # each layer's smallest penalty at an epoch end (hardened: 0)
        table = pd.read_csv(f"{config.output_dir}/{LAYER_PENALTIES_NAME}.csv").drop(columns="epoch")
        smallest = table.where(table > 0).min()
        run["settled"] = int(((smallest < ROUNDING_THRESHOLD) | (table == 0).any()).sum())
        run["layers"] = table.shape[1]
        run["smallest"] = float(smallest.min())
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default="shufflenet_v1_g3")
    parser.add_argument("--model-kwargs", default='{"width": 0.25}', help="JSON")
    parser.add_argument("--stages-repeats", type=int, nargs=3, default=[1, 1, 1])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--parameterisation", default="projected", choices=["projected", "mirror"],
                        help="of the learned shuffles (TrainConfig.shuffle_parameterisation)")
    parser.add_argument("--lams", type=float, nargs="+", default=[0.01, 0.03],
                        help="penalty weights: TrainConfig.lam (projected) or mirror_lam (mirror)")
    parser.add_argument("--mirror-step", type=float, default=TrainConfig.mirror_step)
    parser.add_argument("--harden-after", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--paired", action="store_true",
                        help="run each learned setting beside a fixed run of the same seed, one core each")
    parser.add_argument("--no-verify-checksums", action="store_true",
                        help="skip torchvision's md5 check (data sets whose files were re-encoded)")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (CPU time is measured from the end of epoch 1)")
    torch.set_num_threads(args.threads)
    base = TrainConfig(dataset=args.dataset, data_root=args.data_root, model=args.model,
                       model_kwargs=json.loads(args.model_kwargs), stages_repeats=tuple(args.stages_repeats),
                       epochs=args.epochs, max_train_samples=args.max_train_samples, shuffle_init="uniform",
                       shuffle_parameterisation=args.parameterisation, mirror_step=args.mirror_step,
                       show_progress=False, checkpoint=False, verify_checksums=not args.no_verify_checksums)
    print(f"{args.dataset}, {args.model} {args.model_kwargs}, {args.epochs} epochs, seeds {args.seeds}, "
          f"{describe_device('cpu')}")
    settings = [("fixed", dataclasses.replace(base, shuffle="fixed", lam=0.0))]
    for lam in args.lams:
        weight = {"mirror_lam": lam} if args.parameterisation == "mirror" else {"lam": lam}
        label = f"l12 {args.parameterisation} lam={lam}"
        settings.append((f"{label} soft to the end", dataclasses.replace(base, **weight)))
        settings.append((f"{label} harden_after={args.harden_after}",
                         dataclasses.replace(base, **weight, harden_after=args.harden_after)))
    # each setting's runs, each with the fixed run it is timed against (--paired: the one beside it; else the
    # fixed run of the same seed)
    timed: dict[str, list[tuple[dict, dict]]] = {name: [] for name, _ in settings}
    with tempfile.TemporaryDirectory() as tmp:
        made = itertools.count()

        def configured(name: str, config: TrainConfig, seed: int) -> TrainConfig:  # each run its own folder
            return dataclasses.replace(config, seed=seed, output_dir=f"{tmp}/{next(made)}-{name}-{seed}")

        fixed_name, fixed_config = settings[0]
        if args.paired:
            with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
                for i, (seed, (name, config)) in enumerate(
                        (seed, setting) for seed in args.seeds for setting in settings[1:]):
                    cores = (0, 1) if i % 2 == 0 else (1, 0)
                    fixed = pool.submit(_run, configured(f"{name}-fixed", fixed_config, seed), cores[0], args.threads)
                    learned = pool.submit(_run, configured(name, config, seed), cores[1], args.threads)
                    learned_run, fixed_run = learned.result(), fixed.result()
                    timed[name].append((learned_run, fixed_run))
                    timed[fixed_name].append((fixed_run, fixed_run))
        else:
            # Settings interleaved seed by seed, in alternating order, so that the load of a shared machine
            # drifts over all of them alike; ratios to the fixed run are taken within a seed.
            runs: dict[str, list[dict]] = {name: [] for name, _ in settings}
            for i, seed in enumerate(args.seeds):
                for name, config in settings if i % 2 == 0 else settings[::-1]:
                    runs[name].append(_run(configured(name, config, seed), threads=args.threads))
            timed = {name: list(zip(runs[name], runs[fixed_name])) for name, _ in settings}
    for name, config in settings:
        rows = [run for run, _ in timed[name]]
        seconds = [r["seconds"] for r in rows]
        ratio = _ratios([r["seconds"] / f["seconds"] for r, f in timed[name]])
        cpu_ratio = _ratios([r["cpu"] / f["cpu"] for r, f in timed[name]])
        line = (f"{name:46s} train s {_mean_std(seconds, 2):>14s} (x fixed {ratio})  CPU s after epoch 1 "
                f"{_mean_std([r['cpu'] for r in rows], 2):>14s} (x fixed {cpu_ratio})  "
                f"test acc (rounded) {_mean_std([r['accuracy'] for r in rows])}")
        if config.shuffle == "learned":
            line += (f"  layers below the threshold {ROUNDING_THRESHOLD:.3f} at some epoch end "
                     f"{[r['settled'] for r in rows]} of {rows[0]['layers']}, smallest non-zero layer penalty "
                     f"{min(r['smallest'] for r in rows):.3g}")
        if config.harden_after:
            line += f"  frozen after epoch {[r['frozen'] for r in rows]}"
        print(line)

if __name__ == "__main__":
    main()
