"""Loss-landscape curvature from Hessian-vector products: sharpness, pre-conditioned
sharpness, Hessian trace and spectral density.

Everything here is built from one primitive, :class:`HVPOperator` (``v -> H v`` on a
flat parameter vector at a fixed point), and one eigensolver, :func:`lanczos`. The
Hessian is never formed.

Conventions
-----------
* ``params`` is a ``dict[str, Tensor]``; ``loss_fn(params)`` returns a scalar tensor.
  ``loss_fn`` may also be a sequence of such functions (e.g. one per measurement
  batch); the operator is then the Hessian of their mean.
* Flat vectors concatenate ``params`` in the dict's own key order (the order of
  ``model.named_parameters()`` when built from a module). Eigenvectors returned for
  warm starts use that layout, so pass the same dict order back in.
* With ``dtype=torch.float64`` the operator works on float64 copies of ``params``;
  ``loss_fn`` must then accept float64 parameters (cast the batch with
  ``x.to(p.dtype)``, as :func:`model_loss_fn` does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

Params = Mapping[str, Tensor]
LossFn = Callable[[dict[str, Tensor]], Tensor]
MatVec = Callable[[Tensor], Tensor]

# Benchmarked in sweeps/benchmarks/sharpness.py (CPU, torch 2.13): building the gradient
# graph once and back-propagating through it per product is the fastest way to do many
# HVPs at one point (1.3x a gradient on an MLP, 2.4x on a small CNN), tied with a reused
# torch.func vjp (whose first build is slow) and ahead of rebuilding (2.2-3.3x) and
# forward-over-reverse jvp (2.9-3.0x).
HVP_METHODS = ("graph", "rebuild", "vjp", "jvp")
DEFAULT_HVP_METHOD = "graph"


# --------------------------------------------------------------------------------------
# Flat <-> dict helpers


def flatten_params(params: Params) -> Tensor:
    """Concatenate a dict of tensors into one flat vector, in the dict's key order."""
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflatten_params(vec: Tensor, like: Params) -> dict[str, Tensor]:
    """Split a flat vector into views shaped like ``like`` (inverse of flatten_params)."""
    out, offset = {}, 0
    for name, p in like.items():
        n = p.numel()
        out[name] = vec[offset : offset + n].view_as(p)
        offset += n
    if offset != vec.numel():
        raise ValueError(f"vec has {vec.numel()} entries, params have {offset}")
    return out


def model_loss_fn(
    model: torch.nn.Module,
    criterion: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
) -> LossFn:
    """Return ``params -> criterion(model(inputs; params), targets)`` via functional_call.

    Floating inputs and targets are cast to the parameters' dtype, so the same loss_fn
    serves float32 runs and float64 reference runs.
    """

    def loss_fn(params: dict[str, Tensor]) -> Tensor:
        dtype = next(iter(params.values())).dtype
        x = inputs.to(dtype) if inputs.is_floating_point() else inputs
        y = targets.to(dtype) if targets.is_floating_point() else targets
        return criterion(torch.func.functional_call(model, params, (x,)), y)

    return loss_fn


def _check_params(params: Params) -> None:
    if not isinstance(params, Mapping) or len(params) == 0:
        raise ValueError("params must be a non-empty dict of tensors")
    for name, p in params.items():
        if not isinstance(p, Tensor) or not p.is_floating_point():
            raise ValueError(f"params[{name!r}] must be a floating-point tensor")


def _as_loss_list(loss_fn: LossFn | Sequence[LossFn]) -> list[LossFn]:
    fns = list(loss_fn) if isinstance(loss_fn, Sequence) else [loss_fn]
    if not fns or not all(callable(f) for f in fns):
        raise ValueError("loss_fn must be a callable or a non-empty sequence of callables")
    return fns


def _check_scalar(loss: Tensor) -> Tensor:
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {shape}")
    return loss


# --------------------------------------------------------------------------------------
# The HVP operator


