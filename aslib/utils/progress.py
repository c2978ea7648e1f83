"""Progress bars that behave in a terminal, in JupyterLab, and inside papermill and nbval runs.

A fixed width (no terminal-size query, which fails or misreports in a kernel without a terminal) and
plain text (no ipywidgets, whose state papermill cannot render). ``enabled=False`` turns a bar off.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

__all__ = ["progress"]

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar over ``iterable`` (or a manual one with ``total=``) with notebook-safe defaults.

    ``kwargs`` go to ``tqdm`` (``desc``, ``total``, ``leave``, ...) and override the defaults.
    """
    options: dict[str, Any] = {
        "ncols": 88,
        "dynamic_ncols": False,
        "mininterval": 0.5,
        "file": sys.stderr,
        "disable": not enabled,
        "ascii": False,
    }
    options.update(kwargs)
    return tqdm(iterable, **options)
