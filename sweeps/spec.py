"""Sweep specs: YAML, validated, expanded into trial configs.

A spec is a `base` trial config, a `grid` of axes whose cartesian product (times
`seeds`) makes the trials, and how to run them. Any trial-config field can be
an axis, nested fields by dotted name (`model.width`, `optimizer.name`). The
target learning rate can be given relative to 1/lambda_H(0):

    eta_trgt: {relative_to: lambda0, values: [0.5, 1, 2, 4]}

Everything is checked before anything runs; errors name the file and the
dotted path of the field (`base.model.width: ...`, or for a bad grid value
`grid point (model.width=0, ...): model.width: ...`) and are raised as
`SpecError`.
"""

from __future__ import annotations

import itertools
import json
import operator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from results.schema import validate_name
from trials.config import TrialConfig, apply_overrides, fields_with, id_of, id_pieces

SPEC_PACKAGE = "sweeps.specs"


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

    @property
    def asha_config(self) -> Asha | None:
        """The ASHA settings, or None when ASHA is off."""
        if self.asha is True:
            return Asha()
        return self.asha or None


class Failure(_Strict):
    """How often Ray Tune restarts a trial whose worker died."""

    retries: int = Field(default=0, ge=0)


class Logging(_Strict):
    """Ray Tune logger callbacks: TensorBoard by default, MLflow on request."""

    tensorboard: bool = True
    mlflow: bool = False
    mlflow_tracking_uri: str | None = None


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


class PlannedTrial:
    """One trial of a sweep: its overrides of the base config, the resolved config and
    its trial id.

    `PlannedTrial(overrides, config)` holds both. `expand` makes its trials without a
    config or overrides dict each: a trial there holds its id, its grid point's axis
    values (shared with other trials) and a validated config of its coupled axes (also
    shared), and `overrides` and `config` are built from those on each access, so
    planning 100k trials keeps 100k ids in memory, not 100k configs.
    """

    __slots__ = ("_config", "_overrides", "_parts", "_shared", "_trial_id", "_updates")

    def __init__(
        self,
        overrides: dict[str, Any] | None,
        config: TrialConfig | None = None,
        *,
        trial_id: str | None = None,
        parts: tuple[dict[str, Any], ...] = (),
        shared: TrialConfig | None = None,
        updates: tuple[dict[str, Any], ...] = (),
    ) -> None:
        if (config is None) == (shared is None):
            raise TypeError("PlannedTrial needs either config or shared")
        if config is None and trial_id is None:
            raise TypeError("PlannedTrial(shared=...) needs its trial_id")
        self._overrides, self._parts = overrides, parts
        self._config, self._shared, self._updates = config, shared, updates
        self._trial_id = trial_id

    @property
    def overrides(self) -> dict[str, Any]:
        """The trial's overrides of the base config, by dotted field name, in axis order."""
        if self._overrides is not None:
            return self._overrides
        return _merged(self._parts)

    @property
    def config(self) -> TrialConfig:
        """The trial's resolved config (equal to validating its merged overrides)."""
        if self._config is not None:
            return self._config
        update: dict[str, Any] = {}
        for part in self._updates:
            update.update(part)
        return self._shared.model_copy(update=update)  # type: ignore[union-attr]

    @property
    def trial_id(self) -> str:
        if self._trial_id is None:
            self._trial_id = self.config.trial_id()
        return self._trial_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PlannedTrial):
            return NotImplemented
        return (self.overrides, self.config) == (other.overrides, other.config)

    __hash__ = None  # type: ignore[assignment]  # holds a dict, like the dataclass it was

    def __repr__(self) -> str:
        return f"PlannedTrial(overrides={self.overrides!r}, trial_id={self.trial_id!r})"


# Fields that accept several forms: a bad value gets one line listing the forms, not
# one error per form. Keys are dotted locations; "*" matches any one name.
UNION_FORMS: dict[str, str] = {
    "grid.*": "a list of values, {relative_to: lambda0, values: [...]}, or {low, high, log}",
    "search.asha": "true, false, or {grace_period, reduction_factor, max_t}",
    "pack_size": "a positive integer or 'auto'",
}


def _matches(pattern: str, names: tuple[str, ...]) -> bool:
    parts = pattern.split(".")
    return len(parts) == len(names) and all(
        p in ("*", n) for p, n in zip(parts, names, strict=True)
    )


def _union_of(loc: tuple[str, ...]) -> tuple[str, str] | None:
    """(dotted field, accepted forms) of the union field that the error at `loc` lies in."""
    for pattern, forms in UNION_FORMS.items():
        depth = len(pattern.split("."))
        if len(loc) > depth and _matches(pattern, loc[:depth]):
            return ".".join(loc[:depth]), forms
    return None


