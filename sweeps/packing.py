"""Trial packing for sweeps: which trials may share a process, and how many.

Trials pack together when they share model, data, batches, measurement
schedule, device and dtype (`trials.pack_key`); they may differ in
schedule, learning rates, optimizer, init scale and init seed. `pack_size` is
how many trials of a pack train at once (its slots); a pack holds up to
`QUEUE` times that, and a waiting trial takes the slot of one that ended
(continuous batching), so a pack's cost follows its trials' actual steps. Each
group is dealt round-robin (fast and slow trials mix) into a multiple of the
concurrent workers, so no worker idles while another runs a pack. A pack of one
slot runs its trials back to back in one Ray Tune trial, which saves the per-trial
round trips of Ray. `pack_size: auto` picks the slots by device and model: by free
memory on a GPU; on a CPU 1 (no packing) for models whose training steps are
compute-bound, else by a short calibration of packed against one-at-a-time
training steps, packing only when it measures faster. `PackChoice.reason` says in
one line what was chosen and why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ray
import torch
from torch.func import functional_call, vmap

from sweeps.grid import PlannedTrial
from trials import (
    Problem,
    TrialConfig,
    pack_key,
    packed_forward,
    resolve_device,
    unpackable_reason,
)

__all__ = [
    "CANDIDATES",
    "CPU_COMPUTE_BOUND_FLOPS",
    "MAX_PACK",
    "QUEUE",
    "PackChoice",
    "auto_pack_size",
    "concurrent_workers",
    "group_into_packs",
    "resolve_pack_size",
    "training_rates",
    "unpackable_models",
]

MAX_PACK = 64
CANDIDATES = (4, 16, 64)
CALIBRATION_S = 0.25  # shortest timing of a calibration: a few steps of a small model are noise
# Training FLOPs per trial-step (6 x batch x parameters) above which one trial already keeps
# a CPU core busy and packing gains nothing. Measured on 2 CPU cores, one thread: an MLP
# 64-128-128-10 at batch 512 (8e7) trained 1.77x faster packed 16 at a time; the
# quickstart's FCN-4-128 at batch 1024 (2.6e8) ran 5.5-6.7 ms a step alone and 7-8 ms per
# member packed; MLP 3072-256-256-10 at batch 256 (9e8) ran 0.6x packed.
CPU_COMPUTE_BOUND_FLOPS = 1.5e8
MIN_GAIN = 1.2  # calibrated speed-up a pack must show to be worth it
QUEUE = 4  # a pack holds up to QUEUE x its slots in trials


@dataclass(frozen=True)
class PackChoice:
    """How many trials of a pack train at once (`slots`), and one line saying why."""

    slots: int
    reason: str


def _groups(planned: Sequence[PlannedTrial]) -> list[list[PlannedTrial]]:
    """Packable trials grouped by `pack_key`, in first-seen order."""
    groups: dict[str, list[PlannedTrial]] = {}
    for p in planned:
        groups.setdefault(pack_key(p.config), []).append(p)
    return list(groups.values())


def group_into_packs(
    planned: Sequence[PlannedTrial], slots: int, workers: int = 1
) -> list[list[PlannedTrial]]:
    """Packable trials grouped and dealt round-robin into packs that train `slots` at a
    time: at most `QUEUE x slots` trials per pack, and a multiple of `workers` packs per
    group (while the group has that many trials)."""
    if slots < 1:
        raise ValueError(f"pack_size: must be a positive integer, got {slots!r}")
    packs = []
    for group in _groups(planned):
        n = math.ceil(len(group) / (QUEUE * slots))
        n = min(len(group), workers * math.ceil(n / workers))
        packs += [group[j::n] for j in range(n)]
    return packs


def _activations_per_example(problem: Problem, config: TrialConfig) -> int:
    """Numbers every module outputs for one example (what backward keeps, roughly)."""
    model = problem.build_model(config.init_seed).cpu()
    total = 0

    def count(_module, _inputs, output) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad():
            x = problem.x_train[:1].cpu()
            model(x if problem.is_text else x.float())
    finally:
        for h in hooks:
            h.remove()
    return total


def training_rates(
    config: TrialConfig, ks: Sequence[int], *, steps: int = 3, problem: Problem | None = None
) -> dict[int, float]:
    """Trial-steps per second of plain training steps (SGD, no curvature): under key 1 one
    trial at a time, under each k of `ks` k trials packed; each timed over at least `steps`
    steps and `CALIBRATION_S` seconds. A short calibration for choosing a pack size."""
    problem = problem or Problem(config)
    model = problem.build_model(config.init_seed)
    idx = problem.batch(1)
    x, y = problem.x_train[idx], problem.y_train[idx]
    single = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    forward = packed_forward(model)
    per_member = vmap(problem.loss_and_accuracy, in_dims=(0, None))

    def one_step() -> None:
        loss = problem.loss_and_accuracy(functional_call(model, single, (x,)), y)[0]
        grads = torch.autograd.grad(loss, list(single.values()))
        with torch.no_grad():
            for p, g in zip(single.values(), grads, strict=True):
                p.sub_(1e-6 * g)
        loss.item()

    def packed_step(stacked: dict[str, torch.Tensor]) -> None:
        losses = per_member(forward(stacked, x), y)[0]
        grads = torch.autograd.grad(losses.sum(), list(stacked.values()))
        with torch.no_grad():
            for p, g in zip(stacked.values(), grads, strict=True):
                p.sub_(1e-6 * g)
        losses.tolist()

    def rate(step: Callable[[], None], trials: int) -> float:
        step()  # warm-up: allocations and first-call dispatch
        done, start = 0, time.perf_counter()
        while done < steps or time.perf_counter() - start < CALIBRATION_S:
            step()
            done += 1
        return trials * done / (time.perf_counter() - start)

    rates = {1: rate(one_step, 1)}
    for k in ks:
        stacked = {n: torch.stack([p.detach()] * k).requires_grad_(True) for n, p in single.items()}
        rates[k] = rate(lambda s=stacked: packed_step(s), k)
    return rates


def auto_pack_size(
    config: TrialConfig, *, cpus: float = 1.0, problem: Problem | None = None, most: int = MAX_PACK
) -> PackChoice:
    """A pack size (at most `most`) for trials like `config` on its device, never slower
    than unpacked as far as measured, with the reason: on a GPU the most members its
    free memory holds; on a CPU 1 for compute-bound training steps, else the calibrated
    fastest."""
    problem = problem or Problem(config)
    model = problem.build_model(config.init_seed)
    num_params = sum(p.numel() for p in model.parameters())
    batch = problem.batch_size()
    device = resolve_device(config.device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        elem = torch.finfo(problem.dtype).bits // 8
        # Params, grads, two optimizer moments, the Lanczos basis, and 3x the activations.
        per_member = elem * (
            num_params * (4 + config.sharpness_max_iter)
            + 3 * batch * _activations_per_example(problem, config)
        )
        fits = int(0.5 * free // per_member)
        return PackChoice(
            max(1, min(most, MAX_PACK, fits)),
            f"{device}: half its free memory ({free / 2**30:.1f} GiB) holds {fits} members "
            f"of {per_member / 2**20:.0f} MiB (at most {min(most, MAX_PACK)})",
        )
    flops = 6 * batch * num_params
    if flops > CPU_COMPUTE_BOUND_FLOPS:
        return PackChoice(
            1,
            f"cpu: a training step of {flops:.1e} FLOPs (6 x batch {batch} x {num_params:,} "
            f"parameters) keeps a core busy alone (over {CPU_COMPUTE_BOUND_FLOPS:.1e}), so "
            "packing cannot gain; no calibration",
        )
    candidates = sorted({min(c, most) for c in CANDIDATES} - {1})
    if not candidates:
        return PackChoice(1, f"cpu: at most {most} trial per worker")
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus)))  # what one Ray worker gets
    try:
        rates = training_rates(config, candidates, problem=problem)
    finally:
        torch.set_num_threads(threads)
    best = 1
    for k in candidates:
        if rates[k] > MIN_GAIN * rates[best]:
            best = k
    measured = ", ".join(f"{k}: {rates[k] / rates[1]:.2f}x" for k in candidates)
    verdict = (
        f"packed {best} at a time trained fastest"
        if best > 1
        else f"no pack size trained {MIN_GAIN}x faster than one at a time"
    )
    return PackChoice(
        best, f"cpu: calibrated trial-steps/s packed vs alone ({measured}); {verdict}"
    )


def unpackable_models(groups: Sequence[Sequence[PlannedTrial]]) -> dict[str, str]:
    """Models (by name) of these pack groups that cannot run packed, with the reason."""
    reasons: dict[str, str] = {}
    for group in groups:
        config = group[0].config
        if config.model.name not in reasons:
            reason = unpackable_reason(Problem(config), config)
            if reason is not None:
                reasons[config.model.name] = reason
    return reasons


def concurrent_workers(cpus: float) -> int:
    """Trials of `cpus` CPUs each that the connected Ray cluster runs at once (1 without Ray)."""
    if not ray.is_initialized():
        return 1
    return max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus, 1e-9)))


def resolve_pack_size(
    pack_size: int | str,
    planned: Sequence[PlannedTrial],
    cpus: float,
    workers: int | None = None,
) -> PackChoice:
    """The slots of each pack and why: `pack_size`, or for `auto` the size calibrated on
    the first trial of the largest group; either at most the share of that group each of
    the `workers` (default: from Ray) trains.

    When a model of the sweep cannot run packed (a plugin whose forward vmap refuses),
    the sweep runs unpacked (1), and the reason says so.
    """
    if pack_size == 1 or not planned:
        return PackChoice(1, "pack_size 1")
    groups = _groups(planned)
    unpackable = unpackable_models(groups)
    if unpackable:
        why = "; ".join(f"model {name!r} cannot run packed ({r})" for name, r in unpackable.items())
        return PackChoice(1, f"{why}; running the sweep unpacked")
    largest = max(groups, key=len)
    workers = concurrent_workers(cpus) if workers is None else workers
    share = math.ceil(len(largest) / workers)
    if pack_size != "auto":
        slots = min(int(pack_size), share)
        if slots == int(pack_size):
            return PackChoice(slots, f"pack_size {pack_size}")
        return PackChoice(
            slots,
            f"pack_size {pack_size}, capped at {share}: {len(largest)} trials over {workers} workers",
        )
    if share == 1:
        return PackChoice(1, f"{len(largest)} trials over {workers} workers: one each")
    return auto_pack_size(largest[0].config, cpus=cpus, most=share)
