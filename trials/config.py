"""The resolved configuration of one trial, validated where it enters.

A `TrialConfig` is everything that determines one training run. Unknown keys,
wrong types, unknown names and impossible combinations are refused here, with
the dotted field name, before any data is loaded or any step is taken.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trials.data import DATASET_REGISTRY
from warmup_core import adaptive
from warmup_core.models import MODEL_REGISTRY
from warmup_core.optim import ADAM_FAMILY, OPTIMIZERS, optimizer_defaults
from warmup_core.parameterization import PARAMETERIZATIONS
from warmup_core.registry import Entry, Registry
from warmup_core.schedules import DECAYS, WARMUP_SHAPES

# Options each optimizer accepts (besides its name); others are refused.
OPTIMIZER_OPTIONS = {name: tuple(optimizer_defaults(name)) for name in OPTIMIZERS}

# The fixed shapes of `warmup_core.schedules` and the sharpness-adaptive controller.
WARMUP_SHAPE_CHOICES = (*WARMUP_SHAPES, "adaptive")

# Fields of `warmup_shape: adaptive` and their defaults (from `warmup_core.adaptive`).
ADAPTIVE_DEFAULTS = {
    "adaptive_safety": adaptive.DEFAULT_SAFETY,
    "adaptive_growth": adaptive.DEFAULT_GROWTH,
    "adaptive_every": adaptive.DEFAULT_EVERY,
}


@dataclass(frozen=True)
class FieldRole:
    """How the rest of the tool treats a config field (attached with `Annotated`).

    - `member`: trials of one pack may differ in it (everything else the pack shares:
      model, data, batches, measurement schedule, dtype).
    - `independent`: no model validator reads it and its own validators look at its
      value alone, so a value is valid, and resolves the same, whatever the other fields
      hold (the grid is validated by parts on this: `sweeps.grid`).
    - `hashed`: part of the trial id (only fields that cannot change results are not).
    - `omit_default`: left out of the trial id while at its default. For a field added
      after sweeps were run, whose default reproduces what they ran: their trial ids,
      and so their resume, stay valid. Such a field is never `independent` (the grid's
      by-parts ids assume every independent field has a place in every id).
    """

    member: bool = False
    independent: bool = False
    hashed: bool = True
    omit_default: bool = False

    def __post_init__(self) -> None:
        if self.omit_default and self.independent:
            raise ValueError("FieldRole: an omit_default field cannot be independent")


MEMBER = FieldRole(member=True)
INDEPENDENT = FieldRole(independent=True)
MEMBER_INDEPENDENT = FieldRole(member=True, independent=True)
UNHASHED = FieldRole(independent=True, hashed=False)
# Fields added after sweeps were run: out of the trial id while at their defaults.
ADDED = FieldRole(omit_default=True)
MEMBER_ADDED = FieldRole(member=True, omit_default=True)


def _role(model: type[BaseModel], name: str) -> FieldRole:
    found = [m for m in model.model_fields[name].metadata if isinstance(m, FieldRole)]
    return found[0] if found else FieldRole()


def fields_with(model: type[BaseModel], **wanted: bool) -> frozenset[str]:
    """Top-level fields of `model` whose `FieldRole` has every attribute in `wanted`
    (e.g. `fields_with(TrialConfig, member=True)`)."""
    return frozenset(
        name
        for name in model.model_fields
        if all(getattr(_role(model, name), k) == v for k, v in wanted.items())
    )


def _id_exclude(model: BaseModel) -> dict[str, Any]:
    """pydantic's `exclude` for what `model`'s trial id leaves out: unhashed fields, and
    `omit_default` fields and registry options at their defaults (nested configs too)."""
    cls = type(model)
    out: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        role, value = _role(cls, name), getattr(model, name)
        if not role.hashed or (
            role.omit_default and value == info.get_default(call_default_factory=True)
        ):
            out[name] = True
        elif isinstance(value, BaseModel) and (nested := _id_exclude(value)):
            out[name] = nested
    if isinstance(model, _Entry):
        options = model.registry_entry().options
        for key, value in (model.model_extra or {}).items():
            option = options.get(key)
            if option is not None and option.omit_default and value == option.default:
                out[key] = True
    return out


def id_pieces(fields: dict[str, Any]) -> list[str]:
    """The canonical text of each top-level item of `fields`, in sorted key order: a
    trial id hashes exactly these (`id_of`)."""
    return [f"{json.dumps(k)}: {json.dumps(fields[k], sort_keys=True)}" for k in sorted(fields)]


def id_of(pieces: list[str]) -> str:
    """The trial id of the config whose `id_pieces` these are: 16 hex digits of the
    SHA-256 of `json.dumps(fields, sort_keys=True)`."""
    canonical = "{" + ", ".join(pieces) + "}"
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def options(self) -> dict[str, Any]:
        """The options that were set (everything but `name` that is not None)."""
        return {k: v for k, v in self.model_dump().items() if k != "name" and v is not None}

    def _check_options(self, allowed: dict[str, tuple[str, ...]], prefix: str) -> None:
        name = self.name  # type: ignore[attr-defined]
        for key in self.options():
            if key not in allowed[name]:
                raise ValueError(
                    f"{prefix}.{key}: not an option of {prefix} {name!r}; "
                    f"allowed: {', '.join(allowed[name]) or '(none)'}"
                )


def _choice(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{field}: unknown value {value!r}; allowed: {', '.join(allowed)}")
    return value


def _resolve_entry(
    registry: Any, data: Any, default_name: str, common: tuple[str, ...] = ()
) -> Any:
    """`data` with the entry's options checked and every unset one at its default."""
    if not isinstance(data, dict):
        return data  # pydantic reports the wrong type
    name = data.get("name", default_name)
    if not isinstance(name, str):
        raise ValueError(f"{registry.kind}.name: must be a string, got {name!r}")
    options = {k: v for k, v in data.items() if k != "name" and k not in common}
    resolved = registry.resolve(name, options)
    return {"name": name, **{k: data[k] for k in common if k in data}, **resolved}


