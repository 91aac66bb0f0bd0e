"""`analyze`: load a sweep (finished or not), write its figures and a markdown summary.

This is what `warmup-sweep analyze DIR [--out DIR]` runs. It never needs the sweep to
be complete: missing cells show as missing, unreadable files are listed, and a
figure that has nothing to show is skipped with the reason in the summary. The
summary opens with one sentence on what warmup did to the divergence boundary
(`result_sentence`), which the command also prints. With `reference`, the paper's
own runs (`results.reference`) are drawn and tabled beside the sweep's.
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
    boundary_text,
    divergence_boundary,
    facet_value,
    failure_rule,
    regime_map,
    resolve_metric,
)
from results.figure_style import metric_label, panel_order, panel_title, split_facets
from results.loading import Loaded, load
from results.plots import plot_boundary, plot_phase_diagrams
from results.reference import matching_reference, read_reference, reference_boundary
from results.schema import STATUSES, TRIAL_SCHEMA
from results.trajectory_plots import (
    has_adam_and_giadam,
    plot_adam_vs_giadam,
    plot_trajectories,
    plot_trajectories_by_facet,
    trajectory_facets,
)

__all__ = ["NOT_SETTINGS", "AnalysisReport", "analyze", "markdown_table", "result_sentence"]

# Trials columns that never split a sweep into facets: a cell's axes (eta, warmup
# length), the seeds its cells average over, and what a trial measured or where it ran.
# Every other trials column that varies is a setting, and becomes a facet.
NOT_SETTINGS = frozenset(
    {
        "trial_id", "sweep", "status", "diverged_step", "stopped_step", "error",
        "eta_trgt", "eta_trgt_relative", "eta_init", "warmup_steps", "warmup_end_step",
        "init_seed", "data_seed", "optimizer_v0_seed",
        "lambda0", "eta_c", "eta_c_loss_evals", "eta_c_check_ratio", "eta_c_overshoots",
        "final_train_loss", "final_train_accuracy", "final_test_loss",
        "final_test_accuracy", "final_sharpness",
        "wall_time_s", "device", "node", "package_version",
    }
)  # fmt: skip
METRIC_PREFERENCE = ("final_test_loss", "final_train_loss", "final_test_accuracy")
# How to read each figure, for the summary's list of figures.
FIGURE_NOTES = {
    "phase_diagram": "the metric per (eta, warmup) cell, failed cells marked, "
    "the divergence boundary in orange",
    "boundary": "the largest trainable eta per warmup length; a bar up to the first "
    "failed eta, ≥ where nothing failed above (a lower bound)",
    "reference_phase_diagram": "the paper's own runs, drawn as the sweep's phase diagram",
    "trajectories": "train loss and sharpness against its stability threshold, "
    "warmup lengths compared at one eta, per facet",
    "adam_vs_giadam": "Adam beside GI-Adam: boundaries and a matched pair's trajectories",
}
_ETA_WORDS = {"eta_trgt": "eta_trgt", "eta_trgt_relative": "eta_trgt x lambda0"}


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
    headline: str = ""  # the summary's one-sentence result


@dataclass
class _Findings:
    """One analysis as the summary reports it: the sweep as loaded, the choices made,
    and what was computed and drawn."""

    source: str  # the sweep directory or results root, as given
    loaded: Loaded
    expected: int | None  # planned trial count, when the caller knows it
    metric: str
    facets: list[str]
    stuck_trainable: bool = False
    reference: pd.DataFrame | None = None  # the paper's runs compared with the sweep
    reference_source: str | None = None
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

    @property
    def rule(self) -> str:
        """The failure rule of the boundary, in words."""
        return failure_rule(self.stuck_trainable)


def analyze(
    results_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    progress: Callable[[str], None] | None = None,
    metric: str | None = None,
    facets: Sequence[str] = DEFAULT_FACETS,
    expected_trials: int | None = None,
    reference: str | os.PathLike | None = None,
    stuck_trainable: bool = False,
) -> AnalysisReport:
    """Write phase_diagram, boundary, trajectories, adam_vs_giadam PNGs and summary.md.

    Bad input is refused before anything is written: ValueError for a `metric` that
    is no numeric trials column, FileNotFoundError or ValueError for a `reference`
    without official tables.

    Args:
        results_dir: a sweep directory or a results root holding several sweeps
            (local path or URI).
        out_dir: local directory for the figures and summary.md, created if needed.
        progress: called with a line of text at each step (loading, each file written
            or skipped, each unreadable file).
        metric: trials column the phase diagrams, the boundary figure's metric panel
            and the best configurations show, e.g. `test_accuracy` (the paper's; short
            for final_test_accuracy); default the first of final_test_loss,
            final_train_loss, final_test_accuracy with data.
        facets: trials columns that split the sweep into panels; those absent are
            dropped, and every other setting that varies is added (`NOT_SETTINGS`
            are the columns that never split a sweep).
        expected_trials: the planned trial count, when the caller knows it, so the
            summary can say how complete the sweep is.
        reference: the paper's official result tables (a folder of `.tab` files or a
            checkout of its repository): its boundary and metric drawn beside the
            sweep's, its phase diagram as reference_phase_diagram.png, and a table.
        stuck_trainable: count stuck runs as trainable in every boundary (default:
            failed, as the paper counts them).
    """
    say = progress or (lambda message: None)
    loaded = _load(results_dir, say)
    chosen = resolve_metric(loaded.trials, metric) if metric else _pick_metric(loaded.trials)
    findings = _Findings(
        source=os.fspath(results_dir),
        loaded=loaded,
        expected=expected_trials,
        metric=chosen,
        facets=_facets(loaded.trials, facets),
        stuck_trainable=stuck_trainable,
    )
    if reference is not None:
        findings.reference = _load_reference(reference, loaded.trials, say)
        findings.reference_source = os.fspath(reference)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _draw_figures(findings, out, say)
    findings.regimes = _regimes(findings.trials, findings.steps, findings.skipped)
    headline = result_sentence(findings.boundary, findings.facets)
    summary_path = out / "summary.md"
    summary_path.write_text(_summary(findings, headline), encoding="utf-8")
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
        headline=headline,
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


def _load_reference(
    path: str | os.PathLike, trials: pd.DataFrame, say: Callable[[str], None]
) -> pd.DataFrame:
    """The paper's runs to compare the sweep with (`matching_reference`)."""
    runs = read_reference(path)
    for file, reason in runs.unreadable:
        say(f"reference: skipped {file} ({reason})")
    chosen = matching_reference(runs.trials, trials)
    say(f"reference: {len(chosen)} of the paper's {len(runs.trials)} runs from {os.fspath(path)}")
    return chosen


