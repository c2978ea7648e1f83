r"""Is the l1-2 penalty special? Every penalty of :mod:`aslib.core.penalties` and Gumbel-Sinkhorn beside the
existing methods on the closed-form examples (notebooks 02 and 03), and the verdicts of the comparison.

The tables are those of the examples, one row per run: :func:`aslib.examples.graph_matching.recovery_table`
(a run is an instance, the best of its starts) and :func:`aslib.examples.two_layer.comparison_table` (a run
is one start of an instance). Every method of a table sees the same instances and starts, so each comparison is
paired over instances. Three questions:

1. **Does each method reach a permutation?** A criterion on the table's ``reached`` column: the share of runs
   whose answer is certified a permutation (the final ``M``'s l1-2 penalty below
   :data:`~aslib.core.penalty.ROUNDING_THRESHOLD`, which makes its rounding the row-wise argmax with
   ``sum_ij |M_ij - R_ij| <= 2 P(M)``, or, in graph matching, a rounded permutation that matches the graphs
   exactly) is at least ``share`` (:data:`REACH_SHARE`).
2. **Which recovers most?** ``"l12"`` against each other method, a test paired over instances per graph
   family (the family's metric, :data:`FAMILY_METRIC`) or per two-layer set-up (single-start success, an
   instance's rate being the mean over its starts).
3. **Is Lipschitz continuity what matters?** ``"l12"`` (Lipschitz, ``L = 2 sqrt(n (n - 1))``) against ``"lp"``
   (``p = 1/2``, smoothed by ``eps = 1e-3``: ``L = n p eps^(p - 1) ~ 16 n``, none as ``eps -> 0``), the same
   optimiser and schedule, pooled over every family or set-up: a test of whether l12 scores higher ("no": lp
   scores higher).

The tests carry their raw p; the notebooks Holm-correct them with their other tests
(:func:`aslib.examples.graph_matching.recovery_verdicts`, :func:`aslib.examples.two_layer.claim_verdicts`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from aslib.examples.graph_matching import compare_metric
from aslib.examples.two_layer import best_of, compare_success
from aslib.study.verdicts import Verdict, compare_means, verdict

__all__ = [
    "FAMILY_METRIC",
    "REACH_SHARE",
    "graph_penalty_summary",
    "graph_penalty_verdicts",
    "reach_verdicts",
    "two_layer_penalty_summary",
    "two_layer_penalty_verdicts",
]

#: A method "reaches permutations" when at least this share of its runs ends certified.
REACH_SHARE = 0.9
#: The metric each graph family's comparison reads (:func:`aslib.examples.graph_matching.recovery_verdicts`'s).
FAMILY_METRIC = {"regular": "isomorphic", "erdos_renyi": "recovery", "cycle": "isomorphic", "grid": "isomorphic"}
_FAMILY_NAME = {"regular": "regular graphs", "erdos_renyi": "Erdos-Renyi graphs", "cycle": "cycles", "grid": "grids"}


def _check_methods(table: pd.DataFrame, methods: Sequence[str]) -> list[str]:
    methods = list(dict.fromkeys(methods))
    if "l12" not in methods:
        raise ValueError(f"methods must include the reference 'l12', got {methods}")
    for column in ("method", "reached", "instance"):
        if column not in table:
            raise ValueError(f"table has no column {column!r} (columns: {list(table.columns)})")
    return methods


def reach_verdicts(table: pd.DataFrame, methods: Sequence[str], *, by: str, unit: str,
                   share: float = REACH_SHARE) -> list[Verdict]:
    """One criterion per method: at least ``share`` of its runs (rows of ``table``) are ``reached``; the
    evidence gives the share per value of the column ``by`` (a family or a set-up); ``unit`` names a run."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must lie in (0, 1], got {share}")
    verdicts = []
    for method in _check_methods(table, methods):
        rows = table[table["method"] == method]
        question = f"{method} reaches permutations (at least {share:.0%} of {unit} end certified)"
        if rows.empty:
            verdicts.append(verdict(question, None, "not run"))
            continue
        shares = rows.groupby(by, sort=False)["reached"].mean()
        detail = ", ".join(f"{key} {value:.2f}" for key, value in shares.items())
        verdicts.append(verdict(question, bool(rows["reached"].mean() >= share),
                                f"{int(rows['reached'].sum())} of {len(rows)} {unit}; {detail}"))
    return verdicts


def _graph_scores(table: pd.DataFrame, method: str, families: Sequence[str]) -> pd.Series:
    """Per instance of ``families``, the family's metric for ``method``, indexed by family, n, noise, instance."""
    rows = table[(table["method"] == method) & table["family"].isin(list(families))]
    by_recovery = rows["family"].map(FAMILY_METRIC) == "recovery"
    score = rows["recovery"].astype(float).where(by_recovery, rows["isomorphic"].astype(float))
    return score.set_axis(pd.MultiIndex.from_frame(rows[["family", "n", "noise", "instance"]]))


