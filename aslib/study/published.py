"""Published results (``results/<profile>/``): notebook 06's tables of them and the README's generated sections.

:func:`published_results` reads every record :func:`aslib.runner.reproduce.publish_results` wrote;
:func:`verdict_table` and :func:`key_numbers_table` turn them into the tables notebook 06 shows and
:func:`update_readme` writes between the README's markers (``python -m aslib.study.published --readme``). Nothing
here computes a result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aslib.study.arms import SHUFFLE_ARMS
from aslib.study.report import NOT_RUN, RESULT_NOTEBOOKS, mean_std, reproduce_command

__all__ = [
    "KEY_NUMBERS", "README_END", "README_START", "data_description", "key_numbers_table", "markdown_table",
    "EXPLORATION_CSV", "exploration_table", "published_overview", "published_results", "readme_results",
    "update_readme", "verdict_table",
]

#: The markers around the README's generated results section (``python -m aslib.study.published --readme``).
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
        elif row["arm"] == "l12_retrained" and row.get("lam") is not None:
            label += f" (from l12 λ={row['lam']})"
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
        "Every line below is printed from `results/<profile>/` by `python -m aslib.study.published --readme`; each verdict",
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
        summary = (f"Generated from `{EXPLORATION_CSV}` by `python -m aslib.study.published --readme` (means over the listed "
                   f"seeds; test accuracy after rounding):\n\n" + markdown_table(exploration_table(csv)))
        current = _rewrite_between(notes, EXPLORATION_START, EXPLORATION_END, summary, check) and current
    return current


def main(argv: list[str] | None = None) -> int:
    import argparse

    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(prog="python -m aslib.study.published", description="Tables read from the results files.")
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