def _facets(trials: pd.DataFrame, facets: Sequence[str]) -> list[str]:
    """The asked facets present in `trials`, plus every other setting that varies (in
    schema order): two datasets, warmup shapes or warmup starts must never pool into one
    cell as if they were seeds."""
    chosen = [f for f in facets if f in trials.columns]
    for column in TRIAL_SCHEMA.names:
        if (
            column not in chosen
            and column not in NOT_SETTINGS
            and column in trials.columns
            and trials[column].nunique() > 1
        ):
            chosen.append(column)
    return chosen


def _draw_figures(findings: _Findings, out: Path, say: Callable[[str], None]) -> None:
    """Draw every figure the sweep has data for into `out`; record each in `findings.figures`,
    or in `findings.skipped` with the reason; compute `findings.boundary`."""
    trials, steps, facets = findings.trials, findings.steps, findings.facets
    metric, stuck, reference = findings.metric, findings.stuck_trainable, findings.reference

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
    figure(
        "phase_diagram",
        lambda p: plot_phase_diagrams(trials, metric, facets, stuck_trainable=stuck, path=p),
    )
    figure(
        "boundary",
        lambda p: plot_boundary(
            trials, facets, metric=metric, reference=reference, stuck_trainable=stuck, path=p
        ),
    )
    if reference is not None:
        figure("reference_phase_diagram", lambda p: _plot_reference(findings, p))
    if not len(steps):
        findings.skipped["trajectories"] = "no step rows"
    elif len(trajectory_facets(trials, steps, facets)) >= 2:
        figure("trajectories", lambda p: plot_trajectories_by_facet(trials, steps, facets, path=p))
    else:
        figure("trajectories", lambda p: plot_trajectories(trials, steps, path=p))
    if has_adam_and_giadam(trials):
        figure(
            "adam_vs_giadam",
            lambda p: plot_adam_vs_giadam(trials, steps, stuck_trainable=stuck, path=p),
        )
    findings.boundary = divergence_boundary(trials, facets, stuck_trainable=stuck)


