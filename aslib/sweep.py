"""Many training runs at once: the plan, a data check up front, every GPU used, nothing run twice.

A :class:`Run` is a named :class:`aslib.train.TrainConfig` whose ``output_dir`` is ``<root>/<name>``. A
run is *done* when its ``result.json`` exists (it is skipped), *interrupted* when only its
``checkpoint.pt`` exists (it resumes from there), and *new* otherwise; a folder whose result was computed
with other settings is *stale*, and :func:`execute` refuses to run over it.

:func:`execute` runs a list of runs:

- with no CUDA device, one after the other in this process;
- with CUDA devices, each ordinary run in a subprocess pinned to one GPU (``CUDA_VISIBLE_DEVICES``), as
  many at once as there are GPUs; then each ``distributed`` run (ImageNet) with ``torchrun`` over all of
  them, one after the other. Each subprocess writes ``<output_dir>/log.txt``.

An *arm* is what the paper compares: the kind of channel shuffle, how a learned one is parameterised, and
whether the penalty applies (:data:`ARMS`).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from aslib.io import atomic_write
from aslib.progress import progress
from aslib.layers import PARAMETERISATIONS, SHUFFLE_KINDS, learned_shuffles
from aslib.train import CHECKPOINT_NAME, LAYER_PENALTIES_NAME, TrainConfig, config_changes, model_for, train

__all__ = [
    "ARMS",
    "Arm",
    "Run",
    "arm_config",
    "check_data",
    "classification_runs",
    "collect",
    "execute",
    "fixed_shuffle_permutations",
    "grid",
    "histories",
    "input_shape",
    "layer_penalty_tables",
    "main",
    "notebook_runs",
    "plan",
    "run_status",
    "stale_runs",
    "summarise",
]

#: TrainConfig fields that only matter for a learned shuffle.
LEARNED_ONLY = ("lam", "shuffle_init", "shuffle_noise", "projection_sweeps", "lam_warmup_epochs")
#: TrainConfig fields that only matter where the penalty applies, and those only of the projected matrix.
PENALTY_ONLY = ("lam",)
PROJECTION_ONLY = ("projection_sweeps",)


@dataclass(frozen=True)
class Arm:
    """What one arm sets in a :class:`~aslib.train.TrainConfig`.

    Attributes:
        shuffle: the shuffle kind (``TrainConfig.shuffle``).
        uses_lam: whether the penalty weight applies (otherwise ``lam = 0``).
        parameterisation: ``TrainConfig.shuffle_parameterisation`` of a learned shuffle.
    """

    shuffle: str
    uses_lam: bool = False
    parameterisation: str = "projected"

    def __post_init__(self) -> None:
        if self.shuffle not in SHUFFLE_KINDS:
            raise ValueError(f"unknown shuffle {self.shuffle!r}; valid: {', '.join(SHUFFLE_KINDS)}")
        if self.parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"unknown parameterisation {self.parameterisation!r}; valid: "
                             f"{', '.join(PARAMETERISATIONS)}")

    @property
    def learned(self) -> bool:
        """Whether the arm trains a matrix (and rounds it at the end)."""
        return self.shuffle == "learned"

    def irrelevant(self) -> tuple[str, ...]:
        """The TrainConfig fields that cannot change this arm's result (a sweep axis over them collapses)."""
        if not self.learned:
            return LEARNED_ONLY
        fields = () if self.uses_lam else PENALTY_ONLY
        return fields + (PROJECTION_ONLY if self.parameterisation != "projected" else ())


#: The arms by name. "relaxed" is the convex relaxation: a learned doubly stochastic matrix trained without
#: the penalty, then rounded; "sinkhorn" the same with the matrix parameterised by Sinkhorn's normalisation
#: of logits (the usual baseline) instead of projected.
ARMS: dict[str, Arm] = {
    "fixed": Arm("fixed"),
    "none": Arm("none"),
    "random": Arm("random"),
    "relaxed": Arm("learned"),
    "l12": Arm("learned", uses_lam=True),
    "sinkhorn": Arm("learned", parameterisation="sinkhorn"),
}

#: Training-set sizes, for the time estimate (the validation split is taken out of these).
TRAIN_SIZES = {"digits": 1437, "cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167}
INPUT_SHAPES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "imagenet": (3, 224, 224)}
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000}
#: Sustained training throughput assumed for the estimate, in FLOP/s (3 x forward FLOPs per image).
#: Calibrated on this project's own runs: shufflenet_v2_1.0 on 32x32 inputs took about 15 s per 50,000-image
#: epoch on one H100 (small depthwise networks are bound by per-operation overhead, far below peak), and
#: the quarter-width digits model about 4.5 s for 15 epochs on one CPU thread.
ASSUMED_FLOPS_PER_SECOND = {"cuda": 1e12, "cpu": 1e9}


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


