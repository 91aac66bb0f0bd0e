"""Turn a sweep's trials and steps into phase diagrams, divergence boundaries and regime maps.

Everything starts from one tidy table, `phase_table`: one row per facet x warmup_steps
x eta_trgt cell, aggregated over seed replicates (`init_seed`, `data_seed`). Rules:

- Cell status, first match wins: `missing` (no trial in the cell), `diverged` (any
  seed diverged: the cell is not reliably trainable), `stuck` (any seed stuck),
  `ok` (at least one seed completed; seeds that ended in `error` or `stopped` are
  ignored, as neither says how the optimization ends), `stopped` (a scheduler such
  as ASHA stopped every other seed early: no final metric), `error` (every seed
  errored).
- The metric mean/std are over the completed and stuck seeds with a finite value
  (std is the sample std, NaN for a single seed).
- A trial counts once: a results root whose sweeps share a grid point holds that trial
  (the same id) once per sweep (`unique_trials`).
- The divergence boundary follows the paper: a cell is trainable when it is `ok`;
  `diverged` and `stuck` cells failed (a run that ends below 1.5x chance accuracy
  did not train, as the paper counts it). `stuck_trainable=True` keeps the older
  reading, where only divergence fails. `stopped`, `error` and `missing` cells are
  unknown and ignored.
- The eta axis is `eta_trgt_relative` (multiples of 1/lambda0, exact grid values, the
  same across seeds whose lambda0 differ) when every trial of the facet has it, else
  the absolute `eta_trgt` (`eta="auto"`); either can be forced.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from results.schema import ADAM_FAMILY, STATUSES

__all__ = [
    "BOUNDARY_CENSORING",
    "CELL_STATUSES",
    "DEFAULT_FACETS",
    "ETA_COLUMNS",
    "REGIME_COLUMNS",
    "FacetKey",
    "PhaseDiagram",
    "best_configs",
    "boundary_text",
    "divergence_boundary",
    "facet_label",
    "facet_value",
    "failed_statuses",
    "failure_rule",
    "metric_columns",
    "phase_diagram",
    "phase_table",
    "regime_map",
    "resolve_eta",
    "resolve_metric",
    "sharpness_column",
    "threshold_at",
    "trainable_statuses",
    "unique_trials",
]

DEFAULT_FACETS: tuple[str, ...] = ("parameterization", "optimizer", "init_scale")
CELL_STATUSES: tuple[str, ...] = ("ok", "stuck", "diverged", "stopped", "error", "missing")
ETA_COLUMNS: tuple[str, ...] = ("eta_trgt", "eta_trgt_relative")

FacetKey = tuple[Hashable, ...]


# --------------------------------------------------------------------------- grouping


def facet_value(value: Any) -> Hashable:
    """Plain Python value for a facet key (NaN/NA -> None, numpy scalars -> Python)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _facet_groups(
    trials: pd.DataFrame, facets: Sequence[str]
) -> list[tuple[FacetKey, pd.DataFrame]]:
    """(facet key, rows) for every observed combination of `facets`, in sorted order."""
    facets = list(facets)
    missing = [f for f in facets if f not in trials.columns]
    if missing:
        raise KeyError(f"facet column(s) {missing} not in trials")
    if not facets:
        return [((), trials)]
    groups = trials.groupby(facets, dropna=False, observed=True, sort=True)
    out = []
    for key, rows in groups:
        key = key if isinstance(key, tuple) else (key,)
        out.append((tuple(facet_value(k) for k in key), rows))
    return out


def facet_label(facets: Sequence[str], key: FacetKey) -> str:
    """Human-readable facet title, e.g. 'parameterization=sp, optimizer=sgd'."""
    return ", ".join(f"{name}={_fmt(value)}" for name, value in zip(facets, key, strict=True))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def resolve_eta(rows: pd.DataFrame, eta: str = "auto") -> str:
    """The eta column to use for `rows`: `eta` itself, or for 'auto' relative when all rows have it."""
    if eta == "auto":
        rel = rows.get("eta_trgt_relative")
        if rel is not None and len(rows) and rel.notna().all():
            return "eta_trgt_relative"
        return "eta_trgt"
    if eta not in ETA_COLUMNS:
        raise ValueError(f"eta must be 'auto' or one of {list(ETA_COLUMNS)}, got {eta!r}")
    return eta


