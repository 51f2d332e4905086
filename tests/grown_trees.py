"""Random loss trees as the DEAP engine grows them, for tests that sweep many shapes."""

from __future__ import annotations

import random

from deap import gp

from symloss.engines.deap import primitive_set, repair, to_expression
from symloss.expression import Expression


def grown_trees(n: int, seed: int, min_height: int, max_height: int) -> list[Expression]:
    """``n`` trees from DEAP's half-and-half generator (heights ``min_height`` to
    ``max_height``), repaired to use ``y`` and ``f``; Python's global RNG is restored."""
    pset = primitive_set()
    state = random.getstate()
    random.seed(seed)
    try:
        return [to_expression(repair(gp.PrimitiveTree(
            gp.genHalfAndHalf(pset, min_height, max_height)), pset)) for _ in range(n)]
    finally:
        random.setstate(state)
