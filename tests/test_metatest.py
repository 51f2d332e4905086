"""Meta-testing: learned loss vs baseline on the test split, per seed, with a table."""

from __future__ import annotations

import json
import math

import pytest

from symloss.metatest import LossResult, MetaTestResult, evaluate, meta_test
from symloss.network import LearnedLoss
from symloss.training import SGDSettings

CE = LearnedLoss("-(y * log(f))", "classification")
MSE = LearnedLoss("square(f - y)", "regression")
EXPLODING = LearnedLoss("square(square(square(f - y)))", "regression")


def test_cross_entropy_expression_equals_the_baseline(digits_task):
    result = meta_test(CE, digits_task, steps=30, seeds=(1, 2, 3), sgd=SGDSettings(lr=0.3))
    assert result.baseline is not None and result.baseline.name == "cross-entropy"
    assert result.learned.metrics == result.baseline.metrics
    assert result.learned.mean == result.baseline.mean
    assert result.learned.std == result.baseline.std
    assert result.metric == "error rate" and result.seeds == (1, 2, 3) and result.steps == 30
    assert len(set(result.learned.metrics)) > 1  # seeds matter
    assert all(0.0 <= m <= 1.0 for m in result.learned.metrics)


def test_table_has_seeds_mean_and_std(digits_task):
    result = meta_test(CE, digits_task, steps=10, seeds=(4, 7), sgd=SGDSettings(lr=0.3))
    table = str(result)
    assert table == result.table()
    lines = table.splitlines()
    assert lines[0] == "test error rate after 10 steps, per seed"
    assert "learned" in lines[1] and "cross-entropy" in lines[1]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert set(rows) == {"4", "7", "mean", "std"}
    assert float(rows["mean"][0]) == pytest.approx(result.learned.mean, abs=1e-4)
    assert float(rows["std"][1]) == pytest.approx(result.baseline.std, abs=1e-4)
    assert float(rows["7"][0]) == pytest.approx(result.learned.metrics[1], abs=1e-4)
    assert "*" not in table


def test_without_baseline(sine_task):
    result = meta_test(MSE, sine_task, steps=5, seeds=(1,), baseline=False)
    assert result.baseline is None
    assert "MSE" not in result.table().splitlines()[1]
    assert result.to_dict()["baseline"] is None


def test_to_dict_is_json(sine_task):
    result = meta_test(MSE, sine_task, steps=5, seeds=(1, 2))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["seeds"] == [1, 2] and data["metric"] == "MSE"
    assert data["learned"]["mean"] == result.learned.mean
    assert data["baseline"]["name"] == "MSE"


def test_curves_recorded_on_the_test_split(sine_task):
    result = meta_test(MSE, sine_task, steps=20, seeds=(1,), curve_points=2)
    (curve,) = result.learned.curves
    assert [s for s, _ in curve] == [0, 10, 20]
    assert curve[-1][1] == result.learned.metrics[0]


def test_loss_kind_must_match_the_task(digits_task, sine_task):
    with pytest.raises(ValueError, match="regression loss but the data is a classification task"):
        meta_test(MSE, digits_task, steps=1)
    with pytest.raises(ValueError, match="classification loss but the data is a regression task"):
        meta_test(CE, sine_task, steps=1)
    with pytest.raises(ValueError, match="classification loss but the data is a regression task"):
        evaluate(CE, "sine", "mlp", steps=1, seeds=(1,))


def test_bad_arguments(sine_task):
    with pytest.raises(ValueError, match="at least one seed"):
        meta_test(MSE, sine_task, steps=1, seeds=())
    with pytest.raises(ValueError, match="steps must be at least 1"):
        meta_test(MSE, sine_task, steps=0)


def test_evaluate_with_a_builtin_name_and_model():
    result = evaluate(MSE, "sine", "mlp", steps=40, seeds=(1, 2))
    assert isinstance(result, MetaTestResult)
    assert result.metric == "MSE" and result.seeds == (1, 2)
    assert result.learned.metrics == result.baseline.metrics
    assert all(math.isfinite(m) and m > 0 for m in result.learned.metrics)
    again = evaluate(MSE, "sine", "mlp", steps=40, seeds=(1, 2))
    assert again.learned.metrics == result.learned.metrics


def test_evaluate_with_user_data_dict(digits_task):
    data = {"train": (digits_task.train.x.numpy(), digits_task.train.y.numpy()),
            "test": (digits_task.test.x.numpy(), digits_task.test.y.numpy())}
    result = evaluate(CE, data, "linear", steps=20, seeds=(1,), lr=0.3, batch_size=32)
    assert result.metric == "error rate" and result.learned.metrics == result.baseline.metrics


