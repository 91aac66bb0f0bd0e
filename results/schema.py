"""Arrow schemas of the two Parquet tables a sweep writes, and the rules that keep them stable.

Every trial file of a sweep must have the same columns and Arrow types, because
`pandas.read_parquet("<results>/<sweep>/trials")` takes the schema of the first
file it opens and casts the others to it. So every column a trial writes is
declared here once, with its type: `TRIAL_SCHEMA` holds the outcome, provenance
and every flat trial-config column (a null `diverged_step` is still int64, a null
`model_activation` still string), and each file carries all of them. A file's
schema never depends on the other files of the sweep, so writing one costs the
same in an empty sweep and in one of 100k trials.

Columns a caller adds beyond `TRIAL_SCHEMA` get a type from their Python value by
one rule: bool -> bool, any other number -> float64 (so `0` and `0.9` never
disagree), str -> string, anything else -> its JSON text, and a null -> float64.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

__all__ = [
    "ADAM_FAMILY",
    "CATEGORY_COLUMNS",
    "ENDED",
    "NAME_PATTERN",
    "STATUSES",
    "STEP_SCHEMA",
    "TRIAL_SCHEMA",
    "extra_column_type",
    "steps_table",
    "trial_table",
    "validate_name",
]

STATUSES: tuple[str, ...] = ("completed", "diverged", "stuck", "stopped", "error")
# Endings a rerun keeps: all but `error`. `stopped` means a scheduler (ASHA) ended the
# trial early by design; its files hold the steps it ran and the step it reached.
ENDED: tuple[str, ...] = ("completed", "diverged", "stuck", "stopped")

# Optimizers whose stability threshold applies to the pre-conditioned sharpness
# (`warmup_core.optim.ADAM_FAMILY`, written out so that reading results needs no torch).
ADAM_FAMILY: frozenset[str] = frozenset({"adam", "adamw", "gi-adam", "random-v0-adam", "radam"})

TRIAL_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("sweep", pa.string()),
        ("status", pa.string()),  # one of STATUSES
        ("diverged_step", pa.int64()),  # null unless status == "diverged"
        ("stopped_step", pa.int64()),  # last step run, null unless status == "stopped"
        ("error", pa.string()),  # exception message, null unless status == "error"
        ("model", pa.string()),
        ("dataset", pa.string()),
        ("loss", pa.string()),
        ("parameterization", pa.string()),
        ("init_scale", pa.float64()),
        ("optimizer", pa.string()),
        ("eta_trgt", pa.float64()),  # absolute target learning rate
        ("eta_trgt_relative", pa.float64()),  # eta_trgt * lambda0 when the spec was relative
        ("eta_init", pa.float64()),  # absolute
        ("eta_init_mode", pa.string()),  # zero | value | catapult
        ("warmup_steps", pa.int64()),
        ("warmup_shape", pa.string()),
        ("warmup_end_step", pa.int64()),  # first update at eta_trgt; null if never reached
        ("schedule", pa.string()),  # decay after warmup: constant | cosine | linear
        ("num_steps", pa.int64()),
        ("batch_size", pa.int64()),
        ("init_seed", pa.int64()),
        ("data_seed", pa.int64()),
        ("lambda0", pa.float64()),  # sharpness at initialization
        ("eta_c", pa.float64()),  # catapult estimate of the critical learning rate
        ("eta_c_loss_evals", pa.int64()),  # loss evaluations the eta_c search took
        ("eta_c_check_ratio", pa.float64()),  # loss ratio after steps at constant eta_c
        ("eta_c_overshoots", pa.bool_()),  # those steps blew up: eta_c above the boundary
        ("final_train_loss", pa.float64()),
        ("final_train_accuracy", pa.float64()),
        ("final_test_loss", pa.float64()),
        ("final_test_accuracy", pa.float64()),
        ("final_sharpness", pa.float64()),
        ("wall_time_s", pa.float64()),
        ("device", pa.string()),
        ("node", pa.string()),
        ("package_version", pa.string()),
        # Flat trial-config columns (`TrialConfig.flat()`): sections as `<section>_<option>`.
        ("model_width", pa.int64()),
        ("model_depth", pa.int64()),
        ("model_activation", pa.string()),
        ("model_bias", pa.bool_()),
        ("model_heads", pa.int64()),
        ("model_widen", pa.int64()),
        ("model_base_channels", pa.int64()),
        ("model_variant", pa.string()),  # ours | official (myrtle, wrn)
        ("dataset_train_size", pa.int64()),
        ("dataset_test_size", pa.int64()),
        ("dataset_standardize", pa.bool_()),
        ("dataset_as_image", pa.bool_()),
        ("dataset_dim", pa.int64()),
        ("dataset_num_classes", pa.int64()),
        ("dataset_separation", pa.float64()),
        ("dataset_noise", pa.float64()),
        ("dataset_path", pa.string()),
        ("dataset_context", pa.int64()),
        ("dataset_image_shape", pa.string()),  # JSON list (C, H, W), null for vectors
        ("dataset_standardize_over", pa.string()),  # dataset | example
        ("last_init_scale", pa.float64()),
        ("simple_mup", pa.bool_()),
        ("mup_constants", pa.string()),
        ("mup_conv_fan_in", pa.string()),  # kernel | feature_map
        ("optimizer_momentum", pa.float64()),
        ("optimizer_nesterov", pa.bool_()),
        ("optimizer_beta1", pa.float64()),
        ("optimizer_beta2", pa.float64()),
        ("optimizer_eps", pa.float64()),
        ("optimizer_weight_decay", pa.float64()),
        ("optimizer_v0_seed", pa.int64()),  # random-v0-adam only
        ("warmup_power", pa.float64()),
        ("adaptive_safety", pa.float64()),  # null unless warmup_shape == "adaptive"
        ("adaptive_growth", pa.float64()),
        ("adaptive_every", pa.int64()),
        ("eta_min", pa.float64()),  # absolute, or a fraction of eta_trgt (eta_min_relative_to)
        ("eta_min_relative_to", pa.string()),  # absolute | eta_trgt
        ("decay_power", pa.float64()),  # the cosine decay's exponent
        ("augment_flip", pa.bool_()),
        ("augment_crop_padding", pa.int64()),
        ("augment_mixup", pa.bool_()),
        ("sharpness_every", pa.int64()),
        ("sharpness_batch", pa.string()),
        ("sharpness_batch_size", pa.int64()),
        ("lambda0_batches", pa.int64()),
        ("sharpness_tol", pa.float64()),
        ("sharpness_max_iter", pa.int64()),
        ("eval_every", pa.int64()),
        ("measure_eta_c", pa.bool_()),
        ("catapult_rtol", pa.float64()),
        ("catapult_check_steps", pa.int64()),
        ("divergence_factor", pa.float64()),
        ("stuck_accuracy_factor", pa.float64()),
        ("stuck_loss", pa.float64()),
        ("dtype", pa.string()),
    ]
)

STEP_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("step", pa.int64()),
        ("lr", pa.float64()),
        ("train_loss", pa.float64()),
        ("train_accuracy", pa.float64()),
        ("sharpness", pa.float64()),  # lambda_max(H)
        ("preconditioned_sharpness", pa.float64()),  # lambda_max(P^-1 H), Adam family
        ("threshold", pa.float64()),  # stability threshold at this step (2/lr, 38/lr, ...)
        ("test_loss", pa.float64()),
        ("test_accuracy", pa.float64()),
    ]
)

# Name-like columns the loader turns into pandas categoricals.
CATEGORY_COLUMNS: tuple[str, ...] = (
    "sweep",
    "status",
    "model",
    "dataset",
    "loss",
    "parameterization",
    "optimizer",
    "schedule",
    "warmup_shape",
    "eta_init_mode",
    "device",
    "node",
)

# trial_id and sweep become file and directory names, so nothing may escape the results root.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_name(field: str, value: Any) -> str:
    """Return `value` if it is a safe file/directory name, else raise ValueError naming `field`."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{field} must match {NAME_PATTERN.pattern} (letters, digits, '.', '_', '-'; "
            f"no path separators or '..'), got {value!r}"
        )
    return value


