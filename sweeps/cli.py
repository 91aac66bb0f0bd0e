"""`warmup-sweep`: run, inspect, analyze and probe warmup sweeps.

Results locations (`run --results`, `status`, `analyze`) are local paths or
`s3://` / `gs://` URIs alike. Exit codes: 0 success (every trial ended:
completed, diverged, stuck or stopped), 1 some trial ended in `error` or never
ended, 2 bad spec, arguments, files, or a cluster that cannot be joined.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import yaml

__all__ = ["DEFAULT_RESULTS", "UsageError", "main"]

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
    run.add_argument(
        "--shared-results",
        action="store_true",
        help="with --address: the local --results path is shared storage every node mounts",
    )
    # Every run resumes; the old flag gets a one-line explanation instead of a silent no-op.
    run.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    run.add_argument("--dry-run", action="store_true", help="list the trials, run nothing")
    run.add_argument("--num-cpus", type=int, help="CPUs of the embedded local Ray")

    status = sub.add_parser("status", help="counts by status and what is missing")
    status.add_argument("dir", help="a sweep directory (<results>/<sweep>), local or URI")

    analyze = sub.add_parser("analyze", help="phase diagrams, boundary and summary")
    analyze.add_argument("dir", help="a sweep directory (<results>/<sweep>), local or URI")
    analyze.add_argument(
        "--out",
        help="local output directory (default: <dir>/analysis, or ./<sweep>-analysis for a URI)",
    )

    probe = sub.add_parser("probe", help="lambda_H(0), eta_c and Adam's sharpness at init")
    probe.add_argument("spec_or_trial", help="a spec (its base is probed) or a trial config YAML")
    probe.add_argument("--json", action="store_true")

    sub.add_parser("specs", help="list bundled specs, models and datasets (plugins too)")

    bench = sub.add_parser("bench", help="benchmarks that print ratios side by side")
    bench.add_argument(
        "which", choices=["sharpness", "tracking", "orchestration", "packing", "store", "gpu"]
    )
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    bench.add_argument(
        "--trials",
        type=int,
        nargs="+",
        metavar="N",
        help="store: sweep sizes to measure (default 1000 10000 50000)",
    )
    bench.add_argument(
        "--device",
        help="packing, sharpness and gpu: the device to time (default cpu; gpu: cuda)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `warmup-sweep` console script."""
    args = _parser().parse_args(argv)
    from sweeps import ClusterError, SpecError
    from trials import DataError

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
    except (SpecError, DataError, UsageError, ClusterError) as exc:
        print(f"warmup-sweep: error: {exc}", file=sys.stderr)
        return 2


def _is_uri(location: str) -> bool:
    return "://" in location


def _check_results_location(results: str) -> None:
    if not _is_uri(results) and Path(results).exists() and not Path(results).is_dir():
        raise UsageError(f"--results: {results} exists and is not a directory")


def _run(args: argparse.Namespace) -> int:
    from results import child
    from sweeps import dry_run, load_spec, run_sweep

    if args.resume:
        raise UsageError(
            "--resume was removed: every run skips the trials that already ended, "
            "so re-running the same command resumes"
        )
    if args.address and not _is_uri(args.results) and not args.shared_results:
        raise UsageError(
            f"--results {args.results} is a local path, but --address runs trials on other "
            "nodes, which would write to their own disks: give an s3:// or gs:// URI, or add "
            "--shared-results if every node mounts this path"
        )
    spec, _ = load_spec(args.spec)
    _check_results_location(args.results)
    if args.dry_run:
        return dry_run(spec, args.results)
    outcome = run_sweep(spec, args.results, address=args.address, num_cpus=args.num_cpus)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(outcome.counts.items()))
    print(f"sweep {spec.name}: {counts or 'no trials'}; skipped {outcome.skipped} already ended")
    if outcome.stopped_early:
        print(f"{outcome.stopped_early} trials stopped early by ASHA (steps and summary written)")
    if outcome.missing:
        print(f"{len(outcome.missing)} trials wrote no summary (see the Ray Tune logs)")
    print(f"results: {child(args.results, spec.name)}")
    return outcome.exit_code