def metric_columns(trials: pd.DataFrame) -> list[str]:
    """The numeric summary columns of `trials` a phase diagram can show, e.g. final_test_accuracy."""
    return [
        c
        for c in trials.columns
        if pd.api.types.is_numeric_dtype(trials[c]) and not pd.api.types.is_bool_dtype(trials[c])
    ]


def resolve_metric(trials: pd.DataFrame, metric: str) -> str:
    """The trials column `metric` names: itself, or `final_<metric>` (so `test_accuracy`
    means `final_test_accuracy`); ValueError naming the choices if neither is a numeric column."""
    numeric = metric_columns(trials)
    for name in (metric, f"final_{metric}"):
        if name in numeric:
            return name
    finals = ", ".join(c for c in numeric if c.startswith("final_"))
    raise ValueError(
        f"metric {metric!r} is not a numeric trials column; e.g. {finals or 'final_test_loss'}"
    )


def _round_eta(values: pd.Series) -> pd.Series:
    # Grid values computed in different processes can differ in the last bits; 12
    # significant digits keeps cells distinct while merging such twins.
    data = values.astype(float).to_numpy()
    return pd.Series([float(f"{v:.12g}") for v in data], index=values.index)


def _cell_status(statuses: pd.Series) -> str:
    present = set(statuses.astype(str))
    rules = (
        ("diverged", "diverged"),
        ("stuck", "stuck"),
        ("completed", "ok"),
        ("stopped", "stopped"),
    )
    for status, cell in rules:
        if status in present:
            return cell
    return "error" if present else "missing"


def unique_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Each trial id once. Two sweeps that share a grid point run the same trial (its id
    hashes its config), and a results root loads both copies: one is kept, an ended run
    over one that ended in `error`, else the first."""
    if "trial_id" not in trials.columns or not trials["trial_id"].duplicated().any():
        return trials
    errored = trials["status"].astype(str).eq("error") if "status" in trials.columns else False
    order = trials.assign(_errored=errored).sort_values("_errored", kind="stable")
    kept = order.drop_duplicates("trial_id").drop(columns="_errored")
    return trials.loc[trials.index.isin(kept.index)]


# --------------------------------------------------------------------------- phase diagrams


def phase_table(
    trials: pd.DataFrame,
    metric: str = "final_test_loss",
    facets: Sequence[str] = DEFAULT_FACETS,
    eta: str = "auto",
) -> pd.DataFrame:
    """Tidy phase-diagram cells: facets, warmup_steps, eta_column, eta, mean, std, n, status, ...

    One row per facet x warmup_steps x eta value, including `missing` cells of the
    grid (the union of warmup_steps and of eta values over all facets on the same
    eta column). `eta_trgt`, `eta_x_lambda0` (= eta_trgt * lambda0) and
    `eta_over_eta_c` are cell means over its trials, so a relative grid also reads
    in absolute units.
    """
    if metric not in trials.columns:
        raise KeyError(f"metric {metric!r} not in trials")
    facets = list(facets)
    records = []
    for key, rows in _facet_groups(unique_trials(trials), facets):
        column = resolve_eta(rows, eta)
        rows = rows[rows[column].notna() & rows["warmup_steps"].notna()]
        if rows.empty:
            continue
        rows = rows.assign(
            _eta=_round_eta(rows[column]),
            _x_lambda0=rows["eta_trgt"].astype(float) * rows["lambda0"].astype(float),
            _over_eta_c=rows["eta_trgt"].astype(float) / rows["eta_c"].astype(float),
            _status=rows["status"].astype(str),
        )
        for (warmup, eta_value), cell in rows.groupby(["warmup_steps", "_eta"], sort=True):
            usable = cell[cell["_status"].isin(["completed", "stuck"])]
            values = usable[metric].astype(float)
            values = values[np.isfinite(values)]
            counts = cell["_status"].value_counts()
            records.append(
                {
                    **dict(zip(facets, key, strict=True)),
                    "warmup_steps": int(warmup),
                    "eta_column": column,
                    "eta": float(eta_value),
                    "mean": values.mean() if len(values) else np.nan,
                    "std": values.std(ddof=1) if len(values) > 1 else np.nan,
                    "n": len(values),
                    "n_trials": len(cell),
                    **{f"n_{s}": int(counts.get(s, 0)) for s in STATUSES},
                    "status": _cell_status(cell["_status"]),
                    "eta_trgt": cell["eta_trgt"].astype(float).mean(),
                    "eta_x_lambda0": cell["_x_lambda0"].mean(),
                    "eta_over_eta_c": cell["_over_eta_c"].mean(),
                }
            )
    table = pd.DataFrame.from_records(records, columns=_phase_columns(facets))
    return _add_missing_cells(table, facets)


def _phase_columns(facets: Sequence[str]) -> list[str]:
    return [
        *facets,
        "warmup_steps",
        "eta_column",
        "eta",
        "mean",
        "std",
        "n",
        "n_trials",
        "n_completed",
        "n_diverged",
        "n_stuck",
        "n_stopped",
        "n_error",
        "status",
        "eta_trgt",
        "eta_x_lambda0",
        "eta_over_eta_c",
    ]


def _add_missing_cells(table: pd.DataFrame, facets: list[str]) -> pd.DataFrame:
    if table.empty:
        return table
    warmups = sorted(table["warmup_steps"].unique())
    filled = []
    for column, same_axis in table.groupby("eta_column", sort=False):
        etas = sorted(same_axis["eta"].unique())
        keys = same_axis[facets].drop_duplicates() if facets else pd.DataFrame(index=[0])
        for _, key in keys.iterrows():
            grid = pd.DataFrame(
                [(w, e) for w in warmups for e in etas], columns=["warmup_steps", "eta"]
            )
            for f in facets:
                grid[f] = key[f]
            grid["eta_column"] = column
            filled.append(grid)
    grid = pd.concat(filled, ignore_index=True)
    on = [*facets, "warmup_steps", "eta_column", "eta"]
    # Facet values may be None; merging on object columns treats None == None as a match.
    merged = grid.astype({f: object for f in facets}).merge(
        table.astype({f: object for f in facets}), on=on, how="left"
    )
    merged["status"] = merged["status"].fillna("missing")
    for col in ("n", "n_trials", *(f"n_{s}" for s in STATUSES)):
        merged[col] = merged[col].fillna(0).astype(int)
    merged["status"] = pd.Categorical(merged["status"], categories=list(CELL_STATUSES))
    return merged[_phase_columns(facets)].sort_values(on, kind="stable").reset_index(drop=True)


@dataclass
class PhaseDiagram:
    """One facet's phase diagram: tables indexed by warmup_steps (rows) x eta (columns)."""

    facet: dict[str, Hashable]
    metric: str
    eta_column: str  # "eta_trgt" (absolute) or "eta_trgt_relative" (x 1/lambda0)
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame  # seeds contributing to mean
    status: pd.DataFrame  # one of CELL_STATUSES per cell
    cells: pd.DataFrame = field(repr=False)  # the tidy rows behind the tables

    @property
    def title(self) -> str:
        """Facet title for plots."""
        return facet_label(list(self.facet), tuple(self.facet.values())) or self.metric


