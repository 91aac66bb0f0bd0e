"""Figures of a sweep: phase-diagram heatmaps, divergence boundaries, trajectories, Adam vs GI-Adam.

Every function returns a matplotlib `Figure` (built without pyplot, so nothing global
changes and no GUI backend is needed) and saves a PNG when given `path`. Colours come
from colour-blind-safe maps: viridis for metrics, seaborn's "colorblind" palette for
lines.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FormatStrFormatter, FuncFormatter, NullFormatter

from results.analysis import (
    DEFAULT_FACETS,
    PhaseDiagram,
    divergence_boundary,
    facet_label,
    facet_value,
    phase_diagram,
    sharpness_column,
    threshold_at,
)

__all__ = [
    "choose_trajectory_trials",
    "has_adam_and_giadam",
    "plot_adam_vs_giadam",
    "plot_boundary",
    "plot_phase_diagrams",
    "plot_trajectories",
    "plot_trajectories_by_facet",
    "trajectory_facets",
]

CMAP = "viridis"
BOUNDARY_COLOR = "#D55E00"  # vermillion from the colour-blind-safe Okabe-Ito set
DIVERGED_COLOR = "#4D4D4D"
ERROR_COLOR = "#CC79A7"  # reddish purple (Okabe-Ito)
MISSING_EDGE = "#BBBBBB"
STOPPED_COLOR = "#56B4E9"  # sky blue (Okabe-Ito)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # one per boundary line, in turn

ETA_AXIS_LABEL = {
    "eta_trgt": r"$\log_2 \eta_{\mathrm{trgt}}$",
    "eta_trgt_relative": r"$\log_2(\eta_{\mathrm{trgt}} \cdot \lambda_0)$",
}
ETA_VALUE_LABEL = {
    "eta_trgt": r"largest trainable $\eta_{\mathrm{trgt}}$",
    "eta_trgt_relative": r"largest trainable $\eta_{\mathrm{trgt}} \cdot \lambda_0$",
}


def _save(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        fig.savefig(os.fspath(path), dpi=150, bbox_inches="tight")
    return fig


def _split_facets(
    facets: Sequence[str], keys: Sequence[tuple[Hashable, ...]]
) -> tuple[list[int], str]:
    """Indices of facets that vary across panels, and a caption for the constant ones."""
    varying, constant = [], []
    for i, name in enumerate(facets):
        values = {k[i] for k in keys}
        if len(values) > 1:
            varying.append(i)
        else:
            constant.append(facet_label([name], (next(iter(values)),)))
    return varying, ", ".join(constant)


def _panel_title(facets: Sequence[str], key: tuple, varying: list[int]) -> str:
    return facet_label([facets[i] for i in varying], tuple(key[i] for i in varying))


def _log2_labels(values: Sequence[float]) -> list[str]:
    return [f"{math.log2(v):.3g}" if v > 0 else f"{v:g}" for v in values]


# --------------------------------------------------------------------------- phase diagrams


def _color_norm(diagrams: Sequence[PhaseDiagram], log_color: bool | None) -> Normalize:
    values = np.concatenate([d.mean.to_numpy(float).ravel() for d in diagrams])
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


def _boundary_columns(status: pd.DataFrame) -> list[float]:
    """Per warmup row, the column index of the largest trainable cell (NaN if none)."""
    out = []
    for _, row in status.iterrows():
        trainable = [j for j, s in enumerate(row.to_numpy()) if s in ("ok", "stuck")]
        out.append(float(max(trainable)) if trainable else np.nan)
    return out


def _draw_phase(ax: Axes, diagram: PhaseDiagram, norm: Normalize, show_boundary: bool) -> AxesImage:
    """One facet's heatmap with its cell marks, boundary line and axis labels."""
    mean, status = diagram.mean, diagram.status
    n_rows, n_cols = mean.shape
    shown = mean.where(status.isin(["ok", "stuck"]))
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
        _draw_boundary_steps(ax, _boundary_columns(status))
    ax.set_xticks(range(n_cols), _log2_labels(list(mean.columns)))
    ax.set_yticks(range(n_rows), [str(w) for w in mean.index])
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(-0.5, n_rows - 0.5)
    ax.set_xlabel(ETA_AXIS_LABEL[diagram.eta_column])
    ax.set_ylabel(r"warmup steps $T_{\mathrm{wrm}}$")
    if n_cols > 10:
        ax.tick_params(axis="x", labelrotation=90)
    return image


