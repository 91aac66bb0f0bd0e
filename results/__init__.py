"""Sweep results: the Parquet schema, writer and loader, and analysis of finished or running sweeps.

Plotting and the report live in `results.plots` and `results.report`; they are not
imported here so that writing results never pulls in matplotlib.
"""

from results.analysis import (
    PhaseDiagram,
    best_configs,
    divergence_boundary,
    phase_diagram,
    phase_table,
    regime_map,
)
from results.schema import ENDED, STATUSES, STEP_SCHEMA, TRIAL_SCHEMA
from results.store import (
    Loaded,
    child,
    completed_trial_ids,
    join_steps,
    load,
    read_statuses,
    select,
    sweep_dir,
    write_spec,
    write_trial,
)

__all__ = [
    "ENDED",
    "STATUSES",
    "STEP_SCHEMA",
    "TRIAL_SCHEMA",
    "Loaded",
    "PhaseDiagram",
    "best_configs",
    "child",
    "completed_trial_ids",
    "divergence_boundary",
    "join_steps",
    "load",
    "phase_diagram",
    "phase_table",
    "read_statuses",
    "regime_map",
    "select",
    "sweep_dir",
    "write_spec",
    "write_trial",
]
