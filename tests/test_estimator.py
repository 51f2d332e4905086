"""SymbolicLossSearch: scikit-learn conventions, fitted attributes, data forms, determinism."""

from __future__ import annotations

import importlib.util
import inspect
import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import sklearn.base
import sklearn.exceptions
import sklearn.utils.validation
import sympy
import torch
from torch import nn

import symloss
from symloss.estimator import NotFittedError, SymbolicLossSearch
from symloss.expression import Expression
from symloss.network import LearnedLoss
from symloss.records import CACHED, OK, REJECTED, GenerationStats
from symloss.runs import RunDirectory
from symloss.selection import finalists
from symloss.tables import Equation, equations_frame, equations_table, latex_table

TINY = {"selection_seeds": 2}  # over the tiny preset
POP, GENS = 4, 2


def tiny(run_dir, **params):
    """A search with tiny budgets (override any parameter)."""
    kwargs = {"preset": "tiny", "population_size": POP, "generations": GENS,
              "settings": dict(TINY), "random_state": 0, "verbose": False, "run_dir": run_dir,
              **params}
    return SymbolicLossSearch(**kwargs)


def outcome(evaluations):
    """What must be reproducible about a search (timings are not)."""
    return [(e.expression, e.status, e.fitness, e.reason, e.weights) for e in evaluations]



@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One search on the built-in sine task with the built-in MLP."""
    search = tiny(tmp_path_factory.mktemp("fitted") / "run")
    returned = search.fit("sine", "mlp")
    assert returned is search
    return search


@pytest.fixture(scope="module")
def heavy_tailed():
    """A small regression problem with Student-t (df=1.5) noise, float32."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 3)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0, 0.5]) + 0.3 * rng.standard_t(1.5, size=240)).astype(np.float32)
    return x, y


def small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))


# -- scikit-learn conventions -----------------------------------------------------------------
def test_get_set_params_and_clone():
    search = SymbolicLossSearch(population_size=7, settings={"meta_steps": 3}, random_state=4)
    params = search.get_params()
    assert params["population_size"] == 7 and params["random_state"] == 4
    assert set(params) == set(inspect.signature(SymbolicLossSearch).parameters)
    clone = sklearn.base.clone(search)
    assert clone is not search
    assert clone.get_params() == params
    assert clone.settings is not search.settings  # deep-copied, not shared
    assert search.set_params(generations=3, verbose=False) is search
    assert search.get_params()["generations"] == 3 and search.verbose is False


def test_unknown_param_raises():
    with pytest.raises(ValueError, match="populaton_size"):
        SymbolicLossSearch().set_params(populaton_size=3)
    with pytest.raises(TypeError):
        SymbolicLossSearch(populaton_size=3)  # type: ignore[call-arg]


def test_unfitted_raises_not_fitted_error():
    search = SymbolicLossSearch()
    for method in (search.latex, search.sympy, search.pytorch):
        with pytest.raises(NotFittedError, match="SymbolicLossSearch"):
            method()
    with pytest.raises(NotFittedError, match="SymbolicLossSearch.*best_loss_"):
        search.best_loss_  # noqa: B018
    with pytest.raises(sklearn.exceptions.NotFittedError, match="lr_choice_ is set by fit"):
        search.lr_choice_  # noqa: B018
    assert issubclass(NotFittedError, sklearn.exceptions.NotFittedError)
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    assert not hasattr(search, "best_loss_") and not hasattr(search, "equations_")
    with pytest.raises(AttributeError, match="no attribute 'nonsense_'"):
        search.nonsense_  # noqa: B018
    assert repr(search) == "SymbolicLossSearch()"


def test_sklearn_check_is_fitted():
    with pytest.raises(sklearn.exceptions.NotFittedError):
        sklearn.utils.validation.check_is_fitted(SymbolicLossSearch())


def test_clone_of_fitted_is_unfitted(fitted):
    clone = sklearn.base.clone(fitted)
    assert not hasattr(clone, "best_loss_")
    assert clone.get_params() == fitted.get_params()
    assert fitted.__sklearn_is_fitted__() and not clone.__sklearn_is_fitted__()


