"""Packed trials: K trials of one architecture and data order trained at once.

`run_pack(configs)` stacks the members' parameters along a leading member axis
and runs one forward/backward for all of them: batched matrix products for
the FCN (measured fastest on CPU), `torch.func.vmap` over `functional_call`
for the other models. Members share the model, data, batches and measurement
schedule (`pack_key`); they may differ in learning-rate schedule, optimizer
and its hyperparameters, init scale and init seed (`MEMBER_FIELDS`).

The summed loss of independent members has a block-diagonal Hessian, so one
HVP of the sum gives every member's HVP, and `batched_lanczos` measures every
member's sharpness at once. Each member follows the unpacked trial's rules
(`trials.trial`: divergence, stuck, rows, eta_c, schedules): a diverged member
is recorded with its step and frozen (learning rate 0, parameters, gradients
and optimizer state zeroed, so its NaNs never reach the others) while the
pack goes on. Each member writes its own files, with the same `trial_id`, as
soon as it ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import functional_call, vmap

from trials.config import TrialConfig
from trials.trial import (
    STEP_COLUMNS,
    Problem,
    Reporter,
    TrialResult,
    append_row,
    critical_lr,
    final_status,
    is_diverged,
    make_optimizer,
    measured_at,
    resolve_schedule,
    step_row,
    trial_summary,
    write_results,
)
from warmup_core.curvature import batched_lanczos
from warmup_core.models import FCN, WarmupModel
from warmup_core.optim import Adam, Optimizer

# Config fields members of one pack may differ in; everything else must be equal.
MEMBER_FIELDS = frozenset(
    {
        "eta_trgt",
        "eta_trgt_relative_to",
        "eta_init",
        "warmup_steps",
        "warmup_shape",
        "warmup_power",
        "decay",
        "eta_min",
        "optimizer",
        "init_scale",
        "init_seed",
        "measure_eta_c",
        "catapult_rtol",
        "catapult_check_steps",
        "divergence_factor",
        "stuck_accuracy_factor",
        "stuck_loss",
    }
)
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


# ----------------------------------------------------------------------------- forward


def _batched_fcn(model: FCN, params: Params, x: torch.Tensor) -> torch.Tensor:
    """FCN forward for stacked parameters (K, out, in) on a shared batch: (K, B, out)."""
    h = x.flatten(1)
    k = next(iter(params.values())).shape[0]
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        w = params[f"layers.{i}.weight"] * layer.rule.multiplier
        b = params.get(f"layers.{i}.bias")
        if h.ndim == 2:  # shared input: one (B, in) x (in, K*out) product for all members
            h = (h @ w.reshape(-1, w.shape[-1]).T).view(len(h), k, -1).transpose(0, 1)
            h = h if b is None else h + b[:, None, :]
        elif b is None:
            h = torch.bmm(h, w.transpose(1, 2))
        else:
            h = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
        if i < last:
            h = model.act(h)
    return h


def packed_forward(model: WarmupModel, mode: str = "auto") -> Callable[[Params, torch.Tensor], Any]:
    """`(stacked params, shared batch) -> logits with a leading member axis`."""
    if mode not in FORWARDS:
        raise ValueError(f"forward: unknown value {mode!r}; allowed: {', '.join(FORWARDS)}")
    if mode == "batched" or (mode == "auto" and isinstance(model, FCN)):
        if not isinstance(model, FCN):
            raise ValueError(f"forward: 'batched' supports the fcn model only, not {model!r}")
        return lambda params, x: _batched_fcn(model, params, x)
    per_member = vmap(lambda p, x: functional_call(model, p, (x,)), in_dims=(0, None))
    return per_member


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


# ----------------------------------------------------------------------------- members


@dataclass
class _Member:
    """One trial of the pack: its config, what it has recorded, and how it ended."""

    config: TrialConfig
    summary: dict[str, Any]
    steps: dict[str, list] = field(default_factory=lambda: {k: [] for k in STEP_COLUMNS})
    out: dict[str, Any] = field(default_factory=dict)
    loss0: float | None = None
    ended: bool = False


@dataclass
class _OptGroup:
    """Optimizer of the contiguous members [start, stop) that share an optimizer config."""

    start: int
    stop: int
    optimizer: Optimizer


class _PackedHVP:
    """Block-diagonal HVP: row i of a (K, dim) block times member i's Hessian."""

    def __init__(self, losses_fn: Callable[[Params], torch.Tensor], params: Params, live) -> None:
        self.leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        losses = losses_fn(self.leaves)
        # Only live members enter the sum; a frozen member's rows stay exactly zero.
        total = torch.where(live, losses, torch.zeros_like(losses)).sum()
        self.grads = torch.autograd.grad(total, list(self.leaves.values()), create_graph=True)
        first = next(iter(self.leaves.values()))
        self.k, self.dtype, self.device = first.shape[0], first.dtype, first.device
        self.sizes = [p[0].numel() for p in self.leaves.values()]
        self.dim = sum(self.sizes)

    def flatten(self, tensors: Params) -> torch.Tensor:
        """(K, ...) tensors shaped like the params -> (K, dim), member-wise flat layout."""
        return torch.cat([tensors[k].reshape(self.k, -1) for k in self.leaves], dim=1)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        parts = [
            chunk.reshape(p.shape)
            for chunk, p in zip(v.split(self.sizes, dim=1), self.leaves.values(), strict=True)
        ]
        hv = torch.autograd.grad(self.grads, list(self.leaves.values()), parts, retain_graph=True)
        return torch.cat([h.reshape(self.k, -1) for h in hv], dim=1)