def arm_config(base: TrainConfig, arm: str, lam: float | None = None) -> TrainConfig:
    """``base`` with the shuffle kind, parameterisation and penalty weight of ``arm`` (lam 0 unless the arm
    uses it)."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid arms: {', '.join(ARMS)}")
    spec = ARMS[arm]
    return dataclasses.replace(base, shuffle=spec.shuffle, shuffle_parameterisation=spec.parameterisation,
                               lam=(base.lam if lam is None else lam) if spec.uses_lam else 0.0)


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
    :data:`LEARNED_ONLY` without a learned shuffle, ``projection_sweeps`` for Sinkhorn) collapse for it.
    """
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(axes) - names)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {', '.join(unknown)}")
    for arm in arms:
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; valid arms: {', '.join(ARMS)}")
    runs: dict[str, Run] = {}
    keys = list(axes)
    for arm in arms:
        for values in itertools.product(*(axes[k] for k in keys)):
            chosen = dict(zip(keys, values))
            for k in ARMS[arm].irrelevant():
                chosen.pop(k, None)
            head = [f"{k}={chosen[k]}" for k in keys if k in chosen and k not in ("lam", "seed")]
            tail = [f"{k}={chosen[k]}" for k in ("lam", "seed") if k in chosen]
            name = "/".join([*head, f"arm={arm}", *tail])
            config = arm_config(dataclasses.replace(base, **chosen), arm)
            config = dataclasses.replace(config, output_dir=str(Path(root) / name))
            runs.setdefault(name, Run(name, config, distributed, arm))  # irrelevant axes collapse
    return list(runs.values())


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
) -> list[Run]:
    """The runs of notebooks 04 (CIFAR, digits) and 05 (ImageNet): data sets x models x arms x ablations x seeds.

    The keyword names are the notebooks' parameter names, so the runner can print a notebook's plan
    before executing it (:func:`notebook_runs`). ImageNet runs are distributed (torchrun over every GPU).
    """
    base = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                       stages_repeats=tuple(stages_repeats), model_kwargs=dict(model_kwargs or {}),
                       max_train_samples=max_train_samples, data_root=str(data_root),
                       recalibration_batches=recalibration_batches)
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


def run_status(run: Run) -> str:
    """``"done"`` (its result.json exists), ``"interrupted"`` (a checkpoint exists), ``"new"``, or
    ``"stale"``: the folder holds a result computed with other settings (:func:`stale_runs` says which)."""
    if (run.folder / "result.json").is_file():
        return "stale" if _changes(run) else "done"
    if (run.folder / CHECKPOINT_NAME).is_file():
        return "interrupted"
    return "new"


def _changes(run: Run) -> list[str]:
    saved = json.loads((run.folder / "result.json").read_text()).get("config", {})
    return config_changes(saved, run.config)


def stale_runs(runs: Sequence[Run]) -> dict[str, list[str]]:
    """Runs whose folder holds a result of other settings, with the settings that changed."""
    return {run.name: _changes(run) for run in runs if run_status(run) == "stale"}


def _model_arguments(config: TrainConfig) -> dict[str, Any]:
    return dict(num_classes=NUM_CLASSES[config.dataset], in_channels=INPUT_SHAPES[config.dataset][0],
                stem="imagenet" if config.dataset == "imagenet" else "cifar")


def input_shape(config: TrainConfig) -> tuple[int, int, int]:
    """``(channels, height, width)`` of the images a run trains on."""
    if config.dataset == "imagenet":
        return (3, config.image_size, config.image_size)
    return INPUT_SHAPES[config.dataset]


def _forward_flops(config: TrainConfig) -> int:
    from aslib.models import count_flops

    model = model_for(config, **_model_arguments(config), shuffle="fixed")
    return count_flops(model, (1, *input_shape(config)))


def fixed_shuffle_permutations(config: TrainConfig) -> list[list[int]]:
    """ShuffleNet's fixed shuffles of the architecture ``config`` trains, as the permutations of its learned
    shuffles (same order as ``TrainResult.permutations``), for comparison with what was learned."""
    model = model_for(config, **_model_arguments(config), shuffle="learned", shuffle_init="shuffle", shuffle_noise=0.0)
    return [layer.permutation().tolist() for layer in learned_shuffles(model)]


