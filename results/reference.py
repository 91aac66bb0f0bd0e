"""The paper's own numbers as reference data: its official result tables read like a sweep.

The official code of Kalra & Barkeshli, "Why Warmup the Learning Rate?" (GitHub
`dayal-kalra/why-warmup`, MIT licence) publishes its WRN-16-4 / CIFAR-10 phase-diagram
runs as tab-separated tables in `vision/phase-diagrams/resnet_results/`. Each run has
an `eval_<config>.tab` (one row per epoch of 391 steps) and a `train_<config>.tab`
(one row per step); the configuration is only in the file name. `read_reference(path)`
reads a folder of such files, or a checkout of the repository (every `*.tab` below
`path`), into the trials and steps tables of `results.load`, one trial per run, in
sweep `REFERENCE_SWEEP`.

What the columns hold:

- Optimizers by our names (`OPTIMIZER_NAMES`): `adam` (optax), `gi-adam` (`grads_adam`:
  v0 = g0^2), `radam` (optax), `sgd`; `adam-base` is the official hand-written Adam
  (`base_adam`), the same algorithm as `adam` but a separate run, so it is kept apart
  rather than pooled with `adam` as if it were a second seed.
- Learning rates: `eta_trgt` is absolute. The muP SGD runs train at `2^n / lambda0`:
  their `eta_trgt_relative` is `2^n` and `lambda0` the table's `sharpness_init`.
- Schedule: linear warmup from `eta_init` (the official exponent `k` as
  `warmup_power`; `polynomial` when k != 1), then cosine decay to `eta_trgt / 10`
  when the decay exponent `p` > 0, else constant.
- Constants of the official scripts that the names leave out: `init_scale` 2.0 (the
  scripts' `varw`), `eta_init` 0 for the Adam family, `dtype` float32. The decay
  exponent `p` is `decay_power` and the floor `eta_min` 0.1 with `eta_min_relative_to`
  `eta_trgt`, as a sweep's trials table writes them; `reference_files` names the run's
  table(s).
- Steps: the eval table's rows at steps 391, 782, ... (`lr` of the epoch's last step;
  `train_loss`/`train_accuracy` are means over the epoch's augmented, mixup minibatches;
  test metrics on the clean test set). Where the run's train table is present, its
  per-step rows (the minibatch loss and accuracy of each update) replace the eval
  table's train columns, and the test metrics join them at the eval steps.
- Final metrics: the last eval row's (the last train row's when there is no eval
  table); none for a diverged run, as for our own trials.

Statuses, by the official scripts' rules, which our trials share (ours also call a
loss above `divergence_factor` x the initial one a divergence; the eval tables hold
no initial loss, so that test is left out here):

- `diverged`: a NaN or infinite train loss (the official scripts stop there);
  `diverged_step` is its step in the train table, else the eval row's. An eval table
  that ends more than an epoch before the run's last step, with no train table
  beside it, is also a divergence (the scripts stop early for nothing else), with
  the step unknown (null).
- `stuck`: final train accuracy below `STUCK_ACCURACY_FACTOR` (1.5) x chance: the last
  update's minibatch accuracy when the train table is present (the official check),
  else the last epoch's mean.
- `completed` otherwise.

`reference_boundary` gives the paper's largest trainable `eta_trgt` per optimizer and
warmup length, by `results.analysis.divergence_boundary`.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from results.analysis import divergence_boundary
from results.loading import Loaded, from_tables
from results.schema import steps_table, trial_table

__all__ = [
    "OPTIMIZER_NAMES",
    "REFERENCE_FACETS",
    "REFERENCE_SWEEP",
    "STUCK_ACCURACY_FACTOR",
    "TableName",
    "matching_reference",
    "parse_table_name",
    "read_reference",
    "reference_boundary",
]

REFERENCE_SWEEP = "why-warmup"
REFERENCE_FACETS: tuple[str, ...] = ("parameterization", "optimizer")
STUCK_ACCURACY_FACTOR = 1.5  # the official scripts' and `TrialConfig`'s default

# Official optimizer names -> ours; others keep their name with '-' for '_'.
OPTIMIZER_NAMES: dict[str, str] = {
    "adam": "adam",
    "base_adam": "adam-base",
    "grads_adam": "gi-adam",
    "radam": "radam",
    "sgd": "sgd",
}
# Official dataset names -> (ours, number of classes).
_DATASETS: dict[str, tuple[str, int]] = {
    "cifar-10": ("cifar10", 10),
    "cifar-100": ("cifar100", 100),
}
_OFFICIAL_INIT_SCALE = 2.0  # `varw` of the official scripts
_EPOCH_STEPS = 391  # ceil(50000 / 128): the eval tables' row spacing

# The name format of `train_resnet_*.py`; fields may hold underscores, hence a regex.
_PREFIX = (
    r"(?P<kind>eval|train)_(?P<dataset>[^_]+)_(?P<model>[A-Za-z]+\d*)_(?P<abc>sp|mup)"
    r"_scale(?P<scale>[\d.]+)_n(?P<width>\d+)_w(?P<widen>\d+)_d(?P<depth>\d+)"
    r"_bias(?P<bias>True|False)_(?P<act>[a-z]+)_I(?P<init_seed>\d+)_J(?P<data_seed>\d+)"
    r"_(?P<loss>[a-z]+)_augment(?P<augment>True|False)_(?P<opt>\w+?)_"
)
_SCHEDULE = r"_k(?P<k>[\d.]+)_p(?P<p>[\d.]+)_Twarm(?P<warmup>\d+)_T(?P<steps>\d+)_B(?P<batch>\d+)"
_ADAM_NAME = re.compile(
    _PREFIX + r"lr(?P<lr>[\d.]+)" + _SCHEDULE + r"_b1(?P<b1>[\d.]+)_b2(?P<b2>[\d.]+)\.tab"
)
_SGD_NAME = re.compile(
    _PREFIX
    + r"lrinit(?P<lrinit>[\d.]+)_lrexp(?P<lrexp>-?[\d.]+)"
    + _SCHEDULE
    + r"_m(?P<momentum>[\d.]+)_(?P<method>[a-z]+)\.tab"
)


@dataclass(frozen=True)
class TableName:
    """What an official table's file name says: its kind and the run's configuration."""

    kind: str  # "eval" or "train"
    run: str  # the name without its kind and extension: the same for a run's two tables
    fields: Mapping[str, str]  # the name's fields as written (`_ADAM_NAME`/`_SGD_NAME` groups)


def parse_table_name(name: str) -> TableName | None:
    """The fields of an official result table's file name, or None if it is not one."""
    match = _ADAM_NAME.fullmatch(name) or _SGD_NAME.fullmatch(name)
    if match is None:
        return None
    kind = match["kind"]
    return TableName(kind, name[len(kind) + 1 : -len(".tab")], match.groupdict())


