"""Bad input: every malformed spec, CLI call or data file gets exit code 2, one line on
stderr naming the field or file, and nothing written; nothing in a spec or a data file
can make the program run code.

The table runs in process through `sweeps.cli.main` (argparse errors raise
SystemExit(2), caught here), from a working directory inside tmp_path so that even a
write to the default ./sweep-results would show in the before/after listing.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from results.store import write_trial
from sweeps.cli import main
from tests.reliability.conftest import snapshot, tiny_spec
from trials.data import DataError, load_dataset


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2 by raising
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@dataclass
class Case:
    """`make(tmp)` writes what the call needs and returns argv; `names` must be in the line."""

    make: Callable[[Path], list[str]]
    names: tuple[str, ...]


def spec_with(**changes: Any) -> Callable[[Path], list[str]]:
    """A tiny spec with dotted `changes` ('base.num_steps'=..., '-name' deletes), as `run` argv."""

    def make(tmp: Path) -> list[str]:
        data = tiny_spec()
        for dotted, value in changes.items():
            path = dotted.lstrip("-")
            # Grid axes are dotted names themselves (`grid: {optimizer.name: [...]}`).
            *parents, key = ["grid", path[5:]] if path.startswith("grid.") else path.split(".")
            node = data
            for part in parents:
                node = node.setdefault(part, {})
            if dotted.startswith("-"):
                del node[key]
            else:
                node[key] = value
        return ["run", str(write(tmp, yaml.safe_dump(data))), "--results", str(tmp / "results")]

    return make


def write(tmp: Path, text: str | bytes, name: str = "spec.yaml") -> Path:
    path = tmp / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def run_text(text: str | bytes) -> Callable[[Path], list[str]]:
    return lambda tmp: ["run", str(write(tmp, text)), "--results", str(tmp / "results")]


def fake_sweep_dir(tmp: Path) -> Path:
    d = tmp / "in" / "not-a-sweep"
    d.mkdir(parents=True)
    (d / "notes.txt").write_text("hello")
    return d


def results_is_a_file(tmp: Path) -> list[str]:
    (tmp / "in").mkdir(exist_ok=True)
    (tmp / "in" / "results").write_text("a file")
    spec = write(tmp, yaml.safe_dump(tiny_spec()))
    return ["run", str(spec), "--results", str(tmp / "in" / "results")]


def probe_missing_cifar(tmp: Path) -> list[str]:
    data = tiny_spec()
    data["base"]["dataset"] = {"name": "cifar10", "data_dir": str(tmp / "no-cifar-here")}
    return ["probe", str(write(tmp, yaml.safe_dump(data)))]


def python_object_yaml(tmp: Path) -> list[str]:
    marker = tmp / "MARKER"
    text = (
        yaml.safe_dump(tiny_spec()) + f'extra: !!python/object/apply:os.system ["touch {marker}"]\n'
    )
    return ["run", str(write(tmp, text)), "--results", str(tmp / "results")]


def python_object_probe(tmp: Path) -> list[str]:
    marker = tmp / "MARKER"
    return ["probe", str(write(tmp, f'!!python/object/apply:os.system ["touch {marker}"]\n'))]


CASES: dict[str, Case] = {
    # --- spec fields
    "unknown top-level key": Case(spec_with(nmae="x"), ("nmae",)),
    "unknown base key": Case(spec_with(**{"base.lerning_rate": 0.1}), ("base.lerning_rate",)),
    "unknown model option": Case(spec_with(**{"base.model.widht": 8}), ("model.widht",)),
    "num_steps wrong type": Case(spec_with(**{"base.num_steps": "many"}), ("base.num_steps",)),
    "num_steps zero": Case(spec_with(**{"base.num_steps": 0}), ("base.num_steps",)),
    "num_steps negative": Case(spec_with(**{"base.num_steps": -5}), ("base.num_steps",)),
    "warmup_steps zero on the grid": Case(
        spec_with(**{"grid.warmup_steps": [1, 0]}), ("warmup_steps",)
    ),
    "negative eta_trgt in base": Case(spec_with(**{"base.eta_trgt": -0.1}), ("base.eta_trgt",)),
    "zero eta_trgt on the grid": Case(spec_with(**{"grid.eta_trgt": [0.0, 0.1]}), ("eta_trgt",)),
    "negative relative eta": Case(
        spec_with(**{"grid.eta_trgt": {"relative_to": "lambda0", "values": [-1]}}), ("eta_trgt",)
    ),
    "empty grid axis": Case(spec_with(**{"grid.warmup_steps": []}), ("warmup_steps",)),
    "empty seeds": Case(spec_with(seeds=[]), ("seeds",)),
    "unknown grid axis": Case(spec_with(**{"grid.lerning_rate": [0.1]}), ("lerning_rate",)),
    "unknown model": Case(
        spec_with(**{"base.model": {"name": "resnet9000"}}), ("model", "resnet9000")
    ),
    "unknown dataset": Case(spec_with(**{"base.dataset": {"name": "mnist"}}), ("dataset", "mnist")),
    "unknown optimizer on the grid": Case(
        spec_with(**{"grid.optimizer.name": ["sgd", "lion"]}), ("optimizer", "lion")
    ),
    "unknown loss": Case(spec_with(**{"base.loss": "hinge"}), ("loss",)),
    # --- options a model, dataset or optimizer used to check only when built
    "unknown activation": Case(
        spec_with(**{"base.model.activation": "swish"}), ("model.activation", "swish")
    ),
    "model option of the wrong type": Case(
        spec_with(**{"base.model.width": "wide"}), ("model.width", "wide")
    ),
    "myrtle depth 6": Case(
        spec_with(**{"base.model": {"name": "myrtle", "depth": 6}}), ("model.depth", "6")
    ),
    "wrn depth not 6n+4": Case(
        spec_with(**{"base.model": {"name": "wrn", "depth": 15}}), ("model.depth", "15")
    ),
    "heads do not divide width": Case(
        spec_with(
            **{
                "base.model": {"name": "transformer", "width": 10, "heads": 4},
                "base.dataset": {"name": "text"},
                "base.loss": "xent",
            }
        ),
        ("model.heads",),
    ),
    "nesterov without momentum": Case(
        spec_with(**{"base.optimizer": {"name": "sgd", "nesterov": True}}), ("optimizer.nesterov",)
    ),
    "cnn on vector data": Case(
        spec_with(**{"base.model": {"name": "wrn"}, "base.dataset": {"name": "gaussian"}}),
        ("model.name", "image_shape"),
    ),
    "image shape that does not match dim": Case(
        spec_with(**{"base.dataset": {"name": "gaussian", "dim": 32, "image_shape": [1, 8, 8]}}),
        ("dataset.image_shape",),
    ),
    "cnn on text on the grid": Case(
        spec_with(**{"grid.model.name": ["fcn", "myrtle"], "base.dataset": {"name": "text"}}),
        ("model.name",),
    ),
    "zero cpus": Case(spec_with(**{"resources.cpu": 0}), ("resources.cpu",)),
    "negative retries": Case(spec_with(**{"failure.retries": -1}), ("failure.retries",)),
    "pack_size zero": Case(spec_with(pack_size=0), ("pack_size",)),
    "sweep name escapes the results dir": Case(spec_with(name="../evil"), ("name", "../evil")),
    "sweep name missing": Case(spec_with(**{"-name": None}), ("name",)),
    # --- spec files
    "spec is a YAML list": Case(run_text("- 1\n- 2\n"), ("spec.yaml", "mapping")),
    "unreadable YAML": Case(run_text("name: [unclosed\n"), ("spec.yaml", "YAML")),
    "spec is not UTF-8": Case(run_text(b"name: \xff\xfe\n"), ("spec.yaml",)),
    "spec is a directory": Case(lambda tmp: ["run", str(fake_sweep_dir(tmp))], ("not-a-sweep",)),
    "no such spec": Case(lambda tmp: ["run", str(tmp / "in" / "nope.yaml")], ("nope.yaml",)),
    "YAML constructs a Python object": Case(python_object_yaml, ("spec.yaml",)),
    "probe YAML constructs a Python object": Case(python_object_probe, ("spec.yaml",)),
    "probe with a missing CIFAR data_dir": Case(probe_missing_cifar, ("no-cifar-here",)),
    # --- CLI arguments and directories
    "results path is a file": Case(results_is_a_file, ("--results",)),
    "unknown flag": Case(lambda tmp: ["run", "quickstart", "--frobnicate"], ("--frobnicate",)),
    "run without a spec": Case(lambda tmp: ["run"], ("spec",)),
    "no command": Case(lambda tmp: [], ("command",)),
    "unknown command": Case(lambda tmp: ["frobnicate"], ("frobnicate",)),
    "num-cpus not a number": Case(
        lambda tmp: ["run", "quickstart", "--num-cpus", "two"], ("--num-cpus", "two")
    ),
    "status of a directory that is not a sweep": Case(
        lambda tmp: ["status", str(fake_sweep_dir(tmp))], ("not-a-sweep",)
    ),
    "analyze of a directory that is not a sweep": Case(
        lambda tmp: ["analyze", str(fake_sweep_dir(tmp))], ("not-a-sweep",)
    ),
    "status of a missing directory": Case(
        lambda tmp: ["status", str(tmp / "in" / "gone")], ("gone",)
    ),
    "analyze of a missing directory": Case(
        lambda tmp: ["analyze", str(tmp / "in" / "gone")], ("gone",)
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_bad_input_exits_2_with_one_line_naming_it_and_writes_nothing(
    case: Case, tmp_path: Path, monkeypatch, capsys
) -> None:
    work = tmp_path / "work"  # cwd: the default ./sweep-results would land here
    work.mkdir()
    monkeypatch.chdir(work)
    argv = case.make(tmp_path)
    before = snapshot(tmp_path)

    code, out, err = run_cli(argv, capsys)

    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    # "warmup-sweep: error: ..." or, from argparse, "warmup-sweep run: error: ...".
    assert lines[0].startswith("warmup-sweep") and " error: " in lines[0], lines[0]
    for name in case.names:
        assert name in lines[0], (name, lines[0])
    assert out == ""
    assert snapshot(tmp_path) == before  # nothing written, not even a MARKER


def test_dry_run_cannot_see_a_missing_data_dir_and_says_so_plainly(tmp_path: Path, capsys) -> None:
    # The spec itself is valid (the directory may exist on the cluster that runs it):
    # a dry run lists the trials; `probe` and a real run report the missing path.
    data = tiny_spec()
    data["base"]["dataset"] = {"name": "cifar10", "data_dir": str(tmp_path / "no-cifar-here")}
    spec = write(tmp_path, yaml.safe_dump(data))
    code, out, _ = run_cli(
        ["run", str(spec), "--results", str(tmp_path / "r"), "--dry-run"], capsys
    )
    assert code == 0 and "4 to run" in out
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- data files


class _Exploit:
    """Unpickling this calls os.system: a CIFAR batch must never be unpickled freely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _cifar_folder(root: Path, batch: bytes) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(batch)
    return folder


