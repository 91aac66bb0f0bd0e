"""The training loop: K trials of one architecture and data order trained at once;
a single trial is a pack of one (`trials.trial.run_trial`).

`run_pack(configs)` stacks the members' parameters along a leading member axis
and runs one forward/backward for all of them (the model's `stacked_forward`:
batched matrix products for the FCN, `torch.func.vmap` for the others). Members
share the model, data, batches and measurement schedule (`pack_key`); they may
differ in learning-rate schedule, optimizer and its hyperparameters, init scale
and init seed (`MEMBER_FIELDS`).

The summed loss of independent members has a block-diagonal Hessian, so one HVP
of the sum gives every member's HVP (`curvature.BlockHVPOperator`) and one
batched Lanczos measures every member's sharpness. Each member follows the
trial rules of `trials.trial` (divergence, stuck, rows, eta_c, schedules). A
member that ends (diverged, stuck, completed, error) writes its own files at
once and its rows leave the stacked tensors, so a pack's cost tracks the steps
its members actually run. Every `checkpoint_every` updates the whole pack state
(parameters, optimizer states, generators, records) goes to `checkpoint`;
`resume` continues from such a state with the values of an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import functional_call, vmap

from trials.config import TrialConfig
from trials.rates import TrialRates
from trials.trial import (
    STEP_COLUMNS,
    Checkpointer,
    Problem,
    Reporter,
    TrialResult,
    TrialStopped,
    append_row,
    critical_lr,
    final_status,
    is_diverged,
    make_optimizer,
    measured_at,
    set_rate,
    step_row,
    trial_summary,
    write_results,
)
from warmup_core import curvature
from warmup_core.models import FCN, WarmupModel, vmap_forward
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
        "adaptive_safety",
        "adaptive_growth",
        "adaptive_every",
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


def packed_forward(model: WarmupModel, mode: str = "auto") -> Callable[[Params, torch.Tensor], Any]:
    """`(stacked params, shared batch) -> logits with a leading member axis`."""
    if mode not in FORWARDS:
        raise ValueError(f"forward: unknown value {mode!r}; allowed: {', '.join(FORWARDS)}")
    if mode == "batched" and not isinstance(model, FCN):
        raise ValueError(f"forward: 'batched' supports the fcn model only, not {model!r}")
    if mode == "vmap" or not hasattr(model, "stacked_forward"):  # e.g. a plain nn.Module plugin
        return lambda params, x: vmap_forward(model, params, x)
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
    generator: torch.Generator | None = None  # its Lanczos start vectors
    v_top: torch.Tensor | None = None  # warm starts: the last top eigenvectors
    v_pre: torch.Tensor | None = None
    rates: TrialRates | None = None  # the rate of each update (fixed or adaptive)

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps of this member."""
        return {
            "out": dict(self.out),
            "steps": {k: list(v) for k, v in self.steps.items()},
            "loss0": self.loss0,
            "ended": self.ended,
            "summary": dict(self.summary) if self.ended else None,
            "generator": self.generator.get_state(),
            "v_top": self.v_top,
            "v_pre": self.v_pre,
            "rates": self.rates.state_dict() if self.rates is not None else None,
        }

    def restore(self, record: dict[str, Any]) -> None:
        """Continue from `record()`'s output."""
        self.out, self.loss0, self.ended = dict(record["out"]), record["loss0"], record["ended"]
        self.steps = {k: list(v) for k, v in record["steps"].items()}
        self.summary = record["summary"] or self.summary
        self.generator.set_state(record["generator"])
        self.v_top, self.v_pre = record["v_top"], record["v_pre"]
        if not self.ended:
            self.rates = TrialRates(self.config, self.out["lambda0"], self.out["eta_c"])
            self.rates.load_state_dict(record["rates"])


@dataclass
class _OptGroup:
    """Optimizer of the running members (contiguous rows) that share an optimizer config."""

    members: list[int]
    optimizer: Optimizer