def _value_at(data: Any, dotted: str) -> str:
    """The input at a dotted location, as compact JSON."""
    for key in dotted.split("."):
        if not isinstance(data, dict) or key not in data:
            return "an invalid value"
        data = data[key]
    return json.dumps(data, default=str)


def _plain_line(parts: list[str], msg: str) -> str:
    """`dotted.field: message` for one error at location `parts`."""
    msg = msg.removeprefix("Value error, ")
    # Section validators name their field from the section down ("model.width: ...").
    head = msg.split(":", 1)[0]
    if parts and "." in head and " " not in head and head.split(".")[0] == parts[-1]:
        parts = parts[:-1]
        return f"{'.'.join(parts)}.{msg}" if parts else msg
    loc = ".".join(parts)
    return f"{loc}: {msg}" if loc else msg


def _format_validation(exc: ValidationError, prefix: str, data: Any = None) -> str:
    """Pydantic errors as one line: `dotted.field: message; ...`.

    A union field (`UNION_FORMS`) gets one message: the errors of the form whose
    shape the input has (e.g. a mapping with only `Asha` keys), else the forms it
    accepts and what it got.
    """
    errors = [(tuple(str(p) for p in err["loc"]), err) for err in exc.errors()]
    lines: list[str] = []
    unions: dict[str, list] = {}
    for loc, err in errors:
        union = None if prefix else _union_of(loc)
        if union is None:
            lines.append(_plain_line([p for p in (prefix, *loc) if p != ""], err["msg"]))
            continue
        if union[0] not in unions:
            unions[union[0]] = []
            lines.append(union[0])  # placeholder, keeps the order of fields
        unions[union[0]].append((loc, err))
    for field, errs in unions.items():
        depth = len(field.split("."))
        by_form: dict[str, list] = {}
        for loc, err in errs:
            by_form.setdefault(loc[depth], []).append((loc, err))
        # A form the input fits in shape has only errors inside its own fields.
        fitting = [
            form_errs
            for form_errs in by_form.values()
            if all(
                len(loc) > depth + 1 and err["type"] not in ("missing", "extra_forbidden")
                for loc, err in form_errs
            )
        ]
        if len(fitting) == 1:
            text = "; ".join(
                f"{'.'.join((field, *loc[depth + 1 :]))}: {err['msg'].removeprefix('Value error, ')}"
                for loc, err in fitting[0]
            )
        else:
            forms = next(f for p, f in UNION_FORMS.items() if _matches(p, tuple(field.split("."))))
            text = f"{field}: expected {forms}; got {_value_at(data, field)}"
        lines[lines.index(field)] = text
    return "; ".join(lines)