def _lipschitz_test(a: pd.Series, b: pd.Series, what: str) -> Verdict:
    question = f"Lipschitz continuity matters: l12 scores higher than lp with the same optimiser ({what})"
    if a.empty or b.empty:
        return verdict(question, None, f"{'l12' if a.empty else 'lp'} not run")
    a, b = a.align(b, join="inner")
    return compare_means(question, a.to_numpy(), b.to_numpy(), paired=True, over="instances", digits=2)


def graph_penalty_verdicts(table: pd.DataFrame, methods: Sequence[str],
                           families: Sequence[str] = ("regular", "erdos_renyi", "grid")) -> list[Verdict]:
    """Notebook 02's comparison (module docstring) on the rows of ``families`` of a
    :func:`~aslib.examples.graph_matching.recovery_table`: :func:`reach_verdicts` per method (criteria), then
    ``"l12"`` against every other method per family by
    :func:`~aslib.examples.graph_matching.compare_metric` (tests), then the Lipschitz test pooled over
    ``families`` (each instance scored by its family's metric). Raw p; the caller Holm-corrects."""
    for family in families:
        if family not in FAMILY_METRIC:
            raise ValueError(f"unknown family {family!r}; use some of {tuple(FAMILY_METRIC)}")
    methods = _check_methods(table, methods)
    rows = table[table["family"].isin(list(families))]
    verdicts = reach_verdicts(rows, methods, by="family", unit="instances")
    for family in families:
        metric = FAMILY_METRIC[family]
        noun = "recovers more vertices" if metric == "recovery" else "finds more isomorphisms"
        verdicts += [compare_metric(rows, "l12", other, metric, [family],
                                    f"l12 {noun} than {other} on {_FAMILY_NAME[family]}")
                     for other in methods if other != "l12"]
    what = "the families' metrics, pooled over " + ", ".join(_FAMILY_NAME[f] for f in families)
    verdicts.append(_lipschitz_test(_graph_scores(rows, "l12", families), _graph_scores(rows, "lp", families), what))
    return verdicts


def graph_penalty_summary(table: pd.DataFrame, methods: Sequence[str],
                          families: Sequence[str] = ("regular", "erdos_renyi", "grid")) -> pd.DataFrame:
    """One row per family and method of ``methods``: ``metric`` (the family's, :data:`FAMILY_METRIC`), its mean
    ``score`` over instances, ``reached`` (the share certified) and ``seconds`` per instance."""
    rows = table[table["family"].isin(list(families)) & table["method"].isin(list(methods))]
    out = []
    for (family, method), group in rows.groupby(["family", "method"], sort=False):
        metric = FAMILY_METRIC[family]
        out.append({"family": family, "method": method, "metric": metric, "score": float(group[metric].mean()),
                    "reached": float(group["reached"].mean()), "seconds": float(group["seconds"].mean())})
    return pd.DataFrame(out)


def _two_layer_scores(table: pd.DataFrame, method: str) -> pd.Series:
    """Per instance (set-up, n, instance), the single-start success rate of ``method`` (mean over its starts)."""
    rows = table[table["method"] == method]
    return rows.groupby(["setup", "n", "instance"])["success"].mean().astype(float)


def two_layer_penalty_verdicts(table: pd.DataFrame, methods: Sequence[str]) -> list[Verdict]:
    """Notebook 03's comparison (module docstring) on a :func:`~aslib.examples.two_layer.comparison_table`:
    :func:`reach_verdicts` per method over every start (criteria), then per set-up ``"l12"`` against every other
    method by :func:`~aslib.examples.two_layer.compare_success` (single start, paired over instances: tests),
    then the Lipschitz test pooled over every set-up. Raw p; the caller Holm-corrects."""
    methods = _check_methods(table, methods)
    present = set(table["method"])
    verdicts = reach_verdicts(table, methods, by="setup", unit="starts")
    for setup in dict.fromkeys(table["setup"]):
        for other in methods:
            if other == "l12":
                continue
            if other not in present:
                verdicts.append(verdict(f"{setup}, single start: l12 finds the teacher more often than {other}",
                                        None, f"{other} not run"))
                continue
            verdicts.append(compare_success(table, setup, "l12", other))
    what = "single-start success, pooled over " + "/".join(dict.fromkeys(table["setup"]))
    verdicts.append(_lipschitz_test(_two_layer_scores(table, "l12"), _two_layer_scores(table, "lp"), what))
    return verdicts


def two_layer_penalty_summary(table: pd.DataFrame, methods: Sequence[str], k: int) -> pd.DataFrame:
    """One row per set-up and method of ``methods``: ``success`` (single start), ``success_best`` (best of
    ``k`` starts), ``reached`` (the share of starts certified) and ``seconds`` per start, pooled over sizes."""
    rows = table[table["method"].isin(list(methods))]
    keys = ["setup", "method"]
    single = rows.groupby(keys, sort=False)[["success", "reached", "seconds"]].mean()
    single.insert(1, "success_best", best_of(rows, k).groupby(keys, sort=False)["success"].mean())
    return single.reset_index()