def phase_diagram(
    trials: pd.DataFrame,
    metric: str = "final_test_loss",
    facets: Sequence[str] = DEFAULT_FACETS,
    eta: str = "auto",
) -> dict[FacetKey, PhaseDiagram]:
    """Phase diagram per facet: warmup_steps x eta tables of metric mean/std, seed count and status."""
    table = phase_table(trials, metric, facets, eta)
    facets = list(facets)
    diagrams: dict[FacetKey, PhaseDiagram] = {}
    if table.empty:
        return diagrams
    for key, cells in _facet_groups(table, facets):

        def pivot(values: str, cells: pd.DataFrame = cells) -> pd.DataFrame:
            return cells.pivot(index="warmup_steps", columns="eta", values=values)

        status = pivot("status").astype(object)
        diagrams[key] = PhaseDiagram(
            facet=dict(zip(facets, key, strict=True)),
            metric=metric,
            eta_column=str(cells["eta_column"].iloc[0]),
            mean=pivot("mean").astype(float),
            std=pivot("std").astype(float),
            n=pivot("n").astype(int),
            status=status,
            cells=cells.reset_index(drop=True),
        )
    return diagrams


# --------------------------------------------------------------------------- boundary

# `censored` values of `divergence_boundary`: where the true boundary lies for a row.
BOUNDARY_CENSORING: tuple[str, ...] = ("no", "above", "below", "unknown")


def trainable_statuses(stuck_trainable: bool = False) -> tuple[str, ...]:
    """Cell statuses that count as trainable: `ok`, and `stuck` only with `stuck_trainable`."""
    return ("ok", "stuck") if stuck_trainable else ("ok",)