def extra_column_type(value: Any) -> pa.DataType | None:
    """Arrow type for an extra config value by the module rule; None for a null value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int | float):
        return pa.float64()
    if isinstance(value, str):
        return pa.string()
    if hasattr(value, "item"):  # numpy scalar
        return extra_column_type(value.item())
    return pa.string()


def _to_python(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()  # numpy scalar
    return value


def _coerce(value: Any, dtype: pa.DataType) -> Any:
    """Convert one Python value to what pyarrow needs for `dtype` (numbers to float, objects to JSON)."""
    value = _to_python(value)
    if value is None:
        return None
    if pa.types.is_string(dtype) and not isinstance(value, str):
        return json.dumps(value, sort_keys=True, default=str)
    if pa.types.is_floating(dtype):
        return float(value)
    if pa.types.is_integer(dtype):
        if isinstance(value, float):
            if math.isnan(value):
                return None
            if not value.is_integer():
                raise ValueError(f"expected an integer, got {value!r}")
        return int(value)
    return value


def trial_table(summary: Mapping[str, Any]) -> pa.Table:
    """One-row Arrow table of a trial summary: `TRIAL_SCHEMA` columns with their declared
    types (missing ones null), then any extra columns typed by the module rule."""
    status = summary.get("status")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {list(STATUSES)}, got {status!r}")
    fields, arrays = [], []
    for field in TRIAL_SCHEMA:
        try:
            value = _coerce(summary.get(field.name), field.type)
            arrays.append(pa.array([value], field.type))
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise ValueError(f"trial column {field.name!r}: {exc}") from exc
        fields.append(field)
    core = set(TRIAL_SCHEMA.names)
    for name, value in summary.items():
        if name in core:
            continue
        if not isinstance(name, str):
            raise ValueError(f"trial column names must be strings, got {name!r}")
        dtype = extra_column_type(value) or pa.float64()
        try:
            arrays.append(pa.array([_coerce(value, dtype)], dtype))
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise ValueError(f"trial column {name!r}: {exc}") from exc
        fields.append(pa.field(name, dtype))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def steps_table(steps: Any, trial_id: str) -> pa.Table:
    """Arrow table of one trial's per-step rows: core columns fixed (missing ones null), extras float64.

    `steps` is a mapping of column -> sequence, a pandas DataFrame or an Arrow table.
    A `trial_id` column, if given, must equal `trial_id`; otherwise it is filled in.
    """
    # pandas marks "not measured" with NaN, so NaN means null for DataFrames; for plain
    # sequences only None is null and a NaN (a blown-up loss) is kept as NaN.
    from_pandas = False
    if isinstance(steps, pa.Table):
        columns = {name: steps.column(name) for name in steps.column_names}
    elif hasattr(steps, "to_dict") and hasattr(steps, "columns"):  # pandas DataFrame
        columns = {str(name): steps[name].to_numpy() for name in steps.columns}
        from_pandas = True
    else:
        columns = dict(steps)
    if "step" not in columns:
        raise ValueError("steps must have a 'step' column")
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"steps columns differ in length: {lengths}")
    n = lengths["step"]
    if "trial_id" in columns:
        ids = set(pa.array(columns["trial_id"], pa.string()).to_pylist())
        if ids - {trial_id}:
            raise ValueError(f"steps trial_id column {sorted(ids)} differs from {trial_id!r}")
    columns["trial_id"] = [trial_id] * n

    fields, arrays = [], []
    for field in STEP_SCHEMA:
        col = columns.get(field.name)
        if col is None:
            arrays.append(pa.nulls(n, field.type))
        else:
            arrays.append(_step_array(field.name, col, field.type, from_pandas))
        fields.append(field)
    for name, col in columns.items():
        if name in STEP_SCHEMA.names:
            continue
        probe = pa.array(col) if not isinstance(col, pa.ChunkedArray) else col
        dtype = probe.type
        if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_null(dtype):
            dtype = pa.float64()  # same rule as trial extras: numbers are float64
        arrays.append(_step_array(name, col, dtype, from_pandas))
        fields.append(pa.field(str(name), dtype))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    if table.column("step").null_count:
        raise ValueError("steps column 'step' must not contain nulls")
    return table


def _step_array(
    name: str, col: Any, dtype: pa.DataType, from_pandas: bool
) -> pa.Array | pa.ChunkedArray:
    try:
        if isinstance(col, pa.Array | pa.ChunkedArray):
            return col.cast(dtype)
        return pa.array(col, dtype, from_pandas=from_pandas or not pa.types.is_floating(dtype))
    except (TypeError, ValueError, pa.ArrowException) as exc:
        raise ValueError(f"steps column {name!r}: {exc}") from exc