def _good_batch(n: int = 10) -> bytes:
    data = np.zeros((n, 3072), dtype=np.uint8)
    return pickle.dumps({b"data": data, b"labels": list(range(n))})


def test_good_fake_cifar_loads(tmp_path: Path) -> None:
    # The control for the tests below: the same layout with an honest pickle loads.
    _cifar_folder(tmp_path, _good_batch())
    ds = load_dataset("cifar10", data_dir=str(tmp_path))
    assert ds.x_train.shape == (50, 3, 32, 32)


def test_cifar_pickle_that_imports_os_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    payload = pickle.dumps({b"data": _Exploit(marker), b"labels": [0]})
    _cifar_folder(tmp_path / "data", payload)
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=str(tmp_path / "data"))
    assert "data_batch_1" in str(info.value)
    assert not marker.exists()


def test_truncated_cifar_archive_is_refused_naming_it(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        batch = _good_batch(200)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(batch)
            tar.addfile(info, io.BytesIO(batch))
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert "cifar-10-python.tar.gz" in str(info.value)
    assert "truncated" in str(info.value)


def test_probe_of_a_poisoned_cifar_dir_exits_2_naming_the_file(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "MARKER"
    _cifar_folder(tmp_path / "data", pickle.dumps(_Exploit(marker)))
    data = tiny_spec()
    data["base"]["dataset"] = {"name": "cifar10", "data_dir": str(tmp_path / "data")}
    code, out, err = run_cli(["probe", str(write(tmp_path, yaml.safe_dump(data)))], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "data_batch_1" in err
    assert not marker.exists()


@pytest.fixture
def sweep_with_truncated_file(tmp_path: Path) -> tuple[Path, str]:
    """A sweep dir with two readable trials and one truncated summary file."""
    ids = ["aaaa000000000001", "aaaa000000000002", "aaaa000000000003"]
    for i, trial_id in enumerate(ids):
        summary = {"trial_id": trial_id, "status": "completed", "eta_trgt": 0.1 * (i + 1)}
        summary.update(warmup_steps=1, final_test_loss=1.0 + i, final_train_loss=1.0 + i)
        steps = {"step": [1, 2], "train_loss": [2.0, 1.0], "lr": [0.1, 0.1]}
        write_trial(tmp_path, "s", summary, steps)
    broken = tmp_path / "s" / "trials" / f"{ids[2]}.parquet"
    broken.write_bytes(broken.read_bytes()[:100])
    return tmp_path / "s", broken.name


def test_status_reports_a_truncated_parquet_file_and_counts_the_rest(
    sweep_with_truncated_file, capsys
) -> None:
    sweep, broken = sweep_with_truncated_file
    code, out, _ = run_cli(["status", str(sweep)], capsys)
    assert code == 0
    assert "2 trials with a summary" in out
    assert f"unreadable: {sweep / 'trials' / broken}" in out


def test_analyze_reports_a_truncated_parquet_file_and_still_writes(
    sweep_with_truncated_file, tmp_path: Path, capsys
) -> None:
    sweep, broken = sweep_with_truncated_file
    out_dir = tmp_path / "analysis"
    code, _, err = run_cli(["analyze", str(sweep), "--out", str(out_dir)], capsys)
    assert code == 0, err
    assert broken in err  # progress names it
    summary = (out_dir / "summary.md").read_text()
    assert "Unreadable files (1)" in summary and broken in summary
    assert "2 trials found" in summary
    assert len(pd.read_parquet(sweep / "steps")) == 6  # the steps files are fine
