"""Sharpness: the top Hessian eigenvalues of a loss, plain or pre-conditioned.

Lanczos (:mod:`warmup_core.lanczos`) on Hessian-vector products
(:mod:`warmup_core.hvp`, whose module docstring states the ``params``/``loss_fn``
conventions). :func:`sharpness` and :func:`preconditioned_sharpness` return the top
eigenvalue as a float; :func:`top_eigenpairs` and :func:`preconditioned_eigenpairs`
return the :class:`EigenResult` (eigenvectors, the next run's warm start, cost,
convergence); :func:`block_sharpness` measures K stacked independent losses at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from warmup_core.hvp import DEFAULT_HVP_METHOD, BlockHVPOperator, HVPOperator, LossFn, Params
from warmup_core.lanczos import MatVec, batched_lanczos, lanczos

__all__ = [
    "EigenResult",
    "block_sharpness",
    "preconditioned_eigenpairs",
    "preconditioned_sharpness",
    "sharpness",
    "top_eigenpairs",
]


@dataclass(frozen=True)
class EigenResult:
    """Top eigenpairs of a curvature operator, with the cost of computing them.

    ``eigenvectors`` has shape (dim, k) in the flat parameter layout (dict key order).
    To track the spectrum as it changes, pass ``warm_start`` (those vectors and a
    crossing detector, see :mod:`warmup_core.lanczos`) as ``v0`` of the next measurement.
    """

    eigenvalues: tuple[float, ...]
    eigenvectors: Tensor
    num_hvps: int
    converged: bool
    residuals: tuple[float, ...]
    warm_start: Tensor

    @property
    def top(self) -> float:
        """The largest eigenvalue."""
        return self.eigenvalues[0]


def top_eigenpairs(
    loss_fn: LossFn | Sequence[LossFn],
    params: Params,
    k: int = 1,
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: Tensor | Params | None = None,
    dtype: torch.dtype | None = None,
    method: str = DEFAULT_HVP_METHOD,
    generator: torch.Generator | None = None,
) -> EigenResult:
    """Top-k Hessian eigenpairs of ``loss_fn`` at ``params`` (Lanczos on HVPs).

    Args:
        loss_fn: ``params -> scalar loss``, or a sequence of them (their mean's Hessian).
        params: the point, a dict of floating-point tensors.
        k: how many of the largest eigenvalues to find.
        tol: relative accuracy of each eigenvalue at which Lanczos stops.
        max_iter: most HVPs.
        v0: warm start: a previous result's ``warm_start`` (dim, m), a flat vector, or a
            dict shaped like ``params`` (see :func:`warmup_core.lanczos.lanczos`).
        dtype: compute in this dtype (e.g. float64 for a reference) instead of params'.
        method: how HVPs are computed, one of ``hvp.HVP_METHODS``.
        generator: source of the random start vector.
    """
    op = HVPOperator(loss_fn, params, method=method, dtype=dtype)
    return _eigen_result(op, op, k, tol, max_iter, _as_flat_v0(v0, op), generator)


def sharpness(
    loss_fn: LossFn | Sequence[LossFn],
    params: Params,
    *,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: Tensor | Params | None = None,
    dtype: torch.dtype | None = None,
    method: str = DEFAULT_HVP_METHOD,
    generator: torch.Generator | None = None,
) -> float:
    """Top Hessian eigenvalue ``lambda_H`` of ``loss_fn`` at ``params``.

    Takes :func:`top_eigenpairs`' options (``k > 1`` makes Lanczos also resolve the
    next eigenvalues before it stops); use that function for the eigenvectors.
    """
    return top_eigenpairs(
        loss_fn,
        params,
        k,
        tol=tol,
        max_iter=max_iter,
        v0=v0,
        dtype=dtype,
        method=method,
        generator=generator,
    ).top


def preconditioned_eigenpairs(
    loss_fn: LossFn | Sequence[LossFn],
    params: Params,
    precond: Params,
    k: int = 1,
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: Tensor | Params | None = None,
    dtype: torch.dtype | None = None,
    method: str = DEFAULT_HVP_METHOD,
    generator: torch.Generator | None = None,
) -> EigenResult:
    """Top-k eigenpairs of ``P^-1 H``, ``P = diag(precond)``, via ``P^-1/2 H P^-1/2``.

    ``precond`` is a dict of strictly positive tensors shaped like ``params``; for Adam,
    ``precond = (1 - beta1**t) * (sqrt(v_hat) + eps)`` per parameter. The eigenvalues
    are those of ``P^-1 H``; the eigenvectors are those of the symmetric form. Other
    options as in :func:`top_eigenpairs`.
    """
    op = HVPOperator(loss_fn, params, method=method, dtype=dtype)
    _check_precond(precond, params)
    d_inv_sqrt = op.flatten(precond).rsqrt()

    def matvec(v: Tensor) -> Tensor:
        return d_inv_sqrt * op(d_inv_sqrt * v)

    return _eigen_result(op, matvec, k, tol, max_iter, _as_flat_v0(v0, op), generator)


def preconditioned_sharpness(
    loss_fn: LossFn | Sequence[LossFn],
    params: Params,
    precond: Params,
    *,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: Tensor | Params | None = None,
    dtype: torch.dtype | None = None,
    method: str = DEFAULT_HVP_METHOD,
    generator: torch.Generator | None = None,
) -> float:
    """Top eigenvalue of ``P^-1 H``, ``P = diag(precond)``: the pre-conditioned sharpness.

    Takes :func:`preconditioned_eigenpairs`' options.
    """
    return preconditioned_eigenpairs(
        loss_fn,
        params,
        precond,
        k,
        tol=tol,
        max_iter=max_iter,
        v0=v0,
        dtype=dtype,
        method=method,
        generator=generator,
    ).top


def block_sharpness(
    op: BlockHVPOperator,
    *,
    precond: Params | None = None,
    active: Sequence[bool] | None = None,
    v0: Sequence[Tensor | None] | None = None,
    generators: Sequence[torch.Generator | None] | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
) -> tuple[list[float], list[Tensor | None]]:
    """Top eigenvalue and warm start for the next measurement (see
    :class:`EigenResult`) of every active block of ``op``, or of ``P_i^-1/2 H_i P_i^-1/2``
    (same spectrum as ``P_i^-1 H_i``) with ``precond``. Inactive rows give NaN and None.

    Args:
        op: the K blocks (members).
        precond: the stacked diagonals P, (K, ...) tensors shaped like op's params.
        active: which members to measure (default all).
        v0: one warm start (a previous warm start, or a flat vector of the member's
            layout) or None per member.
        generators: one random source (or None) per member.
        tol, max_iter: as in :func:`top_eigenpairs`, for every member.
    """
    d_inv_sqrt = None if precond is None else op.flatten(precond).rsqrt()

    def matvec(v: Tensor, rows: list[int]) -> Tensor:
        if d_inv_sqrt is None:
            return op.apply_rows(v, rows)
        d = d_inv_sqrt[rows]
        return d * op.apply_rows(d * v, rows)

    values, _, infos = batched_lanczos(
        matvec,
        op.dim,
        op.k,
        max_iter=max_iter,
        tol=tol,
        v0=v0,
        active=active,
        dtype=op.dtype,
        device=op.device,
        generators=generators,
        by_rows=True,
    )
    return values[:, 0].tolist(), [None if i is None else i.warm_start for i in infos]


def _as_flat_v0(v0: Tensor | Params | None, op: HVPOperator) -> Tensor | None:
    if v0 is None or isinstance(v0, Tensor):
        return v0
    return op.flatten(v0)


def _check_precond(precond: Params, params: Params) -> None:
    if not isinstance(precond, Mapping):
        raise ValueError("precond must be a dict of tensors shaped like params")
    if set(precond) != set(params):
        missing, extra = set(params) - set(precond), set(precond) - set(params)
        raise ValueError(
            f"precond keys must match params keys: missing {sorted(missing)}, "
            f"unexpected {sorted(extra)}"
        )
    for name, p in params.items():
        d = precond[name]
        if not isinstance(d, Tensor) or d.shape != p.shape:
            shape = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
            raise ValueError(f"precond[{name!r}] must have shape {tuple(p.shape)}, got {shape}")
        if not bool(torch.isfinite(d).all()) or not bool((d > 0).all()):
            raise ValueError(f"precond[{name!r}] must be finite and strictly positive")


def _eigen_result(
    op: HVPOperator,
    matvec: MatVec,
    k: int,
    tol: float,
    max_iter: int,
    v0: Tensor | None,
    generator: torch.Generator | None,
) -> EigenResult:
    values, vectors, info = lanczos(
        matvec,
        op.dim,
        k,
        max_iter=max_iter,
        tol=tol,
        v0=v0,
        dtype=op.dtype,
        device=op.device,
        generator=generator,
    )
    return EigenResult(
        eigenvalues=tuple(float(x) for x in values),
        eigenvectors=vectors,
        num_hvps=info.num_matvecs,
        converged=info.converged,
        residuals=info.residuals,
        warm_start=info.warm_start,
    )
