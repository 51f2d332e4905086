"""symloss: meta-learn symbolic loss functions for PyTorch models (EvoMAL).

>>> import symloss
>>> search = symloss.fit("sine", "mlp")                       # doctest: +SKIP
>>> print(search.latex())                                     # doctest: +SKIP
>>> search.best_loss_.save("loss.json")                       # doctest: +SKIP
>>> # loss(y_pred, y_true) in any training loop
>>> loss = symloss.load("loss.json")   # doctest: +SKIP
"""

import symloss.baselines  # noqa: F401  (registers the baselines' loss formats with load)
from symloss.config import Settings
from symloss.estimator import NotFittedError, SymbolicLossSearch, fit
from symloss.expression import Expression
from symloss.lossfile import load
from symloss.metatest import MetaTestResult, evaluate
from symloss.network import LearnedLoss
from symloss.version import __version__ as __version__

__all__ = [
    "Expression",
    "LearnedLoss",
    "MetaTestResult",
    "NotFittedError",
    "Settings",
    "SymbolicLossSearch",
    "evaluate",
    "fit",
    "load",
]
