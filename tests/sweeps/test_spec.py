"""Tests for sweeps.spec and sweeps.grid: bundled specs, grid expansion, and refusal of
malformed specs."""

from __future__ import annotations

import ast
import inspect
import itertools
import pickle
from pathlib import Path

import pytest
import yaml

from sweeps import (
    PlannedTrial,
    SpecError,
    SweepSpec,
    bundled_specs,
    expand,
    load_spec,
    make_trial,
    parse_spec,
    resolved_yaml,
)
from sweeps.grid import INDEPENDENT_FIELDS, axis_values, plan_grid
from tests.sweeps.conftest import tiny_spec
from trials import TrialConfig, apply_overrides

# ---------------------------------------------------------------------------
# Bundled specs
# ---------------------------------------------------------------------------


def test_bundled_specs_include_quickstart_and_all_load() -> None:
    specs = bundled_specs()
    assert "quickstart" in specs
    for name, path in specs.items():
        spec, text = load_spec(path)
        assert spec.name == name  # the listed name is the name results are stored under
        assert text == path.read_text()
        assert expand(spec)


def test_quickstart_loads_by_name_and_expands_to_its_grid() -> None:
    spec, _ = load_spec("quickstart")
    planned = expand(spec)
    # 6 relative etas x 3 warmups x 2 parameterizations x 1 seed
    assert len(planned) == 6 * 3 * 2
    assert len({p.trial_id for p in planned}) == len(planned)
    first = planned[0].config
    assert first.eta_trgt_relative_to == "lambda0"
    assert first.model.width == 128 and first.dataset.name == "digits"
    assert {p.config.parameterization for p in planned} == {"sp", "mup"}
    assert {p.config.warmup_steps for p in planned} == {1, 16, 64}


def test_unknown_spec_name_lists_the_bundled_ones(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="quickstart") as info:
        load_spec(str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in str(info.value)


def test_a_directory_is_not_a_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="directory"):
        load_spec(tmp_path)


# ---------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_in_a_stable_order() -> None:
    spec = parse_spec(tiny_spec())
    planned = expand(spec)
    assert [(p.config.eta_trgt, p.config.warmup_steps) for p in planned] == [
        (0.05, 1),
        (0.05, 4),
        (0.1, 1),
        (0.1, 4),
    ]
    assert [p.trial_id for p in expand(parse_spec(tiny_spec()))] == [p.trial_id for p in planned]
    for p in planned:  # everything not swept comes from base
        assert p.config.model.width == 16 and p.config.num_steps == 20


def test_dotted_axes_set_nested_fields() -> None:
    spec = parse_spec(tiny_spec(grid={"model.width": [16, 32], "optimizer.name": ["sgd", "adam"]}))
    planned = expand(spec)
    assert len(planned) == 4
    combos = {(p.config.model.width, p.config.optimizer.name) for p in planned}
    assert combos == {(16, "sgd"), (16, "adam"), (32, "sgd"), (32, "adam")}
    assert all(p.config.model.depth == 2 for p in planned)  # siblings of the swept key kept
    assert planned[0].overrides["model.width"] == 16


def test_relative_eta_axis_marks_trials_relative_to_lambda0() -> None:
    spec = parse_spec(tiny_spec(grid={"eta_trgt": {"relative_to": "lambda0", "values": [1, 4]}}))
    planned = expand(spec)
    assert [p.config.eta_trgt for p in planned] == [1.0, 4.0]
    assert all(p.config.eta_trgt_relative_to == "lambda0" for p in planned)


def test_seeds_set_both_init_seed_and_data_seed() -> None:
    planned = expand(parse_spec(tiny_spec(grid={"eta_trgt": [0.1]}, seeds=[0, 3, 7])))
    assert [(p.config.init_seed, p.config.data_seed) for p in planned] == [(0, 0), (3, 3), (7, 7)]


def test_a_separate_seed_axis_is_allowed_with_one_seed() -> None:
    planned = expand(parse_spec(tiny_spec(grid={"init_seed": [0, 1, 2]}, seeds=[5])))
    assert [(p.config.init_seed, p.config.data_seed) for p in planned] == [(0, 5), (1, 5), (2, 5)]


