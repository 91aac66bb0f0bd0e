"""Lanczos eigensolvers for symmetric operators given only as matrix-vector products.

:func:`lanczos` finds the top-k eigenpairs of one operator; :func:`batched_lanczos`
runs one Lanczos per row of a block operator, all rows sharing each block product
(e.g. one HVP of a sum of independent losses). Both keep the whole Krylov basis and
reorthogonalize fully, so top-k stays reliable at a memory cost of ``steps * dim``
numbers per row. :func:`lanczos_tridiagonal` and :func:`tridiagonal_matrix` expose
the bare recurrence for quadrature (spectral density) and benchmarks.

Tracking a spectrum that changes (sharpness during training) warm-starts each run
from the previous one's :attr:`LanczosInfo.warm_start`: its top-k Ritz vectors and the
next one, a crossing detector. The start vector is the top-k vectors' sum plus the
detector at relative weight :func:`detector_weight`: when the eigenvalue below the
top k has since risen above them, the start's residual along the detector keeps
Lanczos going until it has found the new top eigenvalue.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from warmup_core.checks import check_positive

__all__ = [
    "LanczosInfo",
    "MatVec",
    "batched_lanczos",
    "detector_weight",
    "lanczos",
    "lanczos_tridiagonal",
    "tridiagonal_matrix",
]

MatVec = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class LanczosInfo:
    """Bookkeeping from one Lanczos run, and the warm start for the next one.

    ``warm_start`` (dim, k + 1): the top-k unit Ritz vectors, then the crossing detector
    (the next Ritz vector, or the previous detector when the basis had only k vectors);
    (dim, k) when there was neither.
    """

    num_matvecs: int
    iterations: int
    converged: bool
    residuals: tuple[float, ...]  # Ritz residual bounds |beta_m * s_last,i| of the top-k
    warm_start: Tensor


def detector_weight(tol: float) -> float:
    """Relative weight of the crossing detector in a warm start: sqrt(tol), at most 0.1.

    After an eigenvalue crossing, the detector (the previous next-to-top Ritz vector)
    lies along the new top eigenvector, and the start vector's residual along it is
    about weight x gap. Lanczos stops only at residuals below ``tol`` x eigenvalue, so it
    goes on and finds the new top eigenvalue whenever the relative gap exceeds
    tol / weight = sqrt(tol); a smaller gap is within sqrt(tol) of the value returned.
    Without a crossing the detector costs about one product.
    """
    return min(0.1, math.sqrt(tol))


# --------------------------------------------------------------------------------------
# The bare recurrence


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    # Two passes of classical Gram-Schmidt ("twice is enough") keep the basis
    # orthogonal to working precision, which is what makes top-k reliable.
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def lanczos_tridiagonal(matvec: MatVec, q: Tensor, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The Lanczos tridiagonal ``(alphas, betas)`` of up to ``steps`` steps from the unit
    vector ``q``, with full reorthogonalization, stopping early at breakdown (an
    invariant subspace: exactly what Gauss quadrature needs). ``alphas`` has the m
    diagonal entries, ``betas`` the m - 1 off-diagonal ones."""
    basis = torch.empty((steps, q.numel()), dtype=q.dtype, device=q.device)
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    for m in range(steps):
        basis[m] = q
        w = matvec(q)
        alpha = float(q @ w)
        w = w - alpha * q - (betas[-1] * basis[m - 1] if m else 0.0)
        w = _orthogonalize(w, basis[: m + 1])
        beta = float(w.norm())
        alphas.append(alpha)
        scale = max(scale, abs(alpha), beta)
        if m + 1 == steps or beta <= 1e3 * torch.finfo(q.dtype).eps * max(scale, 1e-30):
            break
        betas.append(beta)
        q = w / beta
    return np.array(alphas), np.array(betas)


def tridiagonal_matrix(alphas: Sequence[float], betas: Sequence[float]) -> np.ndarray:
    """The symmetric tridiagonal matrix (float64) with diagonal ``alphas`` and
    off-diagonal ``betas`` (entries past ``len(alphas) - 1`` ignored)."""
    m = len(alphas)
    t = np.diag(np.asarray(alphas, dtype=np.float64))
    off = np.asarray(betas[: m - 1], dtype=np.float64)
    return t + np.diag(off, 1) + np.diag(off, -1)


# --------------------------------------------------------------------------------------
# Top-k eigenpairs


