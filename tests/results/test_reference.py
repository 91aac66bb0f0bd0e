"""The paper's official result tables read as a sweep, on real files kept as fixtures.

The expected numbers below were read by hand from the official tables (the largest
trainable learning rate of each optimizer and warmup length, its final test accuracy,
the first failing rate), not computed by the code under test.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from results import STATUSES, STEP_SCHEMA, TRIAL_SCHEMA
from results.reference import (
    OPTIMIZER_NAMES,
    REFERENCE_SWEEP,
    matching_reference,
    parse_table_name,
    read_reference,
    reference_boundary,
)

FIXTURES = Path(__file__).parent / "fixtures" / "why-warmup"
ADAM_PREFIX = (
    "eval_cifar-10_WideResNet16_sp_scale0.0_n16_w4_d16_biasTrue_relu_I1_J1_xent_augmentTrue_"
)
MUP_RUN = (
    "cifar-10_WideResNet16_mup_scale1.0_n16_w4_d16_biasTrue_relu_I1_J1_xent_augmentTrue_"
    "sgd_lrinit0.0_lrexp{n}.0000_k1.0_p0.0_Twarm1_T100000_B128_m0.0_lobpcg"
)
LAMBDA0 = 2.578415870666504  # the muP tables' sharpness_init

# (optimizer, T_wrm): (largest trainable eta_trgt, first failing eta_trgt, its test accuracy)
PAPER_TABLE = {
    ("adam", 1): (0.02048, 0.04096, 0.876),
    ("adam", 1024): (0.08192, 0.16384, 0.847),
    ("gi-adam", 1): (0.08192, 0.16384, 0.839),
    ("gi-adam", 1024): (0.08192, 0.16384, 0.871),
    ("radam", 1): (0.02048, 0.04096, 0.904),
    ("radam", 1024): (0.04096, 0.08192, 0.857),
    ("sgd", 1): (2**5 / LAMBDA0, 2**6 / LAMBDA0, 0.910),  # muP SGD at 2^n / lambda0
}


@pytest.fixture(scope="module")
def paper():
    return read_reference(FIXTURES)


def test_file_names_parse_with_underscores_in_fields():
    name = parse_table_name(
        ADAM_PREFIX + "grads_adam_lr0.081920_k1.0_p1.0_Twarm1024_T100000_B128_b10.9_b20.999.tab"
    )
    assert name.kind == "eval"
    assert name.fields["opt"] == "grads_adam"
    assert name.fields["model"] == "WideResNet16" and name.fields["abc"] == "sp"
    assert (name.fields["lr"], name.fields["warmup"], name.fields["steps"]) == (
        "0.081920",
        "1024",
        "100000",
    )
    assert name.run.startswith("cifar-10_WideResNet16_sp_") and not name.run.endswith(".tab")
    sgd = parse_table_name(f"train_{MUP_RUN.format(n=7)}.tab")
    assert (sgd.kind, sgd.fields["opt"], sgd.fields["lrexp"], sgd.fields["abc"]) == (
        "train",
        "sgd",
        "7.0000",
        "mup",
    )
    assert sgd.run == MUP_RUN.format(n=7)
    assert parse_table_name("README.tab") is None
    assert parse_table_name(ADAM_PREFIX + "adam_lr0.1.csv") is None


def test_every_fixture_is_one_trial_in_the_sweep_schema(paper):
    trials, steps = paper
    assert len(trials) == 15 and paper.unreadable == []
    assert set(TRIAL_SCHEMA.names) <= set(trials.columns)
    assert list(steps.columns[: len(STEP_SCHEMA)]) == STEP_SCHEMA.names
    assert list(trials["status"].cat.categories) == list(STATUSES)
    assert set(trials["sweep"].astype(str)) == {REFERENCE_SWEEP}
    assert trials["trial_id"].is_unique
    assert set(trials["optimizer"].astype(str)) == {"adam", "gi-adam", "radam", "sgd"}
    assert OPTIMIZER_NAMES["base_adam"] == "adam-base"
    assert set(steps["trial_id"].astype(str)) == set(trials["trial_id"].astype(str))
    adam = trials[trials["optimizer"] == "adam"].iloc[0]
    assert (adam["model"], adam["dataset"], adam["loss"], adam["parameterization"]) == (
        "wrn",
        "cifar10",
        "xent",
        "sp",
    )
    assert (adam["num_steps"], adam["batch_size"], adam["model_depth"]) == (100000, 128, 16)
    assert (adam["schedule"], adam["optimizer_beta2"]) == ("cosine", 0.999)
    assert (adam["eta_min"], adam["eta_min_relative_to"]) == (0.1, "eta_trgt")  # lr_trgt / 10
    assert adam["decay_power"] == 1.0


def test_statuses_follow_the_official_rules(paper):
    trials = paper.trials.assign(optimizer=paper.trials["optimizer"].astype(str))
    status = {
        (r.optimizer, r.warmup_steps, round(r.eta_trgt, 5)): str(r.status)
        for r in trials.itertuples()
    }
    assert status[("adam", 1, 0.02048)] == "completed"
    assert status[("adam", 1, 0.04096)] == "stuck"  # below 1.5x chance at the end
    assert status[("adam", 1024, 0.16384)] == "stuck"  # learned first, then collapsed
    assert status[("radam", 1, 0.04096)] == "stuck"  # collapsed after epoch 16
    assert status[("sgd", 1, round(2**6 / LAMBDA0, 5))] == "stuck"
    nan_run = trials[trials["eta_trgt_relative"] == 2**7].iloc[0]
    assert str(nan_run["status"]) == "diverged"
    assert nan_run["diverged_step"] == 10  # the train table's empty (NaN) loss
    assert math.isnan(nan_run["final_test_accuracy"])
    assert not trials["diverged_step"].drop(nan_run.name).notna().any()


def test_muP_sgd_rates_are_2_to_the_n_over_lambda0(paper):
    sgd = paper.trials[paper.trials["optimizer"] == "sgd"].sort_values("eta_trgt_relative")
    assert list(sgd["eta_trgt_relative"]) == [32.0, 64.0, 128.0]
    assert list(sgd["eta_trgt"]) == pytest.approx([32 / LAMBDA0, 64 / LAMBDA0, 128 / LAMBDA0])
    assert sgd["lambda0"].tolist() == pytest.approx([LAMBDA0] * 3)
    assert sgd["eta_trgt"].iloc[-1] == pytest.approx(49.64288330078125)  # the table's lr
    assert (sgd["schedule"] == "constant").all() and (sgd["parameterization"] == "mup").all()


def test_steps_of_an_eval_table_and_of_a_train_table(paper):
    trials, steps = paper
    by_id = dict(zip(trials["eta_trgt_relative"], trials["trial_id"].astype(str), strict=True))
    nan_run = steps[steps["trial_id"] == by_id[128.0]]
    assert nan_run["step"].tolist() == list(range(1, 11))
    assert nan_run["train_loss"].iloc[0] == pytest.approx(2.3086488246917725)
    assert math.isnan(nan_run["train_loss"].iloc[-1])
    evals = steps[steps["trial_id"] == by_id[32.0]]
    assert len(evals) == 255 and evals["step"].iloc[0] == 391 and evals["step"].iloc[-1] == 99705
    assert evals["test_accuracy"].notna().all()


def test_largest_trainable_rates_match_the_paper_table(paper):
    boundary = reference_boundary(paper.trials)
    got = {
        (r.optimizer, r.warmup_steps): (
            r.max_trainable_eta,
            r.min_failed_eta,
            r.final_test_accuracy,
        )
        for r in boundary.itertuples()
    }
    assert set(got) == set(PAPER_TABLE)
    for key, (largest, failing, accuracy) in PAPER_TABLE.items():
        assert got[key][0] == pytest.approx(largest, rel=1e-6), key
        assert got[key][1] == pytest.approx(failing, rel=1e-6), key
        assert got[key][2] == pytest.approx(accuracy, abs=5e-4), key
    assert (boundary["censored"] == "no").all()
    sgd = boundary[boundary["optimizer"] == "sgd"].iloc[0]
    assert (sgd["parameterization"], sgd["max_trainable_eta_relative"]) == ("mup", 32.0)
    assert boundary[boundary["optimizer"] != "sgd"]["max_trainable_eta_relative"].isna().all()


def test_stuck_trainable_reads_the_collapsed_runs_as_trainable(paper):
    boundary = reference_boundary(paper.trials, stuck_trainable=True)
    row = boundary.set_index(["optimizer", "warmup_steps"]).loc[("adam", 1)]
    assert row["max_trainable_eta"] == pytest.approx(0.04096)  # the stuck run
    assert row["censored"] == "above"  # nothing diverged above it in these files
    sgd = boundary.set_index(["optimizer", "warmup_steps"]).loc[("sgd", 1)]
    assert sgd["max_trainable_eta_relative"] == 64.0
    assert sgd["min_failed_eta"] == pytest.approx(128 / LAMBDA0)  # the NaN run


def test_a_checkout_of_the_repository_reads_the_same(tmp_path, paper):
    results = tmp_path / "why-warmup" / "vision" / "phase-diagrams" / "resnet_results"
    shutil.copytree(FIXTURES, results)
    (tmp_path / "why-warmup" / "README.md").write_text("not a table\n")
    (results / "notes.tab").write_text("a\tb\n")
    checkout = read_reference(tmp_path / "why-warmup")
    assert len(checkout.trials) == len(paper.trials)
    assert [Path(p).name for p, _ in checkout.unreadable] == ["notes.tab"]
    pd.testing.assert_frame_equal(
        reference_boundary(checkout.trials), reference_boundary(paper.trials)
    )


def test_an_eval_table_cut_short_without_a_train_table_is_a_divergence(tmp_path):
    name = ADAM_PREFIX + "adam_lr0.020480_k1.0_p1.0_Twarm1_T100000_B128_b10.9_b20.999.tab"
    lines = (FIXTURES / name).read_text().splitlines(keepends=True)
    (tmp_path / name).write_text("".join(lines[:11]))  # header and epochs 1-10 of 255
    trials = read_reference(tmp_path).trials
    assert str(trials.loc[0, "status"]) == "diverged"
    assert pd.isna(trials.loc[0, "diverged_step"])  # somewhere after step 3910: unknown


def test_bad_paths_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_reference(tmp_path / "absent")
    with pytest.raises(ValueError, match="no official result tables"):
        read_reference(tmp_path)


def test_the_runs_compared_are_those_of_the_sweeps_optimizers(paper):
    sweep = pd.DataFrame({"optimizer": ["adam", "gi-adam", "adam"]})
    chosen = matching_reference(paper.trials, sweep)
    assert set(chosen["optimizer"].astype(str)) == {"adam", "gi-adam"}
    other = matching_reference(paper.trials, pd.DataFrame({"optimizer": ["adamw"]}))
    assert len(other) == len(paper.trials)  # nothing shared: every run
