"""Tests for trials.trial.run_trial: files, endings, determinism, seeds and learning rates.

Tiny real runs (an FCN of width 16 on 128 digits, 20 steps); each takes well under
a second with one torch thread.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from trials import Problem, run_trial
from trials.config import TrialConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {
    "model": {"name": "fcn", "width": 16, "depth": 2},
    "dataset": {"name": "digits", "train_size": 128, "test_size": 64},
    "num_steps": 20,
    "eta_trgt": 0.1,
    "sharpness_max_iter": 20,
    "sharpness_tol": 1e-2,
    "device": "cpu",
}
SWEEP = "unit"

TRIAL_CONTRACT = [
    "trial_id",
    "sweep",
    "status",
    "diverged_step",
    "error",
    "model",
    "dataset",
    "loss",
    "parameterization",
    "init_scale",
    "optimizer",
    "eta_trgt",
    "eta_init",
    "warmup_steps",
    "schedule",
    "num_steps",
    "batch_size",
    "init_seed",
    "data_seed",
    "lambda0",
    "eta_c",
    "final_train_loss",
    "final_test_loss",
    "final_test_accuracy",
    "wall_time_s",
    "device",
    "node",
    "package_version",
]
STEPS_CONTRACT = [
    "trial_id",
    "step",
    "lr",
    "train_loss",
    "train_accuracy",
    "sharpness",
    "preconditioned_sharpness",
    "test_loss",
    "test_accuracy",
]


def tiny(**changes) -> TrialConfig:
    """A tiny trial config; nested sections in `changes` replace TINY's whole."""
    return TrialConfig.model_validate({**TINY, **changes})


def read_trial(results: Path, trial_id: str, sweep: str = SWEEP) -> tuple[pd.Series, pd.DataFrame]:
    summary = pd.read_parquet(results / sweep / "trials" / f"{trial_id}.parquet")
    steps = pd.read_parquet(results / sweep / "steps" / f"{trial_id}.parquet")
    assert len(summary) == 1
    return summary.iloc[0], steps


# ---------------------------------------------------------------------------
# One sweep directory with every ending, shared by the file-contract tests
# ---------------------------------------------------------------------------

ENDINGS = {
    "completed": {"eta_trgt": 0.1},
    "diverged": {"eta_trgt": 1000.0},
    "stuck": {"eta_trgt": 1e-9},
    # CIFAR is read from a local directory only: a missing one fails inside the trial.
    "error": {"dataset": {"name": "cifar10", "data_dir": "/nonexistent/cifar-dir"}},
}


@pytest.fixture(scope="module")
def endings(tmp_path_factory, one_torch_thread) -> tuple[Path, dict]:
    results = tmp_path_factory.mktemp("results")
    runs = {
        name: run_trial(tiny(**changes), results=str(results), sweep=SWEEP)
        for name, changes in ENDINGS.items()
    }
    return results, runs


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_every_ending_writes_one_summary_row_and_steps(endings, ending: str) -> None:
    results, runs = endings
    result = runs[ending]
    assert result.status == ending
    summary, steps = read_trial(results, result.trial_id)
    assert summary["status"] == ending
    assert summary["trial_id"] == result.trial_id
    assert summary["sweep"] == SWEEP
    assert set(TRIAL_CONTRACT) <= set(summary.index)
    assert set(STEPS_CONTRACT) <= set(steps.columns)
    assert (steps["trial_id"] == result.trial_id).all()
    if ending != "error":
        assert list(steps["step"]) == list(range(1, len(steps) + 1))


def test_trials_directory_reads_with_plain_pandas(endings) -> None:
    results, runs = endings
    trials = pd.read_parquet(results / SWEEP / "trials")
    assert sorted(trials["trial_id"]) == sorted(r.trial_id for r in runs.values())
    assert sorted(trials["status"].astype(str)) == sorted(ENDINGS)
    steps = pd.read_parquet(results / SWEEP / "steps")
    assert set(steps["trial_id"].astype(str)) <= set(trials["trial_id"].astype(str))


