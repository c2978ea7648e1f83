"""Published results (``results/<profile>/``): notebook 06's tables of them and the README's generated sections.

:func:`published_results` reads every record :func:`aslib.runner.reproduce.publish_results` wrote;
:func:`verdict_table` and :func:`key_numbers_table` turn them into the tables notebook 06 shows and
:func:`update_readme` writes between the README's markers (``python -m aslib.study.published --readme``), grouped
by profile; :func:`claims_table` answers each claim of the paper (:data:`CLAIMS`) from the verdict lines that decide
it, for the table at the README's top. Nothing here computes a result.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aslib.study.arms import SHUFFLE_ARMS
from aslib.study.report import NOT_RUN, RESULT_NOTEBOOKS, mean_std, reproduce_command

__all__ = [
    "CLAIMS", "CLAIMS_END", "CLAIMS_START", "Claim", "KEY_NUMBERS", "PROFILE_ORDER", "README_END", "README_START",
    "claims_table", "readme_claims", "data_description", "key_numbers_table", "markdown_table",
    "EXPLORATION_CSV", "exploration_table", "published_overview", "published_results", "readme_results",
    "update_readme", "verdict_table",
]

#: The markers around the README's generated results section (``python -m aslib.study.published --readme``).
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
#: The markers around the README's generated claims table, at its top.
CLAIMS_START, CLAIMS_END = "<!-- claims:start -->", "<!-- claims:end -->"
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


def _summary_accuracy(record: dict[str, Any], column: str = "test_acc_hard", learned_only: bool = False) -> str:
    """Every arm of a training notebook's summary (the learned ones only with ``learned_only``): the test accuracy
    ``column`` (``test_acc_hard``: after rounding; ``test_acc_soft``: the soft network), mean ± std over its seeds,
    grouped by data set and model; learned arms name their initialisation and (l12) their penalty weight."""
    groups: dict[str, list[str]] = {}
    for row in record.get("summary") or []:
        if learned_only and not (row["arm"] in SHUFFLE_ARMS and SHUFFLE_ARMS[row["arm"]].learned):
            continue
        label = row["arm"]
        if row["arm"] in SHUFFLE_ARMS and SHUFFLE_ARMS[row["arm"]].learned and row.get("shuffle_init"):
            label += f" ({row['shuffle_init']}"
            label += f", λ={row['lam']})" if row["arm"] == "l12" and row.get("lam") is not None else ")"
        elif row["arm"] == "l12_retrained" and row.get("lam") is not None:
            label += f" (from l12 λ={row['lam']})"
        value = mean_std(row.get(f"{column}_mean"), row.get(f"{column}_std"))
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
    **{notebook: [("test accuracy after rounding, by arm", _summary_accuracy),
                  ("the upper bound: test accuracy of the soft network, never rounded (learned arms)",
                   lambda r: _summary_accuracy(r, "test_acc_soft", learned_only=True))]
       for notebook in ("04_cifar", "05_imagenet")},
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


def _stated_once(table: pd.DataFrame, column: str) -> str:
    """The values of ``column`` in a profile's rows, once each, with their notebooks when they differ."""
    values = list(dict.fromkeys(table[column]))
    if len(values) == 1:
        return f"`{values[0]}`" if column == "code" else str(values[0])
    return "; ".join(f"{v} ({', '.join(dict.fromkeys(table.loc[table[column] == v, 'notebook']))})" for v in values)


