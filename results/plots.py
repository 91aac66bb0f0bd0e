"""Figures of a sweep's phase diagram and divergence boundary.

`plot_phase_diagrams` draws heatmaps of a metric over (eta, warmup) per facet with the
boundary line; `plot_boundary` the largest trainable eta per warmup length, censored
values marked as bounds, optionally beside the paper's own boundary
(`results.reference`) and the best metric per warmup. Every function returns a
matplotlib `Figure` (built without pyplot, so nothing global changes and no GUI
backend is needed) and saves a PNG when given `path`; the shared style is in
`results.figure_style`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from results.analysis import (
    DEFAULT_FACETS,
    PhaseDiagram,
    best_configs,
    divergence_boundary,
    facet_value,
    failed_statuses,
    failure_rule,
    phase_diagram,
    trainable_statuses,
)
from results.figure_style import (
    BOUNDARY_COLOR,
    CMAP,
    DIVERGED_COLOR,
    ERROR_COLOR,
    ETA_AXIS_LABEL,
    ETA_VALUE_LABEL,
    MARKERS,
    MISSING_EDGE,
    STOPPED_COLOR,
    STUCK_COLOR,
    WARMUP_LABEL,
    metric_label,
    number_text,
    panel_order,
    panel_title,
    save_figure,
    split_facets,
    value_ticks,
)
from results.reference import REFERENCE_FACETS

__all__ = ["plot_boundary", "plot_phase_diagrams"]


# --------------------------------------------------------------------------- phase diagrams


def _color_norm(diagrams: Sequence[PhaseDiagram], log_color: bool | None) -> Normalize:
    """The colour scale of the `ok` cells, the only ones coloured."""
    values = np.concatenate(
        [d.mean.where(d.status == "ok").to_numpy(float).ravel() for d in diagrams]
    )
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Normalize(0.0, 1.0)
    if log_color is None:
        log_color = "loss" in diagrams[0].metric and bool((values > 0).all())
    if log_color:
        lo, hi = values[values > 0].min(), values.max()
        return LogNorm(lo, hi if hi > lo else lo * 1.01)
    lo, hi = values.min(), values.max()
    return Normalize(lo, hi if hi > lo else lo + 1e-12)


def _round_log_ticks(lo: float, hi: float) -> list[float]:
    """Round values (1, 2, 5 x 10^k; finer steps on a short range) between lo and hi > 0."""
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0**e for e in decades for m in mantissas]
        ticks = [float(f"{t:.3g}") for t in ticks if lo <= t <= hi]
        if len(ticks) >= 3:
            return ticks
    return [float(f"{lo:.2g}"), float(f"{hi:.2g}")]


def _colorbar_ticks(cbar: Any, norm: Normalize) -> None:
    """Round tick values on the colour bar, printed plainly (0.05, 0.1, 0.2; 0.92, 0.94)."""
    if isinstance(norm, LogNorm):
        cbar.set_ticks(_round_log_ticks(norm.vmin, norm.vmax))
    else:
        cbar.ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10]))
    cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    cbar.ax.yaxis.set_minor_locator(NullLocator())


def _boundary_columns(status: pd.DataFrame, stuck_trainable: bool) -> list[tuple[float, bool]]:
    """Per warmup row, where the boundary line goes: the column index of the largest
    trainable cell (-1 when every known cell failed; NaN when no cell is known), and
    whether nothing failed right of it (the line is then only a lower bound)."""
    good, bad = trainable_statuses(stuck_trainable), failed_statuses(stuck_trainable)
    out = []
    for _, row in status.iterrows():
        cells = row.to_numpy()
        trainable = [j for j, s in enumerate(cells) if s in good]
        if not trainable and not any(s in bad for s in cells):
            out.append((np.nan, False))
            continue
        top = max(trainable, default=-1)
        beyond = bool(trainable) and not any(s in bad for s in cells[top + 1 :])
        out.append((float(top), beyond))
    return out


def _draw_phase(
    ax: Axes,
    diagram: PhaseDiagram,
    norm: Normalize,
    show_boundary: bool,
    stuck_trainable: bool,
) -> AxesImage:
    """One facet's heatmap with its cell marks, boundary line and axis labels."""
    mean, status = diagram.mean, diagram.status
    n_rows, n_cols = mean.shape
    shown = mean.where(status == "ok")
    image = ax.imshow(
        shown.to_numpy(float),
        cmap=CMAP,
        norm=norm,
        origin="lower",
        aspect="auto",
        interpolation="nearest",
        extent=(-0.5, n_cols - 0.5, -0.5, n_rows - 0.5),
    )
    for i in range(n_rows):
        for j in range(n_cols):
            _mark_cell(ax, status.iat[i, j], i, j)
    if show_boundary:
        _draw_boundary_steps(ax, _boundary_columns(status, stuck_trainable))
    ax.set_xticks(range(n_cols), [number_text(v) for v in mean.columns])
    ax.set_yticks(range(n_rows), [str(w) for w in mean.index])
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(-0.5, n_rows - 0.5)
    ax.set_xlabel(ETA_AXIS_LABEL[diagram.eta_column])
    ax.set_ylabel(WARMUP_LABEL)
    if n_cols > 8:
        ax.tick_params(axis="x", labelrotation=90)
    return image