def test_completed_trial_records_config_columns_and_finals(endings) -> None:
    results, runs = endings
    summary, steps = read_trial(results, runs["completed"].trial_id)
    assert summary["model"] == "fcn" and summary["model_width"] == 16
    assert summary["dataset"] == "digits" and summary["optimizer"] == "sgd"
    assert summary["eta_trgt"] == pytest.approx(0.1)
    assert summary["num_steps"] == 20 and summary["warmup_steps"] == 1
    assert summary["lambda0"] > 0
    assert summary["final_train_accuracy"] >= 1.5 / 10
    assert summary["final_test_loss"] > 0 and summary["wall_time_s"] > 0
    assert summary["device"] == "cpu" and summary["node"] and summary["package_version"]
    assert pd.isna(summary["diverged_step"]) and pd.isna(summary["error"])
    assert len(steps) == 20
    assert list(steps["lr"]) == pytest.approx([0.1] * 20)
    assert steps["train_loss"].iloc[-1] < steps["train_loss"].iloc[0]
    # Sharpness and test loss at the first update at least; lambda0 is its sharpness.
    assert steps["sharpness"].iloc[0] == pytest.approx(summary["lambda0"])
    assert steps["test_loss"].notna().iloc[0]
    assert steps["threshold"].iloc[0] == pytest.approx(2 / 0.1)


def test_divergence_ends_the_trial_early_with_its_step(endings) -> None:
    results, runs = endings
    summary, steps = read_trial(results, runs["diverged"].trial_id)
    step = summary["diverged_step"]
    assert 1 < step < 20
    assert len(steps) == step and steps["step"].iloc[-1] == step
    last = steps["train_loss"].iloc[-1]
    assert not (last <= 1000 * steps["train_loss"].iloc[0])  # NaN, Inf or a blow-up
    assert pd.isna(summary["final_train_loss"]) and pd.isna(summary["error"])


def test_a_run_that_does_not_learn_is_stuck(endings) -> None:
    results, runs = endings
    summary, steps = read_trial(results, runs["stuck"].trial_id)
    assert len(steps) == 20  # ran to the end
    assert summary["final_train_accuracy"] < 1.5 / 10
    assert pd.isna(summary["diverged_step"])


def test_an_exception_is_recorded_as_error_without_raising(endings) -> None:
    results, runs = endings
    summary, steps = read_trial(results, runs["error"].trial_id)
    assert "/nonexistent/cifar-dir" in summary["error"]
    assert summary["dataset"] == "cifar10"
    assert len(steps) == 0


def test_exception_late_in_the_run_keeps_the_steps_so_far(tmp_path, monkeypatch) -> None:
    evaluate = Problem.evaluate_with

    def final_evaluation_fails(self, loss_and_accuracy, split):
        if split == "train":  # only the final evaluation reads the training split
            raise RuntimeError("evaluation exploded")
        return evaluate(self, loss_and_accuracy, split)

    monkeypatch.setattr(Problem, "evaluate_with", final_evaluation_fails)
    result = run_trial(tiny(), results=str(tmp_path), sweep=SWEEP)
    assert result.status == "error"
    summary, steps = read_trial(tmp_path, result.trial_id)
    assert summary["error"] == "RuntimeError: evaluation exploded"
    assert len(steps) == 20


def test_rerun_overwrites_its_own_files(tmp_path) -> None:
    config = tiny()
    run_trial(config, results=str(tmp_path), sweep=SWEEP)
    run_trial(config, results=str(tmp_path), sweep=SWEEP)
    assert [p.name for p in (tmp_path / SWEEP / "trials").iterdir()] == [
        f"{config.trial_id()}.parquet"
    ]
    assert len(pd.read_parquet(tmp_path / SWEEP / "steps")) == 20