class _Pack:
    """The stacked state of a pack: parameters, optimizers, generators and measurements."""

    def __init__(self, members: list[_Member], problem: Problem, forward: str) -> None:
        self.members, self.problem = members, problem
        k = len(members)
        models = [problem.build_model(m.config.init_seed, m.config.init_scale) for m in members]
        self.model = models[0]
        multipliers = [
            tuple(getattr(mod, "rule", None) and mod.rule.multiplier for mod in m.modules())
            for m in models
        ]
        if len(set(multipliers)) != 1:  # the shared forward would be wrong for some member
            raise ValueError("init_scale: members' forward multipliers differ; pack them apart")
        named = [dict(m.named_parameters()) for m in models]
        self.params: Params = {
            name: torch.stack([p[name].detach() for p in named]).requires_grad_(True)
            for name in named[0]
        }
        self.forward = packed_forward(self.model, forward)
        self.per_member = vmap(problem.loss_and_accuracy, in_dims=(0, None))
        self.live = torch.ones(k, dtype=torch.bool, device=problem.device)
        self.groups = self._optimizer_groups()
        self.generators = [
            torch.Generator(problem.device).manual_seed(m.config.init_seed) for m in members
        ]
        c = members[0].config
        self.sharp_opts = dict(tol=c.sharpness_tol, max_iter=c.sharpness_max_iter)
        # Coupled L2 weight decay of each member: part of the operator its update applies.
        self.l2 = torch.zeros(k, dtype=self.params[next(iter(self.params))].dtype)
        for g in self.groups:
            self.l2[g.start : g.stop] = getattr(g.optimizer, "coupled_l2", 0.0)

    def _optimizer_groups(self) -> list[_OptGroup]:
        groups: list[_OptGroup] = []
        for i, m in enumerate(self.members):
            if groups and self.members[groups[-1].start].config.optimizer == m.config.optimizer:
                groups[-1].stop = i + 1
            else:
                groups.append(_OptGroup(i, i + 1, make_optimizer(m.config, self.model)))
        return groups

    def losses(self, params: Params, x: torch.Tensor, y: torch.Tensor):
        """Per-member loss and accuracy, each of shape (K,)."""
        return self.per_member(self.forward(params, x), y)

    def member_params(self, i: int) -> Params:
        """Member i's parameters as an unstacked leaf dict (for eta_c and checks)."""
        return {k: v[i].detach().clone().requires_grad_(True) for k, v in self.params.items()}

    def sharpness(self, rows: list[bool], v0: list, t: int | None, precond: Params | None = None):
        """Top eigenvalue (and eigenvector) of H, or of P^-1/2 (H + l2 I) P^-1/2, for each
        row, on the measurement batches of update t (None: init; several batches are
        averaged, as `trials.trial` does)."""
        tops = [
            self._sharpness(rows, v0, x, y, precond) for x, y in self.problem.measurement_batches(t)
        ]
        values = [sum(col) / len(tops) for col in zip(*(vals for vals, _ in tops), strict=True)]
        return values, tops[0][1]

    def _sharpness(self, rows, v0, x, y, precond):
        op = _PackedHVP(lambda p: self.losses(p, x, y)[0], self.params, self.live)
        matvec = op
        if precond is not None:
            d_inv_sqrt = op.flatten(precond).rsqrt()
            l2 = self.l2.to(op.dtype).view(-1, 1)

            def matvec(v: torch.Tensor) -> torch.Tensor:
                u = d_inv_sqrt * v
                return d_inv_sqrt * (op(u) + l2 * u)

        values, vectors, _ = batched_lanczos(
            matvec,
            op.dim,
            len(rows),
            v0=v0,
            active=rows,
            dtype=op.dtype,
            device=op.device,
            generators=self.generators,
            **self.sharp_opts,
        )
        return values[:, 0].tolist(), [vectors[i, :, 0] for i in range(len(rows))]

    def preconditioner(self, grads: Params) -> Params:
        """Stacked diagonal of the pre-conditioner each member's next step applies (1 for SGD)."""
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in self.params}
        for g in self.groups:
            sliced = {k: v[g.start : g.stop] for k, v in grads.items()}
            if isinstance(g.optimizer, Adam):
                params = {k: v[g.start : g.stop] for k, v in self.params.items()}
                peek = g.optimizer.peek_preconditioner(params, sliced)
            else:
                peek = {k: torch.ones_like(v) for k, v in sliced.items()}
            for k in parts:
                parts[k].append(peek[k])
        # A frozen member is never measured; 1 keeps its rows finite in the shared matvec.
        return {
            k: torch.where(self.live.view(-1, *([1] * (v[0].ndim - 1))), torch.cat(v), 1.0)
            for k, v in parts.items()
        }

    def step(self, grads: Params, lr: torch.Tensor) -> None:
        """One optimizer step of every member; frozen members have lr 0 and stay at zero."""
        for g in self.groups:
            views = {k: v[g.start : g.stop] for k, v in self.params.items()}
            g.optimizer.step(
                views, {k: v[g.start : g.stop] for k, v in grads.items()}, lr[g.start : g.stop]
            )
        if not bool(self.live.all()):
            self._zero_frozen()

    def freeze(self, i: int) -> None:
        """End member i's training: no more updates, its state zeroed (finite) for good."""
        self.live[i] = False
        self._zero_frozen()
        for g in self.groups:
            if g.start <= i < g.stop:
                for state in g.optimizer.state.values():
                    for tensor in state.values():
                        tensor[i - g.start].zero_()

    def _zero_frozen(self) -> None:
        with torch.no_grad():
            for p in self.params.values():
                p.masked_fill_(~self.live.view(-1, *([1] * (p.ndim - 1))), 0.0)

    def mask(self, tensors: Params) -> Params:
        """Zero the frozen members' rows (NaN-safe)."""
        return {
            k: v.masked_fill(~self.live.view(-1, *([1] * (v.ndim - 1))), 0.0)
            for k, v in tensors.items()
        }

    def evaluate(self, split: str) -> tuple[list[float], list[float]]:
        """Per-member loss and accuracy on a whole split."""
        with torch.no_grad():
            loss, acc = self.problem.evaluate_with(
                lambda xb, yb: self.losses(self.params, xb, yb), split
            )
        return loss.tolist(), acc.tolist()


