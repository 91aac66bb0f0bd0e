"""End-to-end sweeps on a real embedded Ray (2 CPUs): grid, resume, errors, boundary, Optuna.

One Ray instance serves the whole module (`ray_local`); it is shut down at the end
of the module, before test_cluster.py (which starts its own nodes) runs.
"""

from __future__ import annotations

import io
import math
import re
import shutil
from pathlib import Path

import optuna
import pandas as pd
import pytest
import ray
import yaml

from sweeps import expand, init_ray, parse_spec, run_sweep
from sweeps.boundary import BoundarySearch
from sweeps.cli import main
from tests.sweeps.conftest import tiny_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_local():
    if ray.is_initialized():  # e.g. left over by another module: start from a known state
        ray.shutdown()
    init_ray(None, num_cpus=2)
    yield
    ray.shutdown()


def file_ids(sweep_dir: Path, kind: str = "trials") -> set[str]:
    return {p.stem for p in (sweep_dir / kind).glob("*.parquet")}


def stamps(sweep_dir: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every result file: an atomic rewrite changes the inode."""
    return {
        f"{kind}/{p.name}": (p.stat().st_ino, p.stat().st_mtime_ns)
        for kind in ("trials", "steps")
        for p in (sweep_dir / kind).glob("*.parquet")
    }


# ---------------------------------------------------------------------------
# A 2 x 2 grid through the CLI, with the default-style relative --results path
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid_sweep(ray_local, tmp_path_factory) -> Path:
    """Run the tiny grid with `warmup-sweep run SPEC --results sweep-results` from a temp cwd."""
    root = tmp_path_factory.mktemp("grid")
    spec_path = root / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec()))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        # A relative path, like the default ./sweep-results: Tune runs trials in their own
        # working directories, so the files must still land under the driver's cwd.
        assert main(["run", str(spec_path), "--results", "sweep-results"]) == 0
    return root / "sweep-results" / "tiny"


def test_grid_sweep_writes_one_summary_per_planned_trial(grid_sweep: Path) -> None:
    planned = {p.trial_id for p in expand(parse_spec(tiny_spec()))}
    assert file_ids(grid_sweep) == planned
    assert file_ids(grid_sweep, "steps") == planned
    trials = pd.read_parquet(grid_sweep / "trials")
    assert len(trials) == 4 and set(trials["trial_id"]) == planned
    assert set(trials["status"]) == {"completed"}
    assert sorted(zip(trials["eta_trgt"], trials["warmup_steps"], strict=True)) == [
        (0.05, 1),
        (0.05, 4),
        (0.1, 1),
        (0.1, 4),
    ]
    assert (trials["sweep"] == "tiny").all()
    steps = pd.read_parquet(grid_sweep / "steps")
    assert len(steps) == 4 * 20
    assert (
        steps.groupby("trial_id")["step"].apply(list).map(lambda s: s == list(range(1, 21))).all()
    )


def test_grid_sweep_records_the_ray_node(grid_sweep: Path) -> None:
    trials = pd.read_parquet(grid_sweep / "trials")
    assert set(trials["node"]) == {ray.get_runtime_context().get_node_id()}


def test_grid_sweep_writes_the_resolved_spec(grid_sweep: Path) -> None:
    written = yaml.safe_load((grid_sweep / "spec.yaml").read_text())
    assert parse_spec(written) == parse_spec(tiny_spec())
    assert written["search"]["kind"] == "grid"  # defaults filled in


def test_rerun_of_a_finished_sweep_runs_nothing(grid_sweep: Path, capsys) -> None:
    before = stamps(grid_sweep)
    spec_path = grid_sweep.parent.parent / "tiny.yaml"
    assert main(["run", str(spec_path), "--results", str(grid_sweep.parent)]) == 0
    captured = capsys.readouterr()
    assert "0 to run, 4 already ended" in captured.err
    assert "completed 4" in captured.out and "skipped 4" in captured.out
    assert stamps(grid_sweep) == before


def test_resume_reruns_exactly_the_trials_without_a_summary(grid_sweep: Path, tmp_path) -> None:
    copy = tmp_path / "results"
    shutil.copytree(grid_sweep.parent, copy)
    sweep_dir = copy / "tiny"
    interrupted = sorted(file_ids(sweep_dir))[:2]
    for trial_id in interrupted:  # killed after its steps file, before its summary
        (sweep_dir / "trials" / f"{trial_id}.parquet").unlink()
    before = stamps(sweep_dir)
    log = io.StringIO()

    outcome = run_sweep(parse_spec(tiny_spec()), str(copy), stream=log)

    assert "2 to run, 2 already ended" in log.getvalue()
    assert outcome.exit_code == 0 and outcome.skipped == 2
    assert outcome.counts == {"completed": 4} and outcome.missing == []
    after = stamps(sweep_dir)
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {f"{kind}/{t}.parquet" for kind in ("trials", "steps") for t in interrupted}
    trials = pd.read_parquet(sweep_dir / "trials")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    steps = pd.read_parquet(sweep_dir / "steps")
    assert len(steps) == 4 * 20  # re-run trials replaced their steps, no duplicate rows


# ---------------------------------------------------------------------------
# A trial that ends in error
# ---------------------------------------------------------------------------


def test_error_trial_gives_exit_1_and_is_rerun_next_time(ray_local, tmp_path, spec_file, capsys):
    data = tiny_spec(name="with-error", grid={"dataset.name": ["digits", "cifar10"]})
    data["base"].update(eta_trgt=0.1)
    data["base"]["dataset"]["data_dir"] = str(tmp_path / "no-cifar-here")
    path, results = spec_file(data), tmp_path / "results"
    sweep_dir = results / "with-error"

    assert main(["run", str(path), "--results", str(results)]) == 1
    out = capsys.readouterr().out
    assert "completed 1" in out and "error 1" in out
    trials = pd.read_parquet(sweep_dir / "trials").set_index("dataset")
    assert trials.loc["cifar10", "status"] == "error"
    assert "no-cifar-here" in trials.loc["cifar10", "error"]
    assert trials.loc["digits", "status"] == "completed"

    before = stamps(sweep_dir)
    assert main(["run", str(path), "--results", str(results)]) == 1
    assert "1 to run, 1 already ended" in capsys.readouterr().err
    after = stamps(sweep_dir)
    error_id, ok_id = trials.loc["cifar10", "trial_id"], trials.loc["digits", "trial_id"]
    assert after[f"trials/{error_id}.parquet"] != before[f"trials/{error_id}.parquet"]
    assert after[f"trials/{ok_id}.parquet"] == before[f"trials/{ok_id}.parquet"]
    assert len(pd.read_parquet(sweep_dir / "trials")) == 2


# ---------------------------------------------------------------------------
# Divergence-boundary search
# ---------------------------------------------------------------------------

BOUNDARY_ETAS = [1, 2, 4, 8, 16, 32, 64]  # x 1/lambda0; GD diverges well before 64


def boundary_spec(**search) -> dict:
    return tiny_spec(
        name="boundary",
        grid={
            "eta_trgt": {"relative_to": "lambda0", "values": BOUNDARY_ETAS},
            "warmup_steps": [1],
        },
        search={"kind": "boundary", "resolution": 3.0, **search},
    )


@pytest.mark.slow  # 10-15 s on an idle 2-core machine, over 20 s under load
def test_boundary_search_brackets_divergence_with_fewer_trials(ray_local, tmp_path) -> None:
    spec = parse_spec(boundary_spec())
    log = io.StringIO()
    outcome = run_sweep(spec, str(tmp_path), stream=log)

    assert outcome.exit_code == 0
    trials = pd.read_parquet(tmp_path / "boundary" / "trials")
    assert outcome.planned == len(trials) < len(BOUNDARY_ETAS)
    failed = trials["status"].isin(["diverged", "stuck"])  # the paper's rule, analyze's default
    failing = trials[failed]["eta_trgt_relative"]
    trainable = trials[~failed]["eta_trgt_relative"]
    assert 1.0 in set(trainable) and 64.0 in set(failing)  # both ends were tried
    assert trainable.max() < failing.min()
    assert math.log2(failing.min() / trainable.max()) <= 3.0  # bisected to the resolution
    assert f"{trainable.max():.4g} (fails at {failing.min():.4g})" in log.getvalue()

    # Resume: the search replays its choices from the files and runs nothing new.
    before = stamps(tmp_path / "boundary")
    again = run_sweep(spec, str(tmp_path), stream=io.StringIO())
    assert again.counts == outcome.counts
    assert stamps(tmp_path / "boundary") == before


@pytest.mark.slow  # two boundary searches of three rounds each
def test_boundary_rounds_pack_like_the_grid_and_find_the_same_boundary(ray_local, tmp_path):
    data = boundary_spec()
    data["grid"]["warmup_steps"] = [1, 4]  # two points: the first round has four trials
    data["base"]["dtype"] = "float64"  # packed and one-at-a-time sums agree to the last bits
    packed_log, plain_log = io.StringIO(), io.StringIO()
    packed = run_sweep(parse_spec({**data, "pack_size": 2}), str(tmp_path / "p"), stream=packed_log)
    plain = run_sweep(parse_spec(data), str(tmp_path / "u"), stream=plain_log)

    # Four trials over two workers: two packs of two (later rounds, one trial a point, not);
    # with pack_size 1, two packs that train their two trials one after another.
    assert "2 packs, each training up to 2 trials at once" in packed_log.getvalue()
    assert "2 packs, each training its trials one after another" in plain_log.getvalue()
    assert "at once" not in plain_log.getvalue()
    assert packed.exit_code == plain.exit_code == 0
    assert packed.counts == plain.counts and packed.planned == plain.planned
    table = plain_log.getvalue().split("divergence boundary")[1]
    assert "fails at" in table  # both points found a bracket, not an error
    assert packed_log.getvalue().split("divergence boundary")[1] == table


def _drive(search: BoundarySearch, status_of) -> list:
    """Run a boundary search against a status oracle; returns the trials it asked for."""
    asked = []
    while batch := search.next_round():
        asked += batch
        search.record({p.trial_id: status_of(p.config) for p in batch})
    return asked


def test_boundary_bisection_converges_on_the_threshold() -> None:
    spec = parse_spec(boundary_spec(resolution=0.25))
    search = BoundarySearch(spec)
    asked = _drive(search, lambda c: "diverged" if c.eta_trgt > 5.0 else "completed")
    (bracket,) = search.brackets
    assert 2**bracket.trainable <= 5.0 < 2**bracket.failing
    assert bracket.failing - bracket.trainable <= 0.25
    assert len(asked) == 2 + math.ceil(math.log2(6 / 0.25))  # ends, then one probe a round


def test_boundary_remembers_the_smallest_failing_eta_even_at_eta_1() -> None:
    # log2(1) == 0: a falsy bracket end must still count as a failing eta.
    spec = parse_spec(boundary_spec())
    search = BoundarySearch(spec)
    asked = _drive(search, lambda c: "diverged")
    assert len(asked) == 2  # nothing is trainable: no bisection
    (bracket,) = search.brackets
    assert bracket.trainable is None and bracket.failing == 0.0
    assert "- (fails at 1)" in search.describe()


@pytest.mark.parametrize(("stuck_trainable", "boundary"), [(False, 5.0), (True, 20.0)])
def test_a_stuck_trial_fails_the_boundary_unless_the_search_says_otherwise(
    stuck_trainable, boundary
) -> None:
    """Completed up to 5, stuck up to 20, diverged above: the paper's rule (the default)
    puts the boundary at 5, `stuck_trainable` at 20, as `analyze` would."""
    spec = parse_spec(boundary_spec(resolution=0.25, stuck_trainable=stuck_trainable))
    search = BoundarySearch(spec)

    def status(c) -> str:
        return "completed" if c.eta_trgt <= 5.0 else "stuck" if c.eta_trgt <= 20.0 else "diverged"

    _drive(search, status)
    (bracket,) = search.brackets
    assert 2**bracket.trainable <= boundary < 2**bracket.failing
    assert ("stuck counts as trainable" in search.describe()) == stuck_trainable


def test_boundary_point_with_an_error_is_closed_without_a_verdict() -> None:
    search = BoundarySearch(parse_spec(boundary_spec()))
    asked = _drive(search, lambda c: "error")
    assert len(asked) == 2
    assert ": error" in search.describe()


def test_boundary_runs_one_bracket_per_point_of_the_other_axes() -> None:
    data = boundary_spec()
    data["grid"]["warmup_steps"] = [1, 16]
    search = BoundarySearch(parse_spec(data))
    first = search.next_round()
    assert len(search.brackets) == 2 and len(first) == 4
    assert {(p.config.warmup_steps, p.config.eta_trgt) for p in first} == {
        (1, 1.0),
        (1, 64.0),
        (16, 1.0),
        (16, 64.0),
    }


# ---------------------------------------------------------------------------
# Optuna
# ---------------------------------------------------------------------------


@pytest.mark.slow  # 10-15 s on an idle 2-core machine, over 20 s under load
def test_optuna_search_runs_num_samples_trials(ray_local, tmp_path) -> None:
    data = tiny_spec(
        name="optuna",
        grid={"eta_trgt": {"low": 0.01, "high": 0.2, "log": True}, "warmup_steps": [1, 4]},
        search={"kind": "optuna", "num_samples": 3, "metric": "final_test_loss"},
    )
    data["base"]["num_steps"] = 30  # past the first progress report (every 25 steps)
    log = io.StringIO()
    outcome = run_sweep(parse_spec(data), str(tmp_path), stream=log)

    trials = pd.read_parquet(tmp_path / "optuna" / "trials")
    assert len(trials) == 3
    assert outcome.planned == 3 and outcome.missing == [] and outcome.exit_code == 0
    assert sum(outcome.counts.values()) == 3
    assert trials["eta_trgt"].between(0.01, 0.2).all()
    assert set(trials["warmup_steps"]) <= {1, 4}
    assert (trials["init_seed"] == 0).all() and (trials["data_seed"] == 0).all()


@pytest.mark.slow
def test_asha_stopped_trials_write_steps_and_a_stopped_summary(ray_local, tmp_path) -> None:
    data = tiny_spec(
        name="asha",
        grid={"eta_trgt": {"low": 0.001, "high": 0.1, "log": True}},  # no repeated configs
        search={
            "kind": "optuna",
            "num_samples": 6,
            "metric": "final_test_loss",
            "asha": {"grace_period": 25, "reduction_factor": 2, "max_t": 150},
        },
    )
    data["base"]["num_steps"] = 150  # several progress reports (every 25 steps) for ASHA's rungs
    data["max_concurrent"] = 2
    outcome = run_sweep(parse_spec(data), str(tmp_path), stream=io.StringIO())

    trials = pd.read_parquet(tmp_path / "asha" / "trials").set_index("trial_id")
    steps = pd.read_parquet(tmp_path / "asha" / "steps")
    assert len(trials) == 6 and outcome.missing == [] and outcome.exit_code == 0
    stopped = trials[trials["status"] == "stopped"]
    assert len(stopped) >= 1  # with 6 trials and halving from step 25, ASHA stops some
    assert outcome.stopped_early == len(stopped) == outcome.counts["stopped"]
    for trial_id, row in stopped.iterrows():
        ran = steps.loc[steps["trial_id"] == trial_id, "step"]
        assert 25 <= row["stopped_step"] < 150
        assert ran.max() == row["stopped_step"] and ran.min() == 1
    # A re-run knows they ran: nothing is trained again.
    rerun = run_sweep(parse_spec(data), str(tmp_path), stream=io.StringIO())
    assert rerun.skipped == 6 and rerun.counts["stopped"] == len(stopped)
    assert len(pd.read_parquet(tmp_path / "asha" / "trials")) == 6


@pytest.mark.slow
def test_optuna_over_a_finite_grid_never_trains_a_trial_twice(ray_local, tmp_path) -> None:
    data = tiny_spec(
        name="finite",
        grid={"eta_trgt": [0.05, 0.1, 0.2], "warmup_steps": [1, 4]},
        search={"kind": "optuna", "num_samples": 8, "metric": "final_test_loss"},
    )
    spec = parse_spec(data)
    first = run_sweep(spec, str(tmp_path), stream=io.StringIO())
    sweep = tmp_path / "finite"
    # 8 samples over 6 points: every point once, then the grid is exhausted.
    assert file_ids(sweep) == {p.trial_id for p in expand(spec)}
    assert first.planned == 6 and first.exit_code == 0
    tune_dirs = [p for p in (sweep / "tune").iterdir() if p.is_dir()]
    assert len(tune_dirs) == 6  # six Tune trials, not eight
    before = stamps(sweep)
    again = run_sweep(spec, str(tmp_path), stream=io.StringIO())
    assert again.skipped == 6 and sum(again.counts.values()) == 6
    assert stamps(sweep) == before  # a finished Optuna sweep re-run rewrites nothing
    # The study is kept in the sweep, where optuna-dashboard opens it.
    study = optuna.load_study(study_name="finite", storage=f"sqlite:///{sweep}/optuna.db")
    done = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    losses = pd.read_parquet(sweep / "trials")["final_test_loss"]
    assert sorted(done) == pytest.approx(sorted(losses))


def test_tensorboard_and_progress_get_each_trial_by_its_id(ray_local, tmp_path) -> None:
    data = tiny_spec(name="tb", grid={"eta_trgt": [0.05, 0.1]})
    del data["logging"]  # the default: TensorBoard on
    spec = parse_spec(data)
    log = io.StringIO()
    outcome = run_sweep(spec, str(tmp_path), stream=log)
    assert outcome.exit_code == 0
    planned = expand(spec)
    runs = {p.name for p in (tmp_path / "tb" / "tensorboard").iterdir()}
    assert runs == {p.trial_id for p in planned}
    for p in planned:
        assert list((tmp_path / "tb" / "tensorboard" / p.trial_id).glob("events.out.tfevents*"))
    assert not list((tmp_path / "tb" / "tune").rglob("events.out.tfevents*"))  # not Ray's
    lines = log.getvalue().splitlines()
    for p in planned:  # one line per trial: its id, status, last step and swept value
        (line,) = [line for line in lines if f"  {p.trial_id[:8]}  " in line]
        assert re.search(rf"completed +step +20 .*eta_trgt={p.overrides['eta_trgt']:g}$", line)


def test_a_quiet_run_prints_only_its_final_line(ray_local, tmp_path, spec_file, capsys) -> None:
    path = spec_file(tiny_spec(name="quiet", grid={"eta_trgt": [0.05]}))
    assert main(["run", str(path), "--results", str(tmp_path), "-q"]) == 0
    captured = capsys.readouterr()
    (line,) = captured.out.splitlines()
    assert line.startswith("sweep quiet: completed 1; skipped 0 already ended; results: ")
    assert "quiet" not in captured.err and "completed" not in captured.err, captured.err
