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
once and its rows leave the stacked tensors; with `slots` fewer than the trials,
the next waiting trial takes its place at its own update 1 (continuous
batching), so a pack's cost tracks the steps its members actually run. Every `checkpoint_every` updates the whole pack state
(parameters, optimizer states, generators, records) goes to `checkpoint`;
`resume` continues from such a state with the values of an uninterrupted run.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import vmap

from trials.config import TrialConfig, fields_with
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

# Config fields members of one pack may differ in (`FieldRole.member`); everything else
# must be equal.
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


# ----------------------------------------------------------------------------- forward


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
    start: int | None = None  # pack iteration before its update 1 (None: still waiting)
    generator: torch.Generator | None = None  # its Lanczos start vectors
    v_top: torch.Tensor | None = None  # warm starts: the last top eigenvectors
    v_pre: torch.Tensor | None = None
    rates: TrialRates | None = None  # the rate of each update (fixed or adaptive)

    def record(self) -> dict[str, Any] | None:
        """What a checkpoint keeps of this member (None while it waits for a slot)."""
        if self.start is None:
            return None
        return {
            "out": dict(self.out),
            "steps": {k: list(v) for k, v in self.steps.items()},
            "loss0": self.loss0,
            "ended": self.ended,
            "start": self.start,
            "summary": dict(self.summary) if self.ended else None,
            "generator": self.generator.get_state(),
            "v_top": self.v_top,
            "v_pre": self.v_pre,
            "rates": self.rates.state_dict() if self.rates is not None else None,
        }

    def restore(self, record: dict[str, Any], device: torch.device) -> None:
        """Continue from `record()`'s output."""
        self.out, self.loss0, self.ended = dict(record["out"]), record["loss0"], record["ended"]
        self.steps = {k: list(v) for k, v in record["steps"].items()}
        self.summary = record["summary"] or self.summary
        self.start = record["start"]
        self.generator = torch.Generator(device)
        self.generator.set_state(record["generator"])
        self.v_top, self.v_pre = record["v_top"], record["v_pre"]
        if not self.ended:
            self.rates = TrialRates(self.config, self.out["lambda0"], self.out["eta_c"])
            self.rates.load_state_dict(record["rates"])


@dataclass
class _OptGroup:
    """Optimizer of running members (contiguous rows) that share an optimizer config and
    started together (so they are at the same update)."""

    members: list[int]
    optimizer: Optimizer


def _optimizer_key(config: TrialConfig) -> str:
    return json.dumps(config.optimizer.model_dump(mode="json"), sort_keys=True)


def _forward_multipliers(model: WarmupModel) -> tuple:
    return tuple(getattr(mod, "rule", None) and mod.rule.multiplier for mod in model.modules())