class _Pack:
    """The stacked state of a pack's running members: parameters and optimizer states,
    one row per running member (`rows`, member indices in stacking order)."""

    def __init__(self, members: list[_Member], problem: Problem, forward: str) -> None:
        self.members, self.problem = members, problem
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
        self.rows = list(range(len(members)))
        self.forward = packed_forward(self.model, forward)
        self.per_member = vmap(problem.loss_and_accuracy, in_dims=(0, None))
        self.groups: list[_OptGroup] = []
        for i, m in enumerate(members):
            if (
                self.groups
                and members[self.groups[-1].members[0]].config.optimizer == m.config.optimizer
            ):
                self.groups[-1].members.append(i)
            else:
                self.groups.append(_OptGroup([i], make_optimizer(m.config, self.model)))
        for m in members:
            m.generator = torch.Generator(problem.device).manual_seed(m.config.init_seed)
        c = members[0].config
        self.sharp_opts = dict(tol=c.sharpness_tol, max_iter=c.sharpness_max_iter)

    def remove(self, ended: set[int]) -> None:
        """Members `ended` leave the stacked parameters and optimizer states."""
        keep = [r for r, i in enumerate(self.rows) if i not in ended]
        if len(keep) == len(self.rows):
            return
        index = torch.tensor(keep, device=self.problem.device)
        self.params = {k: v.detach()[index].requires_grad_(True) for k, v in self.params.items()}
        self.rows = [self.rows[r] for r in keep]
        for g in self.groups:
            kept = [j for j, i in enumerate(g.members) if i not in ended]
            g.optimizer.keep_members(torch.tensor(kept, device=self.problem.device))
            g.members = [g.members[j] for j in kept]
        self.groups = [g for g in self.groups if g.members]

    def _slices(self):
        """Each optimizer group with its rows in the stacked tensors."""
        start = 0
        for g in self.groups:
            yield g, slice(start, start + len(g.members))
            start += len(g.members)

    def losses(self, params: Params, x: torch.Tensor, y: torch.Tensor):
        """Per-row loss and accuracy, each of shape (rows,)."""
        return self.per_member(self.forward(params, x), y)

    def member_params(self, i: int) -> Params:
        """Member i's parameters as an unstacked leaf dict (for eta_c)."""
        r = self.rows.index(i)
        return {k: v[r].detach().clone().requires_grad_(True) for k, v in self.params.items()}

    def sharpness(
        self,
        active: list[bool],
        v0: list,
        t: int | None,
        precond: Params | None = None,
        graph: Sequence[torch.Tensor] | None = None,
    ):
        """Per row: top eigenvalue (and eigenvector) of H, or of P^-1/2 (H + l2 I) P^-1/2,
        on the measurement batches of update t (None: init; several batches are averaged).
        `graph`: the training step's gradient taken with its graph, when that step is on
        the one measurement batch (it saves a forward and a backward)."""
        l2 = None
        if precond is not None:  # coupled L2 weight decay: part of the operator Adam applies
            l2 = torch.tensor(
                [getattr(g.optimizer, "coupled_l2", 0.0) for g in self.groups for _ in g.members]
            )
        if graph is not None:
            ops = [curvature.BlockHVPOperator.from_gradients(self.params, graph, l2)]
        else:
            ops = [
                curvature.BlockHVPOperator(
                    lambda p, x=x, y=y: self.losses(p, x, y)[0], self.params, l2
                )
                for x, y in self.problem.measurement_batches(t)
            ]
        gens = [self.members[i].generator for i in self.rows]
        tops = [
            curvature.block_sharpness(
                op, precond=precond, active=active, v0=v0, generators=gens, **self.sharp_opts
            )
            for op in ops
        ]
        values = [sum(col) / len(tops) for col in zip(*(vals for vals, _ in tops), strict=True)]
        return values, tops[0][1]

    def preconditioner(self, grads: Params) -> Params:
        """Stacked diagonal of the pre-conditioner each row's next step applies (1 for SGD)."""
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in self.params}
        for g, s in self._slices():
            sliced = {k: v[s] for k, v in grads.items()}
            if isinstance(g.optimizer, Adam):
                peek = g.optimizer.peek_preconditioner(
                    {k: v[s] for k, v in self.params.items()}, sliced
                )
            else:
                peek = {k: torch.ones_like(v) for k, v in sliced.items()}
            for k in parts:
                parts[k].append(peek[k])
        return {k: torch.cat(v) for k, v in parts.items()}

    def step(self, grads: Params, lr: torch.Tensor) -> None:
        """One optimizer step of every row, row r with learning rate lr[r]."""
        for g, s in self._slices():
            views = {k: v[s] for k, v in self.params.items()}
            g.optimizer.step(views, {k: v[s] for k, v in grads.items()}, lr[s])

    def evaluate(self, split: str) -> tuple[list[float], list[float]]:
        """Per-row loss and accuracy on a whole split."""
        with torch.no_grad():
            loss, acc = self.problem.evaluate_with(
                lambda xb, yb: self.losses(self.params, xb, yb), split
            )
        return loss.tolist(), acc.tolist()

    def state_dict(self, step: int) -> dict[str, Any]:
        """The whole pack state after update `step`, as plain tensors and containers."""
        return {
            "step": step,
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "optimizers": [g.optimizer.state_dict() for g in self.groups],
            "members": [m.record() for m in self.members],
        }

    def load_state_dict(self, state: dict[str, Any]) -> int:
        """Continue from `state_dict`'s output; returns the update it was taken after."""
        for m, record in zip(self.members, state["members"], strict=True):
            m.restore(record)
        self.remove({i for i, m in enumerate(self.members) if m.ended})
        with torch.no_grad():
            for name, value in state["params"].items():
                self.params[name].copy_(value)
        for g, opt_state in zip(self.groups, state["optimizers"], strict=True):
            g.optimizer.load_state_dict(opt_state)
        return state["step"]


