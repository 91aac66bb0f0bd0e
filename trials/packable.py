"""Which trials can share a pack, and the forward pass that runs a pack's members at once.

Members of a pack share the model, data, batches and measurement schedule (`pack_key`);
they may differ in the config fields whose `FieldRole` says `member` (learning-rate
schedule, optimizer and its hyperparameters, init scale and init seed, ...). The
packed forward stacks the members' parameters along a leading member axis: batched
matrix products for the FCN (`stacked_forward`), `torch.func.vmap` for the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
from torch.func import vmap

from trials.config import TrialConfig, fields_with
from trials.problem import Problem
from warmup_core.models import FCN, WarmupModel, vmap_forward

__all__ = [
    "FORWARDS",
    "MEMBER_FIELDS",
    "check_packable",
    "pack_key",
    "packed_forward",
    "unpackable_reason",
]

# Config fields members of one pack may differ in; everything else must be equal.
MEMBER_FIELDS = fields_with(TrialConfig, member=True)
FORWARDS = ("auto", "batched", "vmap")

Params = dict[str, torch.Tensor]


def pack_key(config: TrialConfig) -> str:
    """Canonical text of the fields a pack shares (model, data, batches, measurement, dtype)."""
    shared = {k: v for k, v in config.model_dump(mode="json").items() if k not in MEMBER_FIELDS}
    return json.dumps(shared, sort_keys=True)


def check_packable(configs: list[TrialConfig]) -> None:
    """Raise ValueError unless `configs` can share one pack."""
    if not configs:
        raise ValueError("configs: a pack needs at least one trial")
    key = pack_key(configs[0])
    for i, config in enumerate(configs[1:], start=1):
        if pack_key(config) != key:
            ours, theirs = json.loads(key), json.loads(pack_key(config))
            fields = sorted(k for k in ours if ours[k] != theirs[k])
            raise ValueError(
                f"configs[{i}]: differs from configs[0] in {', '.join(fields)}; "
                f"packed trials may differ only in {', '.join(sorted(MEMBER_FIELDS))}"
            )


def packed_forward(model: WarmupModel, mode: str = "auto") -> Callable[..., Any]:
    """`(stacked params, batch, per_member=False) -> logits with a leading member axis`;
    the batch is shared (B, ...) or, with `per_member`, one per member (K, B, ...)."""
    if mode not in FORWARDS:
        raise ValueError(f"forward: unknown value {mode!r}; allowed: {', '.join(FORWARDS)}")
    if mode == "batched" and not isinstance(model, FCN):
        raise ValueError(f"forward: 'batched' supports the fcn model only, not {model!r}")
    if mode == "vmap" or not hasattr(model, "stacked_forward"):  # e.g. a plain nn.Module plugin
        return lambda params, x, per_member=False: vmap_forward(model, params, x, per_member)
    return model.stacked_forward


def unpackable_reason(problem: Problem, config: TrialConfig) -> str | None:
    """Why trials like `config` cannot train packed, or None when they can.

    Tries what a pack does with any model (built-in or plugin): the packed forward of
    two members on two examples, and the double backward behind Hessian-vector products.
    """
    model = problem.build_model(config.init_seed)
    params = {
        name: torch.stack([p.detach()] * 2).requires_grad_(True)
        for name, p in model.named_parameters()
    }
    x, y = problem.x_train[:2], problem.y_train[:2]
    try:
        logits = packed_forward(model)(params, x)
        losses = vmap(problem.loss_and_accuracy, in_dims=(0, None))(logits, y)[0]
        grads = torch.autograd.grad(losses.sum(), list(params.values()), create_graph=True)
        torch.autograd.grad(sum(g.sum() for g in grads), list(params.values()), allow_unused=True)
    except Exception as exc:  # whatever vmap or autograd refuses, reported in one line
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    return None
