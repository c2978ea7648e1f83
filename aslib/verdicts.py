"""Verdict lines: every conclusion a notebook draws is one line printed by code from its results.

A verdict answers one question about a result, with the evidence beside it, e.g.::

    l12 recovers more than relaxed on regular graphs: yes (0.96 vs 0.00, 3 seeds)

Notebooks print verdicts in cells tagged ``nbval-check-output`` (so a change of outcome fails the tests)
and store them in their results file under ``"verdicts"`` (so the tests of the smoke runs, notebook 06 and
the README read the same lines). Markdown states the question and what would confirm or refute the paper's
claim, never the outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ANSWERS", "Verdict", "compare_over_seeds", "verdict", "verdicts_from_results", "verdicts_to_results"]

#: The answers a verdict may give. ``"tie"`` is a comparison whose difference lies within the stated noise;
#: ``"n/a"`` is a question the run cannot answer (e.g. an arm that was not run), said so rather than skipped.
ANSWERS: tuple[str, ...] = ("yes", "no", "tie", "n/a")


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


def compare_over_seeds(
    question: str,
    a: Sequence[float],
    b: Sequence[float],
    *,
    digits: int = 3,
    scale: float = 1.0,
    unit: str = "",
) -> Verdict:
    """Is ``mean(a) > mean(b)`` beyond the seed noise? A verdict with both means ± std over seeds.

    The difference ``d = mean(a) - mean(b)`` is compared with twice its standard error
    ``s = sqrt(var(a)/k_a + var(b)/k_b)`` (sample variances over the ``k`` seeds): "yes" if ``d > 2 s``,
    "no" if ``d < -2 s``, else "tie". With a single seed on either side the noise is unknown and the answer
    is "n/a". Values are shown multiplied by ``scale`` (e.g. the number of positions for a fraction),
    rounded to ``digits`` decimals, followed by ``unit``.

    >>> str(compare_over_seeds("a beats b", [0.9, 0.92], [0.5, 0.52], digits=2))
    'a beats b: yes (0.91 ± 0.01 vs 0.51 ± 0.01, 2 seeds)'
    """
    import numpy as np

    xa, xb = np.asarray(a, dtype=float) * scale, np.asarray(b, dtype=float) * scale
    if xa.size == 0 or xb.size == 0 or not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        raise ValueError(f"{question}: need finite values on both sides, got {list(a)} and {list(b)}")
    suffix = f" {unit}" if unit else ""

    def show(x: np.ndarray) -> str:
        return f"{x.mean():.{digits}f}" + (f" ± {x.std(ddof=1):.{digits}f}" if x.size > 1 else "")

    seeds = (f"{xa.size} seed{'s' if xa.size > 1 else ''}" if xa.size == xb.size
             else f"{xa.size} and {xb.size} seeds")
    evidence = f"{show(xa)}{suffix} vs {show(xb)}{suffix}, {seeds}"
    if xa.size < 2 or xb.size < 2:
        return Verdict(question, "n/a", evidence + ": one seed, noise unknown")
    diff = xa.mean() - xb.mean()
    noise = 2.0 * float(np.sqrt(xa.var(ddof=1) / xa.size + xb.var(ddof=1) / xb.size))
    answer = "yes" if diff > noise else "no" if diff < -noise else "tie"
    return Verdict(question, answer, evidence)
