"""The installed packages win over same-named folders in the current directory.

A notebook started in a folder holding `results/` (say, a sweep's output) must import
this project's `results`, not an empty namespace package; so must a Ray worker, whose
current directory is the driver's. Checked in a fresh interpreter of this venv.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_public_names_import_from_a_folder_that_holds_same_named_folders(tmp_path):
    for name in ("results", "trials", "sweeps", "warmup_core"):
        (tmp_path / name).mkdir()
    code = (
        "from results import load\n"
        "from trials import TrialConfig\n"
        "from sweeps import load_spec\n"
        "from warmup_core import curvature\n"
        "import results, pathlib\n"
        "print(pathlib.Path(results.__file__).parent.parent)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (
        f"{done.stderr}\n(install the project as the Makefile does: "
        "pip install -e . --config-settings editable_mode=compat)"
    )
