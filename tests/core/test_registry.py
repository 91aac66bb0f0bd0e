"""The registry: option schemas validate and complete configs; defaults live only there."""

import inspect

import pytest

from trials.data import DATASET_REGISTRY, DATASETS
from warmup_core.models import FCN, MODEL_REGISTRY, MODELS, Myrtle, Transformer, WideResNet
from warmup_core.registry import Option


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
    assert DATASETS == ("cifar10", "cifar100", "digits", "gaussian", "text")
    assert all(MODEL_REGISTRY.get(name).source == "built-in" for name in MODELS)
    assert DATASET_REGISTRY.get("digits").kinds({"as_image": False}) == {"vector", "image"}
    assert DATASET_REGISTRY.get("gaussian").kinds({"image_shape": None}) == {"vector"}