# ----------------------------------------------------------------------------- the loop


def _train_pack(
    pack: _Pack,
    finish: Callable[[_Member], None],
    report: Reporter | None,
    report_every: int,
) -> None:
    """The unpacked loop of `trials.trial._train`, run for every member at once."""
    members, problem = pack.members, pack.problem
    k, first = len(members), members[0].config
    num_steps = first.num_steps

    def end(i: int, **fields: Any) -> None:
        members[i].out.update(fields)
        if bool(pack.live[i]):
            pack.freeze(i)
        finish(members[i])

    lambda0, v_top = pack.sharpness([True] * k, [None] * k, None)
    measure_loss = problem.loss_fn(pack.model, *problem.measurement_batches(1)[0])
    lr_table = torch.zeros((k, num_steps), dtype=torch.float64)
    for i, m in enumerate(members):
        c = m.config
        try:  # a member whose setup fails is an error of its own; the pack goes on
            m.out.update(lambda0=lambda0[i], eta_c=None)
            if c.eta_init == "catapult" or c.measure_eta_c:
                optimizer = make_optimizer(c, pack.model)
                m.out.update(critical_lr(c, measure_loss, pack.member_params(i), optimizer))
            eta_trgt, eta_init, schedule = resolve_schedule(c, lambda0[i], m.out["eta_c"])
            m.out.update(eta_trgt=eta_trgt, eta_init=eta_init)
            lr_table[i] = schedule(torch.arange(1, num_steps + 1))
        except Exception as exc:
            m.out = {}
            end(i, status="error", error=f"{type(exc).__name__}: {exc}")

    sharp, v_pre = list(lambda0), [None] * k
    for t in range(1, num_steps + 1):
        if not bool(pack.live.any()):
            return
        idx = problem.batch(t)
        losses, accs = pack.losses(pack.params, problem.x_train[idx], problem.y_train[idx])
        loss_list, acc_list, lr_list = losses.tolist(), accs.tolist(), lr_table[:, t - 1].tolist()
        rows: dict[int, dict[str, Any]] = {}
        for i, m in enumerate(members):
            if m.ended:
                continue
            m.loss0 = loss_list[i] if m.loss0 is None else m.loss0
            row = step_row(m.config, t, lr_list[i], loss_list[i], acc_list[i])
            if is_diverged(m.config, loss_list[i], m.loss0):
                append_row(m.steps, row)
                end(i, status="diverged", diverged_step=t)
            else:
                rows[i] = row
        if not rows:
            return
        total = torch.where(pack.live, losses, torch.zeros_like(losses)).sum()
        grad_list = torch.autograd.grad(total, list(pack.params.values()))
        grads = dict(zip(pack.params, grad_list, strict=True))
        grads = pack.mask(grads)  # a member that just diverged may have NaN gradients
        if measured_at(first.sharpness_every, t):
            live = [i in rows for i in range(k)]
            if t > 1 or first.sharpness_batch == "current":  # fixed batch at t = 1: lambda0
                sharp, vectors = pack.sharpness(live, v_top, t)
                v_top = [vectors[i] if live[i] else v_top[i] for i in range(k)]
            adam = [live[i] and members[i].config.optimizer.is_adam for i in range(k)]
            if any(adam):
                pre, vectors = pack.sharpness(adam, v_pre, t, pack.preconditioner(grads))
                v_pre = [vectors[i] if adam[i] else v_pre[i] for i in range(k)]
            for i, row in rows.items():
                row["sharpness"] = sharp[i]
                if adam[i]:
                    row["preconditioned_sharpness"] = pre[i]
        if measured_at(first.eval_every, t):
            test_loss, test_acc = pack.evaluate("test")
            for i, row in rows.items():
                row["test_loss"], row["test_accuracy"] = test_loss[i], test_acc[i]
        pack.step(grads, lr_table[:, t - 1] * pack.live.to(torch.float64))
        for i, row in rows.items():
            append_row(members[i].steps, row)
        if report is not None and t % report_every == 0:
            live_losses = [loss_list[i] for i in rows]
            report({"step": t, "train_loss": min(live_losses), "live_members": len(rows)})

    running = [i for i, m in enumerate(members) if not m.ended]
    if not running:
        return
    train_loss, train_acc = pack.evaluate("train")
    for i in running:
        m = members[i]
        m.out.update(final_status(m.config, problem, train_loss[i], train_acc[i], m.loss0))
        if m.out["status"] == "diverged":
            end(i)
        else:
            m.out["final_train_loss"], m.out["final_train_accuracy"] = train_loss[i], train_acc[i]
    done = [i for i in running if not members[i].ended]
    if not done:
        return
    test_loss, test_acc = pack.evaluate("test")
    final_sharp = [None] * k
    if first.sharpness_every:
        final_sharp, _ = pack.sharpness([i in done for i in range(k)], v_top, num_steps)
    for i in done:
        members[i].out["final_test_loss"] = test_loss[i]
        members[i].out["final_test_accuracy"] = test_acc[i]
        if first.sharpness_every:
            members[i].out["final_sharpness"] = final_sharp[i]
        end(i)


