"""The training loop: K trials of one architecture and data order trained at once; a
single trial is a pack of one (`trials.trial.run_trial`).

`run_pack(configs)` stacks the members' parameters (`trials.stack.StackedPack`) and
runs one forward/backward for all of them (`trials.packable.packed_forward`). The
summed loss of independent members has a block-diagonal Hessian, so one HVP of the
sum gives every member's HVP and one batched Lanczos measures every member's
sharpness. Each member follows the trial rules of `trials.records` (divergence,
stuck, rows) and its own rates (`trials.rates`). A member that ends (diverged,
stuck, completed, error) writes its own files at once and its rows leave the
stacked tensors; with `slots` fewer than the trials, the next waiting trial takes
its place at its own update 1 (continuous batching), so a pack's cost tracks the
steps its members actually run. Every `checkpoint_every` updates the whole pack
state (parameters, optimizer states, generators, records) goes to `checkpoint`;
`resume` continues from such a state with the values of an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trials.config import TrialConfig
from trials.packable import check_packable
from trials.problem import Problem, critical_lr, make_optimizer
from trials.rates import TrialRates
from trials.records import (
    Checkpointer,
    Reporter,
    TrialResult,
    TrialStopped,
    append_row,
    final_status,
    is_diverged,
    measured_at,
    set_rate,
    step_row,
    trial_summary,
    write_results,
)
from trials.stack import Member, StackedPack

__all__ = ["run_pack"]


def _setup(pack: StackedPack, end: Callable[..., None]) -> None:
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


@dataclass
class _Update:
    """One running member's update within an iteration: its update number t, its
    steps-table row (filled in as the iteration goes) and its training loss."""

    member: Member
    t: int
    row: dict[str, Any]
    loss: float


class _Loop:
    """Trains a pack's members to their ends, `slots` at a time: a member that ends leaves
    the stacked tensors and the next waiting one takes its place (continuous batching).
    Rows are then at different updates: each follows its own data order, schedule and
    measurement times."""

    def __init__(
        self,
        pack: StackedPack,
        slots: int,
        finish: Callable[[Member], None],
        report: Reporter | None,
        report_every: int,
        checkpoint: Checkpointer | None,
        unrecorded: list[Exception],
    ) -> None:
        self.pack, self.slots, self.finish = pack, slots, finish
        self.unrecorded = unrecorded  # failures to write even an error summary
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
            for i in self.waiting[:take]:
                self.pack.members[i].began = time.perf_counter()
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
            try:
                self.iteration(it)
            except TrialStopped:
                raise
            except Exception as exc:  # the running members fail; the waiting ones still run
                if self.unrecorded:  # ... unless a trial cannot even record its error
                    raise
                self.fail_running(exc)
            it += 1

    def fail_running(self, exc: Exception) -> None:
        """Every running member ends as an error (an exception in the middle of an
        iteration leaves their stacked state unusable), and their rows leave."""
        for i in self.pack.rows:
            if not self.pack.members[i].ended:
                self.pack.members[i].out = {}  # an error's summary, as `run_pack` writes one
                self.end(i, status="error", error=f"{type(exc).__name__}: {exc}")
        self.ending.update(self.pack.rows)
        self.leave()

    def iteration(self, it: int) -> None:
        """One update of every running row, each at its own update number."""
        pack = self.pack
        ts = pack.updates(it)
        x, y, per_member = pack.inputs(ts)
        losses, accs = pack.losses(pack.params, x, y, per_member)
        started = self._start_updates(ts, losses.tolist(), accs.tolist())
        keep = [r for r, u in enumerate(started) if u is not None]
        if not keep:
            self.leave()
            return
        updates = [started[r] for r in keep]
        active = [self._measures(u) for u in updates]
        # On the measurement batch, the training gradient's graph serves the HVPs too.
        reuse = any(active) and not self.ending and pack.problem.measures_on_training_batch()
        grad_list = torch.autograd.grad(
            losses[keep].sum(), list(pack.params.values()), create_graph=reuse
        )
        grads = {k: g.detach()[keep] for k, g in zip(pack.params, grad_list, strict=True)}
        # Diverged rows (maybe NaN) leave before any update: `updates[r]` is row r from here.
        self.leave()
        if any(active):
            self.measure(updates, active, grads, grad_list if reuse else None)
        for u in updates:  # each member's rate, from its own measurements
            rate = u.member.rates.rate(u.t, u.row["sharpness"], u.row["preconditioned_sharpness"])
            set_rate(u.member.config, u.row, rate)
        self._evaluate_test(updates)
        pack.step(grads, torch.tensor([u.row["lr"] for u in updates], dtype=torch.float64))
        for u in updates:
            append_row(u.member.steps, u.row)
            if u.member.rates.end_step == u.t:
                u.member.out["warmup_end_step"] = u.t
        self._report(it, updates)
        done = [r for r, u in enumerate(updates) if u.t == self.first.num_steps]
        if done:
            self.finish_running(done)
            self.leave()
        every = self.first.checkpoint_every
        running = pack.rows or self.waiting  # after the last ending, the files are the record
        if self.checkpoint is not None and every and it % every == 0 and running:
            self.checkpoint(pack.state_dict(it))

    def _start_updates(
        self, ts: list[int], losses: list[float], accuracies: list[float]
    ) -> list[_Update | None]:
        """Each row's update from its training loss and accuracy; None for a member whose
        loss diverged (it ends here, its row recorded with the rate it would have taken)."""
        started: list[_Update | None] = []
        for r, i in enumerate(self.pack.rows):
            m = self.pack.members[i]
            m.loss0 = losses[r] if m.loss0 is None else m.loss0
            row = step_row(m.config, ts[r], None, losses[r], accuracies[r])  # rate: later
            if is_diverged(m.config, losses[r], m.loss0):
                set_rate(m.config, row, m.rates.rate(ts[r]))
                append_row(m.steps, row)
                self.end(i, status="diverged", diverged_step=ts[r])
                started.append(None)
            else:
                started.append(_Update(m, ts[r], row, losses[r]))
        return started

    def _measures(self, u: _Update) -> bool:
        """Whether the curvature is measured at the start of this update: on the shared
        schedule, or because the member's adaptive warmup wants it for its next rate."""
        return measured_at(self.first.sharpness_every, u.t) or u.member.rates.measures_at(u.t)

    def _evaluate_test(self, updates: list[_Update]) -> None:
        """Test loss and accuracy into the rows due for an evaluation."""
        due = [r for r, u in enumerate(updates) if measured_at(self.first.eval_every, u.t)]
        if due:
            test_loss, test_acc = self.pack.evaluate("test", due)
            for j, r in enumerate(due):
                updates[r].row["test_loss"], updates[r].row["test_accuracy"] = (
                    test_loss[j],
                    test_acc[j],
                )

    def _report(self, it: int, updates: list[_Update]) -> None:
        """A progress report every `report_every` iterations: the best row's loss and rate.

        None at a trial's last update: the final report follows the written files (a
        scheduler such as ASHA stops a trial at max_t = num_steps)."""
        if self.report is None or it % self.report_every:
            return
        if min(u.t for u in updates) >= self.first.num_steps:
            return
        best = min(updates, key=lambda u: u.loss)
        self.report(
            {
                "step": it,
                "train_loss": best.loss,
                "lr": best.row["lr"],
                "live_members": len(updates),
            }
        )

    def measure(
        self,
        updates: list[_Update],
        active: list[bool],
        grads: dict[str, torch.Tensor],
        graph: Sequence[torch.Tensor] | None,
    ) -> None:
        """Sharpness (and Adam's pre-conditioned sharpness) at the start of the active
        updates, into their rows; `graph`: the training gradient with its graph, when it
        was taken on the measurement batch."""
        pack, ts = self.pack, [u.t for u in updates]
        # With the fixed batch, the sharpness at update 1 is lambda0, measured at setup.
        fixed = self.first.sharpness_batch == "fixed"
        initial = [a and u.t == 1 and fixed for a, u in zip(active, updates, strict=True)]
        fresh = [a and not i for a, i in zip(active, initial, strict=True)]
        if any(fresh):
            v0 = [u.member.v_top for u in updates]
            sharp, vectors = pack.sharpness(fresh, v0, ts, graph=graph)
        for r, u in enumerate(updates):
            if fresh[r]:
                u.row["sharpness"], u.member.v_top = sharp[r], vectors[r]
            elif initial[r]:
                u.row["sharpness"] = u.member.out["lambda0"]
        adam = [
            a and u.member.config.optimizer.is_adam for a, u in zip(active, updates, strict=True)
        ]
        if any(adam):
            v0 = [u.member.v_pre for u in updates]
            pre, vectors = pack.sharpness(adam, v0, ts, pack.preconditioner(grads), graph)
            for r, u in enumerate(updates):
                if adam[r]:
                    u.row["preconditioned_sharpness"], u.member.v_pre = pre[r], vectors[r]

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
    """Run packable trials, `slots` at once; each writes its own files as it ends, and a
    waiting trial takes its slot.

    Returns one `TrialResult` per config, in the order given, each as `run_trial`
    would have produced it. Never raises for a failure inside the pack: the members
    training when an exception strikes end as `error` and the waiting ones still run
    (an exception outside training ends every member not ended yet as `error`); it
    raises only when a member's error summary cannot be written either.

    Args:
        configs: trials that can share a pack (`trials.packable.check_packable`).
        results: the results location (a local path or a URI) to write under, as
            `results/sweep/...`; None writes nothing.
        sweep: the sweep name the files are written under.
        report: receives progress every `report_every` iterations (e.g. Ray Tune).
        report_every: pack iterations between progress reports.
        node: the node name recorded with each trial (default: this host's name).
        problem: a `Problem` already built for these configs (saves loading the data).
        forward: the packed forward pass: 'auto' (the model's own), 'batched', 'vmap'.
        slots: how many trials train at once (default: all of them).
        checkpoint: receives the pack's state every `checkpoint_every` iterations.
        resume: such a state, to continue from with the values of an uninterrupted run.
        on_end: receives each trial's result once its files are written.
    """
    check_packable(configs)
    if slots is not None and slots < 1:
        raise ValueError(f"slots: must be a positive integer, got {slots!r}")
    start = time.perf_counter()
    members = [Member(c, trial_summary(c, sweep, node)) for c in configs]

    unrecorded: list[Exception] = []

    def finish(m: Member) -> None:
        m.ended = True
        m.summary.update(m.out)
        # From its admission to the pack (a waiting trial's wait is not its time).
        m.summary["wall_time_s"] = time.perf_counter() - (m.began or start)
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
        pack = StackedPack(members, problem, forward)
        it = 1 if resume is None else pack.load_state_dict(resume) + 1
        loop = _Loop(
            pack, slots or len(configs), finish, report, report_every, checkpoint, unrecorded
        )
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


def _result(m: Member) -> TrialResult:
    return TrialResult(m.summary["trial_id"], m.summary["status"], m.summary, m.steps)
