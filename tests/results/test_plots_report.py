"""Figures and the `analyze` report on a small real results directory written with write_trial."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from results import load, write_trial
from results.plots import plot_boundary, plot_phase_diagrams
from results.report import analyze, markdown_table, result_sentence
from results.trajectory_plots import (
    choose_trajectory_trials,
    has_adam_and_giadam,
    plot_adam_vs_giadam,
    plot_trajectories,
    plot_trajectories_by_facet,
)
from tests.results.demo_sweep import make_sweep, steps_of


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    make_sweep(root)
    return root / "demo"


def test_each_plot_returns_a_figure_and_saves_png(sweep, tmp_path):
    trials, steps = load(sweep)
    sgd = trials[trials["optimizer"] == "sgd"]
    figures = {
        "phase": plot_phase_diagrams(trials, path=tmp_path / "phase.png"),
        "boundary": plot_boundary(sgd, path=tmp_path / "boundary.png"),
        "traj": plot_trajectories(trials, steps, path=tmp_path / "traj.png"),
        "adam": plot_adam_vs_giadam(trials, steps, path=tmp_path / "adam.png"),
    }
    for name, fig in figures.items():
        assert isinstance(fig, Figure), name
    for name in ("phase", "boundary", "traj", "adam"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000, name


def test_phase_diagram_has_a_panel_per_facet_with_labelled_axes(sweep):
    trials, _ = load(sweep)
    fig = plot_phase_diagrams(trials, facets=("optimizer",))
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert sorted(ax.get_title() for ax in panels) == [
        "optimizer=adam",
        "optimizer=gi-adam",
        "optimizer=sgd",
    ]
    sgd = next(ax for ax in panels if ax.get_title() == "optimizer=sgd")
    assert "lambda_0" in sgd.get_xlabel()
    assert [t.get_text() for t in sgd.get_yticklabels()] == ["1", "4", "16"]
    assert [t.get_text() for t in sgd.get_xticklabels()] == ["1", "2", "4", "8"]  # the grid
    assert sum(t.get_text() == "×" for t in sgd.texts) == 3  # three diverged cells
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("diverged" in s for s in legend) and any("boundary" in s for s in legend)
    assert any("final test loss" in ax.get_ylabel() for ax in fig.axes)  # the colorbar, in words


def test_trajectory_choice_compares_warmups_at_one_eta(sweep):
    trials, steps = load(sweep)
    chosen = trials.set_index("trial_id").loc[choose_trajectory_trials(trials, steps)]
    assert set(chosen["optimizer"].astype(str)) == {"sgd"}
    assert chosen["eta_trgt_relative"].nunique() == 1
    assert chosen["warmup_steps"].nunique() == len(chosen) >= 2
    with pytest.raises(KeyError, match="nope"):
        plot_trajectories(trials, steps, ["nope"])


def test_trajectories_by_facet_draws_a_column_per_facet(sweep, tmp_path):
    trials, steps = load(sweep)
    fig = plot_trajectories_by_facet(trials, steps, path=tmp_path / "by_facet.png")
    # Facets with step rows: sgd, adam, gi-adam (optimizer varies); loss and sharpness rows.
    assert len(fig.axes) == 2 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == [  # panel order: SGD first
        "optimizer=sgd",
        "optimizer=adam",
        "optimizer=gi-adam",
    ]
    assert (tmp_path / "by_facet.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="two facets"):
        plot_trajectories_by_facet(trials[trials["optimizer"] == "sgd"], steps)


def test_adam_vs_giadam_needs_both(sweep):
    trials, steps = load(sweep)
    assert has_adam_and_giadam(trials)
    sgd_only = trials[trials["optimizer"] == "sgd"]
    assert not has_adam_and_giadam(sgd_only)
    with pytest.raises(ValueError, match="gi-adam"):
        plot_adam_vs_giadam(sgd_only, steps)


def test_analyze_partial_sweep_with_truncated_file(sweep, tmp_path):
    # A killed writer left a truncated summary behind.
    good = (sweep / "trials" / "trial-00.parquet").read_bytes()
    (sweep / "trials" / "zz-killed.parquet").write_bytes(good[:200])
    messages: list[str] = []
    try:
        report = analyze(sweep, tmp_path / "out", progress=messages.append, expected_trials=15)
    finally:
        (sweep / "trials" / "zz-killed.parquet").unlink()

    names = ["phase_diagram.png", "boundary.png", "trajectories.png", "adam_vs_giadam.png"]
    assert report.paths[0].endswith("phase_diagram.png")
    for name in names:
        path = tmp_path / "out" / name
        assert str(path) in report.paths
        assert path.stat().st_size > 10_000, name
    assert report.n_trials == 14
    assert report.status_counts == {
        "completed": 8,
        "diverged": 4,
        "stuck": 1,
        "stopped": 0,
        "error": 1,
    }
    assert report.expected_trials == 15
    assert [p.endswith("zz-killed.parquet") for p, _ in report.unreadable] == [True]
    assert any("zz-killed.parquet" in m for m in messages)

    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "14 trials found of 15 expected" in summary
    assert "zz-killed.parquet" in summary
    # Boundary of the SGD facet (relative etas): warmup 1 -> 2 (first failed 4),
    # warmup 4 -> 4 (stuck at 2 below it; first failed 8), warmup 16 -> at least 8,
    # the top of the grid (nothing failed).
    rows = _markdown_rows(summary, "## Divergence boundary")
    sgd = [r for r in rows if r["optimizer"] == "sgd"]
    assert [(r["warmup_steps"], r["largest_trainable"], r["min_failed_eta"]) for r in sgd] == [
        ("1", "2", "4"),
        ("4", "4", "8"),
        ("16", "≥ 8", "–"),
    ]
    assert "## Regimes" in summary and "sharpening" in summary


def _markdown_rows(text: str, section: str) -> list[dict[str, str]]:
    """The rows of the first markdown table after the heading `section`, by column name."""
    lines = text.split(section, 1)[1].splitlines()
    table = [line for line in lines if line.startswith("|")]
    end = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    table = [line for line in lines[:end] if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    return [dict(zip(cells[0], row, strict=True)) for row in cells[2:]]


def test_analyze_empty_sweep_writes_summary_only(tmp_path):
    (tmp_path / "res" / "empty" / "trials").mkdir(parents=True)
    report = analyze(tmp_path / "res" / "empty", tmp_path / "out")
    assert report.n_trials == 0
    assert report.paths == [str(tmp_path / "out" / "summary.md")]
    assert "0 trials found" in (tmp_path / "out" / "summary.md").read_text()


def test_markdown_table_formats_numbers_and_missing():
    import pandas as pd

    text = markdown_table(pd.DataFrame({"a": [1.23456789, np.nan], "b": ["x|y", None]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1.235 | x\\|y |", "| – | – |"]


def test_a_swept_warmup_shape_is_a_facet_not_a_seed(tmp_path):
    written = make_sweep(tmp_path / "res")
    # The same grid point once more, with adaptive warmup: it must get its own cell.
    adaptive = {**written[0], "trial_id": "trial-adaptive", "warmup_shape": "adaptive"}
    write_trial(tmp_path / "res", "demo", adaptive, steps_of("sgd", adaptive["eta_trgt"], 1, None))
    analyze(tmp_path / "res" / "demo", tmp_path / "out")
    summary = (tmp_path / "out" / "summary.md").read_text()
    header = next(line for line in summary.splitlines() if "max_trainable_eta" in line)
    assert "warmup_shape" in header
    assert "| adaptive |" in summary and "| linear |" in summary


# --------------------------------------------------------------------------- honest figures


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_a_boundary_at_the_top_of_the_grid_is_drawn_and_written_as_a_lower_bound(sweep, tmp_path):
    trials, _ = load(sweep)
    sgd = trials[trials["optimizer"] == "sgd"]
    fig = plot_boundary(sgd, facets=("optimizer",))
    ax = fig.axes[0]
    # warmup 16: nothing failed up to 8, the grid's top -> "≥ 8" with an arrow up.
    assert "≥ 8" in _texts(ax)
    arrows = [c for c in ax.get_children() if type(c).__name__ == "Annotation" and c.arrow_patch]
    assert len(arrows) == 1
    # x ticks at the warmup lengths themselves, y ticks at the grid's etas.
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4", "16"]
    assert {"2", "4", "8"} <= {t.get_text() for t in ax.get_yticklabels()}
    analyze(sweep, tmp_path / "out")
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| 16 | eta_trgt_relative | ≥ 8 |" in summary


def test_a_boundary_below_the_grid_is_written_as_less_than_its_lowest_eta(tmp_path):
    written = make_sweep(tmp_path / "res")
    failing = [
        {**row, "trial_id": f"low-{i}", "status": "diverged", "warmup_steps": 2}
        for i, row in enumerate(written[:4])  # warmup 2: etas 1, 2, 4, 8 all diverged
    ]
    for row in failing:
        write_trial(tmp_path / "res", "demo", row, {"step": [0], "train_loss": [float("nan")]})
    trials, _ = load(tmp_path / "res" / "demo")
    fig = plot_boundary(trials[trials["optimizer"] == "sgd"], facets=("optimizer",))
    assert "< 1" in _texts(fig.axes[0])


def test_every_uncertainty_bar_is_drawn_even_for_one_warmup(sweep):
    trials, _ = load(sweep)
    # warmup 1 only: one point with a bar from 2 (largest trainable) to 4 (first failed).
    one = trials[(trials["optimizer"] == "sgd") & (trials["warmup_steps"] == 1)]
    ax = plot_boundary(one, facets=("optimizer",)).axes[0]
    segments = [seg for c in ax.collections for seg in c.get_segments()]
    assert len(segments) == 1
    (x0, y0), (x1, y1) = segments[0]
    assert (x0, x1, y0, y1) == (1.0, 1.0, 2.0, 4.0)


def test_panels_put_sp_before_mup_and_name_every_trajectory_facet(tmp_path):
    make_sweep(tmp_path / "res", parameterization="mup", prefix="mup")
    make_sweep(tmp_path / "res", parameterization="sp", prefix="sp")
    trials, steps = load(tmp_path / "res" / "demo")
    sgd = trials[trials["optimizer"] == "sgd"]
    phase = plot_phase_diagrams(sgd, facets=("parameterization",))
    titles = [ax.get_title() for ax in phase.axes if ax.get_title()]
    assert titles == ["parameterization=sp", "parameterization=mup"]
    by_facet = plot_trajectories_by_facet(sgd, steps, facets=("parameterization",))
    assert [ax.get_title() for ax in by_facet.axes[:2]] == titles
    single = plot_trajectories(sgd[sgd["parameterization"] == "mup"], steps)
    assert "parameterization=mup" in single.get_suptitle()  # the facet shown, named


def test_failed_cells_take_colours_viridis_never_takes(sweep):
    from matplotlib import colormaps
    from matplotlib.colors import to_rgb

    from results.figure_style import DIVERGED_COLOR, STUCK_COLOR

    viridis = colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]
    for color in (DIVERGED_COLOR, STUCK_COLOR):
        distance = np.linalg.norm(viridis - np.array(to_rgb(color)), axis=1).min()
        assert distance > 0.3, color
    trials, _ = load(sweep)
    fig = plot_phase_diagrams(trials[trials["optimizer"] == "sgd"], facets=("optimizer",))
    faces = [p.get_facecolor()[:3] for p in fig.axes[0].patches]
    assert sum(np.allclose(f, to_rgb(DIVERGED_COLOR)) for f in faces) == 3  # three diverged
    assert sum(np.allclose(f, to_rgb(STUCK_COLOR)) for f in faces) == 1  # one stuck
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "diverged (any seed)" in legend and "stuck (did not learn)" in legend


def test_colour_bar_ticks_are_round_numbers(sweep):
    trials, _ = load(sweep)
    for metric in ("final_test_loss", "final_test_accuracy"):
        fig = plot_phase_diagrams(trials, metric, facets=("optimizer",))
        colorbar = fig.axes[-1]
        ticks = [float(t.get_text()) for t in colorbar.get_yticklabels() if t.get_text()]
        assert len(ticks) >= 2, metric
        for value in ticks:  # at most two significant digits: 0.05, 0.25, 0.9
            assert float(f"{value:.2g}") == value, (metric, ticks)


def test_the_summary_and_the_report_open_with_one_sentence(sweep, tmp_path):
    report = analyze(sweep, tmp_path / "out", facets=("optimizer",))
    # SGD: warmup 1 -> 2 (4 failed); warmup 16 -> at least 8 (nothing failed up to the top).
    # Adam and GI-Adam ran one warmup length each.
    assert report.headline == (
        "Warmup (T_wrm 1 → 16) raised the largest trainable eta_trgt x lambda0 from 2 to "
        "≥ 8 for optimizer=sgd; the largest trainable eta_trgt is < 0.001 at T_wrm 1 (one "
        "warmup length) for optimizer=adam; the largest trainable eta_trgt is ≥ 0.001 at "
        "T_wrm 1 (one warmup length) for optimizer=gi-adam (≥: nothing failed up to the top "
        "of the grid; <: nothing trainable down to the bottom of the grid)."
    )
    lines = (tmp_path / "out" / "summary.md").read_text().splitlines()
    assert lines[2] == f"**Result:** {report.headline}"


def test_result_sentence_says_raised_left_or_moved():
    def rows(facet: str, *cells: tuple[int, float, float, str]) -> list[dict]:
        return [
            {
                "parameterization": facet,
                "warmup_steps": w,
                "eta_column": "eta_trgt_relative",
                "max_trainable_eta": lo,
                "min_failed_eta": hi,
                "censored": censored,
            }
            for w, lo, hi, censored in cells
        ]

    nan = float("nan")
    boundary = pd.DataFrame(
        rows("sp", (1, 8, 16, "no"), (64, 32, nan, "above"))
        + rows("mup", (1, 2, 4, "no"), (64, 2, 4, "no"))
    )
    assert result_sentence(boundary, ["parameterization"]) == (
        "Warmup (T_wrm 1 → 64) raised the largest trainable eta_trgt x lambda0 from 8 to "
        "≥ 32 for parameterization=sp and left it at 2 for parameterization=mup "
        "(≥: nothing failed up to the top of the grid)."
    )
    # A lower bound that does not clear the first failure says only "moved".
    moved = pd.DataFrame(rows("sp", (1, 8, 16, "no"), (64, 8, nan, "above")))
    assert "moved the largest trainable" in result_sentence(moved, ["parameterization"])
    lowered = pd.DataFrame(rows("sp", (1, 8, 16, "no"), (64, 2, 4, "no")))
    assert "lowered the largest trainable eta_trgt x lambda0 from 8 to 2" in result_sentence(
        lowered, ["parameterization"]
    )
    assert "no divergence boundary" in result_sentence(boundary.iloc[:0], ["parameterization"])


def test_analyze_a_results_root_whose_sweeps_share_trial_ids(tmp_path):
    make_sweep(tmp_path / "res", "first")
    make_sweep(tmp_path / "res", "second")  # the same trial ids, as reruns of one grid give
    report = analyze(tmp_path / "res", tmp_path / "out")
    assert "trajectories" in {Path(p).stem for p in report.paths}, report.skipped
    assert "adam_vs_giadam" in {Path(p).stem for p in report.paths}, report.skipped
    assert report.skipped == {}
    assert report.n_trials == 28
