"""Benchmark of sharpness measurement: HVP methods, Lanczos vs power iteration vs
PyHessian, and warm starts over a short training run (the cost of tracking during a
trial is `warmup-sweep bench tracking`).

Run via ``warmup-sweep bench sharpness [--json] [--quick]`` or ``run()`` /
``format_table()``. Timings are medians of repeated wall-clock measurements on
whatever device the tensors live on (CPU here); ratios matter, not seconds.

Models, each on one fixed batch, MSE loss (0.5 * squared error summed over outputs,
averaged over examples):
  * mlp: 3072-512-512-512-10 ReLU MLP on 2048 random examples;
  * cnn: 3x32x32 input, three 3x3 ReLU conv layers (16, 32, 32 channels, stride 2)
    and a linear readout, on 512 random examples (CPU time kept reasonable).
"""

from __future__ import annotations

import importlib.util
import itertools
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from warmup_core.curvature import top_eigenpairs
from warmup_core.hvp import HVP_METHODS, HVPOperator, model_loss_fn
from warmup_core.lanczos import lanczos_tridiagonal, tridiagonal_matrix

TOL = 1e-3  # target relative accuracy of the top eigenvalue


def half_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 * squared error summed over outputs, averaged over the batch."""
    # Written out: torch.func jvp-of-grad fails on F.mse_loss (ZeroTensor error, torch 2.13).
    return 0.5 * ((out - target) ** 2).sum(dim=-1).mean()


def _mlp(widths: list[int]) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _cnn(channels: list[int], side: int, out_dim: int) -> nn.Module:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(channels):
        layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU()]
        side = (side + 1) // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels[-1] * side * side, out_dim))


def _problems(quick: bool, seed: int, device: str = "cpu") -> dict[str, dict]:
    torch.manual_seed(seed)
    if quick:
        specs = {
            "mlp": (_mlp([48, 32, 32, 10]), (48,), 128),
            "cnn": (_cnn([3, 4, 8], 8, 10), (3, 8, 8), 64),
        }
    else:
        specs = {
            "mlp": (_mlp([3072, 512, 512, 512, 10]), (3072,), 2048),
            "cnn": (_cnn([3, 16, 32, 32], 32, 10), (3, 32, 32), 512),
        }
    problems = {}
    for name, (model, in_shape, n) in specs.items():
        model = model.to(device)
        x, y = torch.randn(n, *in_shape).to(device), torch.randn(n, 10).to(device)
        params = {k: v.detach() for k, v in model.named_parameters()}
        problems[name] = {
            "model": model,
            "data": (x, y),
            "loss_fn": model_loss_fn(model, half_mse, x, y),
            "params": params,
            "num_params": sum(p.numel() for p in params.values()),
            "batch_size": n,
        }
    return problems


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, threads, lazy init
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _gradient_time(loss_fn, params, repeats: int) -> float:
    def grad():
        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        torch.autograd.grad(loss_fn(leaves), list(leaves.values()))

    return _median_time(grad, repeats)


def bench_hvp_methods(problem: dict, repeats: int) -> dict:
    """Seconds per gradient, and per HVP (plus one-off build) for each method."""
    loss_fn, params = problem["loss_fn"], problem["params"]
    t_grad = _gradient_time(loss_fn, params, repeats)
    gen = torch.Generator().manual_seed(0)
    out = {"gradient_s": t_grad, "methods": {}}
    for method in HVP_METHODS:
        start = time.perf_counter()
        op = HVPOperator(loss_fn, params, method=method)
        build = time.perf_counter() - start
        v = torch.randn(op.dim, generator=gen)
        t_hvp = _median_time(lambda op=op, v=v: op(v), repeats)
        out["methods"][method] = {
            "build_s": build,
            "hvp_s": t_hvp,
            "hvp_over_gradient": t_hvp / t_grad,
        }
    return out


def _power_iteration(op: HVPOperator, tol: float, max_iter: int, gen, reference: float):
    """PyHessian's rule on our operator: stop when the Rayleigh quotient changes < tol.

    Returns (estimate, HVPs, seconds) at the stopping rule, and the first iteration whose
    estimate is within TOL of ``reference`` (iterating on past the rule if needed).
    """
    v = torch.randn(op.dim, generator=gen)
    v /= v.norm()
    start = time.perf_counter()
    estimate, first_accurate, stopped = None, None, None
    for i in range(1, max_iter + 1):
        hv = op(v)
        new = float(v @ hv)
        if first_accurate is None and abs(new - reference) <= TOL * abs(reference):
            first_accurate = i
        changed = None if estimate is None else abs(new - estimate) / (abs(estimate) + 1e-6)
        if stopped is None and changed is not None and changed < tol:
            stopped = (new, i, time.perf_counter() - start)
        estimate, v = new, hv / hv.norm()
        if stopped is not None and first_accurate is not None:
            break
    return stopped or (estimate, max_iter, time.perf_counter() - start), first_accurate


def _lanczos_hvps_to_accuracy(op: HVPOperator, max_iter: int, gen, reference: float):
    """Fewest Lanczos steps whose top Ritz value is within TOL of ``reference`` (oracle)."""
    q = torch.randn(op.dim, generator=gen)
    alphas, betas = lanczos_tridiagonal(op, q / q.norm(), max_iter)
    for m in range(1, len(alphas) + 1):
        top = float(np.linalg.eigvalsh(tridiagonal_matrix(alphas[:m], betas[: m - 1]))[-1])
        if abs(top - reference) <= TOL * abs(reference):
            return m
    return None


def _pyhessian_status() -> tuple[bool, str]:
    if importlib.util.find_spec("pyhessian") is None:
        return False, "not installed (pip install pyhessian --no-deps)"
    try:
        from pyhessian import hessian  # noqa: F401
    except Exception as exc:  # an import-time incompatibility is a result to report
        return False, f"import failed: {exc!r}"
    return True, "ok"


def _run_pyhessian(problem: dict, tol: float, seed: int, reference: float) -> dict:
    import sys

    import pyhessian  # noqa: F401  (the package re-exports a class named like the module)

    ph = sys.modules["pyhessian.hessian"]

    calls = {"n": 0}
    original = ph.hessian_vector_product

    def counted(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    model = problem["model"]
    torch.manual_seed(seed)
    ph.hessian_vector_product = counted
    try:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # its .backward(create_graph=True)
            h = ph.hessian(model, half_mse, data=problem["data"], cuda=False)
            values, _ = h.eigenvalues(maxIter=500, tol=tol, top_n=1)
        elapsed = time.perf_counter() - start
    finally:
        ph.hessian_vector_product = original
        for p in model.parameters():
            p.grad = None  # PyHessian leaves a create_graph cycle in .grad
    return {
        "tol": tol,
        "eigenvalue": float(values[0]),
        "rel_error": abs(float(values[0]) - reference) / abs(reference),
        "num_hvps": calls["n"],
        "time_s": elapsed,
    }


def bench_top_eigenvalue(problem: dict, seed: int, max_iter: int, repeats: int) -> dict:
    """Time and HVPs to the top eigenvalue: Lanczos vs power iteration vs PyHessian."""
    loss_fn, params = problem["loss_fn"], problem["params"]
    ref = top_eigenpairs(loss_fn, params, tol=1e-6, max_iter=max_iter)
    reference = ref.top
    out: dict = {"reference": reference, "reference_hvps": ref.num_hvps}

    # Best of a few identical solves: the machine may be shared, and noise only adds time.
    times = []
    for _ in range(repeats):
        gen = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        lz = top_eigenpairs(loss_fn, params, tol=TOL, max_iter=max_iter, generator=gen)
        times.append(time.perf_counter() - start)
    out["lanczos"] = {
        "time_s": min(times),
        "num_hvps": lz.num_hvps,
        "rel_error": abs(lz.top - reference) / abs(reference),
        "converged": lz.converged,
        "hvps_to_tol_oracle": _lanczos_hvps_to_accuracy(
            HVPOperator(loss_fn, params), max_iter, torch.Generator().manual_seed(seed), reference
        ),
    }

    op = HVPOperator(loss_fn, params)
    (estimate, iters, seconds), first_ok = _power_iteration(
        op, TOL, 5 * max_iter, torch.Generator().manual_seed(seed), reference
    )
    out["power"] = {
        "time_s": seconds,
        "num_hvps": iters,
        "rel_error": abs(estimate - reference) / abs(reference),
        "hvps_to_tol_oracle": first_ok,
    }

    available, why = _pyhessian_status()
    out["pyhessian"] = {"available": available, "reason": why}
    if available:
        try:
            runs = [_run_pyhessian(problem, TOL, seed, reference)]
            # Its stopping rule (change between iterates) can stop short of the accuracy;
            # tighten once so the comparison is at equal accuracy.
            if runs[0]["rel_error"] > TOL:
                runs.append(_run_pyhessian(problem, TOL / 10, seed, reference))
            out["pyhessian"].update(runs=runs, **runs[-1])
        except Exception as exc:
            out["pyhessian"].update(available=False, reason=f"failed at run time: {exc!r}")
    return out


def bench_warm_start(problem: dict, steps: int, max_iter: int, seed: int) -> dict:
    """HVPs to re-measure sharpness after each GD step (eta = 1/lambda0), cold vs warm."""
    loss_fn, params = problem["loss_fn"], dict(problem["params"])
    first = top_eigenpairs(loss_fn, params, tol=TOL, max_iter=max_iter)
    eta, v0 = 1.0 / first.top, first.warm_start
    gen = torch.Generator().manual_seed(seed)
    cold_hvps, warm_hvps, max_disagreement = [], [], 0.0
    for _ in range(steps):
        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        grads = torch.autograd.grad(loss_fn(leaves), list(leaves.values()))
        params = {
            k: (v - eta * g).detach() for (k, v), g in zip(leaves.items(), grads, strict=True)
        }
        cold = top_eigenpairs(loss_fn, params, tol=TOL, max_iter=max_iter, generator=gen)
        warm = top_eigenpairs(loss_fn, params, tol=TOL, max_iter=max_iter, v0=v0)
        v0 = warm.warm_start
        cold_hvps.append(cold.num_hvps)
        warm_hvps.append(warm.num_hvps)
        max_disagreement = max(max_disagreement, abs(warm.top - cold.top) / abs(cold.top))
    return {
        "steps": steps,
        "lr": eta,
        "cold_hvps": cold_hvps,
        "warm_hvps": warm_hvps,
        "warm_over_cold": sum(warm_hvps) / sum(cold_hvps),
        "max_rel_disagreement": max_disagreement,
    }


def run(quick: bool = False, seed: int = 0, device: str = "cpu") -> dict:
    """Run the whole benchmark; ``quick`` uses tiny models (seconds, for smoke tests).
    ``device``: where tensors live ('cuda' is untested on a GPU so far)."""
    repeats, solver_repeats, max_iter, warm_steps = (3, 2, 60, 3) if quick else (5, 2, 150, 10)
    result: dict = {
        "quick": quick,
        "seed": seed,
        "tol": TOL,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "models": {},
    }
    for name, problem in _problems(quick, seed, device).items():
        result["models"][name] = {
            "num_params": problem["num_params"],
            "batch_size": problem["batch_size"],
            "hvp": bench_hvp_methods(problem, repeats),
            "top_eigenvalue": bench_top_eigenvalue(problem, seed, max_iter, solver_repeats),
            "warm_start": bench_warm_start(problem, warm_steps, max_iter, seed),
        }
    return result


def format_table(result: dict) -> str:
    """Human-readable tables of the ratios in ``result`` (from :func:`run`)."""
    lines = [
        f"sharpness benchmark (torch {result['torch']}, {result['threads']} threads, "
        f"tol {result['tol']:g}{', quick' if result['quick'] else ''})"
    ]
    for name, m in result["models"].items():
        hvp, top, warm = m["hvp"], m["top_eigenvalue"], m["warm_start"]
        lines += ["", f"== {name}: {m['num_params']:,} params, batch {m['batch_size']}"]
        lines.append(f"gradient: {hvp['gradient_s'] * 1e3:.1f} ms")
        lines.append(f"{'HVP method':<10} {'build ms':>9} {'HVP ms':>9} {'HVP/grad':>9}")
        for method, r in hvp["methods"].items():
            lines.append(
                f"{method:<10} {r['build_s'] * 1e3:>9.1f} {r['hvp_s'] * 1e3:>9.1f} "
                f"{r['hvp_over_gradient']:>9.2f}"
            )
        lines.append(f"top eigenvalue {top['reference']:.6g} (reference, tol 1e-6)")
        lines.append(f"{'solver':<12} {'time s':>8} {'HVPs':>6} {'rel err':>9} {'HVPs to tol':>12}")
        for solver in ("lanczos", "power"):
            r = top[solver]
            oracle = r["hvps_to_tol_oracle"]
            lines.append(
                f"{solver:<12} {r['time_s']:>8.2f} {r['num_hvps']:>6} {r['rel_error']:>9.1e} "
                f"{oracle if oracle is not None else '-':>12}"
            )
        ph = top["pyhessian"]
        if ph["available"]:
            for r in ph["runs"]:
                lines.append(
                    f"{'pyhessian':<12} {r['time_s']:>8.2f} {r['num_hvps']:>6} "
                    f"{r['rel_error']:>9.1e} {'(tol ' + format(r['tol'], 'g') + ')':>12}"
                )
            lines.append(
                f"PyHessian / Lanczos time at equal accuracy: "
                f"{ph['time_s'] / top['lanczos']['time_s']:.1f}x"
            )
        else:
            lines.append(f"pyhessian: unavailable ({ph['reason']})")
        lines.append(
            f"warm start over {warm['steps']} GD steps: {sum(warm['warm_hvps'])} vs "
            f"{sum(warm['cold_hvps'])} HVPs cold (warm/cold {warm['warm_over_cold']:.2f})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    res = run(quick=args.quick)
    print(json.dumps(res, indent=2) if args.json else format_table(res))
