"""The user's metric and baseline: registry, callables, every scoring stage, resume, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

import symloss
from symloss.lossfile import load
from symloss.metrics import METRICS, MetricError, resolve_metric
from symloss.network import LearnedLoss
from symloss.scale import gradient_scale, search_loss
from symloss.step_size import validation_metric
from symloss.task import make_task, resolve_data
from symloss.training import sgd_settings, train

TINY = {"meta_steps": 2, "fitness_steps": 20, "poor_training_steps": 10,
        "selection_steps": 20, "selection_seeds": 1}


def _regression(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.exponential(1.0, n)).astype(np.float32)
    return x, y


def _classification(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=n) > 0.8).astype(np.int64)  # imbalanced
    return x, y


def macro_f1_error(y_true, y_pred):
    return 1.0 - skm.f1_score(y_true, y_pred, average="macro", zero_division=0)


# -- the registry -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind", "reference"), [
    ("error_rate", "classification", lambda t, p: 1 - skm.accuracy_score(t, p)),
    ("balanced_error_rate", "classification",
     lambda t, p: 1 - skm.balanced_accuracy_score(t, p)),
    ("f1_macro", "classification", macro_f1_error),
    ("mse", "regression", skm.mean_squared_error),
    ("mae", "regression", skm.mean_absolute_error),
    ("pinball:0.9", "regression", lambda t, p: skm.mean_pinball_loss(t, p, alpha=0.9)),
])
def test_registered_metrics_are_scikit_learn_values(name, kind, reference):
    rng = np.random.default_rng(1)
    if kind == "classification":
        t, p = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    else:
        t, p = rng.normal(size=50), rng.normal(size=50)
    metric = resolve_metric(name, kind)
    assert metric.name == name and metric.restorable
    assert metric(t, p) == pytest.approx(float(reference(t, p)))


def test_pinball_name_is_canonical_and_checked():
    assert resolve_metric("pinball:0.90", "regression").name == "pinball:0.9"
    for bad in ("pinball:1", "pinball:0", "pinball:x", "pinball:"):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            resolve_metric(bad, "regression")


def test_unknown_probability_and_wrong_kind_metrics_are_refused():
    with pytest.raises(ValueError, match="unknown metric 'r2'.*mae"):
        resolve_metric("r2", "regression")
    for name in ("log_loss", "auc", "roc_auc"):
        with pytest.raises(ValueError, match="predicted probabilities"):
            resolve_metric(name, "classification")
    with pytest.raises(ValueError, match="scores regression.*classification task"):
        resolve_metric("mae", "classification")
    with pytest.raises(ValueError, match="a registered name .* or a callable"):
        resolve_metric(3, "regression")
    assert set(METRICS) >= {"error_rate", "mse", "balanced_error_rate", "f1_macro", "mae",
                            "pinball:Q"}


def test_a_callable_is_stored_by_qualified_name_and_not_restorable():
    metric = resolve_metric(macro_f1_error, "classification")
    assert metric.name == f"{macro_f1_error.__module__}.macro_f1_error"
    assert not metric.restorable


# -- bad metrics: clear errors naming the metric, before any training ------------------


def _raises(t, p):
    raise RuntimeError("boom")


@pytest.mark.parametrize(("metric", "message"), [
    (_raises, "test_metrics._raises' raised RuntimeError: boom"),
    (lambda t, p: float("nan"), "returned NaN"),
    (lambda t, p: "low", "returned 'low' \\(str\\), not a number"),
    (lambda t, p: True, "returned True \\(bool\\), not a number"),
    (lambda t, p: np.array([0.1, 0.2]), "not a number"),
])
def test_a_bad_metric_fails_in_make_task_naming_it(metric, message):
    with pytest.raises(MetricError, match=message):
        make_task(_regression(), "linear", metric=metric)


def test_a_metric_failing_mid_search_stops_the_search(tmp_path):
    calls = []

    def flaky(y_true, y_pred):
        calls.append(1)
        return float("nan") if len(calls) > 3 else float(np.mean(np.abs(y_true - y_pred)))

    with pytest.raises(MetricError, match="flaky' returned NaN"):
        symloss.fit(_regression(), "linear", population_size=4, generations=1, settings=TINY,
                    verbose=False, run_dir=tmp_path, metric=flaky)


def test_numpy_scalars_and_zero_d_arrays_are_numbers():
    t = np.zeros(3)
    assert resolve_metric(lambda a, b: np.float32(0.5), "regression")(t, t) == 0.5
    assert resolve_metric(lambda a, b: np.array(2.0), "regression")(t, t) == 2.0


# -- the task scores with it -----------------------------------------------------------


def test_task_metric_takes_labels_and_predictions_in_scikit_learn_shapes():
    seen = []

    def record(y_true, y_pred):
        seen.append((y_true.shape, y_pred.shape, y_pred.dtype.kind))
        return 0.0

    task = make_task(_classification(), "linear", metric=record)
    seen.clear()
    outputs = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    task.metric_from_outputs(outputs, torch.tensor([0, 1, 1]))
    assert seen == [((3,), (3,), "i")]

    task = make_task(_regression(), "linear", metric="mae")
    outputs, targets = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.5, 2.0, 0.0])
    assert task.metric_from_outputs(outputs, targets) == pytest.approx((0.5 + 0 + 4) / 3)
    assert task.metric_from_outputs(torch.full((3, 1), math.nan), targets) == math.inf
    assert task.kind_metric == "MAE"


def test_meta_objective_is_the_metric_where_differentiable_else_the_baseline():
    outputs = torch.tensor([[1.0], [2.0], [4.0]], requires_grad=True)
    targets = torch.tensor([1.5, 2.0, 0.0])
    mae = make_task(_regression(), "linear", metric="mae")
    assert float(mae.meta_objective(outputs, targets).detach()) == pytest.approx(4.5 / 3)
    assert "absolute error" in mae.meta_objective_name
    pinball = make_task(_regression(), "linear", metric="pinball:0.9")
    # residuals y - f: 0.5, 0, -4 -> 0.9 * 0.5, 0, 0.1 * 4
    value = float(pinball.meta_objective(outputs, targets).detach())
    assert value == pytest.approx((0.45 + 0.4) / 3)
    plain = make_task(_regression(), "linear")
    assert torch.equal(plain.meta_objective(outputs, targets), plain.base_loss(outputs, targets))
    f1 = make_task(_classification(), "linear", metric="f1_macro", baseline="abs(f - y)")
    logits = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1])
    expected = LearnedLoss("abs(f - y)", "classification")(logits, labels)
    assert torch.equal(f1.meta_objective(logits, labels), expected)
    assert f1.meta_objective_name == "the baseline loss abs(f - y)"


def _hand_balanced_ce(logits, labels, train_labels):
    """Cross-entropy weighted by n / (K * n_c), divided by the batch size, by hand."""
    counts = {c: int((train_labels == c).sum()) for c in (0, 1)}
    n = len(train_labels)
    total = 0.0
    for row, label in zip(logits.tolist(), labels.tolist(), strict=True):
        if len(row) == 1:  # one output column: binary cross-entropy of the logit
            p1 = 1.0 / (1.0 + math.exp(-row[0]))
            ce = -math.log(p1 if label == 1 else 1.0 - p1)
        else:
            ce = math.log(sum(math.exp(v) for v in row)) - row[label]
        total += n / (2 * counts[label]) * ce
    return total / len(labels)


@pytest.mark.parametrize("metric", ["balanced_error_rate", "f1_macro"])
def test_a_balanced_metric_refines_by_class_balanced_cross_entropy(metric):
    task = make_task(_classification(), "linear", metric=metric)
    assert task.meta_objective_name == (
        "class-balanced cross-entropy (each class weighted by its inverse training frequency)")
    train_labels = task.train.y.numpy()
    assert 0.1 < train_labels.mean() < 0.4  # imbalanced: the weights differ
    logits = torch.tensor([[1.0, -1.0], [0.0, 2.0], [0.5, 0.25], [-1.0, 3.0], [2.0, 1.0]],
                          requires_grad=True)
    labels = torch.tensor([0, 1, 1, 0, 0])
    value = task.meta_objective(logits, labels)
    expected = _hand_balanced_ce(logits, labels, train_labels)
    assert float(value.detach()) == pytest.approx(expected, rel=1e-6)
    value.backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
    # the weights average 1 over the training split: on it, the mean weight is 1
    from symloss.metrics import class_balanced_weights
    from symloss.prior import class_prior
    assert task.class_frequencies == class_prior(task.train.y, 2)
    weights = torch.tensor(class_balanced_weights(task.class_frequencies), dtype=torch.float64)
    assert float(weights[task.train.y].mean()) == pytest.approx(1.0)


def test_cross_entropy_given_as_the_baseline_is_the_default():
    """Plain cross-entropy passed as baseline= (as README's example does) is re-weighted
    like the default: any text of the same canonical form."""
    logits = torch.tensor([[1.0, -1.0], [0.0, 2.0], [0.5, 0.25]])
    labels = torch.tensor([0, 1, 1])
    default = make_task(_classification(), "linear", metric="balanced_error_rate")
    for text in ("-(y * log(f))", "-y*log(f)", "log(f) * y * -1"):
        task = make_task(_classification(), "linear", metric="balanced_error_rate",
                         baseline=text)
        assert task.custom_baseline and task.default_baseline
        assert task.meta_objective_name == default.meta_objective_name
        assert torch.equal(task.meta_objective(logits, labels),
                           default.meta_objective(logits, labels))


def test_the_class_balanced_surrogate_with_one_output_column():
    task = make_task(_classification(), torch.nn.Linear(4, 1), metric="balanced_error_rate")
    assert task.single_output
    logits = torch.tensor([[1.0], [-2.0], [0.5], [0.0]])
    labels = torch.tensor([1, 0, 0, 1])
    expected = _hand_balanced_ce(logits, labels, task.train.y.numpy())
    assert float(task.meta_objective(logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_meta_objectives_of_other_metrics_are_unchanged():
    """Error rate keeps the baseline (cross-entropy, bit for bit); a balanced metric with
    the user's baseline keeps that baseline; a callable keeps the baseline."""
    logits = torch.tensor([[1.0, -1.0], [0.0, 2.0], [0.5, 0.25]])
    labels = torch.tensor([0, 1, 1])
    for metric in (None, "error_rate", macro_f1_error):
        task = make_task(_classification(), "linear", metric=metric)
        assert task.meta_objective_name == "the baseline loss -(y * log(f))"
        assert torch.equal(task.meta_objective(logits, labels),
                           torch.nn.functional.cross_entropy(logits, labels))
    task = make_task(_classification(), "linear", metric="balanced_error_rate",
                     baseline="abs(f - y)")
    assert task.meta_objective_name == "the baseline loss abs(f - y)"
    assert torch.equal(task.meta_objective(logits, labels), task.base_loss(logits, labels))
    for text in ("-(y * log(f)) * 2", "-(y * log(f * f))"):  # not plain cross-entropy
        task = make_task(_classification(), "linear", metric="f1_macro", baseline=text)
        assert task.meta_objective_name.startswith("the baseline loss")
        assert torch.equal(task.meta_objective(logits, labels), task.base_loss(logits, labels))
    names = {"mse": "squared error (the metric)", "mae": "absolute error (the metric)",
             "pinball:0.9": "pinball loss q=0.9 (the metric)"}
    outputs, targets = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.5, 2.0, 0.0])
    for metric, name in names.items():
        task = make_task(_regression(), "linear", metric=metric)
        assert task.meta_objective_name == name
    assert torch.equal(make_task(_regression(), "linear", metric="mse").meta_objective(
        outputs, targets), torch.square(outputs.reshape(-1) - targets).mean())


