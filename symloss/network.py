"""The loss users keep: :class:`LearnedLoss`, and :class:`LearnedWith`, how it was learned.

A :class:`LearnedLoss` wraps the meta-loss network of its expression
(:class:`~symloss.metaloss.MetaLossNetwork`) with the output transform and reduction of
docs/design.md ("Search space") and is what users put in their own training loops:
``loss(y_pred, y_true)`` returns a scalar. It saves itself as a small JSON file
(:func:`symloss.lossfile.load` reads it back), prints as LaTeX and SymPy, and exports
itself as standalone source or a boosting objective.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sympy
import torch
from torch import nn

from symloss.boosting import LIBRARIES
from symloss.boosting import to_objective as boosting_objective
from symloss.boosting import to_source as boosting_source
from symloss.export import FRAMEWORKS, to_source
from symloss.expression import Expression
from symloss.kinds import CLASSIFICATION, check_task_kind
from symloss.metaloss import (
    MetaLossNetwork,
    prepare_outputs,
    reduce_loss,
)
from symloss.serialization import (
    MAX_ABS_VALUE,
    check_header,
    positive_number,
    real_numbers,
    write_json,
)
from symloss.symbolic import latex as symbolic_latex
from symloss.symbolic import loss_sympy

FORMAT_NAME = "symloss.loss"
TARGETS = (*FRAMEWORKS, *LIBRARIES)
"""Everything :meth:`LearnedLoss.to_source` writes code for: the frameworks' loss functions
and the boosting libraries' objective modules."""
FORMAT_VERSION = 3  # 3: "class_prior"; 2: "scale" and "learned_with"; all still load
PRIOR_FORMAT_VERSION = 3
"""A loss with the class prior ``p`` is written as version 3 (older readers refuse it, as
they cannot compute ``p``); every other loss as version 2, the files it always had."""
PLAIN_FORMAT_VERSION = 2


OPTIMIZERS = ("sgd",)
"""Values of :attr:`LearnedWith.optimizer`: the optimisers a search trains with."""


