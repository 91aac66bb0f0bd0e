"""The sweep spec's schema: `SweepSpec` and its sections, as pydantic models.

A spec is a `base` trial config, a `grid` of axes whose cartesian product (times
`seeds`) makes the trials, and how to run them. Any trial-config field can be
an axis, nested fields by dotted name (`model.width`, `optimizer.name`). The
target learning rate can be given relative to 1/lambda_H(0):

    eta_trgt: {relative_to: lambda0, values: [0.5, 1, 2, 4]}

These models check the spec's own fields; `sweeps.spec.parse_spec` also checks
the base config and every trial of the grid (`sweeps.grid`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from results.schema import validate_name

__all__ = [
    "UNION_FORMS",
    "Asha",
    "Failure",
    "Logging",
    "RangeAxis",
    "RelativeAxis",
    "Resources",
    "Search",
    "SpecError",
    "SweepSpec",
    "Wandb",
]


class SpecError(ValueError):
    """A spec (or the file it came from) is invalid; the message names the field or file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    """Per-trial (per-pack) resources; fractions let several trials share one GPU."""

    cpu: float = Field(default=1.0, gt=0)
    gpu: float = Field(default=0.0, ge=0)


class Asha(_Strict):
    """ASHA early stopping, in training steps: a trial runs at least `grace_period` steps;
    at each rung only the best 1/`reduction_factor` go on; `max_t` (default: the base
    config's `num_steps`) is the most any trial runs."""

    grace_period: int = Field(default=1, gt=0)
    reduction_factor: float = Field(default=4.0, gt=1)
    max_t: int | None = Field(default=None, gt=0)


class Search(_Strict):
    """How trials are chosen: the full grid, Optuna, or a divergence-boundary bisection."""

    kind: Literal["grid", "optuna", "boundary"] = "grid"
    metric: str = "final_test_loss"
    mode: Literal["min", "max"] = "min"
    num_samples: int = Field(default=20, gt=0)
    asha: bool | Asha = False  # true: ASHA with Ray Tune's defaults (see `Asha`)
    resolution: float = Field(default=0.5, gt=0)  # boundary: bracket width in log2(eta)
    stuck_trainable: bool = False  # boundary: a stuck trial is trainable (default: failed)

    @property
    def asha_config(self) -> Asha | None:
        """The ASHA settings, or None when ASHA is off."""
        if self.asha is True:
            return Asha()
        return self.asha or None


class Failure(_Strict):
    """How often Ray Tune restarts a trial whose worker died."""

    retries: int = Field(default=0, ge=0)


class Wandb(_Strict):
    """Weights & Biases: a run per trial, named by its trial id, in `project` (of `entity`,
    default: the logged-in user's), grouped by `group` (default: the sweep's name).
    `mode` offline writes runs to disk for a later `wandb sync`; None: W&B's own default
    (the WANDB_MODE variable, else online)."""

    project: str = Field(min_length=1)
    entity: str | None = None
    group: str | None = None
    mode: Literal["online", "offline"] | None = None
    tags: list[str] = Field(default_factory=list)


class Logging(_Strict):
    """Experiment trackers, fed every measurement of each trial as it ends
    (`sweeps.tracking`): TensorBoard by default, MLflow and W&B on request.
    `mlflow_tracking_uri` None is MLflow's own default (MLFLOW_TRACKING_URI, else
    ./mlflow.db)."""

    tensorboard: bool = True
    mlflow: bool = False
    mlflow_tracking_uri: str | None = None
    wandb: Wandb | None = None


class RelativeAxis(_Strict):
    """`eta_trgt` values as multiples of 1/lambda_H(0)."""

    relative_to: Literal["lambda0"]
    values: list[float] = Field(min_length=1)


class RangeAxis(_Strict):
    """A continuous axis for Optuna: uniform or log-uniform between low and high."""

    low: float
    high: float
    log: bool = False


class SweepSpec(_Strict):
    """A whole sweep: base config, axes, seeds, resources and search."""

    name: str
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any] | RelativeAxis | RangeAxis] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    resources: Resources = Resources()
    search: Search = Search()
    max_concurrent: int | None = Field(default=None, gt=0)
    failure: Failure = Failure()
    logging: Logging = Logging()
    pack_size: Annotated[int, Field(gt=0)] | Literal["auto"] = 1  # trials per process

    @property
    def is_finite(self) -> bool:
        """Whether the axes are finite lists (no low/high range): `expand` lists every trial."""
        return not any(isinstance(v, RangeAxis) for v in self.grid.values())

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return validate_name("name", value)

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, grid: dict[str, Any]) -> dict[str, Any]:
        for axis, values in grid.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"axis {axis!r} is empty")
        return grid

    @field_validator("seeds")
    @classmethod
    def _non_negative_seeds(cls, seeds: list[int]) -> list[int]:
        if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct non-negative integers")
        return seeds


# The spec's fields that accept several forms: a bad value gets one line listing the
# forms, not one error per form (`sweeps.validation_errors`). Keys are dotted
# locations; "*" matches any one name.
UNION_FORMS: dict[str, str] = {
    "grid.*": "a list of values, {relative_to: lambda0, values: [...]}, or {low, high, log}",
    "search.asha": "true, false, or {grace_period, reduction_factor, max_t}",
    "pack_size": "a positive integer or 'auto'",
}