def test_a_balanced_search_records_its_meta_objective(tmp_path):
    search = symloss.fit(_classification(), "linear", population_size=4, generations=1,
                         settings=TINY, verbose=False,
                         run_dir=tmp_path, metric="balanced_error_rate", random_state=0)
    name = search.task_.meta_objective_name
    assert name.startswith("class-balanced cross-entropy")
    assert search.best_loss_.metadata["meta_objective"] == name
    assert json.loads((tmp_path / "task.json").read_text())["meta_objective"] == name
    assert any(e.refined_fitness is not None for e in search.evaluations_)  # it ran


def test_every_scoring_stage_scores_the_metric(tmp_path):
    """Search fitness and the selection's training runs report sklearn's MAE of the
    trained model on validation, not MSE."""
    search = symloss.fit(_regression(), "linear", population_size=4, generations=1,
                         settings=TINY, local_search=False, verbose=False, run_dir=tmp_path,
                         metric="mae", random_state=0)
    task, settings = search.task_, search.settings_
    base = next(e for e in search.evaluations_ if e.expression == "square(f - y)")
    loss = search_loss(task, settings, "square(f - y)", (), symloss.scale.reference_batch(task, 0))
    run = train(task, loss, settings.fitness_steps, sgd_settings(settings), 0)
    with torch.no_grad():
        predictions = task.outputs(run.model, task.val.x).reshape(-1).numpy()
    mae = skm.mean_absolute_error(task.val.y.numpy(), predictions)
    assert base.fitness == pytest.approx(mae, rel=1e-6)
    assert validation_metric((task, settings, 0), ("square(f - y)", (), settings.fitness_steps,
                                                   0, settings.lr)) == pytest.approx(mae, rel=1e-6)
    assert search.best_loss_.learned_with.metric == "mae"
    assert "val MAE" in repr(search)
    assert json.loads((tmp_path / "run.json").read_text())["metric"] == "mae"
    summary = json.loads((tmp_path / "task.json").read_text())
    assert summary["metric"] == "MAE" and "absolute error" in summary["meta_objective"]