class _Entry(_Strict):
    """A section that names a registry entry: its options are the entry's (`extra`)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    registry: ClassVar[Registry]

    def registry_entry(self) -> Entry:
        """The registry entry this section names."""
        return self.registry.get(self.name)  # type: ignore[attr-defined]


class ModelConfig(_Entry):
    """Architecture: `name` and its options, every one resolved (registry defaults)."""

    registry: ClassVar[Registry] = MODEL_REGISTRY
    name: str = "fcn"

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        return _resolve_entry(MODEL_REGISTRY, data, cls.model_fields["name"].default)


_DATASET_COMMON = ("train_size", "test_size", "data_dir", "standardize", "standardize_over")


class DatasetConfig(_Entry):
    """Data: `name`, subset sizes, where archives live, and the dataset's own options.

    `standardize` shifts and scales the inputs; `standardize_over` says by what:
    `dataset` (default) by the training set's mean and std of each channel (image) or
    feature (vector), `example` each example by the mean and population std of all its
    own values, pixels and channels together (the official pipeline of Kalra &
    Barkeshli; `trials.data.standardize_examples`).
    """

    registry: ClassVar[Registry] = DATASET_REGISTRY
    name: str = "digits"
    train_size: int | None = Field(default=None, gt=0)
    test_size: int | None = Field(default=None, gt=0)
    data_dir: Annotated[str | None, UNHASHED] = None  # where archives live: not in the id
    standardize: bool = True
    standardize_over: Annotated[Literal["dataset", "example"], ADDED] = "dataset"

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        return _resolve_entry(
            DATASET_REGISTRY, data, cls.model_fields["name"].default, _DATASET_COMMON
        )

    @model_validator(mode="after")
    def _standardization(self) -> DatasetConfig:
        if self.standardize_over == "example":
            if not self.standardize:
                raise ValueError("dataset.standardize_over: needs dataset.standardize true")
            if "text" in self.kinds():
                raise ValueError(
                    f"dataset.standardize_over: dataset {self.name!r} is text; "
                    "only numeric inputs are standardized"
                )
        return self

    @model_validator(mode="after")
    def _sizes_fit(self) -> DatasetConfig:
        # Refused here, at spec read, rather than by every trial once Ray has started.
        DATASET_REGISTRY.get(self.name).check_sizes(self.train_size, self.test_size)
        return self

    def loader_options(self) -> dict[str, Any]:
        """Dataset-specific keyword options for `trials.data.load_dataset`."""
        return dict(self.model_extra or {})

    def kinds(self) -> frozenset[str]:
        """Input kinds ('vector', 'image', 'text') this dataset can give a model."""
        return DATASET_REGISTRY.get(self.name).kinds(self.loader_options())


class OptimizerConfig(_Strict):
    """Optimizer `name` and its hyperparameters (learning rate comes from the schedule).

    Every optimizer's own hyperparameters and defaults are its class's in
    `warmup_core.optim` (`v0_seed`: random-v0-adam's seed of its random v_0).
    """

    name: str = "sgd"
    momentum: float | None = Field(default=None, ge=0, lt=1)
    nesterov: bool | None = None
    beta1: float | None = Field(default=None, ge=0, lt=1)
    beta2: float | None = Field(default=None, ge=0, lt=1)
    eps: float | None = Field(default=None, ge=0)
    weight_decay: float | None = Field(default=None, ge=0)
    v0_seed: Annotated[int | None, ADDED] = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """Every unset hyperparameter of the named optimizer at its default, so trial ids
        cover them."""
        if isinstance(data, dict) and data.get("name", "sgd") in OPTIMIZERS:
            defaults = optimizer_defaults(data.get("name", "sgd"))
            data = {**defaults, **{k: v for k, v in data.items() if v is not None}}
        return data

    @model_validator(mode="after")
    def _valid(self) -> OptimizerConfig:
        _choice("optimizer.name", self.name, OPTIMIZERS)
        self._check_options(OPTIMIZER_OPTIONS, "optimizer")
        if self.nesterov and not self.momentum:
            raise ValueError("optimizer.nesterov: needs optimizer.momentum > 0")
        return self

    @property
    def is_adam(self) -> bool:
        """True for the Adam family (thresholds apply to the pre-conditioned sharpness)."""
        return self.name in ADAM_FAMILY


class TrialConfig(BaseModel):
    """Everything that determines one training run.

    Learning rates: `eta_trgt` is absolute, or with `eta_trgt_relative_to:
    lambda0` a multiple of `1 / lambda_H(0)` (measured at init by the trial).
    `eta_init` is an absolute number or `catapult` (start at the eta_c estimate).
    Steps count updates from 1; `warmup_steps: 1` means no warmup.

    Sharpness is measured on `sharpness_batch`: `fixed` is one batch for the whole
    run, `sharpness_batch_size` examples (default: the training batch size, so the
    whole training set in full-batch runs, as in the paper's GD runs) drawn once from
    `data_seed`; `current` is the paper's minibatch measurement, on the batch of the
    update being taken, with lambda0 the mean over the first `lambda0_batches` batches.
    eta_c is the crossing where one optimizer step starts to raise the loss, bisected
    to a relative bracket of `catapult_rtol`, then checked by `catapult_check_steps`
    steps at the constant rate eta_c (0: no check).

    `warmup_shape: adaptive` (`warmup_core.adaptive`) raises the rate as fast as the
    measured curvature allows: the rate times the threshold-relevant curvature (the
    sharpness for SGD, the pre-conditioned sharpness for the Adam family) stays below
    `adaptive_safety` (default 0.5) times the optimizer's stability constant, the rate
    grows by at most a factor `1 + adaptive_growth` (default 0.1) per update, and the
    curvature is measured every `adaptive_every` (default 5) updates until warmup ends.
    It never goes slower than the linear warmup from `eta_init` over `warmup_steps`,
    so `warmup_steps` is the longest warmup allowed and `eta_init` the lowest first rate.
    The three fields apply to `adaptive` only (set with another shape: refused; left
    unset: null for other shapes, their defaults for `adaptive`).

    The decay after warmup (`decay`, `warmup_core.schedules`) ends at `eta_min`: an
    absolute rate, or with `eta_min_relative_to: eta_trgt` a fraction of eta_trgt (the
    official code's `lr_min = lr_trgt / 10` is `eta_min: 0.1`), which a grid over eta_trgt
    keeps. eta_min may not exceed eta_trgt; with eta_trgt relative to lambda0 an absolute
    eta_min cannot be checked, so only the relative form is accepted there. `decay_power`
    is the cosine decay's exponent p (the official `cosine_decay ** p`; 0 keeps eta_trgt).

    Augmentation (`trials.augment`, the official pipeline of Kalra & Barkeshli), fresh
    for every training batch, in this order: a left-right flip with probability 1/2
    (`augment_flip`); a crop back to the image size from a copy zero-padded by
    `augment_crop_padding` pixels, at offsets 0 .. 2 * padding - 1 on each axis (the
    official 4 pixels: offsets 0..7); mixup (`augment_mixup`) of each example i with
    example B-1-i of the batch, weight lambda ~ U(0, 1) per example, labels mixed alike.
    The draws are a pure function of `data_seed` and the update number, so a trial sees
    the same batches packed or alone, resumed or not. With mixup the loss takes the
    soft labels (cross-entropy against them, MSE against the mixed one-hot), and the
    training accuracy is the official code's: argmax of the logits against argmax of
    the mixed label. Evaluations (`eval_every`, final train and test) use clean data.
    Sharpness when training augments: `sharpness_batch: current` measures on the
    update's augmented batch, and lambda0 is the mean over the first `lambda0_batches`
    augmented batches, as the official code's lambda0 is over 10 augmented training
    batches (it draws those before training; here they are the batches of updates
    1, 2, ...); `fixed` measures on its clean fixed batch.

    `mup_conv_fan_in: feature_map` counts a muP convolution's fan-in from its input
    feature map, as the official `muConv` (`warmup_core.parameterization`); muP only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Built on first use, not at import: resolving them loads registry plugins, which may
    # import this package themselves (a model plugin's module defining a dataset too).
    model: ModelConfig = Field(default_factory=ModelConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    loss: Literal["mse", "xent"] = "mse"
    parameterization: str = "sp"
    init_scale: Annotated[float, MEMBER_INDEPENDENT] = Field(default=2.0, gt=0)
    last_init_scale: Annotated[float, INDEPENDENT] = Field(default=1.0, gt=0)
    simple_mup: Annotated[bool, INDEPENDENT] = False
    mup_constants: Annotated[Literal["paper", "unit"], INDEPENDENT] = "paper"
    mup_conv_fan_in: Annotated[Literal["kernel", "feature_map"], ADDED] = "kernel"
    optimizer: Annotated[OptimizerConfig, MEMBER] = OptimizerConfig()

    eta_trgt: Annotated[float, MEMBER] = Field(default=1.0, gt=0)
    eta_trgt_relative_to: Annotated[Literal["absolute", "lambda0"], MEMBER] = "absolute"
    eta_init: Annotated[float | Literal["catapult"], MEMBER] = 0.0
    warmup_steps: Annotated[int, MEMBER_INDEPENDENT] = Field(default=1, gt=0)
    warmup_shape: Annotated[str | None, MEMBER] = None
    warmup_power: Annotated[float, MEMBER_INDEPENDENT] = Field(default=1.0, gt=0)
    adaptive_safety: Annotated[float | None, MEMBER] = Field(default=None, gt=0, le=1)
    adaptive_growth: Annotated[float | None, MEMBER] = Field(default=None, gt=0)
    adaptive_every: Annotated[int | None, MEMBER] = Field(default=None, gt=0)
    decay: Annotated[str, MEMBER] = "constant"
    eta_min: Annotated[float, MEMBER] = Field(default=0.0, ge=0)
    eta_min_relative_to: Annotated[Literal["absolute", "eta_trgt"], MEMBER_ADDED] = "absolute"
    decay_power: Annotated[float, MEMBER_ADDED] = Field(default=1.0, ge=0)

    num_steps: Annotated[int, INDEPENDENT] = Field(default=100, gt=0)
    batch_size: Annotated[int | None, INDEPENDENT] = Field(default=None, gt=0)
    init_seed: Annotated[int, MEMBER_INDEPENDENT] = Field(default=0, ge=0)
    data_seed: Annotated[int, INDEPENDENT] = Field(default=0, ge=0)
    augment_flip: Annotated[bool, ADDED] = False
    augment_crop_padding: Annotated[int, ADDED] = Field(default=0, ge=0)
    augment_mixup: Annotated[bool, ADDED] = False

    sharpness_every: Annotated[int, INDEPENDENT] = Field(default=0, ge=0)
    sharpness_batch: Literal["fixed", "current"] = "fixed"
    sharpness_batch_size: int | None = Field(default=None, gt=0)
    lambda0_batches: Annotated[int, INDEPENDENT] = Field(default=10, gt=0)
    sharpness_tol: Annotated[float, INDEPENDENT] = Field(default=1e-3, gt=0)
    sharpness_max_iter: Annotated[int, INDEPENDENT] = Field(default=100, gt=1)
    eval_every: Annotated[int, INDEPENDENT] = Field(default=0, ge=0)
    measure_eta_c: Annotated[bool, MEMBER_INDEPENDENT] = False
    checkpoint_every: Annotated[int, UNHASHED] = Field(
        default=0, ge=0
    )  # 0: never (Ray Tune checkpoints)
    catapult_rtol: Annotated[float, MEMBER_INDEPENDENT] = Field(default=0.01, gt=0, lt=1)
    catapult_check_steps: Annotated[int, MEMBER_INDEPENDENT] = Field(default=10, ge=0)

    divergence_factor: Annotated[float, MEMBER_INDEPENDENT] = Field(default=1000.0, gt=1)
    stuck_accuracy_factor: Annotated[float, MEMBER_INDEPENDENT] = Field(default=1.5, gt=0)
    stuck_loss: Annotated[float | None, MEMBER_INDEPENDENT] = Field(default=None, gt=0)

    device: Annotated[str, INDEPENDENT] = "auto"
    dtype: Annotated[Literal["float32", "float64"], INDEPENDENT] = "float32"

    @model_validator(mode="before")
    @classmethod
    def _adaptive_defaults(cls, data: Any) -> Any:
        """The adaptive controller's unset fields at their defaults, so trial ids cover them."""
        if isinstance(data, dict) and data.get("warmup_shape") == "adaptive":
            data = {**data, **{k: v for k, v in ADAPTIVE_DEFAULTS.items() if data.get(k) is None}}
        return data

    @field_validator("eta_init")
    @classmethod
    def _eta_init_non_negative(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and value < 0:
            raise ValueError("must be >= 0 or 'catapult'")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in ("auto", "cpu") and not value.startswith("cuda"):
            raise ValueError(f"unknown device {value!r}; allowed: auto, cpu, cuda, cuda:N")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrialConfig:
        _choice("parameterization", self.parameterization, PARAMETERIZATIONS)
        _choice("decay", self.decay, DECAYS)
        if self.warmup_shape is not None:
            _choice("warmup_shape", self.warmup_shape, WARMUP_SHAPE_CHOICES)
        if self.warmup_shape != "adaptive":
            for key in ADAPTIVE_DEFAULTS:
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"{key}: applies to warmup_shape 'adaptive' only, "
                        f"not {self.resolved_warmup_shape!r}"
                    )
        model = MODEL_REGISTRY.get(self.model.name)
        kinds = self.dataset.kinds()
        if not model.inputs & kinds:
            raise ValueError(
                f"model.name: model {self.model.name!r} takes {' or '.join(sorted(model.inputs))} "
                f"inputs; dataset {self.dataset.name!r} gives {' or '.join(sorted(kinds))}"
                + (" (set dataset.image_shape)" if self.dataset.name == "gaussian" else "")
            )
        if self.parameterization not in model.parameterizations:
            raise ValueError(
                f"parameterization: model {self.model.name!r} supports "
                f"{', '.join(model.parameterizations)}, not {self.parameterization!r}"
            )
        if "text" in kinds and self.loss != "xent":
            raise ValueError(
                f"loss: language modelling on dataset {self.dataset.name!r} needs loss 'xent'"
            )
        if self.sharpness_batch == "current" and self.sharpness_batch_size is not None:
            raise ValueError(
                "sharpness_batch_size: applies to sharpness_batch 'fixed' only; "
                "'current' measures on the training batch"
            )
        absolute_init = self.eta_init != "catapult" and self.eta_trgt_relative_to == "absolute"
        if absolute_init and self.eta_init > self.eta_trgt:
            raise ValueError(f"eta_init: {self.eta_init} exceeds eta_trgt {self.eta_trgt}")
        self._check_decay()
        if "text" in kinds and self.augments:
            raise ValueError(f"augment_*: dataset {self.dataset.name!r} is text")
        return self

    def _check_decay(self) -> None:
        """eta_min at most eta_trgt, and the decay exponent for the cosine decay only."""
        if self.decay_power != 1.0 and self.decay != "cosine":
            raise ValueError(f"decay_power: applies to decay 'cosine' only, not {self.decay!r}")
        if self.eta_min_relative_to == "eta_trgt":
            if self.eta_min > 1:
                raise ValueError(
                    f"eta_min: a fraction of eta_trgt (eta_min_relative_to: eta_trgt) must "
                    f"be at most 1, got {self.eta_min}"
                )
        elif self.eta_trgt_relative_to == "lambda0" and self.eta_min > 0:
            raise ValueError(
                "eta_min: with eta_trgt relative to lambda0, an absolute eta_min cannot be "
                "checked against it; set eta_min_relative_to: eta_trgt (a fraction of eta_trgt)"
            )
        elif self.eta_min > self.eta_trgt:
            raise ValueError(f"eta_min: {self.eta_min} exceeds eta_trgt {self.eta_trgt}")

    @property
    def augments(self) -> bool:
        """Whether training batches are augmented (`trials.augment`)."""
        return self.augment_flip or self.augment_crop_padding > 0 or self.augment_mixup

    @property
    def resolved_warmup_shape(self) -> str:
        """`warmup_shape`, defaulting to the paper's catapult ramp when eta_init is catapult."""
        if self.warmup_shape is not None:
            return self.warmup_shape
        return "catapult" if self.eta_init == "catapult" else "linear"

    @property
    def eta_init_mode(self) -> str:
        """'catapult', 'zero' or 'value'."""
        if self.eta_init == "catapult":
            return "catapult"
        return "zero" if self.eta_init == 0 else "value"

    def trial_id(self) -> str:
        """Stable id of this resolved config: equal configs, equal ids, on any machine.

        The config holds every default (model and dataset options resolved from their
        registries), and the id hashes all of it, so changing a default changes the ids
        it affects. Checkpoint frequency and where the data lives on this machine cannot
        change results: they are not part of the id.
        """
        return id_of(id_pieces(self.id_fields()))

    def id_fields(self) -> dict[str, Any]:
        """The resolved config as JSON data, without the fields that are not hashed."""
        return self.model_dump(mode="json", exclude=_id_exclude(self))

    def flat(self) -> dict[str, Any]:
        """Flat columns for the trials table: `model`, `model_width`, `optimizer_beta1`, ...

        Learning-rate columns are left to the trial, which knows the absolute values.
        """
        out: dict[str, Any] = {}
        for key, value in self.model_dump().items():
            if isinstance(value, dict):
                out[key] = value.pop("name")
                out.update(
                    {
                        f"{key}_{k}": json.dumps(v) if isinstance(v, list) else v
                        for k, v in value.items()
                        if k != "data_dir"
                    }
                )
            else:
                out[key] = value
        out["warmup_shape"] = self.resolved_warmup_shape
        out["schedule"] = out.pop("decay")
        for derived in ("eta_trgt", "eta_init", "eta_trgt_relative_to", "checkpoint_every"):
            out.pop(derived)
        return out


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of the config dict `base` with dotted keys (`model.width`) set to values."""
    out = json.loads(json.dumps(base))  # deep copy of plain data
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ValueError(f"{dotted}: {key!r} is not a nested section")
            node = child
        node[leaf] = value
    return out