def failed_statuses(stuck_trainable: bool = False) -> tuple[str, ...]:
    """Cell statuses that count as failed: `diverged`, and `stuck` unless `stuck_trainable`."""
    return ("diverged",) if stuck_trainable else ("diverged", "stuck")


def failure_rule(stuck_trainable: bool = False) -> str:
    """The boundary's failure rule in words, for figures and summaries."""
    return "stuck counts as trainable" if stuck_trainable else "stuck counts as failed"


def divergence_boundary(
    trials: pd.DataFrame,
    facets: Sequence[str] = DEFAULT_FACETS,
    eta: str = "auto",
    *,
    stuck_trainable: bool = False,
) -> pd.DataFrame:
    """Per facet and warmup_steps: the largest trainable eta and the smallest failed eta above it.

    Works for grid sweeps and for boundary searches alike (any set of eta values).
    A cell failed when it diverged or, by default (the paper's rule), got stuck;
    `stuck_trainable=True` counts stuck cells as trainable instead.
    `max_trainable_*`/`min_failed_*` come in the facet's eta units (`eta_column`),
    absolute (`_eta_trgt`), times lambda0 (`_x_lambda0`) and over eta_c (`_over_eta_c`).
    `censored` says what the row knows of the true boundary: `no` (between
    `max_trainable_eta` and `min_failed_eta`), `above` (nothing failed above the largest
    trainable eta: the boundary is at least `max_trainable_eta`, e.g. the grid's top),
    `below` (nothing trainable: the boundary is below `min_failed_eta`), `unknown`
    (neither). `non_monotone` flags a failed cell below the largest trainable one.
    """
    table = phase_table(trials, _any_metric(trials), facets, eta)
    facets = list(facets)
    columns = [
        *facets,
        "warmup_steps",
        "eta_column",
        "max_trainable_eta",
        "min_failed_eta",
        "censored",
        "max_trainable_eta_trgt",
        "max_trainable_x_lambda0",
        "max_trainable_over_eta_c",
        "min_failed_eta_trgt",
        "min_failed_x_lambda0",
        "min_failed_over_eta_c",
        "n_trainable",
        "n_failed",
        "non_monotone",
    ]
    good, bad = trainable_statuses(stuck_trainable), failed_statuses(stuck_trainable)
    rows = []
    group_cols = [*facets, "warmup_steps", "eta_column"]
    for key, cells in table.astype({f: object for f in facets}).groupby(
        group_cols, dropna=False, sort=True
    ):
        status = cells["status"].astype(str)
        trainable = cells[status.isin(good)]
        failed = cells[status.isin(bad)]
        top = trainable.loc[trainable["eta"].idxmax()] if len(trainable) else None
        above = failed[failed["eta"] > top["eta"]] if top is not None else failed
        first = above.loc[above["eta"].idxmin()] if len(above) else None

        def pick(row: pd.Series | None, column: str) -> float:
            return float(row[column]) if row is not None else np.nan

        rows.append(
            {
                **dict(zip(group_cols, key, strict=True)),
                "max_trainable_eta": pick(top, "eta"),
                "min_failed_eta": pick(first, "eta"),
                "censored": _censoring(top is not None, first is not None),
                "max_trainable_eta_trgt": pick(top, "eta_trgt"),
                "max_trainable_x_lambda0": pick(top, "eta_x_lambda0"),
                "max_trainable_over_eta_c": pick(top, "eta_over_eta_c"),
                "min_failed_eta_trgt": pick(first, "eta_trgt"),
                "min_failed_x_lambda0": pick(first, "eta_x_lambda0"),
                "min_failed_over_eta_c": pick(first, "eta_over_eta_c"),
                "n_trainable": len(trainable),
                "n_failed": len(failed),
                "non_monotone": bool(top is not None and (failed["eta"] < top["eta"]).any()),
            }
        )
    out = pd.DataFrame.from_records(rows, columns=columns)
    out["warmup_steps"] = out["warmup_steps"].astype(int)
    return out


def _censoring(has_trainable: bool, has_failed_above: bool) -> str:
    if has_trainable:
        return "no" if has_failed_above else "above"
    return "below" if has_failed_above else "unknown"


