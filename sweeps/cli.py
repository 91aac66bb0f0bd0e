"""`warmup-sweep`: run, inspect, analyze and probe warmup sweeps.

Exit codes: 0 success (every trial ended: completed, diverged or stuck),
1 some trial ended in `error` or never ended, 2 bad spec, arguments or files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections import Counter
from pathlib import Path

import yaml

DEFAULT_RESULTS = "./sweep-results"


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every bad input
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="warmup-sweep", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a sweep spec (YAML path or bundled name)")
    run.add_argument("spec")
    run.add_argument("--results", default=DEFAULT_RESULTS, help="local dir or s3://, gs:// URI")
    run.add_argument("--address", help="join a running Ray cluster ('auto' or host:port)")
    run.add_argument("--resume", action="store_true", help="run only trials not ended yet")
    run.add_argument("--dry-run", action="store_true", help="list the trials, run nothing")
    run.add_argument("--num-cpus", type=int, help="CPUs of the embedded local Ray")

    status = sub.add_parser("status", help="counts by status and what is missing")
    status.add_argument("dir", help="a sweep directory (<results>/<sweep>)")

    analyze = sub.add_parser("analyze", help="phase diagrams, boundary and summary")
    analyze.add_argument("dir", help="a sweep directory (<results>/<sweep>)")
    analyze.add_argument("--out", help="output directory (default: <dir>/analysis)")

    probe = sub.add_parser("probe", help="lambda_H(0), eta_c and Adam's sharpness at init")
    probe.add_argument("spec_or_trial", help="a spec (its base is probed) or a trial config YAML")
    probe.add_argument("--json", action="store_true")

    sub.add_parser("specs", help="list bundled specs, models and datasets (plugins too)")

    bench = sub.add_parser("bench", help="benchmarks that print ratios side by side")
    bench.add_argument("which", choices=["sharpness", "overhead", "packing"])
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    bench.add_argument(
        "--device", default="cpu", help="packing and sharpness: the device to time (cpu, cuda)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `warmup-sweep` console script."""
    args = _parser().parse_args(argv)
    from sweeps.spec import SpecError
    from trials.data import DataError

    handlers = {
        "run": _run,
        "status": _status,
        "analyze": _analyze,
        "probe": _probe,
        "specs": _specs,
        "bench": _bench,
    }
    try:
        return handlers[args.command](args)
    except (SpecError, DataError, UsageError) as exc:
        print(f"warmup-sweep: error: {exc}", file=sys.stderr)
        return 2


def _check_results_location(results: str) -> None:
    if "://" not in results and Path(results).exists() and not Path(results).is_dir():
        raise UsageError(f"--results: {results} exists and is not a directory")


def _run(args: argparse.Namespace) -> int:
    from sweeps.runner import dry_run, run_sweep
    from sweeps.spec import load_spec

    spec, _ = load_spec(args.spec)
    _check_results_location(args.results)
    if args.dry_run:
        return dry_run(spec, args.results)
    outcome = run_sweep(spec, args.results, address=args.address, num_cpus=args.num_cpus)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(outcome.counts.items()))
    print(f"sweep {spec.name}: {counts or 'no trials'}; skipped {outcome.skipped} already ended")
    if outcome.stopped_early:
        print(f"{outcome.stopped_early} trials stopped early by ASHA (no files written)")
    if outcome.missing:
        print(f"{len(outcome.missing)} trials wrote no summary (see the Ray Tune logs)")
    print(f"results: {os.path.join(args.results, spec.name)}")
    return outcome.exit_code


def _sweep_dir(path: str) -> Path:
    d = Path(path)
    if not d.is_dir():
        raise UsageError(f"{path}: no such sweep directory")
    if not (d / "trials").is_dir() and not (d / "spec.yaml").exists():
        raise UsageError(f"{path}: not a sweep directory (no trials/ or spec.yaml)")
    return d