def _mark_cell(ax: Axes, cell: str, i: int, j: int) -> None:
    """Cover cell (row i, column j) for its status; ok cells keep their colour."""
    xy = (j - 0.5, i - 0.5)
    if cell == "diverged":
        ax.add_patch(Rectangle(xy, 1, 1, facecolor=DIVERGED_COLOR, edgecolor="white", lw=0.5))
        ax.text(j, i, "×", ha="center", va="center", color="black", fontsize=12)
    elif cell == "stuck":
        ax.add_patch(
            Rectangle(xy, 1, 1, facecolor=STUCK_COLOR, hatch="///", edgecolor="#808080", lw=0)
        )
    elif cell == "stopped":
        ax.add_patch(Rectangle(xy, 1, 1, facecolor=STOPPED_COLOR, edgecolor="white", lw=0.5))
        ax.text(j, i, "s", ha="center", va="center", color="black", fontsize=10)
    elif cell == "error":
        ax.add_patch(Rectangle(xy, 1, 1, facecolor=ERROR_COLOR, edgecolor="white", lw=0.5))
        ax.text(j, i, "!", ha="center", va="center", color="black", fontsize=10, weight="bold")
    elif cell == "missing":
        ax.add_patch(
            Rectangle(xy, 1, 1, facecolor="white", hatch="..", edgecolor=MISSING_EDGE, lw=0)
        )


def _draw_boundary_steps(ax: Axes, columns: list[tuple[float, bool]]) -> None:
    """The boundary as a step line right of each row's largest trainable cell, with a ▶
    where nothing failed beyond it (there the line is a lower bound)."""
    xs, ys = [], []
    for i, (j, _) in enumerate(columns):
        # j = -1 (nothing trainable): at the left edge; NaN (nothing known): a gap.
        xs += [j + 0.5, j + 0.5]
        ys += [i - 0.5, i + 0.5]
    ax.plot(
        xs,
        ys,
        color=BOUNDARY_COLOR,
        lw=2.5,
        solid_joinstyle="miter",
        path_effects=[
            patheffects.Stroke(linewidth=4.5, foreground="white"),
            patheffects.Normal(),
        ],
        clip_on=False,
    )
    for i, (j, beyond) in enumerate(columns):
        if beyond:
            ax.plot(
                [j + 0.5],
                [i],
                marker=">",
                color=BOUNDARY_COLOR,
                markeredgecolor="white",
                markersize=11,
                clip_on=False,
                zorder=5,
            )


