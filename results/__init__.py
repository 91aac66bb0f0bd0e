"""Sweep results: the Parquet schema, writer and loader, and analysis of finished or running sweeps.

Modules, one job each: `schema` (column types), `location` (paths, URIs and the sweep
layout), `store` (atomic writes), `scan` (many files as one table), `loading` (sweeps
into pandas), `statuses` (trial statuses and their cache), `analysis` (phase
diagrams, boundaries, regimes), `reference` (the paper's official result tables read
as a sweep). Figures live in `results.figure_style` (what they share),
`results.plots` (phase diagrams, boundaries) and `results.trajectory_plots`, the
report in `results.report`; they are not imported here so that writing results
never pulls in matplotlib. Nothing here needs torch: the regime and threshold helpers of
`analysis` import `warmup_core` when called.
"""

from results.analysis import (
    PhaseDiagram,
    best_configs,
    divergence_boundary,
    phase_diagram,
    phase_table,
    regime_map,
)
from results.loading import Loaded, join_steps, load, select
from results.location import child, is_sweep_dir, read_text, resolve, sweep_dir
from results.reference import read_reference, reference_boundary
from results.schema import ENDED, STATUSES, STEP_SCHEMA, TRIAL_SCHEMA
from results.statuses import STATUS_CACHE, completed_trial_ids, read_statuses, read_summaries
from results.store import write_spec, write_trial

__all__ = [
    "ENDED",
    "STATUSES",
    "STATUS_CACHE",
    "STEP_SCHEMA",
    "TRIAL_SCHEMA",
    "Loaded",
    "PhaseDiagram",
    "best_configs",
    "child",
    "completed_trial_ids",
    "divergence_boundary",
    "is_sweep_dir",
    "join_steps",
    "load",
    "phase_diagram",
    "phase_table",
    "read_reference",
    "read_statuses",
    "read_summaries",
    "read_text",
    "reference_boundary",
    "regime_map",
    "resolve",
    "select",
    "sweep_dir",
    "write_spec",
    "write_trial",
]
