"""pyproject.toml and environment.yml describe the same environment; the two commands exist."""

import importlib
import re
import tomllib

import yaml

from helpers import REPO_ROOT



def pins(requirements):
    return {m.group(1).lower(): m.group(2) for r in requirements if (m := re.fullmatch(r"([\w.-]+)==(\S+)", r))}


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    python = next(d for d in conda if d.startswith("python="))
    assert project["requires-python"] == f">={python.split('=')[1]}"
    # every pin of pyproject is repeated exactly in the pip section, and nothing else is pinned there
    assert pins(pip) == pins(project["dependencies"])
    assert {"torch": "2.14.1", "torchvision": "0.29.1"}.items() <= pins(project["dependencies"]).items()
    # every package whose version enters the code fingerprint is pinned: unpinned, two installs of one commit
    # printed different numbers
    from aslib.utils.runtime import FINGERPRINT_PACKAGES
    assert set(FINGERPRINT_PACKAGES) <= set(pins(project["dependencies"]))
    # tests/conftest.py wraps nbval's kernel start-up (an internal function), so nbval is pinned too
    assert "nbval" in pins(project["dependencies"])
    # the pip section installs this package, so every other dependency comes from pyproject itself
    assert "-e .[test]" in pip


def makefile_targets():
    return set(re.findall(r"^([\w-]+):", (REPO_ROOT / "Makefile").read_text(), re.M))


def test_readme_commands_exist_and_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    # the two commands are the README's first code block, and each is a Makefile target
    first_block = re.search(r"^## The two commands\n\n((?:    .*\n)+)", readme, re.M)
    assert first_block, "README has no '## The two commands' section with a code block"
    assert re.findall(r"^    make (\w+)", first_block.group(1), re.M) == ["reproduce", "test"]
    # every `make X` the README mentions is a real target, every `python -m aslib.X` a real module with main()
    mentioned = set(re.findall(r"`?make ([a-z][\w-]*)", readme))
    assert mentioned >= {"reproduce", "test"} and mentioned <= makefile_targets(), mentioned - makefile_targets()
    for module in set(re.findall(r"python -m (aslib(?:\.\w+)+)", readme)):
        assert callable(getattr(importlib.import_module(module), "main", None)), module
    # CI runs exactly the README's test command
    ci = [line for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert "make test" in ci


def test_make_test_runs_nbval_on_copies_never_on_the_committed_notebooks():
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", (REPO_ROOT / "Makefile").read_text(), re.M).group(1)
    assert "--copy-notebooks" in recipe and "--nbval-lax" in recipe
    # under pytest-xdist, each notebook's cells stay on one worker, in order
    assert "--dist loadfile" in recipe
    assert not re.search(r"pytest[^\n]*\snotebooks\b", recipe), "nbval must not run on notebooks/ itself"
