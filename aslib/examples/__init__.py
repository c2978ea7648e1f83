"""Small worked examples of learning a permutation matrix.

``graph_matching`` and ``two_layer`` have a loss known in closed form and share one solver
(:mod:`aslib.solver.relaxation`); ``permuted_input`` trains a learned shuffle in front of a small CNN.
"""