def plot_phase_diagrams(
    trials: pd.DataFrame,
    metric: str = "final_test_loss",
    facets: Sequence[str] = DEFAULT_FACETS,
    eta: str = "auto",
    *,
    log_color: bool | None = None,
    show_boundary: bool = True,
    stuck_trainable: bool = False,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Heatmaps of seed-mean `metric` over eta (x, log) and warmup steps (y), one panel per facet.

    Only `ok` cells are coloured. Diverged cells are light grey with a black ×, stuck
    cells hatched grey, stopped cells (a scheduler ended every seed early) blue with
    's', error cells purple with '!', missing cells dotted white: none of them a
    viridis colour. The divergence boundary is the orange step line right of each
    warmup's largest trainable cell (stuck cells fail unless `stuck_trainable`).

    Args:
        trials: the trials table (`results.load`).
        metric: trials column shown as colour, mean over seeds.
        facets: trials columns that split the trials into panels (SP before muP).
        eta: x axis: "auto" (relative eta where every trial of the facet has it),
            "eta_trgt" or "eta_trgt_relative".
        log_color: log colour scale; default (None) for loss metrics with positive values.
        show_boundary: draw the divergence boundary line.
        stuck_trainable: the boundary counts stuck cells as trainable.
        title: the figure's title (default: 'Phase diagram: <metric>').
        path: where to save a PNG, if given.
    """
    diagrams = phase_diagram(trials, metric, facets, eta)
    if not diagrams:
        raise ValueError("no trials with eta_trgt and warmup_steps to plot")
    keys = sorted(diagrams, key=lambda k: panel_order(facets, k))
    varying, caption = split_facets(list(facets), keys)
    n = len(keys)
    first = diagrams[keys[0]]
    width = max(4.2, 0.55 * first.mean.shape[1] + 2.2)
    height = max(3.2, 0.42 * first.mean.shape[0] + 1.8)
    ncols = 1 if width > 9 else 2 if n == 4 else min(n, 3)  # wide grids: one panel a row
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols + 1.2, height * nrows + 1.0), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    norm = _color_norm(list(diagrams.values()), log_color)
    image = None
    for ax, key in zip(axes.ravel(), keys, strict=False):
        image = _draw_phase(ax, diagrams[key], norm, show_boundary, stuck_trainable)
        ax.set_title(panel_title(facets, key, varying) or metric_label(metric), fontsize=11)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    scale = " (log scale)" if isinstance(norm, LogNorm) else ""
    cbar = fig.colorbar(
        image, ax=axes, shrink=0.9, label=f"{metric_label(metric)}, mean over seeds{scale}"
    )
    _colorbar_ticks(cbar, norm)
    statuses = set().union(*(set(d.status.to_numpy().ravel()) for d in diagrams.values()))
    beyond = show_boundary and any(
        flag for d in diagrams.values() for _, flag in _boundary_columns(d.status, stuck_trainable)
    )
    handles, labels = _status_handles(statuses, show_boundary, stuck_trainable, beyond)
    fig.legend(
        handles=handles,
        labels=labels,
        loc="outside lower center",
        ncols=min(len(handles), 4),
        frameon=False,
        handler_map={tuple: HandlerTuple(ndivide=1)},
    )
    title = title or f"Phase diagram: {metric_label(metric)}"
    fig.suptitle(f"{title}\n{caption}" if caption else title, fontsize=12)
    return save_figure(fig, path)


def _status_handles(
    statuses: set, show_boundary: bool, stuck_trainable: bool, beyond: bool
) -> tuple[list, list[str]]:
    """Legend handles and labels for the cell statuses present, and the boundary line."""
    handles: list = []
    labels: list[str] = []
    if "diverged" in statuses:
        square = Line2D([], [], marker="s", ls="", markersize=13, color=DIVERGED_COLOR)
        cross = Line2D([], [], marker="x", ls="", markersize=7, color="black")
        handles.append((square, cross))
        labels.append("diverged (any seed)")
    if "stuck" in statuses:
        handles.append(Patch(facecolor=STUCK_COLOR, hatch="///", edgecolor="#808080"))
        labels.append("stuck (did not learn)")
    if "stopped" in statuses:
        handles.append(Patch(facecolor=STOPPED_COLOR))
        labels.append("stopped early (scheduler)")
    if "error" in statuses:
        handles.append(Patch(facecolor=ERROR_COLOR))
        labels.append("error (every seed)")
    if "missing" in statuses:
        handles.append(Patch(facecolor="white", hatch="..", edgecolor=MISSING_EDGE))
        labels.append("missing")
    if show_boundary:
        handles.append(Line2D([], [], color=BOUNDARY_COLOR, lw=2.5))
        labels.append(f"divergence boundary ({failure_rule(stuck_trainable)})")
        if beyond:
            handles.append(Line2D([], [], marker=">", ls="", color=BOUNDARY_COLOR, markersize=10))
            labels.append("boundary beyond (nothing failed further right)")
    return handles, labels


# --------------------------------------------------------------------------- boundary


def plot_boundary(
    trials: pd.DataFrame,
    facets: Sequence[str] = DEFAULT_FACETS,
    eta: str = "auto",
    *,
    metric: str | None = None,
    reference: pd.DataFrame | None = None,
    stuck_trainable: bool = False,
    path: str | os.PathLike | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Largest trainable eta vs warmup steps (both log), one line per facet, a bar up to the
    first failed eta; censored values marked: '≥' with an arrow up where nothing failed
    above (e.g. the top of the grid), '<' with ▽ where nothing was trainable.

    Args:
        trials: the trials table (`results.load`).
        facets: trials columns whose combinations get a line each.
        eta: y axis: "auto", "eta_trgt" or "eta_trgt_relative" (as `divergence_boundary`);
            one panel per eta column in use.
        metric: also draw a panel of the best seed-mean `metric` per warmup length (over
            eta, among `ok` cells), e.g. final_test_accuracy.
        reference: trials of the paper's official runs (`results.reference`), drawn
            dashed with hollow markers beside the sweep's lines, in their own eta units.
        stuck_trainable: count stuck cells as trainable (default: failed, as the paper).
        path: where to save a PNG, if given.
        ax: draw into this axes (every eta column on it, no metric panel) instead of a
            new figure; the caller then owns the figure's title.
    """
    facets = list(facets)
    table = divergence_boundary(trials, facets, eta, stuck_trainable=stuck_trainable)
    if table.empty:
        raise ValueError("no trials with eta_trgt and warmup_steps to plot")
    lines = _boundary_lines(table, facets, "")
    if reference is not None:
        ref_facets = [f for f in REFERENCE_FACETS if f in reference.columns]
        ref_table = divergence_boundary(reference, ref_facets, stuck_trainable=stuck_trainable)
        lines += _boundary_lines(ref_table, ref_facets, "paper")
    _assign_styles(lines)
    columns = list(dict.fromkeys(line.eta_column for line in lines))
    show_metric = metric is not None and ax is None
    if ax is None:
        n_panels = len(columns) + int(show_metric)
        fig = Figure(figsize=(5.8 * n_panels, 4.8), layout="constrained")
        axes = list(fig.subplots(1, n_panels, squeeze=False)[0])
    else:
        fig, axes = ax.figure, [ax] * (len(columns) + 1)
    keys = [line.key for line in lines if not line.source]
    varying, caption = split_facets(facets, keys)
    for ax_, column in zip(axes, columns, strict=False):
        drawn = [line for line in lines if line.eta_column == column]
        for line in drawn:
            line.label = _line_label(line, facets, varying)
            _draw_boundary_line(ax_, line)
        _style_boundary_axes(ax_, drawn, column)
    if show_metric:
        _draw_best_metric(axes[-1], trials, reference, metric, facets, lines)
    if ax is None:  # a caller that passed `ax` owns the figure title
        title = f"Divergence boundary ({failure_rule(stuck_trainable)})"
        fig.suptitle(f"{title}\n{caption}" if caption else title, fontsize=12)
        fig.text(
            0.5,
            -0.02,
            "bar: from the largest trainable to the first failed eta;  "
            "≥ ↑: nothing failed above (a lower bound);  < ▽: nothing trainable",
            ha="center",
            va="top",
            fontsize=8,
        )
    return save_figure(fig, path)


@dataclass
class _Line:
    """One facet's boundary rows (sorted by warmup) and how to draw them."""

    key: tuple  # the facet key
    source: str  # "" for the sweep, "paper" for the reference
    eta_column: str
    rows: pd.DataFrame
    color: Any = None
    marker: str = "o"
    label: str = ""

    @property
    def optimizer(self) -> Any:
        """The line's optimizer, when the facets include it."""
        return self.rows["optimizer"].iloc[0] if "optimizer" in self.rows else None


def _boundary_lines(table: pd.DataFrame, facets: list[str], source: str) -> list[_Line]:
    """One `_Line` per facet and eta column, in panel order; rows that know nothing (a
    warmup length only other facets ran) left out."""
    table = table[table["censored"] != "unknown"]
    lines = []
    for (column, *key), rows in table.astype({f: object for f in facets}).groupby(
        ["eta_column", *facets], dropna=False, sort=True
    ):
        key = tuple(facet_value(k) for k in key)
        lines.append(_Line(key, source, column, rows.sort_values("warmup_steps")))
    return sorted(lines, key=lambda line: (line.source, panel_order(facets, line.key)))


def _assign_styles(lines: list[_Line]) -> None:
    """A colour and marker per sweep line; a paper line takes those of the sweep's line for
    its optimizer, if any (drawn hollow and dashed), so that the two read as a pair."""
    palette = sns.color_palette("colorblind", max(3, len(lines)))
    by_optimizer: dict[Any, tuple[Any, str]] = {}
    for k, line in enumerate(lines):
        if line.source and line.optimizer in by_optimizer:
            line.color, line.marker = by_optimizer[line.optimizer]
            continue
        line.color, line.marker = palette[k % len(palette)], MARKERS[k % len(MARKERS)]
        by_optimizer.setdefault(line.optimizer, (line.color, line.marker))


def _line_label(line: _Line, facets: list[str], varying: list[int]) -> str:
    if line.source:
        return f"{line.source}: " + " ".join(str(v) for v in line.key)
    return panel_title(facets, line.key, varying) or "all trials"


def _draw_boundary_line(ax: Axes, line: _Line) -> None:
    """One facet's largest trainable eta per warmup, a bar up to the first failed eta, and
    the censored values marked with their bound."""
    rows, color = line.rows, line.color
    x = rows["warmup_steps"].to_numpy(float)
    lo = rows["max_trainable_eta"].to_numpy(float)
    hi = rows["min_failed_eta"].to_numpy(float)
    censored = rows["censored"].astype(str).to_numpy()
    paper = bool(line.source)
    label = line.label + (r" (no trainable $\eta$)" if np.isnan(lo).all() else "")
    ax.plot(
        x,
        lo,
        marker=line.marker,
        color=color,
        lw=1.6 if paper else 2,
        ls="--" if paper else "-",
        markerfacecolor="white" if paper else color,
        markersize=7,
        label=label,
        zorder=3,
    )
    bar = np.isfinite(lo) & np.isfinite(hi)
    # vlines, not fill_between: a band of one warmup length must still show. The paper's
    # bars sit a little right of the sweep's, so both stay visible at a shared warmup.
    ax.vlines(
        x[bar] * (1.12 if paper else 1.0),
        lo[bar],
        hi[bar],
        color=color,
        lw=4 if paper else 7,
        alpha=0.35,
        zorder=2,
    )
    for xi, value in zip(x[censored == "above"], lo[censored == "above"], strict=True):
        ax.annotate(
            "",
            xy=(xi, value * 1.7),
            xytext=(xi, value),
            arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.5},
            zorder=3,
        )
        ax.annotate(
            f"≥ {number_text(value)}",
            (xi, value * 1.7),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            va="bottom",
            color=color,
            fontsize=9,
            weight="bold",
        )
    for xi, value in zip(x[censored == "below"], hi[censored == "below"], strict=True):
        ax.plot([xi], [value], marker="v", ls="", color=color, markerfacecolor="none", ms=9)
        ax.annotate(
            f"< {number_text(value)}",
            (xi, value),
            textcoords="offset points",
            xytext=(6, -12),
            color=color,
            fontsize=9,
            weight="bold",
        )


