"""Reading results: the files of training runs and the tables of notebook 06.

Nothing here computes a result. :func:`collect`, :func:`histories` and :func:`layer_penalty_tables` read the files
of training runs, :func:`summarise_seeds` takes means over seeds, and the tables of notebook 06 are assembled from
``<output_dir>/<notebook>.json`` and the CSV tables beside it. A notebook whose results are missing shows as "not
run", with the command that produces them, never as an error or a made-up number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aslib.study.arms import SHUFFLE_ARMS, Run
from aslib.training.state import LAYER_PENALTIES_NAME

__all__ = [
    "CONFIG_COLUMNS",
    "NOT_RUN",
    "RESULT_NOTEBOOKS",
    "classification_table",
    "closed_form_summary",
    "collect",
    "histories",
    "layer_penalty_tables",
    "mean_std",
    "overview",
    "reproduce_command",
    "summarise_seeds",
]

#: Notebooks whose results notebook 06 reads, with what each contributes.
RESULT_NOTEBOOKS = {
    "01_penalty_and_error_bounds": "facts about the penalty",
    "02_graph_matching": "graph matching",
    "03_two_layer_closed_form": "two-layer network",
    "04_cifar": "CIFAR (digits in the quick profile)",
    "05_imagenet": "ImageNet (a tiny digits run in the quick profile)",
    "07_permuted_input": "a learned shuffle against an unknown pixel permutation",
}
NOT_RUN = "not run"


def reproduce_command(output_dir: str | os.PathLike[str], notebook: str) -> str:
    """The command that writes ``notebook``'s results into ``output_dir`` (whose name is the profile)."""
    return f"python -m aslib.runner.reproduce --profile {Path(output_dir).name} --only {notebook}"


def _load(output_dir: str | os.PathLike[str], notebook: str) -> dict[str, Any] | None:
    path = Path(output_dir) / f"{notebook}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def overview(output_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per results notebook: whether it ran, on which profile and device, or the command to run it."""
    rows = []
    for notebook, what in RESULT_NOTEBOOKS.items():
        results = _load(output_dir, notebook)
        rows.append({
            "notebook": notebook, "what": what,
            "status": "ran" if results is not None else NOT_RUN,
            "profile": (results or {}).get("profile", Path(output_dir).name),
            "device": (results or {}).get("device", ""),
            "command": "" if results is not None else reproduce_command(output_dir, notebook),
        })
    return pd.DataFrame(rows)