def run_pack(
    configs: list[TrialConfig],
    *,
    results: str | None = None,
    sweep: str = "adhoc",
    report: Reporter | None = None,
    report_every: int = 25,
    node: str | None = None,
    problem: Problem | None = None,
    forward: str = "auto",
) -> list[TrialResult]:
    """Run packable trials at once; each writes its own files under `results/sweep`.

    Returns one `TrialResult` per config, in the order given, each as `run_trial`
    would have produced it. Never raises for a failure inside the pack: members
    still running when an exception strikes end as `error`. `forward` picks the
    packed forward pass ('auto': batched products for fcn, vmap otherwise).
    """
    check_packable(configs)
    start = time.perf_counter()
    # Members sharing an optimizer config sit next to each other: one optimizer each.
    order = sorted(
        range(len(configs)),
        key=lambda i: json.dumps(configs[i].optimizer.model_dump(mode="json"), sort_keys=True),
    )
    members = [_Member(configs[i], trial_summary(configs[i], sweep, node)) for i in order]

    def finish(m: _Member) -> None:
        m.ended = True
        m.summary.update(m.out)
        m.summary["wall_time_s"] = time.perf_counter() - start
        if results is not None:
            write_results(results, sweep, m.summary, m.steps)

    try:
        problem = problem or Problem(configs[0])
        _train_pack(_Pack(members, problem, forward), finish, report, report_every)
    except Exception as exc:  # a failing pack must never take the sweep down
        for m in members:
            if not m.ended:
                m.out = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
                finish(m)
    by_config = dict(zip(order, members, strict=True))
    return [
        TrialResult(m.summary["trial_id"], m.summary["status"], m.summary, m.steps)
        for m in (by_config[i] for i in range(len(configs)))
    ]