def test_diverged_marker_single_seed(sine_task):
    result = meta_test(EXPLODING, sine_task, steps=60, seeds=(1,))
    assert result.learned.diverged == (True,) and result.learned.metrics == (math.inf,)
    assert result.baseline.diverged == (False,)
    table = result.table()
    assert "inf*" in table
    assert table.splitlines()[-1] == "* training diverged (NaN/inf loss) and stopped early"


def test_diverged_marker_several_seeds(sine_task):
    result = meta_test(EXPLODING, sine_task, steps=60, seeds=(1, 2))
    assert result.learned.diverged == (True, True)
    table = result.table()
    assert table.count("inf*") == 2
    assert "diverged" in table.splitlines()[-1]


def test_loss_result_statistics():
    r = LossResult("x", (0.1, 0.3), (False, False))
    assert r.mean == pytest.approx(0.2)
    assert r.std == pytest.approx(math.sqrt(0.02))
    assert LossResult("x", (0.5,), (False,)).std == 0.0


def test_lr_grid_reports_each_loss_at_its_best_validation_rate(digits_task):
    # A loss scaled down 100x needs a 100x larger step; the grid finds it for that loss
    # while the baseline keeps the rate that is best for cross-entropy.
    scaled = LearnedLoss("-(y * log(f)) * 0.01", "classification")
    grid = (0.003, 0.3, 30.0)
    result = meta_test(scaled, digits_task, steps=20, seeds=(1, 2), lr_grid=grid)
    # 30 is the grid's edge, so the grid grows past it while the best rate sits there
    assert result.learned.lr >= 30.0 and result.baseline.lr == 0.3
    single = meta_test(CE, digits_task, steps=20, seeds=(1, 2), sgd=SGDSettings(lr=0.3))
    assert result.baseline.metrics == single.baseline.metrics
    table = result.table()
    assert table.splitlines()[-2].split() == ["lr", f"{result.learned.lr:g}", "0.3"]
    assert "best learning rate on validation, from 0.003, 0.3, 30" in table
    assert result.to_dict()["learned"]["lr"] == result.learned.lr


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_lr_grid_rejects_rates_that_cannot_train(digits_task, bad):
    with pytest.raises(ValueError, match="lr_grid must be a finite number above 0"):
        meta_test(CE, digits_task, steps=5, seeds=(1,), lr_grid=(0.1, bad))


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_single_rate_rejects_rates_that_cannot_train(digits_task, bad):
    with pytest.raises(ValueError, match="the learning rate must be a finite number above 0"):
        meta_test(CE, digits_task, steps=5, seeds=(1,), sgd=SGDSettings(lr=bad))


@pytest.mark.parametrize("seeds, message", [
    ((1, 1, 2), "seeds must differ"),
    ((-1,), r"integers in \[0, 2\*\*32\)"),
    ((2**70,), r"integers in \[0, 2\*\*32\)"),
    ((1.5,), r"integers in \[0, 2\*\*32\)"),
])
def test_seeds_must_be_distinct_valid_seeds(digits_task, seeds, message):
    with pytest.raises(ValueError, match=message):
        meta_test(CE, digits_task, steps=5, seeds=seeds)


def test_batch_larger_than_the_training_split_is_capped(digits_task):
    big = SGDSettings(lr=0.1, batch_size=len(digits_task.train) + 1)
    capped = meta_test(CE, digits_task, steps=3, seeds=(1,), sgd=big, baseline=False)
    exact = SGDSettings(lr=0.1, batch_size=len(digits_task.train))
    assert capped.learned.metrics == meta_test(CE, digits_task, steps=3, seeds=(1,), sgd=exact,
                                               baseline=False).learned.metrics


def test_worker_processes_give_the_same_result(digits_task):
    # rounds of the rate grid, curves, a diverging rate and both losses, in two workers
    loss = LearnedLoss("-(y * log(f)) * 0.5", "classification")
    kwargs = dict(steps=20, seeds=(1, 2, 3), lr_grid=(0.1, 1.0, 1e4), curve_points=2)
    alone = meta_test(loss, digits_task, **kwargs)
    pooled = meta_test(loss, digits_task, **kwargs, n_jobs=2)
    assert pooled == alone
    assert alone.learned.lr == alone.baseline.lr == 1.0 and alone.learned.curves


def test_bad_n_jobs(sine_task):
    with pytest.raises(ValueError, match="n_jobs must be"):
        meta_test(MSE, sine_task, steps=5, seeds=(1,), n_jobs=0)