class _Pack:
    """The stacked state of a pack's running members: parameters and optimizer states,
    one row per running member (`rows`: member indices in stacking order, grouped by
    optimizer). Members join in cohorts (`admit`), each at its own update 1."""

    def __init__(self, members: list[_Member], problem: Problem, forward: str) -> None:
        self.members, self.problem = members, problem
        self.model = problem.build_model(members[0].config.init_seed, members[0].config.init_scale)
        self.multipliers = _forward_multipliers(self.model)
        self.params: Params = {}
        self.rows: list[int] = []
        self.groups: list[_OptGroup] = []
        self.forward = packed_forward(self.model, forward)
        loss = problem.loss_and_accuracy
        self.per_member = {False: vmap(loss, in_dims=(0, None)), True: vmap(loss, in_dims=(0, 0))}
        c = members[0].config
        self.sharp_opts = dict(tol=c.sharpness_tol, max_iter=c.sharpness_max_iter)

    def cohort(self, indices: list[int], start: int) -> _Pack:
        """A pack of members `indices` alone, fresh from their init, starting after pack
        iteration `start` (one optimizer group per optimizer config)."""
        new = _Pack.__new__(_Pack)
        new.__dict__.update(self.__dict__)  # same model, forward and problem
        new.params, new.rows, new.groups = {}, [], []
        problem, key = self.problem, lambda i: _optimizer_key(self.members[i].config)
        order = sorted(indices, key=key)
        named = []
        for i in order:
            m = self.members[i]
            model = problem.build_model(m.config.init_seed, m.config.init_scale)
            if _forward_multipliers(model) != self.multipliers:  # the shared forward is wrong
                raise ValueError("init_scale: members' forward multipliers differ; pack them apart")
            named.append(dict(model.named_parameters()))
            m.start = start
            m.generator = torch.Generator(problem.device).manual_seed(m.config.init_seed)
        groups = [
            _OptGroup(same, make_optimizer(self.members[same[0]].config, self.model))
            for same in (list(g) for _, g in itertools.groupby(order, key=key))
        ]
        stacked = {name: torch.stack([p[name].detach() for p in named]) for name in named[0]}
        new.join(stacked, order, groups)
        return new

    def join(self, stacked: Params, rows: list[int], groups: Sequence[_OptGroup] = ()) -> None:
        """Rows `rows` with parameters `stacked` (and their optimizer groups) join the pack."""
        if self.rows:
            stacked = {k: torch.cat([v.detach(), stacked[k]]) for k, v in self.params.items()}
        self.params = {k: v.detach().requires_grad_(True) for k, v in stacked.items()}
        self.rows = self.rows + rows
        self.groups = self.groups + list(groups)

    def absorb(self, other: _Pack) -> None:
        """The running members of `other` (set up apart, see `cohort`) join this pack."""
        if other.rows:
            self.join(other.params, other.rows, other.groups)

    def _index(self, positions: list[int]) -> torch.Tensor:
        return torch.tensor(positions, dtype=torch.long, device=self.problem.device)

    def remove(self, ended: set[int]) -> None:
        """Members `ended` leave the stacked parameters and optimizer states."""
        keep = [r for r, i in enumerate(self.rows) if i not in ended]
        if len(keep) == len(self.rows):
            return
        index = self._index(keep)
        self.params = {k: v.detach()[index].requires_grad_(True) for k, v in self.params.items()}
        self.rows = [self.rows[r] for r in keep]
        for g in self.groups:
            kept = [j for j, i in enumerate(g.members) if i not in ended]
            g.optimizer.keep_members(self._index(kept))
            g.members = [g.members[j] for j in kept]
        self.groups = [g for g in self.groups if g.members]

    def updates(self, it: int) -> list[int]:
        """Each row's own update number at pack iteration `it`."""
        return [it - self.members[i].start for i in self.rows]

    def _slices(self):
        """Each optimizer group with its rows in the stacked tensors."""
        start = 0
        for g in self.groups:
            yield g, slice(start, start + len(g.members))
            start += len(g.members)

    def inputs(self, ts: list[int]) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """The training batch of each row at its update `ts[r]`: `(x, y, per_member)`, one
        shared batch when every row trains on the same examples."""
        problem = self.problem
        if len(set(ts)) == 1 or problem.batch_size() == len(problem.x_train):
            idx = problem.batch(ts[0])
            return problem.x_train[idx], problem.y_train[idx], False
        batches = {t: problem.batch(t) for t in set(ts)}
        idx = torch.stack([batches[t] for t in ts])
        return problem.x_train[idx], problem.y_train[idx], True

    def losses(self, params: Params, x: torch.Tensor, y: torch.Tensor, per_member: bool = False):
        """Per-row loss and accuracy, each of shape (rows,)."""
        return self.per_member[per_member](self.forward(params, x, per_member), y)

    def member_params(self, i: int) -> Params:
        """Member i's parameters as an unstacked leaf dict (for eta_c)."""
        r = self.rows.index(i)
        return {k: v[r].detach().clone().requires_grad_(True) for k, v in self.params.items()}

    def _losses_for(self, x: torch.Tensor, y: torch.Tensor, per_member: bool) -> Callable:
        """`rows -> (params of those rows -> their losses)` on the batch `x, y`."""

        def restrict(rows: list[int]) -> Callable[[Params], torch.Tensor]:
            if per_member:
                index = self._index(rows)
                xs, ys = x[index], y[index]
            else:
                xs, ys = x, y
            return lambda p: self.losses(p, xs, ys, per_member)[0]

        return restrict

    def _measurement_inputs(self, ts: list[int] | None) -> list[tuple[torch.Tensor, ...]]:
        """The batches whose mean loss defines each row's sharpness at update `ts[r]`
        (None: at init), as `inputs` gives them."""
        problem = self.problem
        if ts is None or problem.config.sharpness_batch == "fixed":
            t = None if ts is None else ts[0]
            return [(x, y, False) for x, y in problem.measurement_batches(t)]
        return [self.inputs(ts)]

    def sharpness(
        self,
        active: list[bool],
        v0: list,
        ts: list[int] | None,
        precond: Params | None = None,
        graph: Sequence[torch.Tensor] | None = None,
    ):
        """Per row: top eigenvalue (and eigenvector) of H, or of P^-1/2 (H + l2 I) P^-1/2,
        on the measurement batches of each row's update `ts[r]` (None: init; several
        batches are averaged); NaN and no vector for inactive rows. `graph`: the training
        step's gradient taken with its graph, when that step is on the measurement batch
        (it saves a forward and a backward)."""
        l2 = None
        if precond is not None:  # coupled L2 weight decay: part of the operator Adam applies
            l2 = torch.tensor(
                [getattr(g.optimizer, "coupled_l2", 0.0) for g in self.groups for _ in g.members]
            )
        gens = [self.members[i].generator for i in self.rows]
        if graph is not None:
            op = curvature.BlockHVPOperator.from_gradients(
                self.params, graph, l2, self._losses_for(*self.inputs(ts))
            )
            return curvature.block_sharpness(
                op, precond=precond, active=active, v0=v0, generators=gens, **self.sharp_opts
            )
        # Without the training graph, only the active rows are differentiated.
        sub = [r for r, a in enumerate(active) if a]
        index = self._index(sub)
        params = {k: v.detach()[index] for k, v in self.params.items()}
        pick = (lambda v: v[index]) if len(sub) < len(active) else (lambda v: v)
        tops = []
        for x, y, per_member in self._measurement_inputs(ts):
            xs, ys = (pick(x), pick(y)) if per_member else (x, y)
            losses_for = self._losses_for(xs, ys, per_member)
            op = curvature.BlockHVPOperator(
                losses_for(list(range(len(sub)))),
                params,
                None if l2 is None else l2[index],
                losses_for,
            )
            tops.append(
                curvature.block_sharpness(
                    op,
                    precond=None if precond is None else {k: v[index] for k, v in precond.items()},
                    v0=[v0[r] for r in sub],
                    generators=[gens[r] for r in sub],
                    **self.sharp_opts,
                )
            )
        values = [math.nan] * len(active)
        vectors: list[torch.Tensor | None] = [None] * len(active)
        for j, r in enumerate(sub):
            values[r] = sum(vals[j] for vals, _ in tops) / len(tops)
            vectors[r] = tops[0][1][j]
        return values, vectors

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

    def evaluate(self, split: str, rows: list[int]) -> tuple[list[float], list[float]]:
        """Loss and accuracy of the rows at positions `rows` on a whole split."""
        index = self._index(rows)
        params = {k: v.detach()[index] for k, v in self.params.items()}
        loss, acc = self.problem.evaluate_with(lambda xb, yb: self.losses(params, xb, yb), split)
        return loss.tolist(), acc.tolist()

    def state_dict(self, it: int) -> dict[str, Any]:
        """The whole pack state after iteration `it`, as plain tensors and containers."""
        return {
            "step": it,
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "rows": list(self.rows),
            "groups": [
                {"members": list(g.members), "optimizer": g.optimizer.state_dict()}
                for g in self.groups
            ],
            "members": [m.record() for m in self.members],
        }

    def load_state_dict(self, state: dict[str, Any]) -> int:
        """Continue from `state_dict`'s output; returns the iteration it was taken after."""
        for m, record in zip(self.members, state["members"], strict=True):
            if record is not None:
                m.restore(record, self.problem.device)
        groups = []
        for saved in state["groups"]:
            optimizer = make_optimizer(self.members[saved["members"][0]].config, self.model)
            optimizer.load_state_dict(saved["optimizer"])
            groups.append(_OptGroup(list(saved["members"]), optimizer))
        self.params, self.rows, self.groups = {}, [], []
        if state["rows"]:
            params = {k: v.clone() for k, v in state["params"].items()}
            self.join(params, list(state["rows"]), groups)
        return state["step"]


