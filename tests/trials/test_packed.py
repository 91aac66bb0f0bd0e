"""Packed trials reproduce unpacked ones, member by member, on disk."""

import math

import pandas as pd
import pytest
import torch

from trials import Problem, check_packable, loop, packed_forward, run_pack, run_trial
from trials.config import TrialConfig

BASE = {
    "model": {"name": "fcn", "width": 16, "depth": 3},
    "dataset": {"name": "digits", "train_size": 128, "test_size": 64},
    "num_steps": 16,
    "batch_size": 32,
    "sharpness_every": 5,
    # Lanczos to a residual of 1e-10: eigenvalues are then exact to round-off, so packed
    # and unpacked runs must agree to float64 precision, not to the solver's tolerance.
    "sharpness_tol": 1e-10,
    "sharpness_max_iter": 200,
    "eval_every": 4,
    "dtype": "float64",  # equal values are then a matter of round-off, not of chaos
    "eta_trgt_relative_to": "lambda0",
}
ABSOLUTE = {"eta_trgt_relative_to": "absolute"}


def _config(**changes) -> TrialConfig:
    return TrialConfig.model_validate({**BASE, **changes})


# SGD over eta_trgt x warmup (two diverge in the first steps), a catapult start, momentum
# and Nesterov, an Adam group of two members, coupled and decoupled weight decay, GI-Adam,
# each with its own init seed or init scale.
GRID = [
    _config(eta_trgt=eta, warmup_steps=warmup, init_seed=seed)
    for eta, warmup, seed in [(1, 1, 0), (256, 1, 1), (256, 8, 2), (4, 4, 3)]
] + [
    _config(eta_trgt=8, warmup_steps=8, eta_init="catapult", init_seed=4),
    _config(eta_trgt=2, optimizer={"name": "sgd", "momentum": 0.9}, decay="cosine"),
    _config(eta_trgt=1, optimizer={"name": "sgd", "momentum": 0.9, "nesterov": True}),
    _config(eta_trgt=0.05, optimizer={"name": "adam"}, init_scale=1.0, **ABSOLUTE),
    _config(eta_trgt=0.5, optimizer={"name": "adam"}, init_seed=6, **ABSOLUTE),
    _config(eta_trgt=0.01, optimizer={"name": "adam", "weight_decay": 0.1}, **ABSOLUTE),
    _config(eta_trgt=0.01, optimizer={"name": "adamw", "weight_decay": 0.1}, **ABSOLUTE),
    _config(eta_trgt=0.5, optimizer={"name": "gi-adam", "beta2": 0.99}, init_seed=5, **ABSOLUTE),
    # Adaptive warmup: each member's rate follows its own measurements, taken off the
    # shared schedule (every 2 and every 3 updates), so rows measure at different updates.
    _config(eta_trgt=4, warmup_shape="adaptive", warmup_steps=16, adaptive_every=2, init_seed=7),
    _config(
        eta_trgt=0.05,
        optimizer={"name": "adam"},
        warmup_shape="adaptive",
        warmup_steps=16,
        adaptive_every=3,
        **ABSOLUTE,
    ),
]
RTOL = 1e-9  # float64 round-off, amplified over 16 steps


def _read(results, table: str) -> pd.DataFrame:
    df = pd.read_parquet(results / "grid" / table)
    return df.sort_values(["trial_id", "step"] if table == "steps" else "trial_id").reset_index(
        drop=True
    )


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    results = tmp_path_factory.mktemp("unpacked")
    for config in GRID:
        run_trial(config, results=str(results), sweep="grid")
    return results


