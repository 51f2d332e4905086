"""The run's records for reports, ``symloss show --plot`` and ``symloss report``, on a real
(tiny) ``symloss search``."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil

import pytest
import torch

import symloss
from symloss.cli import main
from symloss.metatest import LossResult, MetaTestResult
from symloss.runs import RunDirectory

pytest.importorskip("matplotlib", reason="figures need matplotlib (symloss[plots])")

TINY_SEARCH = ["--jobs", "1", "--preset", "tiny", "--set", "unroll_steps=5"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished ``symloss search sine`` run directory."""
    path = tmp_path_factory.mktemp("report") / "sine-run"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["search", "sine", *TINY_SEARCH, "--run-dir", str(path)]) == 0
    return path


def run_main(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_search_records_task_and_metatest(run_dir):
    run = RunDirectory(run_dir)
    task = run.load("task.json")
    assert task["dataset"] == "sine" and task["kind"] == "regression"
    assert task["sizes"] == {"train": 800, "val": 200, "test": 1000}
    assert task["model"] == "mlp" and task["model_parameters"] == 1 * 40 + 40 + 40 * 40 + 40 + 41
    assert task["targets"]["quantiles"]["10%"] < task["targets"]["quantiles"]["90%"]
    result = MetaTestResult.from_dict(run.load("metatest.json"))
    assert result.seeds == (1, 2) and result.steps == 20
    assert len(result.learned.curves) == 2 and result.learned.curves[0][0][0] == 0
    assert result.learned.curves[0][-1][0] == 20
    assert result.baseline is not None and result.baseline.name == "MSE"
    assert all(row["weights"] is not None for row in run.load("selection.json"))


def test_metatest_result_round_trip_with_divergence():
    result = MetaTestResult("error rate", (1, 2), 10,
                            LossResult("learned", (0.1, math.inf), (False, True),
                                       (((0, 0.9), (10, 0.1)), ((0, 0.9),)), 0.1),
                            None, {"lr_grid": [0.01, 0.1]})
    data = json.loads(json.dumps(result.to_dict()))  # strict JSON: no Infinity
    assert data["learned"]["metrics"] == [0.1, None]
    assert MetaTestResult.from_dict(data) == result


def test_history_from_records_when_no_checkpoint(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    saved = RunDirectory(copy).history()
    (copy / "checkpoint.json").unlink()
    rebuilt = RunDirectory(copy).history()
    assert [h.generation for h in rebuilt] == [h.generation for h in saved] == [0, 1]
    for a, b in zip(rebuilt, saved, strict=True):
        assert (a.evaluated, a.cached, a.rejected) == (b.evaluated, b.cached, b.rejected)
    # the best of a generation's new candidates is never better than the population's
    assert all(a.best_fitness >= b.best_fitness for a, b in zip(rebuilt, saved, strict=True))


def test_report_names_a_checkpoint_whose_history_lacks_fields(run_dir, capsys, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    checkpoint = json.loads((copy / "checkpoint.json").read_text())
    for row in checkpoint["history"]:
        del row["best_fitness"]
    (copy / "checkpoint.json").write_text(json.dumps(checkpoint))
    code, _, err = run_main(["report", copy, "--out", tmp_path / "out"], capsys)
    assert code == 2
    assert err.startswith("symloss: error: ") and err.count("\n") == 1
    assert "checkpoint.json holds an invalid history" in err and "best_fitness" in err


def test_show_plot(run_dir, capsys, tmp_path):
    code, out, err = run_main(["show", run_dir, "--plot", tmp_path / "figures"], capsys)
    assert code == 0, err
    for name in ("loss_shape", "history", "learning_curves"):
        path = tmp_path / "figures" / f"{name}.png"
        assert str(path) in out
        assert path.read_bytes().startswith(PNG)


def test_report_beside_the_run(run_dir, capsys):
    code, out, err = run_main(["report", run_dir], capsys)
    assert code == 0, err
    report = (run_dir / "report.md").read_text()
    assert out.strip() == f"wrote {run_dir / 'report.md'}"
    for heading in ("# symloss run `sine-run`", "## Chosen loss", "## Data", "## Equations",
                    "## Final selection", "## Search history", "## Meta-test", "## Settings"):
        assert heading in report
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report):
        assert (run_dir / image).read_bytes().startswith(PNG)
    loss = symloss.load(run_dir / "best_loss.json")
    assert f"```math\n{loss.latex()}\n```" in report
    hall = json.loads((run_dir / "hall_of_fame.json").read_text())
    equations = report[report.index("## Equations"):report.index("## Final selection")]
    assert len([line for line in equations.splitlines() if line.startswith("| ")]) == \
        len(hall) + 1
    # the local search's guard trained both forms: both fitnesses, the kept one marked
    assert "| plain | refined |" in equations
    trained = [row for row in hall if row["unrefined_fitness"] is not None]
    assert trained and equations.count("(kept)") == len(trained)
    metatest = json.loads((run_dir / "metatest.json").read_text())
    for value in metatest["learned"]["metrics"]:
        assert f"{value:.4f}" in report
    for table in re.findall(r"(?:^\|.*\|\n)+", report, flags=re.MULTILINE):
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in table.splitlines()}
        assert len(widths) == 1, table  # every row has the header's cells


def _selection_section(report: str) -> str:
    return report[report.index("## Final selection"):report.index("## Search history")]


def test_report_shows_the_selection_adam_checks_and_ranking(run_dir, capsys, tmp_path):
    code, _, err = run_main(["report", run_dir, "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    section = _selection_section((tmp_path / "r" / "report.md").read_text())
    rows = json.loads((run_dir / "selection.json").read_text())
    plain = next(row for row in rows if row["expression"] == "square(f - y)"
                 and not row["weights"])
    for row in rows:  # skipped only where SGD already ruled the loss out
        assert len(row["adam_curve"]) == 4 or (
            row["adam_curve"] == [] and row["mean"] > plain["mean"] and not row["eligible"])
    assert "Adam at the checkpoints" in section and "eligible" in section
    table = [line for line in section.splitlines() if line.startswith("| ")][1:]
    assert len(table) == len(rows)
    for line, row in zip(table, rows, strict=True):
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert cells[3] == (", ".join(f"{m:.4f}" for m in row["adam_curve"])
                            or "not run (worse with SGD)")
        assert cells[4] == f"{row['score']:.4f}"
        assert cells[5] == ("yes" if row["eligible"] else "no")


def test_report_of_a_selection_without_adam_runs(run_dir, capsys, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(run_dir, copy)
    rows = json.loads((copy / "selection.json").read_text())
    for row in rows:  # as written before the Adam check existed
        for name in ("adam_metrics", "adam_curve", "score", "eligible"):
            del row[name]
    (copy / "selection.json").write_text(json.dumps(rows))
    code, _, err = run_main(["report", copy], capsys)
    assert code == 0, err
    section = _selection_section((copy / "report.md").read_text())
    assert "Adam" not in section and "the lowest mean validation MSE is chosen" in section


def test_report_elsewhere_stands_alone(run_dir, capsys, tmp_path):
    out_dir = tmp_path / "published"
    code, _, err = run_main(["report", run_dir, "--out", out_dir], capsys)
    assert code == 0, err
    assert (out_dir / "report.md").is_file() and (out_dir / "history.png").is_file()
    copied = symloss.load(out_dir / "best_loss.json")
    code, source, err = run_main(["export", out_dir / "best_loss.json", "--to", "torch"],
                                 capsys)
    assert code == 0, err
    namespace: dict = {}
    exec(source, namespace)  # noqa: S102
    pred, target = torch.randn(8, 1), torch.randn(8, 1)
    assert torch.equal(namespace["loss"](pred, target), copied(pred, target))


def test_report_of_an_unfinished_run(capsys, tmp_path):
    code, _, err = run_main(["report", tmp_path], capsys)
    assert code == 2 and "hall_of_fame.json not found" in err
    code, _, err = run_main(["show", tmp_path, "--plot", tmp_path / "f"], capsys)
    assert code == 2 and "not found" in err


def test_report_of_a_classification_search_without_metatest(tmp_path, blobs):
    from symloss.report import write_report

    search = symloss.SymbolicLossSearch(preset="tiny",
                                        settings={"unroll_steps": 5, "selection_top_k": 0},
                                        random_state=0, verbose=False, run_dir=tmp_path / "run")
    search.fit(blobs, "linear")
    path = write_report(search.run_dir_)
    report = path.read_text()
    assert "- classes: 3; training examples per class: " in report
    counts = RunDirectory(search.run_dir_).load("task.json")["class_counts"]
    assert sum(counts) == len(search.task_.train) and len(counts) == 3
    assert "has no recorded meta-test" in report and "## Final selection" not in report
    assert "softmax" in report
    assert (search.run_dir_ / "loss_shape.png").read_bytes().startswith(PNG)
    assert not (search.run_dir_ / "learning_curves.png").exists()
