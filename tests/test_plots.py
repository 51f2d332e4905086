"""symloss.plots: what each figure draws, checked on the drawn data."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from symloss.baselines import ML3Loss
from symloss.metatest import LossResult, MetaTestResult
from symloss.network import LearnedLoss
from symloss.plots import (
    PROBABILITIES,
    elementwise,
    learning_curves,
    loss_shape,
    metatest_curves,
    search_history,
)
from symloss.records import GenerationStats

pytest.importorskip("matplotlib", reason="symloss.plots needs matplotlib (symloss[plots])")


def lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_classification_shape_is_normalised_against_the_baseline():
    learned = LearnedLoss("-(2 * y * log(f)) + 3", "classification")  # scaled, shifted CE
    baseline = LearnedLoss("-(y * log(f))", "classification")
    figure = loss_shape({"learned": learned}, "classification", baseline)
    true_ax, wrong_ax = figure.axes
    drawn = lines(true_ax)
    assert set(drawn) == {"baseline (cross-entropy)", "learned"}
    base = drawn["baseline (cross-entropy)"].get_ydata()
    assert np.allclose(drawn["learned"].get_ydata(), base)  # scale and offset removed
    assert base.min() == 0 and base.max() == pytest.approx(1.0)
    assert np.allclose(drawn["learned"].get_xdata(), PROBABILITIES)
    assert all(np.allclose(line.get_ydata(), 0) for line in wrong_ax.get_lines())
    assert "true class" in true_ax.get_xlabel() and "wrong class" in wrong_ax.get_xlabel()


def test_regression_shape_at_several_targets():
    learned = LearnedLoss("square(f - y) - f", "regression")
    baseline = LearnedLoss("square(f - y)", "regression")
    residuals = np.linspace(-2, 2, 81)
    figure = loss_shape({"learned": learned}, "regression", baseline, targets=(-1.0, 0.0, 1.0),
                        residuals=residuals)
    (ax,) = figure.axes
    drawn = ax.get_lines()
    assert len(drawn) == 3 + 3  # the baseline at each target, the learned loss at each
    labels = [line.get_label() for line in drawn]
    assert "learned, y = -1" in labels and "learned, y = 1" in labels
    learned_at_0 = lines(ax)["learned, y = 0"].get_ydata()
    expected = residuals**2 - residuals  # f = r at y = 0, normalised by the y = -1 curve
    at_minus_1 = residuals**2 - (residuals - 1)
    scale = (at_minus_1 - at_minus_1.min()).max()
    assert np.allclose(learned_at_0, (expected - expected.min()) / scale)
    assert ax.get_xlabel() == "residual f - y"


def test_elementwise_of_a_neural_loss_and_axes_checks():
    ml3 = ML3Loss("classification")
    values = elementwise(ml3, np.array([0.2, 0.9]), np.array([1.0, 0.0]))
    assert values.shape == (2,) and np.isfinite(values).all()
    with pytest.raises(ValueError, match="needs 2 axes"):
        figure = loss_shape({}, "regression")
        loss_shape({}, "classification", axes=figure.axes)
    with pytest.raises(ValueError, match="kind must be"):
        loss_shape({}, "ranking")


def test_search_history_stacks_rejections_by_reason():
    history = [
        GenerationStats(0, 0.5, 0.9, "square(f - y)", 6, 0, {"poor training": 2, "flat": 1}, 1.0),
        GenerationStats(1, 0.4, math.inf, "abs(f - y)", 5, 1, {"poor training": 3}, 1.0),
    ]
    figure = search_history(history, "validation MSE")
    fitness_ax, rejected_ax = figure.axes
    drawn = lines(fitness_ax)
    assert list(drawn["best of the population"].get_ydata()) == [0.5, 0.4]
    median = next(line for label, line in drawn.items() if label.startswith("median"))
    assert list(median.get_ydata()) == [0.9]  # the infinite median is left out
    assert "missing" in median.get_label()
    heights = {container.get_label(): [bar.get_height() for bar in container]
               for container in rejected_ax.containers}
    assert heights == {"poor training": [2, 3], "flat": [1, 0]}
    assert fitness_ax.get_ylabel().startswith("validation MSE")


def test_learning_curves_mean_and_band():
    runs = [[(0, 1.0), (10, 0.5), (20, 0.25)], [(0, 3.0), (10, 0.5)],  # diverged after 10
            [(0, 2.0), (10, math.inf)]]
    figure = learning_curves({"learned": runs, "base": [[(0, 1.0), (20, 0.5)]]},
                             "test MSE", baseline="base", log_scale=True)
    (ax,) = figure.axes
    drawn = lines(ax)
    mean = drawn["learned (mean of 3 seeds)"]
    assert list(mean.get_xdata()) == [0, 10, 20]
    assert list(mean.get_ydata()) == [2.0, 0.5, 0.25]
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == 0.25 and band[:, 1].max() == 3.0
    assert drawn["base (mean of 1 seed)"].get_linestyle() == "--"
    assert ax.get_yscale() == "log"


def test_metatest_curves_label_the_baseline_and_need_curves():
    curve = ((0, 1.0), (5, 0.5))
    result = MetaTestResult("MSE", (1, 2), 5, LossResult("learned", (0.5, 0.5), (False, False),
                                                         (curve, curve)),
                            LossResult("MSE", (0.6, 0.6), (False, False), (curve, curve)))
    labels = set(lines(metatest_curves(result).axes[0]))
    assert labels == {"learned (mean of 2 seeds)", "baseline (MSE) (mean of 2 seeds)"}
    bare = MetaTestResult("MSE", (1,), 5, LossResult("learned", (0.5,), (False,)))
    with pytest.raises(ValueError, match="curve_points > 0"):
        metatest_curves(bare)


def test_missing_matplotlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'symloss\[plots\]'"):
        loss_shape({}, "regression")