# All at once; 4 slots, so waiting trials take the slots of ended ones and rows train at
# different updates, on different minibatches and measurement times; and one slot, so the
# trials train one after another (how a sweep runs `pack_size: 1`).
@pytest.mark.parametrize("slots", [None, 4, 1])
def test_packed_grid_writes_the_same_parquet_values_as_unpacked(unpacked, tmp_path, slots):
    run_pack(GRID, results=str(tmp_path / "packed"), sweep="grid", slots=slots)

    trials_u, trials_p = _read(unpacked, "trials"), _read(tmp_path / "packed", "trials")
    assert list(trials_u.columns) == list(trials_p.columns)
    assert list(trials_p.trial_id) == sorted(c.trial_id() for c in GRID)
    assert set(trials_p.status) >= {"completed", "diverged"}  # the grid exercises both
    assert (trials_p["eta_init_mode"] == "catapult").any()
    assert trials_p.loc[trials_p.warmup_shape == "adaptive", "warmup_end_step"].notna().all()
    for column in (
        "status",
        "diverged_step",
        "optimizer",
        "init_seed",
        "eta_init_mode",
        "warmup_end_step",
    ):
        pd.testing.assert_series_equal(trials_u[column], trials_p[column])
    for column in (
        "lambda0",
        "eta_c",
        "eta_trgt",
        "eta_init",
        "final_train_loss",
        "final_test_loss",
        "final_sharpness",
    ):
        pd.testing.assert_series_equal(trials_u[column], trials_p[column], rtol=RTOL)

    steps_u, steps_p = _read(unpacked, "steps"), _read(tmp_path / "packed", "steps")
    assert len(steps_u) == len(steps_p)
    pd.testing.assert_series_equal(steps_u["step"], steps_p["step"])
    for column in ("lr", "threshold", "train_loss", "train_accuracy", "test_loss"):
        pd.testing.assert_series_equal(steps_u[column], steps_p[column], rtol=RTOL)
    for column in ("sharpness", "preconditioned_sharpness"):
        assert steps_u[column].isna().equals(steps_p[column].isna())
        pd.testing.assert_series_equal(steps_u[column], steps_p[column], rtol=1e-8)
    assert steps_p["preconditioned_sharpness"].notna().any()


def test_a_diverged_member_is_frozen_and_never_touches_the_others():
    calm = _config(eta_trgt=1, num_steps=12)
    wild = _config(eta_trgt=1e4, num_steps=12, init_seed=1)  # NaN/Inf within a few steps
    alone = run_pack([calm])[0]
    together = run_pack([wild, calm, wild.model_copy(update={"init_seed": 2})])
    assert together[0].status == "diverged" and together[0].summary["diverged_step"] <= 3
    assert len(together[0].steps["step"]) == together[0].summary["diverged_step"]
    assert together[1].status == alone.status
    for column in ("train_loss", "lr", "sharpness", "test_loss"):
        got, want = together[1].steps[column], alone.steps[column]
        assert [g is None for g in got] == [w is None for w in want]
        assert [g for g in got if g is not None] == pytest.approx(
            [w for w in want if w is not None], rel=1e-9
        )
    assert all(math.isfinite(v) for v in together[1].steps["train_loss"])


def test_a_waiting_trial_takes_the_slot_of_one_that_ended():
    wild = [_config(eta_trgt=1e4, num_steps=12, init_seed=s) for s in (1, 2)]  # diverge at once
    calm = [_config(eta_trgt=1, num_steps=12, init_seed=s) for s in (3, 4, 5)]
    reports: list[dict] = []
    results = run_pack(wild + calm, slots=3, report=reports.append, report_every=1)
    assert [r.status for r in results] == ["diverged"] * 2 + ["completed"] * 3
    # Each diverger leaves at the update it diverged at, and a waiting trial starts at the
    # next one: three rows train until the first trial ends at 12, and the pack ends 12
    # updates after the last start (reports stop before a trial's last update).
    last = max(r.summary["diverged_step"] for r in results[:2])
    assert last <= 3
    assert reports[-1]["step"] == last + 11
    assert all(r["live_members"] == 3 for r in reports if last < r["step"] <= 12)
    assert all(r["live_members"] in (1, 2) for r in reports if r["step"] > 12)
    for r in results[2:]:
        assert r.steps["step"] == list(range(1, 13))


def test_a_continuous_pack_resumes_from_a_checkpoint_with_every_members_values():
    configs = [
        _config(eta_trgt=e, num_steps=10, checkpoint_every=3, init_seed=s, **opt)
        for e, s, opt in [
            (1e4, 1, {}),  # diverges at once: its slot goes to a waiting trial
            (1, 2, {"optimizer": {"name": "sgd", "momentum": 0.9}}),
            (0.05, 3, {"optimizer": {"name": "adam"}, **ABSOLUTE}),
            (2, 4, {}),
        ]
    ]
    states: list[dict] = []
    full = run_pack(configs, slots=2, checkpoint=states.append)
    # A state with a trial still waiting and two running at different updates.
    state = next(
        s
        for s in states
        if None in s["members"] and len({r["start"] for r in s["members"] if r}) > 1
    )
    resumed = run_pack(configs, slots=2, resume=state)
    for got, want in zip(resumed, full, strict=True):
        assert got.status == want.status
        assert got.steps == want.steps
        for key in ("lambda0", "final_train_loss", "final_sharpness"):
            assert got.summary.get(key) == want.summary.get(key)


