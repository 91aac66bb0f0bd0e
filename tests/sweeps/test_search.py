"""UniqueSearch over Ray Tune's real OptunaSearch, and the progress line: no Ray started."""

from __future__ import annotations

import io
from types import SimpleNamespace

from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweeps.runner import Progress
from sweeps.search import UniqueSearch
from sweeps.spec import expand, make_trial, parse_spec
from tests.sweeps.conftest import tiny_spec
from trials.tune import overrides_of


def _searcher(spec, taken=()) -> UniqueSearch:
    planned = expand(spec)
    searcher = UniqueSearch(
        OptunaSearch(metric="final_test_loss", mode="min", seed=0),
        trial_id_of=lambda config: make_trial(spec, overrides_of(config)).trial_id,
        taken=taken,
        grid=[p.overrides for p in planned],
    )
    space = {"eta_trgt": tune.choice([0.05, 0.1, 0.2]), "warmup_steps": tune.choice([1, 4])}
    searcher.set_search_properties("final_test_loss", "min", {**space, "init_seed": 0})
    return searcher


def test_a_finite_grid_is_sampled_without_replacement_then_finished() -> None:
    spec = parse_spec(
        tiny_spec(grid={"eta_trgt": [0.05, 0.1, 0.2], "warmup_steps": [1, 4]}),
    )
    searcher = _searcher(spec)
    ids = []
    for i in range(6):
        config = searcher.suggest(f"t{i}")
        ids.append(make_trial(spec, overrides_of({"init_seed": 0, **config})).trial_id)
        searcher.on_trial_complete(f"t{i}", {"final_test_loss": 1.0 / (i + 1)})
    assert sorted(ids) == sorted(p.trial_id for p in expand(spec))  # each point once
    assert searcher.suggest("t6") == Searcher.FINISHED


def test_trials_that_already_ended_are_never_suggested() -> None:
    spec = parse_spec(tiny_spec(grid={"eta_trgt": [0.05, 0.1, 0.2], "warmup_steps": [1, 4]}))
    planned = [p.trial_id for p in expand(spec)]
    searcher = _searcher(spec, taken=planned[:5])
    config = searcher.suggest("t0")
    assert make_trial(spec, overrides_of({"init_seed": 0, **config})).trial_id == planned[5]
    assert searcher.suggest("t1") == Searcher.FINISHED


def test_progress_prints_one_line_per_change_and_counts_a_repeated_ending_once() -> None:
    stream = io.StringIO()
    progress = Progress(2, stream=stream)
    trial = SimpleNamespace(trial_id="tune-1")
    progress.on_trial_start(0, [], trial)
    progress.on_trial_result(0, [], trial, {"step": 25, "sweep_trial_id": "a"})  # no change
    final = {"step": 50, "sweep_trial_id": "a", "status": "completed"}
    progress.on_trial_result(0, [], trial, final)
    progress.on_trial_result(0, [], trial, final)  # Tune repeats a function's last result
    progress.on_trial_complete(0, [], trial)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("0/2 ended") and "running 1" in lines[0]
    assert lines[1].startswith("1/2 ended | completed 1") and "running 0" in lines[1]