@dataclass(frozen=True)
class LearnedWith:
    """How a loss was learned: the search's optimiser, and the step size it implies.

    Attributes
    ----------
    optimizer : str
        The optimiser of the search's training runs (``"sgd"``).
    lr, momentum, nesterov, weight_decay
        Its settings.
    search_scale : float
        The factor the search multiplied the loss tree by when it scored it (the
        normalising factor in a scale-free search, 1 in a ``paper`` search).
        :meth:`LearnedLoss.as_searched` gives the loss at this scale back.
    recommended_lr : float or None
        The learning rate at which the normalised loss did best in the final
        selection (SGD with the settings above), or ``None`` when not measured.
    metric : str or None
        The metric the search optimised (:mod:`symloss.metrics`): a registered name, or
        a callable's qualified name; ``None`` in files written before it was stored.
    metric_restorable : bool
        False when ``metric`` names a callable, which its name cannot give back.
    baseline : str or None
        The user's baseline loss expression (``None``: cross-entropy / squared error).
    """

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    search_scale: float = 1.0
    recommended_lr: float | None = None
    metric: str | None = None
    metric_restorable: bool = True
    baseline: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LearnedWith:
        """Inverse of :meth:`to_dict`; raises ValueError/TypeError for bad fields."""
        if not isinstance(data, Mapping):
            raise TypeError(f"'learned_with' must be an object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown 'learned_with' field(s) {sorted(unknown)}")
        # rates: any positive finite number (a tool may reject one it cannot use); the
        # search scale is a loss scale, bounded as the loss's own (see _check_fields)
        for name, maximum in (("lr", math.inf), ("search_scale", MAX_ABS_VALUE),
                              ("recommended_lr", math.inf)):
            if data.get(name) is not None or (name in data and name != "recommended_lr"):
                positive_number(data[name], f"'learned_with.{name}'", maximum)
        momentum, decay = data.get("momentum", 0.0), data.get("weight_decay", 0.0)
        if not (_is_number(momentum) and 0 <= momentum < 1):
            raise ValueError(f"'learned_with.momentum' must be a number in [0, 1), got "
                             f"{momentum!r}")
        if not (_is_number(decay) and 0 <= decay <= MAX_ABS_VALUE):
            raise ValueError(f"'learned_with.weight_decay' must be a number in [0, "
                             f"{MAX_ABS_VALUE:g}], got {decay!r}")
        if not isinstance(data.get("nesterov", False), bool):
            raise ValueError("'learned_with.nesterov' must be true or false")
        if data.get("optimizer", "sgd") not in OPTIMIZERS:
            raise ValueError(f"'learned_with.optimizer' must be one of {OPTIMIZERS}, got "
                             f"{data.get('optimizer')!r}")
        for name in ("metric", "baseline"):
            if not isinstance(data.get(name), str | None):
                raise ValueError(f"'learned_with.{name}' must be a string or null")
        if not isinstance(data.get("metric_restorable", True), bool):
            raise ValueError("'learned_with.metric_restorable' must be true or false")
        return cls(**data)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class LearnedLoss(nn.Module):
    """A (learned) symbolic loss, usable as ``loss(y_pred, y_true)`` in any training loop.

    Parameters
    ----------
    expression : Expression or str
        The loss expression in ``y`` (target) and ``f`` (prediction).
    task : {"classification", "regression"}
        Classification losses take logits ``[B, C]`` and integer labels ``[B]`` (or
        one-hot / probability targets ``[B, C]``); the tree is applied to softmax
        outputs (sigmoid when ``C == 1``) and one-hot targets, summed over classes and
        averaged over the batch. Regression losses take ``[B]``, ``[B, 1]`` or ``[B, k]``
        predictions and targets, sum over the ``k`` outputs and average over the batch
        (as the EvoMAL reference; with one output, the mean).
    weights : sequence of float, optional
        Edge weights learned by the local search; all ones by default.
    metadata : mapping, optional
        Free-form JSON-serialisable information saved with the loss.
    scale : float
        A constant factor on the whole loss. A search returns its loss normalised
        (see :mod:`symloss.scale`): its gradient with respect to the model outputs is
        as large as the baseline's, so it drops into a loop tuned for the baseline.
    learned_with : LearnedWith, optional
        The optimiser the loss was learned with and the step size the search found.
    class_prior : sequence of float, optional
        Classification only: the training frequency of each class (of the positive class
        for one output column), the values of the terminal ``p``. Needed by expressions
        that hold ``p``, saved with them, ignored for the others.

    Attributes
    ----------
    class_prior : tuple of float or None
        The class prior, kept only when the expression holds ``p``.
    step_factor : float
        ``learned_with.search_scale / scale``: how much larger a step the search took
        with this loss than this loss takes (1 when nothing is known).

    Examples
    --------
    >>> import torch
    >>> loss = LearnedLoss("-(y * log(f))", task="classification")
    >>> logits, labels = torch.randn(8, 3), torch.randint(0, 3, (8,))
    >>> bool(torch.isclose(loss(logits, labels),
    ...                    torch.nn.functional.cross_entropy(logits, labels), atol=1e-5))
    True

    See Also
    --------
    symloss.load : restore a saved loss.
    """

    def __init__(
        self,
        expression: Expression | str,
        task: str = "classification",
        weights: Sequence[float] | torch.Tensor | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        scale: float = 1.0,
        learned_with: LearnedWith | None = None,
        class_prior: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.task = check_task_kind(task)
        if not (_is_number(scale) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        expression = Expression.parse(expression)
        if expression.uses_class_prior and self.task != CLASSIFICATION:
            raise ValueError(
                f"the loss {expression} uses the class prior p, which only classification "
                "losses have; write a regression loss in y, f and constants"
            )
        self.network = MetaLossNetwork(expression, weights, class_prior)
        self.network.weights.requires_grad_(False)
        self.metadata = dict(metadata or {})
        self.scale = float(scale)
        self.learned_with = learned_with

    @property
    def step_factor(self) -> float:
        """How much larger a step the search took with this loss (see ``learned_with``)."""
        if self.learned_with is None:
            return 1.0
        return self.learned_with.search_scale / self.scale

    def as_searched(self) -> LearnedLoss:
        """The loss exactly as the search scored it (its scale at search time).

        Use it with the optimiser in ``learned_with`` to reproduce the search's training
        runs; for any other loop, the normalised loss itself is the one to use.
        """
        scale = self.scale if self.learned_with is None else self.learned_with.search_scale
        return self.with_scale(scale)

    def with_scale(self, scale: float) -> LearnedLoss:
        """A copy of this loss with another constant factor."""
        return LearnedLoss(self.expression, self.task, self.weights, self.metadata,
                           scale=scale, learned_with=self.learned_with,
                           class_prior=self.class_prior)

    @property
    def class_prior(self) -> tuple[float, ...] | None:
        """The values of ``p`` per class (None for a loss without ``p``)."""
        return self.network.class_prior

    @property
    def expression(self) -> Expression:
        """The symbolic expression (without weights)."""
        return self.network.expression

    @property
    def weights(self) -> list[float]:
        """The edge weights as a list of floats."""
        return [float(w) for w in self.network.weights.detach().cpu()]

    def forward(
        self, y_pred: torch.Tensor, y_true: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The scalar loss of a batch."""
        f, y = prepare_outputs(y_pred, y_true, self.task)
        value = reduce_loss(self.network(f, y, weights), self.task)
        return value if self.scale == 1.0 else value * self.scale

    def sympy(self, digits: int = 3) -> sympy.Expr:
        """The SymPy form with learned weights folded in, to ``digits`` significant digits.

        A ``scale`` other than 1 shows as a leading factor (to 3 significant digits).
        Simplified where SymPy manages within a time limit; see
        :func:`symloss.symbolic.loss_sympy` for the fallbacks. Never raises.
        """
        return self._scaled(loss_sympy(self.expression, self.weights, digits))

    def _scaled(self, expr: sympy.Expr) -> sympy.Expr:
        # unevaluated: SymPy would distribute a number over a sum, hiding the shape
        factor = float(f"{self.scale:.3g}")
        return expr if factor == 1.0 else sympy.Mul(sympy.Float(factor, 3), expr, evaluate=False)

    def latex(self, digits: int = 3) -> str:
        """LaTeX of the loss with learned weights folded in (rounded, simplified)."""
        return self._latex_of(self.sympy(digits))

    def _latex_of(self, form: sympy.Expr) -> str:
        """LaTeX of :meth:`sympy`'s result (for callers that need both: simplifying is
        the costly part, and it need not run twice)."""
        return symbolic_latex(form, lambda: self.expression.latex(simplify=False))

    def to_source(self, framework: str = "torch") -> str:
        """Source of a standalone ``loss(y_pred, y_true)`` function for ``"torch"``,
        ``"numpy"`` or ``"jax"`` that needs no symloss, or of a numpy-only module with a
        custom ``objective`` and ``metric`` for ``"xgboost"`` or ``"lightgbm"`` (see
        :func:`symloss.export.to_source` and :func:`symloss.boosting.to_source`).
        """
        if framework in LIBRARIES:
            return boosting_source(self, framework)
        return to_source(self, framework)

    def to_objective(self, library: str, **options: Any) -> Any:
        """This loss as a custom objective of ``"xgboost"`` or ``"lightgbm"``, with its
        evaluation metric as ``.metric`` (see :class:`symloss.boosting.BoostingObjective`;
        ``options``: ``hessian_floor``)."""
        return boosting_objective(self, library, **options)

    def extra_repr(self) -> str:
        return f"expression={str(self.expression)!r}, task={self.task!r}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable form written by :meth:`save`."""
        data = {
            "format": FORMAT_NAME,
            "version": PLAIN_FORMAT_VERSION if self.class_prior is None else PRIOR_FORMAT_VERSION,
            "expression": str(self.expression),
            "task": self.task,
            "weights": self.weights,
            "scale": self.scale,
            "learned_with": None if self.learned_with is None else self.learned_with.to_dict(),
            "metadata": self.metadata,
        }
        if self.class_prior is not None:
            data["class_prior"] = list(self.class_prior)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "data") -> LearnedLoss:
        """Rebuild a loss from :meth:`to_dict` output."""
        check_header(data, source, FORMAT_NAME, FORMAT_VERSION, "symloss loss")
        try:
            _check_fields(data)
            weights = [float(w) for w in data["weights"]]
            scale = data.get("scale", 1.0)
            learned_with = data.get("learned_with")
            class_prior = data.get("class_prior")
            if class_prior is not None:
                real_numbers(class_prior, "'class_prior'")
            elif Expression.parse(data["expression"]).uses_class_prior:
                raise ValueError("its expression uses the class prior p but the file has no "
                                 "'class_prior'")
            return cls(data["expression"], data["task"], weights, data.get("metadata") or {},
                       scale=scale,
                       learned_with=None if learned_with is None
                       else LearnedWith.from_dict(learned_with),
                       class_prior=class_prior)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source} is not a valid symloss loss: {error}") from error

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the loss as a small human-readable JSON file (atomically)."""
        return write_json(path, self.to_dict())


def _check_fields(data: Mapping[str, Any]) -> None:
    """The types and values of a saved loss's fields, checked before anything is built."""
    for name in ("expression", "task"):
        if not isinstance(data.get(name), str):
            raise ValueError(f"'{name}' must be a string, got {data.get(name)!r}")
    real_numbers(data.get("weights"), "'weights'")
    if "scale" in data:  # bounded as the weights are: beyond it, float32 losses overflow
        positive_number(data["scale"], "'scale'")
    if not isinstance(data.get("metadata") or {}, Mapping):
        raise ValueError(f"'metadata' must be an object, got {data.get('metadata')!r}")
