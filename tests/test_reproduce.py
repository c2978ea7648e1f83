"""The notebook runner: profiles, parameter checking, failure reporting, refresh without loss."""

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from aslib.runner.profiles import (
    REPO_ROOT, Profile, check_parameter_types, check_parameters, find_notebooks, load_profile, notebook_parameters,
)
from aslib.runner.reproduce import execute_notebooks, main, prepare, refresh_notebook


def write_notebook(path: Path, body: str, parameters: str = "x = 1\noutput_dir = '.'\nfigures_dir = '.'"):
    params = new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_every_committed_notebook_has_the_common_parameters():
    notebooks = find_notebooks()
    assert notebooks, "no numbered notebooks found"
    for path in notebooks:
        names = set(notebook_parameters(path))
        assert {"seed", "output_dir", "figures_dir", "show_progress"} <= names, path.name


def test_profiles_name_only_real_notebooks_and_parameters():
    stems = {p.stem: p for p in find_notebooks()}
    names = sorted(path.stem for path in (REPO_ROOT / "profiles").glob("*.yaml"))
    assert {"quick", "paper", "smoke", "cifar-cpu"} <= set(names)
    for name in names:
        profile = load_profile(name)
        for stem, parameters in profile.notebooks.items():
            assert stem in stems, f"profile {name} names unknown notebook {stem}"
            check_parameters(stems[stem], parameters)
            check_parameter_types(stems[stem], parameters, notebook_parameters(stems[stem]))


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ValueError, match="known profiles: .*quick"):
        load_profile("quik")


def test_a_named_only_profile_runs_just_its_notebooks(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    for stem in ("01_a", "02_b", "03_c"):
        write_notebook(nbs / f"{stem}.ipynb", "pass")
    (tmp_path / "p.yaml").write_text("named_only: true\nnotebooks:\n  02_b: {x: 3}\n")
    profile = load_profile("p", tmp_path)
    assert [p.stem for p, _ in prepare(profile, runs_dir=tmp_path, notebooks_dir=nbs)] == ["02_b"]
    assert [p.stem for p, _ in prepare(profile, runs_dir=tmp_path, notebooks_dir=nbs, only=["01_a"])] == ["01_a"]
    everything = Profile("all", notebooks=profile.notebooks)
    assert len(prepare(everything, runs_dir=tmp_path, notebooks_dir=nbs)) == 3
    (tmp_path / "bad.yaml").write_text("named_only: yes please\n")
    with pytest.raises(ValueError, match="named_only must be true or false"):
        load_profile("bad", tmp_path)


def test_typo_in_parameter_is_refused_with_valid_names():
    path = find_notebooks()[0]
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) sed; valid names: .*seed"):
        check_parameters(path, {"sed": 1})


