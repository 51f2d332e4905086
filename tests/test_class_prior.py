"""The class-prior terminal p: every representation of a loss understands it, saved losses
keep their prior, and a search offers it only when asked."""

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from symloss import SymbolicLossSearch, load
from symloss.dual import DualLoss
from symloss.engines.deap import primitive_set, to_expression, to_tree
from symloss.expression import Expression
from symloss.filters import structural_reason
from symloss.library import BINARY_PRIOR_LOSSES, PRIOR_LOSSES, known_losses
from symloss.network import FORMAT_NAME, LearnedLoss
from symloss.prior import class_prior, task_prior
from symloss.records import OK
from symloss.task import make_task

PRIOR3 = (0.75, 0.2, 0.05)
EXPRESSIONS = [
    "y * log(f) * log(p)",
    "-(y * log(f) * (1 - p))",
    "max(p, f) * div(y - f, p) + square(p) * min(f, 0.5) - sqrt(p) * tanh(y * f)",
]


def _batch(columns: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(16, columns, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, max(columns, 2), (16,), generator=generator)
    return logits, labels


# -- expression ---------------------------------------------------------------------------
@pytest.mark.parametrize("text", [*EXPRESSIONS, *BINARY_PRIOR_LOSSES.values()])
def test_parse_print_round_trip_and_latex(text):
    e = Expression.parse(text)
    assert Expression.parse(str(e)) == e
    assert e.uses_class_prior and "p" in e.variables
    assert "p" in e.latex() and "p" in e.latex(simplify=False)
    assert not Expression.parse("-(y * log(f))").uses_class_prior


def test_prior_is_nonnegative_to_sympy():
    # |p| is p: log(p) reads as it means, and keys merge what only a sign would split
    assert Expression.parse("log(p) * y * f").key() == Expression.parse("log(abs(p)) * f * y").key()
    assert "Abs(p)" not in Expression.parse("y * f * sqrt(p)").key()


def test_structural_rule_still_needs_y_and_f():
    assert structural_reason(Expression.parse("p * f")) is not None
    assert structural_reason(Expression.parse("p * y")) is not None
    assert structural_reason(Expression.parse("p * y * f")) is None


# -- network, saved losses ----------------------------------------------------------------
def test_class_weighted_cross_entropy_matches_torch():
    logits, labels = _batch(3)
    loss = LearnedLoss("y * log(f) * log(p)", class_prior=PRIOR3)
    weight = -torch.log(torch.tensor(PRIOR3, dtype=torch.float64))
    expected = F.cross_entropy(logits, labels, weight=weight, reduction="sum") / len(labels)
    assert torch.allclose(loss(logits, labels), expected)


def test_logit_adjusted_binary_cross_entropy_matches_shifted_logits():
    logits, labels = _batch(1)
    prior = 0.1
    loss = LearnedLoss(BINARY_PRIOR_LOSSES["logit-adjusted binary cross-entropy"],
                       class_prior=[prior])
    shift = np.log(prior / (1 - prior))
    expected = F.binary_cross_entropy_with_logits(logits.reshape(-1) + shift,
                                                  labels.double())
    assert torch.allclose(loss(logits, labels), expected)


def test_prior_is_required_and_checked():
    logits, labels = _batch(3)
    with pytest.raises(ValueError, match="class_prior="):
        LearnedLoss("y * log(f) * log(p)")(logits, labels)
    with pytest.raises(ValueError, match="one value per class"):
        LearnedLoss("y * log(f) * log(p)", class_prior=[0.5, 0.5])(logits, labels)
    with pytest.raises(ValueError, match="from 0 to 1"):
        LearnedLoss("y * log(f) * log(p)", class_prior=[1.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="only classification"):
        LearnedLoss("square(f - y) * p", task="regression", class_prior=[0.5])


def test_loss_without_p_keeps_no_prior_and_its_file():
    loss = LearnedLoss("-(y * log(f))", class_prior=PRIOR3)
    assert loss.class_prior is None
    data = loss.to_dict()
    assert data["version"] == 2 and "class_prior" not in data


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_saved_loss_round_trip_reproduces_values(tmp_path, text):
    logits, labels = _batch(3, seed=1)
    n_edges = Expression.parse(text).size - 1
    weights = [1.0 + 0.01 * i for i in range(n_edges)]
    loss = LearnedLoss(text, weights=weights, class_prior=PRIOR3, scale=0.7)
    path = loss.save(tmp_path / "loss.json")
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT_NAME and data["version"] == 3
    assert data["class_prior"] == list(PRIOR3)
    back = load(path)
    assert back.class_prior == PRIOR3
    assert torch.equal(back(logits, labels), loss(logits, labels))
    assert torch.equal(back.with_scale(2.0)(logits, labels), loss.with_scale(2.0)(logits, labels))


def test_saved_loss_with_p_but_no_prior_is_refused(tmp_path):
    data = LearnedLoss("y * log(f) * log(p)", class_prior=PRIOR3).to_dict()
    del data["class_prior"]
    path = tmp_path / "loss.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="no 'class_prior'"):
        load(path)


# -- dual check, export -------------------------------------------------------------------
@pytest.mark.parametrize("text", [*EXPRESSIONS, *PRIOR_LOSSES.values()])
@pytest.mark.parametrize("columns", [3, 1])
def test_dual_matches_autograd(text, columns):
    prior = PRIOR3 if columns == 3 else (0.3,)
    logits, labels = _batch(columns, seed=2)
    loss = LearnedLoss(text, class_prior=prior)
    free = logits.clone().requires_grad_(True)
    value = loss(free, labels)
    (grad,) = torch.autograd.grad(value, free)
    dual = DualLoss(text, "classification", logits, labels, prior)
    with np.errstate(all="ignore"):
        dual_value, dual_grad = dual(dual.from_outputs(logits))
    assert dual_value == pytest.approx(float(value.detach()), rel=1e-12)
    assert torch.allclose(dual.to_outputs(dual_grad), grad, rtol=1e-10, atol=1e-12)


def test_dual_needs_the_prior():
    logits, labels = _batch(3)
    with pytest.raises(ValueError, match="class prior"):
        DualLoss("y * log(f) * log(p)", "classification", logits, labels)


@pytest.mark.parametrize("framework", ["torch", "numpy"])
@pytest.mark.parametrize("text", EXPRESSIONS)
def test_export_executes_and_matches(framework, text):
    logits, labels = _batch(3, seed=3)
    weights = [1.0 - 0.02 * i for i in range(Expression.parse(text).size - 1)]
    loss = LearnedLoss(text, weights=weights, class_prior=PRIOR3)
    namespace: dict = {}
    exec(loss.to_source(framework), namespace)
    args = (logits, labels) if framework == "torch" else (logits.numpy(), labels.numpy())
    got = float(namespace["loss"](*args))
    assert got == pytest.approx(float(loss(logits, labels)), rel=1e-12)
    two = labels % 2
    wrong = (logits[:, :2], two) if framework == "torch" else (logits[:, :2].numpy(),
                                                               two.numpy())
    with pytest.raises(ValueError, match="3 output column"):
        namespace["loss"](*wrong)


# -- prior values, library, engine --------------------------------------------------------
def test_class_prior_values():
    labels = torch.tensor([0, 0, 0, 1, 2, 0, 0, 1])
    assert class_prior(labels, 4) == (5 / 8, 2 / 8, 1 / 8, 0.0)
    assert class_prior(torch.tensor([0, 1, 1, 0, 0]), 2, single_output=True) == (0.4,)
    with pytest.raises(ValueError, match="labels must be 0..1"):
        class_prior(torch.tensor([0, 2]), 2)


def test_task_prior():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2)).astype(np.float32)
    y = (np.arange(60) % 4 == 0).astype(np.int64)
    task = make_task((x, y), "linear", task="classification", seed=0)
    expected = torch.bincount(task.train.y, minlength=2).double() / len(task.train)
    assert task_prior(task) == tuple(expected.tolist())
    regression = make_task((x, x[:, 0]), "linear", task="regression", seed=0)
    assert task_prior(regression) is None


