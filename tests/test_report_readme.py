"""The README's results section is generated from the published results files, and stays in step with them."""

import json

import pytest

from aslib.study.published import (
    CLAIMS, CLAIMS_END, CLAIMS_START, README_END, README_START, claims_table, key_numbers_table, markdown_table,
    readme_claims, readme_results, update_readme, verdict_table,
)
from aslib.study.verdicts import verdict, verdicts_to_results

from helpers import REPO_ROOT



def publish(results, profile, notebook, record):
    folder = results / profile
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{notebook}.json").write_text(json.dumps(record))


def test_committed_readme_agrees_with_committed_results():
    # fails when a results file changed and `python -m aslib.study.published --readme` was not run, or the README
    # section was edited by hand
    assert update_readme(REPO_ROOT / "README.md", REPO_ROOT / "results", check=True), (
        "README.md's results section differs from results/: run `python -m aslib.study.published --readme`")


def test_committed_readme_opens_with_the_claims_table_generated_from_results():
    text = (REPO_ROOT / "README.md").read_text()
    start, end = text.find(CLAIMS_START), text.find(CLAIMS_END)
    assert 0 < start < end < text.find(README_START), "README.md needs its claims markers before the results section"
    assert text[start + len(CLAIMS_START):end].strip() == readme_claims(REPO_ROOT / "results").strip(), (
        "README.md's claims table differs from results/: run `python -m aslib.study.published --readme`")
    table = claims_table(REPO_ROOT / "results")
    assert set(table["claim"]) == {c.claim for c in CLAIMS}  # every claim has a row, run or not


def _lines(*pairs):
    return verdicts_to_results([verdict(q, a, "numbers") for q, a in pairs])


def test_claims_are_answered_by_their_verdict_lines_only(tmp_path):
    results = tmp_path / "results"
    where = "cifar10, v1: "
    scope = ", not a test of the paper's claim at this scale (fixed vs none not shown)"
    publish(results, "cifar-cpu", "04_cifar", {
        "datasets": ["cifar10"], "seeds": [0, 1, 2], "device": "cpu: x", "data": "CIFAR-10",
        "verdicts": _lines((where + "this set-up tells the shuffle's presence apart (fixed vs none)", "not shown"),
                           (where + "rounded l12 beats fixed" + scope, "yes"),
                           (where + "rounded l12 (mirror step) beats fixed" + scope, "no"),  # not a deciding line
                           (where + "rounding keeps the relaxation's accuracy (rounded above soft)", "no"),
                           (where + "rounding changes l12's accuracy by less than the seed noise", "yes"),
                           (where + "the learned permutation, retrained as a fixed shuffle, beats ShuffleNet's" + scope,
                            "not shown"))})
    publish(results, "gpu-short", "04_cifar", {
        "datasets": ["cifar10"], "seeds": [0, 1, 2], "device": "cuda: H200",
        "verdicts": _lines(("cifar10, v1: rounded l12 beats fixed, a test of the paper's claim", "yes"),
                           ("cifar10, v2: rounded l12 beats fixed, a test of the paper's claim", "no"))})
    publish(results, "quick", "04_cifar", {"datasets": ["digits"], "seeds": [0],
                                           "verdicts": _lines(("digits, v1: rounded l12 beats fixed", "yes"))})
    publish(results, "quick", "03_two_layer_closed_form", {"verdicts": _lines(*[
        (f"{setup} supports the paper's claim (relaxation fails, penalty succeeds)", answer)
        for setup, answer in (("between", "no"), ("after", "yes"), ("input", "no"))])})
    publish(results, "quick", "01_penalty_and_error_bounds", {"verdicts": _lines(
        ("exactness: P = 0 on permutations and > 0 inside D_n", "yes"), ("P is concave on D_n", "yes"),
        ("|P(M) - P(N)| <= 2 sqrt(n(n-1)) ||M - N||_F", "no"), ("the error bounds hold below P", "yes"))})
    table = claims_table(results)
    rows = {(claim, profile): answer for claim, profile, answer in
            zip(table["claim"], table["profile"], table["this project's answer"])}
    by_notebook = {c.notebook: c.claim for c in CLAIMS}
    real = next(c.claim for c in CLAIMS if "on real images" in c.claim)
    control = next(c.claim for c in CLAIMS if "retrained" in c.claim)
    rounding = next(c.claim for c in CLAIMS if c.claim.startswith("rounding"))
    # the largest scale first; the digits record does not answer a real-image claim; one model against: no
    assert [p for c, p in rows if c == real] == ["gpu-short", "cifar-cpu"]
    assert rows[(real, "gpu-short")] == "no, a test of the paper's claim (2 verdict lines below)"
    assert rows[(real, "cifar-cpu")] == "yes" + scope + " (numbers)"
    assert rows[(control, "cifar-cpu")] == "not shown" + scope + " (numbers)"
    # "rounding keeps the relaxation's accuracy: no" supports the claim that rounding the relaxation loses
    assert rows[(rounding, "cifar-cpu")] == "yes (2 verdict lines below)"
    assert rows[(by_notebook["03_two_layer_closed_form"], "quick")] == "yes (3 verdict lines below)"  # any set-up
    assert rows[(by_notebook["01_penalty_and_error_bounds"], "quick")] == "no (4 verdict lines below)"  # every fact
    graph = rows[(by_notebook["02_graph_matching"], "quick")]
    assert graph.startswith("not run (") and "--only 02_graph_matching" in graph
    imagenet = rows[(by_notebook["05_imagenet"], "paper")]
    assert imagenet.startswith("not run (") and "--profile paper --only 05_imagenet" in imagenet
    assert "[04_cifar](notebooks/04_cifar.ipynb)" in set(table["notebook"])


