"""Sweep specs, grid expansion, Ray Tune orchestration, resume and the `warmup-sweep` CLI.

What a notebook or script uses:

    from sweeps import load_spec, expand, run_sweep
    spec, _ = load_spec("quickstart")
    print(len(expand(spec)), "trials")
    outcome = run_sweep(spec, "./sweep-results")

Each name is imported from its module on first use, so `import sweeps` (and the
CLI's start) stays light: specs and grids need torch, running needs Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

# Each public name and the module that defines it.
_HOMES = {
    "ClusterError": "sweeps.ray_session",
    "PlannedTrial": "sweeps.grid",
    "SpecError": "sweeps.schema",
    "SweepBusy": "sweeps.lock",
    "SweepOutcome": "sweeps.ledger",
    "SweepSpec": "sweeps.schema",
    "apply_settings": "sweeps.spec",
    "bundled_specs": "sweeps.spec",
    "dry_run": "sweeps.runner",
    "expand": "sweeps.grid",
    "format_validation_error": "sweeps.validation_errors",
    "init_ray": "sweeps.ray_session",
    "load_spec": "sweeps.spec",
    "make_trial": "sweeps.grid",
    "parse_spec": "sweeps.spec",
    "pending_trials": "sweeps.runner",
    "resolved_yaml": "sweeps.spec",
    "run_sweep": "sweeps.runner",
}

__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
