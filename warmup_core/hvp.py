"""Hessian-vector products at a fixed point: the one primitive every curvature measure
in warmup_core is built from. The Hessian is never formed.

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

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_HVP_METHOD",
    "HVP_METHODS",
    "BlockHVPOperator",
    "HVPOperator",
    "LossFn",
    "Params",
    "flatten_params",
    "model_loss_fn",
    "unflatten_params",
]

Params = Mapping[str, Tensor]
LossFn = Callable[[dict[str, Tensor]], Tensor]

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
# One loss


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
# K independent losses on stacked parameters


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
