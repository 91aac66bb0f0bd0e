"""Grid expansion: a spec's axes (times its seeds) into validated trials, in a stable order.

Every grid point is a trial config: the spec's `base` with the point's axis
values set. Validating each point in full costs one `TrialConfig` validation per
trial, too slow for grids of 100k trials. `expand` validates the grid by its
parts instead, with the same result:

1. An axis is *independent* when it sets only fields that no model validator
   reads and whose own validators look at the value alone
   (`FieldRole.independent`), and no other axis sets them. A value of such an
   axis is valid, and resolves to the same value, whatever the other fields hold.
   The other axes are *coupled*.
2. Each combination of the coupled axes' values is validated once.
3. Each value of an independent axis is validated once, set on the first
   combination; what it changes in the config (its own fields) and in the trial
   id (their id pieces) is kept.
4. A grid point is its coupled combination with its independent values set: its
   config is the combination's config with those fields replaced, and its trial id
   hashes the combination's id pieces with theirs replaced.

When any part fails (or a check of the shortcut does not hold), `expand` falls
back to validating every point in full, which raises `SpecError` naming the
first bad grid point exactly as before.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from sweeps.schema import RangeAxis, RelativeAxis, SpecError, SweepSpec
from sweeps.validation_errors import format_validation_error
from trials import TrialConfig, apply_overrides, fields_with, id_of, id_pieces

__all__ = [
    "INDEPENDENT_FIELDS",
    "GridPlan",
    "PlannedTrial",
    "axis_values",
    "check_grid",
    "expand",
    "make_trial",
    "plan_grid",
]

# Top-level `TrialConfig` fields that no model validator reads and whose field
# validators look at the value alone (`FieldRole.independent`).
# tests/sweeps/test_spec.py checks the roles against the source of TrialConfig's validators.
INDEPENDENT_FIELDS: frozenset[str] = fields_with(TrialConfig, independent=True)


class PlannedTrial:
    """One trial of a sweep: its overrides of the base config, the resolved config and
    its trial id.

    `PlannedTrial(overrides, config)` holds both. `expand` makes its trials without a
    config or overrides dict each: such a trial holds its id, its grid point's axis
    values (shared with other trials) and the validated config of its coupled
    combination (also shared) with the fields its independent values replace, and
    `overrides` and `config` are built from those on each access. So planning 100k
    trials keeps 100k ids in memory, not 100k configs.
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
        """Either `overrides` and `config`, or (as `expand` makes them) the rest.

        Args:
            overrides: the overrides of the base config, by dotted field name.
            config: the resolved config of those overrides.
            trial_id: the trial id (computed from the config when not given).
            parts: the grid point's axis values, each an overrides dict, in axis order.
            shared: the resolved config of the point's coupled combination.
            updates: the fields (with resolved values) that the point's independent
                values set in `shared`.
        """
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
        return self._shared.model_copy(update=_merged(self._updates))  # type: ignore[union-attr]

    @property
    def trial_id(self) -> str:
        """The trial's id (`TrialConfig.trial_id` of its config)."""
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