def test_equal_values_spelled_twice_make_one_trial() -> None:
    planned = expand(parse_spec(tiny_spec(grid={"eta_trgt": [1, 1.0, 2]})))
    assert [p.config.eta_trgt for p in planned] == [1.0, 2.0]


def test_resolved_yaml_parses_back_to_the_same_trials() -> None:
    # `status` and `analyze` re-read the spec.yaml written next to the results.
    for data in (
        tiny_spec(grid={"eta_trgt": {"relative_to": "lambda0", "values": [1, 2]}}),
        tiny_spec(
            grid={"eta_trgt": {"low": 0.01, "high": 1.0, "log": True}},
            search={"kind": "optuna", "num_samples": 3},
        ),
        tiny_spec(),
    ):
        spec = parse_spec(data)
        again = parse_spec(yaml.safe_load(resolved_yaml(spec)))
        assert again == spec
        assert [p.trial_id for p in expand(again)] == [p.trial_id for p in expand(spec)]


# ---------------------------------------------------------------------------
# Malformed specs: SpecError naming the dotted path
# ---------------------------------------------------------------------------


def _base(**changes):
    spec = tiny_spec()
    spec["base"].update(changes)
    return spec


MALFORMED = {
    "unknown top-level key": (tiny_spec(gird={"eta_trgt": [1]}), "gird"),
    "unknown base key": (_base(lerning_rate=0.1), "base.lerning_rate"),
    "unknown nested base key": (_base(model={"name": "fcn", "widht": 16}), "base.model.widht"),
    "invalid base value": (_base(num_steps=0), "base.num_steps"),
    "unknown model in base": (_base(model={"name": "resnet"}), "model.name"),
    "zero width on an axis": (tiny_spec(grid={"model.width": [16, 0]}), "model.width"),
    "empty axis": (tiny_spec(grid={"eta_trgt": [0.1], "warmup_steps": []}), "warmup_steps"),
    "wrong type on an axis": (tiny_spec(grid={"warmup_steps": [1, "four"]}), "warmup_steps"),
    "axis that is not a field": (tiny_spec(grid={"model.colour": ["red"]}), "colour"),
    "axis not a list": (tiny_spec(grid={"warmup_steps": 4}), "grid.warmup_steps"),
    "wrong type of seeds": (tiny_spec(seeds="zero"), "seeds"),
    "negative seed": (tiny_spec(seeds=[-1]), "seeds"),
    "duplicate seeds": (tiny_spec(seeds=[1, 1]), "seeds"),
    "range axis with grid search": (
        tiny_spec(grid={"eta_trgt": {"low": 0.01, "high": 1.0}}),
        "grid.eta_trgt",
    ),
    "relative axis other than eta_trgt": (
        tiny_spec(grid={"warmup_steps": {"relative_to": "lambda0", "values": [1]}}),
        "grid.warmup_steps",
    ),
    "relative to something else": (
        tiny_spec(grid={"eta_trgt": {"relative_to": "lambda1", "values": [1]}}),
        "grid.eta_trgt",
    ),
    "boundary search without eta axis": (
        tiny_spec(grid={"warmup_steps": [1, 4]}, search={"kind": "boundary"}),
        "grid.eta_trgt",
    ),
    "unknown search kind": (tiny_spec(search={"kind": "random"}), "search.kind"),
    "zero cpus": (tiny_spec(resources={"cpu": 0}), "resources.cpu"),
    "zero pack_size": (tiny_spec(pack_size=0), "pack_size"),
    "pack_size neither a number nor auto": (tiny_spec(pack_size="many"), "pack_size"),
    "sweep name escaping the results dir": (tiny_spec(name="../evil"), "name"),
    "sweep name with a slash": (tiny_spec(name="a/b"), "name"),
    "eta_init above eta_trgt on the grid": (
        tiny_spec(grid={"eta_trgt": [0.01, 1.0]}, base={**tiny_spec()["base"], "eta_init": 0.1}),
        "eta_init",
    ),
}