def lanczos(
    matvec: MatVec,
    dim: int,
    k: int = 1,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    v0: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, LanczosInfo]:
    """Top-k eigenpairs (largest algebraic eigenvalues) of a symmetric operator.

    Returns ``(eigenvalues, eigenvectors, info)``: eigenvalues float64 of shape (k,),
    descending; eigenvectors of shape (dim, k) in ``dtype``, unit norm. Stops when every
    top-k Ritz value has residual bound ``|beta_m * s_last,i| <= tol * |theta_i|``, which
    guarantees an eigenvalue within relative ``tol`` of each. The basis is kept for full
    reorthogonalization, so memory is ``max_iter * dim`` numbers.

    Args:
        matvec: ``v -> A v`` for a flat vector of length ``dim``.
        dim: length of the vectors the operator acts on.
        k: how many of the largest eigenvalues to return (at most ``dim``).
        max_iter: most Lanczos steps (matvecs), at least ``k``; capped at ``dim``.
        tol: relative accuracy of every top-k eigenvalue at which to stop.
        v0: warm start, shape (dim,) (that vector), or (dim, m) such as a previous
            ``warm_start``: the first k columns summed (each normalized), the others
            (crossing detectors) added at relative weight :func:`detector_weight`.
            Random start when None.
        dtype: dtype of the Krylov basis and returned eigenvectors.
        device: device of the Krylov basis.
        generator: source of the random start vector and of breakdown restarts.
    """
    # One Lanczos: a batch of one. Timed against a dedicated single-vector version on an
    # MLP-512 HVP (2 loaded CPU cores): equal within noise, the HVP dominates.
    values, vectors, infos = batched_lanczos(
        lambda q: matvec(q[0])[None],
        dim,
        1,
        k,
        max_iter=max_iter,
        tol=tol,
        v0=None if v0 is None else [v0],
        dtype=dtype,
        device=device,
        generators=[generator],
    )
    return values[0], vectors[0], infos[0]


def batched_lanczos(
    matvec: MatVec,
    dim: int,
    batch: int,
    k: int = 1,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    v0: Tensor | Sequence[Tensor | None] | None = None,
    active: Sequence[bool] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generators: Sequence[torch.Generator | None] | None = None,
    by_rows: bool = False,
) -> tuple[Tensor, Tensor, list[LanczosInfo | None]]:
    """Top-k eigenpairs of `batch` independent symmetric operators, one shared matvec per step.

    Each row runs :func:`lanczos` with its own start vector and generator and the same
    stopping rule; a row that has converged (or is not active) takes no further part.
    Returns eigenvalues (batch, k) float64, descending, eigenvectors (batch, dim, k) and
    one :class:`LanczosInfo` per row (None and NaN eigenvalues for inactive rows).

    Args:
        matvec: maps a (batch, dim) block to (batch, dim), applying operator ``i`` to
            row ``i`` (e.g. one HVP of a sum of independent losses, whose Hessian is
            block diagonal). Rows that stopped are fed zeros; with ``by_rows`` it is
            called as ``matvec(v, rows)`` on the running rows only (their indices in
            ``rows``), so an operator can skip the others' work.
        dim: length of each row.
        batch: number of operators (rows).
        k, max_iter, tol: as in :func:`lanczos`, for every row.
        v0: one warm start (or None) per row, each as :func:`lanczos`'s ``v0``.
        active: which rows to solve (default all).
        dtype, device: of the Krylov bases and returned eigenvectors.
        generators: one random source (or None) per row; a row draws its numbers in
            the same order as :func:`lanczos`, so with the same generator it
            reproduces it.
        by_rows: call ``matvec(v, rows)`` with the running rows only (see ``matvec``).
    """
    steps = _solver_steps(dim, batch, k, max_iter, tol)
    active = [True] * batch if active is None else [bool(a) for a in active]
    generators = [None] * batch if generators is None else list(generators)
    starts = [None] * batch if v0 is None else list(v0)
    if len(active) != batch or len(generators) != batch or len(starts) != batch:
        raise ValueError(f"active, generators and v0 must have {batch} entries")
    rows = [_Row(active=a, running=a, generator=g) for a, g in zip(active, generators, strict=True)]
    q = torch.zeros((batch, dim), dtype=dtype, device=device)
    for i, row in enumerate(rows):
        if row.active:
            q[i], row.detector = _start_vector(starts[i], dim, k, dtype, device, row.generator, tol)
    basis = _iterate(matvec, q, rows, steps=steps, k=k, tol=tol, by_rows=by_rows)
    return _ritz_pairs(basis, rows, k)


