"""Trial packing for sweeps: which trials may share a process, and how many.

Trials pack together when they share model, data, batches, measurement
schedule, device and dtype (`trials.pack_key`); they may differ in
schedule, learning rates, optimizer, init scale and init seed. `pack_size` is
how many trials of a pack train at once (its slots); a pack holds up to
`QUEUE` times that, and a waiting trial takes the slot of one that ended
(continuous batching), so a pack's cost follows its trials' actual steps. Each
group is dealt round-robin (fast and slow trials mix) into a multiple of the
concurrent workers, so no worker idles while another runs a pack. `pack_size:
auto` picks the slots by device and model: by free memory on a GPU; on a CPU
by a short calibration of packed against one-at-a-time training steps, falling
back to 1 (no packing) when packing does not pay, as for compute-bound models.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence

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
    "MAX_PACK",
    "QUEUE",
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
# Training FLOPs per trial-step above which a CPU is compute-bound and packing gains
# nothing (measured: MLP 3072-256-256-10 at batch 256, ~0.9 GFLOP, ran 0.6x packed).
CPU_COMPUTE_BOUND_FLOPS = 3e8
MIN_GAIN = 1.2  # calibrated speed-up a pack must show to be worth it
QUEUE = 4  # a pack holds up to QUEUE x its slots in trials


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
    config: TrialConfig, k: int, *, steps: int = 3, problem: Problem | None = None
) -> tuple[float, float]:
    """Trial-steps per second of plain training steps (SGD, no curvature): one trial at a
    time, and `k` trials packed, each timed over at least `steps` steps and
    `CALIBRATION_S` seconds. A short calibration for choosing a pack size."""
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
        done, start = 0, time.perf_counter()
        while done < steps or time.perf_counter() - start < CALIBRATION_S:
            step()
            done += 1
        return trials * done / (time.perf_counter() - start)

    return rate(one_step, 1), rate(packed_step, k)


def auto_pack_size(
    config: TrialConfig, *, cpus: float = 1.0, problem: Problem | None = None, most: int = MAX_PACK
) -> int:
    """A pack size (at most `most`) for trials like `config` on its device: the measured
    fastest, never slower than unpacked."""
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
        return max(1, min(most, MAX_PACK, int(0.5 * free // per_member)))
    if 6 * batch * num_params > CPU_COMPUTE_BOUND_FLOPS:
        return 1
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus)))  # what one Ray worker gets
    try:
        best, best_rate = 1, None
        for k in sorted({min(c, most) for c in CANDIDATES} - {1}):
            single, packed = training_rates(config, k, problem=problem)
            best_rate = best_rate or single
            if packed > MIN_GAIN * best_rate:
                best, best_rate = k, packed
    finally:
        torch.set_num_threads(threads)
    return best


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
) -> int:
    """The slots of each pack: `pack_size`, or for `auto` the size calibrated on the first
    trial of the largest group; either at most the share of that group each of the
    `workers` (default: from Ray) trains.

    When a model of the sweep cannot run packed (a plugin whose forward vmap refuses),
    says so once on stderr and returns 1: the sweep runs unpacked.
    """
    if pack_size == 1 or not planned:
        return 1
    groups = _groups(planned)
    unpackable = unpackable_models(groups)
    for name, reason in unpackable.items():
        print(
            f"pack_size: model {name!r} cannot run packed ({reason}); running the sweep unpacked",
            file=sys.stderr,
        )
    if unpackable:
        return 1
    largest = max(groups, key=len)
    workers = concurrent_workers(cpus) if workers is None else workers
    share = math.ceil(len(largest) / workers)
    if pack_size != "auto":
        return min(int(pack_size), share)
    return 1 if share == 1 else auto_pack_size(largest[0].config, cpus=cpus, most=share)
