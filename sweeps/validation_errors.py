"""Pydantic validation errors as one readable line (what `warmup-sweep` prints).

`dotted.field: message; other.field: message`. A field that accepts several
forms (a union: a list or a mapping, `true` or a mapping) would make pydantic
report one error per form; such a field gets one message instead: the errors
of the form whose shape the input has, or else the forms it accepts and what it
got.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

__all__ = ["format_validation_error"]

Location = tuple[str, ...]


def format_validation_error(
    exc: ValidationError,
    *,
    prefix: str = "",
    data: Any = None,
    union_forms: Mapping[str, str] | None = None,
) -> str:
    """The errors of `exc` as one line: `dotted.field: message; ...`, in pydantic's order.

    Args:
        exc: the error pydantic raised.
        prefix: a dotted location put before every field (e.g. "base" for a spec's base
            config), or "" for none.
        data: the validated input, to quote a union field's bad value.
        union_forms: the union fields, as dotted patterns ("*" matches any one name),
            each with the forms it accepts in words (`sweeps.schema.UNION_FORMS`).
    """
    union_forms = union_forms or {}
    entries: list[tuple[str, str]] = []  # ("line", text) or ("union", dotted field)
    union_errors: dict[str, list[tuple[Location, dict]]] = {}
    forms_of: dict[str, str] = {}
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        union = _union_field(loc, union_forms)
        if union is None:
            entries.append(("line", _plain_line([p for p in (prefix, *loc) if p], _message(err))))
            continue
        field, forms = union
        if field not in union_errors:
            entries.append(("union", field))
            union_errors[field], forms_of[field] = [], forms
        union_errors[field].append((loc, err))
    return "; ".join(
        text if kind == "line" else _union_line(text, union_errors[text], forms_of[text], data)
        for kind, text in entries
    )


def _matches(pattern: str, names: Location) -> bool:
    parts = pattern.split(".")
    return len(parts) == len(names) and all(
        p in ("*", n) for p, n in zip(parts, names, strict=True)
    )


def _union_field(loc: Location, union_forms: Mapping[str, str]) -> tuple[str, str] | None:
    """(dotted field, accepted forms) of the union field that the error at `loc` lies in."""
    for pattern, forms in union_forms.items():
        depth = len(pattern.split("."))
        if len(loc) > depth and _matches(pattern, loc[:depth]):
            return ".".join(loc[:depth]), forms
    return None


def _message(err: dict) -> str:
    return err["msg"].removeprefix("Value error, ")


def _plain_line(parts: list[str], msg: str) -> str:
    """`dotted.field: message` for one error at location `parts`."""
    # Section validators name their field from the section down ("model.width: ...").
    head = msg.split(":", 1)[0]
    if parts and "." in head and " " not in head and head.split(".")[0] == parts[-1]:
        parts = parts[:-1]
        return f"{'.'.join(parts)}.{msg}" if parts else msg
    loc = ".".join(parts)
    return f"{loc}: {msg}" if loc else msg


def _union_line(field: str, errors: list[tuple[Location, dict]], forms: str, data: Any) -> str:
    """One message for the errors inside the union field `field`.

    pydantic reports each form's errors under the form's name (`grid.x.RelativeAxis.
    values: ...`). A form the input fits in shape has errors only inside its own fields
    (none missing, none unknown): when exactly one form fits, its errors are the message.
    """
    depth = len(field.split("."))
    by_form: dict[str, list[tuple[Location, dict]]] = {}
    for loc, err in errors:
        by_form.setdefault(loc[depth], []).append((loc, err))
    fitting = [
        form_errors
        for form_errors in by_form.values()
        if all(
            len(loc) > depth + 1 and err["type"] not in ("missing", "extra_forbidden")
            for loc, err in form_errors
        )
    ]
    if len(fitting) == 1:
        return "; ".join(
            f"{'.'.join((field, *loc[depth + 1 :]))}: {_message(err)}" for loc, err in fitting[0]
        )
    return f"{field}: expected {forms}; got {_value_at(data, field)}"


def _value_at(data: Any, dotted: str) -> str:
    """The input at a dotted location, as compact JSON."""
    for key in dotted.split("."):
        if not isinstance(data, dict) or key not in data:
            return "an invalid value"
        data = data[key]
    return json.dumps(data, default=str)
