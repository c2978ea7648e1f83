"""Progressive hardening (``TrainConfig.harden_after``): training time and accuracy with and without it.

Trains the same l12 runs (same seeds, data and recipe) once with learned shuffles kept soft to the end and
once frozen to their permutation after ``--harden-after`` settled epoch ends, and prints per setting the
whole run's training seconds (wall clock of the training loop, mean ± std over seeds, and the median over
seeds of its ratio to the fixed shuffle's run of the same seed), the CPU seconds from the end of epoch 1 to the
last epoch's end (training and validation; less sensitive than the wall clock to other load on a shared
machine, same statistics; needs ``--epochs`` >= 2), the test accuracy after rounding, how many layers ever got below the
rounding threshold (where hardening may act) and when each shuffle was frozen. The settings run seed by
seed in alternating order, so the load of a shared machine falls on all of them alike. Example (digits, the quick profile's model)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/progressive_hardening.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time

import pandas as pd
import torch

from aslib.config import TrainConfig
from aslib.penalty import ROUNDING_THRESHOLD
from aslib.runtime import describe_device
from aslib.train import LAYER_PENALTIES_NAME, train


def _mean_std(values: list[float], digits: int = 3) -> str:
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


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
    runs: dict[str, list[dict]] = {name: [] for name, _ in settings}
    with tempfile.TemporaryDirectory() as tmp:
        # Settings interleaved seed by seed, in alternating order, so that the load of a shared machine
        # drifts over all of them alike; ratios to the fixed run are taken within a seed.
        for i, seed in enumerate(args.seeds):
            for name, config in settings if i % 2 == 0 else settings[::-1]:
                output_dir = f"{tmp}/{len(runs[name])}-{seed}-{config.harden_after}-{config.lam}-{config.shuffle}"
                cpu_at_epoch_end: list[float] = []
                result = train(dataclasses.replace(config, seed=seed, output_dir=output_dir),
                               [lambda state, ends=cpu_at_epoch_end: ends.append(time.process_time())])
                run = {"seconds": result.seconds, "cpu": cpu_at_epoch_end[-1] - cpu_at_epoch_end[0],
                       "accuracy": result.test_acc_hard,
                       "frozen": result.hardened_epochs}
                if config.shuffle == "learned":  # each layer's smallest penalty at an epoch end (hardened: 0)
                    table = pd.read_csv(f"{output_dir}/{LAYER_PENALTIES_NAME}.csv").drop(columns="epoch")
                    smallest = table.where(table > 0).min()
                    run["settled"] = int(((smallest < ROUNDING_THRESHOLD) | (table == 0).any()).sum())
                    run["layers"] = table.shape[1]
                    run["smallest"] = float(smallest.min())
                runs[name].append(run)
    for name, config in settings:
        rows = runs[name]
        seconds = [r["seconds"] for r in rows]
        ratio = statistics.median(r["seconds"] / f["seconds"] for r, f in zip(rows, runs["fixed"]))
        cpu_ratio = statistics.median(r["cpu"] / f["cpu"] for r, f in zip(rows, runs["fixed"]))
        line = (f"{name:46s} train s {_mean_std(seconds, 2):>14s} (x fixed {ratio:.3f})  CPU s after epoch 1 "
                f"{_mean_std([r['cpu'] for r in rows], 2):>14s} (x fixed {cpu_ratio:.3f})  "
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
