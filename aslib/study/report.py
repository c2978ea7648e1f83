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
from aslib.training.train import LAYER_PENALTIES_NAME

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
            "lam": row["lam"] if row["arm"] == "l12" else "",
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
# --- Published results (results/<profile>/) and the README's results section --------------------------------

__all__ += [
    "KEY_NUMBERS", "README_END", "README_START", "data_description", "key_numbers_table", "markdown_table",
    "EXPLORATION_CSV", "exploration_table", "published_overview", "published_results", "readme_results",
    "update_readme", "verdict_table",
]

#: The markers around the README's generated results section (``python -m aslib.study.report --readme``).
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
#: A hand-run exploration's table (``results/<name>.csv``) and the markers around its generated summary in
#: ``results/README.md``.
EXPLORATION_CSV = "cifar-cpu-exploration.csv"
EXPLORATION_START, EXPLORATION_END = "<!-- exploration:start -->", "<!-- exploration:end -->"


def published_results(results_dir: str | os.PathLike[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Every published results record: ``{profile: {notebook: record}}``, profiles and notebooks sorted.

    Reads ``<results_dir>/<profile>/<notebook>.json`` as written by :func:`aslib.runner.reproduce.publish_results`;
    a missing ``results_dir`` gives an empty mapping.
    """
    root = Path(results_dir)
    published: dict[str, dict[str, dict[str, Any]]] = {}
    for folder in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        records = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("[0-9][0-9]_*.json"))}
        if records:
            published[folder.name] = records
    return published


def published_overview(results_dir: str | os.PathLike[str], fingerprint: str | None = None) -> pd.DataFrame:
    """One row per published profile and results notebook (:data:`RESULT_NOTEBOOKS` and any other published
    one): published or not run, data, seeds, device, and ``code``: "current" when the record's fingerprint is
    ``fingerprint`` (default: :func:`aslib.utils.runtime.code_fingerprint` of the code now), else "stale" with
    the record's fingerprint, since such numbers came from other code and must be regenerated."""
    from aslib.utils.runtime import code_fingerprint

    fingerprint = fingerprint or code_fingerprint()
    rows = []
    for profile, records in published_results(results_dir).items():
        for notebook in sorted(set(RESULT_NOTEBOOKS) | set(records)):
            record = records.get(notebook)
            if record is None:
                rows.append({"profile": profile, "notebook": notebook, "status": NOT_RUN,
                             "command": reproduce_command(Path(results_dir) / profile, notebook)})
                continue
            made_by = record.get("code_fingerprint", "")
            rows.append({"profile": profile, "notebook": notebook, "status": "published",
                         **{k: v for k, v in _provenance(profile, record).items() if k != "code"},
                         "code": "current" if made_by == fingerprint else f"stale ({made_by[:8] or 'no fingerprint'})"})
    return pd.DataFrame(rows)


def data_description(record: dict[str, Any]) -> str:
    """The data a record's numbers come from: its ``data`` entry, else its data set(s), else "synthetic"."""
    if record.get("data"):
        return str(record["data"])
    datasets = record.get("datasets") or ([record["dataset"]] if record.get("dataset") else [])
    return ", ".join(map(str, datasets)) if datasets else "synthetic"


def _provenance(profile: str, record: dict[str, Any]) -> dict[str, str]:
    seeds = record.get("seeds")
    return {
        "data": data_description(record),
        "profile": profile,
        "seeds": ", ".join(map(str, seeds)) if isinstance(seeds, list) else str(seeds if seeds is not None else ""),
        "device": str(record.get("device", "")),
        "code": str(record.get("code_fingerprint", ""))[:8],
    }


def verdict_table(results_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per verdict line of every published record, with its data, profile, seeds, device and code.

    A record without verdicts gives one row that says so (its notebook has not been brought to verdicts).
    """
    from aslib.study.verdicts import verdicts_from_results

    rows = []
    for profile, records in published_results(results_dir).items():
        for notebook, record in records.items():
            lines = ([str(v) for v in verdicts_from_results(record)] if "verdicts" in record
                     else ["(no verdicts recorded)"])
            rows += [{"notebook": notebook, "verdict": line, **_provenance(profile, record)} for line in lines]
    return pd.DataFrame(rows, columns=["notebook", "verdict", "data", "profile", "seeds", "device", "code"])


def _by_method(values: Any, digits: int = 3) -> str:
    """``{"l12": 0.917, "relaxed": 0.0}`` as ``"l12 0.917, relaxed 0.000"`` (all methods, none left out)."""
    if not isinstance(values, dict):
        return ""
    return ", ".join(f"{k} {v:.{digits}f}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in values.items())


def _summary_accuracy(record: dict[str, Any]) -> str:
    """Every arm of a training notebook's summary: rounded test accuracy, mean ± std over its seeds, grouped
    by data set and model; learned arms name their initialisation and (l12) their penalty weight."""
    groups: dict[str, list[str]] = {}
    for row in record.get("summary") or []:
        label = row["arm"]
        if row["arm"] in SHUFFLE_ARMS and SHUFFLE_ARMS[row["arm"]].learned and row.get("shuffle_init"):
            label += f" ({row['shuffle_init']}"
            label += f", λ={row['lam']})" if row["arm"] == "l12" and row.get("lam") is not None else ")"
        value = mean_std(row.get("test_acc_hard_mean"), row.get("test_acc_hard_std"))
        groups.setdefault(f"{row.get('dataset', '')} {row.get('model', '')}".strip(), []).append(f"{label} {value}")
    return "; ".join(f"{group}: {', '.join(parts)}" for group, parts in groups.items())


def _per_arm(record: dict[str, Any], suffix: str) -> str:
    """``<arm>_<suffix>`` entries of a flat record (notebook 07) as ``"arm value, ..."``."""
    values = {k[: -len(suffix) - 1]: v for k, v in record.items() if k.endswith(f"_{suffix}")
              and not k.startswith("chance") and isinstance(v, (int, float))}
    return _by_method(values)


#: The key numbers the README shows beside the verdicts: notebook -> (quantity, how to read it).
KEY_NUMBERS = {
    "01_penalty_and_error_bounds": [
        ("median true l1 error / bound 2P(M)", lambda r: f"{r['l1_bound_tightness_median']:.2f}"),
        ("error-bound violations (l1, max)",
         lambda r: f"{r['error_bound_l1_violations']}, {r['error_bound_max_violations']}"),
    ],
    "02_graph_matching": [
        ("regular graphs matched up to an automorphism", lambda r: _by_method(r["regular_isomorphic"])),
        ("noisy Erdős–Rényi graphs: vertices recovered", lambda r: _by_method(r["er_recovery"])),
    ],
    "03_two_layer_closed_form": [
        ("random starts recovering the teacher", lambda r: _by_method(r["success"])),
    ],
    "04_cifar": [("test accuracy after rounding, by arm", _summary_accuracy)],
    "05_imagenet": [("test accuracy after rounding, by arm", _summary_accuracy)],
    "07_permuted_input": [
        ("test accuracy after rounding, by arm", lambda r: _per_arm(r, "test_acc_hard")),
        ("exact recovery of the latent permutation, by arm", lambda r: _per_arm(r, "exact_recovery")),
    ],
}


def key_numbers_table(results_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The :data:`KEY_NUMBERS` of every published record, one row per quantity, every arm or method shown.

    A quantity whose entries a record lacks is left out (its verdict rows still show the record).
    """
    rows = []
    for profile, records in published_results(results_dir).items():
        for notebook, record in records.items():
            for quantity, read in KEY_NUMBERS.get(notebook, []):
                try:
                    value = read(record)
                except (KeyError, TypeError):
                    continue
                if value:
                    rows.append({"notebook": notebook, "quantity": quantity, "value": value,
                                 **_provenance(profile, record)})
    return pd.DataFrame(rows, columns=["notebook", "quantity", "value", "data", "profile", "seeds", "device", "code"])


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub markdown table of ``table`` (``|`` in cells escaped, no index)."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |",
             "| " + " | ".join("---" for _ in table.columns) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def readme_results(results_dir: str | os.PathLike[str]) -> str:
    """The README's results section, from the published results only: the verdict table and the key numbers."""
    verdicts, numbers = verdict_table(results_dir), key_numbers_table(results_dir)
    if verdicts.empty:
        return "No results are published yet: run `make reproduce` (it writes `results/<profile>/`)."
    return "\n".join([
        "Every line below is printed from `results/<profile>/` by `python -m aslib.study.report --readme`; each verdict",
        "is the line its notebook printed. `code` is the fingerprint of the code that produced the record.",
        "",
        markdown_table(verdicts),
        "",
        "Key numbers (every arm or method the record holds):",
        "",
        markdown_table(numbers),
    ])


def exploration_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Means over seeds of an exploration CSV (one row per run), one row per setting: the settings that vary,
    ``seeds``, test accuracy after rounding (mean ± sample std), and the means of ``rounding_change``,
    ``final_penalty`` and ``cpu_seconds`` (empty where no run recorded it)."""
    runs = pd.read_csv(path)
    settings = ["tag", "stages_repeats", "max_train_samples", "epochs", "arm", "lam", "shuffle_init", "shuffle_noise",
                "projection_sweeps"]
    settings = [c for c in settings if c in runs and (c == "arm" or runs[c].nunique() > 1)]
    groups = runs.groupby(settings, sort=False)
    table = groups.agg(seeds=("seed", lambda s: " ".join(str(v) for v in s)),
                       test_acc_hard_mean=("test_acc_hard", "mean"), test_acc_hard_std=("test_acc_hard", "std"),
                       rounding_change=("rounding_change", "mean"), final_penalty=("final_penalty", "mean"),
                       cpu_seconds=("cpu_seconds", "mean")).reset_index()
    table.insert(len(settings) + 1, "test_acc_hard",
                 [mean_std(m, s) for m, s in zip(table.pop("test_acc_hard_mean"), table.pop("test_acc_hard_std"))])
    table["rounding_change"] = table["rounding_change"].map("{:+.3f}".format)
    table["final_penalty"] = table["final_penalty"].map("{:.2f}".format)
    table["cpu_seconds"] = table["cpu_seconds"].map(lambda v: "" if np.isnan(v) else f"{v:.0f}")
    return table


def _rewrite_between(path: Path, start_marker: str, end_marker: str, body: str, check: bool) -> bool:
    """Replace the text between two markers of ``path`` by ``body``; whether it was already current."""
    from aslib.utils.io import atomic_write

    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    text = path.read_text()
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"{path} needs the markers {start_marker} and {end_marker}, in that order")
    updated = text[: start + len(start_marker)] + "\n" + body + "\n" + text[end:]
    if updated != text and not check:
        atomic_write(path, lambda f: f.write(updated.encode()))
    return updated == text


def update_readme(readme: str | os.PathLike[str], results_dir: str | os.PathLike[str], *, check: bool = False) -> bool:
    """Rewrite the part of ``readme`` between :data:`README_START` and :data:`README_END` from the results,
    and, where ``<results_dir>/README.md`` and :data:`EXPLORATION_CSV` exist, that file's summary of the
    exploration (:func:`exploration_table`). Returns whether both were already current. With ``check``
    nothing is written. Raises ``ValueError`` if markers are missing or out of order, ``FileNotFoundError``
    if ``readme`` is.
    """
    current = _rewrite_between(Path(readme), README_START, README_END, readme_results(results_dir), check)
    notes, csv = Path(results_dir) / "README.md", Path(results_dir) / EXPLORATION_CSV
    if notes.is_file() and csv.is_file():
        summary = (f"Generated from `{EXPLORATION_CSV}` by `python -m aslib.study.report --readme` (means over the listed "
                   f"seeds; test accuracy after rounding):\n\n" + markdown_table(exploration_table(csv)))
        current = _rewrite_between(notes, EXPLORATION_START, EXPLORATION_END, summary, check) and current
    return current


def main(argv: list[str] | None = None) -> int:
    import argparse

    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(prog="python -m aslib.study.report", description="Tables read from the results files.")
    parser.add_argument("--readme", action="store_true",
                        help="rewrite README.md's results section and results/README.md's summary from results/")
    parser.add_argument("--check", action="store_true", help="with --readme: write nothing, exit 1 if out of date")
    parser.add_argument("--results-dir", default=str(root / "results"))
    parser.add_argument("--readme-path", default=str(root / "README.md"))
    args = parser.parse_args(argv)
    if not args.readme:
        parser.error("nothing to do: pass --readme")
    current = update_readme(args.readme_path, args.results_dir, check=args.check)
    print(f"{args.readme_path}: {'current' if current else ('out of date' if args.check else 'rewritten')}")
    return 1 if args.check and not current else 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