def plan(runs: Sequence[Run], device_type: str | None = None, gpus: int | None = None) -> pd.DataFrame:
    """One row per run: name, data set, model, arm settings, epochs, status, and an estimate of its time.

    The estimate is ``3 x forward FLOPs x training images x epochs`` over an assumed sustained
    throughput (:data:`ASSUMED_FLOPS_PER_SECOND`), divided by ``gpus`` (default: the visible ones) for
    distributed runs: an order of magnitude, not a promise.
    """
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    gpus = max(1, torch.cuda.device_count() if gpus is None else gpus)
    flops_cache: dict[tuple, int] = {}
    rows = []
    for run in runs:
        c = run.config
        key = (c.dataset, c.model, c.stages_repeats, c.image_size, json.dumps(c.model_kwargs, sort_keys=True))
        if key not in flops_cache:
            flops_cache[key] = _forward_flops(c)
        images = c.max_train_samples or TRAIN_SIZES[c.dataset]
        seconds = 3 * flops_cache[key] * images * c.epochs / ASSUMED_FLOPS_PER_SECOND[device_type]
        if run.distributed and device_type == "cuda":
            seconds /= gpus
        rows.append({"run": run.name, "dataset": c.dataset, "model": c.model, "shuffle": c.shuffle, "lam": c.lam,
                     "seed": c.seed, "epochs": c.epochs, "distributed": run.distributed,
                     "status": run_status(run), "estimated_minutes": round(seconds / 60, 1)})
    return pd.DataFrame(rows)


def check_data(runs: Sequence[Run]) -> None:
    """Refuse, before anything runs, a sweep whose data sets are not where the runs expect them.

    Raises ``FileNotFoundError`` naming each missing data set, where it belongs and how to get it.
    """
    from aslib.data import load_dataset

    problems = []
    for dataset, root in sorted({(r.config.dataset, r.config.data_root) for r in runs if run_status(r) != "done"}):
        try:
            load_dataset(dataset, root, val_fraction=0.0, augment=False, verify_checksums=False)
        except FileNotFoundError as err:
            problems.append(str(err))
    if problems:
        raise FileNotFoundError("missing data set(s):\n" + "\n".join(problems))


def _write_config(run: Run) -> Path:
    path = run.folder / "config.json"
    text = json.dumps(run.config.to_dict(), indent=2, sort_keys=True)
    return atomic_write(path, lambda f: f.write(text.encode()))


def _command(run: Run, gpus: int) -> list[str]:
    entry = ["-m", "aslib.sweep", "--run-config", str(_write_config(run))]
    if run.distributed and gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", *entry]
    return [sys.executable, *entry]


