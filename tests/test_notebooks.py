"""Every notebook runs through the real runner with the `smoke` profile, and the numbers it records hold.

The committed notebooks' default runs are checked separately by nbval (`make test` runs both).
"""


import nbformat
import pandas as pd
import pytest

from aslib.core.penalties import PENALTIES
from aslib.examples import two_layer as tl
from aslib.utils.io import load_results
from aslib.study.published import verdict_table
from aslib.utils.runtime import code_fingerprint
from aslib.study.verdicts import ANSWERS, verdicts_from_results
from aslib.runner.profiles import find_notebooks, load_profile
from aslib.runner.reproduce import execute_notebooks, prepare


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    prepared = prepare(load_profile("smoke"), runs_dir=tmp / "runs", figures_dir=tmp / "figures",
                       results_dir=tmp / "results")
    runs = execute_notebooks(prepared, show_progress=False, publish_to=("smoke", tmp / "results"))
    return {r.notebook: r for r in runs}, tmp / "runs" / "smoke", tmp / "figures"


def verdict_answers(results):
    """The answers of a results file's verdicts, by question (every answer one of ANSWERS)."""
    verdicts = verdicts_from_results(results)
    assert verdicts and len({v.question for v in verdicts}) == len(verdicts)
    return {v.question: v.answer for v in verdicts}


def test_every_notebook_runs(smoke_runs):
    runs, _, _ = smoke_runs
    assert set(runs) == {p.stem for p in find_notebooks()}
    failed = {name: run.error for name, run in runs.items() if run.status != "ok"}
    assert not failed


def test_01_penalty_facts(smoke_runs):
    _, out, figures = smoke_runs
    r = load_results(out, "01_penalty_and_error_bounds")
    assert r["n"] == 4 and r["n_random"] == 200
    assert r["max_penalty_on_permutations"] < 1e-12 < r["min_penalty_inside"]
    assert r["min_concavity_gap"] >= -1e-12
    assert r["max_penalty_inside"] <= r["penalty_at_uniform"] + 1e-12
    assert r["max_gradient_formula_error"] < 1e-10
    assert r["max_lipschitz_ratio"] <= r["lipschitz_constant"]
    assert r["error_bound_l1_violations"] == 0 and r["error_bound_max_violations"] == 0
    assert r["argmax_is_hungarian_when_condition"] is True
    assert r["max_lp_gradient_on_path"] > 100 * r["max_l12_gradient_on_path"]
    assert {p.name for p in figures.iterdir()} >= {"01_error_bound.png", "01_error_bound.pdf"}
    # every fact is a verdict, and every one of them holds (tightness aside, which is a measurement)
    answers = verdict_answers(r)
    assert len(answers) == 10 + 4 * (len(PENALTIES) - 1)  # l1-2, then four facts of every other penalty
    assert all(a == "yes" for q, a in answers.items() if "first-order" not in q), answers


def test_02_graph_matching(smoke_runs):
    _, out, _ = smoke_runs
    r = load_results(out, "02_graph_matching")
    assert r["profile"] == "smoke" and r["device"].startswith("cpu")
    # on the tiny instance the penalty still ends at a permutation while the relaxation stays inside D_n
    assert r["curve_l12_final_penalty"] < 0.1 < 1 < r["curve_relaxed_final_penalty"]
    for key in ("regular_isomorphic", "er_recovery", "small_isomorphic"):
        assert set(r[key]) == {"l12", "relaxed", "sinkhorn", "faq", "2opt"}
        assert all(0 <= v <= 1 for v in r[key].values())
    assert all(v > 0 for v in r["seconds_per_instance"].values()) and r["time_ratio_l12_vs_one_faq_call"] > 0


def test_03_two_layer(smoke_runs):
    _, out, _ = smoke_runs
    r = load_results(out, "03_two_layer_closed_form")
    assert r["closed_form_max_abs_z"] < 4  # closed form within 4 standard errors of Monte Carlo
    assert r["planted_loss"] < 1e-9
    assert r["final_penalty"]["l12"] < r["final_penalty"]["relaxed"]
    assert all(0 <= v <= 1 for v in r["success"].values())


def test_03_two_layer_stores_its_verdicts(smoke_runs):
    runs, out, _ = smoke_runs
    run = runs["03_two_layer_closed_form"]
    assert run.status == "ok", run.error
    results = load_results(out, "03_two_layer_closed_form")
    verdicts = verdicts_from_results(results)
    assert all(v.answer in ANSWERS for v in verdicts)
    questions = [v.question for v in verdicts]
    # convexity, claims, failures, schedule; then the penalties (reach, l12 against 4 per set-up, Lipschitz) and the
    # claim search (a test and a line per combination)
    assert len(questions) == len(set(questions)) == 4 + 4 * 5 + 2 * 4 + 1 + (5 + 4 * 4 + 1) + 2 * 3
    convex = {v.question.split(":")[0]: v.answer for v in verdicts if "convex on random segments" in v.question}
    assert convex == {"between": "no", "after": "yes", "input": "no", "linear": "yes"}
    claims = [v for v in verdicts if "supports the paper's claim" in v.question]
    assert [v.question.split()[0] for v in claims] == list(tl.SETUPS) and all(v.answer in ("yes", "no") for v in claims)
    assert results["closed_form_max_abs_z"] < 4 and results["planted_loss"] < 1e-9
    assert {row["setup"] for row in results["summary"]} == set(tl.SETUPS)


