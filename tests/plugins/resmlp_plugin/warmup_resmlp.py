"""Example warmup-sweeps plugin: a residual MLP and a teacher-labelled Gaussian dataset."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trials.data import DatasetEntry
from warmup_core.models import ModelEntry, ParamLinear, WarmupModel
from warmup_core.parameterization import Parameterization
from warmup_core.registry import Option


class ResMLP(WarmupModel):
    """Input layer, `blocks` pre-LN residual blocks h + W2 relu(W1 LN(h)), readout."""

    def __init__(
        self, in_dim: int, out_dim: int, param: Parameterization, *, width: int, blocks: int
    ) -> None:
        super().__init__()
        # ParamLinear takes init, multiplier and learning-rate rules from `param`,
        # so SP, NTP and muP all work on this model.
        self.embed = ParamLinear(in_dim, width, param, "input")
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(blocks))
        self.ups = nn.ModuleList(ParamLinear(width, width, param, "hidden") for _ in range(blocks))
        self.downs = nn.ModuleList(
            ParamLinear(width, width, param, "hidden") for _ in range(blocks)
        )
        self.readout = ParamLinear(width, out_dim, param, "output")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.flatten(1))
        for norm, up, down in zip(self.norms, self.ups, self.downs, strict=True):
            h = h + down(F.relu(up(norm(h))))
        return self.readout(h)


def build_resmlp(
    param: Parameterization, in_shape: tuple[int, ...], out_dim: int, *, width: int, blocks: int
) -> ResMLP:
    """The model builder: parameterization rules, one example's shape, number of classes."""
    return ResMLP(math.prod(in_shape), out_dim, param, width=width, blocks=blocks)


RESMLP = ModelEntry(
    "resmlp",
    build_resmlp,
    {"width": Option(int, 64, minimum=1), "blocks": Option(int, 2, minimum=1)},
    description="residual MLP with LayerNorm",
)


def make_teacher(
    *,
    train_size: int | None,
    test_size: int | None,
    data_dir: str | None,
    standardize: bool,
    seed: int,
    dim: int,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gaussian inputs labelled by the argmax of a random linear teacher (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(dim, num_classes, generator=gen)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, dim, generator=gen)
        return x, (x @ teacher).argmax(dim=1)

    return (*sample(train_size or 512), *sample(test_size or 256))


TEACHER = DatasetEntry(
    "teacher",
    make_teacher,
    {"dim": Option(int, 16, minimum=1), "num_classes": Option(int, 4, minimum=2)},
    description="Gaussian inputs, labels from a random linear teacher",
)