class HVPOperator:
    """``v -> H v`` for the Hessian of ``loss_fn`` at ``params``, on flat vectors.

    ``method`` picks how products are computed (all give the same numbers):
    ``"graph"`` builds the gradient graph once (``create_graph=True``) and
    back-propagates through it per product (default, fastest for repeated products);
    ``"rebuild"`` redoes forward, backward and double-backward per product (least
    memory held between products); ``"vjp"`` uses ``torch.func.vjp`` of
    ``torch.func.grad`` built once; ``"jvp"`` is forward-over-reverse
    ``torch.func.jvp`` of ``torch.func.grad`` per product.
    """

    def __init__(
        self,
        loss_fn: LossFn | Sequence[LossFn],
        params: Params,
        *,
        method: str = DEFAULT_HVP_METHOD,
        dtype: torch.dtype | None = None,
    ) -> None:
        _check_params(params)
        if method not in HVP_METHODS:
            raise ValueError(f"method must be one of {HVP_METHODS}, got {method!r}")
        self.loss_fns = _as_loss_list(loss_fn)
        self.method = method
        # Detached copies: the operator never touches the caller's tensors or graph.
        self.params = {k: v.detach().to(dtype=dtype or v.dtype).clone() for k, v in params.items()}
        self.keys = list(self.params)
        first = next(iter(self.params.values()))
        self.dtype, self.device = first.dtype, first.device
        self.dim = sum(p.numel() for p in self.params.values())
        self.num_hvps = 0

        if method == "graph":
            leaves = {k: p.requires_grad_(True) for k, p in self.params.items()}
            loss = self._mean_loss(leaves)
            grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)
            self._leaves, self._grads = list(leaves.values()), grads
            self.loss = float(loss.detach())
        elif method == "vjp":
            loss, self._vjp_fn = torch.func.vjp(torch.func.grad(self._mean_loss), self.params)
            self.loss = float(self._mean_loss(self.params).detach())
        else:
            with torch.no_grad():
                self.loss = float(self._mean_loss(self.params))

    def _mean_loss(self, params: dict[str, Tensor]) -> Tensor:
        total = 0.0
        for fn in self.loss_fns:
            total = total + _check_scalar(fn(params))
        return total / len(self.loss_fns)

    def flatten(self, tensors: Params) -> Tensor:
        """Flatten a dict shaped like params (same keys) into this operator's layout."""
        return torch.cat([tensors[k].reshape(-1).to(self.dtype) for k in self.keys])

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        """Split a flat vector into a dict shaped like params."""
        return unflatten_params(vec, self.params)

    def __call__(self, v: Tensor) -> Tensor:
        """Return ``H v`` for a flat vector ``v`` of length ``dim``."""
        if v.shape != (self.dim,):
            raise ValueError(f"v must have shape ({self.dim},), got {tuple(v.shape)}")
        v = v.to(device=self.device, dtype=self.dtype)
        self.num_hvps += 1
        if self.method == "graph":
            parts = list(self.unflatten(v).values())
            hv = torch.autograd.grad(self._grads, self._leaves, parts, retain_graph=True)
        elif self.method == "rebuild":
            leaves = {k: p.detach().requires_grad_(True) for k, p in self.params.items()}
            grads = torch.autograd.grad(
                self._mean_loss(leaves), list(leaves.values()), create_graph=True
            )
            hv = torch.autograd.grad(grads, list(leaves.values()), list(self.unflatten(v).values()))
        elif self.method == "vjp":
            hv = self._vjp_fn(self.unflatten(v))[0].values()
        else:
            _, hv_dict = torch.func.jvp(
                torch.func.grad(self._mean_loss), (self.params,), (self.unflatten(v),)
            )
            hv = hv_dict.values()
        return torch.cat([h.detach().reshape(-1) for h in hv])

    def gradient(self) -> Tensor:
        """Flat gradient of the (mean) loss at the operator's point."""
        leaves = {k: p.detach().requires_grad_(True) for k, p in self.params.items()}
        grads = torch.autograd.grad(self._mean_loss(leaves), list(leaves.values()))
        return torch.cat([g.reshape(-1) for g in grads])


