"""Tiny models and operators whose Hessians are formed densely: the references the
curvature tests compare HVP-based measurements with."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from warmup_core.hvp import flatten_params, model_loss_fn, unflatten_params


def half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Written out rather than F.mse_loss: torch.func.jvp-of-grad trips over
    # F.mse_loss's backward (ZeroTensor error) in torch 2.13, and the "jvp" method is tested.
    return 0.5 * ((out - y) ** 2).sum(dim=-1).mean()


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return self.head(x.flatten(1))


def make_problem(kind: str, loss: str, seed: int = 0):
    """A tiny model, a batch and its loss_fn; returns (loss_fn, params)."""
    torch.manual_seed(seed)
    if kind == "mlp":
        model = nn.Sequential(
            nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3)
        )
        x = torch.randn(40, 6)
    else:
        model = TinyCNN()
        x = torch.randn(24, 2, 6, 6)
    if loss == "mse":
        y = torch.randn(x.shape[0], 3)
        criterion = half_mse
    else:
        y = torch.randint(0, 3, (x.shape[0],))
        criterion = F.cross_entropy
    params = {k: v.detach() for k, v in model.named_parameters()}
    return model_loss_fn(model, criterion, x, y), params


def dense_hessian(loss_fn, params) -> torch.Tensor:
    """Float64 Hessian of loss_fn on the flat parameter vector (the reference)."""
    p64 = {k: v.double() for k, v in params.items()}
    flat = flatten_params(p64)
    # vectorize=True is 30x slower on the CNN's double backward through conv.
    return torch.autograd.functional.hessian(lambda f: loss_fn(unflatten_params(f, p64)), flat)


def symmetric(dim: int, seed: int) -> torch.Tensor:
    """A random symmetric float64 matrix with a spread-out spectrum."""
    a = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (a + a.T) / 2 + torch.diag(torch.linspace(0, 5 + seed, dim, dtype=torch.float64))


def rel_err(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


CASES = [("mlp", "mse"), ("mlp", "xent"), ("cnn", "mse"), ("cnn", "xent")]
