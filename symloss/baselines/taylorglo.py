"""TaylorGLO: an 8-parameter cubic Taylor polynomial loss searched by CMA-ES.

Parameterisation (S. Gonzalez and R. Miikkulainen, "Optimizing Loss Functions Through
Multivariate Taylor Polynomial Parameterization", GECCO 2021, arXiv:2002.00059, Sec. 3):
a third-order bivariate Taylor expansion of the loss ``l(x, y)`` in the true label ``x``
and the prediction ``y`` around the centre ``(theta0, theta1)``, with the terms that do not
contain the prediction dropped (they do not change the gradient):

    l(x, y) = theta2 (y - theta1) + 1/2 theta3 (y - theta1)^2 + 1/6 theta4 (y - theta1)^3
              + theta5 (x - theta0)(y - theta1) + 1/2 theta6 (x - theta0)(y - theta1)^2
              + 1/2 theta7 (x - theta0)^2 (y - theta1)

In symloss's variables the label is ``y`` and the prediction ``f``, so :class:`TaylorGLOLoss`
computes ``l(x=y, y=f)``. It is applied elementwise to the same transformed outputs as a
:class:`~symloss.network.LearnedLoss` (softmax / one-hot for classification; summed over
classes or regression outputs, averaged over the batch). The paper negates and averages
over classes; a sign and a positive factor on ``theta2..theta7`` express the same losses,
so nothing is lost.

This is the paper's parameterisation (and that of the TaylorGLO authors' code): cubic in
the prediction, at most quadratic in the label. The EvoMAL reference's TaylorGLO puts the
three single-variable terms on the target instead, so they carry no gradient to the
model and 3 of its 8 parameters are inert; it also passes each term through a softplus.
We follow the paper in both.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import sympy
import torch
from torch import nn

from symloss.config import Settings
from symloss.expression import Expression
from symloss.kinds import check_task_kind
from symloss.lossfile import register_loss_format
from symloss.metaloss import prepare_outputs, reduce_loss
from symloss.serialization import check_header, real_numbers, write_json
from symloss.symbolic import readable, round_floats
from symloss.task import Task
from symloss.training import sgd_settings, train

TAYLORGLO_FORMAT_NAME = "symloss.taylorglo"
TAYLORGLO_FORMAT_VERSION = 1
N_PARAMETERS = 8
SQUARED_ERROR_THETA = (0.0, 0.0, 0.0, 2.0, 0.0, -2.0, 0.0, 0.0)
"""``f^2 - 2 y f``: the squared error ``(f - y)^2`` less ``y^2``, the same gradient."""
_PENALTY = 1e30  # fitness of a candidate whose training diverged


def _polynomial(theta: Any, f: Any, y: Any) -> Any:
    """The TaylorGLO polynomial in prediction ``f`` and label ``y`` (tensors or SymPy)."""
    df = f - theta[1]
    dy = y - theta[0]
    return (
        theta[2] * df
        + theta[3] * df**2 / 2
        + theta[4] * df**3 / 6
        + theta[5] * dy * df
        + theta[6] * dy * df**2 / 2
        + theta[7] * dy**2 * df / 2
    )


def _number(value: float) -> sympy.Expr:
    return sympy.Integer(int(value)) if float(value).is_integer() else sympy.Float(value)


class TaylorGLOLoss(nn.Module):
    """The TaylorGLO cubic Taylor polynomial loss (a symbolic loss with 8 parameters).

    Parameters
    ----------
    task : {"classification", "regression"}
        Inputs and reduction as for :class:`~symloss.network.LearnedLoss`.
    theta : sequence of 8 floats, optional
        ``(theta0, ..., theta7)``: the centre ``(theta0, theta1)`` for label and prediction,
        then the six coefficients (see the module docstring). Defaults to
        :data:`SQUARED_ERROR_THETA`, a loss with the gradient of the squared error.
    metadata : mapping, optional
        Free-form JSON-serialisable information saved with the loss.

    Attributes
    ----------
    theta : torch.nn.Parameter
        The parameters, float64, frozen (``requires_grad`` is False).
    metadata : dict

    Examples
    --------
    >>> import torch
    >>> loss = TaylorGLOLoss("regression")
    >>> pred, target = torch.randn(8), torch.randn(8)
    >>> bool(torch.isclose(loss(pred, target), ((pred - target) ** 2 - target**2).mean()))
    True
    >>> str(loss.sympy())
    'f*(f - 2*y)'

    See Also
    --------
    fit_taylorglo : search the parameters on a task with CMA-ES.
    """

    def __init__(
        self,
        task: str = "classification",
        theta: Sequence[float] | torch.Tensor | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.task = check_task_kind(task)
        values = SQUARED_ERROR_THETA if theta is None else theta
        tensor = torch.as_tensor(values, dtype=torch.float64).detach().clone().reshape(-1)
        if tensor.numel() != N_PARAMETERS:
            raise ValueError(f"TaylorGLO has {N_PARAMETERS} parameters, got {tensor.numel()}")
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"TaylorGLO parameters must be finite, got {tensor.tolist()}")
        self.theta = nn.Parameter(tensor, requires_grad=False)
        self.metadata = dict(metadata or {})

    @property
    def theta_values(self) -> list[float]:
        """``theta`` as a list of floats."""
        return [float(t) for t in self.theta.detach().cpu()]

    def elementwise(
        self, f: torch.Tensor, y: torch.Tensor, theta: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The polynomial on every pair ``(f[i], y[i])``; ``theta`` overrides the module's."""
        t = self.theta if theta is None else theta
        return _polynomial([t[i] for i in range(N_PARAMETERS)], f, y)

    def forward(
        self, y_pred: torch.Tensor, y_true: torch.Tensor, theta: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The scalar loss of a batch."""
        f, y = prepare_outputs(y_pred, y_true, self.task)
        return reduce_loss(self.elementwise(f, y, theta), self.task)

    def sympy(self, digits: int = 3) -> sympy.Expr:
        """The expanded polynomial in ``f`` and ``y``, coefficients rounded to ``digits``."""
        f, y = Expression.var("f").sympy(), Expression.var("y").sympy()
        theta = [_number(round(t, digits)) for t in self.theta_values]
        return round_floats(readable(sympy.expand(_polynomial(theta, f, y))), digits)

    def latex(self, digits: int = 3) -> str:
        """LaTeX of the polynomial (rounded coefficients)."""
        return sympy.latex(self.sympy(digits))

    def __str__(self) -> str:
        return f"TaylorGLO loss: {self.sympy()}"

    def extra_repr(self) -> str:
        theta = ", ".join(f"{t:.4g}" for t in self.theta_values)
        return f"task={self.task!r}, theta=[{theta}]"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable form written by :meth:`save`."""
        return {
            "format": TAYLORGLO_FORMAT_NAME,
            "version": TAYLORGLO_FORMAT_VERSION,
            "task": self.task,
            "theta": self.theta_values,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "data") -> TaylorGLOLoss:
        """Rebuild a loss from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If ``data`` is not a valid TaylorGLO loss or was written by a newer symloss.
        """
        check_header(
            data, source, TAYLORGLO_FORMAT_NAME, TAYLORGLO_FORMAT_VERSION,
            "symloss TaylorGLO loss",
        )
        try:
            theta = real_numbers(data.get("theta"), "'theta'", N_PARAMETERS)
            return cls(data["task"], theta, data.get("metadata") or {})
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source} is not a valid symloss TaylorGLO loss: {error}") from error

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the loss as a JSON file (atomically); :func:`symloss.lossfile.load` reads it."""
        return write_json(path, self.to_dict())


def _import_cma() -> ModuleType:
    try:
        import cma
    except ImportError as error:
        raise ImportError(
            "TaylorGLO searches with CMA-ES from the 'cma' package, which is not installed; "
            "install it with: pip install 'symloss[baselines]'"
        ) from error
    return cma


def taylorglo_fitness(task: Task, settings: Settings, seed: int, theta: Sequence[float]) -> float:
    """Validation metric after ``settings.fitness_steps`` SGD steps with the candidate.

    Scored like the evaluator's fitness (same optimiser settings, model initialisation and
    batches for every candidate of a seed); a diverged run or non-finite metric gets a
    large finite penalty so that CMA-ES can rank it.
    """
    try:
        loss = TaylorGLOLoss(task.kind, theta).to(task.device)
    except ValueError:
        return _PENALTY
    result = train(task, loss, settings.fitness_steps, sgd_settings(settings), seed)
    if result.diverged:
        return _PENALTY
    fitness = task.metric(result.model, task.val)
    return fitness if math.isfinite(fitness) else _PENALTY


def fit_taylorglo(
    task: Task,
    settings: Settings,
    seed: int = 0,
    evaluations: int | None = None,
    *,
    popsize: int | None = None,
    sigma: float = 1.2,
) -> TaylorGLOLoss:
    """Search the 8 TaylorGLO parameters on ``task`` with CMA-ES.

    The search starts at :data:`SQUARED_ERROR_THETA` (evaluated first, so the result is
    never worse on validation than that start) with step size ``sigma``; each candidate
    is scored by :func:`taylorglo_fitness`, CMA-ES is told every generation's fitnesses,
    and the best candidate seen is returned. The search ends when the budget is spent or
    when CMA-ES's own termination criteria fire (e.g. a generation of equal fitnesses);
    ``metadata["cma_stop"]`` names those.

    The EvoMAL reference starts at all zeros instead, a loss that is zero everywhere and
    trains nothing; starting at the baseline's gradient, as the GP search seeds its
    population with the baseline, makes small budgets compare what the search adds to
    the baseline rather than whether it can find a trainable loss at all.

    Parameters
    ----------
    task : Task
        The problem (see :func:`symloss.task.make_task`).
    settings : Settings
        Fitness-training fields (``fitness_steps``, ``lr``, ``batch_size``, ...) are used;
        ``population_size * generations`` is the default budget.
    seed : int
        Seed of the training runs and of CMA-ES: the result is deterministic for a seed.
        The global NumPy random state is left as it was.
    evaluations : int, optional
        Number of candidates trained, the start included; a last incomplete generation
        is evaluated but not told to CMA-ES.
    popsize : int, optional
        CMA-ES population size; ``settings.population_size`` by default, as the reference.
    sigma : float
        Initial CMA-ES step size.

    Returns
    -------
    TaylorGLOLoss
        The best loss found; ``metadata`` records method, seed, evaluations and fitness.

    Raises
    ------
    ImportError
        If the ``cma`` package is missing (``pip install 'symloss[baselines]'``).

    Examples
    --------
    >>> from symloss.config import Settings
    >>> from symloss.datasets import load_dataset
    >>> from symloss.task import make_task
    >>> task = make_task(load_dataset("sine").train, "linear", task="regression")
    >>> loss = fit_taylorglo(task, Settings(fitness_steps=10), seed=1, evaluations=3)
    >>> loss.metadata["evaluations"]
    3
    """
    cma = _import_cma()
    budget = settings.population_size * settings.generations if evaluations is None else evaluations
    if budget < 1:
        raise ValueError(f"evaluations must be at least 1, got {budget}")
    if popsize is None:
        popsize = settings.population_size
    if popsize < 2:
        raise ValueError(
            f"the CMA-ES population size must be at least 2, got {popsize}; pass popsize= "
            f"or use a population_size of at least 2"
        )
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")

    start = list(SQUARED_ERROR_THETA)
    best_theta, best_fitness = start, taylorglo_fitness(task, settings, seed, start)
    start_fitness, used = best_fitness, 1
    stop: dict[str, Any] = {}
    state = np.random.get_state()  # cma seeds NumPy's global generator
    try:
        options = {
            "popsize": popsize,
            "seed": seed % (2**32 - 2) + 1,  # cma treats 0 as "seed from the clock"
            "verbose": -9,
            "verb_disp": 0,
            "verb_log": 0,
        }
        strategy = cma.CMAEvolutionStrategy(start, sigma, options)
        while used < budget:
            stop = dict(strategy.stop())
            if stop:  # CMA-ES's own termination criteria (e.g. flat fitness)
                break
            candidates = strategy.ask()
            count = min(len(candidates), budget - used)
            fitnesses = [
                taylorglo_fitness(task, settings, seed, [float(v) for v in c])
                for c in candidates[:count]
            ]
            used += count
            for candidate, fitness in zip(candidates, fitnesses, strict=False):
                if fitness < best_fitness:
                    best_theta, best_fitness = [float(v) for v in candidate], fitness
            if count < len(candidates):
                break
            strategy.tell(candidates, fitnesses)
    finally:
        np.random.set_state(state)
    metadata = {
        "method": "taylorglo",
        "seed": seed,
        "evaluations": used,
        "fitness": best_fitness,
        "start_fitness": start_fitness,
        "popsize": popsize,
        "sigma": sigma,
        "cma_stop": sorted(str(k) for k in stop),
    }
    return TaylorGLOLoss(task.kind, best_theta, metadata)


register_loss_format(TAYLORGLO_FORMAT_NAME, TaylorGLOLoss)