# --------------------------------------------------------------------------- reading


def read_reference(path: str | os.PathLike) -> Loaded:
    """The official result tables under `path` (a folder of `.tab` files, or a checkout of
    `dayal-kalra/why-warmup`) as `results.load` would give a sweep of the same runs.

    A `.tab` file whose name is not in the official format, or that cannot be parsed,
    is listed in `.unreadable` as (path, reason). Raises FileNotFoundError when `path`
    does not exist and ValueError when it holds no official table.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or directory")
    files = [root] if root.is_file() else sorted(root.rglob("*.tab"))
    unreadable: list[tuple[str, str]] = []
    runs: dict[str, dict[str, tuple[TableName, Path]]] = {}
    for file in files:
        name = parse_table_name(file.name)
        if name is None:
            unreadable.append((str(file), "name not in the official result-table format"))
            continue
        runs.setdefault(name.run, {})[name.kind] = (name, file)
    if not runs:
        raise ValueError(f"{root}: no official result tables (eval_*.tab, train_*.tab)")
    trial_tables, step_tables = [], []
    for run in sorted(runs):
        try:
            summary, steps = _read_run(runs[run])
        except (OSError, ValueError, KeyError) as exc:
            for _, file in runs[run].values():
                unreadable.append((str(file), f"{type(exc).__name__}: {exc}"))
            continue
        trial_tables.append(trial_table(summary))
        step_tables.append(steps_table(steps, summary["trial_id"]))
    return from_tables(trial_tables, step_tables, unreadable)


def _read_table(file: Path) -> pd.DataFrame:
    # Written by `DataFrame.to_csv(sep="\t")`: a leading unnamed index column, NaN as "".
    table = pd.read_csv(file, sep="\t", index_col=0)
    if "step" not in table.columns:
        raise ValueError("no 'step' column")
    return table.sort_values("step", kind="stable").reset_index(drop=True)


def _read_run(tables: Mapping[str, tuple[TableName, Path]]) -> tuple[dict, pd.DataFrame]:
    """One run's trial summary and steps from its eval and/or train table."""
    name = next(iter(tables.values()))[0]
    fields = name.fields
    dataset, num_classes = _dataset(fields["dataset"])
    evals = _read_table(tables["eval"][1]) if "eval" in tables else None
    train = _read_table(tables["train"][1]) if "train" in tables else None
    summary = _config(name, dataset, _lambda0(evals, train))
    summary["reference_files"] = ";".join(sorted(f.name for _, f in tables.values()))
    summary.update(_outcome(evals, train, int(fields["steps"]), num_classes))
    return summary, _steps(evals, train)