def test_pinball_search_is_seeded_with_the_pinball_loss(tmp_path):
    search = symloss.fit(_regression(), "linear", population_size=4, generations=1,
                         settings=TINY, local_search=False, verbose=False, run_dir=tmp_path,
                         metric="pinball:0.9", random_state=0)
    assert "max(0.9 * (y - f), -0.1 * (y - f))" in {e.expression for e in search.evaluations_}


# -- callables: end to end, save, load, resume -------------------------------------------


def test_callable_metric_end_to_end_and_resume(tmp_path):
    data = _classification()
    params = dict(population_size=4, generations=1, settings=TINY, verbose=False,
                  run_dir=tmp_path, random_state=0)
    search = symloss.fit(data, "linear", metric=macro_f1_error, **params)
    with_ = search.best_loss_.learned_with
    assert with_.metric == f"{macro_f1_error.__module__}.macro_f1_error"
    assert not with_.metric_restorable
    saved = load(search.best_loss_.save(tmp_path / "loss.json"))
    assert saved.learned_with.metric == with_.metric and not saved.learned_with.metric_restorable
    n = len(search.evaluations_)
    resumed = symloss.fit(data, "linear", metric=macro_f1_error, **params)
    assert len(resumed.evaluations_) == n
    assert resumed.best_loss_.expression == search.best_loss_.expression
    for other in (None, "balanced_error_rate"):
        with pytest.raises(ValueError, match="callable metric .*macro_f1_error.*pass the same"):
            symloss.fit(data, "linear", metric=other, **params)


