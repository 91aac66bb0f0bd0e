"""Every bundled spec gives the same trial ids and the same numbers as before.

The expected values (`bundled.json`) were recorded from the code before the trials/
package was reorganized (see `bundled.py`); a refactor must reproduce them. Losses and
rates are compared at float64 round-off; curvature to 1e-6 (Lanczos stops at a
residual, so the last digits depend on the order of floating-point sums). The
curvature values were re-recorded once, when warm starts changed from a random
admixture to a crossing detector: Lanczos then stops at other points within
`sharpness_tol` (losses and rates stayed bit for bit).
"""

from __future__ import annotations

import json
import math

import pytest

from sweeps import bundled_specs
from tests.golden.bundled import GOLDEN, cifar_stand_in, snapshot

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]

EXPECTED = json.loads(GOLDEN.read_text())
CURVATURE = {"sharpness", "preconditioned_sharpness", "lambda0", "eta_c", "final_sharpness"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return cifar_stand_in(tmp_path_factory.mktemp("cifar"))


def close(key: str, got, want) -> bool:
    if want is None or got is None or isinstance(want, str):
        return got == want
    if isinstance(want, list):
        return len(got) == len(want) and all(
            close(key, g, w) for g, w in zip(got, want, strict=True)
        )
    if math.isnan(want):
        return math.isnan(got)
    rel = 1e-6 if key in CURVATURE else 1e-9
    return math.isclose(got, want, rel_tol=rel, abs_tol=1e-12)


def test_every_bundled_spec_has_recorded_expectations():
    assert set(bundled_specs()) <= set(EXPECTED), "record new specs: python -m tests.golden.bundled"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_spec_keeps_its_trial_ids_and_numbers(name, data_dir):
    got, want = snapshot(name, data_dir), EXPECTED[name]
    assert got["num_trials"] == want["num_trials"]
    assert got["first_ids"] == want["first_ids"]
    assert got["ids_sha256"] == want["ids_sha256"]
    assert [p["path"] for p in got["paths"]] == [p["path"] for p in want["paths"]]
    for g, w in zip(got["paths"], want["paths"], strict=True):
        for section in ("summary", "steps"):
            for key, value in w[section].items():
                assert close(key, g[section][key], value), (name, w["path"], key)
