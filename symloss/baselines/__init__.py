"""Baselines the EvoMAL reference ships: ML3 (neural loss) and TaylorGLO (Taylor polynomial).

Both losses take ``loss(y_pred, y_true)`` like :class:`~symloss.network.LearnedLoss`, with
the same output transform and reduction, and save to JSON files that
:func:`symloss.lossfile.load` reads back. TaylorGLO's search needs the optional ``cma``
package (``pip install 'symloss[baselines]'``), imported only when a search starts.
"""

from symloss.baselines.ml3 import ML3Loss, fit_ml3
from symloss.baselines.taylorglo import TaylorGLOLoss, fit_taylorglo

__all__ = ["ML3Loss", "TaylorGLOLoss", "fit_ml3", "fit_taylorglo"]
