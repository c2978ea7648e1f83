"""Notebooks 04 and 05 as functions: one comparison of shuffle arms, from its runs to its verdicts and figures.

A comparison trains every arm of :data:`aslib.study.arms.SHUFFLE_ARMS` it is given over seeds
(:func:`aslib.study.arms.classification_runs`); this module reads the finished runs and answers the paper's
questions about them, per data set and model:

* can this set-up tell the shuffle's presence apart at all (fixed against no shuffle, either way;
  :data:`SETUP_QUESTION`)? Unless it can, a learned arm beating fixed says nothing about the paper's claim,
  and every learned-vs-fixed question says so in its wording ("a test of the paper's claim" or "not a test
  of the paper's claim at this scale");
* does the rounded l12 network beat the fixed shuffle, and a random fixed permutation where that arm ran
  (test accuracy after rounding)?
* where the ``l12_retrained`` arm ran: does the learned permutation itself, trained from scratch as a fixed
  shuffle, beat ShuffleNet's (:data:`RETRAINED_QUESTION`; and a random fixed permutation)? This separates a
  better permutation from the faster training of a dense soft matrix; the soft network never rounded
  (``test_acc_soft`` of the learned arms) is the upper bound that rounding can only lose from;
* does rounding collapse the relaxation (its rounded against its soft accuracy, the same runs paired)?
* does rounding change the l12 network's accuracy by less than the seed noise?
* where the ``l12_mirror`` arm ran: does the penalty method with the mirror step (:meth:`aslib.nn.layers.
  LearnedShuffle.mirror_update_`) beat fixed, and the paper's projected step, after rounding?

The l12 arm of these questions is the one whose penalty weight has the best mean *validation* accuracy over
seeds (:func:`choose_lam`), never chosen on test, among the runs started at :data:`HEADLINE_INIT` when such
runs exist. Comparisons of two arms are tests (:func:`aslib.study.verdicts.compare_means`): paired by seed
where both arms ran the same seeds (the paired t-test, or the exact sign test when every difference is the
same), Welch's t-test otherwise; the tests of one comparison are Holm-corrected together and answer "yes",
"no" (significantly the other way) or "not shown" with the smallest detectable difference beside it; with a
single seed there is no noise estimate, so such questions answer "n/a" with the numbers beside them. The
rounding-change question is a criterion, not a test: l12's mean rounding change must lie within twice the
standard deviation over seeds of its soft accuracy. The permutation counts and the facts are criteria too
(``docs/statistics.md``).
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from aslib.study.arms import SHUFFLE_ARMS, Run, fixed_shuffle_permutations
from aslib.utils.io import save_results, save_table
from aslib.study.plots import plot_layer_penalties, plot_learned_permutations, plot_training_curves, save_figure
from aslib.study.report import histories, layer_penalty_tables, mean_std
from aslib.training.speed import measure_speed, speed_config_for
from aslib.study.verdicts import Verdict, compare_means, holm, verdict, verdicts_to_results

__all__ = [
    "FACTS",
    "HEADLINE_INIT",
    "RETRAINED_QUESTION",
    "SETUP_QUESTION",
    "SUMMARY_COLUMNS",
    "choose_lam",
    "comparison_verdicts",
    "learned_permutations_figure",
    "layer_penalties_figure",
    "save_comparison",
    "speed_table",
    "training_curves_figure",
]

#: The start of the learned shuffles that the headline questions use when it was run: the uniform matrix
#: (plus noise). A start at a permutation makes rounding trivially free.
HEADLINE_INIT = "uniform"
#: Facts that hold whatever the numbers; :func:`save_comparison` stores whether each held everywhere.
FACTS = ("every run finished", "fixed arm changes by exactly 0 when rounded",
         "rounded l12 has the fixed network's parameter count")
#: The columns of the summary table the notebooks show.
SUMMARY_COLUMNS = ["model", "arm", "shuffle_init", "lam", "seeds", "test_acc_soft_mean", "test_acc_hard_mean",
                   "rounding_change_mean", "final_penalty_mean", "unsettled_shuffles_mean", "num_parameters_inference"]
#: The first question of each data set and model: can this set-up tell a network with ShuffleNet's shuffle from one
#: without any shuffle? Unless it can, no learned-vs-fixed verdict tests the paper's claim.
SETUP_QUESTION = "this set-up tells the shuffle's presence apart (fixed vs none)"
#: The control that isolates the permutation from the training dynamics of a soft matrix: the rounded l12
#: permutations of each seed (at the lam chosen on validation), trained from scratch as fixed shuffles
#: (the arm ``l12_retrained``), against ShuffleNet's fixed shuffle, paired by seed.
RETRAINED_QUESTION = "the learned permutation, retrained as a fixed shuffle, beats ShuffleNet's"
_NOISE_STDS = 2.0


def _headline(results: pd.DataFrame, arm: str) -> pd.DataFrame:
    rows = results[results["arm"] == arm]
    if arm in SHUFFLE_ARMS and SHUFFLE_ARMS[arm].learned and (rows["shuffle_init"] == HEADLINE_INIT).any():
        rows = rows[rows["shuffle_init"] == HEADLINE_INIT]
    return rows


def choose_lam(results: pd.DataFrame, arm: str = "l12") -> float | None:
    """The ``lam`` of ``arm`` whose runs (at :data:`HEADLINE_INIT` when run) have the best mean final validation
    accuracy over seeds (the smallest such ``lam`` on a tie); ``None`` when ``arm`` has no finished run.

    ``results`` is :func:`aslib.study.report.collect`'s table of one data set and model. Raises ``ValueError`` when it
    lacks the ``final_val_acc`` column (runs without a validation split cannot choose).
    """
    rows = _headline(results, arm)
    if rows.empty:
        return None
    if "final_val_acc" not in rows or rows["final_val_acc"].isna().all():
        raise ValueError("choosing lam needs the runs' final_val_acc (a validation split); none was recorded")
    means = rows.groupby("lam")["final_val_acc"].mean().sort_index()
    return float(means.idxmax())


def _values(results: pd.DataFrame, arm: str, column: str, lam: float | None = None) -> pd.Series:
    """``column`` of ``arm``'s headline runs (of ``lam`` where given), indexed by seed where the table has seeds."""
    rows = _headline(results, arm)
    if lam is not None:
        rows = rows[rows["lam"] == lam]
    values = rows[column].astype(float)
    return values.set_axis(rows["seed"]) if "seed" in rows else values