def test_a_registered_metric_resumes_and_another_is_refused(tmp_path):
    data = _regression()
    params = dict(population_size=4, generations=1, settings=TINY, verbose=False,
                  run_dir=tmp_path, random_state=0, local_search=False)
    first = symloss.fit(data, "linear", metric="mae", **params)
    again = symloss.fit(data, "linear", metric="mae", **params)
    assert len(again.evaluations_) == len(first.evaluations_)
    with pytest.raises(ValueError, match="searched with metric 'mae', not 'mse'"):
        symloss.fit(data, "linear", **params)


# -- baseline= ---------------------------------------------------------------------------


def test_baseline_normalises_seeds_and_is_the_comparison(tmp_path):
    search = symloss.fit(_regression(), "linear", population_size=4, generations=1,
                         settings=TINY, local_search=False, verbose=False, run_dir=tmp_path,
                         baseline="abs(f - y)", metric="mae", random_state=0)
    task = search.task_
    assert str(task.baseline) == "abs(f - y)" and task.baseline_name == "abs(f - y)"
    # the user's baseline is seeded first, the usual squared error still in the library
    expressions = [e.expression for e in search.evaluations_]
    assert expressions[0] == "abs(f - y)" and "square(f - y)" in expressions
    # every loss is normalised to the user's baseline's gradient scale
    assert gradient_scale(LearnedLoss("abs(f - y)", "regression"), task) == pytest.approx(1.0)
    assert gradient_scale(search.best_loss_, task) == pytest.approx(1.0)
    # the final selection's plain baseline is the user's
    assert any(r.evaluation.expression == "abs(f - y)" and not r.evaluation.weights
               for r in search.selection_)
    assert search.best_loss_.learned_with.baseline == "abs(f - y)"
    result = symloss.evaluate(search.best_loss_, _regression(), "linear", steps=10, seeds=(1,),
                              lr_grid=())
    assert result.baseline.name == "abs(f - y)" and result.metric == "MAE"