def test_without_results_nothing_is_written(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_trial(tiny(num_steps=3))
    assert result.status in ("completed", "stuck")
    assert len(result.steps["step"]) == 3
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# Determinism and seeds
# ---------------------------------------------------------------------------


def test_same_config_gives_identical_parquet_values(tmp_path) -> None:
    config = tiny(batch_size=32, sharpness_every=5, eval_every=5)
    for name in ("a", "b"):
        run_trial(config, results=str(tmp_path / name), sweep=SWEEP)
    summary_a, steps_a = read_trial(tmp_path / "a", config.trial_id())
    summary_b, steps_b = read_trial(tmp_path / "b", config.trial_id())
    pd.testing.assert_series_equal(
        summary_a.drop("wall_time_s"), summary_b.drop("wall_time_s"), check_names=False
    )
    pd.testing.assert_frame_equal(steps_a, steps_b)
    assert steps_a["sharpness"].notna().sum() >= 4  # measured along the way, not only at init


def _initial_params(config: TrialConfig) -> dict[str, torch.Tensor]:
    return dict(Problem(config).build_model(config.init_seed).state_dict())


def _first_batch(config: TrialConfig) -> torch.Tensor:
    problem = Problem(config)
    return problem.x_train[problem.batch(1)]


def test_data_seed_changes_the_data_but_not_the_init() -> None:
    a, b = tiny(batch_size=32, data_seed=0), tiny(batch_size=32, data_seed=1)
    params_a, params_b = _initial_params(a), _initial_params(b)
    assert all(torch.equal(params_a[k], params_b[k]) for k in params_a)
    assert not torch.equal(_first_batch(a), _first_batch(b))
    losses_a = run_trial(a.model_copy(update={"num_steps": 3})).steps["train_loss"]
    losses_b = run_trial(b.model_copy(update={"num_steps": 3})).steps["train_loss"]
    assert losses_a != losses_b


def test_init_seed_changes_the_init_but_not_the_data() -> None:
    a, b = tiny(batch_size=32, init_seed=0), tiny(batch_size=32, init_seed=1)
    params_a, params_b = _initial_params(a), _initial_params(b)
    assert not all(torch.equal(params_a[k], params_b[k]) for k in params_a)
    for step in (1, 2, 5):
        pa, pb = Problem(a), Problem(b)
        assert torch.equal(pa.x_train[pa.batch(step)], pb.x_train[pb.batch(step)])
    run_a, run_b = (
        run_trial(a.model_copy(update={"num_steps": 1})),
        run_trial(b.model_copy(update={"num_steps": 1})),
    )
    assert run_a.summary["lambda0"] != pytest.approx(run_b.summary["lambda0"], rel=1e-3)


def test_minibatches_are_a_permutation_of_each_epoch() -> None:
    problem = Problem(tiny(batch_size=32))  # 128 examples: 4 batches per epoch
    epoch = torch.cat([problem.batch(t) for t in range(1, 5)])
    assert sorted(epoch.tolist()) == list(range(128))
    assert not torch.equal(epoch, torch.cat([problem.batch(t) for t in range(5, 9)]))


# ---------------------------------------------------------------------------
# Learning rates: relative eta_trgt, catapult eta_init, warmup
# ---------------------------------------------------------------------------


def test_relative_eta_trgt_is_recorded_as_absolute(tmp_path) -> None:
    config = tiny(eta_trgt=2.0, eta_trgt_relative_to="lambda0", warmup_steps=4, num_steps=6)
    result = run_trial(config, results=str(tmp_path), sweep=SWEEP)
    summary, steps = read_trial(tmp_path, result.trial_id)
    assert summary["eta_trgt_relative"] == 2.0
    assert summary["eta_trgt"] == pytest.approx(2.0 / summary["lambda0"], rel=1e-12)
    # Linear warmup from 0 to the absolute target over 4 updates, then constant.
    expected = [summary["eta_trgt"] * min(1, t / 4) for t in range(1, 7)]
    assert list(steps["lr"]) == pytest.approx(expected)


def test_catapult_eta_init_starts_warmup_at_eta_c(tmp_path) -> None:
    config = tiny(
        eta_trgt=16.0, eta_trgt_relative_to="lambda0", eta_init="catapult", warmup_steps=10
    )
    result = run_trial(config.model_copy(update={"num_steps": 3}), results=str(tmp_path))
    summary, steps = read_trial(tmp_path, result.trial_id, sweep="adhoc")
    eta_c = summary["eta_c"]
    assert eta_c > 0
    assert summary["eta_init_mode"] == "catapult"
    assert summary["eta_init"] == pytest.approx(eta_c)
    assert eta_c < summary["eta_trgt"]  # else the catapult ramp would be capped at once
    assert eta_c <= steps["lr"].iloc[0] <= summary["eta_trgt"]
    assert steps["lr"].is_monotonic_increasing


def test_measure_eta_c_records_it_without_changing_the_schedule() -> None:
    result = run_trial(tiny(measure_eta_c=True, num_steps=2))
    assert result.summary["eta_c"] > 0
    assert result.steps["lr"] == [0.1, 0.1]


# ---------------------------------------------------------------------------
# Adam family: pre-conditioned sharpness
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adam", "gi-adam", "adamw"])
def test_adam_family_records_preconditioned_sharpness(name: str) -> None:
    result = run_trial(tiny(optimizer={"name": name}, eta_trgt=1e-3, num_steps=2))
    pre = result.steps["preconditioned_sharpness"]
    assert pre[0] is not None and pre[0] > 0
    assert result.steps["threshold"][0] == pytest.approx(38 / 1e-3)  # (2 + 2 beta1)/(1 - beta1)/eta


def test_sgd_records_no_preconditioned_sharpness() -> None:
    result = run_trial(tiny(num_steps=2))
    assert result.steps["preconditioned_sharpness"] == [None, None]


def test_gi_adam_removes_the_initial_preconditioned_sharpness_spike() -> None:
    adam = run_trial(tiny(optimizer={"name": "adam"}, eta_trgt=1e-3, num_steps=1))
    gi = run_trial(tiny(optimizer={"name": "gi-adam"}, eta_trgt=1e-3, num_steps=1))
    assert adam.summary["lambda0"] == pytest.approx(gi.summary["lambda0"])
    assert gi.steps["preconditioned_sharpness"][0] < adam.steps["preconditioned_sharpness"][0] / 10


def test_transformer_trains_with_sharpness_every_step():
    config = TrialConfig(
        model={"name": "transformer", "width": 8, "depth": 1, "heads": 2},
        dataset={"name": "text", "train_size": 16, "test_size": 8, "context": 8},
        loss="xent",
        num_steps=3,
        eta_trgt=0.05,
        sharpness_every=1,
        sharpness_max_iter=10,
        sharpness_tol=1e-2,
        device="cpu",
    )
    result = run_trial(config)
    assert result.status in ("completed", "stuck"), result.summary.get("error")
    assert result.summary["lambda0"] > 0
    assert all(s is not None and s > 0 for s in result.steps["sharpness"])


@pytest.mark.parametrize("simple, hidden_rate", [(False, 1 / 16), (True, 1.0)])
def test_simple_mup_reaches_the_learning_rate_multipliers(simple, hidden_rate):
    from trials.problem import make_optimizer

    config = TrialConfig(
        **{**TINY, "model": {"name": "fcn", "width": 16, "depth": 3}},
        parameterization="mup",
        optimizer={"name": "adam"},
        simple_mup=simple,
    )
    model = Problem(config).build_model(0)
    rates = make_optimizer(config, model).lr_multipliers
    assert rates["layers.1.weight"] == pytest.approx(hidden_rate)  # hidden: 1/width unless simple
    assert rates["layers.2.weight"] == pytest.approx(1.0 if simple else 1 / 4)  # readout 1/sqrt(16)


@pytest.mark.parametrize(
    "model",
    [
        {"name": "myrtle", "width": 4, "depth": 5},
        {"name": "wrn", "depth": 10, "widen": 1, "base_channels": 4},
    ],
)
@pytest.mark.parametrize(
    "dataset",
    [
        {"name": "digits", "train_size": 32, "test_size": 16},
        {
            "name": "gaussian",
            "train_size": 32,
            "test_size": 16,
            "dim": 64,
            "image_shape": [1, 8, 8],
        },
    ],
)
def test_convolutional_models_train_on_8x8_images_without_cifar(model, dataset):
    config = TrialConfig(
        model=model,
        dataset=dataset,
        num_steps=2,
        eta_trgt=0.01,
        sharpness_every=1,
        sharpness_max_iter=5,
        device="cpu",
    )
    problem = Problem(config)
    assert tuple(problem.x_train.shape[1:]) == (1, 8, 8)
    result = run_trial(config, problem=problem)
    assert result.status in ("completed", "stuck"), result.summary.get("error")
    assert all(s is not None for s in result.steps["sharpness"])