# -- fitted attributes ------------------------------------------------------------------------
def test_fitted_best_loss(fitted):
    loss = fitted.best_loss_
    assert isinstance(loss, LearnedLoss)
    assert loss.task == "regression" == fitted.task_.kind
    assert fitted.pytorch() is loss
    assert fitted.latex() == loss.latex() and fitted.latex()
    assert fitted.sympy() == loss.sympy()
    out = loss(torch.randn(16, 1), torch.randn(16, 1))
    assert out.shape == () and torch.isfinite(out)
    assert fitted.settings_.population_size == POP and fitted.settings_.meta_steps == 2
    assert "SymbolicLossSearch(" in repr(fitted) and ">>>" in repr(fitted)


def test_fitted_equations(fitted):
    frame = fitted.equations_
    assert isinstance(frame, pd.DataFrame) and len(frame) > 0
    assert list(frame.columns) == ["size", "fitness", "expression", "weights", "latex",
                                   "sympy", "chosen", "refined", "unrefined_fitness",
                                   "refined_fitness"]
    rows = list(frame.itertuples(index=False))
    guarded = [r for r in rows if pd.notna(r.unrefined_fitness)]
    assert guarded
    for row in guarded:  # the guard kept the better of the two forms
        assert row.fitness == min(row.unrefined_fitness, row.refined_fitness)
        assert bool(row.weights) == row.refined
    sizes = [r.size for r in rows]
    assert sizes == sorted(set(sizes))
    assert sizes == [Expression.parse(r.expression).size for r in rows]
    for row in rows:
        loss = LearnedLoss(row.expression, "regression", row.weights or None)
        assert isinstance(row.sympy, sympy.Expr) and row.sympy == loss.sympy()
        assert row.latex == loss.latex()
    chosen = [r for r in rows if r.chosen]
    assert len(chosen) == 1
    assert str(fitted.best_loss_.expression) == chosen[0].expression
    n_edges = len(fitted.best_loss_.weights)
    assert fitted.best_loss_.weights == pytest.approx(list(chosen[0].weights) or [1.0] * n_edges)
    # the quick preset ends with a final selection: its winner is the chosen row
    assert fitted.settings_.selection_top_k > 0
    assert fitted.selection_[0].evaluation.expression == chosen[0].expression
    means = [s.mean for s in fitted.selection_]
    assert means == sorted(means) and len(means) >= 2
    assert len(fitted.selection_[0].metrics) == 2
    table = equations_table(rows)
    assert table.count(">>>") == 1 and chosen[0].expression in table


def test_print_and_latex_table(fitted, tmp_path):
    rows = list(fitted.equations_.itertuples(index=False))
    assert repr(fitted).endswith(equations_table(rows, "MSE"))
    table = fitted.latex_table(precision=3)
    assert table == latex_table(fitted.equations_, "validation MSE", 3)
    lines = table.splitlines()
    assert r"\toprule" in lines and r"\midrule" in lines and r"\bottomrule" in lines
    body = lines[lines.index(r"\midrule") + 1:lines.index(r"\bottomrule")]
    assert len(body) == len(rows)
    for line, row in zip(body, rows, strict=True):
        size, fitness, loss = line.removesuffix(r" \\").split(" & ")
        assert size == (rf"{row.size}$^\star$" if row.chosen else str(row.size))
        assert fitness == f"{row.fitness:.3f}" and loss == rf"$\displaystyle {row.latex}$"
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed; the table's text was checked, not compiled")
    document = tmp_path / "table.tex"
    document.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{amsmath}\n"
                        f"\\begin{{document}}\n{table}\\end{{document}}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                           document.name], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "table.pdf").stat().st_size > 0


def test_without_final_selection_the_min_fitness_is_chosen(fitted, tmp_path):
    search = tiny(tmp_path / "nosel", settings={**TINY, "selection_top_k": 0})
    search.fit("sine", "mlp")
    assert search.selection_ == []
    chosen = search.equations_[search.equations_["chosen"]]
    assert len(chosen) == 1
    assert chosen["fitness"].iloc[0] == search.equations_["fitness"].min()
    assert chosen["fitness"].iloc[0] == min(e.fitness for e in search.evaluations_
                                            if e.status == OK)
    # the search itself does not depend on the final selection
    assert outcome(search.evaluations_) == outcome(fitted.evaluations_)


def test_settings_that_are_also_parameters_are_honoured(tmp_path):
    """``local_search``, ``population_size`` and ``generations`` are parameters and settings:
    a parameter left unset leaves the settings' value."""
    search = tiny(tmp_path / "nols", population_size=None, generations=None,
                  settings={"local_search": False, "population_size": 3})
    search.fit("sine", "mlp")
    assert search.settings_.local_search is False and search.settings_.population_size == 3
    assert all(e.weights == () for e in search.evaluations_)
    assert search.best_loss_.metadata["local_search"] is False