def test_results_come_back_in_the_order_given():
    configs = [
        _config(eta_trgt=1, optimizer={"name": "adam"}, num_steps=3),
        _config(eta_trgt=1, num_steps=3),
        _config(eta_trgt=0.1, optimizer={"name": "adam"}, num_steps=3),
    ]
    results = run_pack(configs)
    assert [r.trial_id for r in results] == [c.trial_id() for c in configs]
    assert [r.summary["optimizer"] for r in results] == ["adam", "sgd", "adam"]


def test_a_member_failing_its_setup_is_an_error_and_the_pack_goes_on(monkeypatch):
    real = loop.critical_lr

    def failing(config, loss_fn, params, optimizer):
        if config.catapult_rtol == 0.5:
            raise RuntimeError("no catapult here")
        return real(config, loss_fn, params, optimizer)

    monkeypatch.setattr(loop, "critical_lr", failing)
    good = _config(eta_trgt=1, num_steps=4, eta_init="catapult")
    bad = _config(eta_trgt=1, num_steps=4, eta_init="catapult", catapult_rtol=0.5)
    results = run_pack([good, bad])
    assert results[0].status == "completed" and results[0].summary["eta_c"] > 0
    assert results[1].status == "error" and "no catapult here" in results[1].summary["error"]
    assert results[1].steps["step"] == []


def test_a_member_failing_mid_training_is_an_error_and_the_waiting_ones_still_run(
    monkeypatch,
):
    # One slot: the trials train one after another (a sweep's pack_size 1), and a failure
    # of one must not take the others with it, as when each was its own Ray Tune trial.
    configs = [_config(eta_trgt=1, num_steps=4, init_seed=s) for s in (1, 2, 3)]
    alone = [run_trial(c) for c in configs]
    real = loop.set_rate

    def failing(config, row, lr):
        if config.init_seed == 2 and row["step"] == 2:
            raise RuntimeError("out of memory")
        real(config, row, lr)

    monkeypatch.setattr(loop, "set_rate", failing)
    results = run_pack(configs, slots=1)
    assert results[1].status == "error"
    assert results[1].summary["error"] == "RuntimeError: out of memory"
    assert results[1].steps["step"] == [1]  # what it recorded before the failure
    for i in (0, 2):
        assert results[i].status == alone[i].status
        assert results[i].steps == alone[i].steps


def test_packs_refuse_trials_that_differ_in_shared_fields():
    with pytest.raises(ValueError, match=r"configs\[1\]: differs from configs\[0\] in batch_size"):
        check_packable([_config(), _config(batch_size=16)])
    check_packable([_config(), _config(eta_trgt=3, init_seed=4, optimizer={"name": "adam"})])


def test_batched_and_vmap_forwards_agree():
    config = _config()
    problem = Problem(config)
    models = [problem.build_model(seed) for seed in range(3)]
    stacked = {
        name: torch.stack([dict(m.named_parameters())[name].detach() for m in models])
        for name, _ in models[0].named_parameters()
    }
    x = problem.x_train[:10]
    batched = packed_forward(models[0], "batched")(stacked, x)
    mapped = packed_forward(models[0], "vmap")(stacked, x)
    assert batched.shape == (3, 10, problem.num_classes)
    torch.testing.assert_close(batched, mapped)
    torch.testing.assert_close(batched[2], models[2](x))
    # One batch per member: member i sees its own examples.
    xs = torch.stack([problem.x_train[5 * i : 5 * i + 10] for i in range(3)])
    for mode in ("batched", "vmap"):
        logits = packed_forward(models[0], mode)(stacked, xs, per_member=True)
        for i in range(3):
            torch.testing.assert_close(logits[i], models[i](xs[i]))


@pytest.mark.slow
def test_a_cnn_pack_through_vmap_matches_unpacked():
    base = {
        **BASE,
        "model": {"name": "myrtle", "depth": 5, "width": 4},
        "dataset": {"name": "digits", "train_size": 64, "test_size": 32, "as_image": True},
        "num_steps": 4,
        "sharpness_every": 2,
    }
    configs = [TrialConfig.model_validate({**base, "eta_trgt": e}) for e in (1, 2)]
    for got, want in zip(run_pack(configs), [run_trial(c) for c in configs], strict=True):
        assert got.status == want.status
        assert got.steps["train_loss"] == pytest.approx(want.steps["train_loss"], rel=1e-9)
        sharp = [s for s in got.steps["sharpness"] if s is not None]
        assert sharp == pytest.approx(
            [s for s in want.steps["sharpness"] if s is not None], rel=1e-2
        )
