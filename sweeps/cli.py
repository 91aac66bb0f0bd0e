"""`warmup-sweep`: run, inspect, analyze and probe warmup sweeps.

Results locations (`run --results`, `status`, `analyze`) are local paths or
`s3://` / `gs://` URIs alike. Exit codes: 0 success (every trial ended:
completed, diverged, stuck or stopped), 1 some trial ended in `error` or never
ended, 2 bad spec, arguments, files, a cluster that cannot be joined, or a sweep
another run is running.

`--set KEY=VALUE` (repeatable, on `run` and `probe`) changes the document given
before it is validated, by dotted key: for a spec `base.num_steps=50`,
`grid.warmup_steps=[1,4]`, `pack_size=1`, `name=other`; for a trial config
`num_steps=50`, `model.width=64`. Values are YAML (`0.1`, `true`, `[1, 4]`,
`{relative_to: lambda0, values: [1, 2]}`). `--json` (on `status`, `specs`,
`run --dry-run`, `probe`, `bench`) prints one JSON document instead of text.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULT_RESULTS", "UsageError", "main", "parse_setting"]

DEFAULT_RESULTS = "./sweep-results"
QUIET, NORMAL, VERBOSE = 0, 1, 2
_DOTTED_KEY = re.compile(r"[A-Za-z_][\w-]*(\.[\w-]+)*")


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every bad input
        self.exit(2, f"{self.prog}: error: {message}\n")


def _version() -> str:
    """This package's version, with the Python, Ray and torch it runs on."""
    versions = []
    for dist in ("warmup-sweeps", "ray", "torch"):
        try:
            versions.append(metadata.version(dist))
        except metadata.PackageNotFoundError:
            versions.append("unknown")
    python = ".".join(str(n) for n in sys.version_info[:3])
    return f"warmup-sweep {versions[0]} (python {python}, ray {versions[1]}, torch {versions[2]})"


