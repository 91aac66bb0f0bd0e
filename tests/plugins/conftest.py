"""Install the example plugin (tests/plugins/resmlp_plugin) into the running environment.

It is installed with pip, as a user would install a plugin, into the interpreter that
runs the tests, so Ray workers (same interpreter) find its entry points too. Offline:
no dependencies and no build isolation (setuptools comes with the dev extras).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from trials.data import DATASET_REGISTRY
from warmup_core.models import MODEL_REGISTRY

PLUGIN_DIR = Path(__file__).parent / "resmlp_plugin"


@pytest.fixture(scope="session")
def resmlp_plugin() -> str:
    """The installed example plugin's distribution name; registries see its entries."""
    source = (PLUGIN_DIR / "warmup_resmlp.py").read_text()
    try:
        installed = metadata.distribution("warmup-resmlp")
        current = Path(str(installed.locate_file("warmup_resmlp.py"))).read_text() == source
    except (metadata.PackageNotFoundError, OSError):
        current = False
    if not current:  # first run, or the example changed since it was installed
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
        subprocess.run(
            [*pip, "--no-build-isolation", "--force-reinstall", str(PLUGIN_DIR)],
            check=True,
            capture_output=True,
        )
        importlib.invalidate_caches()
    MODEL_REGISTRY.refresh()
    DATASET_REGISTRY.refresh()
    return "warmup-resmlp"
