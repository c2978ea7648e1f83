"""Verdict lines: every conclusion a notebook draws is one line printed by code from its results.

A verdict answers one question about a result, with the evidence beside it, e.g.::

    l12 finds more isomorphisms than relaxed on regular graphs: yes (1.00 ± 0.00 vs 0.00 ± 0.00, 12 instances
    paired, every difference +1.00: sign test, p = 0.00049, Holm 0.0034)

There are two kinds (``docs/statistics.md`` states the rules):

* a **test** compares two samples (:func:`compare_means`, :func:`significance`) or a count against its chance
  level (:func:`chance_test`); it carries its raw two-sided ``p`` and, once :func:`holm` has corrected a
  notebook's tests together, ``p_holm``. It answers "yes" (significant, the asked way), "no" (significant,
  the other way) or "not shown" (inconclusive, with the smallest difference the design could have detected);
* a **criterion** states a fact or a count against a fixed threshold (e.g. "every run finished", "P = 0 on
  permutations"): "yes" or "no", no p-value.

Either answers "n/a" for a question the run cannot answer (an arm not run, one seed), said so rather than
skipped. Notebooks print verdicts in cells tagged ``nbval-check-output`` (so a change of outcome fails the
tests) and store them in their results file under ``"verdicts"``. Markdown states the question and what would
confirm or refute the paper's claim, never the outcome.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["ALPHA", "ANSWERS", "POWER", "TestOutcome", "Verdict", "chance_test", "compare_means", "exact_detectable", "format_p", "holm",
           "significance", "verdict", "verdicts_from_results", "verdicts_to_results"]

#: The answers a verdict may give: "not shown" is a test that could not tell the difference from the noise;
#: "n/a" a question the run cannot answer.
ANSWERS: tuple[str, ...] = ("yes", "no", "not shown", "n/a")
#: The significance level of every test (two-sided), applied to the Holm-adjusted p-value once :func:`holm` ran.
ALPHA = 0.05
#: The power at which the smallest detectable difference of a "not shown" is stated.
POWER = 0.8
#: What a test asks: ``"greater"`` (is a above b? "no" when significantly below) or ``"differs"`` (do a and b
#: differ either way? "yes" for either sign, never "no").
_ASKS = ("greater", "differs")
#: Results written before the three answers of a test stored "tie" for "not shown".
_LEGACY_ANSWERS = {"tie": "not shown"}


def format_p(p: float) -> str:
    """``p`` to two significant digits, never "0": below ``1e-15`` (where float t-tests lose meaning) "< 1e-15".

    >>> format_p(0.02849), format_p(0.0)
    ('0.028', '< 1e-15')
    """
    return "< 1e-15" if p < 1e-15 else f"{p:.2g}"


def _p_equals(p: float) -> str:
    shown = format_p(p)
    return f"p {shown}" if shown.startswith("<") else f"p = {shown}"


def _decide(p: float, sign: int, asks: str, alpha: float) -> str:
    """The answer of a test of two-sided ``p`` whose observed difference has sign ``sign``."""
    if math.isnan(p):
        return "n/a"
    if p >= alpha or sign == 0:
        return "not shown"
    return "yes" if sign > 0 or asks == "differs" else "no"


@dataclass(frozen=True)
class Verdict:
    """One question, its answer (one of :data:`ANSWERS`) and the numbers behind it.

    A test (``p`` not None) also holds its raw two-sided ``p``, the Holm-adjusted ``p_holm`` (None until
    :func:`holm`), the sign of its observed difference ``sign`` (+1, -1, 0), what it ``asks`` (``"greater"`` or
    ``"differs"``) and ``detectable``, the smallest difference it could have detected (shown beside "not shown").
    """

    question: str
    answer: str
    evidence: str
    p: float | None = None
    p_holm: float | None = None
    sign: int = 0
    asks: str = "greater"
    detectable: str = ""

    def __post_init__(self) -> None:
        if self.answer not in ANSWERS:
            raise ValueError(f"answer must be one of {ANSWERS}, got {self.answer!r}")
        if not self.question.strip():
            raise ValueError("a verdict needs a question")
        if self.asks not in _ASKS:
            raise ValueError(f"asks must be one of {_ASKS}, got {self.asks!r}")

    @property
    def is_test(self) -> bool:
        """Whether the verdict is a test with a p-value (and so belongs to its notebook's Holm family)."""
        return self.p is not None and not math.isnan(self.p)

    def __str__(self) -> str:
        parts = [self.evidence] if self.evidence else []
        if self.is_test:
            assert self.p is not None
            shown = _p_equals(self.p)
            parts.append(shown + (f", Holm {format_p(self.p_holm)}" if self.p_holm is not None else ""))
        if self.answer == "not shown" and self.detectable:
            parts[-1] += f"; smallest detectable difference {self.detectable}"
        return f"{self.question}: {self.answer}" + (f" ({', '.join(parts)})" if parts else "")


def verdict(question: str, holds: bool | str | None, evidence: str = "") -> Verdict:
    """Build a criterion :class:`Verdict`: ``holds`` True/False gives "yes"/"no", None gives "n/a", a string is kept.

    >>> str(verdict("every run finished", True, "24 of 24"))
    'every run finished: yes (24 of 24)'
    """
    if holds is None:
        answer = "n/a"
    elif isinstance(holds, str):
        answer = holds
    else:
        answer = "yes" if bool(holds) else "no"
    return Verdict(question, answer, evidence)


def verdicts_to_results(verdicts: Iterable[Verdict]) -> list[dict[str, Any]]:
    """The JSON form stored under ``"verdicts"`` in a notebook's results file (NaN p-values stored as None)."""
    out = []
    for v in verdicts:
        item = asdict(v)
        out.append({key: (None if isinstance(value, float) and math.isnan(value) else value)
                    for key, value in item.items()})
    return out


def verdicts_from_results(results: Mapping[str, Any]) -> list[Verdict]:
    """The verdicts of a results file (raises ``KeyError`` naming the file's keys when it has none).

    Files written before the three answers of a test held "tie"; it is read as "not shown"."""
    if "verdicts" not in results:
        raise KeyError(f"results hold no 'verdicts' (keys: {sorted(results)})")
    items = [dict(item) for item in results["verdicts"]]
    for item in items:
        item["answer"] = _LEGACY_ANSWERS.get(item["answer"], item["answer"])
    return [Verdict(**item) for item in items]


def holm(verdicts: Sequence[Verdict], alpha: float = ALPHA) -> list[Verdict]:
    r"""The verdicts with the tests among them Holm-corrected together; criteria and "n/a" pass unchanged.

    With the ``m`` raw p-values sorted, ``p_(1) <= ... <= p_(m)``, the adjusted value of the ``i``-th is

    .. math:: \tilde p_{(i)} = \max_{j \le i} \min\{1, (m - j + 1)\, p_{(j)}\},

    which controls the family-wise error rate at ``alpha`` (Holm 1979). Each test's answer is then decided
    on ``p_holm`` (:func:`significance`'s rule). One notebook's tests are one family: call this once per
    notebook on all of its tests. Order is kept.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    tests = [i for i, v in enumerate(verdicts) if v.is_test]
    order = sorted(tests, key=lambda i: verdicts[i].p)  # type: ignore[arg-type, return-value]
    m, running = len(order), 0.0
    out = list(verdicts)
    for rank, i in enumerate(order):
        v = verdicts[i]
        assert v.p is not None
        running = max(running, min(1.0, (m - rank) * v.p))
        out[i] = replace(v, p_holm=running, answer=_decide(running, v.sign, v.asks, alpha))
    return out


@dataclass(frozen=True)
class TestOutcome:
    """What :func:`significance` found: the answer at ``alpha`` before any correction, the two-sided ``p``, the sign of
    ``mean(a) - mean(b)``, the test used, and ``detectable``, the smallest difference the t-test could have detected
    (NaN for the exact tests, whose detectable effect is a count: :func:`exact_detectable`)."""

    answer: str
    p: float
    sign: int
    method: str
    detectable: float
    sizes: tuple[int, int]


#: Values closer than this count as equal: differences of accuracies (fractions k / N) carry float rounding.
_TOLERANCE = 1e-12


def _no_spread(x: Any) -> bool:
    return bool(x.max() - x.min() <= _TOLERANCE)


def _sign_test_p(n: int) -> float:
    """Two-sided exact sign test when all ``n`` paired differences share one sign: ``2 * 2^-n = 2^-(n-1)``."""
    return min(1.0, 2.0 ** (1 - n))


def _rank_test_p(na: int, nb: int) -> float:
    """Two-sided exact rank (Mann-Whitney) test when every value of one side lies above every value of the other:
    of the ``C(na + nb, na)`` equally likely orderings under the null, 2 are as extreme."""
    return min(1.0, 2.0 / math.comb(na + nb, na))


def _t_detectable(se: float, dof: float, alpha: float) -> float:
    """``(t_{1 - alpha/2, dof} + t_{POWER, dof}) * se``: the difference a two-sided t-test detects with :data:`POWER`."""
    from scipy import stats

    return float((stats.t.ppf(1 - alpha / 2, dof) + stats.t.ppf(POWER, dof)) * se)


def significance(a: Sequence[float], b: Sequence[float], *, paired: bool = False, alpha: float = ALPHA,
                 asks: str = "greater") -> TestOutcome:
    r"""Is ``mean(a)`` above ``mean(b)`` (``asks="greater"``), or do they differ (``"differs"``), beyond the noise?

    The one two-sample test of the project, two-sided. Paired samples (the same seeds, instances or runs under two
    arms, ``len(a) == len(b)``) take the paired t-test on ``d = a - b``; unpaired ones Welch's t-test. Where the
    spread is zero an exact test replaces the t-test: every paired difference equal and non-zero gives the sign
    test's ``p = 2^{-(n-1)}``, both unpaired sides constant and different the exact rank test's
    ``p = 2 / C(n_a + n_b, n_a)``; equal sides without spread give ``p = 1``. The answer at ``alpha``: "yes"
    (``p < alpha`` the asked way), "no" (``p < alpha`` the other way, for ``"greater"``), "not shown" otherwise;
    with fewer than 2 values on either side ``"n/a"`` and ``p = nan``.

    The smallest detectable difference of a t-test, at level ``alpha`` and power :data:`POWER` (0.8), from the
    observed spread and sizes, is

    .. math:: \delta = (t_{1-\alpha/2,\,\nu} + t_{0.8,\,\nu})\, SE,

    with ``SE = s_d / sqrt(n)`` and ``nu = n - 1`` for the paired test, ``SE = sqrt(s_a^2/n_a + s_b^2/n_b)`` and
    Welch-Satterthwaite's ``nu`` for Welch's (the usual shift approximation of the noncentral t; at 2-3 degrees of freedom its power is nearer 0.77).

    >>> significance([0.9, 0.92, 0.91], [0.5, 0.52, 0.51]).answer
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
    if asks not in _ASKS:
        raise ValueError(f"asks must be one of {_ASKS}, got {asks!r}")
    sizes = (int(xa.size), int(xb.size))
    diff = float(xa.mean() - xb.mean())
    sign = 0 if abs(diff) <= _TOLERANCE else int(np.sign(diff))
    if xa.size < 2 or xb.size < 2:
        return TestOutcome("n/a", math.nan, sign, "", math.nan, sizes)
    if paired:
        d = xa - xb
        if _no_spread(d):  # every difference the same: exactly 0 or of one sign
            p = 1.0 if abs(d.mean()) <= _TOLERANCE else _sign_test_p(d.size)
            return TestOutcome(_decide(p, sign, asks, alpha), p, sign, "sign test", math.nan, sizes)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
            p = float(stats.ttest_rel(xa, xb).pvalue)
        detectable = _t_detectable(float(d.std(ddof=1)) / math.sqrt(d.size), d.size - 1, alpha)
        return TestOutcome(_decide(p, sign, asks, alpha), p, sign, "paired t-test", detectable, sizes)
    if _no_spread(xa) and _no_spread(xb):
        p = 1.0 if abs(diff) <= _TOLERANCE else _rank_test_p(xa.size, xb.size)
        return TestOutcome(_decide(p, sign, asks, alpha), p, sign, "exact rank test", math.nan, sizes)
    with warnings.catch_warnings():
        # scipy warns of "precision loss" when one side is constant (e.g. every seed recovers 1 position);
        # the variance of that side is then exactly 0 and Welch's test stays well defined.
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        p = float(stats.ttest_ind(xa, xb, equal_var=False).pvalue)
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    dof = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1))
    detectable = _t_detectable(math.sqrt(va + vb), dof, alpha)
    return TestOutcome(_decide(p, sign, asks, alpha), p, sign, "Welch's t-test", detectable, sizes)


