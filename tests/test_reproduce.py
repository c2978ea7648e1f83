"""The notebook runner: profiles, parameter checking, failure reporting, refresh without loss."""

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from aslib.reproduce import (
    Profile, check_parameters, find_notebooks, load_profile, main, notebook_parameters, refresh_notebook,
    execute_notebooks, prepare,
)

ROOT = Path(__file__).resolve().parent.parent


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
    for name in ("quick", "paper", "smoke"):
        profile = load_profile(name)
        for stem, parameters in profile.notebooks.items():
            assert stem in stems, f"profile {name} names unknown notebook {stem}"
            check_parameters(stems[stem], parameters)


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ValueError, match="known profiles: .*quick"):
        load_profile("quik")


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