def _solver_steps(dim: int, batch: int, k: int, max_iter: int, tol: float) -> int:
    """The step budget ``min(max_iter, dim)``, after checking the solver options."""
    check_positive("k", k, integer=True)
    check_positive("max_iter", max_iter, integer=True)
    check_positive("tol", tol)
    check_positive("dim", dim, integer=True)
    check_positive("batch", batch, integer=True)
    if k > dim:
        raise ValueError(f"k must be at most dim={dim}, got {k}")
    steps = min(int(max_iter), dim)
    if steps < k:
        raise ValueError(f"max_iter must be at least k={k}, got {max_iter}")
    return steps


def _start_vector(
    v0: Tensor | None,
    dim: int,
    k: int,
    dtype: torch.dtype,
    device,
    generator: torch.Generator | None,
    tol: float,
) -> tuple[Tensor, Tensor | None]:
    """The unit start vector from ``v0`` (see :func:`lanczos`), and its unit crossing
    detector (orthogonal to the wanted vectors), None without one."""
    if v0 is None:
        q = torch.randn(dim, generator=generator, dtype=torch.float64).to(device, dtype)
        return q / q.norm(), None
    v0 = torch.as_tensor(v0).detach().to(device=device, dtype=dtype)
    if v0.dim() == 1:
        v0 = v0[:, None]
    if v0.dim() != 2 or v0.shape[0] != dim:
        raise ValueError(f"v0 must have shape ({dim},) or ({dim}, m), got {tuple(v0.shape)}")
    norms = v0.norm(dim=0)
    if not bool(torch.isfinite(norms).all()) or not bool((norms[:k] > 0).any()):
        raise ValueError("v0 must be finite, with a non-zero vector among its first k columns")
    unit = v0 / norms.clamp_min(1e-30)
    # The wanted vectors: their sum's Krylov space contains each after a few steps.
    q = unit[:, :k].sum(dim=1)
    q = q / q.norm()
    detector = unit[:, k:].sum(dim=1) if v0.shape[1] > k else None
    if detector is not None:
        detector = _orthogonalize(detector, torch.linalg.qr(unit[:, :k])[0].T)
        norm = detector.norm()
        detector = detector / norm if norm > 1e-3 else None  # nothing left beside the top k
    if detector is not None:
        q = q + detector_weight(tol) * detector
    return q / q.norm(), detector


@dataclass
class _Row:
    """One row's Lanczos: its tridiagonal so far and whether (and why) it stopped."""

    active: bool
    running: bool
    generator: torch.Generator | None
    alphas: list[float] = field(default_factory=list)
    betas: list[float] = field(default_factory=list)
    beta_last: float = 0.0  # the latest beta, for the residual bounds
    scale: float = 0.0  # largest |alpha| or beta seen: the breakdown threshold's scale
    converged: bool = False
    used: int = 0  # basis vectors (= matvecs) used
    detector: Tensor | None = None  # the start's unit crossing detector


def _iterate(
    matvec: Callable, q: Tensor, rows: list[_Row], *, steps: int, k: int, tol: float, by_rows: bool
) -> Tensor:
    """Lanczos steps on every running row from the unit start vectors ``q`` (batch, dim)
    until each has stopped; returns the Krylov bases (batch, >= used, dim)."""
    batch, dim = q.shape
    # The basis grows by doubling rather than holding max_iter vectors per row up front:
    # most warm-started runs converge in a few steps. Every slot is written (zeros for a
    # stopped row) before it is read, so nothing is zero-filled.
    basis = torch.empty((batch, min(steps, 8), dim), dtype=q.dtype, device=q.device)
    beta_prev = torch.zeros(batch, dtype=q.dtype, device=q.device)
    m = 0
    while any(row.running for row in rows):
        if m == basis.shape[1]:
            grown = torch.empty((batch, min(2 * m, steps), dim), dtype=q.dtype, device=q.device)
            grown[:, :m] = basis
            basis = grown
        basis[:, m] = q
        if by_rows:
            running = [i for i, row in enumerate(rows) if row.running]
            w = torch.zeros_like(q)
            w[running] = matvec(q[running], running)
        else:
            w = matvec(q)
        m += 1
        w, alpha, beta = _residual(w, q, basis[:, :m], beta_prev)
        new_q = torch.zeros_like(q)
        for i, (a, b) in enumerate(zip(alpha.tolist(), beta.tolist(), strict=True)):
            if rows[i].running:
                nxt = _advance(rows[i], m, a, b, w[i], basis[i, :m], k=k, steps=steps, tol=tol)
                if nxt is not None:
                    new_q[i] = nxt
        beta_prev = torch.tensor([row.beta_last for row in rows], dtype=q.dtype, device=q.device)
        q = new_q
    return basis