def exact_detectable(outcome: TestOutcome, alpha: float = ALPHA) -> str:
    """What an exact test of zero spread could have detected, in words: the sign test needs ``m`` differences of one
    sign, ``m`` the smallest with ``2^-(m-1) < alpha``; the rank test a complete separation of the two sides."""
    n = outcome.sizes[0]
    if outcome.method == "sign test":
        needed = next(m for m in range(1, 64) if _sign_test_p(m) < alpha)
        return (f"{needed} of {n} pairs one way (sign test)" if n >= needed
                else f"none ({n} pairs give {_p_equals(_sign_test_p(n))} even all one way)")
    smallest = _rank_test_p(*outcome.sizes)
    return ("a complete separation of the two sides (exact rank test)" if smallest < alpha
            else f"none (a complete separation gives {_p_equals(smallest)})")


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
    asks: str = "greater",
    note: str = "",
) -> Verdict:
    """A test verdict on ``mean(a) > mean(b)`` (or ``a != b`` with ``asks="differs"``) by :func:`significance`, with
    both means ± std as evidence.

    ``over`` names what the values are (``"seeds"``, ``"instances"``); values are shown multiplied by ``scale``
    (e.g. the number of positions for a fraction), rounded to ``digits`` decimals, followed by ``unit``; ``note``
    closes the evidence before the p-value. The verdict carries ``p`` (raw) for :func:`holm`; its detectable
    difference is in the same units. With one value on either side the answer is "n/a" (noise unknown).

    >>> str(compare_means("a beats b", [0.9, 0.92], [0.5, 0.52], digits=2))
    'a beats b: yes (0.91 ± 0.01 vs 0.51 ± 0.01, 2 seeds, p = 0.0012)'
    """
    import numpy as np

    outcome = significance(a, b, paired=paired, alpha=alpha, asks=asks)
    xa, xb = np.asarray(a, dtype=float) * scale, np.asarray(b, dtype=float) * scale
    suffix = f" {unit}" if unit else ""

    def show(x: np.ndarray) -> str:
        return f"{x.mean():.{digits}f}" + (f" ± {x.std(ddof=1):.{digits}f}" if x.size > 1 else "")

    count = f"{xa.size}" if xa.size == xb.size else f"{xa.size} and {xb.size}"
    noun = over[:-1] if over.endswith("s") and xa.size == xb.size == 1 else over
    evidence = f"{show(xa)}{suffix} vs {show(xb)}{suffix}, {count} {noun}{' paired' if paired else ''}"
    if outcome.answer == "n/a":
        return Verdict(question, "n/a", evidence + ": one value, noise unknown" + note)
    if outcome.method == "sign test" and outcome.sign == 0:
        evidence += ", no pair differs"
    elif outcome.method == "sign test":
        evidence += f", every difference {(xa - xb)[0]:+.{digits}f}{suffix}: sign test"
    elif outcome.method == "exact rank test":
        evidence += ", no spread: exact rank test"
    detectable = (exact_detectable(outcome, alpha) if math.isnan(outcome.detectable)
                  else f"{outcome.detectable * scale:.{digits}f}{suffix}")
    return Verdict(question, outcome.answer, evidence + note, p=outcome.p, sign=outcome.sign, asks=asks,
                   detectable=detectable)


