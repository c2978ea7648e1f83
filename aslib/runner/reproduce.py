"""Execute the numbered notebooks with papermill under a named profile of parameters (:mod:`aslib.runner.profiles`).

Every notebook in ``notebooks/`` runs, in order, with the profile's parameters (notebooks it does not name
run with their stored defaults), plus ``output_dir`` and ``figures_dir`` which the runner sets itself.
Executed copies and results files go to ``runs/<profile>/`` (not committed); the small results files of
every notebook that succeeded (``<stem>.json`` and ``<stem>_*.csv``) are then published to
``results/<profile>/`` (committed), each JSON file stamped with the profile, device, seeds and
:func:`aslib.utils.runtime.code_fingerprint` (see :func:`publish_results`). Notebooks that declare a
``results_dir`` parameter read those published results, so they run after all the others.

Every parameter name and value is checked against the notebook's ``parameters`` cell before anything runs
(:func:`aslib.runner.profiles.check_parameters`, :func:`aslib.runner.profiles.check_parameter_types`). A failing notebook is
reported by name with its error cell; the others still run; the exit status is non-zero if any failed. Executed
notebooks keep no progress-bar output (:func:`strip_progress_output`).

Command line::

    python -m aslib.runner.reproduce --profile quick
    python -m aslib.runner.reproduce --only 02_graph_matching -p n=40     # overrides: results are not published
    python -m aslib.runner.reproduce --refresh notebooks/01_penalty_and_error_bounds.ipynb
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import papermill
from papermill.exceptions import PapermillExecutionError

from aslib.core.checks import check_positive_int
from aslib.utils.io import atomic_write
from aslib.runner.profiles import (
    REPO_ROOT,
    Profile,
    check_parameter_types,
    check_parameters,
    find_notebooks,
    load_profile,
    notebook_parameters,
    parse_override,
)
from aslib.study.plots import owned_figures, remove_stale_figures
from aslib.utils.progress import progress
from aslib.utils.runtime import code_fingerprint

__all__ = [
    "NotebookRun",
    "copy_notebook_tree",
    "execute_notebooks",
    "main",
    "outcome_table",
    "prepare",
    "publish_results",
    "refresh_notebook",
    "strip_progress_output",
    "training_plan",
]

#: Parameters every notebook declares and the runner sets itself.
RUNNER_PARAMETERS = ("output_dir", "figures_dir")
#: A notebook declaring this parameter reads the published results of the others (it runs after them).
RESULTS_PARAMETER = "results_dir"


@dataclass
class NotebookRun:
    """The outcome of executing one notebook."""

    notebook: str
    output: Path
    status: str  # "ok" or "failed"
    seconds: float
    error: str = ""


#: One progress-bar update as tqdm writes it ("name:  45%|####      | 9/20 [00:02<00:02,  4.2it/s]").
_PROGRESS_LINE = re.compile(r"\d+%\|.*\||\d+(?:/\d+)? \[[\d:<?, ]*(?:[\d.?]+(?:it|s)/(?:s|it))?\]")
_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def strip_progress_output(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove progress-bar debris from an executed notebook, in place, and return it.

    Drops every tqdm update line (and the blank lines a closed bar leaves) from stderr streams, stderr
    outputs left empty by that, widget outputs and the notebook's widget state. Other output is kept.
    """
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                lines = [line for line in re.split(r"[\r\n]", output["text"])
                         if line.strip() and not _PROGRESS_LINE.search(line)]
                if not lines:
                    continue
                output["text"] = "\n".join(lines) + "\n"
            elif _WIDGET_MIME in output.get("data", {}):
                continue
            kept.append(output)
        cell["outputs"] = kept
    return nb


def _clean_executed(path: Path, *, strip_metadata: bool) -> None:
    """Strip progress output and, for a notebook that is committed, papermill's per-cell timestamps (so
    that a refreshed notebook diffs only where outputs changed)."""
    nb = strip_progress_output(nbformat.read(path, as_version=4))
    if strip_metadata:
        nb.metadata.pop("papermill", None)
        for cell in nb.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def _execute(
    source: Path, output: Path, parameters: Mapping[str, Any], show_progress: bool
) -> NotebookRun:
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=dict(parameters),
            cwd=str(source.parent),
            progress_bar=show_progress and {"desc": source.stem, "leave": False, "ncols": 88},
        )
    except PapermillExecutionError as err:
        message = f"cell {err.cell_index} (execution count {err.exec_count}): {err.ename}: {err.evalue}"
        return NotebookRun(source.stem, output, "failed", time.perf_counter() - start, message)
    except Exception as err:  # a kernel that died or could not start is reported the same way
        return NotebookRun(source.stem, output, "failed", time.perf_counter() - start, f"{type(err).__name__}: {err}")
    finally:
        if output.is_file():
            _clean_executed(output, strip_metadata=False)
    return NotebookRun(source.stem, output, "ok", time.perf_counter() - start)


