"""`warmup-sweep reference` and `warmup-sweep analyze --reference/--metric/--stuck-trainable`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from results import load
from results.figure_style import ETA_VALUE_LABEL
from results.plots import plot_boundary
from results.reference import read_reference
from sweeps.cli import main
from tests.results.demo_sweep import make_sweep

FIXTURES = Path(__file__).parent / "fixtures" / "why-warmup"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    make_sweep(root)
    return root / "demo"


def test_reference_json_lists_the_papers_largest_trainable_rates(capsys):
    assert main(["reference", str(FIXTURES), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    got = {(r["optimizer"], r["warmup_steps"]): r["max_trainable_eta"] for r in records}
    # Read by hand from the official tables.
    assert got == pytest.approx(
        {
            ("adam", 1): 0.02048,
            ("adam", 1024): 0.08192,
            ("gi-adam", 1): 0.08192,
            ("gi-adam", 1024): 0.08192,
            ("radam", 1): 0.02048,
            ("radam", 1024): 0.04096,
            ("sgd", 1): 32 / 2.578415870666504,
        }
    )
    sgd = next(r for r in records if r["optimizer"] == "sgd")
    assert (sgd["parameterization"], sgd["max_trainable_eta_relative"]) == ("mup", 32.0)
    assert (
        next(r for r in records if r["optimizer"] == "adam")["max_trainable_eta_relative"] is None
    )


def test_reference_prints_a_table(capsys):
    assert main(["reference", str(FIXTURES)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "stuck counts as failed" in out[0]
    rows = [line.split() for line in out[2:]]
    assert rows[2] == ["gi-adam", "sp", "1", "0.08192", "0.16384", "0.838805"]
    assert rows[-1][:6] == ["sgd", "mup", "1", "12.4107", "(32/lambda0)", "24.8214"]
    assert main(["reference", str(FIXTURES), "--stuck-trainable"]) == 0
    assert "≥ 0.04096" in capsys.readouterr().out  # Adam at T_wrm 1: its stuck run counts


def test_reference_refuses_a_path_without_tables(tmp_path, capsys):
    assert main(["reference", str(tmp_path / "absent")]) == 2
    assert main(["reference", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("warmup-sweep: error:") for line in err)


def test_analyze_draws_the_papers_boundary_beside_the_sweeps(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["analyze", str(sweep), "--out", str(out), "--reference", str(FIXTURES)]
    assert main([*argv, "--metric", "test_accuracy"]) == 0
    captured = capsys.readouterr()
    for name in ("phase_diagram", "boundary", "reference_phase_diagram", "trajectories"):
        path = out / f"{name}.png"
        assert path.stat().st_size > 10_000, name
        assert (captured.out + captured.err).count(str(path)) == 1, name  # printed once
    summary = (out / "summary.md").read_text()
    assert captured.out.strip() == summary.splitlines()[2].removeprefix("**Result:** ")
    assert "## The paper's boundary" in summary
    assert "final_test_accuracy" in summary.split("## Best configuration")[1].splitlines()[0]
    paper_rows = summary.split("## The paper's boundary")[1].split("##")[0]
    # The sweep has SGD, Adam and GI-Adam: the paper's runs of those optimizers.
    assert "| adam | sp | 1 | 0.02048 | 0.04096 | 0.876 |" in paper_rows
    assert "| sgd | mup | 1 | 12.41 |" in paper_rows
    assert "radam" not in paper_rows


def test_analyze_boundary_figure_holds_the_papers_lines(sweep):
    trials, _ = load(sweep)
    paper = read_reference(FIXTURES).trials
    fig = plot_boundary(trials, ("optimizer",), reference=paper, metric="final_test_accuracy")
    absolute = next(ax for ax in fig.axes if ax.get_ylabel() == ETA_VALUE_LABEL["eta_trgt"])
    lines = {line.get_label(): line for line in absolute.get_lines()}
    adam = lines["paper: sp adam"]
    assert list(adam.get_xdata()) == [1, 1024]
    assert list(adam.get_ydata()) == pytest.approx([0.02048, 0.08192])
    assert adam.get_linestyle() == "--"
    metric_panel = fig.axes[-1]
    paper_adam = next(x for x in metric_panel.get_lines() if x.get_label() == "paper: sp adam")
    # The fixtures' only trainable Adam runs are the largest trainable ones.
    assert list(paper_adam.get_ydata()) == pytest.approx([0.876, 0.847], abs=5e-4)


def test_analyze_refuses_an_unknown_metric_or_reference(sweep, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["analyze", str(sweep), "--out", out, "--metric", "nope"]) == 2
    assert main(["analyze", str(sweep), "--out", out, "--reference", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "metric 'nope'" in err and "no official result tables" in err
    assert not (tmp_path / "out").exists()  # refused before writing anything


def test_analyze_stuck_trainable_keeps_the_older_reading(sweep, tmp_path, capsys):
    assert main(["analyze", str(sweep), "--out", str(tmp_path / "a"), "--stuck-trainable"]) == 0
    summary = (tmp_path / "a" / "summary.md").read_text()
    assert "stuck counts as trainable" in summary
    assert main(["analyze", str(sweep), "--out", str(tmp_path / "b")]) == 0
    assert "stuck counts as failed" in (tmp_path / "b" / "summary.md").read_text()
