"""pyproject.toml and environment.yml describe the same environment; the two commands exist."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def pins(requirements):
    return {m.group(1).lower(): m.group(2) for r in requirements if (m := re.fullmatch(r"([\w.-]+)==(\S+)", r))}


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    python = next(d for d in conda if d.startswith("python="))
    assert project["requires-python"] == f">={python.split('=')[1]}"
    # every pin of pyproject is repeated exactly in the pip section, and nothing else is pinned there
    assert pins(pip) == pins(project["dependencies"])
    assert pins(project["dependencies"]) == {"torch": "2.14.1", "torchvision": "0.29.1"}
    # the pip section installs this package, so every other dependency comes from pyproject itself
    assert "-e .[test]" in pip


def test_readme_gives_the_two_commands_and_ci_calls_the_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make reproduce" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^reproduce:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
