"""The stacked state of a pack: its members' parameters and optimizer states, one row per
running member, and what a pack computes on them (losses, sharpness, optimizer steps,
evaluation, checkpoints).

Two index spaces meet here: a member's index `i` (its position in the pack's configs,
fixed for the pack's life) and a row position `r` (its place in the stacked tensors,
which changes as members join and leave). `StackedPack.rows[r]` is the member at row r.
Optimizer groups hold contiguous rows of members that share an optimizer config and
started together, so Adam's step counts stay per member.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import vmap

from trials.config import TrialConfig
from trials.packable import packed_forward
from trials.problem import Problem, make_optimizer
from trials.rates import TrialRates
from trials.records import STEP_COLUMNS
from warmup_core import curvature, hvp
from warmup_core.models import WarmupModel
from warmup_core.optim import Adam, Optimizer

__all__ = ["Member", "OptGroup", "StackedPack"]

Params = dict[str, torch.Tensor]


@dataclass
class Member:
    """One trial of the pack: its config, what it has recorded, and how it ended."""

    config: TrialConfig
    summary: dict[str, Any]
    steps: dict[str, list] = field(default_factory=lambda: {k: [] for k in STEP_COLUMNS})
    out: dict[str, Any] = field(default_factory=dict)
    loss0: float | None = None
    ended: bool = False
    start: int | None = None  # pack iteration before its update 1 (None: still waiting)
    began: float | None = None  # time.perf_counter() when it was admitted
    generator: torch.Generator | None = None  # its Lanczos start vectors
    # Warm starts (`warmup_core.lanczos.LanczosInfo.warm_start`): the last top eigenvector
    # and crossing detector, of H and of Adam's pre-conditioned operator.
    v_top: torch.Tensor | None = None
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
class OptGroup:
    """Optimizer of running members (contiguous rows) that share an optimizer config and
    started together (so they are at the same update)."""

    members: list[int]
    optimizer: Optimizer


def _optimizer_key(config: TrialConfig) -> str:
    return json.dumps(config.optimizer.model_dump(mode="json"), sort_keys=True)


def _forward_multipliers(model: WarmupModel) -> tuple:
    return tuple(getattr(mod, "rule", None) and mod.rule.multiplier for mod in model.modules())


class StackedPack:
    """The stacked state of a pack's running members: parameters and optimizer states,
    one row per running member (`rows`: member indices in stacking order, grouped by
    optimizer). Members join in cohorts (`admit`), each at its own update 1."""

    def __init__(self, members: list[Member], problem: Problem, forward: str) -> None:
        self.members, self.problem = members, problem
        self.model = problem.build_model(members[0].config.init_seed, members[0].config.init_scale)
        self.multipliers = _forward_multipliers(self.model)
        self.params: Params = {}
        self.rows: list[int] = []
        self.groups: list[OptGroup] = []
        self.forward = packed_forward(self.model, forward)
        loss = problem.loss_and_accuracy
        self.per_member = {False: vmap(loss, in_dims=(0, None)), True: vmap(loss, in_dims=(0, 0))}
        c = members[0].config
        self.sharp_opts = dict(tol=c.sharpness_tol, max_iter=c.sharpness_max_iter)

    def cohort(self, indices: list[int], start: int) -> StackedPack:
        """A pack of members `indices` alone, fresh from their init, starting after pack
        iteration `start` (one optimizer group per optimizer config)."""
        new = copy.copy(self)  # the same model, forward and problem; no rows yet
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
            OptGroup(same, make_optimizer(self.members[same[0]].config, self.model))
            for same in (list(g) for _, g in itertools.groupby(order, key=key))
        ]
        stacked = {name: torch.stack([p[name].detach() for p in named]) for name in named[0]}
        new.join(stacked, order, groups)
        return new

    def join(self, stacked: Params, rows: list[int], groups: Sequence[OptGroup] = ()) -> None:
        """Rows `rows` with parameters `stacked` (and their optimizer groups) join the pack."""
        if self.rows:
            stacked = {k: torch.cat([v.detach(), stacked[k]]) for k, v in self.params.items()}
        self.params = {k: v.detach().requires_grad_(True) for k, v in stacked.items()}
        self.rows = self.rows + rows
        self.groups = self.groups + list(groups)

    def absorb(self, other: StackedPack) -> None:
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
        if len(set(ts)) == 1 or problem.same_batch_every_update():
            return (*problem.training_batch(ts[0]), False)
        batches = {t: problem.training_batch(t) for t in set(ts)}
        x, y = (torch.stack([batches[t][j] for t in ts]) for j in (0, 1))
        return x, y, True

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
        """Per row: top eigenvalue (and warm start for the next measurement) of H, or of
        P^-1/2 (H + l2 I) P^-1/2, on the measurement batches of each row's update `ts[r]`
        (None: init; several batches are averaged); NaN and None for inactive rows. `graph`: the training
        step's gradient taken with its graph, when that step is on the measurement batch
        (it saves a forward and a backward)."""
        l2 = None
        if precond is not None:  # coupled L2 weight decay: part of the operator Adam applies
            l2 = torch.tensor(
                [getattr(g.optimizer, "coupled_l2", 0.0) for g in self.groups for _ in g.members]
            )
        gens = [self.members[i].generator for i in self.rows]
        if graph is not None:
            op = hvp.BlockHVPOperator.from_gradients(
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
            op = hvp.BlockHVPOperator(
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
                    {k: v[s] for k, v in self.params.items()}, sliced, stacked=True
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
            groups.append(OptGroup(list(saved["members"]), optimizer))
        self.params, self.rows, self.groups = {}, [], []
        if state["rows"]:
            params = {k: v.clone() for k, v in state["params"].items()}
            self.join(params, list(state["rows"]), groups)
        return state["step"]