@pytest.mark.parametrize("params", [
    {"local_search": True, "settings": {"local_search": False}},
    {"population_size": 5, "settings": {"population_size": 6}},
])
def test_a_parameter_and_a_setting_that_disagree_raise(params, tmp_path):
    with pytest.raises(ValueError, match="given twice with different values"):
        tiny(tmp_path / "run", **params).fit("sine", "mlp")
    assert not (tmp_path / "run").exists()  # refused before any work


def test_a_finished_search_reruns_its_later_stages_with_other_settings(fitted, tmp_path):
    """The final selection reads the records: other selection settings rerun it on the
    finished search instead of refusing the run directory as a different run."""
    path = tmp_path / "copy"
    shutil.copytree(fitted.run_dir_, path)
    lines = (path / "evaluations.jsonl").read_text()
    again = tiny(path, settings={**TINY, "selection_seeds": 1, "selection_top_k": 2,
                                 "metatest_steps": 7}).fit("sine", "mlp")
    assert (path / "evaluations.jsonl").read_text() == lines  # nothing searched again
    assert outcome(again.evaluations_) == outcome(fitted.evaluations_)
    # the two best distinct losses and the baseline (as scored, and plain when the search
    # kept refined weights for it)
    expected = finalists(again.evaluations_, again.task_.baseline, 2)
    assert [r.evaluation for r in again.selection_] == expected
    assert all(len(r.metrics) == 1 for r in again.selection_)
    assert len(json.loads((path / "selection.json").read_text())) == len(expected)
    settings = json.loads((path / "run.json").read_text())["settings"]
    assert settings["selection_seeds"] == 1 and settings["metatest_steps"] == 7
    without = tiny(path, settings={**TINY, "selection_top_k": 0}).fit("sine", "mlp")
    assert without.selection_ == [] and not (path / "selection.json").exists()
    assert outcome(without.evaluations_) == outcome(fitted.evaluations_)


def test_fitted_history_and_evaluations(fitted):
    history = fitted.history_
    assert len(history) == GENS + 1
    assert all(isinstance(h, GenerationStats) for h in history)
    assert [h.generation for h in history] == list(range(GENS + 1))
    assert [h.evaluated for h in history] == [POP] + [POP - 1] * GENS  # elitism 1
    assert fitted.n_evaluations_ == len(fitted.evaluations_) == sum(h.evaluated for h in history)
    start = 0
    for h in history:
        chunk = fitted.evaluations_[start:start + h.evaluated]
        start += h.evaluated
        assert h.cached == sum(e.status == CACHED for e in chunk)
        assert sum(h.rejected.values()) == sum(e.status == REJECTED for e in chunk)
        assert h.best_fitness <= h.median_fitness
        assert h.seconds >= 0
    # the local search ran, and the guard kept a refined loss only where it trained better
    trained = [e for e in fitted.evaluations_ if e.status == OK]
    assert all(e.refined_fitness is not None for e in trained)
    assert all(bool(e.weights) == e.refined for e in trained)


def test_fitted_run_directory(fitted):
    path = fitted.run_dir_
    for name in ("run.json", "evaluations.jsonl", "checkpoint.json", "hall_of_fame.json",
                 "best_loss.json", "selection.json"):
        assert (path / name).is_file(), name
    assert not list(path.glob("*.tmp"))
    run = json.loads((path / "run.json").read_text())
    assert run["seed"] == 0 and run["kind"] == "regression" and run["engine"] == "deap"
    assert run["settings"]["population_size"] == POP
    records = RunDirectory(path).records()
    assert len(records) == fitted.n_evaluations_
    # appended as each result is final (cheap decisions first); (generation, index) orders them
    records.sort(key=lambda r: (r.generation, r.index))
    assert outcome(r.evaluation for r in records) == outcome(fitted.evaluations_)
    assert json.loads((path / "checkpoint.json").read_text())["generation"] == GENS
    hall = [Equation.from_dict(row)
            for row in json.loads((path / "hall_of_fame.json").read_text())]
    assert equations_frame(hall).equals(fitted.equations_)
    loaded = symloss.load(path / "best_loss.json")
    assert isinstance(loaded, LearnedLoss)
    assert loaded.to_dict() == fitted.best_loss_.to_dict()
    pred, target = torch.randn(32, 1), torch.randn(32, 1)
    assert torch.equal(loaded(pred, target), fitted.best_loss_(pred, target))


