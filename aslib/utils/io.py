"""Atomic file writes and the small results files that notebooks leave beside their executed copies.

A file is written to a temporary name in the same folder, flushed to disk, then renamed over the target,
so a reader (or a run killed half-way) only ever sees the old complete file or the new complete file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import pandas as pd

__all__ = ["atomic_write", "load_results", "results_path", "save_results", "save_table"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then rename it to ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(value: Any) -> Any:
    """Plain JSON types from numpy/torch scalars, arrays and paths; non-finite floats become None."""
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def results_path(output_dir: str | os.PathLike[str], name: str, suffix: str = ".json") -> Path:
    """Where the results file ``name`` lives: ``<output_dir>/<name><suffix>``."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid results name {name!r}")
    return Path(output_dir) / f"{name}{suffix}"


def save_results(output_dir: str | os.PathLike[str], name: str, results: Mapping[str, Any]) -> Path:
    """Write ``results`` (a mapping of plain values) as ``<output_dir>/<name>.json``, atomically."""
    text = json.dumps(_jsonable(results), indent=2, sort_keys=True) + "\n"
    return atomic_write(results_path(output_dir, name), lambda f: f.write(text.encode()))


def load_results(output_dir: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Read ``<output_dir>/<name>.json``; ``FileNotFoundError`` names the missing file."""
    path = results_path(output_dir, name)
    if not path.is_file():
        raise FileNotFoundError(f"no results file {path}: run the notebook that writes '{name}' first")
    return json.loads(path.read_text())


def save_table(output_dir: str | os.PathLike[str], name: str, table: pd.DataFrame) -> Path:
    """Write a result table as ``<output_dir>/<name>.csv``, atomically, without the index."""
    text = table.to_csv(index=False)
    return atomic_write(results_path(output_dir, name, ".csv"), lambda f: f.write(text.encode()))