# ----------------------------------------------------------------------------- the loop


def _setup(pack: _Pack, end: Callable[..., None]) -> None:
    """lambda0, eta_c and the rates of every member (a failing member is an error)."""
    members, problem = pack.members, pack.problem
    lambda0, vectors = pack.sharpness([True] * len(members), [None] * len(members), None)
    measure_loss = problem.loss_fn(pack.model, *problem.measurement_batches(1)[0])
    for i, m in enumerate(members):
        c = m.config
        try:  # a member whose setup fails is an error of its own; the pack goes on
            m.out.update(lambda0=lambda0[i], eta_c=None)
            m.v_top = vectors[i]
            if c.eta_init == "catapult" or c.measure_eta_c:
                optimizer = make_optimizer(c, pack.model)
                m.out.update(critical_lr(c, measure_loss, pack.member_params(i), optimizer))
            m.rates = TrialRates(c, lambda0[i], m.out["eta_c"])
        except Exception as exc:
            m.out = {}
            end(i, status="error", error=f"{type(exc).__name__}: {exc}")


def _train_pack(
    pack: _Pack,
    finish: Callable[[_Member], None],
    report: Reporter | None,
    report_every: int,
    checkpoint: Checkpointer | None,
    resume: dict[str, Any] | None,
) -> None:
    """Train every member of `pack` to its end; `finish` receives each as it ends."""
    members, problem = pack.members, pack.problem
    first = members[0].config
    num_steps, ending = first.num_steps, set()

    def end(i: int, **fields: Any) -> None:
        members[i].out.update(fields)
        finish(members[i])
        ending.add(i)

    if resume is None:
        _setup(pack, end)
        start = 1
    else:
        start = pack.load_state_dict(resume) + 1
    pack.remove(ending)
    for i in pack.rows:
        m = members[i]
        m.out.update(eta_trgt=m.rates.eta_trgt, eta_init=m.rates.eta_init)

    for t in range(start, num_steps + 1):
        if not pack.rows:
            return
        idx = problem.batch(t)
        losses, accs = pack.losses(pack.params, problem.x_train[idx], problem.y_train[idx])
        loss_list, acc_list = losses.tolist(), accs.tolist()
        rows: dict[int, dict[str, Any]] = {}  # row position -> steps-table row
        for r, i in enumerate(pack.rows):
            m = members[i]
            m.loss0 = loss_list[r] if m.loss0 is None else m.loss0
            row = step_row(m.config, t, None, loss_list[r], acc_list[r])  # rate: below
            if is_diverged(m.config, loss_list[r], m.loss0):
                set_rate(m.config, row, m.rates.rate(t))  # the rate it would have taken
                append_row(m.steps, row)
                end(i, status="diverged", diverged_step=t)
            else:
                rows[r] = row
        if not rows:
            return
        keep = list(rows)
        # Measured at t: every row on the shared schedule, else the rows whose adaptive
        # warmup wants the curvature for its next rate.
        shared = measured_at(first.sharpness_every, t)
        active = [shared or members[pack.rows[r]].rates.measures_at(t) for r in keep]
        measured = any(active)
        # On the measurement batch, the training gradient's graph serves the HVPs too.
        reuse = measured and not ending and problem.measures_on_training_batch()
        grad_list = torch.autograd.grad(
            losses[keep].sum(), list(pack.params.values()), create_graph=reuse
        )
        graph = grad_list if reuse else None
        grads = {k: g.detach()[keep] for k, g in zip(pack.params, grad_list, strict=True)}
        losses_kept = [loss_list[r] for r in keep]
        rows = dict(zip(range(len(keep)), rows.values(), strict=True))
        pack.remove(ending)  # a diverged member's rows (maybe NaN) leave before any update
        ending.clear()
        live = [members[i] for i in pack.rows]
        if measured:
            if t > 1 or first.sharpness_batch == "current":  # fixed batch at t = 1: lambda0
                v0 = [m.v_top for m in live]
                sharp, vectors = pack.sharpness(active, v0, t, graph=graph)
                for r, m in enumerate(live):
                    m.v_top = vectors[r] if active[r] else m.v_top
            else:
                sharp = [m.out["lambda0"] for m in live]
            adam = [active[r] and m.config.optimizer.is_adam for r, m in enumerate(live)]
            if any(adam):
                v0 = [m.v_pre for m in live]
                pre, vectors = pack.sharpness(adam, v0, t, pack.preconditioner(grads), graph)
            for r, m in enumerate(live):
                if active[r]:
                    rows[r]["sharpness"] = sharp[r]
                if adam[r]:
                    rows[r]["preconditioned_sharpness"], m.v_pre = pre[r], vectors[r]
        for r, m in enumerate(live):  # each member's rate, from its own measurements
            row = rows[r]
            set_rate(
                m.config, row, m.rates.rate(t, row["sharpness"], row["preconditioned_sharpness"])
            )
        if measured_at(first.eval_every, t):
            test_loss, test_acc = pack.evaluate("test")
            for r, row in rows.items():
                row["test_loss"], row["test_accuracy"] = test_loss[r], test_acc[r]
        pack.step(
            grads, torch.tensor([rows[r]["lr"] for r in range(len(live))], dtype=torch.float64)
        )
        for r, m in enumerate(live):
            append_row(m.steps, rows[r])
            if m.rates.end_step == t:
                m.out["warmup_end_step"] = t
        # No progress report at the last update: the final report follows the written files
        # (a scheduler such as ASHA stops a trial at max_t = num_steps).
        if report is not None and t % report_every == 0 and t < num_steps:
            r = min(range(len(live)), key=losses_kept.__getitem__)
            lr = rows[r]["lr"]
            report({"step": t, "train_loss": losses_kept[r], "lr": lr, "live_members": len(live)})
        if checkpoint is not None and first.checkpoint_every and t % first.checkpoint_every == 0:
            checkpoint(pack.state_dict(t))

    _finish_running(pack, end)


