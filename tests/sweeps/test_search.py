"""UniqueSearch over Ray Tune's real OptunaSearch, and the progress line: no Ray started."""

from __future__ import annotations

import io
from types import SimpleNamespace

from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweeps import expand, make_trial, parse_spec
from sweeps.ledger import Ledger
from sweeps.progress import Progress
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


DIVERGED = {"status": "diverged", "final_test_loss": float("nan")}


def test_progress_counts_each_member_once_as_it_ends(tmp_path) -> None:
    # Every Tune trial is a pack (of one, unpacked): progress reports carry the members
    # that ended since the last one, the final report every member.
    stream = io.StringIO()
    ledger = Ledger(str(tmp_path), "sweep")
    progress = Progress(3, ledger, stream=stream)
    trial = SimpleNamespace(trial_id="tune-1")
    progress.on_trial_start(0, [], trial)
    progress.on_trial_result(0, [], trial, {"step": 25, "ended_members": {}})  # no change
    progress.on_trial_result(0, [], trial, {"step": 50, "ended_members": {"a": DIVERGED}})
    final = {"step": 100, "members": {"a": DIVERGED, "b": {"status": "completed"}}}
    progress.on_trial_result(0, [], trial, final)
    progress.on_trial_result(0, [], trial, final)  # Tune repeats a function's last result
    progress.on_trial_complete(0, [], trial)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("0/3 ended") and "running 1" in lines[0]
    assert lines[1].startswith("1/3 ended | completed 0 | diverged 1") and "running 1" in lines[1]
    assert lines[2].startswith("2/3 ended | completed 1 | diverged 1") and "running 0" in lines[2]
    assert ledger.statuses == {"a": "diverged", "b": "completed"}
    assert ledger.reported == {"a", "b"}
