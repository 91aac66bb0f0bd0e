"""One training run: config, data, loop, packed runs and the Ray Tune adapter."""

from trials.config import (
    FieldRole,
    TrialConfig,
    apply_overrides,
    fields_with,
    id_of,
    id_pieces,
)
from trials.data import DataError, Dataset, load_dataset
from trials.packed import (
    MEMBER_FIELDS,
    check_packable,
    pack_key,
    packed_forward,
    run_pack,
    unpackable_reason,
)
from trials.probe import probe
from trials.trial import (
    STEP_COLUMNS,
    Problem,
    TrialResult,
    TrialStopped,
    resolve_device,
    run_trial,
    trial_summary,
)

__all__ = [
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
