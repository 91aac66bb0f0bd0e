"""The bundled paper specs cover every run of the paper's official result tables.

The official runs are read from the names of the official repository's 181 result
tables (`tests/results/fixtures/why-warmup/all-tables.txt`): every (optimizer, eta_trgt,
T_wrm, steps) point there must be a trial of `paper-wrn-cifar10-adam` or
`paper-wrn-cifar10-mup-sgd`, as a dry run lists them, and
each spec's fixed settings must be the official scripts'.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from results.reference import OPTIMIZER_NAMES, parse_table_name
from sweeps import expand, load_spec

TABLES = Path(__file__).parents[1] / "results" / "fixtures" / "why-warmup" / "all-tables.txt"
# The official hand-written Adam ("base_adam") runs Adam's update: our `adam` covers it.
SAME_UPDATE = {"adam-base": "adam"}


def official_points() -> set[tuple]:
    points = set()
    for line in TABLES.read_text().split():
        name = parse_table_name(line)
        assert name is not None, line
        f = name.fields
        optimizer = OPTIMIZER_NAMES.get(f["opt"], f["opt"])
        optimizer = SAME_UPDATE.get(optimizer, optimizer)
        if f.get("lrexp") is not None:  # muP SGD at 2^n / lambda0
            eta = ("x lambda0", 2.0 ** float(f["lrexp"]))
        else:
            eta = ("absolute", round(float(f["lr"]), 6))
        points.add((optimizer, eta, int(f["warmup"]), int(f["steps"]), int(f["batch"])))
    return points


def spec_points(name: str) -> set[tuple]:
    spec, _ = load_spec(name)
    points = set()
    for planned in expand(spec):
        c = planned.config
        if c.eta_trgt_relative_to == "lambda0":
            eta = ("x lambda0", c.eta_trgt)
        else:
            eta = ("absolute", round(c.eta_trgt, 6))
        points.add((c.optimizer.name, eta, c.warmup_steps, c.num_steps, c.batch_size))
    return points


def test_the_paper_specs_cover_every_official_run():
    official = official_points()
    # 91 official runs (90 eval tables, and the train table of the muP run that diverged
    # before writing one); the hand-written Adam's 32 include the points of optax Adam's 10.
    assert len(official) == 91 - 10
    covered = spec_points("paper-wrn-cifar10-adam") | spec_points("paper-wrn-cifar10-mup-sgd")
    assert official <= covered, sorted(official - covered)


@pytest.mark.parametrize("name", ["paper-wrn-cifar10-adam", "paper-wrn-cifar10-mup-sgd"])
def test_a_paper_spec_fixes_what_the_official_scripts_fix(name):
    spec, _ = load_spec(name)
    for planned in expand(spec):
        c = planned.config
        assert (c.model.name, c.model.variant, c.model.depth, c.model.widen) == (
            "wrn",
            "official",
            16,
            4,
        )
        assert (c.dataset.name, c.dataset.standardize_over) == ("cifar10", "example")
        assert (c.augment_flip, c.augment_crop_padding, c.augment_mixup) == (True, 4, True)
        assert (c.loss, c.num_steps, c.batch_size, c.init_scale) == ("xent", 100_000, 128, 2.0)
        if c.optimizer.name == "sgd":  # muP SGD: constant rate, no warmup
            assert (c.parameterization, c.mup_conv_fan_in, c.decay) == (
                "mup",
                "feature_map",
                "constant",
            )
            assert (c.optimizer.momentum, c.lambda0_batches) == (0.0, 10)
        else:  # cosine to eta_trgt / 10, betas of the official scripts
            assert (c.parameterization, c.decay, c.decay_power) == ("sp", "cosine", 1.0)
            assert (c.eta_min, c.eta_min_relative_to) == (0.1, "eta_trgt")
            o = c.optimizer
            assert (o.beta1, o.beta2, o.eps, o.weight_decay) == (0.9, 0.999, 1e-8, 0.0)
        assert math.isclose(c.eta_init, 0.0)