def parse_spec(data: Any, source: str = "spec") -> SweepSpec:
    """Validate a loaded YAML document as a spec, and every trial it expands to."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a spec must be a YAML mapping, got {type(data).__name__}")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{source}: {_format_validation(exc, '', data)}") from None
    try:
        TrialConfig.model_validate(spec.base)
    except ValidationError as exc:
        raise SpecError(f"{source}: {_format_validation(exc, 'base')}") from None
    _check_axes(spec, source)
    check_grid(spec, source)  # every combination must be a valid trial
    return spec


def _check_axes(spec: SweepSpec, source: str) -> None:
    for axis, values in spec.grid.items():
        if isinstance(values, RelativeAxis) and axis != "eta_trgt":
            raise SpecError(f"{source}: grid.{axis}: relative_to applies to eta_trgt only")
        if isinstance(values, RangeAxis) and spec.search.kind != "optuna":
            raise SpecError(f"{source}: grid.{axis}: a low/high range needs search.kind optuna")
        if axis in ("init_seed", "data_seed") and len(spec.seeds) > 1:
            raise SpecError(f"{source}: grid.{axis}: set seeds: [one seed] when sweeping {axis}")
    if spec.search.kind == "boundary" and "eta_trgt" not in spec.grid:
        raise SpecError(f"{source}: grid.eta_trgt: a boundary search needs an eta_trgt axis")


def axis_values(spec: SweepSpec) -> dict[str, list[dict[str, Any]]]:
    """Each axis as a list of override dicts (a relative eta sets two fields)."""
    axes: dict[str, list[dict[str, Any]]] = {}
    for axis, values in spec.grid.items():
        if isinstance(values, RelativeAxis):
            axes[axis] = [{"eta_trgt": v, "eta_trgt_relative_to": "lambda0"} for v in values.values]
        elif isinstance(values, RangeAxis):
            axes[axis] = [{axis: values.low}, {axis: values.high}]  # validation probes
        else:
            axes[axis] = [{axis: v} for v in values]
    # `seeds` sets both seeds, except one that is swept as its own axis.
    seeded = [k for k in ("init_seed", "data_seed") if k not in spec.grid]
    axes["seed"] = [dict.fromkeys(seeded, s) for s in spec.seeds]
    return axes


# Top-level `TrialConfig` fields that no model validator reads and whose field
# validators look at the value alone (`FieldRole.independent`): a value of one of them is
# valid, and resolves to the same value, whatever the other fields hold. `expand`
# validates each value of an axis that sets only such fields once, and each combination
# of the other ("coupled") axes once, instead of every grid point.
# tests/sweeps/test_spec.py checks the roles against the source of TrialConfig's validators.
INDEPENDENT_FIELDS: frozenset[str] = fields_with(TrialConfig, independent=True)


@dataclass
class _Combo:
    """A validated combination of the coupled axes (independent fields at base values)."""

    config: TrialConfig
    pieces: list[str]  # its trial id's pieces, in key order
    slots: dict[str, int]  # position of each top-level key in `pieces`


def _combo(config: TrialConfig) -> _Combo:
    fields = config.id_fields()
    return _Combo(config, id_pieces(fields), {k: i for i, k in enumerate(sorted(fields))})


@dataclass
class _GridPlan:
    """A grid checked by its parts: every coupled combination and every independent value."""

    independent: list[bool]  # per axis
    combos: dict[tuple[int, ...], _Combo]  # by the value indices of the coupled axes
    slots: dict[str, int]  # position of each top-level key in every combination's pieces
    values: dict[tuple[int, int], tuple[dict[str, Any], dict[str, str]]]
    # (axis, value index) of an independent axis -> (validated fields, their id pieces)


def _independent_axes(axes: dict[str, list[dict[str, Any]]]) -> list[bool]:
    """Whether each axis sets only `INDEPENDENT_FIELDS` that no other axis sets."""
    keys = [{k for part in parts for k in part} for parts in axes.values()]
    setters: dict[str, int] = {}
    for axis_keys in keys:
        for k in axis_keys:
            setters[k] = setters.get(k, 0) + 1
    return [all(k in INDEPENDENT_FIELDS and setters[k] == 1 for k in ks) for ks in keys]


def _merged(parts: Any) -> dict[str, Any]:
    return {k: v for part in parts for k, v in part.items()}


def _plan_grid(spec: SweepSpec, axes: dict[str, list[dict[str, Any]]]) -> _GridPlan | None:
    """Validate the grid by its parts; None when some part is invalid (or the id check
    fails), and the caller validates point by point for the exact error.

    A grid point's config is its coupled combination's config with its independent
    fields replaced: no validator reads those, so a point is valid exactly when its
    combination and each of its independent values are.
    """
    independent = _independent_axes(axes)
    parts = list(axes.values())
    coupled = [i for i, ind in enumerate(independent) if not ind]
    combos: dict[tuple[int, ...], _Combo] = {}
    try:
        for index in itertools.product(*(range(len(parts[i])) for i in coupled)):
            overrides = _merged(parts[i][j] for i, j in zip(coupled, index, strict=True))
            combo = _combo(TrialConfig.model_validate(apply_overrides(spec.base, overrides)))
            if combos and combo.slots != next(iter(combos.values())).slots:
                return None
            combos[index] = combo
        first_index = next(iter(combos))
        first = combos[first_index]
        first_overrides = _merged(parts[i][j] for i, j in zip(coupled, first_index, strict=True))
        values: dict[tuple[int, int], tuple[dict[str, Any], dict[str, str]]] = {}
        for i, ind in enumerate(independent):
            for j, part in enumerate(parts[i] if ind else ()):
                merged = apply_overrides(spec.base, {**first_overrides, **part})
                config = TrialConfig.model_validate(merged)
                fields = {k: getattr(config, k) for k in part}
                if config != first.config.model_copy(update=fields):
                    return None
                dumped = config.model_dump(mode="json", include=set(part))
                pieces = {k: id_pieces({k: dumped[k]})[0] for k in part if k in first.slots}
                if j == 0:  # the axis's pieces in place of the base's make the point's id
                    check = list(first.pieces)
                    for k, piece in pieces.items():
                        check[first.slots[k]] = piece
                    if id_of(check) != config.trial_id():
                        return None
                values[i, j] = fields, pieces
    except ValueError:  # ValidationError too
        return None
    return _GridPlan(independent, combos, first.slots, values)


def check_grid(spec: SweepSpec, source: str = "spec") -> None:
    """Raise `SpecError` (naming the first bad grid point, as `expand` does) unless every
    trial of the grid is valid; cheap: it validates the grid's parts, not each point."""
    axes = axis_values(spec)
    if _plan_grid(spec, axes) is None:
        _expand_each(spec, axes, source)