# --------------------------------------------------------------------------------------
# Lanczos


@dataclass(frozen=True)
class LanczosInfo:
    """Bookkeeping from one Lanczos run."""

    num_matvecs: int
    iterations: int
    converged: bool
    residuals: tuple[float, ...]  # Ritz residual bounds |beta_m * s_last,i| of the top-k


def _check_positive(name: str, value: float, *, integer: bool = False) -> None:
    bad = not (value > 0) or (integer and int(value) != value) or not math.isfinite(value)
    if bad:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


def warm_start_noise(tol: float) -> float:
    """Relative norm of the random part mixed into a warm start: sqrt(tol), at most 0.1.

    Large enough that the new top eigenvector's share of the start vector leaves a
    residual above `tol` until it is found, small enough that a warm start from a good
    vector still converges in a few products.
    """
    return min(0.1, math.sqrt(tol))


def _start_vector(
    v0: Tensor | None,
    dim: int,
    dtype: torch.dtype,
    device,
    generator: torch.Generator | None,
    tol: float,
) -> Tensor:
    if v0 is None:
        q = torch.randn(dim, generator=generator, dtype=torch.float64).to(device, dtype)
    else:
        v0 = torch.as_tensor(v0).detach()
        if v0.dim() == 2:
            # Several previous eigenvectors: start from their (normalized) sum, whose
            # Krylov space contains all of them after a few steps.
            v0 = (v0 / v0.norm(dim=0, keepdim=True).clamp_min(1e-30)).sum(dim=1)
        if v0.shape != (dim,):
            raise ValueError(f"v0 must have shape ({dim},) or ({dim}, m), got {tuple(v0.shape)}")
        q = v0.to(device=device, dtype=dtype).clone()
        norm = q.norm()
        if not torch.isfinite(norm) or norm == 0:
            raise ValueError("v0 must be a finite, non-zero vector")
        # A warm start lies along the previous top eigenvector; when two eigenvalues
        # have crossed since, its component along the new top one can be so small that
        # the second eigenpair converges first. A random admixture rules that out.
        noise = torch.randn(dim, generator=generator, dtype=torch.float64).to(device, dtype)
        q = q / norm + warm_start_noise(tol) * noise / noise.norm()
    return q / q.norm()


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    # Two passes of classical Gram-Schmidt ("twice is enough") keep the basis
    # orthogonal to working precision, which is what makes top-k reliable.
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def _lanczos_core(matvec: MatVec, q: Tensor, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The Lanczos tridiagonal (alphas, betas) of up to ``steps`` steps from unit ``q``,
    with full reorthogonalization, stopping at breakdown (Gauss quadrature's need)."""
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


def _tridiagonal(alphas: Sequence[float], betas: Sequence[float]) -> np.ndarray:
    m = len(alphas)
    t = np.diag(np.asarray(alphas, dtype=np.float64))
    off = np.asarray(betas[: m - 1], dtype=np.float64)
    return t + np.diag(off, 1) + np.diag(off, -1)


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
    guarantees an eigenvalue within relative ``tol`` of each. ``v0`` (shape (dim,), or
    (dim, m) for several previous eigenvectors) warm-starts the iteration. The basis is
    kept for full reorthogonalization, so memory is ``max_iter * dim`` numbers.
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

    ``matvec`` maps a (batch, dim) block to (batch, dim), applying operator ``i`` to row
    ``i`` (e.g. one HVP of a sum of independent losses, whose Hessian is block
    diagonal). Each row runs :func:`lanczos` with its own start vector ``v0[i]`` and
    ``generators[i]`` and the same stopping rule; a row that has converged (or is not
    ``active``) is fed zeros from then on, or with ``by_rows`` left out:
    ``matvec(v, rows)`` then receives only the rows still running (their indices in
    ``rows``), so an operator can skip the others' work. Returns eigenvalues (batch, k)
    float64, descending, eigenvectors (batch, dim, k) and one :class:`LanczosInfo` per
    row (None and NaN eigenvalues for inactive rows).
    """
    _check_positive("k", k, integer=True)
    _check_positive("max_iter", max_iter, integer=True)
    _check_positive("tol", tol)
    _check_positive("dim", dim, integer=True)
    _check_positive("batch", batch, integer=True)
    if k > dim:
        raise ValueError(f"k must be at most dim={dim}, got {k}")
    steps = min(int(max_iter), dim)
    if steps < k:
        raise ValueError(f"max_iter must be at least k={k}, got {max_iter}")
    active = [True] * batch if active is None else [bool(a) for a in active]
    generators = [None] * batch if generators is None else list(generators)
    starts = [None] * batch if v0 is None else list(v0)
    if len(active) != batch or len(generators) != batch or len(starts) != batch:
        raise ValueError(f"active, generators and v0 must have {batch} entries")

    q = torch.zeros((batch, dim), dtype=dtype, device=device)
    for i in range(batch):
        if active[i]:  # draw in the same order as lanczos(), so one row reproduces it
            q[i] = _start_vector(starts[i], dim, dtype, device, generators[i], tol)
    # The basis grows by doubling rather than holding max_iter vectors per row up front:
    # most warm-started runs converge in a few dozen steps.
    basis = torch.zeros((batch, min(steps, 16), dim), dtype=dtype, device=device)
    alphas: list[list[float]] = [[] for _ in range(batch)]
    betas: list[list[float]] = [[] for _ in range(batch)]
    beta_last = [0.0] * batch
    scale = [0.0] * batch
    converged = [False] * batch
    used = [0] * batch
    running = list(active)
    beta_prev = torch.zeros(batch, dtype=dtype, device=device)
    m = 0
    while any(running):
        if m == basis.shape[1]:
            grown = torch.zeros((batch, min(2 * m, steps), dim), dtype=dtype, device=device)
            grown[:, :m] = basis
            basis = grown
        basis[:, m] = q
        if by_rows:
            rows = [i for i in range(batch) if running[i]]
            w = torch.zeros_like(q)
            w[rows] = matvec(q[rows], rows)
        else:
            w = matvec(q)
        m += 1
        alpha = (q * w).sum(dim=1)
        w = w - alpha[:, None] * q
        if m > 1:
            w = w - beta_prev[:, None] * basis[:, m - 2]
        for _ in range(2):  # batched "twice is enough" Gram-Schmidt, as in lanczos()
            coeffs = torch.bmm(basis[:, :m], w[:, :, None])
            w = w - torch.bmm(basis[:, :m].transpose(1, 2), coeffs)[:, :, 0]
        beta = w.norm(dim=1)
        alpha_list, beta_list = alpha.tolist(), beta.tolist()
        new_q = torch.zeros_like(q)
        for i in range(batch):
            if not running[i]:
                continue
            a, b = alpha_list[i], beta_list[i]
            used[i] = m
            alphas[i].append(a)
            scale[i] = max(scale[i], abs(a), b)
            breakdown = b <= 1e3 * torch.finfo(dtype).eps * max(scale[i], 1e-30)
            if m >= min(k, dim) and not (breakdown and m < dim):
                theta, s = np.linalg.eigh(_tridiagonal(alphas[i], betas[i]))
                top = slice(-min(k, m), None)
                res = np.abs(b * s[-1, top])
                if np.all(res <= tol * np.maximum(np.abs(theta[top]), 1e-30)):
                    converged[i], running[i], beta_last[i] = True, False, b
                    continue
            if m == steps:
                running[i], beta_last[i] = False, b
                continue
            if breakdown:
                # Invariant subspace before convergence: restart orthogonally (beta = 0).
                r = torch.randn(dim, generator=generators[i], dtype=torch.float64).to(q)
                r = _orthogonalize(r, basis[i, :m])
                b, new_q[i] = 0.0, r / r.norm()
            else:
                new_q[i] = w[i] / b
            betas[i].append(b)
            beta_last[i] = b
        beta_prev = torch.tensor(beta_last, dtype=dtype, device=device)
        q = new_q

    values = torch.full((batch, k), math.nan, dtype=torch.float64)
    vectors = torch.zeros((batch, dim, k), dtype=dtype, device=device)
    infos: list[LanczosInfo | None] = [None] * batch
    for i in range(batch):
        if not active[i]:
            continue
        theta, s = np.linalg.eigh(_tridiagonal(alphas[i], betas[i]))
        order = np.argsort(theta)[::-1][:k]
        ritz = torch.as_tensor(s[:, order].copy(), dtype=dtype, device=basis.device)
        vecs = basis[i, : used[i]].T @ ritz
        vectors[i] = vecs / vecs.norm(dim=0, keepdim=True)
        values[i] = torch.as_tensor(theta[order].copy())
        residuals = tuple(float(abs(beta_last[i] * s[-1, j])) for j in order)
        infos[i] = LanczosInfo(used[i], used[i], converged[i], residuals)
    return values, vectors, infos


# --------------------------------------------------------------------------------------
# Sharpness and pre-conditioned sharpness


@dataclass(frozen=True)
class EigenResult:
    """Top eigenpairs of a curvature operator, with the cost of computing them.

    ``eigenvectors`` has shape (dim, k) in the flat parameter layout (dict key order);
    pass ``eigenvectors[:, 0]`` (or the whole matrix) as ``v0`` to warm-start the next
    measurement.
    """

    eigenvalues: tuple[float, ...]
    eigenvectors: Tensor
    num_hvps: int
    converged: bool
    residuals: tuple[float, ...]

    @property
    def top(self) -> float:
        """The largest eigenvalue."""
        return self.eigenvalues[0]


def _as_flat_v0(v0: Tensor | Params | None, op: HVPOperator) -> Tensor | None:
    if v0 is None or isinstance(v0, Tensor):
        return v0
    return op.flatten(v0)


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
    """Top-k Hessian eigenpairs of ``loss_fn`` at ``params`` (Lanczos on HVPs)."""
    op = HVPOperator(loss_fn, params, method=method, dtype=dtype)
    return _eigen_result(op, op, k, tol, max_iter, _as_flat_v0(v0, op), generator)


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
    )


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
    return_info: bool = False,
) -> float | EigenResult:
    """Top Hessian eigenvalue ``lambda_H`` of ``loss_fn`` at ``params``.

    With ``return_info=True`` returns the :class:`EigenResult` (top-k eigenvalues,
    eigenvectors for warm starts via ``v0``, HVP count, convergence flag) instead.
    """
    result = top_eigenpairs(
        loss_fn,
        params,
        k,
        tol=tol,
        max_iter=max_iter,
        v0=v0,
        dtype=dtype,
        method=method,
        generator=generator,
    )
    return result if return_info else result.top


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
    return_info: bool = False,
) -> float | EigenResult:
    """Top eigenvalue of ``P^-1 H``, with ``P = diag(precond)``, via ``P^-1/2 H P^-1/2``.

    For Adam, ``precond = (1 - beta1**t) * (sqrt(v_hat) + eps)`` per parameter. With
    ``return_info=True`` the eigenvectors are those of the symmetric form.
    """
    _check_params(params)
    _check_precond(precond, params)
    op = HVPOperator(loss_fn, params, method=method, dtype=dtype)
    d_inv_sqrt = op.flatten(precond).rsqrt()

    def matvec(v: Tensor) -> Tensor:
        return d_inv_sqrt * op(d_inv_sqrt * v)

    result = _eigen_result(op, matvec, k, tol, max_iter, _as_flat_v0(v0, op), generator)
    return result if return_info else result.top


class BlockHVPOperator:
    """``V -> [H_1 v_1; ...; H_K v_K]`` on (K, dim) blocks, for K independent losses of
    parameters stacked on a leading member axis.

    ``losses_fn(params)`` returns K losses, loss i depending on row i of every stacked
    tensor only; the Hessian of their sum is then block diagonal, so one product of the
    sum applies every member's Hessian to its own row. ``l2`` (K,) adds ``l2_i I`` to
    block i (coupled weight decay). Products build on the gradient graph built once,
    as :class:`HVPOperator`'s default method.

    ``losses_for(rows)``, when given, returns the losses function of rows ``rows``
    alone; once at most half the blocks are still wanted (:meth:`apply_rows`), the
    operator builds the graph of those rows only and stops paying for the others.
    """

    def __init__(
        self,
        losses_fn: Callable[[dict[str, Tensor]], Tensor],
        params: Params,
        l2: Tensor | None = None,
        losses_for: Callable[[list[int]], Callable] | None = None,
    ) -> None:
        _check_params(params)
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        grads = torch.autograd.grad(
            losses_fn(leaves).sum(), list(leaves.values()), create_graph=True
        )
        self._init(leaves, grads, l2, losses_for)

    @classmethod
    def from_gradients(
        cls,
        params: Params,
        grads: Sequence[Tensor],
        l2: Tensor | None = None,
        losses_for: Callable[[list[int]], Callable] | None = None,
    ) -> BlockHVPOperator:
        """The operator of a gradient already taken with ``create_graph=True`` (e.g. the
        training step's, when it is on the measurement batch): no second backward."""
        op = cls.__new__(cls)
        op._init(dict(params), tuple(grads), l2, losses_for)
        return op

    def _init(self, leaves: dict[str, Tensor], grads, l2: Tensor | None, losses_for) -> None:
        self.leaves, self.grads, self.losses_for = leaves, grads, losses_for
        first = next(iter(self.leaves.values()))
        self.k, self.dtype, self.device = first.shape[0], first.dtype, first.device
        self.sizes = [p[0].numel() for p in self.leaves.values()]
        self.dim = sum(self.sizes)
        self.l2 = None if l2 is None or not bool(l2.any()) else l2.to(self.device, self.dtype)
        self._sub: tuple[list[int], BlockHVPOperator] | None = None  # graph of fewer rows

    def apply_rows(self, v: Tensor, rows: list[int]) -> Tensor:
        """Row j of ``v`` (len(rows), dim) times block ``rows[j]``."""
        if len(rows) == self.k:
            return self(v)
        if self._sub is not None and set(rows) <= set(self._sub[0]):
            kept, sub = self._sub
            if 2 * len(rows) > len(kept):
                position = {i: j for j, i in enumerate(kept)}
                return sub.apply_rows(v, [position[i] for i in rows])
        if self.losses_for is not None and 2 * len(rows) <= self.k:
            index = torch.tensor(rows, dtype=torch.long, device=self.device)
            sub = BlockHVPOperator(
                self.losses_for(rows),
                {k: p.detach()[index] for k, p in self.leaves.items()},
                None if self.l2 is None else self.l2[index],
            )
            self._sub = (list(rows), sub)
            return sub(v)
        full = torch.zeros((self.k, self.dim), dtype=v.dtype, device=v.device)
        full[rows] = v
        return self(full)[rows]

    def flatten(self, tensors: Params) -> Tensor:
        """(K, ...) tensors shaped like the params -> (K, dim), member-wise flat layout."""
        return torch.cat([tensors[k].reshape(self.k, -1) for k in self.leaves], dim=1)

    def __call__(self, v: Tensor) -> Tensor:
        """Row i of ``v`` times block i of the (regularized) Hessian."""
        parts = [
            chunk.reshape(p.shape)
            for chunk, p in zip(v.split(self.sizes, dim=1), self.leaves.values(), strict=True)
        ]
        hv = torch.autograd.grad(self.grads, list(self.leaves.values()), parts, retain_graph=True)
        out = torch.cat([h.reshape(self.k, -1) for h in hv], dim=1)
        return out if self.l2 is None else out + self.l2[:, None] * v


def block_sharpness(
    op: BlockHVPOperator,
    *,
    precond: Params | None = None,
    active: Sequence[bool] | None = None,
    v0: Sequence[Tensor | None] | None = None,
    generators: Sequence[torch.Generator | None] | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
) -> tuple[list[float], list[Tensor]]:
    """Top eigenvalue and unit eigenvector of every active block of ``op``, or of
    ``P_i^-1/2 H_i P_i^-1/2`` (same spectrum as ``P_i^-1 H_i``) with ``precond``, the
    stacked diagonals P. Inactive rows give NaN and a zero vector."""
    d_inv_sqrt = None if precond is None else op.flatten(precond).rsqrt()

    def matvec(v: Tensor, rows: list[int]) -> Tensor:
        if d_inv_sqrt is None:
            return op.apply_rows(v, rows)
        d = d_inv_sqrt[rows]
        return d * op.apply_rows(d * v, rows)

    values, vectors, _ = batched_lanczos(
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
    return values[:, 0].tolist(), list(vectors[:, :, 0])


# --------------------------------------------------------------------------------------
# Trace and spectral density


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimate of tr(H) with its standard error."""

    trace: float
    stderr: float
    num_hvps: int


def _rademacher(dim: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    signs = torch.randint(0, 2, (dim,), generator=generator, dtype=torch.int8)
    return (signs.to(like.dtype) * 2 - 1).to(like.device)


def hessian_trace(
    loss_fn: LossFn | Sequence[LossFn],
    params: Params,
    *,
    num_samples: int = 100,
    dtype: torch.dtype | None = None,
    method: str = DEFAULT_HVP_METHOD,
    generator: torch.Generator | None = None,
    return_info: bool = False,
) -> float | TraceEstimate:
    """Hutchinson estimate of tr(H): mean of ``z^T H z`` over Rademacher ``z``.

    ``return_info=True`` gives a :class:`TraceEstimate` with the standard error.
    """
    _check_positive("num_samples", num_samples, integer=True)
    op = HVPOperator(loss_fn, params, method=method, dtype=dtype)
    probe = next(iter(op.params.values()))
    samples = []
    for _ in range(int(num_samples)):
        z = _rademacher(op.dim, generator, probe)
        samples.append(float(z @ op(z)))
    values = np.asarray(samples)
    stderr = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.inf
    est = TraceEstimate(trace=float(values.mean()), stderr=stderr, num_hvps=op.num_hvps)
    return est if return_info else est.trace


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

    ``num_probes`` Rademacher probes, ``num_steps`` Lanczos steps each. ``sigma`` (in
    eigenvalue units) defaults to 1% of the spectral range; the grid spans the range
    padded by ``5 sigma``.
    """
    _check_positive("num_probes", num_probes, integer=True)
    _check_positive("num_steps", num_steps, integer=True)
    _check_positive("grid_size", grid_size, integer=True)
    if sigma is not None:
        _check_positive("sigma", sigma)
    op = HVPOperator(loss_fn, params, method=method, dtype=dtype)
    probe = next(iter(op.params.values()))
    all_nodes, all_weights = [], []
    for _ in range(int(num_probes)):
        z = _rademacher(op.dim, generator, probe)
        alphas, betas = _lanczos_core(op, z / z.norm(), min(int(num_steps), op.dim))
        theta, s = np.linalg.eigh(_tridiagonal(alphas, betas))
        all_nodes.append(theta)
        all_weights.append(s[0] ** 2)
    lo = min(float(n.min()) for n in all_nodes)
    hi = max(float(n.max()) for n in all_nodes)
    width = sigma if sigma is not None else max(0.01 * (hi - lo), 1e-12 * max(abs(hi), 1.0))
    grid = np.linspace(lo - 5 * width, hi + 5 * width, int(grid_size))
    density = _broaden(all_nodes, all_weights, grid, width)
    return SpectralDensity(all_nodes, all_weights, grid, density, op.num_hvps)
