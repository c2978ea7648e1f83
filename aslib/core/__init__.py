"""The mathematics, in torch alone: the penalties on doubly stochastic matrices, the projection onto them,
Sinkhorn's normalisation, rounding to a permutation and its error bound (:mod:`.penalty`); the numerical checks
of the penalty's facts behind notebook 01 (:mod:`.theory`); input validation shared by every entry point
(:mod:`.checks`). Nothing here knows of networks, data or solvers."""