def test_fit_function_and_determinism(fitted, tmp_path):
    """symloss.fit is the estimator; the same random_state gives the same search."""
    again = symloss.fit("sine", "mlp", preset="tiny", population_size=POP, generations=GENS,
                        settings=dict(TINY), random_state=0, verbose=False,
                        run_dir=tmp_path / "again")
    assert isinstance(again, SymbolicLossSearch)
    assert outcome(again.evaluations_) == outcome(fitted.evaluations_)
    assert again.equations_.equals(fitted.equations_)
    assert again.best_loss_.to_dict()["weights"] == fitted.best_loss_.to_dict()["weights"]


def test_other_random_state_differs(fitted, tmp_path):
    other = tiny(tmp_path / "other", random_state=1).fit("sine", "mlp")
    assert outcome(other.evaluations_) != outcome(fitted.evaluations_)


def test_run_dir_of_another_run_raises(fitted):
    lines = (fitted.run_dir_ / "evaluations.jsonl").read_text()
    run = (fitted.run_dir_ / "run.json").read_text()
    with pytest.raises(ValueError, match="different run.*settings"):
        tiny(fitted.run_dir_, population_size=5).fit("sine", "mlp")
    with pytest.raises(ValueError, match="different run.*seed"):
        tiny(fitted.run_dir_, random_state=3).fit("sine", "mlp")
    assert (fitted.run_dir_ / "evaluations.jsonl").read_text() == lines
    assert (fitted.run_dir_ / "run.json").read_text() == run


# -- user data ----------------------------------------------------------------------------------
def test_regression_arrays_with_seeds_and_model_factory(heavy_tailed, tmp_path):
    x, y = heavy_tailed
    seeds = ["abs(f - y) * 0.5", "sqrt(f - y)"]
    search = tiny(tmp_path / "arrays", seed_expressions=seeds).fit((x, y), small_net)
    assert search.task_.kind == "regression" and search.best_loss_.task == "regression"
    generation0 = [e.expression for e in search.evaluations_[:POP]]
    assert generation0[0] == "square(f - y)"
    for text in seeds:
        assert str(Expression.parse(text)) in generation0
    # the user's seeds are stored in run.json (changing them is a different run)
    run = json.loads((search.run_dir_ / "run.json").read_text())
    assert [str(Expression.parse(t)) for t in seeds] == run["seeds"][1:3]


class Blobs(torch.utils.data.Dataset):
    """A user-defined map-style Dataset: 3 Gaussian blobs in 4-D."""

    def __init__(self, n: int = 150) -> None:
        generator = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % 3
        self.x = torch.randn(n, 4, generator=generator) + self.y[:, None].float()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def test_classification_dataset_without_local_search(tmp_path):
    search = tiny(tmp_path / "blobs", local_search=False).fit(Blobs(), nn.Linear(4, 3))
    assert search.task_.kind == "classification" and search.task_.n_classes == 3
    assert search.best_loss_.task == "classification"
    assert search.evaluations_[0].expression == "-(y * log(f))"
    assert search.settings_.local_search is False
    assert all(e.weights == () for e in search.evaluations_)
    assert all(w == () for w in search.equations_["weights"])
    assert all(w == 1.0 for w in search.best_loss_.weights)
    assert search.best_loss_.metadata["local_search"] is False
    logits, labels = torch.randn(5, 3), torch.randint(0, 3, (5,))
    assert torch.isfinite(search.best_loss_(logits, labels))


def test_tensor_dataset_digits_subset(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data[:400] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target[:400])
    search = tiny(tmp_path / "digits", generations=1).fit(
        torch.utils.data.TensorDataset(x, y), "linear"
    )
    assert search.task_.n_classes == 10
    assert search.best_loss_.metadata["fitness"] < 0.9  # better than chance after 20 steps


# -- parallel evaluation ----------------------------------------------------------------------
def test_n_jobs_2_equals_n_jobs_1(heavy_tailed, tmp_path):
    x, y = heavy_tailed
    serial = tiny(tmp_path / "serial", generations=1, n_jobs=1).fit((x, y), small_net)
    pooled = tiny(tmp_path / "pooled", generations=1, n_jobs=2).fit((x, y), small_net)
    assert outcome(pooled.evaluations_) == outcome(serial.evaluations_)
    assert pooled.equations_.equals(serial.equations_)
    def finalists(search):
        return [(r.evaluation.expression, r.evaluation.weights, r.metrics)
                for r in search.selection_]

    assert serial.selection_ and finalists(pooled) == finalists(serial)


