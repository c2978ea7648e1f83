r"""A teacher-student two-layer network whose student must learn a permutation: four set-ups, losses in closed form.

The model (ours; the paper's exact set-up is not available). Input ``x ~ N(0, I_d)``, output weights ``a``
of shape ``(m,)``, hidden weights ``W`` of shape ``(m, d)``, a hidden permutation ``P =
permutation_matrix(perm)`` (``P[i, perm[i]] = 1``) and the learned matrix ``M``. The student knows ``a`` and
``W``; the set-up decides where the permutation sits (:data:`SETUPS`):

============  ==============================  ==============================  ===========  ============
set-up        teacher ``f(x)``                student ``g_M(x)``              ``M`` size   convex in M
============  ==============================  ==============================  ===========  ============
``between``   ``a^T sigma(P W x)``            ``a^T sigma(M W x)``            ``m``        no
``after``     ``a^T P sigma(W x)``            ``a^T M sigma(W x)``            ``m``        yes
``input``     ``a^T sigma(W P x)``            ``a^T sigma(W M x)``            ``d``        no
``linear``    ``a^T P W x``                   ``a^T M W x``                   ``m``        yes
============  ==============================  ==============================  ===========  ============

``sigma = ReLU`` except in ``linear`` (``sigma`` the identity, where "between" and "after" coincide).

Loss: the population risk ``L(M) = E_x[(f(x) - g_M(x))^2]`` in closed form. With the kernel
``K(u, v) = E[sigma(u.x) sigma(v.x)]``, which is ``|u||v| (sin t + (pi - t) cos t) / (2 pi)``,
``t = angle(u, v)``, for the ReLU and ``u.v`` for the identity, a network ``alpha^T sigma(A x)`` against
``beta^T sigma(B x)`` has the risk

.. math::
    R = \alpha^T K(A, A) \alpha - 2 \alpha^T K(A, B) \beta + \beta^T K(B, B) \beta .

* ``between``: ``alpha = beta = a``, ``A = P W``, ``B = M W``. ``input``: ``A = W P``, ``B = W M``.
* ``after`` and ``linear`` share the hidden features, so ``R`` is the convex quadratic
  ``L(M) = (M^T a - P^T a)^T K (M^T a - P^T a)`` with ``K = K(W, W)`` (``W W^T`` for ``linear``). Every
  doubly stochastic ``M`` with ``M^T a = P^T a`` minimises it: a slice of the Birkhoff polytope, of which
  ``P`` is the only permutation when the entries of ``a`` are distinct. The relaxation alone cannot tell
  ``P`` from the rest of the slice; the penalty's exactness can.

Success is "the rounded permutation ``Q`` computes the teacher's function", ``L(Q) = 0`` (relative to the
teacher's energy ``E[f^2]``), i.e. ``Q = P`` up to the symmetries of the set-up (hidden units with equal
output weights, inputs with equal columns of ``W``); for generic instances only ``Q = P`` does. The methods
are those of graph matching: ``"l12"``, ``"relaxed"`` (``lam = 0``) and ``"sinkhorn"``, all through
:func:`aslib.solver.relaxation.solve_permutation` (called in :func:`learn_permutation` only).

:mod:`.network` holds the closed-form network (kernels, instances, losses) and :mod:`.experiment` the solves,
success over starts and the verdicts, and the search for a penalty and optimiser under which the paper's claim
holds (:data:`CLAIM_OPTIMISERS`, :func:`claim_table`); both are importable from here. The comparison of every
penalty and Gumbel-Sinkhorn is :mod:`aslib.examples.penalty_study`.
"""

from aslib.examples.two_layer.experiment import (
    CLAIM_OPTIMISERS,
    best_of,
    claim_search_verdicts,
    claim_table,
    claim_tests,
    claim_verdicts,
    compare_success,
    comparison_table,
    failure_verdicts,
    learn_permutation,
    schedule_table,
    schedule_verdict,
    summarise_success,
    two_layer_config,
)
from aslib.examples.two_layer.network import (
    CONVEX_SETUPS,
    SETUPS,
    SUCCESS_RTOL,
    TWO_LAYER_ALTERNATIVES,
    TWO_LAYER_METHODS,
    TeacherStudent,
    check_setup,
    convexity_gap,
    make_teacher_student,
    monte_carlo_loss,
    network_output,
    population_loss,
    relu_kernel,
    relu_mean,
    setup_kernel,
    teacher_energy,
)

__all__ = [
    "CLAIM_OPTIMISERS",
    "CONVEX_SETUPS",
    "SETUPS",
    "SUCCESS_RTOL",
    "TWO_LAYER_ALTERNATIVES",
    "TWO_LAYER_METHODS",
    "TeacherStudent",
    "best_of",
    "check_setup",
    "claim_search_verdicts",
    "claim_table",
    "claim_tests",
    "claim_verdicts",
    "compare_success",
    "comparison_table",
    "convexity_gap",
    "failure_verdicts",
    "learn_permutation",
    "make_teacher_student",
    "monte_carlo_loss",
    "network_output",
    "population_loss",
    "relu_kernel",
    "relu_mean",
    "schedule_table",
    "schedule_verdict",
    "setup_kernel",
    "summarise_success",
    "teacher_energy",
    "two_layer_config",
]
