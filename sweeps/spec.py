"""Sweep specs from YAML: load, validate (the spec, its base config and every trial of
its grid) and write back with every default filled in.

Everything is checked before anything runs; errors name the file and the
dotted path of the field (`base.model.width: ...`, or for a bad grid value
`grid point (model.width=0, ...): model.width: ...`) and are raised as
`SpecError`. The schema is `sweeps.schema`; grid expansion is `sweeps.grid`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sweeps.grid import check_grid
from sweeps.schema import UNION_FORMS, RangeAxis, RelativeAxis, SpecError, SweepSpec
from sweeps.validation_errors import format_validation_error
from trials import TrialConfig, apply_overrides

__all__ = [
    "SPEC_PACKAGE",
    "apply_settings",
    "bundled_specs",
    "load_spec",
    "parse_spec",
    "resolved_yaml",
]

SPEC_PACKAGE = "sweeps.specs"


def parse_spec(data: Any, source: str = "spec") -> SweepSpec:
    """Validate a loaded YAML document as a spec, and every trial it expands to; `source`
    (a file name) starts every error message."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a spec must be a YAML mapping, got {type(data).__name__}")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        message = format_validation_error(exc, data=data, union_forms=UNION_FORMS)
        raise SpecError(f"{source}: {message}") from None
    try:
        TrialConfig.model_validate(spec.base)
    except ValidationError as exc:
        raise SpecError(f"{source}: {format_validation_error(exc, prefix='base')}") from None
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


def bundled_specs() -> dict[str, Path]:
    """Names and paths of the specs that ship with the package."""
    root = resources.files(SPEC_PACKAGE)
    return {
        Path(str(p)).stem: Path(str(p))
        for p in sorted(root.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".yaml")
    }


def apply_settings(data: Any, settings: Mapping[str, Any], source: str = "spec") -> Any:
    """A copy of the YAML document `data` with each dotted key of `settings` set to its
    value (`warmup-sweep run --set base.num_steps=50`): keys address the document, so a
    spec's `base.model.width`, `grid.warmup_steps`, `pack_size`; missing mappings on the
    way are made. The result is validated by whoever reads the document, as the file."""
    if not settings:
        return data
    if not isinstance(data, dict):
        raise SpecError(f"{source}: --set needs a YAML mapping, got {type(data).__name__}")
    try:
        return apply_overrides(data, dict(settings))
    except ValueError as exc:  # a key goes through a value that is not a mapping
        raise SpecError(f"{source}: --set {exc}") from None


def load_spec(spec: str | Path, settings: Mapping[str, Any] | None = None) -> tuple[SweepSpec, str]:
    """Load a spec from a YAML path or a bundled name, with `settings` (dotted keys, see
    `apply_settings`) applied before it is validated; returns the spec and the file's
    YAML text."""
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
    return parse_spec(apply_settings(data, settings or {}, str(path)), str(path)), text


def resolved_yaml(spec: SweepSpec) -> str:
    """The spec with every default filled in, as YAML (written next to the results)."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