def test_library_adds_prior_losses_only_when_asked():
    plain = known_losses("classification")
    assert not any(e.uses_class_prior for e in plain)
    with_prior = known_losses("classification", class_prior=True)
    assert with_prior[0] == plain[0]  # the baseline first, unchanged
    assert [str(e) for e in with_prior[1:3]] == [
        str(Expression.parse(t)) for t in PRIOR_LOSSES.values()
    ]
    binary = known_losses("classification", single_output=True, class_prior=True)
    assert {str(e) for e in binary[1:3]} == {
        str(Expression.parse(t)) for t in BINARY_PRIOR_LOSSES.values()
    }
    with pytest.raises(ValueError, match="classification only"):
        known_losses("regression", class_prior=True)


def _random_trees(pset, seed: int, n: int = 20) -> list[str]:
    from deap import gp

    state = random.getstate()
    random.seed(seed)
    try:
        return [str(to_expression(gp.genHalfAndHalf(pset, min_=2, max_=4))) for _ in range(n)]
    finally:
        random.setstate(state)


def test_terminal_set_unchanged_unless_asked():
    off, on = primitive_set(), primitive_set(class_prior=True)
    assert [t.value for t in off.terminals[object]][:2] == ["y", "f"]
    assert "p" not in [t.value for t in off.terminals[object]]
    assert "p" in [t.value for t in on.terminals[object]]
    assert not any("p" in Expression.parse(t).variables for t in _random_trees(off, 0))
    assert any("p" in Expression.parse(t).variables for t in _random_trees(on, 0))
    e = Expression.parse("y * log(f) * log(p)")
    assert to_expression(to_tree(e, on)) == e
    with pytest.raises(ValueError, match="class_prior=True"):
        to_tree(e, off)


