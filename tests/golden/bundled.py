"""What every bundled spec produces, for the regression test `test_bundled_golden.py`.

`snapshot(name)` gives a bundled spec's full grid (its trial ids, in order) and, for
each distinct path through it (model x optimizer x parameterization x eta_init), the
numbers of a tiny float64 version of that trial. The expected values in
`bundled.json` were written by this function from the code as it stood before the
trials/ package was reorganized (commit 0e73b42), the curvature values (sharpness,
preconditioned and final sharpness) again when warm starts gained a crossing detector;
a spec bundled later was recorded when it was added. Record a new spec, or (`--all`)
rewrite every record for a change that is meant to alter results, and say so in the
commit:

    python -m tests.golden.bundled [--all]   # writes tests/golden/bundled.json
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from sweeps import bundled_specs, expand, load_spec
from tests.trials.test_data import write_cifar
from tests.trials.test_every_path import distinct_paths, shrink
from trials import run_trial
from trials.config import TrialConfig

GOLDEN = Path(__file__).with_name("bundled.json")
SUMMARY_KEYS = (
    "status",
    "lambda0",
    "eta_c",
    "eta_trgt",
    "eta_init",
    "final_train_loss",
    "final_test_loss",
    "final_sharpness",
)
STEP_KEYS = ("lr", "train_loss", "sharpness", "preconditioned_sharpness", "test_loss")


def tiny(config: TrialConfig, data_dir: Path) -> TrialConfig:
    """`shrink`'s tiny trial, in float64 so that round-off cannot hide a change."""
    data = shrink(config, data_dir).model_dump(mode="json")
    data["dtype"] = "float64"
    return TrialConfig.model_validate(data)


def cifar_stand_in(root: Path) -> Path:
    """The tiny CIFAR archives the CIFAR specs' trials read (fixed seed)."""
    write_cifar(root, "cifar10", binary=True)
    write_cifar(root, "cifar100", binary=True)
    return root


def snapshot(name: str, data_dir: Path) -> dict[str, Any]:
    """Trial ids of the spec's grid and the numbers of each distinct path, tiny."""
    spec, _ = load_spec(name)
    ids = [p.trial_id for p in expand(spec)]
    paths = []
    for config in distinct_paths(name):
        small = tiny(config, data_dir)
        result = run_trial(small)
        paths.append(
            {
                "path": [
                    small.model.name,
                    small.optimizer.name,
                    small.parameterization,
                    small.eta_init_mode,
                ],
                "summary": {k: result.summary.get(k) for k in SUMMARY_KEYS},
                "steps": {k: result.steps[k] for k in STEP_KEYS},
            }
        )
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    return {"num_trials": len(ids), "first_ids": ids[:3], "ids_sha256": digest, "paths": paths}


def main() -> None:
    torch.set_num_threads(1)
    out = {} if "--all" in sys.argv[1:] else json.loads(GOLDEN.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = cifar_stand_in(Path(tmp))
        for name in sorted(bundled_specs()):
            if name not in out:
                out[name] = snapshot(name, data_dir)
    GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