@pytest.mark.parametrize(("data", "path"), MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_spec_raises_spec_error_naming_the_field(data: dict, path: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "my-spec.yaml")
    message = str(info.value)
    assert message.startswith("my-spec.yaml: ")
    assert path in message
    assert "\n" not in message  # one line for the CLI


def test_grid_error_names_the_offending_value() -> None:
    with pytest.raises(SpecError, match=r"model\.width=0") as info:
        parse_spec(tiny_spec(grid={"model.width": [16, 0]}))
    assert "model.width: must be a positive integer" in str(info.value)


@pytest.mark.parametrize("document", ["[1, 2, 3]", "just a string", ""])
def test_a_spec_must_be_a_mapping(tmp_path: Path, document: str) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(document)
    with pytest.raises(SpecError, match="mapping"):
        load_spec(path)


def test_invalid_yaml_is_a_spec_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nbase: {model: [\n")
    with pytest.raises(SpecError, match=r"broken\.yaml: not valid YAML") as info:
        load_spec(path)
    assert "\n" not in str(info.value)


def test_yaml_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(
        f"name: !!python/object/apply:os.system ['touch {marker}']\n"
        "base: {}\n"
        "grid: {eta_trgt: [0.1]}\n"
    )
    with pytest.raises(SpecError, match=r"evil\.yaml"):
        load_spec(path)
    assert not marker.exists()


def test_every_expanded_trial_is_a_valid_trial_config() -> None:
    spec = parse_spec(tiny_spec(grid={"eta_trgt": [0.05, 0.1], "model.depth": [2, 3]}))
    for planned in expand(spec):
        assert TrialConfig.model_validate(planned.config.model_dump()) == planned.config


@pytest.mark.parametrize(
    ("grid_or_search", "line"),
    [
        (
            {"grid": {"eta_trgt": {"values": [0.001]}}},
            "grid.eta_trgt: expected a list of values, {relative_to: lambda0, values: [...]}, "
            'or {low, high, log}; got {"values": [0.001]}',
        ),
        (
            {"grid": {"warmup_steps": 16}},
            "grid.warmup_steps: expected a list of values, {relative_to: lambda0, values: [...]}, "
            "or {low, high, log}; got 16",
        ),
        (
            {"search": {"kind": "optuna", "asha": {"grace": 3}}},
            "search.asha: expected true, false, or {grace_period, reduction_factor, max_t}; "
            'got {"grace": 3}',
        ),
        (
            {"search": {"kind": "optuna", "asha": {"grace_period": 0}}},
            "search.asha.grace_period: Input should be greater than 0",
        ),
    ],
)
def test_union_fields_fail_in_one_readable_line(grid_or_search, line) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(tiny_spec(**grid_or_search), "s.yaml")
    assert str(info.value) == f"s.yaml: {line}"


def test_asha_settings_from_the_spec() -> None:
    spec = parse_spec(
        tiny_spec(
            search={
                "kind": "optuna",
                "asha": {"grace_period": 20, "reduction_factor": 3, "max_t": 80},
            }
        )
    )
    assert spec.search.asha_config.model_dump() == {
        "grace_period": 20,
        "reduction_factor": 3.0,
        "max_t": 80,
    }
    assert parse_spec(tiny_spec(search={"kind": "optuna", "asha": True})).search.asha_config
    assert parse_spec(tiny_spec()).search.asha_config is None


# ---------------------------------------------------------------------------
# Expansion by parts: the same trials, ids and errors as validating every point
# ---------------------------------------------------------------------------


def _every_point(spec: SweepSpec) -> list[tuple[dict, TrialConfig, str]]:
    """The grid with every point validated in full (how `expand` used to make it)."""
    out, seen = [], set()
    for combo in itertools.product(*axis_values(spec).values()):
        overrides = {k: v for part in combo for k, v in part.items()}
        config = TrialConfig.model_validate(apply_overrides(spec.base, overrides))
        if config.trial_id() not in seen:
            seen.add(config.trial_id())
            out.append((overrides, config, config.trial_id()))
    return out


def _first_error(spec: SweepSpec, source: str) -> str:
    """The message of the first grid point (in grid order) that fails on its own."""
    for combo in itertools.product(*axis_values(spec).values()):
        try:
            make_trial(spec, {k: v for part in combo for k, v in part.items()}, source)
        except SpecError as exc:
            return str(exc)
    raise AssertionError("every grid point is valid")


GRIDS = {
    "tiny": tiny_spec(),
    "relative eta, warmups and seeds": tiny_spec(
        grid={
            "eta_trgt": {"relative_to": "lambda0", "values": [0.5, 1, 2]},
            "warmup_steps": [1, 16],
        },
        seeds=[0, 1, 2, 3],
    ),
    "independent axes spelled twice": tiny_spec(
        grid={"warmup_steps": [1, 4.0, 4], "init_scale": [1, 1.0, 2], "eta_trgt": [0.1]}
    ),
    "an axis the id leaves out": tiny_spec(
        grid={"checkpoint_every": [0, 5], "eta_trgt": [0.05, 0.1]}, seeds=[0, 1]
    ),
    "nullable and validated independent fields": tiny_spec(
        grid={
            "batch_size": [None, 32],
            "device": ["cpu", "auto"],
            "dtype": ["float32", "float64"],
            "stuck_loss": [None, 2],
        }
    ),
    "swept seed beside a base seed": tiny_spec(
        grid={"init_seed": [1, 2], "eta_trgt": [0.1]},
        seeds=[5],
        base={**tiny_spec()["base"], "init_seed": 3, "num_steps": 7},
    ),
    "coupled nested axes": tiny_spec(
        grid={
            "model.width": [8, 16],
            "optimizer.name": ["sgd", "adam"],
            "warmup_steps": [1, 4],
            "eta_trgt": [0.01, 0.1],
        },
        seeds=[0, 1],
    ),
    "whole section and its option": tiny_spec(
        grid={
            "model": [{"name": "fcn", "width": 8, "depth": 2}, {"name": "fcn", "depth": 3}],
            "model.width": [4, 12],
            "num_steps": [5, 10],
        }
    ),
    "adaptive warmup fills its defaults": tiny_spec(
        grid={"warmup_shape": ["linear", "adaptive"], "warmup_steps": [1, 8], "eta_trgt": [0.1]},
        seeds=[0, 1],
    ),
    "eta_init against eta_trgt": tiny_spec(
        grid={"eta_init": [0.0, 0.01], "eta_trgt": [0.05, 0.1], "eval_every": [0, 2]}
    ),
    "optuna range probes": tiny_spec(
        grid={"eta_trgt": {"low": 0.01, "high": 1.0, "log": True}, "warmup_steps": [1, 2]},
        search={"kind": "optuna", "num_samples": 3},
    ),
}


@pytest.mark.parametrize("data", GRIDS.values(), ids=list(GRIDS))
def test_expand_makes_the_trials_of_validating_every_point(data: dict) -> None:
    spec = parse_spec(data)
    assert plan_grid(spec) is not None  # checked by parts, not per point
    expected = _every_point(spec)
    planned = expand(spec)
    assert [p.trial_id for p in planned] == [tid for _, _, tid in expected]
    assert [p.overrides for p in planned] == [overrides for overrides, _, _ in expected]
    for p, (overrides, config, trial_id) in zip(planned, expected, strict=True):
        assert p.config == config
        assert p.config.model_dump() == config.model_dump()
        assert p.config.model_fields_set == config.model_fields_set
        assert p.config.trial_id() == trial_id
        assert p == PlannedTrial(overrides, config)
        assert pickle.loads(pickle.dumps(p)) == p  # trials travel to Ray workers


def test_expand_matches_full_validation_on_every_bundled_spec() -> None:
    for path in bundled_specs().values():
        spec, _ = load_spec(path)
        expected = _every_point(spec)
        planned = expand(spec)
        assert [p.trial_id for p in planned] == [tid for _, _, tid in expected]
        assert [p.config for p in planned] == [config for _, config, _ in expected]


def test_a_known_trial_id_is_unchanged_by_expansion() -> None:
    spec = parse_spec(tiny_spec())
    config = TrialConfig.model_validate(apply_overrides(spec.base, expand(spec)[3].overrides))
    assert expand(spec)[3].trial_id == config.trial_id()


BAD_GRIDS = {
    "bad independent value": tiny_spec(grid={"eta_trgt": [0.1], "warmup_steps": [1, 0]}),
    "bad value late in the grid": tiny_spec(
        grid={"eta_trgt": [0.05, 0.1], "init_scale": [1, 2, -1]}, seeds=[0, 1]
    ),
    "two bad fields at one point": tiny_spec(
        grid={"warmup_steps": [4, 0], "num_steps": [0, 5], "eta_trgt": [0.1]}
    ),
    "field validator": tiny_spec(grid={"device": ["cpu", "tpu"], "eta_trgt": [0.1]}),
    "wrong type": tiny_spec(grid={"warmup_steps": [1, "four"], "eta_trgt": [0.1]}),
    "two axes that clash": tiny_spec(
        grid={"warmup_shape": ["adaptive", "linear"], "adaptive_safety": [0.5], "eta_trgt": [0.1]}
    ),
    "sharpness batch options that clash": tiny_spec(
        grid={"sharpness_batch": ["fixed", "current"], "sharpness_batch_size": [None, 16]}
    ),
    "eta_init above eta_trgt at one point": tiny_spec(
        grid={"eta_init": [0.0, 0.5], "eta_trgt": [1.0, 0.1], "warmup_steps": [1, 2]}
    ),
    "bad nested value after a good one": tiny_spec(
        grid={"model.width": [16, 0], "warmup_steps": [1, 2], "eta_trgt": [0.1]}
    ),
    "not a nested section": tiny_spec(grid={"num_steps.x": [1], "eta_trgt": [0.1]}),
}


@pytest.mark.parametrize("data", BAD_GRIDS.values(), ids=list(BAD_GRIDS))
def test_a_bad_grid_point_gives_the_message_of_validating_it_alone(data: dict) -> None:
    spec = SweepSpec.model_validate(data)
    expected = _first_error(spec, "s.yaml")
    with pytest.raises(SpecError) as info:
        expand(spec, "s.yaml")
    assert str(info.value) == expected
    with pytest.raises(SpecError) as info:
        parse_spec(data, "s.yaml")
    assert str(info.value) == expected
    assert "\n" not in expected


def _names_read(function: ast.AST) -> set[str]:
    """Attribute names and string constants in a function's body (not its decorators)."""
    body = function.body if isinstance(function, ast.FunctionDef) else [function]
    names = set()
    for node in (n for stmt in body for n in ast.walk(stmt)):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
    return names


def test_no_validator_of_a_trial_config_reads_an_independent_field() -> None:
    # `expand` validates each value of an independent field once, alone; that holds only
    # while no model validator (or what it calls on the config) reads such a field.
    assert INDEPENDENT_FIELDS.issubset(TrialConfig.model_fields)
    module = ast.parse(inspect.getsource(inspect.getmodule(TrialConfig)))
    trial_class = next(
        n for n in module.body if isinstance(n, ast.ClassDef) and n.name == "TrialConfig"
    )
    read: set[str] = set()
    for node in trial_class.body:
        if isinstance(node, ast.FunctionDef) and node.name not in ("trial_id", "flat"):
            decorators = {ast.unparse(d).split("(")[0] for d in node.decorator_list}
            if "field_validator" in decorators:
                # A field validator may see its own value only, not the other fields.
                assert [a.arg for a in node.args.args] == ["cls", "value"], node.name
            read |= _names_read(node)
    for node in module.body:  # module constants the validators use, by name
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in read for t in node.targets
        ):
            read |= _names_read(node.value)
    assert not read & INDEPENDENT_FIELDS
