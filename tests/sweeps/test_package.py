"""The public surface of `sweeps`: `__all__` everywhere, and a light package import."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

import sweeps

# The tool's modules; the benchmarks (run by name, never imported by the tool) are not.
MODULES = [m.name for m in pkgutil.iter_modules(sweeps.__path__, "sweeps.") if not m.ispkg]


def test_every_module_declares_all_and_defines_what_it_names() -> None:
    assert {"sweeps.runner", "sweeps.grid", "sweeps.cli"} <= set(MODULES)
    for name in MODULES:
        module = importlib.import_module(name)
        assert isinstance(module.__all__, list), name
        for public in module.__all__:
            assert hasattr(module, public), f"{name}.{public}"


@pytest.mark.integration
def test_the_package_names_resolve_on_first_use_and_import_neither_torch_nor_ray() -> None:
    probe = (
        "import json, sys, sweeps\n"
        "heavy = {'torch', 'ray'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "from sweeps import expand, run_sweep\n"
        "assert all(getattr(sweeps, name) is not None for name in sweeps.__all__)\n"
        "print(json.dumps(sweeps.__all__))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    names = set(json.loads(out))
    assert {"run_sweep", "load_spec", "parse_spec", "expand", "SweepSpec", "SpecError"} <= names
