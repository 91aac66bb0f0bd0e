"""Figures of a sweep's training runs: loss and sharpness trajectories, Adam vs GI-Adam.

`plot_trajectories` compares warmup lengths at one eta (`choose_trajectory_trials`),
`plot_trajectories_by_facet` does so for every facet side by side, and
`plot_adam_vs_giadam` sets a matched Adam / GI-Adam pair next to their boundaries.
Sharpness is drawn against its stability threshold: the sharpness against 2/eta for
SGD, the pre-conditioned sharpness against Adam's threshold for the Adam family. A
trial id names one configuration, so a trial that two sweeps of a results root share
is drawn once. Every function returns a matplotlib `Figure` and saves a PNG when
given `path`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from results.analysis import DEFAULT_FACETS, facet_value, sharpness_column, threshold_at
from results.figure_style import (
    facet_title,
    panel_order,
    panel_title,
    save_figure,
    split_facets,
)
from results.plots import plot_boundary

__all__ = [
    "choose_trajectory_trials",
    "has_adam_and_giadam",
    "plot_adam_vs_giadam",
    "plot_trajectories",
    "plot_trajectories_by_facet",
    "trajectory_facets",
]


# --------------------------------------------------------------------------- trajectories


def choose_trajectory_trials(trials: pd.DataFrame, steps: pd.DataFrame, n: int = 4) -> list[str]:
    """A warmup comparison: trials of one facet and seed at the largest eta reached by several warmups.

    Picks the facet with the most trials that have steps, its first seed, and the
    largest eta with at least two warmup lengths of which one did not diverge; then up
    to `n` warmup lengths spread from shortest to longest.
    """
    have = _once(trials)
    have = have[have["trial_id"].astype(str).isin(set(steps["trial_id"].astype(str)))]
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


def _once(trials: pd.DataFrame) -> pd.DataFrame:
    """`trials` with each trial id once: sweeps of one results root that ran the same
    configuration hold it under the same id."""
    return trials.drop_duplicates("trial_id")


def _draw_trajectories(
    ax_loss: Axes,
    ax_sharp: Axes,
    trials: pd.DataFrame,
    steps: pd.DataFrame,
    trial_ids: Sequence[str],
) -> set[str]:
    """Draw loss and (pre-conditioned) sharpness of `trial_ids`; return the sharpness columns used."""
    trials = _once(trials)
    by_id = trials.assign(_id=trials["trial_id"].astype(str)).set_index("_id")
    palette = sns.color_palette("colorblind", max(3, len(trial_ids)))
    kinds = set()
    step_ids = steps["trial_id"].astype(str)
    for k, trial_id in enumerate(trial_ids):
        trial = by_id.loc[trial_id]
        # The same trial in two sweeps: its steps once.
        rows = steps[step_ids == trial_id].drop_duplicates("step").sort_values("step")
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
    shown = _once(trials)
    shown = shown[shown["trial_id"].astype(str).isin(trial_ids)]
    facet = _shared_facet(shown)
    fig.suptitle("Training trajectories" + (f"\n{facet}" if facet else ""), fontsize=12)
    return save_figure(fig, path)


def _shared_facet(trials: pd.DataFrame) -> str:
    """The `DEFAULT_FACETS` values all of `trials` share, as a title."""
    names = [
        f for f in DEFAULT_FACETS if f in trials.columns and trials[f].nunique(dropna=False) == 1
    ]
    return facet_title(names, [facet_value(trials[f].iloc[0]) for f in names])


def trajectory_facets(
    trials: pd.DataFrame, steps: pd.DataFrame, facets: Sequence[str] = DEFAULT_FACETS
) -> list[tuple[tuple, pd.DataFrame]]:
    """(facet key, that facet's trials) for each facet whose trials have step rows, in
    panel order (`results.figure_style.panel_order`)."""
    have = trials[trials["trial_id"].astype(str).isin(set(steps["trial_id"].astype(str)))]
    facets = [f for f in facets if f in have.columns]
    if have.empty or not facets:
        return []
    groups = have.astype({f: object for f in facets}).groupby(facets, dropna=False, sort=True)
    out = [
        (tuple(facet_value(k) for k in (key if isinstance(key, tuple) else (key,))), rows)
        for key, rows in groups
    ]
    return sorted(out, key=lambda group: panel_order(facets, group[0]))


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
        max_facets: at most this many columns, the first facets in panel order; the
            title says how many there are.
        path: where to save a PNG, if given.
    """
    every = trajectory_facets(trials, steps, facets)
    groups = every[:max_facets]
    if len(groups) < 2:
        raise ValueError("fewer than two facets with step rows")
    facets = [f for f in facets if f in trials.columns]
    varying, caption = split_facets(facets, [key for key, _ in groups])
    fig = Figure(figsize=(4.8 * len(groups), 7.0), layout="constrained")
    axes = fig.subplots(2, len(groups), sharex=True, squeeze=False)
    for col, (key, rows) in enumerate(groups):
        ax_loss, ax_sharp = axes[0, col], axes[1, col]
        kinds = _draw_trajectories(
            ax_loss, ax_sharp, trials, steps, choose_trajectory_trials(rows, steps)
        )
        _style_trajectory_axes(ax_loss, ax_sharp, kinds)
        ax_loss.set_title(panel_title(facets, key, varying), fontsize=10)
        ax_loss.legend(fontsize=7, loc="best")
    title = "Training trajectories per facet"
    if len(every) > len(groups):
        title += f" (the first {len(groups)} of {len(every)} facets)"
    title += f"\n{caption}" if caption else ""
    fig.suptitle(title, fontsize=12)
    return save_figure(fig, path)


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
    stuck_trainable: bool = False,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Adam next to GI-Adam: divergence boundaries (stuck counts as failed unless
    `stuck_trainable`), and loss / pre-conditioned sharpness of a matched pair."""
    if not has_adam_and_giadam(trials):
        raise ValueError("need both 'adam' and 'gi-adam' trials")
    subset = _once(trials[trials["optimizer"].astype(str).isin(["adam", "gi-adam"])])
    fig = Figure(figsize=(14.0, 4.8), layout="constrained")
    ax_bound, ax_loss, ax_sharp = fig.subplots(1, 3)
    facets = [f for f in DEFAULT_FACETS if f in subset.columns]
    plot_boundary(subset, facets, "eta_trgt", stuck_trainable=stuck_trainable, ax=ax_bound)
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
    return save_figure(fig, path)
