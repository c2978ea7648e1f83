"""Verdict lines and the code fingerprint."""

import numpy as np
import pytest

from aslib.utils import runtime
from aslib.study.verdicts import (
    ALPHA, POWER, Verdict, chance_test, compare_means, format_p, holm, significance, verdict, verdicts_from_results,
    verdicts_to_results,
)


def test_verdict_line_and_round_trip():
    v = verdict("l12 beats relaxed", True, "0.96 vs 0.00, 3 seeds")
    assert str(v) == "l12 beats relaxed: yes (0.96 vs 0.00, 3 seeds)" and not v.is_test
    assert str(verdict("shuffle matters", False)) == "shuffle matters: no"
    assert verdict("arm ran", None, "relaxed not in arms").answer == "n/a"
    test = holm([compare_means("a beats b", [0.41, 0.39, 0.43], [0.30, 0.24, 0.37])])[0]
    stored = {"verdicts": verdicts_to_results([v, test])}
    assert verdicts_from_results(stored) == [v, test]
    # results written before the three answers stored "tie": read as "not shown"
    legacy = {"verdicts": [{"question": "l12 vs fixed", "answer": "tie", "evidence": "p = 0.65"}]}
    assert verdicts_from_results(legacy)[0].answer == "not shown"


def test_verdict_rejects_unknown_answer_and_missing_verdicts():
    with pytest.raises(ValueError, match="answer must be one of"):
        Verdict("q", "maybe", "")
    with pytest.raises(ValueError, match="answer must be one of"):
        Verdict("q", "tie", "")
    with pytest.raises(ValueError, match="asks must be one of"):
        Verdict("q", "yes", "", asks="less")
    with pytest.raises(ValueError, match="needs a question"):
        verdict("  ", True)
    with pytest.raises(KeyError, match="no 'verdicts'"):
        verdicts_from_results({"accuracy": 0.9})


def test_code_fingerprint_follows_the_sources(tmp_path, monkeypatch):
    first = runtime.code_fingerprint()
    assert first == runtime.code_fingerprint() and len(first) == 16
    # A copy of the package with one changed source gives another fingerprint.
    import shutil
    from pathlib import Path

    copy = tmp_path / "aslib"
    shutil.copytree(Path(runtime.__file__).parents[1], copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runtime, "__file__", str(copy / "utils" / "runtime.py"))
    assert runtime.code_fingerprint() == first
    (copy / "core" / "penalty.py").write_text((copy / "core" / "penalty.py").read_text() + "\n# changed\n")
    assert runtime.code_fingerprint() != first


def _welch_p(a, b):
    """Welch's two-sided p-value from its textbook formula (an oracle independent of scipy.stats.ttest_ind)."""
    import math

    from scipy.stats import t as student

    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    stat = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return 2 * student.sf(abs(stat), dof)


@pytest.mark.parametrize("seed", range(5))
def test_significance_matches_welch_and_paired_t_formulas(seed):
    from scipy import stats
    from scipy.stats import t as student

    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.5, 0.1, size=4), rng.normal(0.45, 0.05, size=6)
    outcome = significance(a, b)
    assert outcome.p == pytest.approx(_welch_p(a, b), rel=1e-9) and outcome.method == "Welch's t-test"
    assert outcome.answer == ("not shown" if outcome.p >= ALPHA else "yes" if a.mean() > b.mean() else "no")
    x, y = rng.normal(size=8), rng.normal(size=8)
    d = x - y + 0.5
    outcome = significance(x + 0.5, y, paired=True)
    stat = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    assert outcome.p == pytest.approx(2 * student.sf(abs(stat), len(d) - 1), rel=1e-9)
    assert outcome.p == pytest.approx(stats.ttest_rel(x + 0.5, y).pvalue, rel=1e-9)


def _power_of_t_test(delta, se, dof, draws=200_000, seed=0):
    """Monte Carlo power of the two-sided t-test at ALPHA for a true difference ``delta``: the statistic is
    ``(delta + se Z) / (se sqrt(V / dof))`` with ``Z`` normal and ``V`` chi-square with ``dof`` degrees."""
    from scipy.stats import t as student

    rng = np.random.default_rng(seed)
    stat = (delta / se + rng.standard_normal(draws)) / np.sqrt(rng.chisquare(dof, draws) / dof)
    return float(np.mean(np.abs(stat) > student.ppf(1 - ALPHA / 2, dof)))


