"""Tests for trials.config: validation where a config enters, stable trial ids, overrides."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import ValidationError

from trials.config import FieldRole, TrialConfig, apply_overrides
from warmup_core.models import MODEL_REGISTRY
from warmup_core.registry import Option

TINY = {
    "model": {"name": "fcn", "width": 16, "depth": 2},
    "dataset": {"name": "digits", "train_size": 128, "test_size": 64},
    "num_steps": 20,
    "eta_trgt": 0.1,
}


def with_(**changes) -> dict:
    """TINY with top-level keys replaced (nested sections are replaced whole)."""
    return {**TINY, **changes}


# ---------------------------------------------------------------------------
# trial_id
# ---------------------------------------------------------------------------


def test_trial_id_is_stable_for_equal_configs() -> None:
    a = TrialConfig.model_validate(TINY)
    b = TrialConfig.model_validate(dict(reversed(list(TINY.items()))))  # key order irrelevant
    assert a.trial_id() == b.trial_id()
    assert len(a.trial_id()) == 16


def test_trial_id_ignores_spelling_of_equal_values() -> None:
    ints = TrialConfig.model_validate(with_(eta_trgt=1, eta_init=0))
    floats = TrialConfig.model_validate(with_(eta_trgt=1.0, eta_init=0.0))
    assert ints.trial_id() == floats.trial_id()


@pytest.mark.parametrize(
    "change",
    [
        {"eta_trgt": 0.2},
        {"warmup_steps": 4},
        {"init_seed": 1},
        {"data_seed": 1},
        {"parameterization": "mup"},
        {"model": {"name": "fcn", "width": 32, "depth": 2}},
        {"dataset": {"name": "digits", "train_size": 129, "test_size": 64}},
        {"optimizer": {"name": "sgd", "momentum": 0.9}},
        {"eta_trgt_relative_to": "lambda0"},
        {"eta_init": "catapult"},
        {"num_steps": 21},
        {"warmup_shape": "adaptive"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_trial_id_changes_with_any_field(change: dict) -> None:
    base = TrialConfig.model_validate(TINY)
    assert TrialConfig.model_validate(with_(**change)).trial_id() != base.trial_id()


# ---------------------------------------------------------------------------
# Validation: each refusal names the field
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (with_(bogus=1), "bogus"),
        (with_(model={"name": "fcn", "widht": 16}), "widht"),
        (with_(num_steps="many"), "num_steps"),
        (with_(num_steps=2.5), "num_steps"),
        (with_(eta_trgt="fast"), "eta_trgt"),
        (with_(loss="hinge"), "loss"),
        (with_(model={"name": "resnet"}), "model.name"),
        (with_(dataset={"name": "mnist"}), "dataset.name"),
        (with_(optimizer={"name": "lion"}), "optimizer.name"),
        (with_(parameterization="xyz"), "parameterization"),
        (with_(decay="exponential"), "decay"),
        (with_(model={"name": "fcn", "widen": 2}), "model.widen"),
        (with_(optimizer={"name": "sgd", "beta1": 0.9}), "optimizer.beta1"),
        (with_(dataset={"name": "digits", "dim": 8}), "dataset.dim"),
        (with_(model={"name": "fcn", "width": 0}), "width"),
        (with_(model={"name": "fcn", "depth": -1}), "depth"),
        (with_(eta_trgt=0), "eta_trgt"),
        (with_(eta_trgt=-0.1), "eta_trgt"),
        (with_(num_steps=0), "num_steps"),
        (with_(warmup_steps=0), "warmup_steps"),
        (with_(batch_size=0), "batch_size"),
        (with_(dataset={"name": "digits", "train_size": 0}), "train_size"),
        (with_(eta_init=-1.0), "eta_init"),
        (with_(eta_init="fast"), "eta_init"),
        (with_(eta_init=0.5, eta_trgt=0.1), "eta_init"),
        (with_(model={"name": "transformer"}), "model.name"),
        (with_(dataset={"name": "text"}), "model.name"),
        (with_(device="tpu"), "device"),
        (with_(warmup_shape="sharp"), "warmup_shape"),
        (with_(warmup_shape="adaptive", adaptive_safety=0), "adaptive_safety"),
        (with_(warmup_shape="adaptive", adaptive_safety=1.5), "adaptive_safety"),
        (with_(warmup_shape="adaptive", adaptive_growth=0), "adaptive_growth"),
        (with_(warmup_shape="adaptive", adaptive_every=0), "adaptive_every"),
        (with_(adaptive_safety=0.5), "adaptive_safety"),  # linear warmup has no controller
        (with_(warmup_shape="catapult", adaptive_every=2), "adaptive_every"),
        (with_(decay="cosine", eta_min=0.2), "eta_min"),  # above the absolute eta_trgt
        (with_(decay="cosine", eta_min=1.5, eta_min_relative_to="eta_trgt"), "eta_min"),
        (with_(eta_trgt_relative_to="lambda0", decay="cosine", eta_min=0.01), "eta_min"),
        (with_(decay="linear", decay_power=2.0), "decay_power"),
        (with_(decay="cosine", decay_power=-1.0), "decay_power"),
        (with_(augment_crop_padding=-1), "augment_crop_padding"),
        (with_(mup_conv_fan_in="input"), "mup_conv_fan_in"),
        (with_(model={"name": "wrn", "variant": "zagoruyko"}), "model.variant"),
        (with_(optimizer={"name": "adam", "v0_seed": 1}), "optimizer.v0_seed"),
        (with_(optimizer={"name": "random-v0-adam", "v0_seed": -1}), "v0_seed"),
        (
            with_(dataset={"name": "digits", "standardize": False, "standardize_over": "example"}),
            "dataset.standardize_over",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_invalid_config_is_refused_naming_the_field(config: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrialConfig.model_validate(config)
    assert field in str(info.value)


def test_eta_init_above_relative_eta_trgt_is_left_to_the_trial() -> None:
    # A relative eta_trgt is only known after lambda0 is measured, so no comparison here.
    config = TrialConfig.model_validate(
        with_(eta_init=0.5, eta_trgt=0.1, eta_trgt_relative_to="lambda0")
    )
    assert config.eta_init == 0.5


def test_text_dataset_needs_cross_entropy() -> None:
    text = {"model": {"name": "transformer", "width": 16, "depth": 1, "heads": 2}}
    with pytest.raises(ValidationError, match="loss"):
        TrialConfig.model_validate({**text, "dataset": {"name": "text"}, "loss": "mse"})
    TrialConfig.model_validate({**text, "dataset": {"name": "text"}, "loss": "xent"})


def test_config_is_immutable() -> None:
    config = TrialConfig.model_validate(TINY)
    with pytest.raises(ValidationError):
        config.eta_trgt = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------------------
# Flat columns and overrides
# ---------------------------------------------------------------------------


def test_flat_has_one_column_per_field() -> None:
    flat = TrialConfig.model_validate(with_(optimizer={"name": "adam", "beta1": 0.8})).flat()
    assert flat["model"] == "fcn"
    assert flat["model_width"] == 16
    assert flat["dataset"] == "digits"
    assert flat["dataset_train_size"] == 128
    assert flat["optimizer"] == "adam"
    assert flat["optimizer_beta1"] == 0.8
    assert flat["schedule"] == "constant"
    assert flat["warmup_shape"] == "linear"
    assert not any(isinstance(v, dict) for v in flat.values())
    # Learning rates are resolved (absolute) by the trial, not copied from the config.
    assert "eta_trgt" not in flat and "eta_init" not in flat


def test_adaptive_fields_resolve_to_defaults_for_adaptive_warmup_only() -> None:
    adaptive = TrialConfig.model_validate(with_(warmup_shape="adaptive", adaptive_every=2))
    assert (adaptive.adaptive_safety, adaptive.adaptive_growth, adaptive.adaptive_every) == (
        0.5,
        0.1,
        2,
    )
    linear = TrialConfig.model_validate(TINY)
    assert linear.adaptive_safety is linear.adaptive_growth is linear.adaptive_every is None
    flat = adaptive.flat()
    assert flat["warmup_shape"] == "adaptive" and flat["adaptive_every"] == 2
    changed = TrialConfig.model_validate(with_(warmup_shape="adaptive", adaptive_every=3))
    assert changed.trial_id() != adaptive.trial_id()


def test_apply_overrides_sets_dotted_keys_without_touching_the_base() -> None:
    out = apply_overrides(TINY, {"model.width": 32, "optimizer.name": "adam", "eta_trgt": 1.0})
    assert out["model"] == {"name": "fcn", "width": 32, "depth": 2}
    assert out["optimizer"] == {"name": "adam"}
    assert out["eta_trgt"] == 1.0
    assert TINY["model"]["width"] == 16 and "optimizer" not in TINY


def test_apply_overrides_refuses_a_dotted_key_through_a_value() -> None:
    with pytest.raises(ValueError, match=r"loss\.name"):
        apply_overrides(TINY | {"loss": "mse"}, {"loss.name": "xent"})


def test_checkpoint_frequency_is_not_part_of_the_trial_identity():
    a = TrialConfig(eta_trgt=0.5, checkpoint_every=10)
    b = TrialConfig(eta_trgt=0.5)
    assert a.trial_id() == b.trial_id()


def test_fields_left_at_their_defaults_do_not_enter_the_trial_id():
    explicit = TrialConfig(eta_trgt=0.5, divergence_factor=1000.0, dtype="float32")
    implicit = TrialConfig(eta_trgt=0.5)
    assert explicit.trial_id() == implicit.trial_id()
    assert TrialConfig(eta_trgt=0.5, dtype="float64").trial_id() != implicit.trial_id()


def test_the_data_directory_does_not_enter_the_trial_id():
    here = TrialConfig(dataset={"name": "cifar10", "data_dir": "/data/here"})
    there = TrialConfig(dataset={"name": "cifar10", "data_dir": "/mnt/elsewhere"})
    assert here.trial_id() == there.trial_id()


# --------------------------------------------------------------------------- trial ids

ID_CONFIG = dict(
    model={"name": "fcn", "width": 16, "depth": 2},
    dataset={"name": "digits", "train_size": 128},
    eta_trgt=0.1,
    num_steps=20,
)


def test_trial_id_is_a_fixed_hash_of_the_fully_resolved_config():
    import hashlib
    import json

    # Every field that can change results, defaults included, written out by hand.
    resolved = {
        "model": {"name": "fcn", "width": 16, "depth": 2, "activation": "relu", "bias": True},
        "dataset": {
            "name": "digits",
            "train_size": 128,
            "test_size": None,
            "standardize": True,
            "as_image": False,
        },
        "loss": "mse",
        "parameterization": "sp",
        "init_scale": 2.0,
        "last_init_scale": 1.0,
        "simple_mup": False,
        "mup_constants": "paper",
        "optimizer": {
            "name": "sgd",
            "momentum": 0.0,
            "nesterov": False,
            "beta1": None,
            "beta2": None,
            "eps": None,
            "weight_decay": 0.0,
        },
        "eta_trgt": 0.1,
        "eta_trgt_relative_to": "absolute",
        "eta_init": 0.0,
        "warmup_steps": 1,
        "warmup_shape": None,
        "warmup_power": 1.0,
        "adaptive_safety": None,
        "adaptive_growth": None,
        "adaptive_every": None,
        "decay": "constant",
        "eta_min": 0.0,
        "num_steps": 20,
        "batch_size": None,
        "init_seed": 0,
        "data_seed": 0,
        "sharpness_every": 0,
        "sharpness_batch": "fixed",
        "sharpness_batch_size": None,
        "lambda0_batches": 10,
        "sharpness_tol": 0.001,
        "sharpness_max_iter": 100,
        "eval_every": 0,
        "measure_eta_c": False,
        "catapult_rtol": 0.01,
        "catapult_check_steps": 10,
        "divergence_factor": 1000.0,
        "stuck_accuracy_factor": 1.5,
        "stuck_loss": None,
        "device": "auto",
        "dtype": "float32",
    }
    by_hand = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]
    assert by_hand == "a8cb3663b206457d"
    assert TrialConfig(**ID_CONFIG).trial_id() == "a8cb3663b206457d"

    # Adaptive warmup: its three fields resolved to their documented defaults.
    adaptive = {
        **resolved,
        "warmup_shape": "adaptive",
        "adaptive_safety": 0.5,
        "adaptive_growth": 0.1,
        "adaptive_every": 5,
    }
    by_hand = hashlib.sha256(json.dumps(adaptive, sort_keys=True).encode()).hexdigest()[:16]
    assert by_hand == "a621c61afbe4f514"
    assert TrialConfig(**ID_CONFIG, warmup_shape="adaptive").trial_id() == "a621c61afbe4f514"


def test_trial_id_changes_when_a_registry_default_changes():
    before = TrialConfig(**{**ID_CONFIG, "model": {"name": "fcn", "width": 16}}).trial_id()
    fcn = MODEL_REGISTRY.get("fcn")
    options = {**fcn.options, "depth": replace(fcn.options["depth"], default=3)}
    with MODEL_REGISTRY.override("fcn", replace(fcn, options=options)):
        after = TrialConfig(**{**ID_CONFIG, "model": {"name": "fcn", "width": 16}})
        assert after.model.depth == 3
        assert after.trial_id() != before


def test_trial_id_ignores_checkpoint_frequency_and_data_location():
    base = TrialConfig(**ID_CONFIG).trial_id()
    moved = {**ID_CONFIG, "dataset": {**ID_CONFIG["dataset"], "data_dir": "/elsewhere"}}
    assert TrialConfig(**moved, checkpoint_every=5).trial_id() == base


def test_spelling_a_default_out_gives_the_same_trial_id():
    spelled = {**ID_CONFIG, "model": {**ID_CONFIG["model"], "activation": "relu", "bias": True}}
    assert TrialConfig(**spelled).trial_id() == TrialConfig(**ID_CONFIG).trial_id()


def test_an_option_added_with_omit_default_keeps_existing_trial_ids():
    before = TrialConfig(**ID_CONFIG).trial_id()
    fcn = MODEL_REGISTRY.get("fcn")
    gate = Option(str, default="none", choices=("none", "swish"), omit_default=True)
    added = {**fcn.options, "gate": gate}
    with MODEL_REGISTRY.override("fcn", replace(fcn, options=added)):
        at_default = TrialConfig(**ID_CONFIG)
        assert at_default.model.gate == "none"  # resolved into the config ...
        assert at_default.trial_id() == before  # ... but not into its id
        gated = {**ID_CONFIG, "model": {**ID_CONFIG["model"], "gate": "swish"}}
        assert TrialConfig(**gated).trial_id() != before


def test_a_field_left_out_of_ids_at_its_default_cannot_be_independent():
    with pytest.raises(ValueError, match="omit_default"):
        FieldRole(independent=True, omit_default=True)


def test_eta_min_relative_to_lambda0_relative_eta_trgt_is_accepted() -> None:
    config = TrialConfig.model_validate(
        with_(
            eta_trgt=2.0,
            eta_trgt_relative_to="lambda0",
            decay="cosine",
            eta_min=0.1,
            eta_min_relative_to="eta_trgt",
            decay_power=0.0,
        )
    )
    assert config.eta_min == 0.1


def test_augmenting_text_is_refused() -> None:
    text = {"model": {"name": "transformer", "width": 16, "depth": 1, "heads": 2}}
    with pytest.raises(ValidationError, match="augment"):
        TrialConfig.model_validate(
            {**text, "dataset": {"name": "text"}, "loss": "xent", "augment_mixup": True}
        )
    with pytest.raises(ValidationError, match=r"dataset\.standardize_over"):
        TrialConfig.model_validate(
            {**text, "dataset": {"name": "text", "standardize_over": "example"}, "loss": "xent"}
        )


ADDED_AT_DEFAULT = {
    "augment_flip": False,
    "augment_crop_padding": 0,
    "augment_mixup": False,
    "eta_min_relative_to": "absolute",
    "decay_power": 1.0,
    "mup_conv_fan_in": "kernel",
}


@pytest.mark.parametrize("model", [{"name": "wrn", "depth": 10}, {"name": "myrtle"}])
def test_fields_added_for_the_official_runs_keep_ids_at_their_defaults(model) -> None:
    base = with_(model=model, dataset={"name": "digits", "train_size": 128})
    spelled = {
        **base,
        **ADDED_AT_DEFAULT,
        "model": {**model, "variant": "ours"},
        "dataset": {**base["dataset"], "standardize_over": "dataset"},
    }
    plain = TrialConfig.model_validate(base)
    assert TrialConfig.model_validate(spelled).trial_id() == plain.trial_id()
    assert set(ADDED_AT_DEFAULT).isdisjoint(plain.id_fields())
    changed = [
        {**base, "augment_mixup": True},
        {**base, "decay": "cosine", "decay_power": 2.0},
        {**base, "model": {**model, "variant": "official"}},
        {**base, "dataset": {**base["dataset"], "standardize_over": "example"}},
    ]
    ids = {TrialConfig.model_validate(c).trial_id() for c in changed}
    assert len(ids) == len(changed) and plain.trial_id() not in ids


def test_new_optimizers_take_their_options_with_defaults() -> None:
    radam = TrialConfig.model_validate(with_(optimizer={"name": "radam"})).optimizer
    assert (radam.beta1, radam.beta2, radam.eps, radam.v0_seed) == (0.9, 0.999, 1e-8, None)
    random_v0 = TrialConfig.model_validate(with_(optimizer={"name": "random-v0-adam"}))
    assert random_v0.optimizer.v0_seed == 0 and random_v0.optimizer.is_adam
    assert "v0_seed" not in TrialConfig.model_validate(TINY).id_fields()["optimizer"]