def _dataset(official: str) -> tuple[str, int]:
    if official not in _DATASETS:
        raise ValueError(f"dataset {official!r} unknown; known: {', '.join(_DATASETS)}")
    return _DATASETS[official]


def _lambda0(evals: pd.DataFrame | None, train: pd.DataFrame | None) -> float | None:
    for table in (evals, train):
        if table is not None and "sharpness_init" in table.columns:
            return float(table["sharpness_init"].iloc[0])
    return None


def _config(name: TableName, dataset: str, lambda0: float | None) -> dict[str, Any]:
    """The trial columns the file name (and the official scripts' constants) determine."""
    f = name.fields
    k, p = float(f["k"]), float(f["p"])
    summary: dict[str, Any] = {
        "trial_id": _trial_id(name),
        "sweep": REFERENCE_SWEEP,
        "model": "wrn" if f["model"].startswith("WideResNet") else f["model"].lower(),
        "dataset": dataset,
        "loss": f["loss"],
        "parameterization": f["abc"],
        "init_scale": _OFFICIAL_INIT_SCALE,
        "optimizer": OPTIMIZER_NAMES.get(f["opt"], f["opt"].replace("_", "-")),
        "warmup_steps": int(f["warmup"]),
        "warmup_shape": "linear" if k == 1 else "polynomial",
        "warmup_power": k,
        "schedule": "cosine" if p > 0 else "constant",
        "num_steps": int(f["steps"]),
        "batch_size": int(f["batch"]),
        "init_seed": int(f["init_seed"]),
        "data_seed": int(f["data_seed"]),
        "lambda0": lambda0,
        "model_depth": int(f["depth"]),
        "dtype": "float32",
        "decay_power": p if p > 0 else 1.0,  # p = 0 is the constant schedule
    }
    if summary["model"] == "wrn":
        summary.update(model_widen=int(f["widen"]), model_base_channels=int(f["width"]))
    if f.get("lrexp") is not None:  # SGD at 2^n / lambda0
        if lambda0 is None:
            raise ValueError("an lrexp run without a sharpness_init column")
        relative = 2.0 ** float(f["lrexp"])
        summary.update(
            eta_trgt=relative / lambda0,
            eta_trgt_relative=relative,
            eta_init=float(f["lrinit"]),
            optimizer_momentum=float(f["momentum"]),
        )
    else:
        summary.update(
            eta_trgt=float(f["lr"]),
            eta_init=0.0,
            optimizer_beta1=float(f["b1"]),
            optimizer_beta2=float(f["b2"]),
        )
    summary["eta_init_mode"] = "zero" if summary["eta_init"] == 0 else "value"
    if p > 0:  # the official lr_min = lr_trgt / 10
        summary.update(eta_min=0.1, eta_min_relative_to="eta_trgt")
    return summary


def _trial_id(name: TableName) -> str:
    """Readable and unique: the fields that vary in the published tables, then a short hash
    of the whole run name (which tells apart any other field)."""
    f = name.fields
    rate = f"lr{f['lr']}" if f.get("lr") is not None else f"lrexp{f['lrexp']}"
    digest = hashlib.sha1(name.run.encode()).hexdigest()[:8]
    opt = f["opt"].replace("_", "-")
    return f"paper-{f['abc']}-{opt}-{rate}-twarm{f['warmup']}-{digest}"


