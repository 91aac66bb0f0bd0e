"""A trial resumed from a checkpoint produces the values of an uninterrupted one."""

import io

import pytest
import torch

from trials import run_trial
from trials.config import TrialConfig


def _config(optimizer: dict) -> TrialConfig:
    return TrialConfig(
        model={"name": "fcn", "width": 32, "depth": 3},
        dataset={"name": "digits", "train_size": 256, "test_size": 64},
        optimizer=optimizer,
        eta_trgt=2.0,
        eta_trgt_relative_to="lambda0",
        warmup_steps=10,
        num_steps=30,
        batch_size=64,  # minibatches: the data order must resume too
        sharpness_every=5,
        eval_every=10,
        checkpoint_every=10,
    )


def _through_disk(state: dict) -> dict:
    """What a restarted worker reads back: torch.save, then a weights-only load."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize(
    "optimizer", [{"name": "sgd", "momentum": 0.9}, {"name": "adam"}, {"name": "gi-adam"}]
)
def test_resume_from_checkpoint_matches_an_uninterrupted_run(optimizer):
    config = _config(optimizer)
    states: list[dict] = []
    full = run_trial(config, checkpoint=states.append)
    assert [s["step"] for s in states] == [10, 20]  # none once the trial has ended

    resumed = run_trial(config, resume=_through_disk(states[0]))
    assert resumed.status == full.status == "completed"
    assert resumed.steps == full.steps
    for key in ("lambda0", "final_train_loss", "final_test_loss", "final_sharpness"):
        assert resumed.summary[key] == full.summary[key], key


def test_checkpoint_state_is_a_snapshot_not_a_live_view():
    states: list[dict] = []
    run_trial(_config({"name": "adam"}), checkpoint=states.append)
    first, last = (s["groups"][0]["optimizer"]["state"] for s in (states[0], states[-1]))
    name = next(iter(first))
    assert not torch.equal(first[name]["m"], last[name]["m"])