def _verbosity_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    """-q/-v, on the main parser (default NORMAL) and on each command (SUPPRESS, so that
    a command's unset flag does not hide one given before the command)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q",
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=QUIET,
        default=default,
        help="print only errors and the final line",
    )
    group.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="store_const",
        const=VERBOSE,
        default=default,
        help="also print Ray's own logs",
    )


def _set_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"set a dotted key of the {what} (repeatable); VALUE is YAML",
    )


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="warmup-sweep", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=_version())
    _verbosity_flags(p, NORMAL)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = argparse.ArgumentParser(add_help=False)
    _verbosity_flags(common, argparse.SUPPRESS)

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    run = command("run", help="run a sweep spec (YAML path or bundled name)")
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
    run.add_argument("--json", action="store_true", help="with --dry-run: print JSON")
    run.add_argument("--num-cpus", type=int, help="CPUs of the embedded local Ray")
    _set_option(run, "spec")

    status = command("status", help="counts by status and what is missing")
    status.add_argument("dir", help="a sweep directory (<results>/<sweep>), local or URI")
    status.add_argument("--json", action="store_true")

    analyze = command("analyze", help="phase diagrams, boundary and summary")
    analyze.add_argument("dir", help="a sweep directory (<results>/<sweep>), local or URI")
    analyze.add_argument(
        "--out",
        help="local output directory (default: <dir>/analysis, or ./<sweep>-analysis for a URI)",
    )
    analyze.add_argument(
        "--metric",
        help="trials column the phase diagram, boundary and summary show, e.g. test_accuracy "
        "(the paper's; short for final_test_accuracy); default final_test_loss",
    )
    analyze.add_argument(
        "--reference",
        metavar="PATH",
        help="the paper's official result tables (a folder of .tab files or a checkout of "
        "dayal-kalra/why-warmup), drawn and tabled beside the sweep",
    )
    _stuck_flag(analyze)

    reference = command(
        "reference", help="the paper's largest trainable eta_trgt, from its result tables"
    )
    reference.add_argument(
        "path", help="a folder of the official .tab files or a checkout of dayal-kalra/why-warmup"
    )
    reference.add_argument("--json", action="store_true")
    _stuck_flag(reference)

    probe = command("probe", help="lambda_H(0), eta_c and Adam's sharpness at init")
    probe.add_argument("spec_or_trial", help="a spec (its base is probed) or a trial config YAML")
    probe.add_argument("--json", action="store_true")
    _set_option(probe, "spec or trial config")

    specs = command("specs", help="list bundled specs, models and datasets (plugins too)")
    specs.add_argument("--json", action="store_true")

    bench = command("bench", help="benchmarks that print ratios side by side")
    bench.add_argument(
        "which",
        choices=["sharpness", "tracking", "orchestration", "packing", "store", "gpu", "paper"],
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
        help="packing, sharpness, gpu and paper: the device to time (default cpu; gpu: cuda)",
    )
    return p


def _stuck_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stuck-trainable",
        action="store_true",
        help="count stuck runs (below 1.5x chance accuracy) as trainable in the boundary; "
        "default: failed, as the paper counts them",
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `warmup-sweep` console script."""
    args = _parser().parse_args(argv)
    from sweeps import ClusterError, SpecError, SweepBusy
    from trials import DataError

    handlers = {
        "run": _run,
        "status": _status,
        "analyze": _analyze,
        "reference": _reference,
        "probe": _probe,
        "specs": _specs,
        "bench": _bench,
    }
    try:
        return handlers[args.command](args)
    except (SpecError, DataError, UsageError, ClusterError, SweepBusy) as exc:
        print(f"warmup-sweep: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _is_uri(location: str) -> bool:
    return "://" in location


def _check_results_location(results: str) -> None:
    if not _is_uri(results) and Path(results).exists() and not Path(results).is_dir():
        raise UsageError(f"--results: {results} exists and is not a directory")


def parse_setting(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` from `--set` as (dotted key, value parsed as YAML); `UsageError` when
    it is not one."""
    key, sep, value = text.partition("=")
    if not sep or not _DOTTED_KEY.fullmatch(key):
        raise UsageError(
            f"--set {text}: expected KEY=VALUE with a dotted KEY, e.g. base.num_steps=50"
        )
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        problem = str(getattr(exc, "problem", None) or exc).replace("\n", " ")
        raise UsageError(f"--set {key}: {value!r} is not a YAML value ({problem})") from None


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return dict(parse_setting(text) for text in args.settings)


def _run(args: argparse.Namespace) -> int:
    from results import child
    from sweeps import load_spec, run_sweep

    if args.resume:
        raise UsageError(
            "--resume was removed: every run skips the trials that already ended, "
            "so re-running the same command resumes"
        )
    if args.json and not args.dry_run:
        raise UsageError("--json: applies to run --dry-run only")
    if args.address and not _is_uri(args.results) and not args.shared_results:
        raise UsageError(
            f"--results {args.results} is a local path, but --address runs trials on other "
            "nodes, which would write to their own disks: give an s3:// or gs:// URI, or add "
            "--shared-results if every node mounts this path"
        )
    spec, _ = load_spec(args.spec, _settings(args))
    _check_results_location(args.results)
    if args.dry_run:
        return _dry_run(spec, args.results, args.json)
    outcome = run_sweep(
        spec,
        args.results,
        address=args.address,
        num_cpus=args.num_cpus,
        verbosity=args.verbosity,
    )
    counts = ", ".join(f"{k} {v}" for k, v in sorted(outcome.counts.items()))
    head = f"sweep {spec.name}: {counts or 'no trials'}; skipped {outcome.skipped} already ended"
    where = f"results: {child(args.results, spec.name)}"
    missing = f"{len(outcome.missing)} trials wrote no summary (see the Ray Tune logs)"
    if args.verbosity == QUIET:
        print("; ".join([head, *([missing] if outcome.missing else []), where]))
        return outcome.exit_code
    print(head)
    if outcome.stopped_early:
        print(f"{outcome.stopped_early} trials stopped early by ASHA (steps and summary written)")
    if outcome.missing:
        print(missing)
    print(where)
    return outcome.exit_code


def _dry_run(spec, results: str, as_json: bool) -> int:
    """What `run` would do, as the runner's text or as JSON."""
    from results import sweep_dir
    from sweeps import dry_run, pending_trials

    if not as_json:
        return dry_run(spec, results)
    pending, skipped = pending_trials(spec, results)
    plan = {
        "sweep": spec.name,
        "sweep_dir": sweep_dir(results, spec.name),
        "trials": len(pending) + skipped,
        "to_run": len(pending),
        "already_ended": skipped,
        "pending": [{"trial_id": p.trial_id, "overrides": p.overrides} for p in pending],
    }
    print(json.dumps(plan, indent=2))
    return 0


def _sweep_dir(location: str) -> str:
    """The sweep directory (local path or URI) after checking it holds a sweep."""
    from results import is_sweep_dir

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
    from results import child, read_text
    from sweeps import parse_spec

    text = read_text(child(sweep_dir, "spec.yaml"))
    if text is None:
        return None
    return parse_spec(yaml.safe_load(text), child(sweep_dir, "spec.yaml"))


MISSING_SHOWN = 20  # missing trials the text of `status` lists


def _status(args: argparse.Namespace) -> int:
    d = _sweep_dir(args.dir)
    report = _status_report(d)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{d}: {report['trials']} trials with a summary")
    for status, count in report["counts"].items():
        print(f"  {status:<10} {count}")
    for entry in report["unreadable"]:
        print(f"  unreadable: {entry['path']}: {entry['reason']}")
    missing = report["missing"]
    if missing is not None:
        print(f"  missing    {len(missing)} of {report['planned']} planned")
        for m in missing[:MISSING_SHOWN]:
            print(
                f"    {m['trial_id']}  " + ", ".join(f"{k}={v}" for k, v in m["overrides"].items())
            )
        if len(missing) > MISSING_SHOWN:
            print(f"    ... and {len(missing) - MISSING_SHOWN} more")
    return 0


def _status_report(sweep_dir: str) -> dict[str, Any]:
    """What `status` shows: counts by status, unreadable files, and for a grid with its
    spec.yaml the planned trials without a summary (`planned`, `missing` None otherwise)."""
    from results import STATUSES, read_statuses
    from sweeps import expand

    unreadable: list[tuple[str, str]] = []
    statuses = read_statuses(sweep_dir, unreadable=unreadable)
    counts = Counter(statuses.values())
    report: dict[str, Any] = {
        "sweep_dir": sweep_dir,
        "trials": len(statuses),
        "counts": {status: counts.get(status, 0) for status in STATUSES},
        "unreadable": [{"path": path, "reason": reason} for path, reason in unreadable],
        "planned": None,
        "missing": None,
    }
    spec = _read_spec(sweep_dir)
    if spec is not None and spec.search.kind == "grid":
        planned = expand(spec)
        report["planned"] = len(planned)
        report["missing"] = [
            {"trial_id": p.trial_id, "overrides": p.overrides}
            for p in planned
            if p.trial_id not in statuses
        ]
    return report


def _analyze(args: argparse.Namespace) -> int:
    from results.report import analyze

    d = _sweep_dir(args.dir)
    if args.out:
        out = Path(args.out)
    elif _is_uri(d):
        out = Path(f"{d.partition('?')[0].rstrip('/').rsplit('/', 1)[-1]}-analysis")
    else:
        out = Path(d) / "analysis"
    quiet = args.verbosity == QUIET
    try:
        report = analyze(
            d,
            str(out),
            # Progress names each file as it is written: no second list of paths after.
            progress=None if quiet else lambda msg: print(msg, file=sys.stderr),
            metric=args.metric,
            expected_trials=_planned_count(d),
            reference=args.reference,
            stuck_trainable=args.stuck_trainable,
        )
    except (ValueError, FileNotFoundError) as exc:  # a bad --metric or --reference
        raise UsageError(str(exc)) from None
    print(report.headline)
    return 0


def _planned_count(sweep_dir: str) -> int | None:
    """How many trials the sweep's grid plans (None for searches or without spec.yaml)."""
    from sweeps import expand

    spec = _read_spec(sweep_dir)
    if spec is None or spec.search.kind != "grid":
        return None
    return len(expand(spec))


def _reference(args: argparse.Namespace) -> int:
    from results.analysis import boundary_text, failure_rule
    from results.reference import read_reference, reference_boundary

    try:
        runs = read_reference(args.path)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    for path, reason in runs.unreadable:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    table = reference_boundary(runs.trials, stuck_trainable=args.stuck_trainable)
    records = [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in table.to_dict("records")
    ]
    if args.json:
        print(json.dumps(records, indent=2, default=int))
        return 0
    rule = failure_rule(args.stuck_trainable)
    print(f"The paper's largest trainable eta_trgt ({len(runs.trials)} runs; {rule})")
    columns = "{:<10} {:<5} {:>6}  {:<22} {:<13} {}"
    print(
        columns.format(
            "optimizer", "param", "T_wrm", "largest trainable", "first failed", "test acc"
        )
    )
    for row in records:
        largest = boundary_text(row, precision=6)
        if row["max_trainable_eta_relative"] is not None:  # a rate 2^n / lambda0
            largest += f" ({row['max_trainable_eta_relative']:g}/lambda0)"
        print(
            columns.format(
                row["optimizer"],
                row["parameterization"],
                row["warmup_steps"],
                largest,
                _plain(row["min_failed_eta"]),
                _plain(row["final_test_accuracy"]),
            )
        )
    return 0


def _plain(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _probe(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from sweeps import SpecError, apply_settings, format_validation_error, load_spec
    from trials import TrialConfig, probe

    path = Path(args.spec_or_trial)
    settings = _settings(args)
    data = None
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if isinstance(data, dict) and "base" not in data and "name" not in data:
        try:
            config = TrialConfig.model_validate(apply_settings(data, settings, str(path)))
        except ValidationError as exc:
            raise SpecError(f"{path}: {format_validation_error(exc)}") from None
    else:
        spec, _ = load_spec(args.spec_or_trial, settings)
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
    catalog = _catalog()
    if args.json:
        print(json.dumps(catalog, indent=2))
        return 0
    for spec in catalog["specs"]:
        print(f"{spec['name']:<24} {spec['description']}")
    for kind in ("models", "datasets"):
        print(f"\n{kind} (built-in and installed plugins):")
        for entry in catalog[kind]:
            print(f"  {entry['name']:<12} {entry['source']:<28} {entry['description']}")
            if entry["options"]:
                options = ", ".join(f"{k}: {v}" for k, v in entry["options"].items())
                print(f"  {'':<12} options: {options}")
    return 0


def _catalog() -> dict[str, list[dict[str, Any]]]:
    """What `specs` lists: bundled specs (name, path, first line of the description),
    and the models and datasets with their options."""
    from sweeps import bundled_specs, load_spec
    from trials.data import DATASET_REGISTRY
    from warmup_core.models import MODEL_REGISTRY

    specs = []
    for name, path in bundled_specs().items():
        spec, _ = load_spec(path)
        description = spec.description.strip().splitlines()[0] if spec.description else ""
        specs.append({"name": name, "path": str(path), "description": description})
    catalog: dict[str, list[dict[str, Any]]] = {"specs": specs}
    for kind, registry in (("models", MODEL_REGISTRY), ("datasets", DATASET_REGISTRY)):
        catalog[kind] = [
            {
                "name": entry.name,
                "source": entry.source,
                "description": entry.description,
                "options": {k: o.describe() for k, o in entry.options.items()},
            }
            for entry in registry.entries()
        ]
    return catalog


def _bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"sweeps.benchmarks.{args.which}")
    if args.trials and args.which != "store":
        raise UsageError("--trials applies to bench store only")
    if args.trials and min(args.trials) < 1:
        raise UsageError("--trials: sizes must be positive")
    options = {"sizes": tuple(args.trials)} if args.trials else {}
    if args.device and args.which not in ("packing", "sharpness", "gpu", "paper"):
        raise UsageError("--device applies to bench packing, sharpness, gpu and paper only")
    if args.device:
        options["device"] = args.device
    result = module.run(quick=args.quick, **options)
    print(json.dumps(result, indent=2, default=str) if args.json else module.format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
