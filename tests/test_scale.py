"""Scale is not shape: gradient scales, normalised losses, scale-free fitness."""

from __future__ import annotations

import json

import pytest
import torch

from symloss.lossfile import load
from symloss.network import LearnedLoss, LearnedWith
from symloss.scale import (
    gradient_norm,
    gradient_scale,
    normalising_factor,
    reference_batch,
    search_loss,
)
from symloss.scoring import score


def test_the_baseline_has_gradient_scale_one_and_scales_linearly(digits_task, sine_task):
    for task in (digits_task, sine_task):
        baseline = LearnedLoss(task.baseline, task.kind)
        assert gradient_scale(baseline, task) == pytest.approx(1.0, rel=1e-6)
        assert gradient_scale(baseline.with_scale(3.0), task) == pytest.approx(3.0, rel=1e-6)


@pytest.mark.parametrize("text", ["-(y * sqrt(f))", "square(f - y)", "-(y * log(f)) * 95"])
def test_normalising_gives_gradient_scale_one(digits_task, text):
    loss = LearnedLoss(text, "classification")
    factor = normalising_factor(loss, digits_task, reference_batch(digits_task))
    assert gradient_scale(loss.with_scale(factor), digits_task) == pytest.approx(1.0, rel=1e-6)
    if text.endswith("95"):
        assert factor == pytest.approx(1 / 95, rel=1e-6)


def test_a_loss_without_gradient_cannot_be_normalised(sine_task):
    flat = LearnedLoss("sign(f - y)", "regression")
    with pytest.raises(ValueError, match="cannot be normalised"):
        normalising_factor(flat, sine_task, reference_batch(sine_task))


def test_the_normalised_norm_is_differentiable_in_the_weights(sine_task):
    loss = LearnedLoss("square(f - y)", "regression")
    weights = torch.ones(loss.network.n_edges, dtype=torch.float64, requires_grad=True)
    norm = gradient_norm(lambda o, t: loss(o, t, weights), reference_batch(sine_task),
                         create_graph=True)
    (grad,) = torch.autograd.grad(norm, weights)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().max()) > 0


@pytest.mark.parametrize("local_search", [False, True])
@pytest.mark.parametrize("c", [0.1, 10.0])
def test_a_multiple_of_a_loss_gets_the_same_fitness(sine_task, tiny_settings, c, local_search):
    """The scale-free search: c * L cannot beat L, with or without the local search."""
    settings = tiny_settings.replace(local_search=local_search, weight_init_std=0.0,
                                     lr=0.05)
    plain = score((sine_task, settings, 0), "abs(f - y) + square(f - y)").fields
    scaled = score((sine_task, settings, 0), f"{c} * (abs(f - y) + square(f - y))").fields
    assert plain["status"] == scaled["status"] == "ok"
    assert scaled["fitness"] == pytest.approx(plain["fitness"], rel=1e-4)


def test_the_paper_setting_keeps_the_scale(sine_task, tiny_settings):
    settings = tiny_settings.replace(local_search=False, normalize=False)
    plain = score((sine_task, settings, 0), "square(f - y)").fields
    scaled = score((sine_task, settings, 0), "10.0 * square(f - y)").fields
    assert scaled["fitness"] != pytest.approx(plain["fitness"], rel=1e-2)


def test_search_loss_is_normalised_only_when_asked(sine_task, tiny_settings):
    reference = reference_batch(sine_task)
    loss = search_loss(sine_task, tiny_settings, "10.0 * abs(f - y)", (), reference)
    assert gradient_scale(loss, sine_task) == pytest.approx(1.0, rel=1e-6)
    raw = search_loss(sine_task, tiny_settings.replace(normalize=False), "10.0 * abs(f - y)")
    assert raw.scale == 1.0


def test_scale_and_learned_with_round_trip(tmp_path):
    with_ = LearnedWith(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                        search_scale=0.02, recommended_lr=0.3)
    loss = LearnedLoss("-(y * log(f))", "classification", scale=0.5, learned_with=with_)
    back = load(loss.save(tmp_path / "loss.json"))
    assert back.scale == 0.5 and back.learned_with == with_
    assert back.step_factor == pytest.approx(0.04)
    searched = back.as_searched()
    logits, labels = torch.randn(6, 4), torch.randint(0, 4, (6,))
    assert torch.allclose(searched(logits, labels), back(logits, labels) * 0.04)
    assert searched.scale == 0.02 and searched.learned_with == with_


def test_a_version_one_file_still_loads(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": "symloss.loss", "version": 1,
                                "expression": "square(f - y)", "task": "regression",
                                "weights": [1.0, 1.0, 1.0], "metadata": {}}))
    loss = load(path)
    assert loss.scale == 1.0 and loss.learned_with is None and loss.step_factor == 1.0
    assert loss.as_searched().scale == 1.0


@pytest.mark.parametrize("field, value", [("lr", "fast"), ("nesterov", 1),
                                          ("search_scale", None), ("extra", 1)])
def test_bad_learned_with_is_refused_with_the_file_named(tmp_path, field, value):
    data = LearnedLoss("square(f - y)", "regression",
                       learned_with=LearnedWith()).to_dict()
    data["learned_with"][field] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="bad.json"):
        load(path)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("inf")])
def test_the_scale_must_be_positive_and_finite(scale):
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        LearnedLoss("square(f - y)", "regression", scale=scale)


def test_a_search_returns_a_normalised_loss_and_records_its_rate(tmp_path):
    import symloss
    from symloss.runs import SEARCH_LR_FILE

    tiny = {"unroll_steps": 5, "selection_top_k": 2, "lr_grid": [0.01, 0.03]}
    search = symloss.SymbolicLossSearch(preset="tiny", settings=tiny, random_state=0,
                                        verbose=False, run_dir=tmp_path)
    search.fit("sine", "mlp")
    loss = search.best_loss_
    assert 0.9 <= gradient_scale(loss, search.task_, seed=0) <= 1.1
    assert loss.learned_with.lr == search.settings_.lr == search.lr_choice_.lr
    assert loss.learned_with.recommended_lr == search.selection_[0].lr
    saved = load(search.run_dir_ / "best_loss.json")
    assert saved.scale == loss.scale and saved.learned_with == loss.learned_with
    assert json.loads((tmp_path / SEARCH_LR_FILE).read_text())["lr"] == search.lr_choice_.lr
    # a rate given without a grid is fixed, not tuned
    fixed_rate = {k: v for k, v in tiny.items() if k != "lr_grid"} | {"lr": 0.02}
    fixed = symloss.SymbolicLossSearch(preset="tiny", settings=fixed_rate, random_state=0,
                                       verbose=False, run_dir=tmp_path / "fixed")
    fixed.fit("sine", "mlp")
    assert fixed.lr_choice_ is None and fixed.settings_.lr == 0.02
    assert not (tmp_path / "fixed" / SEARCH_LR_FILE).exists()