def test_typo_refused_before_anything_runs(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    write_notebook(nbs / "01_a.ipynb", "open('ran', 'w').write('yes')")
    profile = Profile("t", notebooks={"01_a": {"y": 2}})
    with pytest.raises(ValueError, match="unknown parameter"):
        prepare(profile, runs_dir=tmp_path / "runs", notebooks_dir=nbs)
    assert not (nbs / "ran").exists() and not (tmp_path / "runs").exists()


def test_failing_notebook_is_reported_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    write_notebook(nbs / "01_fails.ipynb", "raise RuntimeError(f'broken with x={x}')")
    write_notebook(
        nbs / "02_works.ipynb",
        "import json, pathlib\npathlib.Path(output_dir, '02_works.json').write_text(json.dumps({'x': x}))",
    )
    profile = Profile("t", notebooks={"02_works": {"x": 5}})
    runs = execute_notebooks(prepare(profile, runs_dir=tmp_path / "runs", notebooks_dir=nbs), show_progress=False)
    assert [r.status for r in runs] == ["failed", "ok"]
    assert "RuntimeError: broken with x=1" in runs[0].error and "cell" in runs[0].error
    assert json.loads((tmp_path / "runs" / "t" / "02_works.json").read_text()) == {"x": 5}
    assert (tmp_path / "runs" / "t" / "01_fails.ipynb").is_file()


def test_parallel_jobs_run_at_once_keep_order_and_run_results_readers_last(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    # 01 and 02 each wait for the other's marker file: they finish only if they run at the same time
    wait = ("import pathlib, time\nout = pathlib.Path(output_dir)\n(out / '{me}.started').touch()\n"
            "deadline = time.time() + 60\nwhile not (out / '{other}.started').exists() and time.time() < deadline:\n"
            "    time.sleep(0.05)\nassert (out / '{other}.started').exists(), 'not run at once'")
    write_notebook(nbs / "01_a.ipynb", wait.format(me="01", other="02"))
    write_notebook(nbs / "02_b.ipynb", wait.format(me="02", other="01") + "\nraise RuntimeError('b fails')")
    # 00 reads the published results: it runs after both, although it comes first
    write_notebook(nbs / "00_reader.ipynb",
                   "import pathlib\nassert (pathlib.Path(output_dir) / '02.started').exists()",
                   "results_dir = '.'\noutput_dir = '.'\nfigures_dir = '.'")
    prepared = prepare(Profile("t"), runs_dir=tmp_path / "runs", notebooks_dir=nbs, results_dir=tmp_path / "results")
    runs = execute_notebooks(prepared, show_progress=False, jobs=2)
    assert [r.notebook for r in runs] == ["01_a", "02_b", "00_reader"]
    assert [r.status for r in runs] == ["ok", "failed", "ok"]
    assert "b fails" in runs[1].error
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        execute_notebooks(prepared, show_progress=False, jobs=0)


def test_command_line_exit_status_and_report(tmp_path, capsys):
    status = main(["--profile", "no-such-profile", "--no-progress"])
    assert status == 2
    assert "unknown profile" in capsys.readouterr().err


def test_refresh_leaves_notebook_untouched_when_it_fails(tmp_path):
    path = write_notebook(tmp_path / "01_fails.ipynb", "raise ValueError('nope')")
    before = path.read_bytes()
    run = refresh_notebook(path, show_progress=False)
    assert run.status == "failed" and "ValueError: nope" in run.error
    assert path.read_bytes() == before
    assert run.output == tmp_path / "01_fails.failed.ipynb" and run.output.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_fails.failed.ipynb", "01_fails.ipynb"]


def test_refresh_stores_outputs_of_default_run(tmp_path):
    path = write_notebook(tmp_path / "01_ok.ipynb", "print(x + 41)")
    run = refresh_notebook(path, show_progress=False)
    assert run.status == "ok"
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[1].outputs[0]["text"] == "42\n"
    assert "papermill" not in nb.metadata


def test_parameter_defaults_are_evaluated_literals(tmp_path):
    path = write_notebook(tmp_path / "01_a.ipynb", "pass",
                          "xs = [1, 2]\nn = 200_000\nname = 'a'\nnothing = None\noutput_dir = '.'\nfigures_dir = '.'")
    assert notebook_parameters(path) == {"xs": [1, 2], "n": 200000, "name": "a", "nothing": None,
                                         "output_dir": ".", "figures_dir": "."}
    bad = write_notebook(tmp_path / "02_b.ipynb", "pass", "x = len('abc')\noutput_dir = '.'\nfigures_dir = '.'")
    with pytest.raises(ValueError, match="not a literal"):
        notebook_parameters(bad)


def test_wrong_type_is_refused_naming_parameter_and_expected_type(tmp_path):
    write_notebook(tmp_path / "01_a.ipynb", "pass",
                          "n = 6\nrate = 0.5\nflag = True\nxs = [1]\nopt = None\noutput_dir = '.'\nfigures_dir = '.'")
    with pytest.raises(ValueError, match=r"parameter n = 'abc' is a str, expected an int \(its default is 6\)"):
        prepare(Profile("t", notebooks={"01_a": {"n": "abc"}}), runs_dir=tmp_path / "runs", notebooks_dir=tmp_path)
    with pytest.raises(ValueError, match="parameter flag = 1 is an int, expected a bool"):
        prepare(Profile("t"), runs_dir=tmp_path / "runs", notebooks_dir=tmp_path, overrides={"flag": 1})
    with pytest.raises(ValueError, match="parameter n = True is a bool, expected an int"):
        prepare(Profile("t"), runs_dir=tmp_path / "runs", notebooks_dir=tmp_path, overrides={"n": True})
    assert not (tmp_path / "runs").exists()
    # an int where a float is expected, anything where the default is None, a list for a list
    prepare(Profile("t"), runs_dir=tmp_path / "runs", notebooks_dir=tmp_path,
            overrides={"rate": 1, "opt": "x", "xs": [2, 3], "n": 7})


def test_command_line_refuses_a_wrong_type_up_front(capsys):
    status = main(["--only", "01_penalty_and_error_bounds", "-p", "n=abc", "--no-progress"])
    assert status == 2
    assert "parameter n = 'abc' is a str, expected an int" in capsys.readouterr().err


def test_progress_output_is_stripped_and_other_output_kept():
    from aslib.runner.reproduce import strip_progress_output

    cell = new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr",
                               text="oracle:  45%|████▌     | 9/20 [00:02<00:02,  4.23it/s]\r" + " " * 80
                               + "\r\n"),
        nbformat.v4.new_output("stream", name="stderr", text="epoch 3/10 [00:01<00:02, 2.5s/it]\nUserWarning: real\n"),
        nbformat.v4.new_output("stream", name="stdout", text="45%| kept on stdout\n"),
        nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "1"},
                                                     "text/plain": "HBox()"}),
    ]
    nb = new_notebook(cells=[cell])
    nb.metadata["widgets"] = {"state": {}}
    strip_progress_output(nb)
    assert [o.get("text") for o in nb.cells[0].outputs] == ["UserWarning: real\n", "45%| kept on stdout\n"]
    assert "widgets" not in nb.metadata