def _outcome(
    evals: pd.DataFrame | None, train: pd.DataFrame | None, num_steps: int, num_classes: int
) -> dict[str, Any]:
    """Status, diverged step and final metrics of one run (module docstring: the rules)."""
    nonfinite = [
        (table, ~np.isfinite(table[column].to_numpy(float)))
        for table, column in ((train, "loss_step"), (evals, "train_loss"))
        if table is not None
    ]
    for table, bad in nonfinite:
        if bad.any():
            return {"status": "diverged", "diverged_step": int(table["step"][bad].iloc[0])}
    if train is None and float(evals["step"].iloc[-1]) + _EPOCH_STEPS <= num_steps:
        return {"status": "diverged", "diverged_step": None}
    last_eval = evals.iloc[-1] if evals is not None else None
    final_accuracy = (
        float(train["accuracy_step"].iloc[-1])
        if train is not None
        else float(last_eval["train_accuracy"])
    )
    learned = final_accuracy >= STUCK_ACCURACY_FACTOR / num_classes
    outcome: dict[str, Any] = {"status": "completed" if learned else "stuck"}
    if last_eval is not None:
        outcome.update(
            {
                f"final_{column}": float(last_eval[column])
                for column in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
                if column in last_eval
            }
        )
    else:
        outcome.update(
            final_train_loss=float(train["loss_step"].iloc[-1]),
            final_train_accuracy=final_accuracy,
        )
    return outcome


def _steps(evals: pd.DataFrame | None, train: pd.DataFrame | None) -> pd.DataFrame:
    """Steps rows: the train table's per-update rows with the eval rows' test metrics, or
    the eval rows alone."""
    test = ["test_loss", "test_accuracy"]
    if train is not None:
        steps = train.rename(columns={"loss_step": "train_loss", "accuracy_step": "train_accuracy"})
        steps = steps[["step", "lr", "train_loss", "train_accuracy"]]
        if evals is not None:
            steps = steps.merge(evals[["step", *test]], on="step", how="left")
    else:
        steps = evals[["step", "lr", "train_loss", "train_accuracy", *test]]
    steps = steps.astype({"step": "int64"})
    return steps.reset_index(drop=True)


# --------------------------------------------------------------------------- boundary


def reference_boundary(trials: pd.DataFrame, *, stuck_trainable: bool = False) -> pd.DataFrame:
    """The paper's largest trainable eta_trgt per optimizer and warmup length.

    One row per (parameterization, optimizer, warmup_steps), sorted so: `optimizer`,
    `parameterization`, `warmup_steps`, `max_trainable_eta` (absolute eta_trgt),
    `max_trainable_eta_relative` (x lambda0, for the runs at 2^n / lambda0; else NaN),
    `min_failed_eta` (the smallest failed eta_trgt above it), `censored` (as
    `divergence_boundary`: `above` when nothing failed above the largest trainable eta)
    and `final_test_accuracy` of the largest trainable run. Stuck runs count as failed
    unless `stuck_trainable`.
    """
    boundary = divergence_boundary(trials, REFERENCE_FACETS, stuck_trainable=stuck_trainable)
    # A warmup length that some other optimizer's runs have is no run of this one.
    boundary = boundary[boundary["censored"] != "unknown"]
    relative = boundary["eta_column"] == "eta_trgt_relative"
    out = pd.DataFrame(
        {
            "optimizer": boundary["optimizer"].astype(str),
            "parameterization": boundary["parameterization"].astype(str),
            "warmup_steps": boundary["warmup_steps"].astype(int),
            "max_trainable_eta": boundary["max_trainable_eta_trgt"],
            "max_trainable_eta_relative": boundary["max_trainable_eta"].where(relative),
            "min_failed_eta": boundary["min_failed_eta_trgt"],
            "censored": boundary["censored"],
        }
    )
    out["final_test_accuracy"] = [_accuracy_at(trials, row) for row in out.itertuples(index=False)]
    return out.sort_values(["optimizer", "parameterization", "warmup_steps"]).reset_index(drop=True)


def _accuracy_at(trials: pd.DataFrame, row: Any) -> float:
    if math.isnan(row.max_trainable_eta):
        return math.nan
    hit = trials[
        (trials["optimizer"].astype(str) == row.optimizer)
        & (trials["parameterization"].astype(str) == row.parameterization)
        & (trials["warmup_steps"] == row.warmup_steps)
        & np.isclose(trials["eta_trgt"].astype(float), row.max_trainable_eta, rtol=1e-9)
    ]
    return float(hit["final_test_accuracy"].mean()) if len(hit) else math.nan


def matching_reference(reference: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """The reference runs to compare a sweep with: those of the sweep's optimizers, or all
    of them when the sweep shares none."""
    ours = set(trials["optimizer"].dropna().astype(str)) if "optimizer" in trials else set()
    shared = reference["optimizer"].astype(str).isin(ours)
    return reference[shared] if shared.any() else reference
