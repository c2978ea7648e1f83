"""Verdict lines: every conclusion a notebook draws is one line printed by code from its results.

A verdict answers one question about a result, with the evidence beside it, e.g.::

    l12 recovers more than relaxed on regular graphs: yes (0.96 vs 0.00, 3 seeds)

Notebooks print verdicts in cells tagged ``nbval-check-output`` (so a change of outcome fails the tests)
and store them in their results file under ``"verdicts"`` (so the tests of the smoke runs, notebook 06 and
the README read the same lines). Markdown states the question and what would confirm or refute the paper's
claim, never the outcome.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ALPHA", "ANSWERS", "Verdict", "compare_means", "significance", "verdict", "verdicts_from_results",
           "verdicts_to_results"]

#: The answers a verdict may give. ``"tie"`` is a comparison whose difference lies within the stated noise;
#: ``"n/a"`` is a question the run cannot answer (e.g. an arm that was not run), said so rather than skipped.
ANSWERS: tuple[str, ...] = ("yes", "no", "tie", "n/a")
#: The significance level of every comparison verdict (two-sided t-tests, see :func:`significance`).
ALPHA = 0.05


@dataclass(frozen=True)
class Verdict:
    """One question, its answer (one of :data:`ANSWERS`) and the numbers behind it."""

    question: str
    answer: str
    evidence: str

    def __post_init__(self) -> None:
        if self.answer not in ANSWERS:
            raise ValueError(f"answer must be one of {ANSWERS}, got {self.answer!r}")
        if not self.question.strip():
            raise ValueError("a verdict needs a question")

    def __str__(self) -> str:
        return f"{self.question}: {self.answer} ({self.evidence})" if self.evidence else f"{self.question}: {self.answer}"


def verdict(question: str, holds: bool | str | None, evidence: str = "") -> Verdict:
    """Build a :class:`Verdict`: ``holds`` True/False gives "yes"/"no", None gives "n/a", a string is kept.

    >>> str(verdict("l12 beats relaxed", True, "0.96 vs 0.00, 3 seeds"))
    'l12 beats relaxed: yes (0.96 vs 0.00, 3 seeds)'
    """
    if holds is None:
        answer = "n/a"
    elif isinstance(holds, str):
        answer = holds
    else:
        answer = "yes" if bool(holds) else "no"
    return Verdict(question, answer, evidence)


def verdicts_to_results(verdicts: Iterable[Verdict]) -> list[dict[str, str]]:
    """The JSON form stored under ``"verdicts"`` in a notebook's results file."""
    return [asdict(v) for v in verdicts]


def verdicts_from_results(results: Mapping[str, Any]) -> list[Verdict]:
    """The verdicts of a results file (raises ``KeyError`` naming the file's keys when it has none)."""
    if "verdicts" not in results:
        raise KeyError(f"results hold no 'verdicts' (keys: {sorted(results)})")
    return [Verdict(**item) for item in results["verdicts"]]


def significance(a: Sequence[float], b: Sequence[float], *, paired: bool = False,
                 alpha: float = ALPHA) -> tuple[str, float]:
    """Is ``mean(a)`` above ``mean(b)`` beyond the noise? ``("yes" | "no" | "tie" | "n/a", p)``.

    The one statistical rule of every comparison verdict in the project. Unpaired samples (e.g. runs with
    different seeds) take Welch's t-test (``scipy.stats.ttest_ind(a, b, equal_var=False)``), paired ones
    (the same instances or starts under two methods, ``len(a) == len(b)``) the paired t-test
    (``scipy.stats.ttest_rel``); both two-sided. The answer is "yes" when ``p < alpha`` and
    ``mean(a) > mean(b)``, "no" when ``p < alpha`` and ``mean(a) < mean(b)``, "tie" otherwise. Without
    spread (every paired difference equal, or both samples constant) the difference is certain: its sign
    decides, "tie" when it is zero (``p`` is then 0 or 1). With fewer than 2 values on either side the
    noise is unknown: ``("n/a", nan)``.

    >>> significance([0.9, 0.92, 0.91], [0.5, 0.52, 0.51])[0]
    'yes'
    """
    import numpy as np
    from scipy import stats

    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.ndim != 1 or xb.ndim != 1 or xa.size == 0 or xb.size == 0:
        raise ValueError(f"need two non-empty 1-D samples, got shapes {xa.shape} and {xb.shape}")
    if not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        raise ValueError(f"need finite values on both sides, got {xa.tolist()} and {xb.tolist()}")
    if paired and xa.size != xb.size:
        raise ValueError(f"paired samples need equal lengths, got {xa.size} and {xb.size}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if xa.size < 2 or xb.size < 2:
        return "n/a", float("nan")
    diff = float(xa.mean() - xb.mean())
    spread = np.ptp(xa - xb) if paired else max(np.ptp(xa), np.ptp(xb))
    if spread == 0.0:
        return ("tie", 1.0) if diff == 0.0 else ("yes" if diff > 0 else "no", 0.0)
    with warnings.catch_warnings():
        # scipy warns of "precision loss" when one side is constant (e.g. every seed recovers 1 position);
        # the variance of that side is then exactly 0 and Welch's test stays well defined.
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        test = stats.ttest_rel(xa, xb) if paired else stats.ttest_ind(xa, xb, equal_var=False)
    p = float(test.pvalue)
    if p >= alpha:
        return "tie", p
    return ("yes" if diff > 0 else "no"), p


def compare_means(
    question: str,
    a: Sequence[float],
    b: Sequence[float],
    *,
    paired: bool = False,
    over: str = "seeds",
    alpha: float = ALPHA,
    digits: int = 3,
    scale: float = 1.0,
    unit: str = "",
) -> Verdict:
    """A verdict on ``mean(a) > mean(b)`` by :func:`significance`, with both means ± std as evidence.

    ``over`` names what the values are (``"seeds"``, ``"instances"``, ``"starts"``); values are shown
    multiplied by ``scale`` (e.g. the number of positions for a fraction), rounded to ``digits`` decimals,
    followed by ``unit``; the p-value closes the evidence. With one value on either side the answer is
    "n/a" (noise unknown).

    >>> str(compare_means("a beats b", [0.9, 0.92], [0.5, 0.52], digits=2))
    'a beats b: yes (0.91 ± 0.01 vs 0.51 ± 0.01, 2 seeds, p = 0.0012)'
    """
    import numpy as np

    answer, p = significance(a, b, paired=paired, alpha=alpha)
    xa, xb = np.asarray(a, dtype=float) * scale, np.asarray(b, dtype=float) * scale
    suffix = f" {unit}" if unit else ""

    def show(x: np.ndarray) -> str:
        return f"{x.mean():.{digits}f}" + (f" ± {x.std(ddof=1):.{digits}f}" if x.size > 1 else "")

    count = f"{xa.size}" if xa.size == xb.size else f"{xa.size} and {xb.size}"
    noun = over[:-1] if over.endswith("s") and xa.size == xb.size == 1 else over
    evidence = f"{show(xa)}{suffix} vs {show(xb)}{suffix}, {count} {noun}{' paired' if paired else ''}"
    if answer == "n/a":
        return Verdict(question, answer, evidence + ": one value, noise unknown")
    return Verdict(question, answer, evidence + f", p = {p:.2g}")
