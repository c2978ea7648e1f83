"""The verdicts of notebooks 04/05 on hand-made results: lam chosen on validation, seeds paired, Holm over the
notebook, learned-vs-fixed questions worded by the set-up verdict."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from aslib.study.arms import grid
from aslib.study.comparison import RETRAINED_QUESTION, SETUP_QUESTION, choose_lam, comparison_verdicts
from aslib.training.config import TrainConfig

WHERE = "digits, shufflenet_v1_g3: "


def _rows(arm, lam, init, accs, *, val=None, soft=None, change=0.0, params=100, seeds=None):
    seeds = range(len(accs)) if seeds is None else seeds
    return [{"dataset": "digits", "model": "shufflenet_v1_g3", "arm": arm, "lam": lam, "shuffle_init": init, "seed": seed,
             "test_acc_hard": acc, "test_acc_soft": (soft if soft is not None else acc - change),
             "rounding_change": change, "final_val_acc": val if val is not None else 0.5,
             "num_parameters_inference": params} for seed, acc in zip(seeds, accs)]


def _runs(tmp_path, seeds, arms=("fixed", "none", "relaxed", "l12")):
    base = TrainConfig(dataset="digits", model="shufflenet_v1_g3")
    return grid(base, tmp_path, arms=list(arms), lam=[0.01, 0.1], seed=list(seeds))


def _by_question(verdicts):
    return {v.question: v for v in verdicts}


def test_lam_is_chosen_on_validation_never_on_test():
    results = pd.DataFrame(
        _rows("l12", 0.01, "uniform", [0.99, 0.99], val=0.6)      # best on test, worse on validation
        + _rows("l12", 0.1, "uniform", [0.50, 0.52], val=0.8)
        + _rows("l12", 1.0, "random", [0.1, 0.1], val=0.99))      # another start: not the headline's
    assert choose_lam(results) == 0.1
    assert choose_lam(results, "relaxed") is None
    with pytest.raises(ValueError, match="final_val_acc"):
        choose_lam(results.drop(columns="final_val_acc"))


def test_verdicts_pair_by_seed_and_holm_over_the_notebook(tmp_path):
    fixed, none = [0.80, 0.84, 0.81, 0.86], [0.60, 0.66, 0.59, 0.63]
    l12 = [0.81, 0.83, 0.84, 0.86]
    results = pd.DataFrame(
        _rows("fixed", 0.0, None, fixed) + _rows("none", 0.0, None, none)
        + _rows("relaxed", 0.0, "uniform", [0.30, 0.31, 0.29, 0.33], soft=0.8, change=-0.5)
        + _rows("l12", 0.01, "uniform", l12, val=0.9, change=-0.001)
        + _rows("l12", 0.1, "uniform", [0.99, 0.99, 0.99, 0.99], val=0.1))
    verdicts = comparison_verdicts(results, _runs(tmp_path, range(4)))
    lines = [str(v) for v in verdicts]
    assert lines[0] == "every run finished: yes (20 of 20)"
    setup, headline = verdicts[1], verdicts[2]
    assert setup.question == WHERE + SETUP_QUESTION and setup.answer == "yes"
    assert setup.p == pytest.approx(stats.ttest_rel(fixed, none).pvalue, rel=1e-9)  # paired by seed
    # the l12 of lam 0.01 (best validation), not 0.1 (best on test); fixed vs none shown: a test of the claim
    assert headline.question == WHERE + "rounded l12 beats fixed, a test of the paper's claim"
    assert headline.p == pytest.approx(stats.ttest_rel(l12, fixed).pvalue, rel=1e-9)
    assert headline.answer == "not shown" and "4 seeds paired; lam 0.01 chosen on validation" in headline.evidence
    assert "smallest detectable difference" in lines[2]
    tests = [v for v in verdicts if v.is_test]
    raw = sorted(v.p for v in tests)
    adjusted = np.maximum.accumulate([min(1.0, (len(raw) - i) * p) for i, p in enumerate(raw)])
    assert sorted(v.p_holm for v in tests) == pytest.approx(adjusted)
    assert all(f"p = " in str(v) and ", Holm " in str(v) for v in tests)
    assert lines[3].startswith(WHERE + "rounding keeps the relaxation's accuracy (rounded above soft): no (")
    assert lines[4].startswith(WHERE + "rounding changes l12's accuracy by less than the seed noise: yes (")
    assert lines[5] == WHERE + "fixed arm changes by exactly 0 when rounded: yes (4 seeds)"
    assert lines[6] == WHERE + "rounded l12 has the fixed network's parameter count: yes (100 vs 100)"


def test_a_set_up_that_cannot_tell_fixed_from_none_says_the_claim_is_not_tested(tmp_path):
    results = pd.DataFrame(
        _rows("fixed", 0.0, None, [0.80, 0.70, 0.75]) + _rows("none", 0.0, None, [0.78, 0.74, 0.72])
        + _rows("random", 0.0, None, [0.70, 0.60, 0.65])
        + _rows("l12", 0.01, "uniform", [0.90, 0.80, 0.85], val=0.9))
    verdicts = _by_question(comparison_verdicts(results, _runs(tmp_path, range(3), ("fixed", "none", "random", "l12"))))
    assert verdicts[WHERE + SETUP_QUESTION].answer == "not shown"
    scope = ", not a test of the paper's claim at this scale (fixed vs none not shown)"
    # every l12 difference is +0.10: the exact sign test, p = 2^-(3-1), never p = 0
    headline = verdicts[WHERE + "rounded l12 beats fixed" + scope]
    assert headline.p == pytest.approx(stats.binomtest(3, 3, 0.5).pvalue) == 0.25
    assert "every difference +0.100: sign test" in headline.evidence and "p = 0.25" in str(headline)
    assert "none (3 pairs give p = 0.25 even all one way)" in str(headline)
    assert WHERE + "rounded l12 beats a random fixed permutation" + scope in verdicts


def test_arms_with_different_seeds_take_welchs_test(tmp_path):
    fixed, none = [0.80, 0.82, 0.81], [0.60, 0.61, 0.59, 0.62]
    results = pd.DataFrame(_rows("fixed", 0.0, None, fixed) + _rows("none", 0.0, None, none, seeds=[0, 1, 2, 5]))
    setup = _by_question(comparison_verdicts(results, _runs(tmp_path, range(3))))[WHERE + SETUP_QUESTION]
    assert setup.p == pytest.approx(stats.ttest_ind(fixed, none, equal_var=False).pvalue, rel=1e-9)
    assert setup.evidence.endswith("3 and 4 seeds") and setup.answer == "yes"


def test_a_single_seed_or_a_missing_arm_is_said_not_skipped(tmp_path):
    results = pd.DataFrame(_rows("fixed", 0.0, None, [0.8]) + _rows("l12", 0.01, "uniform", [0.7], params=120))
    lines = [str(v) for v in comparison_verdicts(results, _runs(tmp_path, [0]))]
    assert lines[0] == "every run finished: no (2 of 5)"
    assert lines[1] == WHERE + SETUP_QUESTION + ": n/a (not run)"
    assert lines[2] == WHERE + ("rounded l12 beats fixed, not a test of the paper's claim (fixed vs none n/a): n/a "
                                "(0.700 vs 0.800, 1 seed paired: one value, noise unknown; lam 0.01 chosen on validation)")
    assert lines[-1].endswith("rounded l12 has the fixed network's parameter count: no (120 vs 100)")


def test_the_mirror_question_is_asked_where_its_arm_ran(tmp_path):
    base = (_rows("fixed", 0.0, None, [0.80, 0.82, 0.81]) + _rows("none", 0.0, None, [0.60, 0.61, 0.59])
            + _rows("l12", 0.01, "uniform", [0.50, 0.53, 0.51], val=0.9))
    runs = _runs(tmp_path, range(3))
    question = "rounded l12 (mirror step) beats rounded l12 (projected step)"
    assert not any(question in str(v) for v in comparison_verdicts(pd.DataFrame(base), runs))
    mirror = (_rows("l12_mirror", 0.0, "uniform", [0.90, 0.91, 0.95])
              + _rows("l12_mirror", 0.0, "random", [0.10, 0.10, 0.10]))  # another start: not the headline's
    lines = [str(v) for v in comparison_verdicts(pd.DataFrame(base + mirror), runs)]
    [line] = [x for x in lines if question in x]
    assert line.startswith(f"{WHERE}{question}: yes (0.920 ± 0.026 vs 0.513 ± 0.015, 3 seeds paired; "
                           "lam 0.01 chosen on validation, p = ")
    assert any(x.startswith(WHERE + "rounded l12 (mirror step) beats fixed, a test of the paper's claim: ")
               for x in lines)


def test_rounding_verdicts_say_whether_every_penalised_shuffle_was_a_permutation(tmp_path):
    def counted(rows, unsettled, uniform):
        return [{**row, "unsettled_shuffles": u, "uniform_shuffles": f} for row, u, f in zip(rows, unsettled, uniform)]

    base = _rows("fixed", 0.0, None, [0.80, 0.82, 0.81])
    l12 = counted(_rows("l12", 0.01, "uniform", [0.50, 0.52, 0.51], val=0.9), [0, 2, 0], [0, 1, 0])
    mirror = counted(_rows("l12_mirror", 0.0, "uniform", [0.90, 0.91, 0.92]), [0, 0, 0], [0, 0, 0])
    runs = _runs(tmp_path, range(3))
    lines = [str(v) for v in comparison_verdicts(pd.DataFrame(base + l12 + mirror), runs)]
    where = WHERE + "every learned shuffle of "
    assert where + ("l12 is at a permutation when rounded: no (1 of 3 runs rounded shuffles above the threshold, "
                    "1 layers in all at or near J/n)") in lines
    assert where + ("l12_mirror is at a permutation when rounded: yes (0 of 3 runs rounded shuffles above the "
                    "threshold, 0 layers in all at or near J/n)") in lines
    # results written before the counts existed ask nothing
    assert not any("at a permutation when rounded" in x for x in
                   (str(v) for v in comparison_verdicts(pd.DataFrame(base + _rows("l12", 0.01, "uniform", [0.5])), runs)))


def test_the_retrained_permutation_is_compared_with_shuffles_fixed_by_hand(tmp_path):
    fixed, none = [0.80, 0.84, 0.81, 0.86], [0.60, 0.66, 0.59, 0.63]
    random = [0.70, 0.75, 0.69, 0.74]
    retrained = [0.90, 0.91, 0.93, 0.92]  # at lam 0.01, the weight l12 chose on validation
    results = pd.DataFrame(
        _rows("fixed", 0.0, None, fixed) + _rows("none", 0.0, None, none) + _rows("random", 0.0, None, random)
        + _rows("l12", 0.01, "uniform", [0.85, 0.86, 0.87, 0.88], val=0.9)
        + _rows("l12", 0.1, "uniform", [0.5, 0.5, 0.5, 0.5], val=0.1)
        + _rows("l12_retrained", 0.01, None, retrained)
        + _rows("l12_retrained", 0.1, None, [0.1, 0.1, 0.1, 0.1]))  # the weight not chosen: not compared
    runs = _runs(tmp_path, range(4), ("fixed", "none", "random", "l12", "l12_retrained"))
    verdicts = _by_question(comparison_verdicts(results, runs))
    assert verdicts[WHERE + SETUP_QUESTION].answer == "yes"
    against_fixed = verdicts[WHERE + RETRAINED_QUESTION + ", a test of the paper's claim"]
    assert against_fixed.p == pytest.approx(stats.ttest_rel(retrained, fixed).pvalue, rel=1e-9)  # paired by seed
    assert "4 seeds paired; lam 0.01 chosen on validation" in against_fixed.evidence
    against_random = verdicts[WHERE + "the learned permutation, retrained as a fixed shuffle, beats a random fixed "
                              "permutation"]
    assert against_random.p == pytest.approx(stats.ttest_rel(retrained, random).pvalue, rel=1e-9)
    assert against_random.answer == "yes" and against_random.p_holm >= against_random.p
    # without the arm, no such question
    plain = results[results["arm"] != "l12_retrained"]
    assert not any("retrained" in v.question for v in comparison_verdicts(plain, runs))
    # a set-up that cannot tell fixed from none words the control's verdict by it
    tied = pd.concat([results[results["arm"] != "none"], pd.DataFrame(_rows("none", 0.0, None, [0.81, 0.83, 0.82, 0.85]))])
    scoped = _by_question(comparison_verdicts(tied, runs))
    assert WHERE + RETRAINED_QUESTION + ", not a test of the paper's claim at this scale (fixed vs none not shown)" in scoped