def _residual(
    w: Tensor, q: Tensor, basis: Tensor, beta_prev: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Step m's three-term recurrence on ``w = A q`` for every row, then batched "twice
    is enough" Gram-Schmidt against the m basis vectors: ``(w, alpha, |w|)``."""
    alpha = (q * w).sum(dim=1)
    w = w - alpha[:, None] * q
    if basis.shape[1] > 1:
        w = w - beta_prev[:, None] * basis[:, -2]
    for _ in range(2):
        coeffs = torch.bmm(basis, w[:, :, None])
        w = w - torch.bmm(basis.transpose(1, 2), coeffs)[:, :, 0]
    return w, alpha, w.norm(dim=1)


def _advance(
    row: _Row,
    m: int,
    a: float,
    b: float,
    w: Tensor,
    basis: Tensor,
    *,
    k: int,
    steps: int,
    tol: float,
) -> Tensor | None:
    """Record step ``m``'s ``alpha = a``, ``beta = b`` of a running row; its next basis
    vector, or None when the row stops (converged, or out of steps)."""
    dim = w.numel()
    row.used = m
    row.alphas.append(a)
    row.scale = max(row.scale, abs(a), b)
    breakdown = b <= 1e3 * torch.finfo(w.dtype).eps * max(row.scale, 1e-30)
    # At a breakdown before dim steps every residual bound is about 0, yet the Ritz
    # values are only those of the invariant subspace found so far: restart instead.
    if m >= min(k, dim) and not (breakdown and m < dim) and _top_k_converged(row, b, k, tol):
        row.converged, row.running, row.beta_last = True, False, b
        return None
    if m == steps:
        row.running, row.beta_last = False, b
        return None
    if breakdown:
        # Invariant subspace before convergence: restart orthogonally (beta = 0).
        r = torch.randn(dim, generator=row.generator, dtype=torch.float64).to(w)
        r = _orthogonalize(r, basis)
        b, nxt = 0.0, r / r.norm()
    else:
        nxt = w / b
    row.betas.append(b)
    row.beta_last = b
    return nxt


def _top_k_converged(row: _Row, beta: float, k: int, tol: float) -> bool:
    """Whether every top-k Ritz value's residual bound ``|beta * s_last,i|`` is within
    relative ``tol``."""
    theta, s = np.linalg.eigh(tridiagonal_matrix(row.alphas, row.betas))
    top = slice(-min(k, len(row.alphas)), None)
    res = np.abs(beta * s[-1, top])
    return bool(np.all(res <= tol * np.maximum(np.abs(theta[top]), 1e-30)))


def _ritz_pairs(
    basis: Tensor, rows: list[_Row], k: int
) -> tuple[Tensor, Tensor, list[LanczosInfo | None]]:
    """Every active row's top-k Ritz values and unit Ritz vectors, descending, and its
    warm start for a next run (see :class:`LanczosInfo`)."""
    batch, _, dim = basis.shape
    values = torch.full((batch, k), math.nan, dtype=torch.float64)
    vectors = torch.zeros((batch, dim, k), dtype=basis.dtype, device=basis.device)
    infos: list[LanczosInfo | None] = [None] * batch
    for i, row in enumerate(rows):
        if not row.active:
            continue
        theta, s = np.linalg.eigh(tridiagonal_matrix(row.alphas, row.betas))
        order = np.argsort(theta)[::-1][: k + 1]  # the top k, and the detector when there
        ritz = torch.as_tensor(s[:, order].copy(), dtype=basis.dtype, device=basis.device)
        vecs = basis[i, : row.used].T @ ritz
        vecs = vecs / vecs.norm(dim=0, keepdim=True)
        vectors[i] = vecs[:, :k]
        values[i] = torch.as_tensor(theta[order[:k]].copy())
        residuals = tuple(float(abs(row.beta_last * s[-1, j])) for j in order[:k])
        warm = vecs if len(order) > k else _carried_detector(vecs, row.detector)
        infos[i] = LanczosInfo(row.used, row.used, row.converged, residuals, warm)
    return values, vectors, infos


def _carried_detector(top: Tensor, detector: Tensor | None) -> Tensor:
    """The top-k vectors (dim, k) and the start's detector orthogonalized against them:
    a basis of only k vectors has no next Ritz vector to detect the next crossing."""
    if detector is None:
        return top
    d = _orthogonalize(detector, top.T)
    norm = d.norm()
    return top if norm <= 1e-3 else torch.cat([top, (d / norm)[:, None]], dim=1)
