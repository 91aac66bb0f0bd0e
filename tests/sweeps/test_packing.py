"""Sweeps group packable trials into packs and run each pack as one Ray Tune trial."""

import io
import os

import pandas as pd
import pytest
import ray

from sweeps import SweepSpec, expand, packing, run_sweep
from sweeps.packing import auto_pack_size, group_into_packs, resolve_pack_size


def _spec(**changes) -> SweepSpec:
    data = {
        "name": "packs",
        "base": {
            "model": {"name": "fcn", "width": 16, "depth": 3},
            "dataset": {"name": "digits", "train_size": 128, "test_size": 64},
            "num_steps": 12,
            "batch_size": 32,
            "sharpness_every": 4,
            "dtype": "float64",
        },
        "grid": {
            "eta_trgt": {"relative_to": "lambda0", "values": [1, 4, 256]},
            "parameterization": ["sp", "mup"],
        },
        "seeds": [0],
        "pack_size": 2,
        "logging": {"tensorboard": False},
        **changes,
    }
    return SweepSpec.model_validate(data)


def test_packs_group_by_shared_fields_and_deal_trials_round_robin():
    etas = [0.1 * i for i in range(1, 10)]
    planned = expand(_spec(grid={"eta_trgt": etas, "batch_size": [16, 32]}))
    # Two slots hold up to QUEUE x 2 = 8 trials: each group of 9 goes into 2 packs.
    packs = group_into_packs(planned, 2)
    assert [len(p) for p in packs] == [5, 4, 5, 4]  # 9 -> 5 + 4, never 8 + 1
    for pack in packs:
        assert len({p.config.batch_size for p in pack}) == 1
    first = [p.config.eta_trgt for p in packs[0]]
    assert first == pytest.approx(etas[0::2])  # dealt in turn: fast and slow trials mix
    assert sorted(p.trial_id for pack in packs for p in pack) == sorted(p.trial_id for p in planned)
    # A pack per worker at least, and a multiple of the workers.
    assert [len(p) for p in group_into_packs(planned, 16, workers=2)] == [5, 4, 5, 4]
    assert [len(p) for p in group_into_packs(planned, 2, workers=3)] == [3] * 6
    with pytest.raises(ValueError, match="pack_size"):
        group_into_packs(planned, 0)


def test_auto_does_not_pack_compute_bound_models_on_cpu_and_says_why(monkeypatch):
    spec = _spec(base={**_spec().base, "model": {"name": "fcn", "width": 512, "depth": 4}})
    config = expand(spec)[0].config.model_copy(update={"batch_size": None, "device": "cpu"})

    def no_calibration(*args, **kwargs):
        raise AssertionError("a compute-bound model needs no calibration")

    monkeypatch.setattr(packing, "training_rates", no_calibration)
    choice = auto_pack_size(config)
    # 6 x 128 examples x 280,074 parameters (64-512-512-512-10 with biases).
    params = 64 * 512 + 512 + 2 * (512 * 512 + 512) + 512 * 10 + 10
    assert choice.slots == 1
    assert f"{6 * 128 * params:.1e} FLOPs" in choice.reason and "cannot gain" in choice.reason


def test_auto_calibrates_small_models_on_cpu_and_reports_the_measured_ratios(monkeypatch):
    config = expand(_spec())[0].config.model_copy(update={"dtype": "float32"})
    measured = {1: 100.0, 4: 150.0, 16: 110.0}  # trial-steps/s; 4 is the only real gain
    monkeypatch.setattr(packing, "training_rates", lambda c, ks, **kw: measured)
    choice = auto_pack_size(config, most=16)
    assert choice.slots == 4
    assert "4: 1.50x, 16: 1.10x" in choice.reason and "packed 4 at a time" in choice.reason
    measured.update({4: 119.0, 16: 119.0})  # below MIN_GAIN = 1.2: not worth packing
    assert auto_pack_size(config, most=16).slots == 1


def test_resolve_pack_size_never_exceeds_the_largest_group():
    planned = expand(_spec())
    assert resolve_pack_size(3, planned, 1.0).slots == 3
    assert resolve_pack_size("auto", planned[:1], 1.0).slots == 1
    assert 1 <= resolve_pack_size("auto", planned, 1.0).slots <= 3


def test_one_slot_packs_hold_several_trials_to_run_back_to_back():
    planned = expand(_spec(grid={"eta_trgt": [0.1 * i for i in range(1, 19)]}))
    # 18 trials over 2 workers: at most QUEUE = 4 per pack, so 5 packs, rounded up to a
    # multiple of the workers: 6 Ray trials of 3 trials each, not 18 Ray trials.
    assert [len(p) for p in group_into_packs(planned, 1, workers=2)] == [3] * 6


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_packed_sweep_matches_unpacked_and_resumes_per_member(ray_local, tmp_path):
    packed, unpacked = str(tmp_path / "packed"), str(tmp_path / "unpacked")
    stream = io.StringIO()
    outcome = run_sweep(_spec(), packed, stream=stream)
    assert outcome.exit_code == 0 and sum(outcome.counts.values()) == 6
    # 2 groups of 3 over 2 workers -> 2 + 1 each, two slots per pack.
    assert "4 packs, each training up to 2 trials at once" in stream.getvalue()
    assert "6/6 ended" in stream.getvalue()  # progress counts every member of a pack
    run_sweep(_spec(pack_size=1), unpacked, stream=io.StringIO())

    trials_p = pd.read_parquet(os.path.join(packed, "packs", "trials")).sort_values("trial_id")
    trials_u = pd.read_parquet(os.path.join(unpacked, "packs", "trials")).sort_values("trial_id")
    assert list(trials_p.trial_id) == list(trials_u.trial_id)
    assert list(trials_p.status) == list(trials_u.status)
    assert "diverged" in set(trials_p.status)
    assert trials_p.lambda0.tolist() == pytest.approx(trials_u.lambda0.tolist(), rel=1e-6)

    # Resume: a lost member reruns alone; the others are not touched.
    lost = trials_p.trial_id.iloc[0]
    os.remove(os.path.join(packed, "packs", "trials", f"{lost}.parquet"))
    stream = io.StringIO()
    outcome = run_sweep(_spec(), packed, stream=stream)
    assert "1 to run, 5 already ended" in stream.getvalue()
    assert outcome.exit_code == 0 and sum(outcome.counts.values()) == 6


def test_pack_size_spreads_the_largest_group_over_every_worker():
    planned = expand(_spec(grid={"eta_trgt": [0.1 * i for i in range(1, 17)]}))
    assert len(planned) == 16
    # 16 trials, pack_size 16, two workers: two packs of 8 slots, not one and an idle worker.
    choice = resolve_pack_size(16, planned, 1.0, workers=2)
    assert (
        choice.slots == 8 and choice.reason == "pack_size 16, capped at 8: 16 trials over 2 workers"
    )
    assert [len(p) for p in group_into_packs(planned, 8, workers=2)] == [8, 8]
    # 6 slots over two workers: two packs of 8, each training 6 at once while 2 wait.
    assert resolve_pack_size(6, planned, 1.0, workers=2) == packing.PackChoice(6, "pack_size 6")
    assert [len(p) for p in group_into_packs(planned, 6, workers=2)] == [8, 8]
    # More workers than trials: one trial each.
    assert resolve_pack_size(16, planned, 1.0, workers=32).slots == 1
    assert resolve_pack_size(16, planned, 1.0, workers=1).slots == 16
