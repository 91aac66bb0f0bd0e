"""UniqueSearch over Ray Tune's real OptunaSearch: no Ray started."""

from __future__ import annotations

from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweeps import expand, make_trial, parse_spec
from sweeps.search import UniqueSearch
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
