"""The tool's trial against a plain PyTorch training loop written here.

The reference shares only the data and the initial weights with the trial. Everything
else is written out independently: an `nn.Sequential` FCN (Linear/ReLU) whose layers
apply muP's forward multipliers by hand, `torch.optim.SGD` (momentum) and
`torch.optim.Adam` with muP's per-layer learning rates as parameter groups, the MSE loss
(half the squared error summed over classes, mean over the batch) and the schedule
(linear warmup from 0, then cosine decay to `eta_min`). In float64 the loss the trial
records at every update must equal the reference's to round-off.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trials import Problem, TrialConfig, run_trial

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIDTH, DEPTH, STEPS, WARMUP, ETA_MIN_FRACTION = 16, 3, 25, 6, 0.1


def config(parameterization: str, optimizer: dict, eta: float) -> TrialConfig:
    return TrialConfig.model_validate(
        {
            "model": {"name": "fcn", "width": WIDTH, "depth": DEPTH},
            "dataset": {"name": "digits", "train_size": 96, "test_size": 32},
            "loss": "mse",
            "parameterization": parameterization,
            "optimizer": optimizer,
            "eta_trgt": eta,
            "warmup_steps": WARMUP,
            "decay": "cosine",
            "eta_min": ETA_MIN_FRACTION * eta,
            "num_steps": STEPS,
            "dtype": "float64",
            "device": "cpu",
            "stuck_accuracy_factor": 0.01,  # a short run need not learn for this test
        }
    )


def rate(t: int, eta: float) -> float:
    """Update t's rate (1-based): linear warmup over WARMUP updates, then cosine decay."""
    if t <= WARMUP:
        return eta * t / WARMUP
    progress = (t - WARMUP) / (STEPS - WARMUP)
    eta_min = ETA_MIN_FRACTION * eta
    return eta_min + (eta - eta_min) * (1 + math.cos(math.pi * progress)) / 2


def forward_multipliers(parameterization: str, dims: list[int]) -> list[float]:
    """W_eff = multiplier * w per layer. SP: 1. muP (the paper's `muLinear` and
    `muReadout`): sqrt(fan_out / fan_in) for the input and hidden layers, 1 / sqrt(fan_in)
    for the readout."""
    if parameterization == "sp":
        return [1.0] * (len(dims) - 1)
    pairs = list(itertools.pairwise(dims))
    return [math.sqrt(o / i) for i, o in pairs[:-1]] + [1 / math.sqrt(pairs[-1][0])]


def adam_lr_multipliers(parameterization: str, dims: list[int]) -> list[float]:
    """muP with Adam: each layer's effective per-entry update is 1 (input) or 1/fan_in
    (hidden, readout), so the stored weight's rate is that over its multiplier. SP: 1."""
    mults = forward_multipliers(parameterization, dims)
    if parameterization == "sp":
        return [1.0] * len(mults)
    targets = [1.0] + [1 / fan_in for fan_in in dims[1:-1]]
    return [target / m for target, m in zip(targets, mults, strict=True)]


class Scaled(nn.Module):
    """`nn.Linear` with a forward multiplier on its weight: y = x (m w)^T + b."""

    def __init__(self, linear: nn.Linear, multiplier: float) -> None:
        super().__init__()
        self.linear, self.multiplier = linear, multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.multiplier * self.linear.weight, self.linear.bias)


def reference_losses(c: TrialConfig, optimizer: str) -> list[float]:
    problem = Problem(c)  # the data and the initial weights: all the reference shares
    x, y = problem.x_train.flatten(1), problem.y_train
    initial = list(problem.build_model(c.init_seed).parameters())
    dims = [x.shape[1]] + [WIDTH] * (DEPTH - 1) + [problem.num_classes]
    multipliers = forward_multipliers(c.parameterization, dims)
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        linear = nn.Linear(d_in, d_out, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(initial[2 * i])
            linear.bias.copy_(initial[2 * i + 1])
        layers += [Scaled(linear, multipliers[i]), nn.ReLU()]
    net = nn.Sequential(*layers[:-1])
    linears = [layer.linear for layer in layers[::2]]
    if optimizer == "sgd":
        groups = [{"params": list(net.parameters()), "scale": 1.0}]
        opt = torch.optim.SGD(groups, lr=0.0, momentum=0.9)
    else:
        scales = adam_lr_multipliers(c.parameterization, dims)
        groups = [
            {"params": [lin.weight], "scale": s} for lin, s in zip(linears, scales, strict=True)
        ]
        groups += [{"params": [lin.bias], "scale": 1.0} for lin in linears]
        opt = torch.optim.Adam(groups, lr=0.0, betas=(0.9, 0.999), eps=1e-8)
    target = F.one_hot(y, problem.num_classes).to(torch.float64)
    losses = []
    for t in range(1, STEPS + 1):
        loss = 0.5 * (net(x) - target).pow(2).sum(-1).mean()
        losses.append(loss.item())  # the loss at the parameters update t starts from
        opt.zero_grad()
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = rate(t, c.eta_trgt) * group["scale"]
        opt.step()
    return losses


CASES = [
    ("sp", {"name": "sgd", "momentum": 0.9}, 0.05),
    ("mup", {"name": "sgd", "momentum": 0.9}, 0.05),
    ("sp", {"name": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}, 1e-3),
    ("mup", {"name": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}, 1e-3),
]


@pytest.mark.parametrize(("parameterization", "optimizer", "eta"), CASES)
def test_the_trials_losses_are_a_plain_torch_loops(parameterization, optimizer, eta):
    c = config(parameterization, optimizer, eta)
    result = run_trial(c)
    assert result.status == "completed", result.summary.get("error")
    assert result.steps["lr"] == pytest.approx(
        [rate(t, eta) for t in range(1, STEPS + 1)], rel=1e-12
    )
    want = reference_losses(c, optimizer["name"])
    assert result.steps["train_loss"] == pytest.approx(want, rel=1e-10)
    assert want[-1] < want[0]  # it trained: the comparison is not of two constant curves