def expand(spec: SweepSpec, source: str = "spec") -> list[PlannedTrial]:
    """All trials of the grid (cartesian product of axes and seeds), in a stable order.

    Every trial is valid (else `SpecError` naming the first bad grid point); trials
    whose configs are equal (e.g. two spellings of the same value) appear once.
    """
    axes = axis_values(spec)
    plan = _plan_grid(spec, axes)
    if plan is None:
        return _expand_each(spec, axes, source)
    parts = list(axes.values())
    coupled = _picker([i for i, ind in enumerate(plan.independent) if not ind])
    free_axes = [i for i, ind in enumerate(plan.independent) if ind]
    free = _picker(free_axes)
    # Per independent axis value: its validated fields, and its id pieces by position.
    free_values = [
        [(fields, tuple((plan.slots[k], p) for k, p in pieces.items())) for fields, pieces in vals]
        for vals in ([plan.values[i, j] for j in range(len(parts[i]))] for i in free_axes)
    ]
    planned, seen = [], set()
    for index in itertools.product(*(range(len(p)) for p in parts)):
        combo = plan.combos[coupled(index)]
        pieces = combo.pieces
        updates = tuple(map(list.__getitem__, free_values, free(index)))
        if updates:
            pieces = pieces.copy()
            for _, positioned in updates:
                for slot, piece in positioned:
                    pieces[slot] = piece
        trial_id = id_of(pieces)
        if trial_id not in seen:  # e.g. two spellings of the same value
            seen.add(trial_id)
            planned.append(
                PlannedTrial(
                    None,
                    trial_id=trial_id,
                    parts=tuple(map(list.__getitem__, parts, index)),
                    shared=combo.config,
                    updates=tuple(fields for fields, _ in updates),
                )
            )
    return planned


def _picker(positions: list[int]) -> Any:
    """A function giving the tuple of the items at `positions` of a tuple."""
    if len(positions) == 1:
        (only,) = positions
        return lambda items: (items[only],)
    return operator.itemgetter(*positions) if positions else lambda items: ()


def _expand_each(
    spec: SweepSpec, axes: dict[str, list[dict[str, Any]]], source: str
) -> list[PlannedTrial]:
    """`expand` validating every grid point in full (raises at the first bad one)."""
    planned, seen = [], set()
    for combo in itertools.product(*axes.values()):
        planned_trial = make_trial(spec, _merged(combo), source)
        if planned_trial.trial_id not in seen:
            seen.add(planned_trial.trial_id)
            planned.append(planned_trial)
    return planned


def make_trial(spec: SweepSpec, overrides: dict[str, Any], source: str = "spec") -> PlannedTrial:
    """The trial for `overrides` of the base config, validated."""
    try:
        merged = apply_overrides(spec.base, overrides)
        return PlannedTrial(overrides, TrialConfig.model_validate(merged))
    except ValidationError as exc:
        where = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        raise SpecError(f"{source}: grid point ({where}): {_format_validation(exc, '')}") from None
    except ValueError as exc:
        raise SpecError(f"{source}: grid: {exc}") from None


def bundled_specs() -> dict[str, Path]:
    """Names and paths of the specs that ship with the package."""
    root = resources.files(SPEC_PACKAGE)
    return {
        Path(str(p)).stem: Path(str(p))
        for p in sorted(root.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".yaml")
    }


def load_spec(spec: str | Path) -> tuple[SweepSpec, str]:
    """Load a spec from a YAML path or a bundled name; returns the spec and its YAML text."""
    path = Path(spec)
    if not path.exists():
        bundled = bundled_specs()
        if str(spec) not in bundled:
            raise SpecError(
                f"{spec}: no such file and no bundled spec of that name; "
                f"bundled: {', '.join(bundled)}"
            )
        path = bundled[str(spec)]
    if path.is_dir():
        raise SpecError(f"{path}: is a directory, not a spec file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)  # safe_load: a spec can never construct Python objects
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    return parse_spec(data, str(path)), text


def resolved_yaml(spec: SweepSpec) -> str:
    """The spec with every default filled in, as YAML (written next to the results)."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