def test_baseline_from_a_saved_loss_keeps_weights(tmp_path):
    path = LearnedLoss("abs(f - y)", "regression", [1.0, 0.5, 2.0]).save(tmp_path / "b.json")
    task = make_task(_regression(), "linear", baseline=str(path))
    assert task.baseline_weights == (1.0, 0.5, 2.0)
    outputs, targets = torch.tensor([[1.0]]), torch.tensor([3.0])
    assert float(task.base_loss(outputs, targets)) == pytest.approx(
        float(load(path)(outputs, targets)))
    with pytest.raises(ValueError, match="regression loss but this is a classification"):
        make_task(_classification(), "linear", baseline=path)
    with pytest.raises(ValueError, match="not a loss expression"):
        make_task(_regression(), "linear", baseline="abs(f - ")


def test_evaluate_defaults_to_the_metric_the_loss_was_searched_for():
    data, _ = resolve_data("sine")
    loss = LearnedLoss("abs(f - y)", "regression",
                       learned_with=symloss.network.LearnedWith(metric="pinball:0.9"))
    result = symloss.evaluate(loss, data, "linear", steps=5, seeds=(1,), lr_grid=())
    assert result.metric == "pinball loss (q=0.9)"
    assert symloss.evaluate(loss, data, "linear", steps=5, seeds=(1,), lr_grid=(),
                            metric="mae").metric == "MAE"


# -- the command line --------------------------------------------------------------------

CLI_TINY = ["--population", "4", "--generations", "1", "--set", "meta_steps=2",
            "--set", "fitness_steps=20", "--set", "poor_training_steps=10",
            "--set", "selection_steps=20", "--set", "selection_seeds=1",
            "--set", "metatest_seeds=[1]", "--metatest-steps", "20", "--jobs", "1"]


