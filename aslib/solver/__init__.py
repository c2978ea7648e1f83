"""The permutation solver: one optimisation loop over ``D_n`` for any differentiable loss (:mod:`.relaxation`) and
the quadratic assignment problem with scipy's interface on top of it (:mod:`.qap`). A new solver method is one
function in :mod:`.qap` and an entry of its dispatch table."""
