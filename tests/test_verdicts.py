"""Verdict lines and the code fingerprint."""

import numpy as np
import pytest

from aslib.utils import runtime
from aslib.study.verdicts import ALPHA, Verdict, compare_means, significance, verdict, verdicts_from_results, verdicts_to_results


def test_verdict_line_and_round_trip():
    v = verdict("l12 beats relaxed", True, "0.96 vs 0.00, 3 seeds")
    assert str(v) == "l12 beats relaxed: yes (0.96 vs 0.00, 3 seeds)"
    assert str(verdict("shuffle matters", False)) == "shuffle matters: no"
    assert verdict("arm ran", None, "relaxed not in arms").answer == "n/a"
    assert verdict("l12 vs fixed", "tie", "within 1 std").answer == "tie"
    stored = {"verdicts": verdicts_to_results([v])}
    assert verdicts_from_results(stored) == [v]


def test_verdict_rejects_unknown_answer_and_missing_verdicts():
    with pytest.raises(ValueError, match="answer must be one of"):
        Verdict("q", "maybe", "")
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
    from scipy.stats import t as student

    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.5, 0.1, size=4), rng.normal(0.45, 0.05, size=6)
    answer, p = significance(a, b)
    assert p == pytest.approx(_welch_p(a, b), rel=1e-9)
    assert answer == ("tie" if p >= ALPHA else "yes" if a.mean() > b.mean() else "no")
    x, y = rng.normal(size=8), rng.normal(size=8)
    d = x - y + 0.5
    answer, p = significance(x + 0.5, y, paired=True)
    stat = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    assert p == pytest.approx(2 * student.sf(abs(stat), len(d) - 1), rel=1e-9)


def test_a_constant_side_gives_a_welch_test_without_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would reach a notebook's stderr, which nbval compares
        answer, p = significance([1 / 64] * 3, [1 / 64, 3 / 64, 5 / 64])
    assert answer == "tie" and p == pytest.approx(_welch_p([1 / 64] * 3, [1 / 64, 3 / 64, 5 / 64]), rel=1e-9)


def test_significance_answers_and_degenerate_cases():
    assert significance([0.9, 0.92, 0.91], [0.5, 0.52, 0.51])[0] == "yes"
    assert significance([0.5, 0.52, 0.51], [0.9, 0.92, 0.91])[0] == "no"
    # a small difference against a large spread: within the noise
    assert significance([0.8, 0.9, 1.0], [0.79, 0.89, 0.99])[0] == "tie"
    # the same values paired: every difference is +0.01, certain
    assert significance([0.8, 0.9, 1.0], [0.79, 0.89, 0.99], paired=True) == ("yes", 0.0)
    assert significance([1.0, 0.0, 1.0], [1.0, 0.0, 1.0], paired=True) == ("tie", 1.0)
    assert significance([1.0, 1.0], [0.0, 0.0]) == ("yes", 0.0)
    answer, p = significance([0.9], [0.1])
    assert answer == "n/a" and np.isnan(p)
    # a stricter level turns a borderline win into a tie
    a, b = [0.41, 0.39, 0.43], [0.30, 0.24, 0.37]
    p = significance(a, b)[1]
    assert 0.01 < p < 0.2
    assert significance(a, b, alpha=p * 1.01)[0] == "yes" and significance(a, b, alpha=p * 0.99)[0] == "tie"


@pytest.mark.parametrize(("a", "b", "kwargs", "match"), [
    ([float("nan"), 1.0], [0.0, 1.0], {}, "finite"),
    ([1.0, 2.0], [1.0, 2.0, 3.0], {"paired": True}, "equal lengths"),
    ([], [1.0], {}, "non-empty"),
    ([1.0, 2.0], [1.0, 2.0], {"alpha": 1.5}, "alpha"),
])
def test_significance_refuses_bad_samples(a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        significance(a, b, **kwargs)


def test_compare_means_shows_means_counts_and_p():
    win = compare_means("a beats b", [0.9, 0.92], [0.5, 0.52], digits=2)
    assert win.answer == "yes"
    assert str(win).startswith("a beats b: yes (0.91 ± 0.01 vs 0.51 ± 0.01, 2 seeds, p = ")
    tie = compare_means("a beats b", [0.8, 0.9, 1.0], [0.79, 0.89, 0.99], digits=2)
    assert str(tie) == "a beats b: tie (0.90 ± 0.10 vs 0.89 ± 0.10, 3 seeds, p = 0.91)"
    paired = compare_means("a beats b", [1, 1, 0, 1], [0, 1, 0, 0], paired=True, over="instances", digits=2)
    assert "4 instances paired" in paired.evidence
    one = compare_means("a beats b", [0.9], [0.1], scale=64, digits=1, unit="positions")
    assert str(one) == "a beats b: n/a (57.6 positions vs 6.4 positions, 1 seed: one value, noise unknown)"