def test_the_smallest_detectable_difference_has_the_stated_power():
    # paired: se = s_d / sqrt(n), dof n - 1; at the stated difference the test rejects about 80% of the time
    d = np.array([0.03, -0.01, 0.02, 0.05, 0.00, 0.01, 0.04, -0.02])
    outcome = significance(d, np.zeros_like(d), paired=True)
    se = d.std(ddof=1) / np.sqrt(d.size)
    assert _power_of_t_test(outcome.detectable, se, d.size - 1) == pytest.approx(POWER, abs=0.03)
    assert _power_of_t_test(outcome.detectable / 2, se, d.size - 1) < 0.5
    # Welch: the same formula with the Welch-Satterthwaite degrees of freedom
    a, b = [0.41, 0.39, 0.43, 0.40], [0.30, 0.24, 0.37]
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 3
    dof = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)
    # (the shift approximation of the noncentral t runs a little low at 2-3 degrees of freedom)
    assert _power_of_t_test(significance(a, b).detectable, np.sqrt(va + vb), dof) == pytest.approx(POWER, abs=0.05)


def test_zero_spread_takes_exact_tests_never_p_zero():
    from math import comb

    from scipy import stats

    # every paired difference +0.01: the sign test, p = 2^-(n-1), as scipy's exact binomial test
    for n in (3, 6, 10):
        a, b = np.linspace(0.5, 0.9, n), np.linspace(0.5, 0.9, n) - 0.01
        outcome = significance(a, b, paired=True)
        assert outcome.method == "sign test" and outcome.p == pytest.approx(stats.binomtest(n, n, 0.5).pvalue)
        assert outcome.p == 2.0 ** (1 - n) and outcome.answer == ("yes" if n >= 6 else "not shown")
    # both sides constant: the exact rank test, 2 / C(na + nb, na), as scipy's exact Mann-Whitney test
    outcome = significance([1.0] * 4, [0.0] * 3)
    exact = stats.mannwhitneyu([1.0] * 4, [0.0] * 3, method="exact").pvalue
    assert outcome.method == "exact rank test" and outcome.p == pytest.approx(exact) == pytest.approx(2 / comb(7, 3))
    assert significance([1.0, 0.0, 1.0], [1.0, 0.0, 1.0], paired=True).p == 1.0
    line = str(compare_means("a beats b", [1.0] * 7, [0.0] * 7, paired=True, over="instances", digits=2))
    assert line == ("a beats b: yes (1.00 ± 0.00 vs 0.00 ± 0.00, 7 instances paired, every difference +1.00: "
                    "sign test, p = 0.016)")
    assert format_p(0.0) == "< 1e-15" and "p < 1e-15" in str(Verdict("q", "yes", "e", p=1e-300, sign=1))


def test_a_constant_side_gives_a_welch_test_without_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would reach a notebook's stderr, which nbval compares
        outcome = significance([1 / 64] * 3, [1 / 64, 3 / 64, 5 / 64])
        significance([0.9, 0.91, 0.92], [0.5, 0.51, 0.52], paired=True)  # differences equal up to float rounding
    assert outcome.answer == "not shown"
    assert outcome.p == pytest.approx(_welch_p([1 / 64] * 3, [1 / 64, 3 / 64, 5 / 64]), rel=1e-9)


def test_significance_answers_and_degenerate_cases():
    assert significance([0.9, 0.92, 0.91], [0.5, 0.52, 0.51]).answer == "yes"
    assert significance([0.5, 0.52, 0.51], [0.9, 0.92, 0.91]).answer == "no"
    # asked "do they differ": significantly below is a "yes" too
    assert significance([0.5, 0.52, 0.51], [0.9, 0.92, 0.91], asks="differs").answer == "yes"
    # a small difference against a large spread: within the noise
    assert significance([0.8, 0.9, 1.0], [0.79, 0.89, 0.99]).answer == "not shown"
    outcome = significance([0.9], [0.1])
    assert outcome.answer == "n/a" and np.isnan(outcome.p)
    # a stricter level turns a borderline win into "not shown"
    a, b = [0.41, 0.39, 0.43], [0.30, 0.24, 0.37]
    p = significance(a, b).p
    assert 0.01 < p < 0.2
    assert significance(a, b, alpha=p * 1.01).answer == "yes" and significance(a, b, alpha=p * 0.99).answer == "not shown"