def prepare(
    profile: Profile,
    *,
    runs_dir: str | Path | None = None,
    notebooks_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    figures_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
) -> list[tuple[Path, dict[str, Any]]]:
    """The notebooks to run and the parameters each gets, every name checked; nothing is executed.

    Args:
        profile: from :func:`load_profile`.
        runs_dir: executed copies and results go to ``<runs_dir>/<profile.name>/`` (default ``runs/``).
        notebooks_dir: where the numbered notebooks are (default ``notebooks/``).
        only: notebook stems to run (default: all, or those the profile names when it is ``named_only``); an
            unknown stem is refused.
        overrides: parameters applied on top of the profile, to every selected notebook.
        figures_dir: where figures go, instead of the profile's ``figures_dir``.
        results_dir: the published results (default ``results/``), passed to notebooks that declare
            ``results_dir``; those notebooks are put after all the others.

    The runner sets the paths itself, as absolute paths: ``output_dir`` and ``figures_dir`` always,
    ``data_root`` (the repository's ``data/``) and ``results_dir`` for notebooks that declare them. Every
    value's type is checked against the notebook's default (:func:`check_parameter_types`).
    """
    notebooks = find_notebooks(notebooks_dir)
    stems = [p.stem for p in notebooks]
    unknown = sorted(set(profile.notebooks) - set(stems)) + sorted(set(only or ()) - set(stems))
    if unknown:
        raise ValueError(f"unknown notebook(s) {', '.join(unknown)}; notebooks: {', '.join(stems)}")
    if only:
        notebooks = [p for p in notebooks if p.stem in only]
    elif profile.named_only:
        notebooks = [p for p in notebooks if p.stem in profile.notebooks]

    out_dir = ((Path(runs_dir) if runs_dir is not None else REPO_ROOT / "runs") / profile.name).resolve()
    figures = Path(figures_dir if figures_dir is not None else profile.figures_dir)
    figures = (figures if figures.is_absolute() else REPO_ROOT / figures).resolve()
    published = Path(results_dir if results_dir is not None else REPO_ROOT / "results").resolve()
    prepared, readers = [], []
    for path in notebooks:
        parameters = {**profile.notebooks.get(path.stem, {}), **(overrides or {})}
        defaults = notebook_parameters(path)
        check_parameters(path, parameters, defaults)
        check_parameter_types(path, parameters, defaults)
        parameters.update(output_dir=str(out_dir), figures_dir=str(figures))
        if "data_root" in defaults and "data_root" not in parameters:
            parameters["data_root"] = str(REPO_ROOT / "data")
        if RESULTS_PARAMETER in defaults:
            parameters[RESULTS_PARAMETER] = str(published)
            readers.append((path, parameters))
        else:
            prepared.append((path, parameters))
    return prepared + readers


def training_plan(prepared: Sequence[tuple[Path, Mapping[str, Any]]]) -> pd.DataFrame:
    """Every training run the prepared notebooks will execute (see :func:`aslib.runner.sweep.plan`).

    Raises ``FileNotFoundError`` for a missing data set, so a long profile stops before it starts.
    """
    from aslib.study.arms import notebook_runs
    from aslib.runner.sweep import check_data, plan

    frames = []
    for path, parameters in prepared:
        runs = notebook_runs(path.stem, {**notebook_parameters(path), **parameters})
        if runs:
            check_data(runs)
            frames.append(plan(runs).assign(notebook=path.stem))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _seeds(parameters: Mapping[str, Any]) -> list[int]:
    """The seeds a notebook ran with: its ``seeds`` list where it has one, else ``[seed]``."""
    seeds = parameters.get("seeds", [parameters["seed"]] if "seed" in parameters else [])
    return list(seeds) if isinstance(seeds, (list, tuple)) else [seeds]