def readme_results(results_dir: str | os.PathLike[str]) -> str:
    """The README's results section, from the published results only: per profile (largest scale first), its
    device and code once, then its verdict lines and key numbers with their data and seeds."""
    verdicts, numbers = verdict_table(results_dir), key_numbers_table(results_dir)
    if verdicts.empty:
        return "No results are published yet: run `make reproduce` (it writes `results/<profile>/`)."
    out = ["Every line below is printed from `results/<profile>/` by `python -m aslib.study.published --readme`; each verdict",
           "is the line its notebook printed. `code` is the fingerprint of the code that produced the records."]
    for profile in sorted(dict.fromkeys(verdicts["profile"]), key=_profile_rank):
        rows = verdicts[verdicts["profile"] == profile]
        out += ["", f"#### Profile `{profile}`", "",
                f"Device: {_stated_once(rows, 'device')}. Code: {_stated_once(rows, 'code')}.", "",
                markdown_table(rows[["notebook", "verdict", "data", "seeds"]])]
        keys = numbers[numbers["profile"] == profile]
        if not keys.empty:
            out += ["", "Key numbers (every arm or method the record holds):", "",
                    markdown_table(keys[["notebook", "quantity", "value", "data", "seeds"]])]
    return "\n".join(out)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and the verdict lines that decide it (:data:`CLAIMS`).

    Attributes:
        claim: the paper's claim, in a line.
        notebook: the notebook whose verdicts decide it.
        lines: ``(fragment, supports)``: every verdict whose question contains ``fragment`` decides, and it
            supports the claim when its answer is ``supports`` (``"yes"``, or ``"no"`` for a question the claim
            answers in the negative, e.g. "rounding keeps the relaxation's accuracy").
        every: the claim holds when every deciding line supports it (True) or when any does (False: the paper's
            set-up is one of several this project could not tell apart).
        datasets: only records on one of these data sets decide (empty: any).
        profile: where to run the claim when no record decides it.
    """

    claim: str
    notebook: str
    lines: tuple[tuple[str, str], ...]
    every: bool = True
    datasets: tuple[str, ...] = ()
    profile: str = "quick"


_REAL_IMAGES = ("cifar10", "cifar100", "imagenet")
#: The paper's claims and the verdict lines that decide each: the claims table at the top of the README is
#: generated from them and from ``results/`` alone (:func:`claims_table`); no answer is typed.
CLAIMS: tuple[Claim, ...] = (
    Claim("the l1-2 penalty is exact on D_n (zero exactly at permutations), concave, Lipschitz, with error bounds",
          "01_penalty_and_error_bounds",
          (("exactness: P = 0 on permutations", "yes"), ("P is concave on D_n", "yes"),
           ("<= 2 sqrt(n(n-1))", "yes"), ("the error bounds hold", "yes"))),
    Claim("graph matching: the penalty reaches a permutation and finds isomorphisms where the relaxation cannot",
          "02_graph_matching",
          (("l12 ends at a vertex", "yes"), ("l12 finds more isomorphisms than relaxed on regular graphs", "yes"))),
    Claim("a two-layer network: the relaxation fails to recover the teacher's permutation, the penalty succeeds "
          "(in at least one of four set-ups)", "03_two_layer_closed_form",
          (("supports the paper's claim (relaxation fails, penalty succeeds)", "yes"),), every=False),
    Claim("rounding the plain relaxation loses accuracy; rounding the penalised network does not",
          "04_cifar", (("rounding keeps the relaxation's accuracy", "no"),
                       ("rounding changes l12's accuracy by less than the seed noise", "yes"))),
    Claim("AutoShuffleNet (rounded) beats ShuffleNet's fixed shuffle on real images", "04_cifar",
          (("rounded l12 beats fixed", "yes"),), datasets=_REAL_IMAGES, profile="cifar-cpu"),
    Claim("... and the learned permutation itself does (control: retrained from scratch as a fixed shuffle)",
          "04_cifar", (("the learned permutation, retrained as a fixed shuffle, beats ShuffleNet's", "yes"),),
          datasets=_REAL_IMAGES, profile="cifar-cpu"),
    Claim("AutoShuffleNet beats ShuffleNet on ImageNet", "05_imagenet", (("rounded l12 beats fixed", "yes"),),
          datasets=("imagenet",), profile="paper"),
)
#: The order in which a claim's rows list profiles: the largest scale first.
PROFILE_ORDER = ("paper", "gpu-short", "cifar-cpu", "quick")


def _supports(answer: str, supports: str) -> str:
    """A verdict's answer read for a claim: "yes" (it supports it), "no" (significantly the other way), or as it
    was ("not shown", "n/a")."""
    if answer in ("yes", "no"):
        return "yes" if answer == supports else "no"
    return answer


def _combine(answers: list[str], every: bool) -> str:
    """Every line supporting (``every``) or any: "yes"; the reverse: "no"; else "not shown" before "n/a"."""
    decided, against = ("yes", "no") if every else ("no", "yes")
    if (decided == "yes" and all(a == "yes" for a in answers)) or (decided == "no" and any(a == "yes" for a in answers)):
        return "yes"
    if (against == "no" and any(a == "no" for a in answers)) or (against == "yes" and all(a == "no" for a in answers)):
        return "no"
    return "not shown" if "not shown" in answers else "n/a"


def _claim_row(claim: Claim, profile: str, record: dict[str, Any]) -> dict[str, str] | None:
    """The claim's row from one record, or None when none of its lines is among the record's verdicts."""
    from aslib.study.verdicts import verdicts_from_results

    deciding = [(v, supports, v.question[v.question.index(fragment) + len(fragment):].strip(", "))
                for v in verdicts_from_results(record) for fragment, supports in claim.lines if fragment in v.question]
    if not deciding:
        return None
    answer = _combine([_supports(v.answer, s) for v, s, _ in deciding], claim.every)
    # the wording a learned-vs-fixed verdict takes from its set-up verdict ("a test of the paper's claim", ...)
    scopes = sorted({rest for _, _, rest in deciding if "test of the paper's claim" in rest})
    if scopes:
        answer += f", {'; '.join(scopes)}"
    if len(deciding) == 1:
        line = deciding[0][0]
        shown = str(line)[len(line.question) + 2:]  # "<its answer> (<evidence>)"
        answer += shown[len(line.answer):] if line.answer == answer.split(",")[0] else f" (the line: {shown})"
    else:
        answer += f" ({len(deciding)} verdict lines below)"
    return {"claim": claim.claim, "this project's answer": answer, **_provenance(profile, record),
            "notebook": f"[{claim.notebook}](notebooks/{claim.notebook}.ipynb)"}


def _profile_rank(profile: str) -> tuple[int, str]:
    return (PROFILE_ORDER.index(profile) if profile in PROFILE_ORDER else len(PROFILE_ORDER), profile)


def claims_table(results_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per claim of :data:`CLAIMS` and profile whose record decides it (largest scale first): the answer
    read from the verdict lines, the scale (data, profile, seeds, device) and the notebook; a claim no record
    decides gives one "not run" row with the command that runs it."""
    published = published_results(results_dir)
    rows = []
    for claim in CLAIMS:
        found = []
        for profile in sorted(published, key=_profile_rank):
            record = published[profile].get(claim.notebook)
            if record is None or "verdicts" not in record:
                continue
            if claim.datasets and not set(record.get("datasets") or []) & set(claim.datasets):
                continue
            row = _claim_row(claim, profile, record)
            if row is not None:
                found.append(row)
        rows += found or [{"claim": claim.claim, "this project's answer":
                           f"{NOT_RUN} ({reproduce_command(Path(results_dir) / claim.profile, claim.notebook)})",
                           "data": f"needs {' or '.join(claim.datasets)}" if claim.datasets else "",
                           "profile": claim.profile, "seeds": "", "device": "",
                           "code": "", "notebook": f"[{claim.notebook}](notebooks/{claim.notebook}.ipynb)"}]
    table = pd.DataFrame(rows, columns=["claim", "this project's answer", "data", "profile", "seeds", "device",
                                        "code", "notebook"])
    return table.drop(columns="code")


