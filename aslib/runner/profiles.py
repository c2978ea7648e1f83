"""Profiles and notebook parameters: what the runner (:mod:`aslib.runner.reproduce`) may pass to a notebook.

A profile is a YAML file ``profiles/<name>.yaml``::

    description: what the profile is for
    figures_dir: figures            # relative to the repository root
    named_only: false               # true: run only the notebooks named below
    notebooks:
      01_penalty_and_error_bounds:  # notebook stem -> parameters for its `parameters` cell
        n_random: 2000

A notebook's parameters are the literals of its cell tagged ``parameters`` (read with
``papermill.inspect_notebook``). Every name a profile or a ``-p NAME=VALUE`` override gives is checked against
them (papermill itself only warns on an unknown name), and every value against the type of its literal default,
before anything runs.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import papermill
import yaml

__all__ = [
    "REPO_ROOT",
    "Profile",
    "check_parameter_types",
    "check_parameters",
    "find_notebooks",
    "load_profile",
    "notebook_parameters",
    "parse_override",
]

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Profile:
    """A named set of parameters per notebook (see the module docstring for the file format)."""

    name: str
    description: str = ""
    figures_dir: str = "figures"
    #: Run only the notebooks named in :attr:`notebooks` (by default every notebook runs, the unnamed ones
    #: with their stored defaults).
    named_only: bool = False
    notebooks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def load_profile(name: str, profiles_dir: str | Path | None = None) -> Profile:
    """Read ``<profiles_dir>/<name>.yaml``; an unknown name is refused with the list of profiles."""
    profiles_dir = Path(profiles_dir) if profiles_dir is not None else REPO_ROOT / "profiles"
    path = profiles_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in profiles_dir.glob("*.yaml"))
        raise ValueError(f"unknown profile {name!r}: no file {path}; known profiles: {', '.join(known) or 'none'}")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = set(raw) - {"description", "figures_dir", "named_only", "notebooks"}
    if unknown:
        raise ValueError(f"profile {path} has unknown keys {sorted(unknown)}")
    notebooks = raw.get("notebooks") or {}
    if not isinstance(notebooks, Mapping) or not all(isinstance(v, Mapping) or v is None for v in notebooks.values()):
        raise ValueError(f"profile {path}: 'notebooks' must map notebook names to parameter mappings")
    return Profile(
        name=name,
        description=raw.get("description", ""),
        figures_dir=raw.get("figures_dir", "figures"),
        named_only=_check_bool(raw.get("named_only", False), f"profile {path}: named_only"),
        notebooks={k: dict(v or {}) for k, v in notebooks.items()},
    )


def _check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {value!r}")
    return value


def find_notebooks(notebooks_dir: str | Path | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in ``notebooks_dir``, in order."""
    notebooks_dir = Path(notebooks_dir) if notebooks_dir is not None else REPO_ROOT / "notebooks"
    return sorted(p for p in notebooks_dir.glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """Names and default values of the notebook's ``parameters`` cell (via ``papermill.inspect_notebook``).

    The cell holds literals only, so each default is evaluated with ``ast.literal_eval``.
    """
    inferred = papermill.inspect_notebook(str(path))
    if not inferred:
        raise ValueError(f"{path} has no cell tagged 'parameters'")
    defaults = {}
    for name, info in inferred.items():
        try:
            defaults[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{Path(path).name}: parameter {name} = {info['default']} is not a literal") from err
    return defaults


def check_parameters(path: str | Path, parameters: Mapping[str, Any], valid: Mapping[str, Any] | None = None) -> None:
    """Refuse any name in ``parameters`` that the notebook's ``parameters`` cell does not define.

    ``valid`` is the notebook's :func:`notebook_parameters`, when the caller has already read them.
    """
    valid = notebook_parameters(path) if valid is None else valid
    unknown = sorted(set(parameters) - set(valid))
    if unknown:
        raise ValueError(
            f"{Path(path).name}: unknown parameter(s) {', '.join(unknown)}; valid names: {', '.join(sorted(valid))}"
        )


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _matches_type(value: Any, default: Any) -> bool:
    """Whether ``value`` may replace the literal ``default``: same type, an int where a float is expected,
    anything where the default is None (an optional setting); bool is never taken for a number."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def check_parameter_types(path: str | Path, parameters: Mapping[str, Any], valid: Mapping[str, Any]) -> None:
    """Refuse a value whose type differs from its default's literal in the ``parameters`` cell.

    E.g. ``-p n=abc`` against ``n = 6`` raises ``ValueError: ...: parameter n = 'abc' is a str, expected an
    int (its default is 6)``, before any notebook runs. An int is accepted for a float default, anything for
    a default of None; a bool is never accepted for a number, nor a number for a bool.
    """
    for name, value in parameters.items():
        if name in valid and not _matches_type(value, valid[name]):
            raise ValueError(
                f"{Path(path).name}: parameter {name} = {value!r} is {_a(_type_name(value))}, expected "
                f"{_a(_type_name(valid[name]))} (its default is {valid[name]!r})"
            )


def parse_override(text: str) -> tuple[str, Any]:
    """``"NAME=VALUE"`` (a ``-p`` option) as ``(name, value)``, the value read as YAML (``n=40`` gives 40)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, yaml.safe_load(value)