def _subprocess(run: Run, gpus: Sequence[int]) -> tuple[str, str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
    log = run.folder / "log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        code = subprocess.run(_command(run, len(gpus)), env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if code == 0:
        return "ok", ""
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
    return "failed", f"exit {code}: {tail[0]}"


def execute(
    runs: Sequence[Run],
    *,
    gpus: Sequence[int] | None = None,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Run every run that is not done; return one row per run (status, seconds, log, error).

    Args:
        runs: from :func:`grid` (or built by hand).
        gpus: CUDA device indices to use (default: every visible one); empty or no CUDA means in-process on
            the CPU, one run after the other.
        show_progress: a bar over runs.
    """
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError("run names must be unique")
    gpus = list(range(torch.cuda.device_count())) if gpus is None else list(gpus)
    stale = stale_runs(runs)
    if stale:
        detail = "; ".join(f"{name} ({', '.join(changes)})" for name, changes in stale.items())
        raise ValueError(f"these run folders hold results of other settings; move them away or choose another "
                         f"output folder, nothing was overwritten: {detail}")
    check_data(runs)
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for run in runs:
        if run_status(run) == "done":
            rows[run.name] = {"run": run.name, "status": "skipped (done)", "seconds": 0.0, "log": "", "error": ""}
        else:
            todo.append(run)
    bar = progress(total=len(todo), enabled=show_progress, desc="runs", unit="run")

    def record(run: Run, status: str, error: str, start: float) -> None:
        rows[run.name] = {"run": run.name, "status": status, "seconds": round(time.perf_counter() - start, 1),
                          "log": str(run.folder / "log.txt") if gpus else "", "error": error}
        bar.update(1)

    if not gpus:
        for run in todo:
            start = time.perf_counter()
            bar.set_postfix_str(run.name, refresh=True)
            try:  # the bar over runs only: nested per-epoch bars garble a notebook's output
                train(dataclasses.replace(run.config, show_progress=False), resume=True)
                record(run, "ok", "", start)
            except Exception as err:  # one failing run must not stop the sweep
                record(run, "failed", f"{type(err).__name__}: {err}", start)
    else:
        pending: queue.Queue[Run] = queue.Queue()
        for run in todo:
            if not run.distributed:
                pending.put(run)

        def worker(gpu: int) -> None:
            while True:
                try:
                    run = pending.get_nowait()
                except queue.Empty:
                    return
                start = time.perf_counter()
                record(run, *_subprocess(run, [gpu]), start)

        threads = [threading.Thread(target=worker, args=(g,)) for g in gpus]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for run in (r for r in todo if r.distributed):
            start = time.perf_counter()
            record(run, *_subprocess(run, gpus), start)
    bar.close()
    return pd.DataFrame([rows[name] for name in names])


#: Columns of :func:`collect` taken from each run's configuration.
CONFIG_COLUMNS = ("dataset", "model", "shuffle", "shuffle_init", "projection_sweeps", "lam", "seed", "epochs")


def collect(runs: Sequence[Run]) -> pd.DataFrame:
    """The ``result.json`` of every finished run, one row each: the run's name and arm, the settings of
    :data:`CONFIG_COLUMNS` and every scalar result. Unfinished runs are absent (:func:`plan` lists them)."""
    rows = []
    for run in runs:
        path = run.folder / "result.json"
        if path.is_file():
            result = json.loads(path.read_text())
            config = result.pop("config", {})
            settings = {k: config.get(k) for k in CONFIG_COLUMNS}
            if run.arm in ARMS:  # settings that do not apply stay empty (lam is 0 there)
                settings.update({k: None for k in ARMS[run.arm].irrelevant() if k in settings and k != "lam"})
            rows.append({"run": run.name, "arm": run.arm, **settings,
                         **{k: v for k, v in result.items() if not isinstance(v, (list, dict))}})
    return pd.DataFrame(rows)


def summarise(
    results: pd.DataFrame,
    by: Sequence[str] = ("dataset", "model", "arm", "shuffle_init", "projection_sweeps", "lam"),
    metrics: Sequence[str] = ("test_acc_soft", "test_acc_hard", "rounding_change", "final_penalty"),
) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each metric, per group, with the number of seeds.

    The default groups are every setting of a run but its seed (settings that do not apply to an arm are
    empty in :func:`collect` and group together).

    Columns: the ``by`` columns, ``seeds``, then ``<metric>_mean`` and ``<metric>_std`` for each metric
    (std is NaN for a single seed), plus ``num_parameters_inference`` where present.
    """
    if results.empty:
        return pd.DataFrame(columns=[*by, "seeds"])
    grouped = results.groupby(list(by), dropna=False, sort=False)
    table = grouped[list(metrics)].agg(["mean", "std"])
    table.columns = [f"{m}_{stat}" for m, stat in table.columns]
    table.insert(0, "seeds", grouped.size())
    if "num_parameters_inference" in results:
        table["num_parameters_inference"] = grouped["num_parameters_inference"].first()
    return table.reset_index()


def histories(runs: Sequence[Run]) -> dict[str, pd.DataFrame]:
    """Each finished or interrupted run's per-epoch ``history.csv``, by run name."""
    return {run.name: pd.read_csv(run.folder / "history.csv") for run in runs
            if (run.folder / "history.csv").is_file()}


def layer_penalty_tables(runs: Sequence[Run]) -> dict[str, pd.DataFrame]:
    """Each finished or interrupted run's ``layer_penalties.csv`` (``epoch``, then ``P(M_l)`` per learned
    shuffle as ``layer_<l>``), by run name."""
    return {run.name: pd.read_csv(path) for run in runs
            if (path := run.folder / f"{LAYER_PENALTIES_NAME}.csv").is_file()}


def _run_from_file(path: str) -> int:
    config = TrainConfig.from_dict(json.loads(Path(path).read_text()))
    train(dataclasses.replace(config, show_progress=False), resume=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aslib.sweep", description="Run one sweep run from its config.")
    parser.add_argument("--run-config", required=True, help="config.json written by aslib.sweep.execute")
    return _run_from_file(parser.parse_args(argv).run_config)


if __name__ == "__main__":
    sys.exit(main())