def _plot_reference(findings: _Findings, path: Path) -> Any:
    reference, metric = findings.reference, findings.metric
    if metric not in reference.columns or reference[metric].isna().all():
        raise ValueError(f"the paper's tables have no {metric}")
    title = f"The paper's runs (official result tables): {metric_label(metric)}"
    facets = ("parameterization", "optimizer")
    return plot_phase_diagrams(
        reference, metric, facets, stuck_trainable=findings.stuck_trainable, title=title, path=path
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


# --------------------------------------------------------------------------- the result


def result_sentence(boundary: pd.DataFrame, facets: Sequence[str]) -> str:
    """One sentence on what warmup did to the largest trainable eta, per facet: from its
    shortest to its longest warmup length (`divergence_boundary` rows).

    'raised' and 'lowered' are said only when the two ranges the rows allow do not
    overlap (a lower bound '≥ 32' above a bracketed 8-16 is raised); 'left it at' when
    both say the same; 'moved' otherwise.
    """
    facets = list(facets)
    known = boundary[boundary["censored"] != "unknown"] if len(boundary) else boundary
    if known.empty:
        return "No trial has a known outcome yet, so there is no divergence boundary to report."
    groups = [
        (tuple(key), rows.sort_values("warmup_steps"))
        for key, rows in known.astype({f: object for f in facets}).groupby(
            [*facets, "eta_column"], dropna=False, sort=True
        )
    ]
    groups.sort(key=lambda group: panel_order(facets, group[0][:-1]))
    varying, _ = split_facets(facets, [key[:-1] for key, _ in groups])
    spans = {(rows["warmup_steps"].iloc[0], rows["warmup_steps"].iloc[-1]) for _, rows in groups}
    units = {key[-1] for key, _ in groups}
    shared = len(spans) == 1 and len(units) == 1 and next(iter(spans))[0] != next(iter(spans))[1]
    clauses = []
    for i, (key, rows) in enumerate(groups):
        who = panel_title(facets, key[:-1], varying)
        clauses.append(_clause(rows, key[-1], who, shared, first=i == 0))
    if shared:
        w0, w1 = next(iter(spans))
        text = f"Warmup (T_wrm {w0} → {w1}) " + _join(clauses)
    else:
        text = "; ".join(clauses)
        text = text[0].upper() + text[1:]
    notes = []
    if (known["censored"] == "above").any():
        notes.append("≥: nothing failed up to the top of the grid")
    if (known["censored"] == "below").any():
        notes.append("<: nothing trainable down to the bottom of the grid")
    return text + (f" ({'; '.join(notes)})" if notes else "") + "."


def _join(clauses: list[str]) -> str:
    return clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]


def _clause(rows: pd.DataFrame, column: str, who: str, shared: bool, first: bool) -> str:
    """What warmup did for one facet, e.g. 'raised the largest trainable eta_trgt from 8 to
    ≥ 32 for parameterization=sp'."""
    start, end = rows.iloc[0], rows.iloc[-1]
    what = f"the largest trainable {_ETA_WORDS[column]}" if first or not shared else "it"
    a, b = boundary_text(start), boundary_text(end)
    suffix = f" for {who}" if who else ""
    if start["warmup_steps"] == end["warmup_steps"]:
        return f"{what} is {a} at T_wrm {start['warmup_steps']} (one warmup length){suffix}"
    span = "" if shared else f"warmup (T_wrm {start['warmup_steps']} → {end['warmup_steps']}) "
    if a == b:
        return f"{span}left {what} at {a}{suffix}"
    lo0, hi0 = _interval(start)
    lo1, hi1 = _interval(end)
    verb = "raised" if lo1 >= hi0 else "lowered" if hi1 <= lo0 else "moved"
    return f"{span}{verb} {what} from {a} to {b}{suffix}"


def _interval(row: pd.Series) -> tuple[float, float]:
    """The range [lo, hi) a boundary row allows for the true boundary."""
    if row["censored"] == "below":
        return 0.0, float(row["min_failed_eta"])
    hi = float(row["min_failed_eta"]) if row["censored"] == "no" else math.inf
    return float(row["max_trainable_eta"]), hi


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