def mean_std(mean: float, std: float, digits: int = 3) -> str:
    """``"0.912 ± 0.004"``; the spread is left out for a single seed (NaN standard deviation)."""
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return ""
    if std is None or (isinstance(std, float) and np.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def classification_table(output_dir: str | os.PathLike[str], notebook: str) -> pd.DataFrame:
    """The accuracy table of notebook 04 or 05: data set x model x arm (x lam), over seeds.

    Columns: test accuracy soft and after rounding (mean ± std over seeds), the change from rounding, the
    final penalty, parameters and FLOPs at inference, inference images per second (fixed shuffle for the
    arms without a learned matrix, the rounded network for the others) and the device it was measured on.
    A notebook that has not run gives a one-row table that says so and how to run it.
    """
    results = _load(output_dir, notebook)
    summary_path = Path(output_dir) / f"{notebook}_summary.csv"
    if results is None or not summary_path.is_file():
        return pd.DataFrame([{"status": NOT_RUN, "command": reproduce_command(output_dir, notebook)}])
    summary = pd.read_csv(summary_path)
    speed_path = Path(output_dir) / f"{notebook}_speed.csv"
    speed = pd.read_csv(speed_path).set_index("model") if speed_path.is_file() else pd.DataFrame()
    rows = []
    for row in summary.to_dict("records"):
        learned = row["arm"] in SHUFFLE_ARMS and SHUFFLE_ARMS[row["arm"]].learned
        measured = speed.loc[row["model"]] if row["model"] in speed.index else None
        rows.append({
            "dataset": row["dataset"], "model": row["model"], "arm": row["arm"],
            "init": row["shuffle_init"] if learned else "",
            "lam": row["lam"] if row["arm"] in ("l12", "l12_retrained") else "",  # the control's: its source's
            "seeds": int(row["seeds"]),
            "test acc (soft)": mean_std(row["test_acc_soft_mean"], row["test_acc_soft_std"]),
            "test acc (rounded)": mean_std(row["test_acc_hard_mean"], row["test_acc_hard_std"]),
            "change from rounding": mean_std(row["rounding_change_mean"], row["rounding_change_std"]),
            "final penalty": mean_std(row["final_penalty_mean"], row["final_penalty_std"], 2),
            "parameters": int(row["num_parameters_inference"]),
            "FLOPs": int(measured["hardened_flops" if learned else "fixed_flops"]) if measured is not None else "",
            "images/s": round(float(measured["hardened_images_per_s" if learned else "fixed_images_per_s"]))
            if measured is not None else "",
        })
    table = pd.DataFrame(rows)
    table.attrs.update(profile=results.get("profile", ""), device=results.get("device", ""))
    return table


def closed_form_summary(output_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Graph matching and the two-layer network, one row per method: the headline rates of notebooks 02 and 03."""
    graph, two_layer = _load(output_dir, "02_graph_matching"), _load(output_dir, "03_two_layer_closed_form")
    methods = sorted(set((graph or {}).get("regular_isomorphic", {})) | set((two_layer or {}).get("success", {})))
    if not methods:
        return pd.DataFrame([{"status": NOT_RUN,
                              "command": " ; ".join(reproduce_command(output_dir, nb) for nb in
                                                    ("02_graph_matching", "03_two_layer_closed_form"))}])
    rows = []
    for method in methods:
        row: dict[str, Any] = {"method": method}
        if graph is not None:
            row["regular graphs: isomorphic"] = graph["regular_isomorphic"].get(method)
            row["noisy ER graphs: recovery"] = graph["er_recovery"].get(method)
            row["seconds per instance"] = graph["seconds_per_instance"].get(method)
        else:
            row["graph matching"] = NOT_RUN
        if two_layer is not None:
            row["two-layer: success"] = two_layer["success"].get(method)
            row["two-layer: final penalty"] = two_layer["final_penalty"].get(method)
        else:
            row["two-layer network"] = NOT_RUN
        rows.append(row)
    return pd.DataFrame(rows)


# --- the files of training runs ----------------------------------------------------------------------


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
            if run.arm in SHUFFLE_ARMS:  # settings that do not apply stay empty (lam is 0 there)
                settings.update({k: None for k in SHUFFLE_ARMS[run.arm].irrelevant() if k in settings and k != "lam"})
            rows.append({"run": run.name, "arm": run.arm, **settings,
                         **{k: v for k, v in result.items() if not isinstance(v, (list, dict))}})
    return pd.DataFrame(rows)


def summarise_seeds(
    results: pd.DataFrame,
    by: Sequence[str] = ("dataset", "model", "arm", "shuffle_init", "projection_sweeps", "lam"),
    metrics: Sequence[str] = ("test_acc_soft", "test_acc_hard", "rounding_change", "final_penalty",
                              "unsettled_shuffles"),
) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each metric, per group, with the number of seeds.

    ``unsettled_shuffles`` counts a run's learned shuffles that were above the rounding threshold when rounded
    (a run that reports accuracies of a network rounded far from its soft one); metrics absent from ``results``
    (runs written before it) are left out.

    The default groups are every setting of a run but its seed (settings that do not apply to an arm are
    empty in :func:`collect` and group together).

    Columns: the ``by`` columns, ``seeds``, then ``<metric>_mean`` and ``<metric>_std`` for each metric
    (std is NaN for a single seed), plus ``num_parameters_inference`` where present.
    """
    if results.empty:
        return pd.DataFrame(columns=[*by, "seeds"])
    grouped = results.groupby(list(by), dropna=False, sort=False)
    table = grouped[[m for m in metrics if m in results]].agg(["mean", "std"])
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