@pytest.mark.parametrize(("a", "b", "kwargs", "match"), [
    ([float("nan"), 1.0], [0.0, 1.0], {}, "finite"),
    ([1.0, 2.0], [1.0, 2.0, 3.0], {"paired": True}, "equal lengths"),
    ([], [1.0], {}, "non-empty"),
    ([1.0, 2.0], [1.0, 2.0], {"alpha": 1.5}, "alpha"),
    ([1.0, 2.0], [1.0, 2.0], {"asks": "less"}, "asks"),
])
def test_significance_refuses_bad_samples(a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        significance(a, b, **kwargs)


def test_compare_means_shows_means_counts_p_and_what_was_detectable():
    win = compare_means("a beats b", [0.9, 0.92], [0.5, 0.52], digits=2)
    assert win.answer == "yes" and win.is_test
    assert str(win).startswith("a beats b: yes (0.91 ± 0.01 vs 0.51 ± 0.01, 2 seeds, p = ")
    unclear = compare_means("a beats b", [0.8, 0.9, 1.0], [0.79, 0.89, 0.99], digits=2)
    detectable = significance([0.8, 0.9, 1.0], [0.79, 0.89, 0.99]).detectable
    assert str(unclear) == ("a beats b: not shown (0.90 ± 0.10 vs 0.89 ± 0.10, 3 seeds, p = 0.91; smallest "
                            f"detectable difference {detectable:.2f})")
    paired = compare_means("a beats b", [1, 1, 0, 1], [0, 1, 0, 0], paired=True, over="instances", digits=2)
    assert "4 instances paired" in paired.evidence
    one = compare_means("a beats b", [0.9], [0.1], scale=64, digits=1, unit="positions")
    assert str(one) == "a beats b: n/a (57.6 positions vs 6.4 positions, 1 seed: one value, noise unknown)"
    assert not one.is_test


def test_holm_matches_a_hand_computed_example():
    # p = 0.01, 0.04, 0.03, 0.2 (m = 4): sorted 0.01 x4 = 0.04; 0.03 x3 = 0.09; 0.04 x2 = 0.08 -> max 0.09; 0.2 x1
    raw = [0.01, 0.04, 0.03, 0.2]
    tests = [Verdict(f"q{i}", "yes", "e", p=p, sign=1 if i != 1 else -1) for i, p in enumerate(raw)]
    criterion = verdict("every run finished", True, "3 of 3")
    out = holm(tests[:2] + [criterion] + tests[2:])
    assert [v.p_holm for v in out if v.is_test] == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert out[2] == criterion  # criteria pass unchanged, in place
    assert [v.answer for v in out] == ["yes", "not shown", "yes", "not shown", "not shown"]
    assert str(out[0]) == "q0: yes (e, p = 0.01, Holm 0.04)"
    # significantly the other way stays "no" after the correction
    assert holm([Verdict("q", "no", "e", p=0.001, sign=-1), Verdict("r", "yes", "e", p=0.5, sign=1)])[0].answer == "no"
    assert holm([]) == []


def test_chance_test_is_the_exact_poisson_test_of_the_recovered_positions():
    import math

    def poisson_tail(s, mu, upper):  # P(S >= s) or P(S <= s), summed by hand
        terms = [math.exp(-mu) * mu**k / math.factorial(k) for k in range(60)]
        return sum(terms[s:]) if upper else sum(terms[: s + 1])

    counts = [3, 2, 4]
    v = chance_test("l12 recovers more positions than chance", counts, of=64)
    expected = min(1.0, 2 * min(poisson_tail(9, 3.0, True), poisson_tail(9, 3.0, False)))
    assert v.p == pytest.approx(expected, rel=1e-9) and v.answer == "yes"
    few = chance_test("l12 recovers more positions than chance", [1, 3, 0], of=784)
    assert few.answer == "not shown" and "smallest detectable difference +" in str(few)
    assert str(few).startswith("l12 recovers more positions than chance: not shown (1.3 ± 1.5 of 784, chance 1, "
                               "3 seeds, exact Poisson test, p = ")
    with pytest.raises(ValueError, match="counts"):
        chance_test("q", [-1, 2])
