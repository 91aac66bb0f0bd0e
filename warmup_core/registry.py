"""Registries: name -> builder plus its option schema, for models and datasets.

A sweep names a model or dataset and sets options; the registry entry says
which options exist, their types, allowed values and defaults, so a config is
validated, and completed with every default, before anything is built. Each
default lives here, in the entry, and nowhere else: builders receive every
option explicitly.

Built-ins register at import; third-party packages add entries through Python
entry points (group `warmup_sweeps.models` or `warmup_sweeps.datasets`), each
pointing at an entry object. Only installed, registered code runs: a spec
names entries, it never imports code by path. A built-in name cannot be
taken over by a plugin.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any, Generic, TypeVar

__all__ = ["Entry", "Option", "Registry"]

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


@dataclass(frozen=True)
class Option:
    """One option of an entry: its type, default and allowed values.

    `type` is int, float, bool, str, or list (a list of positive integers, e.g. an
    image shape; `length` fixes its length). `default=None` makes the option
    optional (None means "not set"). `minimum` is inclusive, `above` exclusive.
    `omit_default`: left out of trial ids while at its default (an option added after
    sweeps were run, whose default reproduces what they ran, keeps their ids).
    """

    type: type
    default: Any = None
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    above: float | None = None
    length: int | None = None
    help: str = ""
    omit_default: bool = False

    def validate(self, field: str, value: Any) -> Any:
        """`value` checked and normalized (ints accepted as floats); ValueError names `field`."""
        if value is None:
            if self.default is None:
                return None
            raise ValueError(f"{field}: must be set (default {self.default!r}), got null")
        if self.type is list:
            ok = isinstance(value, (list, tuple)) and all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
            )
            if not ok or (self.length is not None and len(value) != self.length):
                size = f"{self.length} " if self.length else ""
                raise ValueError(
                    f"{field}: must be a list of {size}positive integers, got {value!r}"
                )
            return list(value)
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise ValueError(f"{field}: must be {_TYPE_NAMES[self.type]}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise ValueError(f"{field}: unknown value {value!r}; allowed: {allowed}")
        if self.type is int and self.minimum == 1 and value < 1:
            raise ValueError(f"{field}: must be a positive integer, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{field}: must be >= {self.minimum}, got {value!r}")
        if self.above is not None and value <= self.above:
            raise ValueError(f"{field}: must be > {self.above}, got {value!r}")
        return value

    def describe(self) -> str:
        """One-line summary: type and default (for `warmup-sweep specs`)."""
        kind = "list" if self.type is list else self.type.__name__
        return f"{kind}={self.default!r}"


@dataclass(frozen=True)
class Entry:
    """What every registry entry has: a name, a builder and its options.

    `check(options)` (optional) validates combinations of resolved options and
    raises ValueError naming the field (e.g. `heads` must divide `width`).
    """

    name: str
    builder: Callable[..., Any]
    options: Mapping[str, Option] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], None] | None = None
    description: str = ""
    source: str = "built-in"


E = TypeVar("E", bound=Entry)


class Registry(Generic[E]):
    """Entries of one kind ('model', 'dataset'): built-ins plus installed plugins."""

    def __init__(self, kind: str, group: str, entry_type: type[E]) -> None:
        self.kind, self.group, self.entry_type = kind, group, entry_type
        self._entries: dict[str, E] = {}
        self._builtin: list[str] = []
        self._plugins_loaded = False
        self._broken: dict[str, str] = {}  # plugin name -> why it could not be loaded

    def register(self, entry: E) -> E:
        """Add a built-in entry (plugins come through entry points)."""
        if entry.name in self._entries:
            raise ValueError(f"{self.kind} {entry.name!r} is registered twice")
        self._entries[entry.name] = entry
        self._builtin.append(entry.name)
        return entry

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=self.group):
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            where = f"plugin {ep.name!r} ({ep.value}, from {dist})"
            if ep.name in self._builtin:
                self._broken[ep.name] = f"{where} tries to replace a built-in {self.kind}"
                warnings.warn(f"{self.group}: {self._broken[ep.name]}; ignored", stacklevel=2)
                continue
            try:
                entry = ep.load()
            except Exception as exc:  # a broken plugin must not break the built-ins
                self._broken[ep.name] = f"{where} failed to load: {type(exc).__name__}: {exc}"
                warnings.warn(f"{self.group}: {self._broken[ep.name]}", stacklevel=2)
                continue
            if not isinstance(entry, self.entry_type) or entry.name != ep.name:
                self._broken[ep.name] = (
                    f"{where} is not a {self.entry_type.__name__} named {ep.name!r}"
                )
                warnings.warn(f"{self.group}: {self._broken[ep.name]}", stacklevel=2)
                continue
            version = ep.dist.version if ep.dist is not None else "?"
            self._entries[ep.name] = _with_source(entry, f"plugin {dist} {version}")

    def refresh(self) -> None:
        """Forget loaded plugins, so the next lookup sees packages installed since."""
        self._entries = {name: self._entries[name] for name in self._builtin}
        self._broken.clear()
        self._plugins_loaded = False

    @contextmanager
    def override(self, name: str, entry: E) -> Iterator[E]:
        """Within the block, `name` is `entry` (replacing a built-in or plugin entry, or
        adding one); on exit, exception or not, the previous entry (or none) is back.

        For tests and notebooks that swap a builder or its options temporarily.
        """
        if not isinstance(entry, self.entry_type) or entry.name != name:
            raise ValueError(f"override needs a {self.entry_type.__name__} named {name!r}")
        self._load_plugins()  # loaded now, so a first lookup inside cannot undo the override
        absent = object()
        previous = self._entries.get(name, absent)
        self._entries[name] = entry
        try:
            yield entry
        finally:
            if previous is absent:
                self._entries.pop(name, None)
            else:
                self._entries[name] = previous

    def names(self, plugins: bool = True) -> tuple[str, ...]:
        """Registered names: built-ins first, then installed plugins."""
        if not plugins:
            return tuple(self._builtin)
        self._load_plugins()
        return tuple(self._entries)

    def entries(self) -> Iterator[E]:
        """Every entry, built-ins first."""
        self._load_plugins()
        return iter(list(self._entries.values()))

    def get(self, name: str) -> E:
        """The entry called `name`; ValueError naming `<kind>.name` and the choices."""
        self._load_plugins()
        if name not in self._entries:
            why = f" ({self._broken[name]})" if name in self._broken else ""
            raise ValueError(
                f"{self.kind}.name: unknown {self.kind} {name!r}{why}; "
                f"allowed: {', '.join(self._entries)}"
            )
        return self._entries[name]

    def resolve(
        self, name: str, options: Mapping[str, Any], prefix: str | None = None
    ) -> dict[str, Any]:
        """Every option of `name` (given ones checked, the rest at their defaults)."""
        prefix = prefix or self.kind
        entry = self.get(name)
        unknown = sorted(set(options) - set(entry.options))
        if unknown:
            raise ValueError(
                f"{prefix}.{unknown[0]}: not an option of {self.kind} {name!r}; "
                f"allowed: {', '.join(entry.options) or '(none)'}"
            )
        resolved = {
            key: opt.validate(f"{prefix}.{key}", options.get(key, opt.default))
            for key, opt in entry.options.items()
        }
        if entry.check is not None:
            entry.check(resolved)
        return resolved


def _with_source(entry: E, source: str) -> E:
    return replace(entry, source=source)