def training_rates(
    config: TrialConfig, k: int, *, steps: int = 3, problem: Problem | None = None
) -> tuple[float, float]:
    """Trial-steps per second of plain training steps (SGD, no curvature): one trial at a
    time, and `k` trials packed. A short calibration for choosing a pack size."""
    problem = problem or Problem(config)
    model = problem.build_model(config.init_seed)
    idx = problem.batch(1)
    x, y = problem.x_train[idx], problem.y_train[idx]
    single = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    stacked = {n: torch.stack([p.detach()] * k).requires_grad_(True) for n, p in single.items()}
    forward = packed_forward(model)
    per_member = vmap(problem.loss_and_accuracy, in_dims=(0, None))

    def one_step() -> None:
        loss = problem.loss_and_accuracy(functional_call(model, single, (x,)), y)[0]
        grads = torch.autograd.grad(loss, list(single.values()))
        with torch.no_grad():
            for p, g in zip(single.values(), grads, strict=True):
                p.sub_(1e-6 * g)
        loss.item()

    def packed_step() -> None:
        losses = per_member(forward(stacked, x), y)[0]
        grads = torch.autograd.grad(losses.sum(), list(stacked.values()))
        with torch.no_grad():
            for p, g in zip(stacked.values(), grads, strict=True):
                p.sub_(1e-6 * g)
        losses.tolist()

    def rate(step: Callable[[], None], trials: int) -> float:
        step()  # warm-up: allocations and first-call dispatch
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return trials * steps / (time.perf_counter() - start)

    return rate(one_step, 1), rate(packed_step, k)
