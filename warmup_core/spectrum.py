"""The Hessian spectrum beyond its top: trace (Hutchinson) and eigenvalue density
(stochastic Lanczos quadrature), from Hessian-vector products
(:mod:`warmup_core.hvp`, whose module docstring states the conventions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from warmup_core.checks import check_positive
from warmup_core.hvp import DEFAULT_HVP_METHOD, HVPOperator, LossFn, Params
from warmup_core.lanczos import lanczos_tridiagonal, tridiagonal_matrix

__all__ = [
    "SpectralDensity",
    "TraceEstimate",
    "hessian_trace",
    "spectral_density",
    "trace_estimate",
]


def _rademacher(dim: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    signs = torch.randint(0, 2, (dim,), generator=generator, dtype=torch.int8)
    return (signs.to(like.dtype) * 2 - 1).to(like.device)


# --------------------------------------------------------------------------------------
# Trace


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimate of tr(H) with its standard error."""

    trace: float
    stderr: float
    num_hvps: int


def trace_estimate(
    loss_fn: LossFn | Sequence[LossFn],
    params: Params,
    *,
    num_samples: int = 100,
    dtype: torch.dtype | None = None,
    method: str = DEFAULT_HVP_METHOD,
    generator: torch.Generator | None = None,
) -> TraceEstimate:
    """Hutchinson estimate of tr(H): mean of ``z^T H z`` over ``num_samples`` Rademacher
    ``z``, with its standard error (inf for one sample). ``dtype``, ``method`` and
    ``generator`` (of the probes) as in :func:`warmup_core.curvature.top_eigenpairs`."""
    check_positive("num_samples", num_samples, integer=True)
    op = HVPOperator(loss_fn, params, method=method, dtype=dtype)
    probe = next(iter(op.params.values()))
    samples = []
    for _ in range(int(num_samples)):
        z = _rademacher(op.dim, generator, probe)
        samples.append(float(z @ op(z)))
    values = np.asarray(samples)
    stderr = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.inf
    return TraceEstimate(trace=float(values.mean()), stderr=stderr, num_hvps=op.num_hvps)


def hessian_trace(
    loss_fn: LossFn | Sequence[LossFn],
    params: Params,
    *,
    num_samples: int = 100,
    dtype: torch.dtype | None = None,
    method: str = DEFAULT_HVP_METHOD,
    generator: torch.Generator | None = None,
) -> float:
    """Hutchinson estimate of tr(H); :func:`trace_estimate` gives its standard error."""
    return trace_estimate(
        loss_fn, params, num_samples=num_samples, dtype=dtype, method=method, generator=generator
    ).trace


# --------------------------------------------------------------------------------------
# Spectral density


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of the Hessian spectrum.

    ``nodes[i]``/``weights[i]`` are the Gauss quadrature nodes (Ritz values) and weights
    (summing to 1) of probe ``i``; ``grid``/``density`` is their Gaussian-broadened
    average, a probability density over eigenvalues (integrates to about 1).
    """

    nodes: list[np.ndarray]
    weights: list[np.ndarray]
    grid: np.ndarray
    density: np.ndarray
    num_hvps: int

    def broadened(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        """Density on ``grid`` with Gaussian kernels of width ``sigma`` at every node."""
        return _broaden(self.nodes, self.weights, grid, sigma)


def _broaden(
    all_nodes: Sequence[np.ndarray], all_weights: Sequence[np.ndarray], grid, sigma: float
) -> np.ndarray:
    grid = np.asarray(grid, dtype=np.float64)
    out = np.zeros_like(grid)
    for nodes, weights in zip(all_nodes, all_weights, strict=True):
        z = (grid[:, None] - nodes[None, :]) / sigma
        out += (weights[None, :] * np.exp(-0.5 * z**2)).sum(axis=1)
    return out / (len(all_nodes) * sigma * math.sqrt(2 * math.pi))


def spectral_density(
    loss_fn: LossFn | Sequence[LossFn],
    params: Params,
    *,
    num_probes: int = 4,
    num_steps: int = 64,
    grid_size: int = 512,
    sigma: float | None = None,
    dtype: torch.dtype | None = None,
    method: str = DEFAULT_HVP_METHOD,
    generator: torch.Generator | None = None,
) -> SpectralDensity:
    """Hessian eigenvalue density by stochastic Lanczos quadrature.

    Args:
        loss_fn, params: the loss and point, as in
            :func:`warmup_core.curvature.top_eigenpairs`.
        num_probes: Rademacher start vectors; the density averages over them.
        num_steps: Lanczos steps (HVPs) per probe, capped at the dimension.
        grid_size: points of the returned ``grid``.
        sigma: Gaussian broadening width in eigenvalue units; defaults to 1% of the
            spectral range. The grid spans the range padded by ``5 sigma``.
        dtype, method: as in :func:`warmup_core.curvature.top_eigenpairs`.
        generator: source of the probes.
    """
    check_positive("num_probes", num_probes, integer=True)
    check_positive("num_steps", num_steps, integer=True)
    check_positive("grid_size", grid_size, integer=True)
    if sigma is not None:
        check_positive("sigma", sigma)
    op = HVPOperator(loss_fn, params, method=method, dtype=dtype)
    probe = next(iter(op.params.values()))
    all_nodes, all_weights = [], []
    for _ in range(int(num_probes)):
        z = _rademacher(op.dim, generator, probe)
        alphas, betas = lanczos_tridiagonal(op, z / z.norm(), min(int(num_steps), op.dim))
        theta, s = np.linalg.eigh(tridiagonal_matrix(alphas, betas))
        all_nodes.append(theta)
        all_weights.append(s[0] ** 2)
    lo = min(float(n.min()) for n in all_nodes)
    hi = max(float(n.max()) for n in all_nodes)
    width = sigma if sigma is not None else max(0.01 * (hi - lo), 1e-12 * max(abs(hi), 1.0))
    grid = np.linspace(lo - 5 * width, hi + 5 * width, int(grid_size))
    density = _broaden(all_nodes, all_weights, grid, width)
    return SpectralDensity(all_nodes, all_weights, grid, density, op.num_hvps)
