"""Hessian trace and spectral density checked against dense Hessians of tiny models."""

from __future__ import annotations

import pytest
import torch

from tests.core.tiny_problems import dense_hessian, make_problem
from warmup_core.spectrum import hessian_trace, spectral_density, trace_estimate


def test_hutchinson_trace_error_bar_is_informative_on_the_mlp():
    loss_fn, params = make_problem("mlp", "xent")
    exact = float(dense_hessian(loss_fn, params).trace())
    gen = torch.Generator().manual_seed(1)
    est = trace_estimate(loss_fn, params, num_samples=100, generator=gen)
    assert est.stderr < 0.2 * abs(exact) and abs(est.trace - exact) <= 4 * est.stderr


def test_hutchinson_trace_is_exact_for_a_diagonal_hessian():
    diag = torch.linspace(-2.0, 5.0, 30, dtype=torch.float64)
    loss_fn = lambda p: 0.5 * (diag * p["x"] ** 2).sum()  # noqa: E731
    params = {"x": torch.randn(30, dtype=torch.float64)}
    est = trace_estimate(loss_fn, params, num_samples=3)
    assert est.trace == pytest.approx(float(diag.sum()), rel=1e-12) and est.num_hvps == 3
    trace = hessian_trace(loss_fn, params, num_samples=3)
    assert isinstance(trace, float) and trace == pytest.approx(float(diag.sum()), rel=1e-12)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_hutchinson_trace_agrees_with_dense_trace_within_error(kind):
    loss_fn, params = make_problem(kind, "xent")
    exact = float(dense_hessian(loss_fn, params).trace())
    gen = torch.Generator().manual_seed(0)
    est = trace_estimate(loss_fn, params, num_samples=200, generator=gen, dtype=torch.float64)
    assert abs(est.trace - exact) <= 4 * est.stderr


def test_spectral_density_is_normalized_and_recovers_extreme_eigenvalues():
    loss_fn, params = make_problem("mlp", "mse")
    eig = torch.linalg.eigvalsh(dense_hessian(loss_fn, params))
    dim = eig.numel()
    gen = torch.Generator().manual_seed(0)
    sd = spectral_density(
        loss_fn, params, num_probes=2, num_steps=dim, dtype=torch.float64, generator=gen
    )
    area = float(((sd.density[1:] + sd.density[:-1]) / 2 * (sd.grid[1] - sd.grid[0])).sum())
    assert area == pytest.approx(1.0, abs=1e-3)
    for nodes, weights in zip(sd.nodes, sd.weights, strict=True):
        assert weights.sum() == pytest.approx(1.0, abs=1e-10)
        assert nodes.max() == pytest.approx(float(eig[-1]), rel=1e-6)
        assert nodes.min() == pytest.approx(float(eig[0]), rel=1e-6, abs=1e-8)
    assert sd.num_hvps <= 2 * dim