def test_published_results_carry_provenance_and_replace_older_files(tmp_path):
    from aslib.runner.reproduce import publish_results

    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    write_notebook(nbs / "01_a.ipynb", "\n".join([
        "import json, pathlib",
        "pathlib.Path(output_dir, '01_a.json').write_text(json.dumps({'x': x, 'device': 'cpu: test'}))",
        "pathlib.Path(output_dir, '01_a_table.csv').write_text('a,b\\n1,2\\n')",
        "pathlib.Path(output_dir, '01_a_checkpoint.pt').write_text('large')",
    ]), "x = 1\nseed = 3\noutput_dir = '.'\nfigures_dir = '.'")
    write_notebook(nbs / "02_no_results.ipynb", "pass")
    results = tmp_path / "results"
    (results / "t").mkdir(parents=True)
    (results / "t" / "01_a_old.csv").write_text("stale\n")
    (results / "t" / "other.txt").write_text("kept\n")
    prepared = prepare(Profile("t"), runs_dir=tmp_path / "runs", notebooks_dir=nbs, figures_dir=tmp_path / "figures")
    runs = execute_notebooks(prepared, show_progress=False, publish_to=("t", results))
    assert [r.status for r in runs] == ["ok", "ok"]
    assert sorted(p.name for p in (results / "t").iterdir()) == ["01_a.json", "01_a_table.csv", "other.txt"]
    record = json.loads((results / "t" / "01_a.json").read_text())
    from aslib.utils.runtime import code_fingerprint
    assert record == {"x": 1, "device": "cpu: test", "profile": "t", "seeds": [3],
                      "code_fingerprint": code_fingerprint(), "tables": ["01_a_table.csv"]}
    # a notebook with a seeds list and no device of its own
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "03_b.json").write_text("{}")
    publish_results("03_b", {"output_dir": str(tmp_path / "out"), "seeds": [0, 1]}, "t", results, "f" * 16)
    assert json.loads((results / "t" / "03_b.json").read_text())["seeds"] == [0, 1]
    assert json.loads((results / "t" / "03_b.json").read_text())["device"] == "none"


