"""Verdict lines and the code fingerprint."""

import pytest

from aslib import runtime
from aslib.verdicts import Verdict, verdict, verdicts_from_results, verdicts_to_results


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
    shutil.copytree(Path(runtime.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runtime, "__file__", str(copy / "runtime.py"))
    assert runtime.code_fingerprint() == first
    (copy / "penalty.py").write_text((copy / "penalty.py").read_text() + "\n# changed\n")
    assert runtime.code_fingerprint() != first


def test_compare_over_seeds_says_tie_within_two_standard_errors():
    from aslib.verdicts import compare_over_seeds

    # difference 0.4, standard error sqrt(0.0001/2 * 2) = 0.01: a clear win, and the reverse a loss
    assert compare_over_seeds("a beats b", [0.9, 0.92], [0.5, 0.52]).answer == "yes"
    assert compare_over_seeds("b beats a", [0.5, 0.52], [0.9, 0.92]).answer == "no"
    # difference 0.01 with spread 0.1 on each side: within the noise
    tie = compare_over_seeds("a beats b", [0.8, 0.9, 1.0], [0.79, 0.89, 0.99], digits=2)
    assert str(tie) == "a beats b: tie (0.90 ± 0.10 vs 0.89 ± 0.10, 3 seeds)"
    one = compare_over_seeds("a beats b", [0.9], [0.1], scale=64, digits=1, unit="positions")
    assert str(one) == "a beats b: n/a (57.6 positions vs 6.4 positions, 1 seed: one seed, noise unknown)"
    with pytest.raises(ValueError, match="finite"):
        compare_over_seeds("a beats b", [float("nan"), 1.0], [0.0, 1.0])
