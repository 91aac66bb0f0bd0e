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
from results.loading import Loaded, load
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

__all__ = ["AnalysisReport", "analyze", "markdown_table"]

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


@dataclass
class _Findings:
    """One analysis as the summary reports it: the sweep as loaded, the choices made,
    and what was computed and drawn."""

    source: str  # the sweep directory or results root, as given
    loaded: Loaded
    expected: int | None  # planned trial count, when the caller knows it
    metric: str
    facets: list[str]
    boundary: pd.DataFrame = field(default_factory=pd.DataFrame)
    regimes: pd.DataFrame = field(default_factory=pd.DataFrame)
    figures: dict[str, str] = field(default_factory=dict)  # figure name -> PNG path
    skipped: dict[str, str] = field(default_factory=dict)  # figure name -> why not drawn

    @property
    def trials(self) -> pd.DataFrame:
        """The loaded trials table."""
        return self.loaded.trials

    @property
    def steps(self) -> pd.DataFrame:
        """The loaded steps table."""
        return self.loaded.steps

    @property
    def status_counts(self) -> dict[str, int]:
        """Trials per status, every status listed."""
        return {s: int((self.trials["status"] == s).sum()) for s in STATUSES}


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

    Args:
        results_dir: a sweep directory or a results root holding several sweeps
            (local path or URI).
        out_dir: local directory for the figures and summary.md, created if needed.
        progress: called with a line of text at each step (loading, each file written
            or skipped, each unreadable file).
        metric: trials column the phase diagrams and best configurations show;
            default the first of final_test_loss, final_train_loss,
            final_test_accuracy with data.
        facets: trials columns that split the sweep into panels; those absent are
            dropped, and `VARYING_FACETS` that take more than one value are added.
        expected_trials: the planned trial count, when the caller knows it, so the
            summary can say how complete the sweep is.
    """
    say = progress or (lambda message: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = _load(results_dir, say)
    findings = _Findings(
        source=os.fspath(results_dir),
        loaded=loaded,
        expected=expected_trials,
        metric=metric or _pick_metric(loaded.trials),
        facets=_facets(loaded.trials, facets),
    )
    _draw_figures(findings, out, say)
    findings.regimes = _regimes(findings.trials, findings.steps, findings.skipped)
    summary_path = out / "summary.md"
    summary_path.write_text(_summary(findings), encoding="utf-8")
    say(f"wrote {summary_path}")
    return AnalysisReport(
        out_dir=str(out),
        paths=[*findings.figures.values(), str(summary_path)],
        summary_path=str(summary_path),
        n_trials=len(findings.trials),
        status_counts=findings.status_counts,
        unreadable=list(loaded.unreadable),
        expected_trials=expected_trials,
        skipped=findings.skipped,
    )


def _load(results_dir: str | os.PathLike, say: Callable[[str], None]) -> Loaded:
    say(f"loading {os.fspath(results_dir)}")
    with warnings.catch_warnings():
        # Unreadable files are reported through `progress` and the summary instead.
        warnings.simplefilter("ignore")
        loaded = load(results_dir)
    for path, reason in loaded.unreadable:
        say(f"unreadable: {path} ({reason})")
    say(f"{len(loaded.trials)} trials, {len(loaded.steps)} step rows")
    return loaded


def _facets(trials: pd.DataFrame, facets: Sequence[str]) -> list[str]:
    """The asked facets present in `trials`, plus each of `VARYING_FACETS` that varies."""
    chosen = [f for f in facets if f in trials.columns]
    for extra in VARYING_FACETS:
        # A swept warmup start (eta_init 0 vs catapult) or shape (linear vs adaptive) must not
        # pool into one cell as seeds.
        if extra not in chosen and extra in trials.columns and trials[extra].nunique() > 1:
            chosen.append(extra)
    return chosen


def _draw_figures(findings: _Findings, out: Path, say: Callable[[str], None]) -> None:
    """Draw every figure the sweep has data for into `out`; record each in `findings.figures`,
    or in `findings.skipped` with the reason; compute `findings.boundary`."""
    trials, steps, facets = findings.trials, findings.steps, findings.facets

    def figure(name: str, draw: Callable[[Path], Any]) -> None:
        path = out / f"{name}.png"
        try:
            draw(path)
        except ValueError as exc:  # nothing to draw yet: say so, keep going
            findings.skipped[name] = str(exc)
            say(f"skipped {name}.png: {exc}")
            return
        findings.figures[name] = str(path)
        say(f"wrote {path}")

    if not len(trials):
        findings.skipped["all figures"] = "no readable trials"
        return
    figure("phase_diagram", lambda p: plot_phase_diagrams(trials, findings.metric, facets, path=p))
    figure("boundary", lambda p: plot_boundary(trials, facets, path=p))
    if len(steps):
        figure("trajectories", lambda p: plot_trajectories(trials, steps, path=p))
        if len(trajectory_facets(trials, steps, facets)) >= 2:
            figure(
                "trajectories_by_facet",
                lambda p: plot_trajectories_by_facet(trials, steps, facets, path=p),
            )
    else:
        findings.skipped["trajectories"] = "no step rows"
    if has_adam_and_giadam(trials):
        figure("adam_vs_giadam", lambda p: plot_adam_vs_giadam(trials, steps, path=p))
    findings.boundary = divergence_boundary(trials, facets)


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


def _summary(findings: _Findings) -> str:
    """summary.md: completeness, divergence boundary, best configurations, regimes, figures."""
    lines = ["# Sweep analysis", "", f"Source: `{findings.source}`", ""]
    lines += _completeness_section(findings)
    lines += _boundary_section(findings)
    lines += _best_configs_section(findings)
    lines += _regimes_section(findings)
    lines += _figures_section(findings)
    return "\n".join(lines)


def _completeness_section(findings: _Findings) -> list[str]:
    trials, steps, expected = findings.trials, findings.steps, findings.expected
    lines = ["## Completeness", ""]
    found = f"{len(trials)} trials found"
    if expected is not None:
        found += f" of {expected} expected ({100 * len(trials) / max(expected, 1):.1f}%)"
    lines += [found + ".", ""]
    lines.append(markdown_table(pd.DataFrame([findings.status_counts])))
    if "sweep" in trials.columns and trials["sweep"].nunique() > 1:
        per_sweep = (
            trials.groupby("sweep", observed=True)["status"].value_counts().unstack(fill_value=0)
        )
        lines.append(markdown_table(per_sweep.reset_index()))
    with_steps = trials["trial_id"].astype(str).isin(set(steps["trial_id"].astype(str))).sum()
    lines += [f"Trials with step rows: {with_steps}.", ""]
    unreadable = findings.loaded.unreadable
    if unreadable:
        lines += [
            f"**Unreadable files ({len(unreadable)})**, skipped (still being written, or truncated):",
            "",
        ]
        lines += [f"- `{path}`: {reason}" for path, reason in unreadable]
        lines.append("")
    else:
        lines += ["No unreadable files.", ""]
    return lines


def _boundary_section(findings: _Findings) -> list[str]:
    boundary = findings.boundary
    lines = [
        "## Divergence boundary",
        "",
        "Largest trainable eta (did not diverge; stuck counts as trainable) per warmup length, "
        "and the smallest diverged eta above it. `eta` columns are in the units of `eta_column` "
        "(`eta_trgt_relative` = multiples of 1/lambda0); `eta_trgt` columns are absolute.",
        "",
    ]
    if boundary.empty:
        return [*lines, markdown_table(boundary)]
    keep = [
        *findings.facets,
        "warmup_steps",
        "eta_column",
        "max_trainable_eta",
        "min_diverged_eta",
        "max_trainable_eta_trgt",
        "max_trainable_x_lambda0",
        "max_trainable_over_eta_c",
        "non_monotone",
    ]
    return [*lines, markdown_table(boundary[keep])]


def _best_configs_section(findings: _Findings) -> list[str]:
    trials, metric = findings.trials, findings.metric
    best = best_configs(trials, metric, findings.facets) if len(trials) else pd.DataFrame()
    return [
        f"## Best configuration per facet ({metric}, seed mean over cells with no diverged or stuck seed)",
        "",
        markdown_table(best),
    ]


def _regimes_section(findings: _Findings) -> list[str]:
    regimes = findings.regimes
    if regimes.empty:
        return ["## Regimes", "", "_(no step data with sharpness)_\n"]
    keys = [f for f in findings.facets if f in regimes.columns]
    counts = regimes.astype({k: object for k in keys}).groupby([*keys, "regime"], dropna=False)
    table = counts.agg(trials=("trial_id", "size"), with_catapult=("catapult", "sum"))
    return [
        "## Regimes",
        "",
        "Early-training sharpness regime per trial (sharpness for SGD, pre-conditioned "
        "sharpness for Adam-family), and trials with at least one loss catapult.",
        "",
        markdown_table(table.reset_index()),
    ]


def _figures_section(findings: _Findings) -> list[str]:
    lines = ["## Figures", ""]
    lines += [f"- [{name}.png]({Path(path).name})" for name, path in findings.figures.items()]
    lines += [f"- {name}: not drawn ({reason})" for name, reason in findings.skipped.items()]
    lines.append("")
    return lines
