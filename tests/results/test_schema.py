"""The declared trials schema covers every column a trial writes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from results.schema import ADAM_FAMILY, TRIAL_SCHEMA, trial_table
from sweeps import bundled_specs, expand, load_spec
from trials import trial_summary
from warmup_core import optim

_ARROW_FOR = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}


@pytest.mark.parametrize("name", sorted(bundled_specs()))
def test_every_summary_column_of_bundled_specs_is_declared_with_a_fitting_type(name):
    spec, _ = load_spec(name)
    for planned in expand(spec)[:50]:
        for column, value in trial_summary(planned.config, spec.name, "node").items():
            assert column in TRIAL_SCHEMA.names, f"{column} has no declared type"
            if value is None:
                continue
            declared = TRIAL_SCHEMA.field(column).type
            fits = _ARROW_FOR[type(value)]
            # An int value fits a float column (e.g. `init_scale: 2`).
            assert declared == fits or (fits == pa.int64() and declared == pa.float64()), column


@pytest.mark.parametrize(
    ("model", "dataset"),
    [
        ("fcn", {"name": "gaussian", "dim": 48, "image_shape": [3, 4, 4]}),
        ("myrtle", {"name": "digits"}),
        ("wrn", {"name": "cifar100"}),
        ("transformer", {"name": "text", "context": 8}),
    ],
)
def test_every_built_in_model_and_dataset_option_is_declared(model, dataset):
    from trials.config import TrialConfig

    config = TrialConfig.model_validate(
        {"model": {"name": model}, "dataset": dataset, "loss": "xent"}
    )
    table = trial_table({**trial_summary(config, "s", "node"), "status": "completed"})
    undeclared = set(table.schema.names) - set(TRIAL_SCHEMA.names)
    assert not undeclared, f"columns typed by guess, not declared: {sorted(undeclared)}"


def test_the_adam_family_is_the_optimizers_one():
    assert set(optim.ADAM_FAMILY) == ADAM_FAMILY
