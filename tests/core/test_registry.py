"""The registry: option schemas validate and complete configs; defaults live only there."""

import inspect

import pytest

from trials.data import DATASET_REGISTRY, DATASETS
from warmup_core.models import FCN, MODEL_REGISTRY, MODELS, Myrtle, Transformer, WideResNet
from warmup_core.registry import Entry, Option, Registry


@pytest.mark.parametrize(
    "option, value, expected",
    [
        (Option(int, 3, minimum=1), 5, 5),
        (Option(float, 1.0), 2, 2.0),
        (Option(bool, False), True, True),
        (Option(str, "a", choices=("a", "b")), "b", "b"),
        (Option(list, None, length=3), (1, 8, 8), [1, 8, 8]),
        (Option(int, None), None, None),
    ],
)
def test_option_accepts_and_normalizes_good_values(option, value, expected):
    assert option.validate("model.x", value) == expected


@pytest.mark.parametrize(
    "option, value",
    [
        (Option(int, 3, minimum=1), 0),
        (Option(int, 3), True),
        (Option(int, 3), 2.5),
        (Option(float, 1.0), "1"),
        (Option(bool, False), 1),
        (Option(str, "a", choices=("a", "b")), "c"),
        (Option(list, None, length=3), [1, 8]),
        (Option(list, None, length=3), [1, 0, 8]),
        (Option(float, 1.0, above=0), 0.0),
        (Option(int, 3), None),
    ],
)
def test_option_refuses_bad_values_naming_the_field(option, value):
    with pytest.raises(ValueError, match=r"^model\.x: "):
        option.validate("model.x", value)


def test_resolve_fills_every_default_and_refuses_unknown_options():
    assert MODEL_REGISTRY.resolve("fcn", {"width": 8}) == {
        "width": 8,
        "depth": 4,
        "activation": "relu",
        "bias": True,
    }
    with pytest.raises(ValueError, match=r"model\.widht: not an option of model 'fcn'"):
        MODEL_REGISTRY.resolve("fcn", {"widht": 8})
    with pytest.raises(ValueError, match=r"model\.name: unknown model 'resnet'"):
        MODEL_REGISTRY.get("resnet")


@pytest.mark.parametrize("cls", [FCN, Myrtle, WideResNet, Transformer])
def test_model_constructors_hold_no_option_defaults(cls):
    params = inspect.signature(cls.__init__).parameters.values()
    assert all(p.default is inspect.Parameter.empty for p in params if p.name != "self")


def test_builtins_are_registry_entries():
    assert MODELS == ("fcn", "myrtle", "wrn", "transformer")
    assert DATASETS == ("cifar10", "cifar100", "digits", "mnist1d", "gaussian", "text")
    assert all(MODEL_REGISTRY.get(name).source == "built-in" for name in MODELS)
    assert DATASET_REGISTRY.get("digits").kinds({"as_image": False}) == {"vector", "image"}
    assert DATASET_REGISTRY.get("gaussian").kinds({"image_shape": None}) == {"vector"}


# -- override ----------------------------------------------------------------------------


def _things() -> Registry[Entry]:
    """A registry of its own (no plugin group installs into it) with one built-in."""
    things = Registry("thing", "warmup_sweeps.tests-no-such-group", Entry)
    things.register(Entry("a", builder=lambda: "built-in a", options={"n": Option(int, 1)}))
    return things


def test_override_replaces_an_entry_inside_the_block_only():
    things = _things()
    other = Entry("a", builder=lambda: "other a", options={"n": Option(int, 7)})
    with things.override("a", other) as entry:
        assert entry is other and things.get("a") is other
        assert things.resolve("a", {}) == {"n": 7}
    assert things.get("a").builder() == "built-in a"
    assert things.resolve("a", {}) == {"n": 1}
    assert things.names() == ("a",)


def test_override_adds_an_entry_and_removes_it_on_exit():
    things = _things()
    with things.override("b", Entry("b", builder=lambda: "b")):
        assert things.names() == ("a", "b") and things.get("b").builder() == "b"
    assert things.names() == ("a",)
    with pytest.raises(ValueError, match="unknown thing 'b'"):
        things.get("b")


def test_override_restores_the_entry_when_the_block_raises():
    things = _things()
    with (
        pytest.raises(RuntimeError, match="inside"),
        things.override("a", Entry("a", builder=lambda: "other a")),
    ):
        raise RuntimeError("inside")
    assert things.get("a").builder() == "built-in a"


def test_override_refuses_an_entry_under_another_name():
    things = _things()
    with (
        pytest.raises(ValueError, match="named 'a'"),
        things.override("a", Entry("b", builder=lambda: "b")),
    ):
        pass
    assert things.get("a").builder() == "built-in a"