def readme_claims(results_dir: str | os.PathLike[str]) -> str:
    """The README's claims section: :func:`claims_table` as markdown, under a line saying where it comes from."""
    return "\n".join([
        "Each answer is read from the verdict lines of `results/` (which lines decide which claim: "
        "`aslib/study/published.py`, `CLAIMS`); \"not shown\" means the seeds could not tell, \"n/a\" that the run "
        "cannot answer it. The verdicts themselves are under [Results](#results).",
        "",
        markdown_table(claims_table(results_dir)),
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
    """Rewrite the part of ``readme`` between :data:`README_START` and :data:`README_END` from the results, the
    claims table between :data:`CLAIMS_START` and :data:`CLAIMS_END` where ``readme`` has them, and, where ``<results_dir>/README.md`` and :data:`EXPLORATION_CSV` exist, that file's summary of the
    exploration (:func:`exploration_table`). Returns whether both were already current. With ``check``
    nothing is written. Raises ``ValueError`` if markers are missing or out of order, ``FileNotFoundError``
    if ``readme`` is.
    """
    current = _rewrite_between(Path(readme), README_START, README_END, readme_results(results_dir), check)
    if CLAIMS_START in Path(readme).read_text():
        current = _rewrite_between(Path(readme), CLAIMS_START, CLAIMS_END, readme_claims(results_dir), check) and current
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