def test_the_results_section_states_device_and_code_once_per_profile(tmp_path):
    results = tmp_path / "results"
    for notebook, device in (("01_penalty_and_error_bounds", "cpu: a"), ("02_graph_matching", "cpu: b")):
        publish(results, "quick", notebook, {"verdicts": _lines(("fact", "yes")), "seeds": [0], "device": device,
                                             "code_fingerprint": "abcdef0123456789"})
    publish(results, "cifar-cpu", "04_cifar", {"verdicts": _lines(("l12 beats fixed", "yes")), "seeds": [0, 1],
                                               "device": "cpu: a", "code_fingerprint": "abcdef0123456789"})
    text = readme_results(results)
    assert text.index("#### Profile `cifar-cpu`") < text.index("#### Profile `quick`")
    assert "Device: cpu: a. Code: `abcdef01`." in text
    assert "Device: cpu: a (01_penalty_and_error_bounds); cpu: b (02_graph_matching). Code: `abcdef01`." in text
    assert text.count("cpu: a") == 2 and "| notebook | verdict | data | seeds |" in text


def test_every_verdict_becomes_a_row_with_its_provenance(tmp_path):
    results = tmp_path / "results"
    lines = [verdict("l12 beats relaxed", True, "0.92 vs 0.00, 12 instances"),
             verdict("sinkhorn ties l12", "not shown", "0.92 vs 0.92")]
    publish(results, "quick", "02_graph_matching", {
        "verdicts": verdicts_to_results(lines), "seeds": [0], "device": "cpu: x",
        "code_fingerprint": "abcdef0123456789",
        "regular_isomorphic": {"l12": 0.917, "relaxed": 0.0, "sinkhorn": 0.917}})
    publish(results, "paper", "04_cifar", {"seeds": [0, 1, 2], "device": "cuda: H100", "datasets": ["cifar10"],
                                           "summary": [{"arm": "fixed", "dataset": "cifar10", "model": "v2",
                                                        "test_acc_hard_mean": 0.9, "test_acc_hard_std": 0.01}]})
    table = verdict_table(results)
    assert table.to_dict("records") == [
        {"notebook": "04_cifar", "verdict": "(no verdicts recorded)", "data": "cifar10", "profile": "paper",
         "seeds": "0, 1, 2", "device": "cuda: H100", "code": ""},
        {"notebook": "02_graph_matching", "verdict": "l12 beats relaxed: yes (0.92 vs 0.00, 12 instances)",
         "data": "synthetic", "profile": "quick", "seeds": "0", "device": "cpu: x", "code": "abcdef01"},
        {"notebook": "02_graph_matching", "verdict": "sinkhorn ties l12: not shown (0.92 vs 0.92)",
         "data": "synthetic", "profile": "quick", "seeds": "0", "device": "cpu: x", "code": "abcdef01"},
    ]
    numbers = key_numbers_table(results).set_index("notebook")["value"].to_dict()
    # every method is shown, the ones that tie with l12 included
    assert numbers["02_graph_matching"] == "l12 0.917, relaxed 0.000, sinkhorn 0.917"
    assert numbers["04_cifar"] == "cifar10 v2: fixed 0.900 ± 0.010"


