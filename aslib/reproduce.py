"""Execute the numbered notebooks with papermill under a named profile of parameters.

A profile is a YAML file ``profiles/<name>.yaml``::

    description: what the profile is for
    figures_dir: figures            # relative to the repository root
    notebooks:
      01_penalty_and_error_bounds:  # notebook stem -> parameters for its `parameters` cell
        n_random: 2000

Every notebook in ``notebooks/`` runs, in order, with the profile's parameters (notebooks it does not name
run with their stored defaults), plus ``output_dir`` and ``figures_dir`` which the runner sets itself.
Executed copies and results files go to ``runs/<profile>/``. Every parameter name is checked against the
notebook's ``parameters`` cell before anything runs (papermill itself only warns on an unknown name). A
failing notebook is reported by name with its error cell; the others still run; the exit status is
non-zero if any failed.

Command line::

    python -m aslib.reproduce --profile quick
    python -m aslib.reproduce --only 02_graph_matching -p n=40
    python -m aslib.reproduce --refresh notebooks/01_penalty_and_error_bounds.ipynb
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import papermill
import yaml
from papermill.exceptions import PapermillExecutionError

from aslib.progress import progress

__all__ = [
    "NotebookRun",
    "Profile",
    "check_parameters",
    "execute_notebooks",
    "find_notebooks",
    "load_profile",
    "main",
    "notebook_parameters",
    "prepare",
    "refresh_notebook",
    "training_plan",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Parameters every notebook declares and the runner sets itself.
RUNNER_PARAMETERS = ("output_dir", "figures_dir")


@dataclass(frozen=True)
class Profile:
    """A named set of parameters per notebook (see the module docstring for the file format)."""

    name: str
    description: str = ""
    figures_dir: str = "figures"
    notebooks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass
class NotebookRun:
    """The outcome of executing one notebook."""

    notebook: str
    output: Path
    status: str  # "ok" or "failed"
    seconds: float
    error: str = ""


def load_profile(name: str, profiles_dir: str | Path | None = None) -> Profile:
    """Read ``<profiles_dir>/<name>.yaml``; an unknown name is refused with the list of profiles."""
    profiles_dir = Path(profiles_dir) if profiles_dir is not None else REPO_ROOT / "profiles"
    path = profiles_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in profiles_dir.glob("*.yaml"))
        raise ValueError(f"unknown profile {name!r}: no file {path}; known profiles: {', '.join(known) or 'none'}")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = set(raw) - {"description", "figures_dir", "notebooks"}
    if unknown:
        raise ValueError(f"profile {path} has unknown keys {sorted(unknown)}")
    notebooks = raw.get("notebooks") or {}
    if not isinstance(notebooks, Mapping) or not all(isinstance(v, Mapping) or v is None for v in notebooks.values()):
        raise ValueError(f"profile {path}: 'notebooks' must map notebook names to parameter mappings")
    return Profile(
        name=name,
        description=raw.get("description", ""),
        figures_dir=raw.get("figures_dir", "figures"),
        notebooks={k: dict(v or {}) for k, v in notebooks.items()},
    )


def find_notebooks(notebooks_dir: str | Path | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in ``notebooks_dir``, in order."""
    notebooks_dir = Path(notebooks_dir) if notebooks_dir is not None else REPO_ROOT / "notebooks"
    return sorted(p for p in notebooks_dir.glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """Names and default values of the notebook's ``parameters`` cell (via ``papermill.inspect_notebook``).

    The cell holds literals only, so each default is evaluated with ``ast.literal_eval``.
    """
    inferred = papermill.inspect_notebook(str(path))
    if not inferred:
        raise ValueError(f"{path} has no cell tagged 'parameters'")
    defaults = {}
    for name, info in inferred.items():
        try:
            defaults[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{Path(path).name}: parameter {name} = {info['default']} is not a literal") from err
    return defaults


def check_parameters(path: str | Path, parameters: Mapping[str, Any], valid: Mapping[str, Any] | None = None) -> None:
    """Refuse any name in ``parameters`` that the notebook's ``parameters`` cell does not define.

    ``valid`` is the notebook's :func:`notebook_parameters`, when the caller has already read them.
    """
    valid = notebook_parameters(path) if valid is None else valid
    unknown = sorted(set(parameters) - set(valid))
    if unknown:
        raise ValueError(
            f"{Path(path).name}: unknown parameter(s) {', '.join(unknown)}; valid names: {', '.join(sorted(valid))}"
        )


def _strip_run_metadata(path: Path) -> None:
    """Drop papermill's per-cell timestamps so that a refreshed notebook diffs only where outputs changed."""
    nb = nbformat.read(path, as_version=4)
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
    return NotebookRun(source.stem, output, "ok", time.perf_counter() - start)


def prepare(
    profile: Profile,
    *,
    runs_dir: str | Path | None = None,
    notebooks_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    figures_dir: str | Path | None = None,
) -> list[tuple[Path, dict[str, Any]]]:
    """The notebooks to run and the parameters each gets, every name checked; nothing is executed.

    Args:
        profile: from :func:`load_profile`.
        runs_dir: executed copies and results go to ``<runs_dir>/<profile.name>/`` (default ``runs/``).
        notebooks_dir: where the numbered notebooks are (default ``notebooks/``).
        only: notebook stems to run (default: all); an unknown stem is refused.
        overrides: parameters applied on top of the profile, to every selected notebook.
        figures_dir: where figures go, instead of the profile's ``figures_dir``.

    The runner sets the paths itself, as absolute paths: ``output_dir`` and ``figures_dir`` always, and
    ``data_root`` (the repository's ``data/``) for notebooks that declare it.
    """
    notebooks = find_notebooks(notebooks_dir)
    stems = [p.stem for p in notebooks]
    unknown = sorted(set(profile.notebooks) - set(stems)) + sorted(set(only or ()) - set(stems))
    if unknown:
        raise ValueError(f"unknown notebook(s) {', '.join(unknown)}; notebooks: {', '.join(stems)}")
    if only:
        notebooks = [p for p in notebooks if p.stem in only]

    out_dir = ((Path(runs_dir) if runs_dir is not None else REPO_ROOT / "runs") / profile.name).resolve()
    figures = Path(figures_dir if figures_dir is not None else profile.figures_dir)
    figures = (figures if figures.is_absolute() else REPO_ROOT / figures).resolve()
    prepared = []
    for path in notebooks:
        parameters = {**profile.notebooks.get(path.stem, {}), **(overrides or {})}
        defaults = notebook_parameters(path)
        check_parameters(path, parameters, defaults)
        parameters.update(output_dir=str(out_dir), figures_dir=str(figures))
        if "data_root" in defaults and "data_root" not in parameters:
            parameters["data_root"] = str(REPO_ROOT / "data")
        prepared.append((path, parameters))
    return prepared


def training_plan(prepared: Sequence[tuple[Path, Mapping[str, Any]]]) -> pd.DataFrame:
    """Every training run the prepared notebooks will execute (see :func:`aslib.sweep.plan`).

    Raises ``FileNotFoundError`` for a missing data set, so a long profile stops before it starts.
    """
    from aslib.arms import notebook_runs
    from aslib.sweep import check_data, plan

    frames = []
    for path, parameters in prepared:
        runs = notebook_runs(path.stem, {**notebook_parameters(path), **parameters})
        if runs:
            check_data(runs)
            frames.append(plan(runs).assign(notebook=path.stem))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def execute_notebooks(prepared: Sequence[tuple[Path, Mapping[str, Any]]], *, show_progress: bool = True) -> list[NotebookRun]:
    """Execute prepared notebooks (from :func:`prepare`) in order; one :class:`NotebookRun` each.

    A failing notebook is recorded and the next one runs. ``show_progress`` shows a bar over notebooks and
    papermill's bar over cells.
    """
    runs = []
    bar = progress(prepared, enabled=show_progress, desc="notebooks", unit="notebook")
    for path, parameters in bar:
        bar.set_postfix_str(path.stem)
        out_dir = Path(parameters["output_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        runs.append(_execute(path, out_dir / path.name, parameters, show_progress))
    return runs


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
        _strip_run_metadata(executed)
        os.replace(executed, path)
        run.output = path
    else:
        run.output = executed.replace(path.with_suffix(".failed.ipynb"))
    return run


def summarise(runs: Sequence[NotebookRun]) -> pd.DataFrame:
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
    print("training runs (done ones are skipped, interrupted ones resume; estimates are rough):")
    print(by_notebook.to_string())


def _parse_override(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, yaml.safe_load(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aslib.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", help="profile name in profiles/ (default: quick)")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="notebook stems to run (default: all)")
    parser.add_argument("-p", "--param", action="append", type=_parse_override, default=[], metavar="NAME=VALUE",
                        help="a parameter for every selected notebook, on top of the profile")
    parser.add_argument("--runs-dir", default=None, help="where executed copies go (default: runs/)")
    parser.add_argument("--refresh", nargs="+", metavar="NOTEBOOK.ipynb",
                        help="execute these notebooks in place with their stored defaults, then stop")
    parser.add_argument("--no-progress", action="store_true", help="turn the progress bars off")
    args = parser.parse_args(argv)
    show_progress = not args.no_progress

    if args.refresh:
        runs = [refresh_notebook(p, show_progress=show_progress) for p in args.refresh]
    else:
        try:
            profile = load_profile(args.profile)
            prepared = prepare(profile, runs_dir=args.runs_dir, only=args.only, overrides=dict(args.param))
            plan = training_plan(prepared)
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        _print_plan(profile, plan)
        runs = execute_notebooks(prepared, show_progress=show_progress)

    table = summarise(runs)
    print(table.drop(columns="error").to_string(index=False))
    failed = [r for r in runs if r.status != "ok"]
    for r in failed:
        print(f"\nFAILED {r.notebook}: {r.error}\n  see {r.output}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