def publish_results(
    stem: str, parameters: Mapping[str, Any], profile: str, results_dir: str | Path, fingerprint: str | None = None,
) -> list[Path]:
    """Copy one notebook's small results files from its ``output_dir`` to ``<results_dir>/<profile>/``.

    The files are ``<stem>.json`` and ``<stem>_*.csv`` (never checkpoints, logs or run folders). The JSON
    file gets the keys ``profile``, ``seeds``, ``code_fingerprint`` (of the code that ran; the runner's, as
    the kernel imports the same ``aslib``), ``device`` (``"none"`` if the notebook did not record one) and
    ``tables`` (the CSV files published beside it); the notebook's own ``seeds`` and ``device`` are kept
    where it recorded them (``seeds`` otherwise from its ``seeds`` or ``seed`` parameter). Files of the
    same notebook published before and not written this time are removed, so a profile's folder never
    mixes two runs of one notebook. A notebook that wrote no ``<stem>.json`` publishes nothing. Returns the
    published paths.
    """
    source = Path(parameters["output_dir"])
    record_path = source / f"{stem}.json"
    if not record_path.is_file():
        return []
    target = Path(results_dir) / profile
    tables = sorted(source.glob(f"{stem}_*.csv"))
    record = json.loads(record_path.read_text())
    record.update(profile=profile, seeds=record.get("seeds") or _seeds(parameters),
                  device=record.get("device") or "none", code_fingerprint=fingerprint or code_fingerprint(),
                  tables=[p.name for p in tables])
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    published = [atomic_write(target / record_path.name, lambda f: f.write(text.encode()))]
    for table in tables:
        data = table.read_bytes()
        published.append(atomic_write(target / table.name, lambda f, data=data: f.write(data)))
    for old in target.glob(f"{stem}_*.csv"):
        if old not in published:
            old.unlink()
    return published