def _style_boundary_axes(ax: Axes, lines: list[_Line], column: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    warmups = np.concatenate([line.rows["warmup_steps"].to_numpy(float) for line in lines])
    etas = np.concatenate(
        [
            line.rows[c].to_numpy(float)
            for line in lines
            for c in ("max_trainable_eta", "min_failed_eta")
        ]
    )
    value_ticks(ax, "x", warmups)
    value_ticks(ax, "y", etas)
    ax.margins(x=0.08)
    finite = etas[np.isfinite(etas) & (etas > 0)]
    if finite.size:  # room above for the arrows and labels of lower bounds
        ax.set_ylim(finite.min() / 1.5, finite.max() * 3.5)
    ax.set_xlabel(WARMUP_LABEL)
    ax.set_ylabel(ETA_VALUE_LABEL[column])
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _draw_best_metric(
    ax: Axes,
    trials: pd.DataFrame,
    reference: pd.DataFrame | None,
    metric: str,
    facets: list[str],
    lines: list[_Line],
) -> None:
    """The best seed-mean `metric` over eta per warmup length, for the sweep's lines and
    the paper's, in the boundary panels' colours and order."""
    best = {"": _best_by_key(trials, metric, facets)}
    if reference is not None and metric in reference.columns:
        names = [f for f in REFERENCE_FACETS if f in reference.columns]
        best["paper"] = _best_by_key(reference, metric, names)
    warmups: list[float] = []
    drawn = set()
    for line in lines:
        rows = best.get(line.source, {}).get(line.key)
        if rows is None or (line.source, line.key) in drawn:
            continue  # a facet with a boundary on two eta axes has one metric line
        drawn.add((line.source, line.key))
        paper = bool(line.source)
        ax.plot(
            rows["warmup_steps"].to_numpy(float),
            rows[metric].to_numpy(float),
            marker=line.marker,
            color=line.color,
            ls="--" if paper else "-",
            markerfacecolor="white" if paper else line.color,
            label=line.label,
        )
        warmups += rows["warmup_steps"].tolist()
    ax.set_xscale("log", base=2)
    if warmups:
        value_ticks(ax, "x", warmups)
    ax.margins(x=0.08)
    ax.set_xlabel(WARMUP_LABEL)
    ax.set_ylabel(f"best {metric_label(metric)} over " + r"$\eta$")
    ax.set_title(f"best {metric_label(metric)} per warmup length", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _best_by_key(trials: pd.DataFrame, metric: str, facets: list[str]) -> dict[tuple, pd.DataFrame]:
    """Per facet key, the best cell per warmup length (`best_configs(per_warmup=True)`)."""
    best = best_configs(trials, metric, facets, per_warmup=True)
    if best.empty or not facets:
        return {} if best.empty else {(): best}
    groups = best.astype({f: object for f in facets}).groupby(facets, dropna=False, sort=False)
    return {
        tuple(facet_value(k) for k in (key if isinstance(key, tuple) else (key,))): rows
        for key, rows in groups
    }