def _spread(values: pd.Series) -> str:
    std = values.std() if len(values) > 1 else math.nan
    return mean_std(values.mean(), std)


def _seed_count(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _noise(values: pd.Series) -> float:
    """Twice the standard deviation over seeds (NaN with a single seed)."""
    return _NOISE_STDS * float(values.std()) if len(values) > 1 else math.nan


def _compare(question: str, a: pd.Series, b: pd.Series, note: str = "", asks: str = "greater") -> Verdict:
    """``a`` above ``b`` (or, ``asks="differs"``, apart) by :func:`aslib.study.verdicts.compare_means`: paired by
    seed when both sides hold the same seeds once each (the arms share seeds), else Welch's t-test; n/a without
    one of them or with one seed."""
    if a.empty or b.empty:
        return verdict(question, None, "not run")
    same_seeds = a.index.is_unique and b.index.is_unique and set(a.index) == set(b.index)
    if same_seeds:
        b = b.loc[a.index]
    return compare_means(question, a.to_numpy(), b.to_numpy(), paired=same_seeds, note=note, asks=asks)


def _scoped(question: str, setup: Verdict) -> str:
    """A learned-vs-fixed question worded by the set-up verdict (fixed vs none, Holm-adjusted): a test of the
    paper's claim where the set-up tells the shuffle's presence apart, "not at this scale" where it does not."""
    if setup.answer == "yes":
        return question + ", a test of the paper's claim"
    if setup.answer == "not shown":
        return question + ", not a test of the paper's claim at this scale (fixed vs none not shown)"
    return question + f", not a test of the paper's claim (fixed vs none {setup.answer})"


def _permutation_verdicts(part: pd.DataFrame, where: str, lam: float | None) -> list[Verdict]:
    """Whether every learned shuffle of the penalised arms was a permutation (``P(M)`` below the rounding
    threshold) when it was rounded, from the runs' ``unsettled_shuffles`` and ``uniform_shuffles``."""
    if "unsettled_shuffles" not in part:  # results written before these counts existed
        return []
    out = []
    for arm, arm_lam in (("l12", lam), ("l12_mirror", None)):
        unsettled = _values(part, arm, "unsettled_shuffles", arm_lam)
        if unsettled.empty:
            continue
        uniform = _values(part, arm, "uniform_shuffles", arm_lam)
        out.append(verdict(where + f"every learned shuffle of {arm} is at a permutation when rounded",
                           bool((unsettled == 0).all()),
                           f"{int((unsettled > 0).sum())} of {len(unsettled)} runs rounded shuffles above the "
                           f"threshold, {int(uniform.sum())} layers in all at or near J/n"))
    return out


def _rounding_verdicts(part: pd.DataFrame, where: str, lam: float | None, note: str) -> list[Verdict]:
    """The relaxation's rounded against soft accuracy (a paired test over the same runs) and l12's rounding
    change against the seed noise (a criterion: ``|mean change| < 2 std`` of its soft accuracy)."""
    out = [_compare(where + "rounding keeps the relaxation's accuracy (rounded above soft)",
                    _values(part, "relaxed", "test_acc_hard"), _values(part, "relaxed", "test_acc_soft"))]
    question = where + "rounding changes l12's accuracy by less than the seed noise"
    l12_change = _values(part, "l12", "rounding_change", lam)
    noise = _noise(_values(part, "l12", "test_acc_soft", lam))
    evidence = f"change {_spread(l12_change)}, {_seed_count(len(l12_change))}{note}"
    if l12_change.empty:
        out.append(verdict(question, None, "not run"))
    elif math.isnan(noise):
        out.append(verdict(question, None, evidence + ", no noise estimate"))
    else:
        out.append(verdict(question, abs(l12_change.mean()) < noise, evidence + f", noise {noise:.3f}"))
    return out


def _pair_verdicts(part: pd.DataFrame, where: str) -> tuple[list[Verdict], list[int]]:
    """The verdicts of one data set and model, and the positions of its learned-vs-fixed ones (the first verdict
    is the set-up's: fixed against none, either way)."""
    lam = choose_lam(part)
    note = f"; lam {lam:g} chosen on validation" if lam is not None else ""
    l12_hard = _values(part, "l12", "test_acc_hard", lam)
    fixed_hard = _values(part, "fixed", "test_acc_hard")
    out = [_compare(where + SETUP_QUESTION, fixed_hard, _values(part, "none", "test_acc_hard"), asks="differs"),
           _compare(where + "rounded l12 beats fixed", l12_hard, fixed_hard, note)]
    scoped = [1]
    random_hard = _values(part, "random", "test_acc_hard")
    if not random_hard.empty:  # the random fixed permutation only where its arm ran
        scoped.append(len(out))
        out.append(_compare(where + "rounded l12 beats a random fixed permutation", l12_hard, random_hard, note))
    retrained_hard = _values(part, "l12_retrained", "test_acc_hard", lam)
    if not retrained_hard.empty:  # the permutation itself, trained from scratch as a fixed shuffle
        scoped.append(len(out))
        out.append(_compare(where + RETRAINED_QUESTION, retrained_hard, fixed_hard, note))
        if not random_hard.empty:
            out.append(_compare(where + "the learned permutation, retrained as a fixed shuffle, beats a random fixed "
                                "permutation", retrained_hard, random_hard, note))
    out += _rounding_verdicts(part, where, lam, note)
    out += _permutation_verdicts(part, where, lam)
    mirror_hard = _values(part, "l12_mirror", "test_acc_hard")
    if not mirror_hard.empty:  # the mirror step only where its arm ran
        scoped.append(len(out))
        out.append(_compare(where + "rounded l12 (mirror step) beats fixed", mirror_hard, fixed_hard))
        out.append(_compare(where + "rounded l12 (mirror step) beats rounded l12 (projected step)", mirror_hard,
                            l12_hard, note))
    fixed_change = _values(part, "fixed", "rounding_change")
    out.append(verdict(where + "fixed arm changes by exactly 0 when rounded",
                       bool((fixed_change == 0).all()) if len(fixed_change) else None, _seed_count(len(fixed_change))))
    params = {arm: _values(part, arm, "num_parameters_inference") for arm in ("l12", "fixed")}
    same = (None if params["l12"].empty or params["fixed"].empty
            else bool(params["l12"].max() == params["fixed"].max() == params["l12"].min()))
    out.append(verdict(where + "rounded l12 has the fixed network's parameter count", same,
                       " vs ".join(f"{int(p.max())}" for p in params.values() if len(p))))
    return out, scoped


def comparison_verdicts(results: pd.DataFrame, runs: Sequence[Run]) -> list[Verdict]:
    """The verdicts of a comparison (one notebook), per data set and model (in the order of ``runs``), as the module
    says, Holm-corrected together (:func:`aslib.study.verdicts.holm`); each learned-vs-fixed question is then worded
    by its set-up verdict (:data:`SETUP_QUESTION`, after the correction). Plus the facts that hold whatever the
    numbers: every run finished, the fixed arm loses nothing when rounded, the rounded l12 network has the fixed
    network's parameter count."""
    out = [verdict("every run finished", len(results) == len(runs), f"{len(results)} of {len(runs)}")]
    scoped: list[tuple[int, int]] = []  # (set-up verdict, learned-vs-fixed verdict) positions
    pairs = list(dict.fromkeys((r.config.dataset, r.config.model) for r in runs))
    for dataset, model in pairs:
        part = results[(results["dataset"] == dataset) & (results["model"] == model)] if not results.empty else results
        where = f"{dataset}, {model}: "
        if part.empty:
            out.append(verdict(where + "results", None, "no finished run"))
            continue
        verdicts, positions = _pair_verdicts(part, where)
        scoped += [(len(out), len(out) + i) for i in positions]
        out += verdicts
    out = holm(out)
    for setup, i in scoped:
        out[i] = replace(out[i], question=_scoped(out[i].question, out[setup]))
    return out


def _first_runs(runs: Sequence[Run]) -> list[Run]:
    first = runs[0].config
    return [r for r in runs if (r.config.seed, r.config.model, r.config.dataset) == (first.seed, first.model,
                                                                                        first.dataset)]


def training_curves_figure(runs: Sequence[Run], name: str, figures_dir: str | os.PathLike[str]) -> Any:
    """Validation accuracy and total penalty per epoch of every run of the first seed, data set and model."""
    first = _first_runs(runs)
    several_inits = len({r.config.shuffle_init for r in first if r.config.shuffle == "learned"}) > 1
    labels = {r.name: r.arm + (f" lam={r.config.lam}" if r.arm in ("l12", "l12_retrained") else "")
              + (f" ({r.config.shuffle_init})" if r.config.shuffle == "learned" and several_inits else "")
              for r in first}
    curves = {labels[key]: history for key, history in histories(first).items()}
    c = first[0].config
    fig = plot_training_curves(curves, title=f"{c.dataset}, {c.model}, seed {c.seed}")
    return save_figure(fig, name, figures_dir)


def _first_l12(runs: Sequence[Run]) -> Run | None:
    return next((r for r in runs if r.arm == "l12" and (r.folder / "result.json").is_file()), None)


def layer_penalties_figure(runs: Sequence[Run], name: str, figures_dir: str | os.PathLike[str]) -> Any:
    """``P(M_l)`` of every learned shuffle of the first finished l12 run per epoch (None without one)."""
    run = _first_l12(runs)
    if run is None:
        return None
    c = run.config
    fig = plot_layer_penalties(layer_penalty_tables([run])[run.name],
                               title=f"l12 (lam={c.lam}), {c.model}, seed {c.seed}")
    return save_figure(fig, name, figures_dir)


def learned_permutations_figure(runs: Sequence[Run], name: str, figures_dir: str | os.PathLike[str]) -> Any:
    """The rounded permutations of the first finished l12 run against ShuffleNet's fixed ones (None without)."""
    run = _first_l12(runs)
    if run is None:
        return None
    learned = pd.read_json(run.folder / "result.json", typ="series")["permutations"]
    c = run.config
    fig = plot_learned_permutations(learned, fixed_shuffle_permutations(c),
                                    title=f"l12 (lam={c.lam}), {c.model}, seed {c.seed}")
    return save_figure(fig, name, figures_dir)


def speed_table(runs: Sequence[Run], repeats: int) -> pd.DataFrame:
    """:func:`aslib.training.speed.measure_speed` of each model of ``runs`` (its first run's architecture), one row each."""
    rows = []
    for model in dict.fromkeys(r.config.model for r in runs):
        config = next(r.config for r in runs if r.config.model == model)
        speed = measure_speed(speed_config_for(config, repeats=repeats, warmup=2, show_progress=False, device="auto"))
        rows.append({"model": model, **speed})
    return pd.DataFrame(rows)


def save_comparison(output_dir: str | os.PathLike[str], stem: str, *, runs: Sequence[Run], results: pd.DataFrame,
                    summary: pd.DataFrame, speed: pd.DataFrame, verdicts: Sequence[Verdict], device: str,
                    datasets: Sequence[str], models: Sequence[str], data: str = "") -> Path:
    """Write ``<stem>_runs.csv``, ``<stem>_summary.csv``, ``<stem>_speed.csv`` and ``<stem>.json`` (with the
    verdicts, and under ``"checks"`` whether each of :data:`FACTS` held everywhere) into ``output_dir``; returns the
    JSON's path.

    ``data`` describes where the images came from when the data set's name alone does not say it (e.g.
    "CIFAR-10 (exact train; test 1k exact + 9k JPEG)"); it defaults to the data sets' names."""
    save_table(output_dir, f"{stem}_runs", results)
    save_table(output_dir, f"{stem}_summary", summary)
    save_table(output_dir, f"{stem}_speed", speed)
    return save_results(output_dir, stem, {
        "profile": Path(output_dir).name, "device": device, "datasets": list(datasets), "models": list(models),
        "data": data or ", ".join(datasets),
        "runs": len(runs), "finished": len(results), "verdicts": verdicts_to_results(verdicts),
        "checks": {fact: all(v.answer == "yes" for v in verdicts if v.question.endswith(fact)) for fact in FACTS},
        "summary": summary.to_dict(orient="records"), "speed": speed.to_dict(orient="records"),
    })
