"""Phase diagrams, divergence boundary, best configs and regimes on hand-made frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from results.analysis import (
    best_configs,
    boundary_text,
    divergence_boundary,
    phase_diagram,
    phase_table,
    regime_map,
    threshold_at,
)

STATUS = pd.CategoricalDtype(["completed", "diverged", "stuck", "error"])


def frame(rows: list[dict]) -> pd.DataFrame:
    """Trials frame shaped like `load` output from compact row dicts."""
    defaults = {
        "parameterization": "sp",
        "optimizer": "sgd",
        "init_scale": 1.0,
        "init_seed": 0,
        "lambda0": 10.0,
        "eta_c": 0.25,
        "eta_trgt_relative": np.nan,
        "final_test_loss": np.nan,
        "final_test_accuracy": np.nan,
    }
    df = pd.DataFrame([{**defaults, **r} for r in rows])
    df["trial_id"] = [f"t{i}" for i in range(len(df))]
    df["status"] = df["status"].astype(STATUS)
    return df


# One facet, warmups {1, 4}, etas {0.1, 0.2, 0.4}, two seeds. Known answers below.
GRID = frame(
    [
        # warmup 1
        {
            "warmup_steps": 1,
            "eta_trgt": 0.1,
            "init_seed": 0,
            "status": "completed",
            "final_test_loss": 0.5,
        },
        {
            "warmup_steps": 1,
            "eta_trgt": 0.1,
            "init_seed": 1,
            "status": "completed",
            "final_test_loss": 0.7,
        },
        {
            "warmup_steps": 1,
            "eta_trgt": 0.2,
            "init_seed": 0,
            "status": "completed",
            "final_test_loss": 0.3,
        },
        {"warmup_steps": 1, "eta_trgt": 0.2, "init_seed": 1, "status": "diverged"},
        {"warmup_steps": 1, "eta_trgt": 0.4, "init_seed": 0, "status": "diverged"},
        {"warmup_steps": 1, "eta_trgt": 0.4, "init_seed": 1, "status": "diverged"},
        # warmup 4: 0.1 errored on both seeds, 0.2 stuck on one seed, 0.4 has one seed only
        {"warmup_steps": 4, "eta_trgt": 0.1, "init_seed": 0, "status": "error"},
        {"warmup_steps": 4, "eta_trgt": 0.1, "init_seed": 1, "status": "error"},
        {
            "warmup_steps": 4,
            "eta_trgt": 0.2,
            "init_seed": 0,
            "status": "completed",
            "final_test_loss": 0.2,
        },
        {
            "warmup_steps": 4,
            "eta_trgt": 0.2,
            "init_seed": 1,
            "status": "stuck",
            "final_test_loss": 2.0,
        },
        {
            "warmup_steps": 4,
            "eta_trgt": 0.4,
            "init_seed": 0,
            "status": "completed",
            "final_test_loss": 0.1,
        },
    ]
)


def test_phase_diagram_tables_have_warmup_rows_and_eta_columns():
    diagrams = phase_diagram(GRID, facets=("parameterization", "optimizer"))
    assert list(diagrams) == [("sp", "sgd")]
    d = diagrams[("sp", "sgd")]
    assert d.eta_column == "eta_trgt"
    assert list(d.mean.index) == [1, 4]
    assert list(d.mean.columns) == [0.1, 0.2, 0.4]
    assert d.mean.loc[1, 0.1] == pytest.approx(0.6)
    assert d.std.loc[1, 0.1] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert d.mean.loc[1, 0.2] == pytest.approx(0.3)  # the seed that did not diverge
    assert math.isnan(d.std.loc[1, 0.2])  # one value: no std
    assert d.mean.loc[4, 0.2] == pytest.approx(1.1)  # completed and stuck seeds
    assert math.isnan(d.mean.loc[1, 0.4])
    assert d.n.loc[4, 0.4] == 1


def test_cell_status_rules_keep_diverged_stuck_error_missing_distinct():
    status = phase_diagram(GRID, facets=())[()].status
    assert status.loc[1].tolist() == ["ok", "diverged", "diverged"]
    assert status.loc[4].tolist() == ["error", "stuck", "ok"]


def test_a_trial_shared_by_two_loaded_sweeps_counts_once():
    # Two sweeps ran the grid point (warmup 1, eta 0.1) of seed 0 (one trial id, as its
    # config hashes to it); only seed 1 is a second trial of that cell.
    shared = {"warmup_steps": 1, "eta_trgt": 0.1, "status": "completed"}
    trials = frame(
        [
            {**shared, "final_test_loss": 0.5, "sweep": "a"},
            {**shared, "final_test_loss": 0.5, "sweep": "b"},
            {**shared, "init_seed": 1, "final_test_loss": 0.7, "sweep": "b"},
        ]
    )
    trials["trial_id"] = ["t0", "t0", "t1"]
    cell = phase_table(trials).set_index(["warmup_steps", "eta"]).loc[(1, 0.1)]
    assert cell["n_trials"] == 2 and cell["n"] == 2
    assert cell["mean"] == pytest.approx(0.6)  # (0.5 + 0.7) / 2, not (0.5 + 0.5 + 0.7) / 3


def test_of_a_trial_run_twice_an_ended_run_is_kept_over_an_error():
    trials = frame(
        [
            {"warmup_steps": 1, "eta_trgt": 0.1, "status": "error", "sweep": "a"},
            {"warmup_steps": 1, "eta_trgt": 0.1, "status": "diverged", "sweep": "b"},
        ]
    )
    trials["trial_id"] = ["t0", "t0"]
    cell = phase_table(trials).iloc[0]
    assert (cell["n_trials"], cell["n_diverged"], cell["n_error"]) == (1, 1, 0)
    assert cell["status"] == "diverged"


def test_missing_cells_fill_the_grid_union_across_facets():
    rows = [
        {"parameterization": "sp", "warmup_steps": 1, "eta_trgt": 0.1, "status": "completed"},
        {"parameterization": "sp", "warmup_steps": 4, "eta_trgt": 0.2, "status": "completed"},
        {"parameterization": "mup", "warmup_steps": 1, "eta_trgt": 0.4, "status": "diverged"},
    ]
    table = phase_table(frame(rows), facets=("parameterization",))
    assert len(table) == 2 * 2 * 3  # 2 facets x 2 warmups x 3 etas
    mup = phase_diagram(frame(rows), facets=("parameterization",))[("mup",)].status
    assert mup.loc[1].tolist() == ["missing", "missing", "diverged"]
    assert mup.loc[4].tolist() == ["missing", "missing", "missing"]


def test_auto_eta_uses_relative_grid_when_every_trial_has_it():
    # lambda0 differs by seed, so absolute etas differ but relative ones replicate.
    rows = [
        {
            "warmup_steps": 1,
            "eta_trgt_relative": r,
            "lambda0": lam,
            "eta_trgt": r / lam,
            "init_seed": s,
            "status": "completed",
            "final_test_loss": 0.1 * r,
        }
        for r in (1.0, 2.0)
        for s, lam in ((0, 10.0), (1, 12.5))
    ]
    trials = frame(rows)
    d = phase_diagram(trials, facets=())[()]
    assert d.eta_column == "eta_trgt_relative"
    assert list(d.mean.columns) == [1.0, 2.0]
    assert d.n.loc[1].tolist() == [2, 2]
    absolute = phase_diagram(trials, facets=(), eta="eta_trgt")[()]
    assert absolute.mean.shape == (1, 4)
    with pytest.raises(ValueError, match="eta"):
        phase_diagram(trials, facets=(), eta="eta_init")


def test_boundary_largest_trainable_and_bracket():
    b = divergence_boundary(GRID, facets=()).set_index("warmup_steps")
    # warmup 1: 0.1 ok, 0.2 diverged on one seed -> boundary 0.1, bracket up to 0.2
    assert b.loc[1, "max_trainable_eta"] == pytest.approx(0.1)
    assert b.loc[1, "min_failed_eta"] == pytest.approx(0.2)
    assert b.loc[1, "max_trainable_x_lambda0"] == pytest.approx(1.0)
    assert b.loc[1, "max_trainable_over_eta_c"] == pytest.approx(0.4)
    assert b.loc[1, "min_failed_eta_trgt"] == pytest.approx(0.2)
    assert b.loc[1, "censored"] == "no"
    # warmup 4: 0.1 errored (ignored), 0.2 stuck on one seed (failed, as the paper counts
    # it), 0.4 completed: the largest trainable is 0.4, with a failed cell below it.
    assert b.loc[4, "max_trainable_eta"] == pytest.approx(0.4)
    assert math.isnan(b.loc[4, "min_failed_eta"])
    assert b.loc[4, "censored"] == "above"  # nothing failed above 0.4, the grid's top
    assert bool(b.loc[4, "non_monotone"])
    assert (b.loc[4, "n_trainable"], b.loc[4, "n_failed"]) == (1, 1)


def test_boundary_stuck_trainable_keeps_the_older_reading():
    b = divergence_boundary(GRID, facets=(), stuck_trainable=True).set_index("warmup_steps")
    assert b.loc[1, "max_trainable_eta"] == pytest.approx(0.1)
    assert b.loc[1, "min_failed_eta"] == pytest.approx(0.2)
    # warmup 4: the stuck cell at 0.2 is trainable now, so nothing failed at all.
    assert b.loc[4, "max_trainable_eta"] == pytest.approx(0.4)
    assert (b.loc[4, "n_trainable"], b.loc[4, "n_failed"]) == (2, 0)
    assert not b["non_monotone"].any()


def test_stuck_above_the_last_trainable_eta_moves_the_boundary_down():
    # warmup 1: 0.1 completed, 0.2 stuck, 0.4 diverged; warmup 8: all completed but 0.4 stuck.
    rows = [
        {"warmup_steps": 1, "eta_trgt": 0.1, "status": "completed"},
        {"warmup_steps": 1, "eta_trgt": 0.2, "status": "stuck"},
        {"warmup_steps": 1, "eta_trgt": 0.4, "status": "diverged"},
        {"warmup_steps": 8, "eta_trgt": 0.1, "status": "completed"},
        {"warmup_steps": 8, "eta_trgt": 0.2, "status": "completed"},
        {"warmup_steps": 8, "eta_trgt": 0.4, "status": "stuck"},
    ]
    failed = divergence_boundary(frame(rows), facets=()).set_index("warmup_steps")
    assert failed.loc[1, "max_trainable_eta"] == pytest.approx(0.1)
    assert failed.loc[1, "min_failed_eta"] == pytest.approx(0.2)  # the stuck run
    assert failed.loc[8, "max_trainable_eta"] == pytest.approx(0.2)
    assert failed.loc[8, "min_failed_eta"] == pytest.approx(0.4)
    assert list(failed["censored"]) == ["no", "no"]
    trainable = divergence_boundary(frame(rows), facets=(), stuck_trainable=True)
    trainable = trainable.set_index("warmup_steps")
    assert trainable.loc[1, "max_trainable_eta"] == pytest.approx(0.2)
    assert trainable.loc[1, "min_failed_eta"] == pytest.approx(0.4)
    assert trainable.loc[8, "max_trainable_eta"] == pytest.approx(0.4)
    assert trainable.loc[8, "censored"] == "above"


def test_boundary_text_marks_censored_values_as_bounds():
    rows = [
        {"warmup_steps": 1, "eta_trgt": 0.5, "status": "diverged"},
        {"warmup_steps": 1, "eta_trgt": 1.0, "status": "diverged"},
        {"warmup_steps": 4, "eta_trgt": 0.5, "status": "completed"},
        {"warmup_steps": 4, "eta_trgt": 1.0, "status": "diverged"},
        {"warmup_steps": 16, "eta_trgt": 0.5, "status": "completed"},
        {"warmup_steps": 16, "eta_trgt": 1.0, "status": "completed"},
    ]
    b = divergence_boundary(frame(rows), facets=()).set_index("warmup_steps")
    assert list(b["censored"]) == ["below", "no", "above"]
    assert [boundary_text(b.loc[w]) for w in (1, 4, 16)] == ["< 0.5", "0.5", "≥ 1"]
    assert boundary_text(b.loc[4], "eta_trgt") == "0.5"


def test_boundary_facet_without_trainable_eta_and_non_monotone_case():
    rows = [
        # facet "sp": everything diverged
        *[
            {"parameterization": "sp", "warmup_steps": 1, "eta_trgt": e, "status": "diverged"}
            for e in (0.2, 0.4)
        ],
        # facet "mup": 0.1 ok, 0.2 diverged, 0.4 ok again, 0.8 and 1.6 diverged
        *[
            {
                "parameterization": "mup",
                "warmup_steps": 1,
                "eta_trgt": e,
                "status": s,
                "final_test_loss": 1.0,
            }
            for e, s in (
                (0.1, "completed"),
                (0.2, "diverged"),
                (0.4, "completed"),
                (0.8, "diverged"),
                (1.6, "diverged"),
            )
        ],
    ]
    b = divergence_boundary(frame(rows), facets=("parameterization",)).set_index("parameterization")
    assert math.isnan(b.loc["sp", "max_trainable_eta"])
    assert b.loc["sp", "min_failed_eta"] == pytest.approx(0.2)  # the smallest diverged overall
    assert b.loc["sp", "n_trainable"] == 0
    assert b.loc["mup", "max_trainable_eta"] == pytest.approx(0.4)
    assert b.loc["mup", "min_failed_eta"] == pytest.approx(0.8)
    assert bool(b.loc["mup", "non_monotone"])
    assert not bool(b.loc["sp", "non_monotone"])


def test_boundary_search_rows_give_lower_and_upper_bracket():
    # A bisection on eta at fixed warmup: irregular etas, one trial each.
    etas = {
        0.1: "completed",
        0.3: "diverged",
        0.2: "completed",
        0.25: "diverged",
        0.225: "completed",
    }
    rows = [{"warmup_steps": 8, "eta_trgt": e, "status": s} for e, s in etas.items()]
    b = divergence_boundary(frame(rows), facets=())
    assert len(b) == 1
    assert b.loc[0, "max_trainable_eta"] == pytest.approx(0.225)
    assert b.loc[0, "min_failed_eta"] == pytest.approx(0.25)


def test_best_configs_lowest_loss_or_highest_accuracy_among_ok_cells():
    best = best_configs(GRID, "final_test_loss", facets=())
    # (4, 0.4) has the lowest mean of all ok cells; (4, 0.2) is stuck, (1, 0.2) diverged
    assert (best.loc[0, "warmup_steps"], best.loc[0, "eta"]) == (4, pytest.approx(0.4))
    assert best.loc[0, "final_test_loss"] == pytest.approx(0.1)
    acc = GRID.assign(final_test_accuracy=GRID["final_test_loss"])
    best_acc = best_configs(acc, "final_test_accuracy", facets=())
    assert (best_acc.loc[0, "warmup_steps"], best_acc.loc[0, "eta"]) == (1, pytest.approx(0.1))


def test_best_configs_per_facet():
    rows = [
        {
            "optimizer": o,
            "warmup_steps": w,
            "eta_trgt": 0.1,
            "status": "completed",
            "final_test_loss": loss,
        }
        for o, w, loss in (("sgd", 1, 0.5), ("sgd", 4, 0.4), ("adam", 1, 0.2), ("adam", 4, 0.3))
    ]
    best = best_configs(frame(rows), facets=("optimizer",)).set_index("optimizer")
    assert best.loc["sgd", "warmup_steps"] == 4
    assert best.loc["adam", "warmup_steps"] == 1


# --------------------------------------------------------------------------- regimes


def steps_frame(
    trial_id: str,
    sharp: np.ndarray,
    loss: np.ndarray,
    lr: float,
    column: str = "sharpness",
    threshold: float | None = None,
) -> pd.DataFrame:
    n = len(loss)
    df = pd.DataFrame(
        {
            "trial_id": trial_id,
            "step": np.arange(n),
            "lr": lr,
            "train_loss": loss,
            "sharpness": np.nan,
            "preconditioned_sharpness": np.nan,
            "threshold": np.nan if threshold is None else threshold,
        }
    )
    df[column] = sharp
    return df


def test_regime_map_labels_synthetic_trajectories():
    n = 40
    t = np.arange(n)
    every5 = np.where(t % 5 == 0, 1.0, np.nan)  # sharpness measured every 5 steps
    rising = every5 * (10 + t)  # progressive sharpening
    falling = every5 * (50 - t)  # sharpness reduction
    flat = every5 * 10.0
    smooth = np.exp(-t / 20) + 0.1
    catapult = smooth.copy()
    catapult[8:12] = 5.0  # a spike that comes back down
    trials = frame(
        [
            {"warmup_steps": 10, "eta_trgt": 0.1, "status": "completed"},
            {"warmup_steps": 10, "eta_trgt": 0.1, "status": "completed"},
            {"warmup_steps": 10, "eta_trgt": 0.1, "status": "completed", "optimizer": "adam"},
            {"warmup_steps": 1, "eta_trgt": 0.1, "status": "completed"},
        ]
    )
    steps = pd.concat(
        [
            steps_frame("t0", rising, smooth, 0.1, threshold=20.0),
            steps_frame("t1", falling, catapult, 0.1),
            steps_frame("t2", flat, smooth, 0.01, column="preconditioned_sharpness"),
            steps_frame("t3", every5 * np.nan, smooth, 0.1),
        ]
    )
    regimes = regime_map(trials, steps, window=20).set_index("trial_id")
    assert regimes.loc["t0", "regime"] == "sharpening"
    assert regimes.loc["t1", "regime"] == "reduction"
    assert regimes.loc["t2", "regime"] == "flat"
    assert regimes.loc["t3", "regime"] == "unknown"
    assert regimes.loc["t2", "sharpness_column"] == "preconditioned_sharpness"
    assert not regimes.loc["t0", "catapult"]
    assert regimes.loc["t1", "catapult"]
    assert regimes.loc["t1", "num_catapults"] == 1
    assert 8 <= regimes.loc["t1", "catapult_step"] <= 11
    # At warmup end (step 10): measured sharpness there, recorded threshold or 2/lr, 38/lr.
    assert regimes.loc["t0", "warmup_end_step"] == 10
    assert regimes.loc["t0", "sharpness_at_warmup_end"] == pytest.approx(20.0)
    assert regimes.loc["t0", "ratio_at_warmup_end"] == pytest.approx(1.0)
    assert regimes.loc["t1", "threshold_at_warmup_end"] == pytest.approx(20.0)  # 2 / 0.1
    assert regimes.loc["t2", "threshold_at_warmup_end"] == pytest.approx(3800.0)  # 38 / 0.01
    assert pd.isna(regimes.loc["t3", "warmup_end_step"])


def test_a_trial_shared_by_two_loaded_sweeps_has_one_regime_from_one_copy_of_its_steps():
    n = 40
    t = np.arange(n)
    loss = np.exp(-t / 20) + 0.1
    loss[8:12] = 5.0  # one catapult
    one = steps_frame("t0", np.where(t % 5 == 0, 50.0 - t, np.nan), loss, 0.1)
    trials = frame([{"warmup_steps": 10, "eta_trgt": 0.1, "status": "completed"}] * 2)
    trials["trial_id"] = ["t0", "t0"]
    regimes = regime_map(trials, pd.concat([one, one]), window=20)
    assert len(regimes) == 1
    row = regimes.iloc[0]
    assert (row["regime"], row["num_catapults"]) == ("reduction", 1)
    assert row["sharpness_at_warmup_end"] == pytest.approx(40.0)  # 50 - 10


def test_regime_map_skips_trials_without_steps():
    trials = frame([{"warmup_steps": 1, "eta_trgt": 0.1, "status": "error"}])
    empty = steps_frame("other", np.array([1.0]), np.array([1.0]), 0.1)
    assert regime_map(trials, empty).empty


def test_threshold_at_passes_the_trials_optimizer_its_own_hyperparameters():
    # Flat columns as a mixed sweep loads them: another optimizer's options are null.
    columns = {
        "optimizer_momentum": np.nan,
        "optimizer_nesterov": pd.NA,
        "optimizer_beta1": np.nan,
        "optimizer_beta2": np.nan,
        "optimizer_eps": np.nan,
        "optimizer_weight_decay": np.nan,
    }

    def trial(optimizer: str, **hyper) -> pd.Series:
        flat = {f"optimizer_{k}": v for k, v in hyper.items()}
        return pd.Series({**columns, "optimizer": optimizer, **flat})

    assert threshold_at(trial("sgd"), 0.1) == pytest.approx(20.0)  # 2 / eta
    heavy_ball = trial("sgd", momentum=0.9, nesterov=False, weight_decay=0.5)
    assert threshold_at(heavy_ball, 0.1) == pytest.approx(37.5)  # (2 + 1.8) / 0.1 - 0.5
    nesterov = trial("sgd", momentum=0.5, nesterov=True)
    assert threshold_at(nesterov, 0.1) == pytest.approx(15.0)  # (2 + 1) / ((1 + 1) 0.1)
    assert threshold_at(trial("adam", beta1=0.5, eps=1e-8), 0.1) == pytest.approx(60.0)
    # An option of another optimizer, set by hand, is not passed on (SGD takes no beta1).
    assert threshold_at(trial("sgd", beta1=0.5), 0.1) == pytest.approx(20.0)