# -- optional engine --------------------------------------------------------------------------
def test_pysr_engine_missing_fails_fast(tmp_path):
    if importlib.util.find_spec("pysr") is not None:
        pytest.skip("pysr is installed here")
    run_dir = tmp_path / "pysr"
    with pytest.raises(ImportError, match="(?i)pysr"):
        tiny(run_dir, engine="pysr").fit("sine", "mlp")
    assert not run_dir.exists()  # failed before any work


def test_unknown_engine_and_preset(tmp_path):
    with pytest.raises(ValueError, match="unknown engine"):
        tiny(tmp_path / "e", engine="nope").fit("sine", "mlp")
    with pytest.raises(ValueError, match="unknown preset"):
        tiny(tmp_path / "p", preset="nope").fit("sine", "mlp")
    assert not (tmp_path / "e").exists() and not (tmp_path / "p").exists()


def test_local_pool_is_not_used_off_the_cpu():
    from types import SimpleNamespace

    from symloss.estimator import _executor_for

    cpu, gpu = SimpleNamespace(device=torch.device("cpu")), SimpleNamespace(
        device=torch.device("cuda"))
    assert _executor_for(cpu, "auto", -1) == ("auto", -1)
    assert _executor_for(gpu, "ray", 4) == ("ray", 4)
    with pytest.warns(UserWarning, match="evaluating in this process"):
        assert _executor_for(gpu, "auto", 2) == ("auto", 1)


class BreaksOnLargeBatches(nn.Module):
    """A regression model that passes the model check (a batch of 4) but fails to train
    on the search's batches, as a model broken only in some training configurations."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and len(x) > 4:
            raise RuntimeError("batch too large for this layer")
        return self.linear(x)


def test_search_that_trains_nothing_names_the_first_failure(tmp_path):
    x = np.linspace(-1, 1, 120, dtype=np.float32)[:, None]
    search = tiny(tmp_path / "run", population_size=3, generations=1,
                  settings={**TINY, "lr": 0.01, "selection_top_k": 0})
    with pytest.raises(RuntimeError, match="no candidate loss could be trained") as info:
        search.fit((x, 2 * x[:, 0]), BreaksOnLargeBatches)
    assert "RuntimeError: batch too large for this layer" in str(info.value)
    assert "evaluations.jsonl" in str(info.value)


def test_batches_larger_than_the_training_split_are_capped_with_a_warning(tmp_path):
    x = np.linspace(-1, 1, 120, dtype=np.float32)[:, None]
    settings = {**TINY, "lr": 0.01, "selection_top_k": 0, "batch_size": 10**6,
                "meta_batch_size": 10**6}
    search = tiny(tmp_path / "run", population_size=3, generations=1, settings=settings)
    with pytest.warns(UserWarning, match="larger than the .* training examples") as caught:
        search.fit((x, np.sin(3 * x[:, 0])), "linear")
    n_train = len(search.task_.train)
    assert {str(w.message).split("=")[0] for w in caught} >= {"batch_size", "meta_batch_size"}
    assert search.settings_.batch_size == search.settings_.meta_batch_size == n_train
    assert any(e.status == OK for e in search.evaluations_)
    # the run is what was asked for: the same call resumes it
    assert RunDirectory(tmp_path / "run").load("run.json")["settings"]["batch_size"] == 10**6


@pytest.mark.parametrize("n_jobs", [1.5, "2", True, 0, -2])
def test_n_jobs_must_be_a_whole_number_before_anything_runs(tmp_path, n_jobs):
    with pytest.raises(ValueError, match=f"n_jobs must be a positive whole number.*{n_jobs!r}"):
        tiny(tmp_path / "run", n_jobs=n_jobs).fit("sine", "linear")
    assert not (tmp_path / "run").exists()


def test_a_single_seed_expression_string_is_one_expression(tmp_path):
    search = tiny(tmp_path / "run", seed_expressions="abs(f - y)", population_size=3,
                  generations=1, settings={**TINY, "selection_top_k": 0})
    search.fit("sine", "linear")
    assert "abs(f - y)" in {e.expression for e in search.evaluations_}
