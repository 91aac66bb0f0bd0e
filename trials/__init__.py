"""One training run: its config, data and problem set-up, the training loop (a pack of
trials at once; a single trial is a pack of one), what a run records, and the Ray Tune
adapter (`trials.tune`, not imported here: it needs Ray).

Modules, in import order (each imports only those before it): `config`, `augment`,
`data`, `problem`, `records`, `rates`, `packable`, `stack`, `loop`, `trial`, `probe`, `tune`.
"""

from trials.config import (
    FieldRole,
    TrialConfig,
    apply_overrides,
    fields_with,
    id_of,
    id_pieces,
)
from trials.data import DATASET_REGISTRY, DataError, Dataset, load_dataset
from trials.loop import run_pack
from trials.packable import (
    MEMBER_FIELDS,
    check_packable,
    pack_key,
    packed_forward,
    unpackable_reason,
)
from trials.probe import probe
from trials.problem import Problem, resolve_device
from trials.records import STEP_COLUMNS, TrialResult, TrialStopped, trial_summary
from trials.trial import run_trial

__all__ = [
    "DATASET_REGISTRY",
    "MEMBER_FIELDS",
    "STEP_COLUMNS",
    "DataError",
    "Dataset",
    "FieldRole",
    "Problem",
    "TrialConfig",
    "TrialResult",
    "TrialStopped",
    "apply_overrides",
    "check_packable",
    "fields_with",
    "id_of",
    "id_pieces",
    "load_dataset",
    "pack_key",
    "packed_forward",
    "probe",
    "resolve_device",
    "run_pack",
    "run_trial",
    "trial_summary",
    "unpackable_reason",
]