# -- a search -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def imbalanced():
    """Three Gaussian classes at 80 / 15 / 5 %, overlapping."""
    rng = np.random.default_rng(0)
    labels = rng.choice(3, size=400, p=[0.8, 0.15, 0.05])
    centres = np.array([[0.0, 0.0], [1.2, 0.0], [0.0, 1.2]])
    x = (centres[labels] + rng.normal(size=(400, 2))).astype(np.float32)
    return x, labels.astype(np.int64)


def test_search_scores_prior_losses_and_keeps_the_prior(tmp_path, imbalanced):
    settings = {"class_prior": True, "fitness_steps": 30, "poor_training_steps": 20,
                "meta_steps": 2, "unroll_steps": 1, "selection_top_k": 2,
                "selection_steps": 30, "selection_seeds": 1, "lr_grid": ()}
    search = SymbolicLossSearch(population_size=4, generations=1, settings=settings,
                                random_state=0, verbose=False, run_dir=tmp_path / "run")
    search.fit(imbalanced, "linear")
    scored = {e.expression: e for e in search.evaluations_ if e.status == OK}
    prior_losses = [str(Expression.parse(t)) for t in PRIOR_LOSSES.values()]
    assert set(prior_losses) <= set(scored)
    prior = task_prior(search.task_)
    logits, labels = _batch(3, seed=4)
    for text in prior_losses:
        record = scored[text]
        assert np.isfinite(record.fitness)
        # the record rebuilds the loss it scored, with the task's prior
        loss = LearnedLoss(text, weights=record.weights or None, class_prior=prior)
        assert torch.isfinite(loss(logits.float(), labels))


def test_search_refuses_prior_for_regression_and_prior_seeds_when_off(tmp_path, imbalanced):
    x, labels = imbalanced
    search = SymbolicLossSearch(population_size=4, generations=1, verbose=False,
                                settings={"class_prior": True}, run_dir=tmp_path / "r")
    with pytest.raises(ValueError, match="only classification"):
        search.fit((x, x[:, 0]), "linear")
    search = SymbolicLossSearch(population_size=4, generations=1, verbose=False,
                                seed_expressions=["y * log(f) * log(p)"],
                                run_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="class_prior"):
        search.fit((x, labels), "linear")


def test_loss_shape_plot_draws_a_prior_loss():
    pytest.importorskip("matplotlib")
    from symloss.plots import elementwise, loss_shape

    loss = LearnedLoss("y * log(f) * log(p)", class_prior=PRIOR3)
    f = np.linspace(0.01, 0.99, 5)
    expected = np.log(f) * np.log(min(PRIOR3))
    assert np.allclose(elementwise(loss, f, np.ones_like(f)), expected)
    assert loss_shape({"learned": loss}, "classification") is not None


def test_settings_written_as_before_unless_class_prior_is_on():
    from symloss.config import Settings

    assert "class_prior" not in Settings().to_dict()
    on = Settings(class_prior=True)
    assert on.to_dict()["class_prior"] is True
    assert Settings.from_dict(on.to_dict()) == on
    assert Settings.from_dict(Settings().to_dict()) == Settings()


@pytest.mark.parametrize("name", ["operon", "pysr"])
def test_other_engines_refuse_the_prior(name):
    from symloss.config import Settings
    from symloss.engines import SearchContext, get_engine

    context = SearchContext(kind="classification", settings=Settings(class_prior=True), seed=0,
                            seeds=[], evaluate=lambda expressions: [])
    with pytest.raises(ValueError, match="engine='deap'"):
        get_engine(name).search(context)