def test_update_readme_rewrites_only_between_the_markers(tmp_path):
    results = tmp_path / "results"
    publish(results, "quick", "01_penalty_and_error_bounds",
            {"verdicts": verdicts_to_results([verdict("bound holds", True, "0 violations")]), "seeds": [0]})
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{README_START}\nold | typed by hand\n{README_END}\n\nrest\n")
    assert update_readme(readme, results, check=True) is False
    assert "typed by hand" in readme.read_text()  # check writes nothing
    assert update_readme(readme, results) is False
    text = readme.read_text()
    assert "typed by hand" not in text and "| bound holds: yes (0 violations) |" in text
    assert text.startswith("# title\n\n") and text.endswith(f"{README_END}\n\nrest\n")
    assert update_readme(readme, results, check=True) is True
    # a changed result makes the README out of date
    publish(results, "quick", "01_penalty_and_error_bounds",
            {"verdicts": verdicts_to_results([verdict("bound holds", False, "3 violations")]), "seeds": [0]})
    assert update_readme(readme, results, check=True) is False


def test_bad_readmes_are_refused_and_left_alone(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_END}\n{README_START}\n")
    with pytest.raises(ValueError, match="needs the markers"):
        update_readme(readme, tmp_path)
    assert readme.read_text() == f"{README_END}\n{README_START}\n"
    with pytest.raises(FileNotFoundError, match="no file .*missing.md"):
        update_readme(tmp_path / "missing.md", tmp_path)


def test_no_results_says_so_and_markdown_escapes_pipes(tmp_path):
    assert "No results are published yet" in readme_results(tmp_path / "nothing")
    import pandas as pd
    assert markdown_table(pd.DataFrame({"a": ["x|y"]})) == "| a |\n| --- |\n| x\\|y |"


def test_overview_marks_records_of_other_code_as_stale_and_missing_notebooks_as_not_run(tmp_path):
    from aslib.study.published import published_overview

    results = tmp_path / "results"
    publish(results, "quick", "01_penalty_and_error_bounds", {"code_fingerprint": "a" * 16, "seeds": [0]})
    publish(results, "quick", "07_permuted_input", {"code_fingerprint": "b" * 16, "seeds": [0, 1]})
    table = published_overview(results, fingerprint="a" * 16).set_index("notebook")
    assert table.loc["01_penalty_and_error_bounds", "code"] == "current"
    assert table.loc["07_permuted_input", "code"] == "stale (bbbbbbbb)"
    assert table.loc["02_graph_matching", "status"] == "not run"
    assert "--profile quick --only 02_graph_matching" in table.loc["02_graph_matching", "command"]


def test_exploration_summary_takes_means_over_seeds_per_setting(tmp_path):
    from aslib.study.published import exploration_table

    csv = tmp_path / "e.csv"
    csv.write_text("tag,arm,lam,epochs,seed,test_acc_hard,rounding_change,final_penalty,cpu_seconds\n"
                   "A,fixed,0.0,2,0,0.50,0.0,0.0,10\n"
                   "A,fixed,0.0,2,1,0.60,0.0,0.0,20\n"
                   "A,l12,0.1,2,0,0.70,-0.02,3.0,\n")
    table = exploration_table(csv)
    # tag and epochs never vary, so they are not columns; lam does
    assert list(table.columns) == ["arm", "lam", "seeds", "test_acc_hard", "rounding_change", "final_penalty",
                                   "cpu_seconds"]
    assert table.to_dict("records") == [
        {"arm": "fixed", "lam": 0.0, "seeds": "0 1", "test_acc_hard": "0.550 ± 0.071",
         "rounding_change": "+0.000", "final_penalty": "0.00", "cpu_seconds": "15"},
        {"arm": "l12", "lam": 0.1, "seeds": "0", "test_acc_hard": "0.700",
         "rounding_change": "-0.020", "final_penalty": "3.00", "cpu_seconds": ""},
    ]
