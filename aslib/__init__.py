"""aslib: AutoShuffleNet, runnable. The public interface, for learned shuffles in any network:

Layers (:mod:`aslib.nn.layers`)
    :class:`LearnedShuffle` (a doubly stochastic ``M`` driven to a permutation), :class:`ChannelShuffle`
    (ShuffleNet's fixed shuffle), :class:`FixedPermutation` (a fixed gather ``x[:, perm]``).
A model's shuffles together (:mod:`aslib.nn.shuffles`)
    :func:`learn_shuffles` (every fixed shuffle of a network becomes learned: started at its permutation, at
    ``J/c`` or at a random permutation), :func:`shuffle_penalty` (``sum_l P(M_l)``, the l1-2 penalty of every
    learned shuffle, to add to the loss), :func:`project_shuffles_` (back onto ``D_n`` after each optimizer
    step), :func:`mirror_shuffles_` (the mirror parameterisation's step), :func:`shuffle_parameters` (for an
    optimizer group without weight decay), :func:`shuffle_stats`, and :func:`harden` (the network for
    inference: every learned shuffle rounded to its permutation, an index gather).
Models (:mod:`aslib.models`)
    :func:`shufflenet_v1`, :func:`shufflenet_v2`, :func:`get_model` by name, :func:`from_torchvision`
    (torchvision's ShuffleNet v2 and its pretrained weights), :func:`count_parameters`, :func:`count_flops`.
The solver (:mod:`aslib.solver.qap`)
    :func:`quadratic_assignment`: scipy's interface, with the l1-2 penalty method.

Training loops, data sets and the notebooks' machinery stay in their subpackages (``aslib.training``,
``aslib.study``, ``aslib.runner``) and are not imported here.
"""

from aslib.models import count_flops, count_parameters, from_torchvision, get_model, shufflenet_v1, shufflenet_v2
from aslib.nn.layers import ChannelShuffle, FixedPermutation, LearnedShuffle
from aslib.nn.shuffles import (
    harden, learn_shuffles, mirror_shuffles_, project_shuffles_, shuffle_parameters, shuffle_penalty, shuffle_stats,
)
from aslib.solver.qap import quadratic_assignment

__all__ = [
    "ChannelShuffle",
    "FixedPermutation",
    "LearnedShuffle",
    "count_flops",
    "count_parameters",
    "from_torchvision",
    "get_model",
    "harden",
    "learn_shuffles",
    "mirror_shuffles_",
    "project_shuffles_",
    "quadratic_assignment",
    "shuffle_parameters",
    "shuffle_penalty",
    "shuffle_stats",
    "shufflenet_v1",
    "shufflenet_v2",
]
__version__ = '0.1.0'