def _mark_cell(ax: Axes, cell: str, i: int, j: int) -> None:
    """Cover cell (row i, column j) for its status; ok cells keep their colour."""
    xy = (j - 0.5, i - 0.5)
    if cell == "diverged":
        ax.add_patch(Rectangle(xy, 1, 1, facecolor=DIVERGED_COLOR, edgecolor="white", lw=0.5))
        ax.text(j, i, "×", ha="center", va="center", color="white", fontsize=11)
    elif cell == "stuck":
        ax.add_patch(Rectangle(xy, 1, 1, fill=False, hatch="///", edgecolor="white", lw=0))
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


def _draw_boundary_steps(ax: Axes, columns: list[float]) -> None:
    """The boundary as a step line right of each row's largest trainable cell."""
    xs, ys = [], []
    for i, j in enumerate(columns):
        x = -0.5 if np.isnan(j) else j + 0.5  # no trainable eta: boundary at the left edge
        xs += [x, x]
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
    )


def plot_phase_diagrams(
    trials: pd.DataFrame,
    metric: str = "final_test_loss",
    facets: Sequence[str] = DEFAULT_FACETS,
    eta: str = "auto",
    *,
    log_color: bool | None = None,
    show_boundary: bool = True,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Heatmaps of seed-mean `metric` over log2 eta (x) and warmup steps (y), one panel per facet.

    Diverged cells are dark grey with a white ×, stuck cells hatched over their colour,
    stopped cells (a scheduler ended every seed early) blue with 's', error cells
    purple with '!', missing cells dotted white; the divergence boundary is
    the orange step line.

    Args:
        trials: the trials table (`results.load`).
        metric: trials column shown as colour, mean over seeds.
        facets: trials columns that split the trials into panels.
        eta: x axis: "auto" (relative eta where every trial of the facet has it),
            "eta_trgt" or "eta_trgt_relative".
        log_color: log colour scale; default (None) for loss metrics with positive values.
        show_boundary: draw the divergence boundary line.
        path: where to save a PNG, if given.
    """
    diagrams = phase_diagram(trials, metric, facets, eta)
    if not diagrams:
        raise ValueError("no trials with eta_trgt and warmup_steps to plot")
    keys = list(diagrams)
    varying, caption = _split_facets(list(facets), keys)
    n = len(keys)
    ncols = 2 if n == 4 else min(n, 3)
    nrows = math.ceil(n / ncols)
    first = diagrams[keys[0]]
    width = max(4.2, 0.55 * first.mean.shape[1] + 2.2)
    height = max(3.0, 0.42 * first.mean.shape[0] + 1.8)
    fig = Figure(figsize=(width * ncols + 1.2, height * nrows + 1.0), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    norm = _color_norm(list(diagrams.values()), log_color)
    image = None
    for ax, key in zip(axes.ravel(), keys, strict=False):
        image = _draw_phase(ax, diagrams[key], norm, show_boundary)
        ax.set_title(_panel_title(facets, key, varying) or metric, fontsize=11)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    scale = " (log scale)" if isinstance(norm, LogNorm) else ""
    cbar = fig.colorbar(image, ax=axes, shrink=0.9, label=f"{metric}, mean over seeds{scale}")
    if isinstance(norm, LogNorm) and norm.vmax / norm.vmin < 100:
        # Less than two decades: the default log ticks would label one or two values.
        cbar.set_ticks(np.geomspace(norm.vmin, norm.vmax, 6), labels=None)
        cbar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        cbar.ax.yaxis.set_minor_formatter(NullFormatter())
    statuses = set().union(*(set(d.status.to_numpy().ravel()) for d in diagrams.values()))
    handles = _status_handles(statuses, show_boundary)
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    title = f"Phase diagram: {metric}"
    fig.suptitle(f"{title}\n{caption}" if caption else title, fontsize=12)
    return _save(fig, path)


def _status_handles(statuses: set, show_boundary: bool) -> list:
    handles = []
    if "diverged" in statuses:
        handles.append(
            Line2D(
                [],
                [],
                marker="X",
                ls="",
                markersize=10,
                markerfacecolor=DIVERGED_COLOR,
                markeredgecolor="white",
                label="diverged (any seed)",
            )
        )
    if "stuck" in statuses:
        handles.append(
            Patch(
                facecolor="#7FB0A0", hatch="///", edgecolor="white", label="stuck (did not learn)"
            )
        )
    if "stopped" in statuses:
        handles.append(Patch(facecolor=STOPPED_COLOR, label="stopped early (scheduler)"))
    if "error" in statuses:
        handles.append(Patch(facecolor=ERROR_COLOR, label="error (every seed)"))
    if "missing" in statuses:
        handles.append(
            Patch(facecolor="white", hatch="..", edgecolor=MISSING_EDGE, label="missing")
        )
    if show_boundary:
        handles.append(Line2D([], [], color=BOUNDARY_COLOR, lw=2.5, label="divergence boundary"))
    return handles


# --------------------------------------------------------------------------- boundary


def plot_boundary(
    trials: pd.DataFrame,
    facets: Sequence[str] = DEFAULT_FACETS,
    eta: str = "auto",
    *,
    path: str | os.PathLike | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Largest trainable eta vs warmup steps (both log2), one line per facet, band up to the first diverged eta.

    Args:
        trials: the trials table (`results.load`).
        facets: trials columns whose combinations get a line each.
        eta: y axis: "auto", "eta_trgt" or "eta_trgt_relative" (as `divergence_boundary`);
            one panel per eta column in use.
        path: where to save a PNG, if given.
        ax: draw into this axes (every eta column on it) instead of a new figure; the
            caller then owns the figure's title.
    """
    table = divergence_boundary(trials, facets, eta)
    if table.empty:
        raise ValueError("no trials with eta_trgt and warmup_steps to plot")
    columns = list(dict.fromkeys(table["eta_column"]))
    if ax is None:
        fig = Figure(figsize=(5.8 * len(columns), 4.4), layout="constrained")
        axes = list(fig.subplots(1, len(columns), squeeze=False)[0])
    else:
        fig, axes = ax.figure, [ax] * len(columns)
    facets = list(facets)
    keys = [tuple(r) for r in table[facets].itertuples(index=False)] if facets else [()]
    varying, caption = _split_facets(facets, keys)
    palette = sns.color_palette("colorblind", max(3, len(set(keys))))
    for ax_, column in zip(axes, columns, strict=True):
        part = table[table["eta_column"] == column]
        groups = part.groupby(facets, dropna=False, sort=True) if facets else [((), part)]
        for k, (key, rows) in enumerate(groups):
            key = key if isinstance(key, tuple) else (key,)
            label = _panel_title(facets, key, varying) or "all trials"
            style = (palette[k % len(palette)], _MARKERS[k % len(_MARKERS)])
            _draw_boundary_line(ax_, rows.sort_values("warmup_steps"), label, *style)
        ax_.set_xscale("log", base=2)
        ax_.set_yscale("log", base=2)
        ax_.set_xlabel(r"warmup steps $T_{\mathrm{wrm}}$")
        ax_.set_ylabel(ETA_VALUE_LABEL[column])
        ax_.grid(True, which="major", alpha=0.3)
        ax_.legend(fontsize=9, title="band: up to first diverged; ▽ all diverged", title_fontsize=8)
    if ax is None:  # a caller that passed `ax` owns the figure title
        title = "Divergence boundary"
        fig.suptitle(f"{title}\n{caption}" if caption else title, fontsize=12)
    return _save(fig, path)


def _draw_boundary_line(ax: Axes, rows: pd.DataFrame, label: str, color: Any, marker: str) -> None:
    """One facet's largest trainable eta per warmup (rows sorted by warmup_steps), with a
    band up to the first diverged eta and ▽ where every eta diverged."""
    x = rows["warmup_steps"].to_numpy(float)
    lo = rows["max_trainable_eta"].to_numpy(float)
    hi = rows["min_diverged_eta"].to_numpy(float)
    if np.isnan(lo).all():
        label += r" (no trainable $\eta$)"
    ax.plot(x, lo, marker=marker, color=color, lw=2, label=label)
    below = np.isnan(lo) & np.isfinite(hi)
    if below.any():  # everything diverged: the boundary lies below the first diverged eta
        ax.plot(
            x[below],
            hi[below],
            marker="v",
            ls="",
            color=color,
            markerfacecolor="none",
            markersize=9,
        )
    band = np.isfinite(lo) & np.isfinite(hi)
    if band.any():
        ax.fill_between(x, lo, hi, where=band, color=color, alpha=0.15, lw=0)


# --------------------------------------------------------------------------- trajectories


def choose_trajectory_trials(trials: pd.DataFrame, steps: pd.DataFrame, n: int = 4) -> list[str]:
    """A warmup comparison: trials of one facet and seed at the largest eta reached by several warmups.

    Picks the facet with the most trials that have steps, its first seed, and the
    largest eta with at least two warmup lengths of which one did not diverge; then up
    to `n` warmup lengths spread from shortest to longest.
    """
    have = trials[trials["trial_id"].astype(str).isin(set(steps["trial_id"].astype(str)))]
    if have.empty:
        return []
    facets = [f for f in DEFAULT_FACETS if f in have.columns]
    if facets:
        sizes = have.astype({f: object for f in facets}).groupby(facets, dropna=False).size()
        top = sizes.idxmax()
        top = top if isinstance(top, tuple) else (top,)
        for f, v in zip(facets, top, strict=True):
            have = have[have[f].isna()] if v is None or pd.isna(v) else have[have[f] == v]
    if "init_seed" in have.columns and have["init_seed"].notna().any():
        have = have[have["init_seed"] == have["init_seed"].min()]
    column = "eta_trgt_relative" if have["eta_trgt_relative"].notna().all() else "eta_trgt"
    candidates = []
    for value, rows in have.groupby(column):
        if rows["warmup_steps"].nunique() >= 2 and (rows["status"].astype(str) != "diverged").any():
            candidates.append(value)
    if candidates:
        have = have[have[column] == max(candidates)]
    have = have.sort_values("warmup_steps").drop_duplicates("warmup_steps")
    if len(have) > n:
        idx = np.unique(np.linspace(0, len(have) - 1, n).round().astype(int))
        have = have.iloc[idx]
    return have["trial_id"].astype(str).tolist()


def _threshold_series(trial: pd.Series, rows: pd.DataFrame) -> np.ndarray:
    threshold = rows["threshold"].to_numpy(float)
    if np.isfinite(threshold).any():
        return threshold
    return np.asarray(threshold_at(trial, rows["lr"].to_numpy(float)), dtype=float)


def _trial_label(trial: pd.Series) -> str:
    eta = trial.get("eta_trgt_relative")
    eta_text = (
        rf"$\eta$={float(eta):g}/$\lambda_0$"
        if pd.notna(eta)
        else rf"$\eta$={float(trial['eta_trgt']):.3g}"
    )
    label = ", ".join(
        [rf"$T_{{wrm}}$={trial['warmup_steps']}", eta_text, f"{trial.get('optimizer')}"]
    )
    status = str(trial.get("status"))
    return label if status == "completed" else f"{label} [{status}]"


def _draw_trajectories(
    ax_loss: Axes,
    ax_sharp: Axes,
    trials: pd.DataFrame,
    steps: pd.DataFrame,
    trial_ids: Sequence[str],
) -> set[str]:
    """Draw loss and (pre-conditioned) sharpness of `trial_ids`; return the sharpness columns used."""
    by_id = trials.assign(_id=trials["trial_id"].astype(str)).set_index("_id")
    palette = sns.color_palette("colorblind", max(3, len(trial_ids)))
    kinds = set()
    step_ids = steps["trial_id"].astype(str)
    for k, trial_id in enumerate(trial_ids):
        trial = by_id.loc[trial_id]
        rows = steps[step_ids == trial_id].sort_values("step")
        color = palette[k % len(palette)]
        label = _trial_label(trial)
        x = rows["step"].to_numpy(float)
        loss = rows["train_loss"].to_numpy(float)
        ok = np.isfinite(loss) & (loss > 0)
        ax_loss.plot(x[ok], loss[ok], color=color, lw=1.6, label=label)
        if str(trial.get("status")) == "diverged" and ok.any():
            ax_loss.plot(x[ok][-1], loss[ok][-1], marker="X", color=color, markersize=9, ls="")
        column = sharpness_column(trial.get("optimizer"))
        kinds.add(column)
        sharp = rows[column].to_numpy(float)
        measured = np.isfinite(sharp) & (sharp > 0)
        ax_sharp.plot(x[measured], sharp[measured], color=color, lw=1.6, marker=".", markersize=4)
        threshold = _threshold_series(trial, rows)
        finite = np.isfinite(threshold) & (threshold > 0)
        ax_sharp.plot(x[finite], threshold[finite], color=color, lw=1.2, ls="--")
        warmup = trial.get("warmup_steps")
        if pd.notna(warmup) and 1 < int(warmup) <= x.max(initial=0):
            for ax in (ax_loss, ax_sharp):
                ax.axvline(int(warmup), color=color, lw=1, ls=":")
    return kinds


def _sharpness_label(kinds: set[str]) -> str:
    names = []
    if "sharpness" in kinds:
        names.append(r"sharpness $\lambda_H$")
    if "preconditioned_sharpness" in kinds:
        names.append(r"pre-cond. sharpness $\lambda_{\max}(P^{-1}H)$")
    return " / ".join(names) or "sharpness"


def _plain_log_ticks(ax: Axes) -> None:
    """Plain numbers (0.5, 20) instead of 5x10^-1 on a log y-axis spanning under 3 decades."""
    lo, hi = ax.get_ylim()
    if lo <= 0 or hi / lo >= 1000:
        return
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    # Label the 2x and 5x minor ticks too, so a short axis still reads at a glance.
    ax.yaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")
    )


