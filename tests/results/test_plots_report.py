"""Figures and the `analyze` report on a small real results directory written with write_trial."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from results import load, write_spec, write_trial
from results.plots import (
    choose_trajectory_trials,
    has_adam_and_giadam,
    plot_adam_vs_giadam,
    plot_boundary,
    plot_phase_diagrams,
    plot_trajectories,
    plot_trajectories_by_facet,
)
from results.report import analyze, markdown_table

NUM_STEPS = 30


def _steps(opt: str, eta: float, warmup: int, diverged_at: int | None) -> dict:
    t = np.arange(NUM_STEPS)
    lr = eta * np.minimum(1.0, (t + 1) / warmup)
    loss = np.exp(-t / 10) + 0.05
    if diverged_at is not None:
        loss[diverged_at:] = np.nan
        loss[diverged_at - 1] = 1e4
    sharp = np.where(t % 5 == 0, 8.0 + t / 5, np.nan)
    columns = {"step": t, "lr": lr, "train_loss": loss, "train_accuracy": 1 - loss / 2}
    if opt == "sgd":
        columns |= {"sharpness": sharp, "threshold": 2.0 / lr}
    else:
        columns |= {"preconditioned_sharpness": sharp * 10, "threshold": 38.0 / lr}
    return columns


def make_sweep(root, sweep: str = "demo") -> list[dict]:
    """Twelve SGD trials (warmup x relative eta) plus an Adam / GI-Adam pair; known statuses."""
    written = []
    statuses = {
        # (warmup, eta x lambda0): status
        (1, 1.0): "completed",
        (1, 2.0): "completed",
        (1, 4.0): "diverged",
        (1, 8.0): "diverged",
        (4, 1.0): "completed",
        (4, 2.0): "stuck",
        (4, 4.0): "completed",
        (4, 8.0): "diverged",
        (16, 1.0): "error",
        (16, 2.0): "completed",
        (16, 4.0): "completed",
        (16, 8.0): "completed",
    }
    lambda0 = 20.0
    cases = [("sgd", w, rel, s) for (w, rel), s in statuses.items()]
    cases += [("adam", 1, 1e-3, "diverged"), ("gi-adam", 1, 1e-3, "completed")]
    for i, (opt, warmup, eta, status) in enumerate(cases):
        relative = opt == "sgd"
        eta_abs = eta / lambda0 if relative else eta
        diverged_at = 12 if status == "diverged" else None
        summary = {
            "trial_id": f"trial-{i:02d}",
            "status": status,
            "diverged_step": diverged_at,
            "error": "RuntimeError: injected" if status == "error" else None,
            "model": "fcn",
            "dataset": "digits",
            "loss": "mse",
            "parameterization": "sp",
            "init_scale": 1.0,
            "optimizer": opt,
            "eta_trgt": eta_abs,
            "eta_trgt_relative": eta if relative else None,
            "eta_init": 0.0,
            "eta_init_mode": "zero",
            "warmup_steps": warmup,
            "warmup_shape": "linear",
            "schedule": "constant",
            "num_steps": NUM_STEPS,
            "batch_size": 64,
            "init_seed": 0,
            "data_seed": 0,
            "lambda0": lambda0,
            "eta_c": 0.1,
            "final_train_loss": None if status in ("diverged", "error") else 0.1 + 0.01 * i,
            "final_test_loss": None if status in ("diverged", "error") else 0.2 + 0.01 * i,
            "final_test_accuracy": None if status in ("diverged", "error") else 0.9 - 0.01 * i,
            "wall_time_s": 1.5,
            "device": "cpu",
            "node": "local",
            "package_version": "0.1.0",
            "model_width": 64,
        }
        steps = {"step": []} if status == "error" else _steps(opt, eta_abs, warmup, diverged_at)
        write_trial(root, sweep, summary, steps)
        written.append(summary)
    write_spec(root, sweep, f"name: {sweep}\n")
    return written


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
    assert [t.get_text() for t in sgd.get_xticklabels()] == [
        "0",
        "1",
        "2",
        "3",
    ]  # log2 of 1, 2, 4, 8
    assert sum(t.get_text() == "×" for t in sgd.texts) == 3  # three diverged cells
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("diverged" in s for s in legend) and any("boundary" in s for s in legend)
    assert any("final_test_loss" in ax.get_ylabel() for ax in fig.axes)  # the colorbar


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
    assert [ax.get_title() for ax in fig.axes[:3]] == [
        "optimizer=adam",
        "optimizer=gi-adam",
        "optimizer=sgd",
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
    # Boundary of the SGD facet (relative etas): warmup 1 -> 2 (first diverged 4),
    # warmup 4 -> 4 (first diverged 8), warmup 16 -> 8 (none diverged).
    sgd_rows = [line for line in summary.splitlines() if line.startswith("| sp | sgd |")]
    boundary_rows = [r for r in sgd_rows if "eta_trgt_relative" in r][:3]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in boundary_rows]
    assert [(c[3], c[5], c[6]) for c in cells] == [
        ("1", "2", "4"),
        ("4", "4", "8"),
        ("16", "8", "–"),
    ]
    assert "## Regimes" in summary and "sharpening" in summary


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
    write_trial(tmp_path / "res", "demo", adaptive, _steps("sgd", adaptive["eta_trgt"], 1, None))
    analyze(tmp_path / "res" / "demo", tmp_path / "out")
    summary = (tmp_path / "out" / "summary.md").read_text()
    header = next(line for line in summary.splitlines() if "max_trainable_eta" in line)
    assert "warmup_shape" in header
    assert "| adaptive |" in summary and "| linear |" in summary
