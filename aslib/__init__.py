"""aslib: AutoShuffleNet, runnable. ``aslib.quadratic_assignment`` is scipy's, with the l1-2 penalty method."""

from aslib.solver.qap import quadratic_assignment

__all__ = ["quadratic_assignment"]
__version__ = '0.1.0'