# ----------------------------------------------------------------------------- the loop


def _setup(pack: _Pack, end: Callable[..., None]) -> None:
    """lambda0, eta_c and the rates of a new cohort's members (a failing member is an
    error); each then records its absolute eta_trgt and eta_init."""
    members, problem, rows = pack.members, pack.problem, pack.rows
    lambda0, vectors = pack.sharpness([True] * len(rows), [None] * len(rows), None)
    measure_loss = problem.loss_fn(pack.model, *problem.measurement_batches(1)[0])
    for r, i in enumerate(rows):
        m = members[i]
        c = m.config
        try:  # a member whose setup fails is an error of its own; the pack goes on
            m.out.update(lambda0=lambda0[r], eta_c=None)
            m.v_top = vectors[r]
            if c.eta_init == "catapult" or c.measure_eta_c:
                optimizer = make_optimizer(c, pack.model)
                m.out.update(critical_lr(c, measure_loss, pack.member_params(i), optimizer))
            m.rates = TrialRates(c, lambda0[r], m.out["eta_c"])
            m.out.update(eta_trgt=m.rates.eta_trgt, eta_init=m.rates.eta_init)
        except Exception as exc:
            m.out = {}
            end(i, status="error", error=f"{type(exc).__name__}: {exc}")


class _Loop:
    """Trains a pack's members to their ends, `slots` at a time: a member that ends leaves
    the stacked tensors and the next waiting one takes its place (continuous batching).
    Rows are then at different updates: each follows its own data order, schedule and
    measurement times."""

    def __init__(
        self,
        pack: _Pack,
        slots: int,
        finish: Callable[[_Member], None],
        report: Reporter | None,
        report_every: int,
        checkpoint: Checkpointer | None,
    ) -> None:
        self.pack, self.slots, self.finish = pack, slots, finish
        self.report, self.report_every, self.checkpoint = report, report_every, checkpoint
        self.first = pack.members[0].config
        self.ending: set[int] = set()
        self.waiting = [i for i, m in enumerate(pack.members) if m.start is None]

    def end(self, i: int, **fields: Any) -> None:
        """Member i ended: record `fields`, write its files; its rows leave at `leave`."""
        m = self.pack.members[i]
        m.out.update(fields)
        self.finish(m)
        self.ending.add(i)

    def leave(self) -> None:
        """The ended members' rows leave the pack."""
        self.pack.remove(self.ending)
        self.ending.clear()

    def admit(self, it: int) -> None:
        """Waiting members fill the free slots; each starts at update 1 in iteration `it`."""
        while self.waiting and len(self.pack.rows) < self.slots:
            take = self.slots - len(self.pack.rows)
            cohort = self.pack.cohort(self.waiting[:take], start=it - 1)
            del self.waiting[:take]
            _setup(cohort, self.end)
            cohort.remove(self.ending)
            self.ending.clear()
            self.pack.absorb(cohort)

    def run(self, start: int) -> None:
        it = start
        while True:
            self.admit(it)
            if not self.pack.rows:
                return
            self.iteration(it)
            it += 1

    def iteration(self, it: int) -> None:
        """One update of every running row, each at its own update number."""
        pack, members, problem, first = self.pack, self.pack.members, self.pack.problem, self.first
        ts = pack.updates(it)
        x, y, per_member = pack.inputs(ts)
        losses, accs = pack.losses(pack.params, x, y, per_member)
        loss_list, acc_list = losses.tolist(), accs.tolist()
        rows: dict[int, dict[str, Any]] = {}  # row position -> steps-table row
        for r, i in enumerate(pack.rows):
            m = members[i]
            m.loss0 = loss_list[r] if m.loss0 is None else m.loss0
            row = step_row(m.config, ts[r], None, loss_list[r], acc_list[r])  # rate: below
            if is_diverged(m.config, loss_list[r], m.loss0):
                set_rate(m.config, row, m.rates.rate(ts[r]))  # the rate it would have taken
                append_row(m.steps, row)
                self.end(i, status="diverged", diverged_step=ts[r])
            else:
                rows[r] = row
        if not rows:
            self.leave()
            return
        keep = list(rows)
        ts = [ts[r] for r in keep]
        # Measured at t: every row on the shared schedule, else the rows whose adaptive
        # warmup wants the curvature for its next rate.
        active = [
            measured_at(first.sharpness_every, t) or members[pack.rows[r]].rates.measures_at(t)
            for r, t in zip(keep, ts, strict=True)
        ]
        measured = any(active)
        # On the measurement batch, the training gradient's graph serves the HVPs too.
        reuse = measured and not self.ending and problem.measures_on_training_batch()
        grad_list = torch.autograd.grad(
            losses[keep].sum(), list(pack.params.values()), create_graph=reuse
        )
        graph = grad_list if reuse else None
        grads = {k: g.detach()[keep] for k, g in zip(pack.params, grad_list, strict=True)}
        losses_kept = [loss_list[r] for r in keep]
        rows = dict(zip(range(len(keep)), rows.values(), strict=True))
        self.leave()  # a diverged member's rows (maybe NaN) leave before any update
        live = [members[i] for i in pack.rows]
        if measured:
            self.measure(live, ts, active, grads, graph, rows)
        for r, m in enumerate(live):  # each member's rate, from its own measurements
            row = rows[r]
            set_rate(
                m.config,
                row,
                m.rates.rate(ts[r], row["sharpness"], row["preconditioned_sharpness"]),
            )
        evaluated = [r for r, t in enumerate(ts) if measured_at(first.eval_every, t)]
        if evaluated:
            test_loss, test_acc = pack.evaluate("test", evaluated)
            for j, r in enumerate(evaluated):
                rows[r]["test_loss"], rows[r]["test_accuracy"] = test_loss[j], test_acc[j]
        pack.step(
            grads, torch.tensor([rows[r]["lr"] for r in range(len(live))], dtype=torch.float64)
        )
        for r, m in enumerate(live):
            append_row(m.steps, rows[r])
            if m.rates.end_step == ts[r]:
                m.out["warmup_end_step"] = ts[r]
        # No progress report at a trial's last update: the final report follows the written
        # files (a scheduler such as ASHA stops a trial at max_t = num_steps).
        last = first.num_steps
        if self.report is not None and it % self.report_every == 0 and min(ts) < last:
            r = min(range(len(live)), key=losses_kept.__getitem__)
            lr = rows[r]["lr"]
            self.report(
                {"step": it, "train_loss": losses_kept[r], "lr": lr, "live_members": len(live)}
            )
        done = [r for r, t in enumerate(ts) if t == last]
        if done:
            self.finish_running(done)
            self.leave()
        every = first.checkpoint_every
        running = pack.rows or self.waiting  # after the last ending, the files are the record
        if self.checkpoint is not None and every and it % every == 0 and running:
            self.checkpoint(pack.state_dict(it))

    def measure(self, live, ts, active, grads, graph, rows) -> None:
        """Sharpness (and Adam's pre-conditioned sharpness) of the active rows, into `rows`."""
        pack, first = self.pack, self.first
        # With the fixed batch, the sharpness at update 1 is lambda0, measured at setup.
        fixed = first.sharpness_batch == "fixed"
        initial = [a and t == 1 and fixed for a, t in zip(active, ts, strict=True)]
        fresh = [a and not i for a, i in zip(active, initial, strict=True)]
        if any(fresh):
            v0 = [m.v_top for m in live]
            sharp, vectors = pack.sharpness(fresh, v0, ts, graph=graph)
        for r, m in enumerate(live):
            if fresh[r]:
                rows[r]["sharpness"], m.v_top = sharp[r], vectors[r]
            elif initial[r]:
                rows[r]["sharpness"] = m.out["lambda0"]
        adam = [a and m.config.optimizer.is_adam for a, m in zip(active, live, strict=True)]
        if any(adam):
            v0 = [m.v_pre for m in live]
            pre, vectors = pack.sharpness(adam, v0, ts, pack.preconditioner(grads), graph)
            for r, m in enumerate(live):
                if adam[r]:
                    rows[r]["preconditioned_sharpness"], m.v_pre = pre[r], vectors[r]

    def finish_running(self, done: list[int]) -> None:
        """Final status, evaluation and sharpness of the rows at positions `done`, which
        ran every update."""
        pack, first = self.pack, self.first
        members = [pack.members[pack.rows[r]] for r in done]
        train_loss, train_acc = pack.evaluate("train", done)
        for j, m in enumerate(members):
            m.out.update(final_status(m.config, pack.problem, train_loss[j], train_acc[j], m.loss0))
            if m.out["status"] == "diverged":
                self.end(pack.rows[done[j]])
            else:
                m.out["final_train_loss"], m.out["final_train_accuracy"] = (
                    train_loss[j],
                    train_acc[j],
                )
        completed = [r for r in done if not pack.members[pack.rows[r]].ended]
        if not completed:
            return
        test_loss, test_acc = pack.evaluate("test", completed)
        if first.sharpness_every:
            active = [r in completed for r in range(len(pack.rows))]
            v0 = [pack.members[i].v_top for i in pack.rows]
            final_sharp, _ = pack.sharpness(active, v0, [first.num_steps] * len(pack.rows))
        for j, r in enumerate(completed):
            i = pack.rows[r]
            m = pack.members[i]
            m.out["final_test_loss"], m.out["final_test_accuracy"] = test_loss[j], test_acc[j]
            if first.sharpness_every:
                m.out["final_sharpness"] = final_sharp[r]
            self.end(i)


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
    slots: int | None = None,
    checkpoint: Checkpointer | None = None,
    resume: dict[str, Any] | None = None,
    on_end: Callable[[TrialResult], None] | None = None,
) -> list[TrialResult]:
    """Run packable trials, `slots` at once (default: all); each writes its own files under
    `results/sweep` as it ends, and a waiting trial takes its slot.

    Returns one `TrialResult` per config, in the order given, each as `run_trial`
    would have produced it. Never raises for a failure inside the pack: members
    not ended when an exception strikes end as `error`; it raises only when a
    member's error summary cannot be written either. `forward` picks the
    packed forward pass ('auto': the model's own). `checkpoint` receives the pack's
    state every `checkpoint_every` iterations; `resume` (such a state) continues from it.
    `on_end` receives each trial's result once its files are written.
    """
    check_packable(configs)
    if slots is not None and slots < 1:
        raise ValueError(f"slots: must be a positive integer, got {slots!r}")
    start = time.perf_counter()
    members = [_Member(c, trial_summary(c, sweep, node)) for c in configs]

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
        if on_end is not None:
            on_end(_result(m))

    try:
        problem = problem or Problem(configs[0])
        pack = _Pack(members, problem, forward)
        it = 1 if resume is None else pack.load_state_dict(resume) + 1
        loop = _Loop(pack, slots or len(configs), finish, report, report_every, checkpoint)
        loop.run(it)
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
    return [_result(m) for m in members]


def _result(m: _Member) -> TrialResult:
    return TrialResult(m.summary["trial_id"], m.summary["status"], m.summary, m.steps)
