"""Benchmark: the results store at sweep scale, beside plain pyarrow on the same files.

For each size N it plans a grid of 2N trials, writes N of them through
`results.write_trial` (a real summary row and 200 step rows each, into a
temporary directory), and measures:
- write cost per trial over the first and the last writes (constant-cost
  writes keep the two equal however large the sweep grows);
- `results.load` of the sweep beside one `pyarrow.dataset` scan of the same
  trials and steps files;
- reading the statuses (`results.read_statuses`, what resume and `status`
  read) beside a plain two-column dataset scan, here as a run reads them,
  writing the sweep's status cache (`results.STATUS_CACHE`);
- resume planning as `run` does it (`sweeps.runner.pending_trials`: expand the
  2N-trial grid, read the statuses, keep the N not ended), once before the
  sweep has a status cache (every summary opened) and once after (only the
  summaries written in the last seconds before the cache are opened).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow.dataset as ds

from sweeps import parse_spec, pending_trials
from trials import trial_summary

__all__ = ["format_table", "measure", "run"]

STEPS_PER_TRIAL = 200
SIZES = (1_000, 10_000, 50_000)
QUICK_SIZES = (60,)


def _spec(planned: int):
    """A tiny-model grid of `planned` trials: 10 eta_trgt x 2 warmups x seeds."""
    seeds = max(1, planned // 20)
    return parse_spec(
        {
            "name": "bench-store",
            "base": {
                "model": {"name": "fcn", "width": 16, "depth": 2},
                "dataset": {"name": "digits", "train_size": 128, "test_size": 64},
                "num_steps": STEPS_PER_TRIAL,
                "device": "cpu",
            },
            "grid": {
                "eta_trgt": {"relative_to": "lambda0", "values": [2.0**k for k in range(10)]},
                "warmup_steps": [1, 16],
            },
            "seeds": list(range(seeds)),
            "logging": {"tensorboard": False},
        },
        "bench-store",
    )


def _steps(rng: np.random.Generator) -> dict[str, Any]:
    step = np.arange(1, STEPS_PER_TRIAL + 1)
    measured = np.where(step % 10 == 1, rng.random(STEPS_PER_TRIAL) * 50, np.nan)
    return {
        "step": step,
        "lr": np.full(STEPS_PER_TRIAL, 0.05),
        "train_loss": rng.random(STEPS_PER_TRIAL),
        "train_accuracy": rng.random(STEPS_PER_TRIAL),
        "sharpness": measured,
        "threshold": np.full(STEPS_PER_TRIAL, 40.0),
    }


def _timed(fn) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure(n: int) -> dict[str, Any]:
    """Write `n` trials of a 2n-trial grid and time writes, load and resume planning.

    Prints the mean write cost of every tenth of the writes to stderr as it goes.
    """
    from results import load, read_statuses, sweep_dir, write_trial

    spec = _spec(2 * n)
    expand_s, (pending, _) = _timed(lambda: pending_trials(spec, "/nonexistent-results"))
    rng = np.random.default_rng(0)
    steps = _steps(rng)
    write_s: list[float] = []
    with tempfile.TemporaryDirectory() as results:
        for planned in pending[:n]:
            summary = trial_summary(planned.config, spec.name, "bench")
            summary.update(
                status="completed",
                lambda0=20.0,
                final_train_loss=float(rng.random()),
                final_test_loss=float(rng.random()),
                wall_time_s=1.0,
            )
            start = time.perf_counter()
            write_trial(results, spec.name, summary, steps)
            write_s.append(time.perf_counter() - start)
            tenth = max(1, n // 10)
            if len(write_s) % tenth == 0:
                window = 1000 * float(np.mean(write_s[-tenth:]))
                print(f"  wrote {len(write_s)}/{n}: {window:.2f} ms per trial", file=sys.stderr)
        sweep = sweep_dir(results, spec.name)
        trials_dir, steps_dir = os.path.join(sweep, "trials"), os.path.join(sweep, "steps")

        def plain_load() -> int:
            trials = ds.dataset(trials_dir, format="parquet").to_table()
            return trials.num_rows + ds.dataset(steps_dir, format="parquet").to_table().num_rows

        plain_load_s, rows = _timed(plain_load)
        load_s, loaded = _timed(lambda: load(sweep))
        assert len(loaded.trials) == n and len(loaded.steps) + n == rows
        plain_status_s, _ = _timed(
            lambda: ds.dataset(trials_dir, format="parquet").to_table(["trial_id", "status"])
        )
        cold_planning_s, todo = _timed(lambda: pending_trials(spec, results))
        assert len(todo[0]) == n
        status_s, statuses = _timed(lambda: read_statuses(results, spec.name, update_cache=True))
        assert len(statuses) == n
        planning_s, todo = _timed(lambda: pending_trials(spec, results))
        assert len(todo[0]) == n
    k = max(10, min(100, n // 10))
    return {
        "trials": n,
        "planned": 2 * n,
        "steps_per_trial": STEPS_PER_TRIAL,
        "write_ms_first": 1000 * float(np.mean(write_s[:k])),
        "write_ms_last": 1000 * float(np.mean(write_s[-k:])),
        "write_ms_mean": 1000 * float(np.mean(write_s)),
        "write_window": k,
        "load_s": load_s,
        "plain_load_s": plain_load_s,
        "statuses_s": status_s,
        "plain_statuses_s": plain_status_s,
        "expand_s": expand_s,
        "resume_planning_cold_s": cold_planning_s,
        "resume_planning_s": planning_s,
    }


def run(quick: bool = False, sizes: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Measure every size (`quick`: one tiny size, for a smoke test)."""
    sizes = sizes or (QUICK_SIZES if quick else SIZES)
    rows = []
    for n in sizes:
        r = measure(n)
        r["write_last_vs_first"] = r["write_ms_last"] / r["write_ms_first"]
        r["load_vs_plain_scan"] = r["load_s"] / r["plain_load_s"]
        r["statuses_vs_plain_scan"] = r["statuses_s"] / r["plain_statuses_s"]
        rows.append(r)
        # Each size's table as soon as it is measured: the large sizes take a while.
        print(format_table({"cpus": os.cpu_count(), "sizes": [r]}), file=sys.stderr)
    return {"cpus": os.cpu_count(), "sizes": rows}


def format_table(result: dict[str, Any]) -> str:
    """The result as an aligned text table, one block per size."""
    lines = [
        f"results store, {result['cpus']} CPUs (ratios: ours / plain pyarrow, or last / first)"
    ]
    for r in result["sizes"]:
        lines.append(
            f"  {r['trials']} trials x {r['steps_per_trial']} steps ({r['planned']} planned)"
        )
        rows = [
            (
                f"write, first/last {r['write_window']}",
                f"{r['write_ms_first']:.2f} / {r['write_ms_last']:.2f} ms",
                f"{r['write_last_vs_first']:.2f}x",
            ),
            (
                "load (results.load / dataset scan)",
                f"{r['load_s']:.2f} / {r['plain_load_s']:.2f} s",
                f"{r['load_vs_plain_scan']:.2f}x",
            ),
            (
                "statuses (read_statuses / scan)",
                f"{r['statuses_s']:.2f} / {r['plain_statuses_s']:.2f} s",
                f"{r['statuses_vs_plain_scan']:.2f}x",
            ),
            (
                "resume planning, cached / no cache",
                f"{r['resume_planning_s']:.2f} / {r['resume_planning_cold_s']:.2f} s",
                f"expand alone {r['expand_s']:.2f} s",
            ),
        ]
        lines += [f"    {a:<38} {b:>20}   {c}" for a, b, c in rows]
    return "\n".join(lines)