def execute_notebooks(
    prepared: Sequence[tuple[Path, Mapping[str, Any]]],
    *,
    show_progress: bool = True,
    publish_to: tuple[str, str | Path] | None = None,
    jobs: int = 1,
) -> list[NotebookRun]:
    """Execute prepared notebooks (from :func:`prepare`); one :class:`NotebookRun` each, in their order.

    A failing notebook is recorded and the others still run. ``show_progress`` shows a bar over notebooks
    and, with ``jobs = 1``, papermill's bar over cells. With ``publish_to = (profile, results_dir)`` the
    results of every notebook that succeeds are published (:func:`publish_results`) as soon as it ends, and the
    figures it owns but did not write this time are deleted (:func:`aslib.study.plots.remove_stale_figures`: e.g. notebook 06's figure
    of a notebook a profile no longer runs).
    ``jobs`` notebooks run at once, each in its own kernel (set each notebook's ``cpu_threads`` so that
    together they fit the machine); those that read the published results (``results_dir``) run after
    all the others. Each notebook keeps its training runs under ``<output_dir>/<stem>/``, so notebooks
    running at once never share a run.
    """
    jobs = check_positive_int(jobs, "jobs")
    fingerprint = code_fingerprint()
    bar = progress(total=len(prepared), enabled=show_progress, desc="notebooks", unit="notebook")

    def run(item: tuple[Path, Mapping[str, Any]]) -> NotebookRun:
        path, parameters = item
        out_dir = Path(parameters["output_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        figures = Path(parameters["figures_dir"])
        before = owned_figures(figures, path.stem)
        outcome = _execute(path, out_dir / path.name, parameters, show_progress and jobs == 1)
        if outcome.status == "ok" and publish_to is not None:
            effective = {**notebook_parameters(path), **parameters}  # the seeds may be stored defaults
            publish_results(path.stem, effective, publish_to[0], publish_to[1], fingerprint)
            remove_stale_figures(figures, path.stem, before)
        bar.set_postfix_str(path.stem)
        bar.update()
        return outcome

    writers = [item for item in prepared if RESULTS_PARAMETER not in item[1]]
    readers = [item for item in prepared if RESULTS_PARAMETER in item[1]]
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # papermill's kernels are processes: threads suffice
        outcomes = dict(zip([p for p, _ in writers], pool.map(run, writers)))
    outcomes.update((item[0], run(item)) for item in readers)
    bar.close()
    return [outcomes[path] for path, _ in prepared]


def refresh_notebook(path: str | Path, *, show_progress: bool = True) -> NotebookRun:
    """Execute a notebook with its stored defaults and, if it succeeds, replace it with the executed copy.

    The run writes to a temporary file beside the notebook; a failing run leaves the notebook untouched
    and its executed copy (with the error cell) at ``<name>.failed.ipynb``.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no notebook {path}")
    notebook_parameters(path)  # refuses a notebook without a parameters cell
    executed = path.with_name(f".{path.stem}.running.ipynb")
    run = _execute(path, executed, {}, show_progress)
    if run.status == "ok":
        _clean_executed(executed, strip_metadata=True)
        os.replace(executed, path)
        run.output = path
    else:
        run.output = executed.replace(path.with_suffix(".failed.ipynb"))
    return run


def copy_notebook_tree(dest: str | Path, *, root: str | Path | None = None) -> Path:
    """A throw-away copy of the repository's notebooks, for running them without touching tracked files.

    Creates ``<dest>/notebooks/`` (copies of the numbered notebooks), empty ``<dest>/figures/`` and
    ``<dest>/runs/``, a copy of ``results/`` and a link ``<dest>/data`` to the repository's ``data/``.
    A notebook run in ``<dest>/notebooks`` with its stored defaults (``../figures``, ``../runs/default``,
    ``../results``, ``../data``) then writes only under ``dest``; ``make test`` runs nbval there.
    Returns ``<dest>/notebooks``.
    """
    root = Path(root) if root is not None else REPO_ROOT
    dest = Path(dest)
    notebooks = dest / "notebooks"
    notebooks.mkdir(parents=True, exist_ok=False)
    for path in find_notebooks(root / "notebooks"):
        shutil.copy2(path, notebooks / path.name)
    (dest / "figures").mkdir()
    (dest / "runs").mkdir()
    if (root / "results").is_dir():
        shutil.copytree(root / "results", dest / "results")
    (dest / "data").symlink_to((root / "data").resolve(), target_is_directory=True)
    return notebooks


def outcome_table(runs: Sequence[NotebookRun]) -> pd.DataFrame:
    """One row per notebook: name, status, seconds, executed copy, error."""
    return pd.DataFrame(
        [{"notebook": r.notebook, "status": r.status, "seconds": round(r.seconds, 1),
          "executed copy": str(r.output), "error": r.error} for r in runs]
    )


def _print_plan(profile: Profile, plan: pd.DataFrame) -> None:
    import torch

    gpus = torch.cuda.device_count()
    print(f"profile {profile.name}: {profile.description.strip()}")
    print(f"devices: {f'{gpus} CUDA GPU(s)' if gpus else 'CPU only'}")
    if plan.empty:
        print("training runs: none")
        return
    by_notebook = plan.groupby("notebook").agg(
        runs=("run", "size"), new=("status", lambda s: int((s == "new").sum())),
        interrupted=("status", lambda s: int((s == "interrupted").sum())),
        done=("status", lambda s: int((s == "done").sum())), estimated_minutes=("estimated_minutes", "sum"))
    columns = ["notebook", "run", "dataset", "model", "shuffle", "lam", "seed", "epochs", "status", "estimated_minutes"]
    print("training runs, one per line (done ones are skipped, interrupted ones resume):")
    print(plan[[c for c in columns if c in plan.columns]].to_string(index=False))
    print("per notebook (estimates assume a sustained throughput, see aslib.runner.sweep.plan: rough guesses):")
    print(by_notebook.to_string())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aslib.runner.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", help="profile name in profiles/ (default: quick)")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="notebook stems to run (default: all)")
    parser.add_argument("-p", "--param", action="append", type=parse_override, default=[], metavar="NAME=VALUE",
                        help="a parameter for every selected notebook, on top of the profile")
    parser.add_argument("--runs-dir", default=None, help="where executed copies go (default: runs/)")
    parser.add_argument("--results-dir", default=None,
                        help="where results files are published (default: results/; never with -p overrides)")
    parser.add_argument("--refresh", nargs="+", metavar="NOTEBOOK.ipynb",
                        help="execute these notebooks in place with their stored defaults, then stop")
    parser.add_argument("--jobs", type=int, default=1,
                        help="notebooks executed at once, each in its own kernel (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="turn the progress bars off")
    parser.add_argument("--copy-notebooks", metavar="DIR",
                        help="copy the notebooks into a new tree DIR for nbval (see copy_notebook_tree), then stop")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be a positive integer, got {args.jobs}")
    show_progress = not args.no_progress

    if args.copy_notebooks:
        print(copy_notebook_tree(args.copy_notebooks))
        return 0
    if args.refresh:
        runs = [refresh_notebook(p, show_progress=show_progress) for p in args.refresh]
    else:
        try:
            profile = load_profile(args.profile)
            results_dir = Path(args.results_dir) if args.results_dir else REPO_ROOT / "results"
            prepared = prepare(profile, runs_dir=args.runs_dir, only=args.only, overrides=dict(args.param),
                               results_dir=results_dir)
            plan = training_plan(prepared)
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        _print_plan(profile, plan)
        # results of a profile changed by -p are not that profile's: they stay in runs/ only
        publish_to = None if args.param else (profile.name, results_dir)
        runs = execute_notebooks(prepared, show_progress=show_progress, publish_to=publish_to, jobs=args.jobs)
        if publish_to is None:
            print("parameters overridden with -p: results stay in the runs folder, nothing is published")

    table = outcome_table(runs)
    print(table.drop(columns="error").to_string(index=False))
    failed = [r for r in runs if r.status != "ok"]
    for r in failed:
        print(f"\nFAILED {r.notebook}: {r.error}\n  see {r.output}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
