"""Argument checks shared by the numerical routines (solvers, estimators, the eta_c search)."""

from __future__ import annotations

import math
import numbers

__all__ = ["check_positive"]


def check_positive(name: str, value: float, *, integer: bool = False) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a finite real number > 0
    (and a whole number when ``integer``; ``2.0`` counts as an integer)."""
    ok = isinstance(value, numbers.Real) and math.isfinite(value) and value > 0
    if not ok or (integer and int(value) != value):
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
