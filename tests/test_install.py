"""The library install: pyproject.toml's compatible ranges (the core, and the extras), constraints.txt's exact pins
(what `make env` installs, what reproduces the results) and environment.yml agree; the core imports nothing of
the extras."""

import re
import subprocess
import sys
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from helpers import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def requirements() -> dict[str, Requirement]:
    """Every requirement of pyproject.toml, the extras' included, by canonical name (each named once)."""
    found: dict[str, Requirement] = {}
    for line in PYPROJECT["dependencies"] + [r for extra in PYPROJECT["optional-dependencies"].values() for r in extra]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name not in found, f"{name} is required twice in pyproject.toml"
        found[name] = requirement
    return found


def pins(lines: list[str]) -> dict[str, Version]:
    """``name==version`` lines (comments and blank lines skipped) by canonical name; anything else is refused."""
    pinned = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line or line.startswith("-e "):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][\w.+]*)", line)
        assert match, f"not an exact pin: {line!r}"
        pinned[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pinned


def environment_yml() -> tuple[list[str], list[str]]:
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return conda, pip


def test_core_dependencies_are_ranges_and_the_notebook_stack_is_an_extra():
    core = {canonicalize_name(Requirement(r).name): Requirement(r) for r in PYPROJECT["dependencies"]}
    assert {"torch", "torchvision", "numpy", "scipy"} <= set(core)
    assert all(not any(s.operator == "==" for s in r.specifier) for r in core.values()), "pin in constraints.txt"
    heavy = {"jupyterlab", "ipykernel", "papermill", "nbval", "seaborn", "matplotlib", "scikit-learn", "onnx",
             "onnxruntime", "onnxscript", "pytest"}
    assert not heavy & set(core), f"core dependencies that belong in an extra: {heavy & set(core)}"
    extras = PYPROJECT["optional-dependencies"]
    assert {"notebooks", "export", "test"} <= set(extras)
    names = {extra: {canonicalize_name(Requirement(r).name) for r in extras[extra]} for extra in extras}
    assert {"jupyterlab", "papermill", "nbval", "seaborn", "scikit-learn", "ipykernel"} <= names["notebooks"]
    assert {"onnx", "onnxruntime", "onnxscript"} <= names["export"]


def test_constraints_pin_every_requirement_within_its_range_and_environment_yml_repeats_them():
    ranges = requirements()
    constraints = pins((REPO_ROOT / "constraints.txt").read_text().splitlines())
    assert set(constraints) == set(ranges), (f"pinned, not required: {set(constraints) - set(ranges)}; "
                                             f"required, not pinned: {set(ranges) - set(constraints)}")
    outside = {n: f"{v} not in {ranges[n].specifier}" for n, v in constraints.items()
               if not ranges[n].specifier.contains(v, prereleases=True)}
    assert not outside, outside
    assert {"torch": Version("2.14.1"), "torchvision": Version("0.29.1")}.items() <= constraints.items()
    # every package whose version enters the code fingerprint is pinned: unpinned, two installs of one commit
    # printed different numbers
    from aslib.utils.runtime import FINGERPRINT_PACKAGES
    assert {canonicalize_name(p) for p in FINGERPRINT_PACKAGES} <= set(constraints)
    conda, pip = environment_yml()
    python = next(d for d in conda if d.startswith("python="))
    assert PYPROJECT["requires-python"] == f">={python.split('=')[1]}"
    assert pins(pip) == constraints
    assert "-e .[notebooks,export,test]" in pip


def test_make_env_installs_with_the_constraints_and_every_extra():
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = re.search(r"^\$\(INSTALLED\):(.*)\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe and "constraints.txt" in recipe.group(1), "the environment must be rebuilt when the pins change"
    assert "pip install --quiet -c constraints.txt -e '.[notebooks,export,test]'" in recipe.group(2)
    assert "ipykernel install --sys-prefix --name aslib" in recipe.group(2)


def test_the_public_interface_imports_no_notebook_or_export_package():
    """`import aslib`, building, converting, penalising and hardening a model load none of the extras."""
    script = """
import sys
import torch
import aslib
model = aslib.shufflenet_v2(shuffle="fixed", stages_out_channels=(8, 16, 32, 64, 128), stages_repeats=(1, 1, 1))
aslib.learn_shuffles(model, init="uniform", noise=0.1)
aslib.shuffle_penalty(model).backward()
aslib.harden(model).eval()(torch.randn(1, 3, 8, 8))
names = {name.split(".")[0] for name in sys.modules} | {name for name in sys.modules if name.startswith("aslib.")}
print(" ".join(sorted(names)))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert {"aslib", "torch"} <= loaded
    extras = {"pandas", "matplotlib", "seaborn", "sklearn", "yaml", "IPython", "ipykernel", "jupyter_client",
              "jupyterlab", "papermill", "nbval", "nbformat", "onnx", "onnxruntime", "onnxscript", "torchvision"}
    assert not loaded & extras, f"import aslib loads {sorted(loaded & extras)}"
    above = sorted(n for n in loaded if n.split(".")[:2][-1] in ("training", "study", "examples", "runner"))
    assert not above, f"import aslib loads the layers above the models: {above}"
