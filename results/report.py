"""`analyze`: load a sweep (finished or not), write its figures and a markdown summary.

This is what `warmup-sweep analyze DIR [--out DIR]` runs. It never needs the sweep to
be complete: missing cells show as missing, unreadable files are listed, and a
figure that has nothing to show is skipped with the reason in the summary.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from results.analysis import (
    DEFAULT_FACETS,
    best_configs,
    divergence_boundary,
    regime_map,
)
from results.loading import load
from results.plots import (
    has_adam_and_giadam,
    plot_adam_vs_giadam,
    plot_boundary,
    plot_phase_diagrams,
    plot_trajectories,
    plot_trajectories_by_facet,
    trajectory_facets,
)
from results.schema import STATUSES

# Facets added when they take more than one value in the sweep.
VARYING_FACETS = ("eta_init_mode", "warmup_shape")
METRIC_PREFERENCE = ("final_test_loss", "final_train_loss", "final_test_accuracy")


@dataclass
class AnalysisReport:
    """What `analyze` found and wrote; `paths[0]` is the main figure (or the summary if none)."""

    out_dir: str
    paths: list[str]
    summary_path: str
    n_trials: int
    status_counts: dict[str, int]
    unreadable: list[tuple[str, str]]
    expected_trials: int | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # figure name -> why not drawn


def analyze(
    results_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    progress: Callable[[str], None] | None = None,
    metric: str | None = None,
    facets: Sequence[str] = DEFAULT_FACETS,
    expected_trials: int | None = None,
) -> AnalysisReport:
    """Write phase_diagram, boundary, trajectories(_by_facet), adam_vs_giadam PNGs and summary.md.

    `results_dir` is a sweep directory or a results root holding several sweeps (local
    path or URI); `out_dir` is a local directory, created if needed. `metric` defaults
    to the first of final_test_loss, final_train_loss, final_test_accuracy with data.
    `expected_trials` (the planned count, when the caller knows it) lets the summary
    say how complete the sweep is.
    """
    say = progress or (lambda message: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    say(f"loading {os.fspath(results_dir)}")
    with warnings.catch_warnings():
        # Unreadable files are reported through `progress` and the summary instead.
        warnings.simplefilter("ignore")
        loaded = load(results_dir)
    trials, steps = loaded
    for path, reason in loaded.unreadable:
        say(f"unreadable: {path} ({reason})")
    status_counts = {s: int((trials["status"] == s).sum()) for s in STATUSES}
    expected = expected_trials
    say(f"{len(trials)} trials, {len(steps)} step rows")

    facets = [f for f in facets if f in trials.columns]
    for extra in VARYING_FACETS:
        # A swept warmup start (eta_init 0 vs catapult) or shape (linear vs adaptive) must not
        # pool into one cell as seeds.
        if extra not in facets and extra in trials.columns and trials[extra].nunique() > 1:
            facets.append(extra)
    metric = metric or _pick_metric(trials)
    figures: dict[str, str] = {}
    skipped: dict[str, str] = {}

    def figure(name: str, draw: Callable[[Path], Any]) -> None:
        path = out / f"{name}.png"
        try:
            draw(path)
        except ValueError as exc:  # nothing to draw yet: say so, keep going
            skipped[name] = str(exc)
            say(f"skipped {name}.png: {exc}")
            return
        figures[name] = str(path)
        say(f"wrote {path}")

    boundary = pd.DataFrame()
    if len(trials):
        figure("phase_diagram", lambda p: plot_phase_diagrams(trials, metric, facets, path=p))
        figure("boundary", lambda p: plot_boundary(trials, facets, path=p))
        if len(steps):
            figure("trajectories", lambda p: plot_trajectories(trials, steps, path=p))
            if len(trajectory_facets(trials, steps, facets)) >= 2:
                figure(
                    "trajectories_by_facet",
                    lambda p: plot_trajectories_by_facet(trials, steps, facets, path=p),
                )
        else:
            skipped["trajectories"] = "no step rows"
        if has_adam_and_giadam(trials):
            figure("adam_vs_giadam", lambda p: plot_adam_vs_giadam(trials, steps, path=p))
        boundary = divergence_boundary(trials, facets)
    else:
        skipped["all figures"] = "no readable trials"

    regimes = _regimes(trials, steps, skipped)
    summary_path = out / "summary.md"
    summary_path.write_text(
        _summary(
            os.fspath(results_dir),
            trials,
            steps,
            loaded.unreadable,
            status_counts,
            expected,
            metric,
            facets,
            boundary,
            regimes,
            figures,
            skipped,
        ),
        encoding="utf-8",
    )
    say(f"wrote {summary_path}")
    paths = [*figures.values(), str(summary_path)]
    return AnalysisReport(
        out_dir=str(out),
        paths=paths,
        summary_path=str(summary_path),
        n_trials=len(trials),
        status_counts=status_counts,
        unreadable=list(loaded.unreadable),
        expected_trials=expected,
        skipped=skipped,
    )


def _pick_metric(trials: pd.DataFrame) -> str:
    for name in METRIC_PREFERENCE:
        if name in trials.columns and trials[name].notna().any():
            return name
    return METRIC_PREFERENCE[0]


def _regimes(trials: pd.DataFrame, steps: pd.DataFrame, skipped: dict[str, str]) -> pd.DataFrame:
    if trials.empty or steps.empty:
        return pd.DataFrame()
    try:
        return regime_map(trials, steps)
    except ImportError as exc:  # warmup_core needs torch; the rest of the report does not
        skipped["regimes"] = f"warmup_core.stability unavailable: {exc}"
        return pd.DataFrame()


# --------------------------------------------------------------------------- markdown


def _cell(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value).replace("|", "\\|")


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of `df` (floats to 4 significant digits)."""
    if df.empty:
        return "_(none)_\n"
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def _summary(
    source: str,
    trials: pd.DataFrame,
    steps: pd.DataFrame,
    unreadable: list[tuple[str, str]],
    status_counts: dict[str, int],
    expected: int | None,
    metric: str,
    facets: list[str],
    boundary: pd.DataFrame,
    regimes: pd.DataFrame,
    figures: dict[str, str],
    skipped: dict[str, str],
) -> str:
    lines = ["# Sweep analysis", "", f"Source: `{source}`", ""]

    lines += ["## Completeness", ""]
    found = f"{len(trials)} trials found"
    if expected is not None:
        found += f" of {expected} expected ({100 * len(trials) / max(expected, 1):.1f}%)"
    lines += [found + ".", ""]
    lines.append(markdown_table(pd.DataFrame([status_counts])))
    if "sweep" in trials.columns and trials["sweep"].nunique() > 1:
        per_sweep = (
            trials.groupby("sweep", observed=True)["status"].value_counts().unstack(fill_value=0)
        )
        lines.append(markdown_table(per_sweep.reset_index()))
    with_steps = trials["trial_id"].astype(str).isin(set(steps["trial_id"].astype(str))).sum()
    lines += [f"Trials with step rows: {with_steps}.", ""]
    if unreadable:
        lines += [
            f"**Unreadable files ({len(unreadable)})**, skipped (still being written, or truncated):",
            "",
        ]
        lines += [f"- `{path}`: {reason}" for path, reason in unreadable]
        lines.append("")
    else:
        lines += ["No unreadable files.", ""]

    lines += [
        "## Divergence boundary",
        "",
        "Largest trainable eta (did not diverge; stuck counts as trainable) per warmup length, "
        "and the smallest diverged eta above it. `eta` columns are in the units of `eta_column` "
        "(`eta_trgt_relative` = multiples of 1/lambda0); `eta_trgt` columns are absolute.",
        "",
    ]
    if not boundary.empty:
        keep = [
            *facets,
            "warmup_steps",
            "eta_column",
            "max_trainable_eta",
            "min_diverged_eta",
            "max_trainable_eta_trgt",
            "max_trainable_x_lambda0",
            "max_trainable_over_eta_c",
            "non_monotone",
        ]
        lines.append(markdown_table(boundary[keep]))
    else:
        lines.append(markdown_table(boundary))

    lines += [
        f"## Best configuration per facet ({metric}, seed mean over cells with no diverged or stuck seed)",
        "",
    ]
    best = best_configs(trials, metric, facets) if len(trials) else pd.DataFrame()
    lines.append(markdown_table(best))

    lines += ["## Regimes", ""]
    if regimes.empty:
        lines.append("_(no step data with sharpness)_\n")
    else:
        lines += [
            "Early-training sharpness regime per trial (sharpness for SGD, pre-conditioned "
            "sharpness for Adam-family), and trials with at least one loss catapult.",
            "",
        ]
        keys = [f for f in facets if f in regimes.columns]
        counts = regimes.astype({k: object for k in keys}).groupby([*keys, "regime"], dropna=False)
        table = counts.agg(trials=("trial_id", "size"), with_catapult=("catapult", "sum"))
        lines.append(markdown_table(table.reset_index()))

    lines += ["## Figures", ""]
    lines += [f"- [{name}.png]({Path(path).name})" for name, path in figures.items()]
    lines += [f"- {name}: not drawn ({reason})" for name, reason in skipped.items()]
    lines.append("")
    return "\n".join(lines)