def test_cli_search_and_evaluate_with_metric_and_baseline(tmp_path, capsys):
    from symloss.cli import main

    run_dir = tmp_path / "run"
    code = main(["search", "outliers", *CLI_TINY, "--metric", "mae", "--baseline",
                 "abs(f - y)", "--run-dir", str(run_dir)])
    out = capsys.readouterr().out
    assert code == 0
    assert "metric 'mae'" in out and "size   val MAE   expression" in out
    assert "test MAE after 20 steps" in out
    assert "the baseline (abs(f - y)) at its own best rate" in out
    code = main(["evaluate", str(run_dir / "best_loss.json"), "outliers", "--steps", "10",
                 "--seeds", "1", "--single-lr", "--metric", "pinball:0.5", "--jobs", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "test pinball loss (q=0.5) after 10 steps" in out
    assert "abs(f - y)" in out  # the stored baseline is the comparison


def test_cli_refuses_an_unknown_metric_in_one_line(tmp_path, capsys):
    from symloss.cli import main

    code = main(["search", "sine", "--metric", "auc", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("symloss: error: metric 'auc' scores predicted probabilities")


@pytest.mark.parametrize("metric", ["mse", "mae", "pinball:0.25"])
def test_a_task_with_a_registered_metric_pickles_for_spawned_workers_and_ray(metric):
    import pickle

    task = pickle.loads(pickle.dumps(make_task(_regression(), "linear", metric=metric)))
    outputs, targets = torch.tensor([[1.0], [2.0]]), torch.tensor([0.0, 2.5])
    assert task.scoring.name == metric
    assert float(task.meta_objective(outputs, targets)) >= 0.0
    assert math.isfinite(task.metric_from_outputs(outputs, targets))


# -- known answers -----------------------------------------------------------------------

KNOWN = {"fitness_steps": 200, "poor_training_steps": 10, "selection_steps": 200,
         "selection_seeds": 1, "selection_adam_lr": 0.0}


def test_known_answer_pinball_metric_chooses_the_pinball_loss(tmp_path):
    """Exponential noise: the 0.9 quantile is far above the mean, so under pinball:0.9
    a pinball-shaped loss (the seeded one, or a variant the search bred from it) wins the
    selection by far, and under MSE no pinball shape does."""
    data = _regression(n=600)
    params = dict(population_size=4, generations=1, settings=KNOWN, local_search=False,
                  verbose=False, random_state=0)
    pinball = symloss.fit(data, "linear", metric="pinball:0.9", run_dir=tmp_path / "q", **params)
    assert "max(0.9 * (y - f), -0.1 * (y - f))" in {e.expression for e in pinball.evaluations_}
    assert str(pinball.best_loss_.expression).startswith("max(0.9 * (y - f)")
    plain = next(s for s in pinball.selection_ if s.evaluation.expression == "square(f - y)")
    assert pinball.selection_[0].mean < 0.8 * plain.mean
    mse = symloss.fit(data, "linear", run_dir=tmp_path / "m", **params)
    assert "0.9" not in str(mse.best_loss_.expression)


def test_known_answer_absolute_error_beats_squared_error_under_mae():
    """One-sided outliers: the median (absolute error) beats the mean (squared error)
    under MAE, each at its best rate, and the order flips under MSE."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 2)).astype(np.float32)
    tail = np.where(rng.random(600) < 0.2, 5.0 * rng.exponential(1.0, 600), 0.0)
    y = (x[:, 0] + 0.1 * rng.normal(size=600) + tail).astype(np.float32)
    scores = {}
    for metric in ("mae", "mse"):
        task = make_task((x, y), "linear", metric=metric)
        for text in ("abs(f - y)", "square(f - y)"):
            loss = LearnedLoss(text, "regression")
            result = symloss.metatest.meta_test(loss, task, steps=300, seeds=(1,),
                                                baseline=False, lr_grid=(0.01, 0.03, 0.1))
            scores[metric, text] = result.learned.mean
    assert scores["mae", "abs(f - y)"] < 0.8 * scores["mae", "square(f - y)"]
    assert scores["mse", "square(f - y)"] < scores["mse", "abs(f - y)"]
