"""A trial's problem: its data, model, loss and batches on its device and dtype, and the
optimizer and catapult search its config asks for.

Everything here is set-up a training loop reads; nothing here trains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from trials.augment import Augmentation
from trials.config import TrialConfig
from trials.data import Dataset, load_dataset
from warmup_core import stability
from warmup_core.models import MODEL_REGISTRY, WarmupModel, build_model
from warmup_core.optim import Optimizer, build_optimizer, optimizer_family, stability_threshold
from warmup_core.parameterization import Parameterization

__all__ = [
    "EVAL_CHUNK",
    "Problem",
    "critical_lr",
    "make_optimizer",
    "resolve_device",
    "threshold",
]

EVAL_CHUNK = 4096  # examples per forward pass when evaluating a whole split


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Problem:
    """Data, model and loss of a trial, on its device and dtype."""

    def __init__(self, config: TrialConfig, data: Dataset | None = None) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = getattr(torch, config.dtype)
        ds = config.dataset
        data = data or load_dataset(
            ds.name,
            train_size=ds.train_size,
            test_size=ds.test_size,
            data_dir=ds.data_dir,
            standardize=ds.standardize,
            standardize_over=ds.standardize_over,
            seed=config.data_seed,
            **ds.loader_options(),
        )
        self.augmentation = Augmentation.of(config)
        if self.augmentation.needs_images and data.kind == "vector" and data.image_shape is None:
            raise ValueError(
                f"augment_flip, augment_crop_padding: need image inputs; dataset "
                f"{data.name!r} has no image shape"
            )
        vector_model = "vector" in MODEL_REGISTRY.get(config.model.name).inputs
        if data.kind == "vector" and (not vector_model or self.augmentation.needs_images):
            data = data.as_images()  # e.g. digits as 1x8x8 for the convolutional models
        self.data = data
        self.is_text = data.kind == "text"
        cast = (lambda t: t.to(self.device, self.dtype)) if not self.is_text else None
        self.x_train = cast(data.x_train) if cast else data.x_train.to(self.device)
        self.x_test = cast(data.x_test) if cast else data.x_test.to(self.device)
        self.y_train, self.y_test = data.y_train.to(self.device), data.y_test.to(self.device)
        self.num_classes = data.num_classes

    def build_model(self, init_seed: int, init_scale: float | None = None) -> WarmupModel:
        """The configured model, initialized from `init_seed`."""
        c = self.config
        return build_model(
            c.model.name,
            in_shape=self.data.input_shape,
            out_dim=self.num_classes,
            parameterization=Parameterization(
                c.parameterization,
                init_scale=c.init_scale if init_scale is None else init_scale,
                last_init_scale=c.last_init_scale,
                simple_mup=c.simple_mup,
                mup_constants=c.mup_constants,
                conv_fan_in=c.mup_conv_fan_in,
            ),
            seed=init_seed,
            **c.model.options(),
        ).to(self.device, self.dtype)

    def loss_and_accuracy(
        self, logits: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss (MSE on one-hot targets is 1/2 the squared error) and accuracy.

        `y` holds class labels (B,), or soft labels (B, classes) from mixup: then the
        loss is the cross-entropy against them, or MSE against them as targets, and the
        accuracy compares the argmax of the logits with the argmax of the soft label
        (the official code's training accuracy under mixup).
        """
        if logits.ndim == 3:  # language model: (B, T, V) against (B, T)
            logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        soft = y.is_floating_point()
        if self.config.loss == "xent":
            loss = (
                -(y * logits.log_softmax(-1)).sum(-1).mean() if soft else F.cross_entropy(logits, y)
            )
        else:
            target = y.to(logits.dtype) if soft else F.one_hot(y, self.num_classes).to(logits.dtype)
            loss = 0.5 * (logits - target).pow(2).sum(-1).mean()
        labels = y.argmax(-1) if soft else y
        accuracy = (logits.argmax(-1) == labels).to(logits.dtype).mean()
        return loss, accuracy

    def loss_fn(self, model: WarmupModel, x: torch.Tensor, y: torch.Tensor):
        """`params -> loss` on a fixed batch, for curvature and eta_c."""

        def fn(params: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.loss_and_accuracy(functional_call(model, params, (x,)), y)[0]

        return fn

    @torch.no_grad()
    def evaluate_with(
        self, loss_and_accuracy: Callable[[torch.Tensor, torch.Tensor], tuple], split: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float64 mean of `loss_and_accuracy(x, y)` over a split in chunks (one value per
        member of a pack)."""
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        total_loss = total_acc = 0.0
        for i in range(0, len(x), EVAL_CHUNK):
            xb, yb = x[i : i + EVAL_CHUNK], y[i : i + EVAL_CHUNK]
            loss, acc = loss_and_accuracy(xb, yb)
            total_loss = total_loss + loss.double() * len(xb)
            total_acc = total_acc + acc.double() * len(xb)
        return total_loss / len(x), total_acc / len(x)

    def batch_size(self) -> int:
        """Configured batch size, capped at the training set (full batch = GD)."""
        n = len(self.x_train)
        return min(self.config.batch_size or n, n)

    def batch(self, step: int) -> torch.Tensor:
        """Indices of update `step`'s batch (1-based); a pure function of step and data_seed.

        Epoch e shuffles with a generator seeded by (data_seed, e), so a run resumed
        from a checkpoint sees the same batches as an uninterrupted one. The ragged
        last batch of an epoch is dropped: all batches have equal size.
        """
        n, b = len(self.x_train), self.batch_size()
        if b == n:
            return torch.arange(n, device=self.device)
        per_epoch = n // b
        epoch, i = divmod(step - 1, per_epoch)
        gen = torch.Generator().manual_seed(self.config.data_seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=gen)
        return perm[i * b : (i + 1) * b].to(self.device)

    def training_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and labels update `step` trains on: the examples of `batch(step)`,
        augmented when the config asks (`trials.augment`; labels are then soft with
        mixup); a pure function of step and data_seed."""
        idx = self.batch(step)
        x, y = self.x_train[idx], self.y_train[idx]
        if not self.augmentation.active:
            return x, y
        return self.augmentation(x, y, self.num_classes, self.config.data_seed, step)

    def same_batch_every_update(self) -> bool:
        """Whether every update trains on the very same batch (full batch, no augmentation)."""
        return self.batch_size() == len(self.x_train) and not self.augmentation.active

    def measurement_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed batch of `sharpness_batch: fixed`: `sharpness_batch_size` examples
        (default: the training batch size) drawn once from data_seed; the whole training
        set when that covers it (full-batch runs measure on their training batch)."""
        n = len(self.x_train)
        m = min(self.config.sharpness_batch_size or self.batch_size(), n)
        if m == n:
            return self.x_train, self.y_train
        gen = torch.Generator().manual_seed(self.config.data_seed + 1)
        idx = torch.randperm(n, generator=gen)[:m].to(self.device)
        return self.x_train[idx], self.y_train[idx]

    def measures_on_training_batch(self) -> bool:
        """Whether the sharpness of update t is measured on update t's training batch alone."""
        if self.config.sharpness_batch == "current":
            return True
        n = len(self.x_train)
        return self.same_batch_every_update() and (self.config.sharpness_batch_size or n) >= n

    def measurement_batches(self, t: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Batches whose mean loss defines the sharpness at update t (None: at init).

        `fixed`: the one measurement batch (clean, also when training augments).
        `current`: update t's training batch, augmented as trained on; at init the first
        `lambda0_batches` batches (lambda0 is their mean sharpness).
        """
        if self.config.sharpness_batch == "fixed":
            return [self.measurement_batch()]
        steps = range(1, self.config.lambda0_batches + 1) if t is None else [t]
        return [self.training_batch(s) for s in steps]

    def stuck_loss(self) -> float:
        """Language-model 'did not learn' level: the unigram entropy of the training targets."""
        if self.config.stuck_loss is not None:
            return self.config.stuck_loss
        counts = torch.bincount(self.y_train.reshape(-1), minlength=self.num_classes).double()
        p = counts[counts > 0] / counts.sum()
        return float(-(p * p.log()).sum())


def threshold(config: TrialConfig, lr: float) -> float:
    """Stability threshold at learning rate `lr` for the configured optimizer."""
    return stability_threshold(config.optimizer.name, lr, **config.optimizer.options())


def make_optimizer(config: TrialConfig, model: WarmupModel) -> Optimizer:
    """The configured optimizer with the parameterization's per-layer rate multipliers."""
    family = optimizer_family(config.optimizer.name)
    return build_optimizer(
        config.optimizer.name, model.lr_multipliers(family), **config.optimizer.options()
    )


def critical_lr(config: TrialConfig, loss_fn, params, optimizer: Optimizer) -> dict[str, Any]:
    """Catapult estimate of eta_c at `params` for the configured optimizer's update
    (multipliers included), with the number of loss evaluations and its check."""
    info = stability.catapult_search(
        loss_fn,
        params,
        optimizer=optimizer.step_fn(),
        eta_rtol=config.catapult_rtol,
        check_steps=config.catapult_check_steps,
    )
    return {
        "eta_c": info.eta_c,
        "eta_c_loss_evals": info.num_loss_evals,
        "eta_c_check_ratio": info.check_ratio,
        "eta_c_overshoots": info.overshoots,
    }
