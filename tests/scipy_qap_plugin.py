"""A pytest plugin (``-p scipy_qap_plugin``) that sends every call of ``scipy.optimize.quadratic_assignment`` to
``aslib.quadratic_assignment(A, B, "l12", options)``, whatever method the caller names.

Loaded before collection, so scipy's own test module, which imports the name from ``scipy.optimize``, calls
the penalty method. The options pass through unchanged: each of FAQ's and 2-opt's options (``P0``, ``maxiter``,
``tol``, ``shuffle_input``, ``partial_match``, ``partial_guess``, ``rng``, ``maximize``) is an option of ``"l12"``
with scipy's meaning, and an unknown one is warned about, as scipy warns. A call naming ``method="2opt"`` asks
for a 2-opt local optimum: it gets ``polish="2opt"`` (scipy's 2-opt from l12's answer, fixed pairs kept).
"""

from __future__ import annotations

from typing import Any

import scipy.optimize

import aslib


def _to_l12(A: Any, B: Any, method: str = "faq", options: dict[str, Any] | None = None) -> Any:
    options = dict(options or {})
    if isinstance(method, str) and method.lower() == "2opt":
        options.setdefault("polish", "2opt")
    return aslib.quadratic_assignment(A, B, "l12", options)


scipy.optimize.quadratic_assignment = _to_l12