def _summary(findings: _Findings, headline: str) -> str:
    """summary.md: the result, completeness, divergence boundary (and the paper's), best
    configurations, regimes, figures."""
    lines = ["# Sweep analysis", "", f"**Result:** {headline}", "", f"Source: `{findings.source}`"]
    if findings.reference_source is not None:
        lines += [
            "",
            f"Reference: the paper's official result tables in `{findings.reference_source}`",
        ]
    lines.append("")
    lines += _completeness_section(findings)
    lines += _boundary_section(findings)
    lines += _reference_section(findings)
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
    failed = (
        "diverged"
        if findings.stuck_trainable
        else ("diverged or ended stuck below 1.5x chance accuracy")
    )
    lines = [
        "## Divergence boundary",
        "",
        f"Largest trainable eta per warmup length ({findings.rule}: a run failed when it "
        f"{failed}), and the smallest failed eta above it. `≥ x`: nothing failed above x up "
        "to the top of the grid, so the boundary is at least x; `< x`: nothing was "
        "trainable, so the boundary lies below the smallest failed eta x. `eta` columns are "
        "in the units of `eta_column` (`eta_trgt_relative` = multiples of 1/lambda0); "
        "`eta_trgt` columns are absolute.",
        "",
    ]
    if boundary.empty:
        return [*lines, markdown_table(boundary)]
    table = _in_panel_order(boundary, findings.facets)
    table.insert(
        table.columns.get_loc("eta_column") + 1,
        "largest_trainable",
        [boundary_text(row) for _, row in table.iterrows()],
    )
    keep = [
        *findings.facets,
        "warmup_steps",
        "eta_column",
        "largest_trainable",
        "max_trainable_eta",
        "min_failed_eta",
        "max_trainable_eta_trgt",
        "max_trainable_x_lambda0",
        "max_trainable_over_eta_c",
        "non_monotone",
    ]
    return [*lines, markdown_table(table[keep])]


def _in_panel_order(table: pd.DataFrame, facets: list[str]) -> pd.DataFrame:
    """Rows in the figures' panel order (SP before muP), keeping the order within a facet."""

    def key(i: int) -> tuple:
        return panel_order(facets, tuple(facet_value(table[f].iloc[i]) for f in facets)), i

    return table.iloc[sorted(range(len(table)), key=key)].reset_index(drop=True)


def _reference_section(findings: _Findings) -> list[str]:
    """The paper's largest trainable eta_trgt per optimizer and warmup, beside the sweep's."""
    if findings.reference is None:
        return []
    paper = reference_boundary(findings.reference, stuck_trainable=findings.stuck_trainable)
    rows = [
        {
            "optimizer": row["optimizer"],
            "parameterization": row["parameterization"],
            "warmup_steps": row["warmup_steps"],
            "paper_largest_trainable_eta_trgt": boundary_text(row),
            "paper_first_failed_eta_trgt": row["min_failed_eta"],
            "paper_final_test_accuracy": row["final_test_accuracy"],
            "sweep_largest_trainable_eta_trgt": _sweep_boundary(findings.boundary, row),
        }
        for _, row in paper.iterrows()
    ]
    return [
        "## The paper's boundary",
        "",
        "From the official result tables (WRN-16-4 on CIFAR-10, 100k steps, augmented), by "
        f"the same rule ({findings.rule}), beside the sweep's at the same optimizer and "
        "warmup length where it has one. Both in absolute eta_trgt: compare across models "
        "and datasets with care.",
        "",
        markdown_table(pd.DataFrame(rows)),
    ]


def _sweep_boundary(boundary: pd.DataFrame, paper_row: pd.Series) -> str | None:
    """The sweep's largest trainable eta_trgt at the paper row's optimizer and warmup."""
    if not {"optimizer", "warmup_steps"} <= set(boundary.columns):
        return None
    same = boundary[
        (boundary["optimizer"].astype(str) == paper_row["optimizer"])
        & (boundary["warmup_steps"] == paper_row["warmup_steps"])
        & (boundary["censored"] != "unknown")
    ]
    return ", ".join(boundary_text(r, "eta_trgt") for _, r in same.iterrows()) or None


def _best_configs_section(findings: _Findings) -> list[str]:
    trials, metric = findings.trials, findings.metric
    best = best_configs(trials, metric, findings.facets) if len(trials) else pd.DataFrame()
    if len(best):
        best = _in_panel_order(best, findings.facets)
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
        markdown_table(_in_panel_order(table.reset_index(), keys)),
    ]


def _figures_section(findings: _Findings) -> list[str]:
    lines = ["## Figures", ""]
    lines += [
        f"- [{name}.png]({Path(path).name}): {FIGURE_NOTES.get(name, '')}"
        for name, path in findings.figures.items()
    ]
    lines += [f"- {name}: not drawn ({reason})" for name, reason in findings.skipped.items()]
    lines.append("")
    return lines