def chance_test(question: str, counts: Sequence[float], *, chance: float = 1.0, of: int | None = None,
                alpha: float = ALPHA) -> Verdict:
    r"""A test verdict on whether the counts of ``k`` seeds (e.g. exactly recovered positions) exceed ``chance`` per
    seed, by the exact Poisson test of their sum ``S``.

    Under the null each count is the number of fixed points of a random permutation, which is Poisson(1) to within
    ``2^n / n!`` in total variation, so ``S ~ Poisson(k * chance)``; two-sided ``p = min(1, 2 min(P(S >= s),
    P(S <= s)))``. The detectable excess is ``m - chance`` for the per-seed mean ``m`` at which ``P(Poisson(k m) >=
    c) = POWER``, ``c`` the smallest count with ``2 P(S >= c) < alpha``. ``of`` (the number of positions) is shown.
    With no count the answer is "n/a".
    """
    import numpy as np
    from scipy import optimize, stats

    x = np.asarray(counts, dtype=float)
    if x.ndim != 1 or not np.isfinite(x).all() or (x < 0).any():
        raise ValueError(f"counts must be a 1-D sequence of non-negative numbers, got {counts!r}")
    if not chance > 0:
        raise ValueError(f"chance must be positive, got {chance}")
    k = x.size
    if k == 0:
        return Verdict(question, "n/a", "no seed")
    total, mu = int(round(float(x.sum()))), k * chance
    p = min(1.0, 2 * min(float(stats.poisson.sf(total - 1, mu)), float(stats.poisson.cdf(total, mu))))
    sign = int(np.sign(x.mean() - chance))
    critical = next(c for c in range(int(mu) + 1, int(mu + 50 * math.sqrt(mu) + 50)) if 2 * stats.poisson.sf(c - 1, mu) < alpha)
    power_at = lambda m: float(stats.poisson.sf(critical - 1, k * m)) - POWER  # noqa: E731
    detectable = optimize.brentq(power_at, chance, critical + 10 * math.sqrt(critical) + 10) - chance
    spread = f" ± {x.std(ddof=1):.1f}" if k > 1 else ""
    evidence = (f"{x.mean():.1f}{spread}" + (f" of {of}" if of is not None else "")
                + f", chance {chance:g}, {k} seed{'s' if k != 1 else ''}, exact Poisson test")
    return Verdict(question, _decide(p, sign, "greater", alpha), evidence, p=p, sign=sign,
                   detectable=f"+{detectable:.1f} per seed")