def boundary_text(row: Mapping[str, Any], unit: str = "eta", precision: int = 4) -> str:
    """A `divergence_boundary` row's largest trainable eta as text: '8'; '≥ 32' when nothing
    failed above it (a lower bound); '< 1' when nothing was trainable (below the smallest
    failed eta); '?' when neither is known.

    `unit` picks the columns: "eta" (the facet's eta units), "eta_trgt" (absolute) or
    "x_lambda0" (`max_trainable_<unit>`, `min_failed_<unit>`).
    """
    censored = row["censored"]
    if censored == "below":
        return f"< {float(row[f'min_failed_{unit}']):.{precision}g}"
    if censored == "unknown":
        return "?"
    value = f"{float(row[f'max_trainable_{unit}']):.{precision}g}"
    return f"≥ {value}" if censored == "above" else value


def _any_metric(trials: pd.DataFrame) -> str:
    # The boundary needs statuses only; any metric column will do for phase_table.
    return "final_test_loss" if "final_test_loss" in trials.columns else "eta_trgt"


# --------------------------------------------------------------------------- best configs


def best_configs(
    trials: pd.DataFrame,
    metric: str = "final_test_loss",
    facets: Sequence[str] = DEFAULT_FACETS,
    eta: str = "auto",
    higher_is_better: bool | None = None,
    *,
    per_warmup: bool = False,
) -> pd.DataFrame:
    """Best (warmup_steps, eta) cell per facet by seed-mean `metric`, among cells with status `ok`.

    Args:
        trials: the trials table (`results.load`).
        metric: trials column to rank cells by (its seed mean).
        facets: trials columns whose combinations get a best cell each.
        eta: eta axis: "auto", "eta_trgt" or "eta_trgt_relative" (as `phase_table`).
        higher_is_better: rank descending; default True for metrics named '*accuracy*',
            else lower is better.
        per_warmup: the best eta per facet and warmup length instead of per facet.
    """
    if higher_is_better is None:
        higher_is_better = "accuracy" in metric
    table = phase_table(trials, metric, facets, eta)
    facets = list(facets)
    groups = [*facets, "warmup_steps"] if per_warmup else facets
    columns = [*facets, "warmup_steps", "eta_column", "eta", "eta_trgt", metric, "std", "n"]
    ok = table[(table["status"].astype(str) == "ok") & table["mean"].notna()]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    ok = ok.sort_values("mean", ascending=not higher_is_better, kind="stable")
    best = (
        ok.astype({f: object for f in facets}).groupby(groups, dropna=False, sort=True).head(1)
        if groups
        else ok.head(1)
    )
    best = best.rename(columns={"mean": metric})
    return best[columns].sort_values(groups or ["eta"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- regimes


def sharpness_column(optimizer: Any) -> str:
    """Steps column whose threshold matters: preconditioned sharpness for the Adam family."""
    return "preconditioned_sharpness" if str(optimizer) in ADAM_FAMILY else "sharpness"


REGIME_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "sharpness_column",
    "regime",
    "catapult",
    "catapult_step",
    "num_catapults",
    "warmup_end_step",
    "sharpness_at_warmup_end",
    "threshold_at_warmup_end",
    "ratio_at_warmup_end",
)

_TRIAL_CONTEXT = (
    "sweep",
    "status",
    "parameterization",
    "optimizer",
    "init_scale",
    "eta_trgt",
    "eta_trgt_relative",
    "warmup_steps",
    "init_seed",
)


def regime_map(
    trials: pd.DataFrame,
    steps: pd.DataFrame,
    *,
    window: int | None = None,
    rel_tol: float = 0.05,
) -> pd.DataFrame:
    """Per trial with steps: sharpening/reduction/flat regime, loss catapults, sharpness vs threshold at warmup end.

    `regime` is `unknown` when fewer than 3 sharpness values were measured. The
    sharpness used is `sharpness_column(optimizer)`; the threshold at warmup end is
    the steps' `threshold`, or computed from `lr` when that was not recorded.
    """
    from warmup_core import stability  # imported when called: loading results needs no torch

    context = [c for c in _TRIAL_CONTEXT if c in trials.columns]
    by_trial = {
        str(t): rows for t, rows in steps.groupby(steps["trial_id"].astype(str), observed=True)
    }
    records = []
    for _, trial in unique_trials(trials).iterrows():
        rows = by_trial.get(str(trial["trial_id"]))
        if rows is None or rows.empty:
            continue
        # A trial shared by two loaded sweeps has each step twice: once is enough.
        rows = rows.drop_duplicates("step").sort_values("step")
        column = sharpness_column(trial.get("optimizer"))
        record = {c: trial[c] for c in ("trial_id", *context)}
        record.update(_regime(stability, rows, column, window, rel_tol))
        record.update(_catapults(stability, rows, column))
        record.update(_at_warmup_end(stability, trial, rows, column))
        record["sharpness_column"] = column
        records.append(record)
    out = pd.DataFrame.from_records(
        records, columns=[*REGIME_COLUMNS[:1], *context, *REGIME_COLUMNS[1:]]
    )
    out["catapult"] = out["catapult"].astype(bool)
    out["num_catapults"] = out["num_catapults"].astype(int)
    out["catapult_step"] = out["catapult_step"].astype("Int64")
    out["warmup_end_step"] = out["warmup_end_step"].astype("Int64")
    for c in ("sharpness_at_warmup_end", "threshold_at_warmup_end", "ratio_at_warmup_end"):
        out[c] = out[c].astype(float)
    return out


def _finite(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    values = rows[column].astype(float)
    return rows[np.isfinite(values.to_numpy())]


def _regime(
    stability: Any, rows: pd.DataFrame, column: str, window: int | None, rel_tol: float
) -> dict:
    measured = _finite(rows, column)
    if len(measured) < 3:
        return {"regime": "unknown"}
    regime = stability.classify_regime(
        measured[column].to_numpy(float),
        measured["step"].to_numpy(),
        window=window,
        rel_tol=rel_tol,
    )
    return {"regime": str(regime)}


def _catapults(stability: Any, rows: pd.DataFrame, column: str) -> dict:
    # A diverged run ends in NaN/inf losses; the catapults of interest come before that.
    measured = _finite(rows, "train_loss")
    if len(measured) < 3:
        return {"catapult": False, "catapult_step": None, "num_catapults": 0}
    sharp = measured[column].astype(float).to_numpy()
    events = stability.detect_catapults(
        measured["train_loss"].to_numpy(float),
        sharp if np.isfinite(sharp).any() else None,
        steps=measured["step"].to_numpy(),
    )
    return {
        "catapult": bool(events),
        "catapult_step": int(events[0].peak_step) if events else None,
        "num_catapults": len(events),
    }


def _at_warmup_end(stability: Any, trial: pd.Series, rows: pd.DataFrame, column: str) -> dict:
    warmup = trial.get("warmup_steps")
    empty = {
        "warmup_end_step": None,
        "sharpness_at_warmup_end": np.nan,
        "threshold_at_warmup_end": np.nan,
        "ratio_at_warmup_end": np.nan,
    }
    if warmup is None or pd.isna(warmup):
        return empty
    # Last measurement at or before the end of warmup (sharpness is measured every k steps).
    measured = _finite(rows, column)
    measured = measured[measured["step"] <= int(warmup)]
    if measured.empty:
        return empty
    last = measured.iloc[-1]
    sharp = float(last[column])
    threshold = float(last["threshold"]) if pd.notna(last["threshold"]) else np.nan
    if not np.isfinite(threshold) and pd.notna(last["lr"]) and float(last["lr"]) > 0:
        threshold = float(threshold_at(trial, float(last["lr"])))
    return {
        "warmup_end_step": int(last["step"]),
        "sharpness_at_warmup_end": sharp,
        "threshold_at_warmup_end": threshold,
        "ratio_at_warmup_end": sharp / threshold
        if threshold and np.isfinite(threshold)
        else np.nan,
    }


def threshold_at(trial: pd.Series, lr: Any) -> Any:
    """Stability threshold of a trial's optimizer (its `optimizer_*` columns) at rate `lr`.

    For runs that did not record the `threshold` column; the same rule the trial applies.
    NaN when the trial does not name its optimizer. The hyperparameters read are those `warmup_core.optim` gives the trial's optimizer.
    """
    # Imported when called: loading and analysing results needs no torch.
    from warmup_core.optim import optimizer_defaults, stability_threshold

    name = trial.get("optimizer")
    if name is None or pd.isna(name):  # a trials file written without its config columns
        return np.full(np.shape(lr), np.nan) if np.ndim(lr) else np.nan
    hyper = {}
    for key, default in optimizer_defaults(name).items():
        value = trial.get(f"optimizer_{key}")
        if value is not None and not pd.isna(value):
            hyper[key] = bool(value) if isinstance(default, bool) else float(value)
    return stability_threshold(name, lr, **hyper)
