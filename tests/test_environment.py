"""The two commands exist and CI runs the README's (the environment's files: tests/test_install.py)."""

import importlib
import re

from helpers import REPO_ROOT


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