def _merged(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {k: v for part in parts for k, v in part.items()}


def axis_values(spec: SweepSpec) -> dict[str, list[dict[str, Any]]]:
    """Each axis as a list of override dicts (a relative eta sets two fields); the seeds
    are the last axis, `seed`."""
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


def make_trial(spec: SweepSpec, overrides: dict[str, Any], source: str = "spec") -> PlannedTrial:
    """The trial for `overrides` of the base config, validated (else `SpecError` naming
    the grid point)."""
    try:
        merged = apply_overrides(spec.base, overrides)
        return PlannedTrial(overrides, TrialConfig.model_validate(merged))
    except ValidationError as exc:
        where = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        raise SpecError(f"{source}: grid point ({where}): {format_validation_error(exc)}") from None
    except ValueError as exc:
        raise SpecError(f"{source}: grid: {exc}") from None


def expand(spec: SweepSpec, source: str = "spec") -> list[PlannedTrial]:
    """All trials of the grid (cartesian product of axes and seeds), in a stable order.

    Every trial is valid (else `SpecError` naming the first bad grid point); trials
    whose configs are equal (e.g. two spellings of the same value) appear once.
    """
    plan = plan_grid(spec)
    if plan is None:
        return _expand_each(spec, source)
    return plan.trials()


def check_grid(spec: SweepSpec, source: str = "spec") -> None:
    """Raise `SpecError` (naming the first bad grid point, as `expand` does) unless every
    trial of the grid is valid; cheap: it validates the grid's parts, not each point."""
    if plan_grid(spec) is None:
        _expand_each(spec, source)


def _expand_each(spec: SweepSpec, source: str) -> list[PlannedTrial]:
    """`expand` validating every grid point in full (raises at the first bad one)."""
    planned, seen = [], set()
    for point in itertools.product(*axis_values(spec).values()):
        trial = make_trial(spec, _merged(point), source)
        if trial.trial_id not in seen:
            seen.add(trial.trial_id)
            planned.append(trial)
    return planned


# ----------------------------------------------------------------------------- by parts


@dataclass(frozen=True)
class Axis:
    """One axis of the grid: its values (each the overrides it sets), and whether it is
    independent (sets only independent fields, which no other axis sets)."""

    name: str
    values: list[dict[str, Any]]
    independent: bool


@dataclass(frozen=True)
class Combination:
    """A combination of the coupled axes' values, validated, with every independent field
    at its value on the first grid point."""

    overrides: dict[str, Any]
    config: TrialConfig
    pieces: dict[str, str]  # the id piece of each top-level field, in the id's key order


@dataclass(frozen=True)
class IndependentValue:
    """A value of an independent axis, validated: what it sets in a grid point's config
    (its fields' resolved values) and in its trial id (their id pieces, hashed fields only)."""

    fields: dict[str, Any]
    pieces: dict[str, str]


@dataclass(frozen=True)
class GridPlan:
    """A grid validated by its parts (`plan_grid`): each combination of the coupled axes'
    values, by the positions of those values on their axes, and each value of each
    independent axis, by axis name."""

    axes: list[Axis]
    combinations: dict[tuple[int, ...], Combination]
    independent: dict[str, list[IndependentValue]]

    def trials(self) -> list[PlannedTrial]:
        """Every grid point's trial, in grid order; a trial id already seen is left out."""
        planned, seen = [], set()
        for point in itertools.product(*(range(len(axis.values)) for axis in self.axes)):
            trial = self.trial_at(point)
            if trial.trial_id not in seen:  # e.g. two spellings of the same value
                seen.add(trial.trial_id)
                planned.append(trial)
        return planned

    def trial_at(self, point: tuple[int, ...]) -> PlannedTrial:
        """The trial of the grid point that takes value `point[i]` of axis i."""
        chosen = list(zip(self.axes, point, strict=True))
        combination = self.combinations[tuple(j for axis, j in chosen if not axis.independent)]
        values = [self.independent[axis.name][j] for axis, j in chosen if axis.independent]
        pieces = combination.pieces.copy()
        for value in values:
            pieces.update(value.pieces)  # a replaced piece keeps its place in the key order
        return PlannedTrial(
            None,
            trial_id=id_of(list(pieces.values())),
            parts=tuple(axis.values[j] for axis, j in chosen),
            shared=combination.config,
            updates=tuple(value.fields for value in values),
        )


def plan_grid(spec: SweepSpec) -> GridPlan | None:
    """The spec's grid validated by its parts (see the module docstring), or None when
    some part is invalid or the shortcut does not apply; `expand` then validates every
    grid point in full."""
    axes = _axes(spec)
    try:
        combinations = _validate_combinations(spec.base, [a for a in axes if not a.independent])
        first = next(iter(combinations.values()))
        independent = {
            axis.name: [_validate_value(spec.base, first, value) for value in axis.values]
            for axis in axes
            if axis.independent
        }
    except (ValueError, _NotByParts):  # ValidationError is a ValueError
        return None
    return GridPlan(axes, combinations, independent)


def _axes(spec: SweepSpec) -> list[Axis]:
    """The grid's axes (seeds last), each marked independent or coupled."""
    values = axis_values(spec)
    fields = {name: {k for value in parts for k in value} for name, parts in values.items()}
    setters = Counter(k for axis_fields in fields.values() for k in axis_fields)
    return [
        Axis(
            name,
            parts,
            independent=all(k in INDEPENDENT_FIELDS and setters[k] == 1 for k in fields[name]),
        )
        for name, parts in values.items()
    ]


def _validate_combinations(
    base: dict[str, Any], coupled: list[Axis]
) -> dict[tuple[int, ...], Combination]:
    """Each combination of the coupled axes' values, validated, by value positions."""
    combinations: dict[tuple[int, ...], Combination] = {}
    for positions in itertools.product(*(range(len(axis.values)) for axis in coupled)):
        overrides = _merged(axis.values[j] for axis, j in zip(coupled, positions, strict=True))
        config = TrialConfig.model_validate(apply_overrides(base, overrides))
        combinations[positions] = Combination(overrides, config, _id_pieces_by_field(config))
    first_fields = list(next(iter(combinations.values())).pieces)
    if any(list(c.pieces) != first_fields for c in combinations.values()):
        raise _NotByParts  # the trial ids would not hash the same fields
    return combinations


def _validate_value(
    base: dict[str, Any], first: Combination, value: dict[str, Any]
) -> IndependentValue:
    """A value of an independent axis, validated on the first combination."""
    config = TrialConfig.model_validate(apply_overrides(base, {**first.overrides, **value}))
    fields = {k: getattr(config, k) for k in value}
    if config != first.config.model_copy(update=fields):
        raise _NotByParts  # the value changed more than its own fields
    pieces = {k: p for k, p in _id_pieces_by_field(config).items() if k in value}
    if id_of(list({**first.pieces, **pieces}.values())) != config.trial_id():
        raise _NotByParts  # its id pieces in place of the combination's do not make its id
    return IndependentValue(fields, pieces)


class _NotByParts(Exception):
    """A check of the shortcut does not hold: validate the grid point by point."""


def _id_pieces_by_field(config: TrialConfig) -> dict[str, str]:
    """The config's `id_pieces`, by top-level field, in the id's (sorted) key order."""
    fields = config.id_fields()
    return dict(zip(sorted(fields), id_pieces(fields), strict=True))