def test_reader_notebooks_run_last_with_the_results_dir(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    write_notebook(nbs / "01_reads.ipynb", "pass", "results_dir = '../results'\noutput_dir = '.'\nfigures_dir = '.'")
    write_notebook(nbs / "02_writes.ipynb", "pass")
    prepared = prepare(Profile("t"), runs_dir=tmp_path / "runs", notebooks_dir=nbs, results_dir=tmp_path / "res")
    assert [p.stem for p, _ in prepared] == ["02_writes", "01_reads"]
    assert prepared[1][1]["results_dir"] == str((tmp_path / "res").resolve())


def test_notebook_tree_for_nbval_writes_nothing_into_the_repository(tmp_path):
    from aslib.runner.reproduce import copy_notebook_tree

    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "results" / "quick").mkdir(parents=True)
    (root / "results" / "quick" / "01_a.json").write_text("{}")
    write_notebook(root / "notebooks" / "01_a.ipynb",
                   "open('../figures/f.png', 'w').write('x'); open('../results/quick/01_a.json', 'w').write('changed')")
    notebooks = copy_notebook_tree(tmp_path / "tree", root=root)
    assert sorted(p.name for p in notebooks.iterdir()) == ["01_a.ipynb"]
    assert (tmp_path / "tree" / "data").resolve() == (root / "data").resolve()
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    run = refresh_notebook(notebooks / "01_a.ipynb", show_progress=False)
    assert run.status == "ok"
    assert (tmp_path / "tree" / "figures" / "f.png").is_file()
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    with pytest.raises(FileExistsError):
        copy_notebook_tree(tmp_path / "tree", root=root)


def test_a_notebooks_figures_it_did_not_write_again_are_removed(tmp_path):
    from aslib.study.plots import owned_figures, remove_stale_figures
    from aslib.utils.io import atomic_write

    def write(name):
        atomic_write(tmp_path / name, lambda f: f.write(b"figure"))

    for name in ("06_quick_04_cifar_accuracy.png", "06_cifar-cpu_05_imagenet_accuracy.png",
                 "06_cifar-cpu_05_imagenet_accuracy.pdf", "04_training_curves.png", "06_notes.txt"):
        write(name)
    (tmp_path / "cifar-cpu").mkdir()
    (tmp_path / "cifar-cpu" / "06_other.png").write_bytes(b"another profile's")
    before = owned_figures(tmp_path, "06_results")
    assert sorted(p.name for p in before) == ["06_cifar-cpu_05_imagenet_accuracy.pdf",
                                              "06_cifar-cpu_05_imagenet_accuracy.png", "06_quick_04_cifar_accuracy.png"]
    assert remove_stale_figures(tmp_path, "06_results", before) == []  # a run that drew nothing deletes nothing
    before = owned_figures(tmp_path, "06_results")
    write("06_quick_04_cifar_accuracy.png")  # the run rewrites this one, byte for byte the same
    write("06_quick_04_cifar_lam_sweep.png")  # and writes a new one
    removed = remove_stale_figures(tmp_path, "06_results", before)
    assert sorted(p.name for p in removed) == ["06_cifar-cpu_05_imagenet_accuracy.pdf",
                                               "06_cifar-cpu_05_imagenet_accuracy.png"]
    # other notebooks' figures, other files and other profiles' folders are not its own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["04_training_curves.png", "06_notes.txt",
                                                          "06_quick_04_cifar_accuracy.png",
                                                          "06_quick_04_cifar_lam_sweep.png", "cifar-cpu"]
    assert (tmp_path / "cifar-cpu" / "06_other.png").is_file()
    with pytest.raises(ValueError, match="starts with its number"):
        owned_figures(tmp_path, "results")


def test_a_profiles_run_deletes_the_figures_its_notebooks_no_longer_write(tmp_path):
    nbs, figures, results = tmp_path / "notebooks", tmp_path / "figures", tmp_path / "results"
    nbs.mkdir()
    figures.mkdir()
    write_notebook(nbs / "01_a.ipynb", "import pathlib\npathlib.Path(figures_dir, '01_new.png').write_bytes(b'x')")
    for name in ("01_old.png", "01_old.pdf", "02_other.png"):
        (figures / name).write_bytes(b"from an earlier run")
    prepared = prepare(Profile("t"), runs_dir=tmp_path / "runs", notebooks_dir=nbs, figures_dir=figures)
    # a run that does not publish (parameters overridden with -p) deletes nothing
    assert [r.status for r in execute_notebooks(prepared, show_progress=False)] == ["ok"]
    assert sorted(p.name for p in figures.iterdir()) == ["01_new.png", "01_old.pdf", "01_old.png", "02_other.png"]
    assert [r.status for r in execute_notebooks(prepared, show_progress=False, publish_to=("t", results))] == ["ok"]
    assert sorted(p.name for p in figures.iterdir()) == ["01_new.png", "02_other.png"]
