"""The tool's trial against a plain PyTorch training loop written out here.

The reference is an `nn.Sequential` of `nn.Linear`/`nn.ReLU` trained full batch in float64
by `torch.optim.SGD` (momentum) or `torch.optim.Adam`, with the learning-rate schedule,
the loss and every parameterization multiplier written out below as numbers and
formulas. It shares only the initial weights (copied from the tool's model at init) and
the data with the code under test, so equal loss trajectories (to float64 round-off)
check the tool's loop, schedule, optimizers, parameterizations and step convention at once.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trials import TrialConfig, load_dataset, run_trial
from warmup_core.models import build_model

WIDTH, DEPTH = 32, 3  # input, hidden and output layers: every muP role
IN_DIM, CLASSES = 64, 10  # 8x8 digits
TRAIN = 64
STEPS, WARMUP = 30, 10
ETA_INIT = 0.0
ETA_MIN = 0.001  # cosine decay's floor (an absolute rate)
INIT_SCALE, LAST_INIT_SCALE = 2.0, 1.0
RTOL = 1e-10  # float64 round-off over 30 steps

# (optimizer section of the config, loss, eta_trgt, decay)
RUNS = {
    "sgd-momentum-mse-constant": ({"name": "sgd", "momentum": 0.9}, "mse", 0.05, "constant"),
    "adam-xent-cosine": (
        {"name": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
        "xent",
        0.01,
        "cosine",
    ),
}


# --------------------------------------------------------------------------- the rules, by hand


def _forward_multipliers(parameterization: str) -> list[float]:
    """W_eff = multiplier * w for the input, hidden and output layer.

    SP: 1 everywhere. muP (Kalra & Barkeshli's muLinear / muReadout): input
    sqrt(width / in_dim), hidden sqrt(width / width) = 1, readout 1 / sqrt(width).
    """
    if parameterization == "sp":
        return [1.0, 1.0, 1.0]
    return [math.sqrt(WIDTH / IN_DIM), 1.0, 1.0 / math.sqrt(WIDTH)]


def _weight_lr_multipliers(parameterization: str, optimizer: str) -> list[float]:
    """Per-layer learning-rate multipliers of the weights (biases always 1).

    SGD: 1 everywhere (muP's forward multipliers make one global SGD rate width
    independent). Adam under SP: 1. Adam under muP: each weight entry of W_eff moves by
    about 1 (input) or 1 / fan_in (hidden, readout), so the stored weight's rate is that
    target over the forward multiplier: input sqrt(in_dim / width), hidden 1 / width,
    readout (1 / width) / (1 / sqrt(width)) = 1 / sqrt(width).
    """
    if parameterization == "sp" or optimizer == "sgd":
        return [1.0, 1.0, 1.0]
    return [math.sqrt(IN_DIM / WIDTH), 1.0 / WIDTH, 1.0 / math.sqrt(WIDTH)]


def _rate(t: int, eta_trgt: float, decay: str) -> float:
    """Learning rate of update t (1-based): linear warmup from ETA_INIT over WARMUP updates
    (update WARMUP is the first at eta_trgt), then constant or a cosine from eta_trgt at
    update WARMUP to ETA_MIN at the last update."""
    if t <= WARMUP:
        return ETA_INIT + (eta_trgt - ETA_INIT) * t / WARMUP
    if decay == "constant":
        return eta_trgt
    s = (t - WARMUP) / (STEPS - WARMUP)
    return ETA_MIN + (eta_trgt - ETA_MIN) * (1 + math.cos(math.pi * s)) / 2


def _loss(name: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MSE: half the squared error against one-hot targets, summed over classes, mean over
    examples. xent: softmax cross-entropy, mean over examples."""
    if name == "xent":
        return F.cross_entropy(logits, y)
    return 0.5 * (logits - F.one_hot(y, CLASSES).to(logits.dtype)).pow(2).sum(1).mean()


class _Scale(nn.Module):
    """Multiply the input by a constant: Linear(c * x) has W_eff = c * W."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c * x


# --------------------------------------------------------------------------- the reference


def _config(parameterization: str, run: str) -> TrialConfig:
    optimizer, loss, eta_trgt, decay = RUNS[run]
    return TrialConfig.model_validate(
        {
            "model": {"name": "fcn", "width": WIDTH, "depth": DEPTH},
            "dataset": {"name": "digits", "train_size": TRAIN, "test_size": 32},
            "loss": loss,
            "parameterization": parameterization,
            "init_scale": INIT_SCALE,
            "last_init_scale": LAST_INIT_SCALE,
            "optimizer": optimizer,
            "eta_trgt": eta_trgt,
            "eta_init": ETA_INIT,
            "warmup_steps": WARMUP,
            "decay": decay,
            "eta_min": ETA_MIN,
            "num_steps": STEPS,
            "dtype": "float64",
            "device": "cpu",
            "sharpness_max_iter": 5,  # lambda0 only; it never touches the weights
            "sharpness_tol": 1e-2,
        }
    )


def _reference_net(parameterization: str) -> nn.Sequential:
    """The FCN as a plain Sequential, its weights copied from the tool's model at init."""
    tool = build_model(
        "fcn",
        in_shape=(IN_DIM,),
        out_dim=CLASSES,
        parameterization=parameterization,
        init_scale=INIT_SCALE,
        last_init_scale=LAST_INIT_SCALE,
        seed=0,
        width=WIDTH,
        depth=DEPTH,
    ).to(torch.float64)
    initial = [p.detach().clone() for p in tool.parameters()]  # w0, b0, w1, b1, w2, b2
    dims = [IN_DIM, WIDTH, WIDTH, CLASSES]
    layers: list[nn.Module] = []
    for i, mult in enumerate(_forward_multipliers(parameterization)):
        linear = nn.Linear(dims[i], dims[i + 1], dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(initial[2 * i])
            linear.bias.copy_(initial[2 * i + 1])
        layers += [_Scale(mult), linear] + ([nn.ReLU()] if i < DEPTH - 1 else [])
    return nn.Sequential(*layers)


def _reference_run(parameterization: str, run: str) -> tuple[list[float], list[float], float]:
    """(loss at theta_{t-1}, rate of update t) for t = 1..STEPS, and the loss at the
    initial weights computed before any training."""
    optimizer_section, loss_name, eta_trgt, decay = RUNS[run]
    data = load_dataset("digits", train_size=TRAIN, test_size=32, seed=0)
    x, y = data.x_train.to(torch.float64).flatten(1), data.y_train
    net = _reference_net(parameterization)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    groups = []
    for linear, mult in zip(
        linears, _weight_lr_multipliers(parameterization, optimizer_section["name"]), strict=True
    ):
        groups += [{"params": [linear.weight], "mult": mult}, {"params": [linear.bias], "mult": 1}]
    if optimizer_section["name"] == "sgd":
        opt = torch.optim.SGD(groups, lr=0.0, momentum=optimizer_section["momentum"])
    else:
        betas = (optimizer_section["beta1"], optimizer_section["beta2"])
        opt = torch.optim.Adam(groups, lr=0.0, betas=betas, eps=optimizer_section["eps"])

    with torch.no_grad():
        initial_loss = _loss(loss_name, net(x), y).item()
    losses, rates = [], []
    for t in range(1, STEPS + 1):
        lr = _rate(t, eta_trgt, decay)
        for group in opt.param_groups:
            group["lr"] = lr * group["mult"]
        opt.zero_grad()
        loss = _loss(loss_name, net(x), y)
        losses.append(loss.item())  # at theta_{t-1}: update t has not been taken yet
        rates.append(lr)
        loss.backward()
        opt.step()
    return losses, rates, initial_loss


# --------------------------------------------------------------------------- the comparison


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("parameterization", ["sp", "mup"])
def test_trial_follows_the_plain_pytorch_loop_to_round_off(parameterization, run):
    config = _config(parameterization, run)
    result = run_trial(config)
    expected_losses, expected_rates, initial_loss = _reference_run(parameterization, run)

    assert result.status in ("completed", "stuck"), result.summary
    assert result.steps["step"] == list(range(1, STEPS + 1))
    assert result.steps["lr"] == pytest.approx(expected_rates, rel=1e-14, abs=0)
    # Row t holds the loss at the parameters update t starts from: row 1 is the loss at init.
    assert result.steps["train_loss"][0] == pytest.approx(initial_loss, rel=1e-12)
    assert result.steps["train_loss"] == pytest.approx(expected_losses, rel=RTOL, abs=0)
    # The loss moved far beyond RTOL: equal trajectories are a real check, not the init twice.
    assert abs(expected_losses[-1] - expected_losses[0]) > 1e-3 * expected_losses[0]