def _style_trajectory_axes(ax_loss: Axes, ax_sharp: Axes, kinds: set[str]) -> None:
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("train loss (log)")
    ax_sharp.set_yscale("log")
    ax_sharp.set_ylabel(_sharpness_label(kinds) + " (log)")
    ax_sharp.set_xlabel("step")
    for ax in (ax_loss, ax_sharp):
        ax.grid(True, alpha=0.3)
        _plain_log_ticks(ax)
    style = [
        Line2D([], [], color="grey", lw=1.6, label="measured"),
        Line2D([], [], color="grey", lw=1.2, ls="--", label="stability threshold"),
        Line2D([], [], color="grey", lw=1, ls=":", label="end of warmup"),
    ]
    ax_sharp.legend(handles=style, fontsize=8, loc="best")


def plot_trajectories(
    trials: pd.DataFrame,
    steps: pd.DataFrame,
    trial_ids: Sequence[str] | None = None,
    *,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Train loss (log) and sharpness vs step for chosen trials, threshold dashed, warmup end dotted.

    SGD trials show the sharpness against 2/eta_t; Adam-family trials the pre-conditioned
    sharpness against Adam's threshold. Default trials: `choose_trajectory_trials`.
    """
    trial_ids = (
        list(trial_ids) if trial_ids is not None else choose_trajectory_trials(trials, steps)
    )
    if not trial_ids:
        raise ValueError("no trials with step rows to plot")
    unknown = set(trial_ids) - set(trials["trial_id"].astype(str))
    if unknown:
        raise KeyError(f"trial_ids not in trials: {sorted(unknown)}")
    fig = Figure(figsize=(8.5, 7.0), layout="constrained")
    ax_loss, ax_sharp = fig.subplots(2, 1, sharex=True)
    kinds = _draw_trajectories(ax_loss, ax_sharp, trials, steps, trial_ids)
    _style_trajectory_axes(ax_loss, ax_sharp, kinds)
    ax_loss.legend(fontsize=8, loc="best")
    fig.suptitle("Training trajectories", fontsize=12)
    return _save(fig, path)


def trajectory_facets(
    trials: pd.DataFrame, steps: pd.DataFrame, facets: Sequence[str] = DEFAULT_FACETS
) -> list[tuple[tuple, pd.DataFrame]]:
    """(facet key, that facet's trials) for each facet whose trials have step rows, sorted."""
    have = trials[trials["trial_id"].astype(str).isin(set(steps["trial_id"].astype(str)))]
    facets = [f for f in facets if f in have.columns]
    if have.empty or not facets:
        return []
    groups = have.astype({f: object for f in facets}).groupby(facets, dropna=False, sort=True)
    return [
        (tuple(facet_value(k) for k in (key if isinstance(key, tuple) else (key,))), rows)
        for key, rows in groups
    ]


def plot_trajectories_by_facet(
    trials: pd.DataFrame,
    steps: pd.DataFrame,
    facets: Sequence[str] = DEFAULT_FACETS,
    *,
    max_facets: int = 4,
    path: str | os.PathLike | None = None,
) -> Figure:
    """`plot_trajectories` side by side, one column per facet (e.g. SP vs muP regimes).

    Each column shows that facet's own warmup comparison (`choose_trajectory_trials` on
    its trials), so sharpening and reduction regimes can be read next to each other.
    Raises ValueError when fewer than two facets have step rows.

    Args:
        trials: the trials table (`results.load`).
        steps: the steps table (`results.load`).
        facets: trials columns whose combinations get a column each.
        max_facets: at most this many columns, the first facets in sorted order.
        path: where to save a PNG, if given.
    """
    groups = trajectory_facets(trials, steps, facets)[:max_facets]
    if len(groups) < 2:
        raise ValueError("fewer than two facets with step rows")
    facets = [f for f in facets if f in trials.columns]
    varying, caption = _split_facets(facets, [key for key, _ in groups])
    fig = Figure(figsize=(4.8 * len(groups), 7.0), layout="constrained")
    axes = fig.subplots(2, len(groups), sharex=True, squeeze=False)
    for col, (key, rows) in enumerate(groups):
        ax_loss, ax_sharp = axes[0, col], axes[1, col]
        kinds = _draw_trajectories(
            ax_loss, ax_sharp, trials, steps, choose_trajectory_trials(rows, steps)
        )
        _style_trajectory_axes(ax_loss, ax_sharp, kinds)
        ax_loss.set_title(_panel_title(facets, key, varying), fontsize=10)
        ax_loss.legend(fontsize=7, loc="best")
    title = "Training trajectories per facet" + (f"\n{caption}" if caption else "")
    fig.suptitle(title, fontsize=12)
    return _save(fig, path)


# --------------------------------------------------------------------------- Adam vs GI-Adam


def has_adam_and_giadam(trials: pd.DataFrame) -> bool:
    """Whether the trials include both Adam and GI-Adam runs."""
    present = set(trials["optimizer"].dropna().astype(str)) if "optimizer" in trials else set()
    return {"adam", "gi-adam"} <= present


def _matched_pair(trials: pd.DataFrame, steps: pd.DataFrame) -> list[str]:
    """An Adam and a GI-Adam trial with the same eta, the shortest warmup and the first seed."""
    have = trials[trials["trial_id"].astype(str).isin(set(steps["trial_id"].astype(str)))]
    adam = have[have["optimizer"].astype(str) == "adam"]
    gi = have[have["optimizer"].astype(str) == "gi-adam"]
    keys = [
        c
        for c in ("eta_trgt", "warmup_steps", "init_seed", "parameterization", "init_scale")
        if c in have
    ]
    pairs = adam.astype({c: object for c in keys}).merge(
        gi.astype({c: object for c in keys}), on=keys, suffixes=("_adam", "_gi")
    )
    if pairs.empty:
        return []
    # Most telling: a pair that did not both diverge, at the shortest warmup (where
    # GI-Adam's built-in warmup matters most), at the largest such eta.
    both_diverged = (pairs["status_adam"].astype(str) == "diverged") & (
        pairs["status_gi"].astype(str) == "diverged"
    )
    pairs = pairs.assign(_both=both_diverged).sort_values(
        ["_both", "warmup_steps", "eta_trgt"], ascending=[True, True, False], kind="stable"
    )
    best = pairs.iloc[0]
    return [str(best["trial_id_adam"]), str(best["trial_id_gi"])]


def plot_adam_vs_giadam(
    trials: pd.DataFrame,
    steps: pd.DataFrame,
    *,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Adam next to GI-Adam: divergence boundaries, and loss / pre-conditioned sharpness of a matched pair."""
    if not has_adam_and_giadam(trials):
        raise ValueError("need both 'adam' and 'gi-adam' trials")
    subset = trials[trials["optimizer"].astype(str).isin(["adam", "gi-adam"])]
    fig = Figure(figsize=(14.0, 4.8), layout="constrained")
    ax_bound, ax_loss, ax_sharp = fig.subplots(1, 3)
    facets = [f for f in DEFAULT_FACETS if f in subset.columns]
    plot_boundary(subset, facets, "eta_trgt", ax=ax_bound)
    ax_bound.set_title("divergence boundary")
    pair = _matched_pair(subset, steps)
    if pair:
        kinds = _draw_trajectories(ax_loss, ax_sharp, subset, steps, pair)
        _style_trajectory_axes(ax_loss, ax_sharp, kinds)
        ax_loss.set_xlabel("step")
        ax_loss.legend(fontsize=8)
        ax_loss.set_title("train loss, matched pair")
        ax_sharp.set_title("pre-conditioned sharpness, Adam threshold dashed")
    else:
        for ax in (ax_loss, ax_sharp):
            ax.text(
                0.5,
                0.5,
                "no matched Adam / GI-Adam pair\nwith step data",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            ax.set_axis_off()
    fig.suptitle("Adam vs GI-Adam ($v_0 = g_0^2$)", fontsize=12)
    return _save(fig, path)