def _status(args: argparse.Namespace) -> int:
    from results import load
    from sweeps.spec import expand, parse_spec

    d = _sweep_dir(args.dir)
    with warnings.catch_warnings():  # unreadable files are listed below instead
        warnings.simplefilter("ignore")
        trials, _ = loaded = load(d)
    counts = Counter(trials["status"].astype(str)) if len(trials) else Counter()
    print(f"{d}: {len(trials)} trials with a summary")
    for status in ("completed", "diverged", "stuck", "error"):
        print(f"  {status:<10} {counts.get(status, 0)}")
    for path, reason in loaded.unreadable:
        print(f"  unreadable: {path}: {reason}")
    spec_file = d / "spec.yaml"
    if spec_file.exists():
        spec = parse_spec(yaml.safe_load(spec_file.read_text()), str(spec_file))
        if spec.search.kind == "grid":
            have = set(trials["trial_id"].astype(str)) if len(trials) else set()
            planned = expand(spec)
            missing = [p for p in planned if p.trial_id not in have]
            print(f"  missing    {len(missing)} of {len(planned)} planned")
            for p in missing[:20]:
                print(f"    {p.trial_id}  " + ", ".join(f"{k}={v}" for k, v in p.overrides.items()))
            if len(missing) > 20:
                print(f"    ... and {len(missing) - 20} more")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from results.report import analyze

    d = _sweep_dir(args.dir)
    out = Path(args.out) if args.out else d / "analysis"
    report = analyze(
        str(d),
        str(out),
        progress=lambda msg: print(msg, file=sys.stderr),
        expected_trials=_planned_count(d),
    )
    for path in report.paths:
        print(path)
    return 0


def _planned_count(sweep_dir: Path) -> int | None:
    """How many trials the sweep's grid plans (None for searches or without spec.yaml)."""
    from sweeps.spec import expand, parse_spec

    spec_file = sweep_dir / "spec.yaml"
    if not spec_file.exists():
        return None
    spec = parse_spec(yaml.safe_load(spec_file.read_text()), str(spec_file))
    return len(expand(spec)) if spec.search.kind == "grid" else None


def _probe(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from sweeps.spec import SpecError, _format_validation, load_spec
    from trials.config import TrialConfig
    from trials.probe import probe

    path = Path(args.spec_or_trial)
    data = None
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if isinstance(data, dict) and "base" not in data and "name" not in data:
        try:
            config = TrialConfig.model_validate(data)
        except ValidationError as exc:
            raise SpecError(f"{path}: {_format_validation(exc, '')}") from None
    else:
        spec, _ = load_spec(args.spec_or_trial)
        config = TrialConfig.model_validate(spec.base)
    result = probe(config)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for key, value in result.items():
        shown = f"{value:.6g}" if isinstance(value, float) else value
        print(f"{key:<26} {shown}")
    if result.get("eta_c_overshoots"):
        print(
            "warning: training at the constant rate eta_c blows up (loss x"
            f"{result['eta_c_check_ratio']:.3g}): the one-step estimate is above the divergence "
            "boundary here, so eta_init: catapult would start unstable",
            file=sys.stderr,
        )
    return 0


def _specs(args: argparse.Namespace) -> int:
    from sweeps.spec import bundled_specs, load_spec

    for name, path in bundled_specs().items():
        spec, _ = load_spec(path)
        print(f"{name:<24} {spec.description.strip().splitlines()[0] if spec.description else ''}")
    from trials.data import DATASET_REGISTRY
    from warmup_core.models import MODEL_REGISTRY

    for registry in (MODEL_REGISTRY, DATASET_REGISTRY):
        print(f"\n{registry.kind}s (built-in and installed plugins):")
        for entry in registry.entries():
            options = ", ".join(f"{k}: {o.describe()}" for k, o in entry.options.items())
            print(f"  {entry.name:<12} {entry.source:<28} {entry.description}")
            if options:
                print(f"  {'':<12} options: {options}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"sweeps.benchmarks.{args.which}")
    device = {"device": args.device} if args.which in ("packing", "sharpness") else {}
    result = module.run(quick=args.quick, **device)
    print(json.dumps(result, indent=2, default=str) if args.json else module.format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