def _finish_running(pack: _Pack, end: Callable[..., None]) -> None:
    """Final status, evaluation and sharpness of the members that ran every update."""
    members, problem, first = pack.members, pack.problem, pack.members[0].config
    if not pack.rows:
        return
    train_loss, train_acc = pack.evaluate("train")
    for r, i in enumerate(pack.rows):
        m = members[i]
        m.out.update(final_status(m.config, problem, train_loss[r], train_acc[r], m.loss0))
        if m.out["status"] == "diverged":
            end(i)
        else:
            m.out["final_train_loss"], m.out["final_train_accuracy"] = train_loss[r], train_acc[r]
    done = [not members[i].ended for i in pack.rows]
    if not any(done):
        return
    test_loss, test_acc = pack.evaluate("test")
    if first.sharpness_every:
        v0 = [members[i].v_top for i in pack.rows]
        final_sharp, _ = pack.sharpness(done, v0, first.num_steps)
    for r, i in enumerate(pack.rows):
        if done[r]:
            members[i].out["final_test_loss"] = test_loss[r]
            members[i].out["final_test_accuracy"] = test_acc[r]
            if first.sharpness_every:
                members[i].out["final_sharpness"] = final_sharp[r]
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
    checkpoint: Checkpointer | None = None,
    resume: dict[str, Any] | None = None,
) -> list[TrialResult]:
    """Run packable trials at once; each writes its own files under `results/sweep`.

    Returns one `TrialResult` per config, in the order given, each as `run_trial`
    would have produced it. Never raises for a failure inside the pack: members
    still running when an exception strikes end as `error`; it raises only when a
    member's error summary cannot be written either. `forward` picks the
    packed forward pass ('auto': the model's own). `checkpoint` receives the pack's
    state every `checkpoint_every` updates; `resume` (such a state) continues from it.
    """
    check_packable(configs)
    start = time.perf_counter()
    # Members sharing an optimizer config sit next to each other: one optimizer each.
    order = sorted(
        range(len(configs)),
        key=lambda i: json.dumps(configs[i].optimizer.model_dump(mode="json"), sort_keys=True),
    )
    members = [_Member(configs[i], trial_summary(configs[i], sweep, node)) for i in order]

    unrecorded: list[Exception] = []

    def finish(m: _Member) -> None:
        m.ended = True
        m.summary.update(m.out)
        m.summary["wall_time_s"] = time.perf_counter() - start
        if results is not None:
            try:
                write_results(results, sweep, m.summary, m.steps)
            except Exception as exc:
                unrecorded.append(exc)
                raise

    try:
        problem = problem or Problem(configs[0])
        pack = _Pack(members, problem, forward)
        _train_pack(pack, finish, report, report_every, checkpoint, resume)
    except TrialStopped:  # a scheduler (ASHA) stopped it: an ending like any other
        for m in members:
            if not m.ended:
                m.out = {"status": "stopped", "stopped_step": (m.steps["step"] or [0])[-1]}
                finish(m)
    except Exception as exc:  # a failing pack must never take the sweep down
        if unrecorded:  # ... but a trial that cannot even record its error must reach Tune
            raise
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