def _sweep_dir(location: str) -> str:
    """The sweep directory (local path or URI) after checking it holds a sweep."""
    from results.store import is_sweep_dir

    try:
        found = is_sweep_dir(location)
    except (OSError, ValueError) as exc:  # unknown scheme, unreachable bucket, bad credentials
        raise UsageError(f"{location}: cannot read: {exc}".replace("\n", " ")) from None
    if not found and not _is_uri(location) and not Path(location).is_dir():
        raise UsageError(f"{location}: no such sweep directory")
    if not found:
        raise UsageError(f"{location}: not a sweep directory (no trials/ or spec.yaml)")
    return location


def _read_spec(sweep_dir: str):
    """The sweep's resolved spec.yaml, or None without one."""
    from results import child
    from results.store import read_text
    from sweeps import parse_spec

    text = read_text(child(sweep_dir, "spec.yaml"))
    if text is None:
        return None
    return parse_spec(yaml.safe_load(text), child(sweep_dir, "spec.yaml"))


def _status(args: argparse.Namespace) -> int:
    from results import STATUSES, read_statuses
    from sweeps import expand

    d = _sweep_dir(args.dir)
    unreadable: list[tuple[str, str]] = []
    statuses = read_statuses(d, unreadable=unreadable)
    counts = Counter(statuses.values())
    print(f"{d}: {len(statuses)} trials with a summary")
    for status in STATUSES:
        print(f"  {status:<10} {counts.get(status, 0)}")
    for path, reason in unreadable:
        print(f"  unreadable: {path}: {reason}")
    spec = _read_spec(d)
    if spec is not None and spec.search.kind == "grid":
        planned = expand(spec)
        missing = [p for p in planned if p.trial_id not in statuses]
        print(f"  missing    {len(missing)} of {len(planned)} planned")
        for p in missing[:20]:
            print(f"    {p.trial_id}  " + ", ".join(f"{k}={v}" for k, v in p.overrides.items()))
        if len(missing) > 20:
            print(f"    ... and {len(missing) - 20} more")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from results.report import analyze

    d = _sweep_dir(args.dir)
    if args.out:
        out = Path(args.out)
    elif _is_uri(d):
        out = Path(f"{d.partition('?')[0].rstrip('/').rsplit('/', 1)[-1]}-analysis")
    else:
        out = Path(d) / "analysis"
    report = analyze(
        d,
        str(out),
        progress=lambda msg: print(msg, file=sys.stderr),
        expected_trials=_planned_count(d),
    )
    for path in report.paths:
        print(path)
    return 0


def _planned_count(sweep_dir: str) -> int | None:
    """How many trials the sweep's grid plans (None for searches or without spec.yaml)."""
    from sweeps import expand

    spec = _read_spec(sweep_dir)
    if spec is None or spec.search.kind != "grid":
        return None
    return len(expand(spec))


def _probe(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from sweeps import SpecError, format_validation_error, load_spec
    from trials import TrialConfig, probe

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
            raise SpecError(f"{path}: {format_validation_error(exc)}") from None
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
    from sweeps import bundled_specs, load_spec

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
    if args.trials and args.which != "store":
        raise UsageError("--trials applies to bench store only")
    if args.trials and min(args.trials) < 1:
        raise UsageError("--trials: sizes must be positive")
    options = {"sizes": tuple(args.trials)} if args.trials else {}
    if args.device and args.which not in ("packing", "sharpness", "gpu"):
        raise UsageError("--device applies to bench packing, sharpness and gpu only")
    if args.device:
        options["device"] = args.device
    result = module.run(quick=args.quick, **options)
    print(json.dumps(result, indent=2, default=str) if args.json else module.format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
