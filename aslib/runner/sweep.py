"""Running many training runs: their status, the plan, a data check up front, every GPU used, nothing run twice.

A run (:class:`aslib.study.arms.Run`) is *done* when its ``result.json`` exists and was computed by the current code
with its settings (it is skipped), *interrupted* when only its ``checkpoint.pt`` exists (it resumes from
there), and *new* otherwise. A folder whose result was computed with other settings is *stale*, and
:func:`execute` refuses to run over it; one whose result carries another
:func:`~aslib.utils.runtime.code_fingerprint` (or none) is *outdated*: it is run again from scratch.

:func:`execute` runs a list of runs:

- with no CUDA device, one after the other in this process;
- with CUDA devices, each ordinary run in a subprocess pinned to one GPU (``CUDA_VISIBLE_DEVICES``),
  ``runs_per_gpu`` at once on each GPU; then each ``distributed`` run (ImageNet) with ``torchrun`` over all of
  them, one after the other. Each subprocess writes ``<output_dir>/log.txt``.

A run that retrains another run's permutations (``TrainConfig.shuffle_permutations_from``) runs after it, in a
later wave; a finished one whose source's permutations changed since is *outdated*.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from aslib.study.arms import Run
from aslib.training.config import TrainConfig, config_changes
from aslib.training.data import DATASET_INFO, load_dataset
from aslib.utils.io import atomic_write
from aslib.models import count_flops, from_config
from aslib.utils.progress import progress
from aslib.utils.runtime import code_fingerprint
from aslib.training.state import CHECKPOINT_NAME, run_permutations
from aslib.training.speed import training_throughput
from aslib.training.train import train

__all__ = [
    "ASSUMED_FLOPS_PER_SECOND",
    "check_data",
    "execute",
    "input_shape",
    "main",
    "plan",
    "run_status",
    "stale_runs",
]

#: Sustained training throughput *assumed* by the plan's time estimate, in FLOP/s (3 x forward FLOPs per
#: image). A guess, not a measurement: small depthwise networks are bound by per-operation overhead, far
#: below a device's peak, and no timing file of this project calibrates it yet.
ASSUMED_FLOPS_PER_SECOND = {"cuda": 1e12, "cpu": 1e9}
#: What the plan says about its time column: a guess, or measured on this machine.
ESTIMATE_NOTE = "guess from FLOPs at an assumed throughput, not measured"
MEASURED_NOTE = "training steps timed here; loading and evaluation not counted"


def _saved_result(run: Run) -> dict[str, Any]:
    return json.loads((run.folder / "result.json").read_text())


def run_status(run: Run) -> str:
    """``"done"`` (its result.json exists, from the current code), ``"interrupted"`` (a checkpoint exists),
    ``"new"``, ``"stale"`` (the folder holds a result computed with other settings: :func:`stale_runs` says
    which) or ``"outdated"`` (same settings, but computed by other code: its fingerprint differs)."""
    if (run.folder / "result.json").is_file():
        saved = _saved_result(run)
        if config_changes(saved.get("config", {}), run.config):
            return "stale"
        if saved.get("code_fingerprint") != code_fingerprint() or not _same_source(run, saved):
            return "outdated"
        return "done"
    if (run.folder / CHECKPOINT_NAME).is_file():
        return "interrupted"
    return "new"


def _same_source(run: Run, saved: dict[str, Any]) -> bool:
    """Whether a finished run's fixed shuffles are its source run's permutations as they are now (True without a
    source): a source run computed again makes the runs that retrained its permutations outdated."""
    source = run.config.permutations_source
    if source is None:
        return True
    try:
        return run_permutations(source) == saved.get("fixed_permutations")
    except FileNotFoundError:
        return False


def _waves(runs: Sequence[Run]) -> list[list[Run]]:
    """``runs`` in the order their sources allow: each wave's runs depend only on runs of earlier waves (or on
    runs outside ``runs``), first-come order kept within a wave. Raises ``ValueError`` on a cycle."""
    folders = {os.path.normpath(run.folder.resolve()): run.name for run in runs}
    needs = {run.name: folders.get(os.path.normpath(run.config.permutations_source.resolve()))
             if run.config.permutations_source is not None else None for run in runs}
    waves: list[list[Run]] = []
    placed: set[str] = set()
    left = list(runs)
    while left:
        wave = [run for run in left if needs[run.name] is None or needs[run.name] in placed]
        if not wave:
            raise ValueError(f"runs whose sources form a cycle: {', '.join(run.name for run in left)}")
        waves.append(wave)
        placed |= {run.name for run in wave}
        left = [run for run in left if run.name not in placed]
    return waves


def stale_runs(runs: Sequence[Run]) -> dict[str, list[str]]:
    """Runs whose folder holds a result of other settings, with the settings that changed."""
    return {run.name: config_changes(_saved_result(run).get("config", {}), run.config)
            for run in runs if run_status(run) == "stale"}


def input_shape(config: TrainConfig) -> tuple[int, int, int]:
    """``(channels, height, width)`` of the images a run trains on (ImageNet: the configured crop)."""
    info = DATASET_INFO[config.dataset]
    if config.dataset == "imagenet":
        return (info.in_channels, config.image_size, config.image_size)
    return info.input_shape


def _forward_flops(config: TrainConfig) -> int:
    info = DATASET_INFO[config.dataset]
    model = from_config(config, num_classes=info.num_classes, in_channels=info.in_channels, stem=info.stem,
                      shuffle="fixed")
    return count_flops(model, (1, *input_shape(config)))


def plan(runs: Sequence[Run], device_type: str | None = None, gpus: int | None = None, *,
         measure: bool = True) -> pd.DataFrame:
    """One row per run: name, data set, model, arm settings, epochs, status, and an estimate of its time.

    ``estimated_minutes`` is training images x epochs over images per second. With ``measure`` and a plan for
    this machine's device type, the throughput is measured here, once per distinct network, by a few training
    steps (:func:`~aslib.training.speed.training_throughput`; data loading and evaluation not included);
    otherwise it is ``3 x forward FLOPs`` per image at an assumed sustained rate
    (:data:`ASSUMED_FLOPS_PER_SECOND`), a guess. Distributed runs divide by ``gpus`` (default: the visible ones);
    runs sharing a GPU (``execute(runs_per_gpu=...)``) are not accounted for. The ``estimate`` column says
    which kind each row's number is.
    """
    here = "cuda" if torch.cuda.is_available() else "cpu"
    device_type = device_type or here
    gpus = max(1, torch.cuda.device_count() if gpus is None else gpus)
    measured = measure and device_type == here
    cache: dict[tuple, float] = {}
    rows = []
    for run in runs:
        c = run.config
        key = (c.dataset, c.model, c.stages_repeats, c.image_size, json.dumps(c.model_kwargs, sort_keys=True),
               c.shuffle, c.shuffle_parameterisation, c.batch_size, c.channels_last)
        if key not in cache:
            cache[key] = (training_throughput(dataclasses.replace(c, device=device_type), device_type) if measured
                          else ASSUMED_FLOPS_PER_SECOND[device_type] / (3 * _forward_flops(c)))
        images = c.max_train_samples or DATASET_INFO[c.dataset].train_size
        seconds = images * c.epochs / cache[key]
        if run.distributed and device_type == "cuda":
            seconds /= gpus
        rows.append({"run": run.name, "dataset": c.dataset, "model": c.model, "shuffle": c.shuffle, "lam": c.lam,
                     "seed": c.seed, "epochs": c.epochs, "distributed": run.distributed,
                     "status": run_status(run), "estimated_minutes": round(seconds / 60, 1),
                     "estimate": MEASURED_NOTE if measured else ESTIMATE_NOTE})
    return pd.DataFrame(rows)


def check_data(runs: Sequence[Run]) -> None:
    """Refuse, before anything runs, a sweep whose data sets are not where the runs expect them.

    Raises ``FileNotFoundError`` naming each missing data set, where it belongs and how to get it.
    """
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
    entry = ["-m", "aslib.runner.sweep", "--run-config", str(_write_config(run))]
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


def _todo(runs: Sequence[Run], rows: dict[str, dict[str, Any]]) -> list[Run]:
    """The runs to run (a row for each skipped one into ``rows``). Outdated runs lose their checkpoint (the old
    code's state must not be resumed), and so does a run whose source runs again (its fixed shuffles will
    change)."""
    todo = []
    for run in runs:
        status = run_status(run)
        if status == "done":
            rows[run.name] = {"run": run.name, "status": "skipped (done)", "seconds": 0.0, "log": "", "error": ""}
            continue
        if status == "outdated":  # the old code's checkpoint must not be resumed: run again from scratch
            (run.folder / CHECKPOINT_NAME).unlink(missing_ok=True)
        todo.append(run)
    again = {os.path.normpath(run.folder.resolve()) for run in todo}
    for run in todo:
        source = run.config.permutations_source
        if source is not None and os.path.normpath(source.resolve()) in again:
            (run.folder / CHECKPOINT_NAME).unlink(missing_ok=True)
    return todo


def _in_process(todo: Sequence[Run], record: Any, bar: Any) -> None:
    for run in todo:
        start = time.perf_counter()
        bar.set_postfix_str(run.name, refresh=True)
        try:  # the bar over runs only: nested per-epoch bars garble a notebook's output
            train(dataclasses.replace(run.config, show_progress=False), resume=True)
            record(run, "ok", "", start)
        except Exception as err:  # one failing run must not stop the sweep
            record(run, "failed", f"{type(err).__name__}: {err}", start)


def _on_gpus(wave: Sequence[Run], gpus: Sequence[int], runs_per_gpu: int, record: Any) -> None:
    """The ordinary runs of ``wave`` spread over ``gpus`` (``runs_per_gpu`` subprocesses each), then its
    distributed runs over all of them, one after the other."""
    pending: queue.Queue[Run] = queue.Queue()
    for run in wave:
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

    threads = [threading.Thread(target=worker, args=(g,)) for g in gpus for _ in range(runs_per_gpu)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for run in (r for r in wave if r.distributed):
        start = time.perf_counter()
        record(run, *_subprocess(run, gpus), start)


def execute(
    runs: Sequence[Run],
    *,
    gpus: Sequence[int] | None = None,
    runs_per_gpu: int = 1,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Run every run that is not done (outdated ones again from scratch); return one row per run (status,
    seconds, log, error). Refuses, before anything runs, stale runs (:func:`stale_runs`) and missing data.

    A run whose fixed shuffles come from another run (``TrainConfig.shuffle_permutations_from``) runs after it:
    the runs go in waves (:func:`_waves`), each wave after the one before has ended, on the CPU and on GPUs
    alike; a run whose source failed fails, naming the missing result.

    Args:
        runs: from :func:`grid` (or built by hand).
        gpus: CUDA device indices to use (default: every visible one); empty or no CUDA means in-process on
            the CPU, one run after the other.
        runs_per_gpu: independent runs sharing each GPU at once (distributed runs hold every GPU alone).
        show_progress: a bar over runs.
    """
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError("run names must be unique")
    if isinstance(runs_per_gpu, bool) or not isinstance(runs_per_gpu, int) or runs_per_gpu < 1:
        raise ValueError(f"runs_per_gpu must be an integer >= 1, got {runs_per_gpu!r}")
    gpus = list(range(torch.cuda.device_count())) if gpus is None else list(gpus)
    stale = stale_runs(runs)
    if stale:
        detail = "; ".join(f"{name} ({', '.join(changes)})" for name, changes in stale.items())
        raise ValueError(f"these run folders hold results of other settings; move them away or choose another "
                         f"output folder, nothing was overwritten: {detail}")
    check_data(runs)
    rows: dict[str, dict[str, Any]] = {}
    todo = _todo(runs, rows)
    waves = _waves(todo)
    bar = progress(total=len(todo), enabled=show_progress, desc="runs", unit="run")
    lock = threading.Lock()

    def record(run: Run, status: str, error: str, start: float) -> None:
        with lock:
            rows[run.name] = {"run": run.name, "status": status, "seconds": round(time.perf_counter() - start, 1),
                              "log": str(run.folder / "log.txt") if gpus else "", "error": error}
            bar.update(1)

    for wave in waves:
        if gpus:
            _on_gpus(wave, gpus, runs_per_gpu, record)
        else:
            _in_process(wave, record, bar)
    bar.close()
    return pd.DataFrame([rows[name] for name in names])


def _run_from_file(path: str) -> int:
    config = TrainConfig.from_dict(json.loads(Path(path).read_text()))
    train(dataclasses.replace(config, show_progress=False), resume=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aslib.runner.sweep", description="Run one sweep run from its config.")
    parser.add_argument("--run-config", required=True, help="config.json written by aslib.runner.sweep.execute")
    return _run_from_file(parser.parse_args(argv).run_config)


if __name__ == "__main__":
    sys.exit(main())