def test_04_and_05_training_arms(smoke_runs):
    _, out, _ = smoke_runs
    r = load_results(out, "04_cifar")
    assert r["profile"] == "smoke" and r["runs"] == r["finished"] == 4
    assert all(r["checks"][name] for name in ("every run finished", "fixed arm changes by exactly 0 when rounded",
                                              "rounded l12 has the fixed network's parameter count"))
    by_arm = {row["arm"]: row for row in r["summary"]}
    assert all(0 <= row["test_acc_hard_mean"] <= 1 for row in by_arm.values())
    assert by_arm["l12"]["final_penalty_mean"] < by_arm["relaxed"]["final_penalty_mean"]
    # the control retrains l12's permutations as fixed shuffles: the fixed network's size, nothing to round
    retrained = by_arm["l12_retrained"]
    assert retrained["num_parameters_inference"] == by_arm["fixed"]["num_parameters_inference"]
    assert retrained["rounding_change_mean"] == 0 and retrained["lam"] == by_arm["l12"]["lam"]
    [control] = [v for v in verdicts_from_results(r) if "retrained as a fixed shuffle, beats ShuffleNet's" in v.question]
    assert control.answer == "n/a" and "1 seed" in control.evidence  # one seed: no noise estimate
    assert r["speed"][0]["fixed_flops"] == r["speed"][0]["hardened_flops"]
    imagenet = load_results(out, "05_imagenet")
    assert imagenet["datasets"] == ["digits"] and imagenet["finished"] == 2


def test_results_are_published_with_provenance(smoke_runs):
    _, out, _ = smoke_runs
    published = out.parent.parent / "results" / "smoke"
    names = {p.name for p in published.iterdir()}
    assert {"01_penalty_and_error_bounds.json", "07_permuted_input.json", "07_permuted_input_arms.csv"} <= names
    assert not any(n.startswith("06_") or n.endswith((".ipynb", ".pt", ".txt")) for n in names)
    for path in published.glob("*.json"):
        record = load_results(published, path.stem)
        assert record["profile"] == "smoke" and record["code_fingerprint"] == code_fingerprint(), path.name
        assert isinstance(record["seeds"], list) and record["seeds"] and record["device"], path.name


def test_06_results_shows_every_published_verdict(smoke_runs):
    runs, out, figures = smoke_runs
    published = out.parent.parent / "results"
    overview = pd.read_csv(out / "06_results_overview.csv")
    assert set(overview["profile"]) == {"smoke"} and (overview["code"] == "current").all()
    assert set(overview.loc[overview["status"] == "published", "notebook"]) >= {
        "01_penalty_and_error_bounds", "07_permuted_input"}
    # the verdict table 06 saved is the one read from the published files, and the notebook printed it
    assert pd.read_csv(out / "06_results_verdicts.csv").fillna("").astype(str).equals(
        verdict_table(published).fillna("").astype(str))
    executed = nbformat.read(out / "06_results.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    for line in verdict_table(published)["verdict"]:
        assert f"  {line}\n" in printed, line
    cifar = pd.read_csv(out / "06_results_smoke_04_cifar.csv")
    assert set(cifar["arm"]) == {"fixed", "relaxed", "l12", "l12_retrained"}
    assert (figures / "06_smoke_04_cifar_accuracy.png").is_file()


def test_07_permuted_input(smoke_runs):
    _, out, _ = smoke_runs
    r = load_results(out, "07_permuted_input")
    assert r["positions"] == 64 and r["chance_exact_recovery"] == 1 / 64 and r["seeds"] == [0, 1, 2]
    arms = pd.read_csv(out / "07_permuted_input_arms.csv")
    assert len(arms) == 6 * 3 and sorted(arms["seed"].unique()) == [0, 1, 2]
    # the headline numbers are the means over seeds of the per-run table
    means = arms.groupby("arm")[["test_acc_hard", "exact_recovery"]].mean()
    for arm, row in means.iterrows():
        assert r[f"{arm}_test_acc_hard"] == pytest.approx(row["test_acc_hard"])
    for arm in ("l12", "relaxed", "l12_pretrained", "relaxed_pretrained"):
        assert r[f"{arm}_exact_recovery"] == pytest.approx(means.loc[arm, "exact_recovery"])
    assert "oracle_exact_recovery" not in r
    # one verdict per learned arm against chance, plus the five comparisons over seeds
    answers = verdict_answers(r)
    assert len(answers) == 4 + 5
    assert answers["the CNN is more accurate on ordered than on scrambled images"] in ("yes", "no", "not shown")
