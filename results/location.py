"""Where a results store keeps things: local paths and URIs, their filesystems, the sweep layout.

Layout (a public contract, see DESIGN.md section 3):

    <results>/<sweep>/spec.yaml
    <results>/<sweep>/trials/<trial_id>.parquet   one summary row
    <results>/<sweep>/steps/<trial_id>.parquet    per-step rows

`<results>` is a local path or any URI `pyarrow.fs.FileSystem.from_uri` understands
(`s3://bucket/prefix`, `gs://bucket/prefix`, with options such as
`?endpoint_override=host:port&scheme=http` for an S3-compatible server). Names
starting with '.' or '_' are hidden: temporary files, the status cache, and
anything else no reader should take for a trial.
"""

from __future__ import annotations

import os
import posixpath

import pyarrow.fs as pafs

from results.schema import validate_name

__all__ = [
    "SPEC_FILE",
    "STEPS_DIR",
    "TRIALS_DIR",
    "base_name",
    "child",
    "is_sweep_dir",
    "join",
    "parquet_files",
    "read_text",
    "resolve",
    "split",
    "sweep_dir",
    "sweep_dirs",
]

TRIALS_DIR = "trials"
STEPS_DIR = "steps"
SPEC_FILE = "spec.yaml"

_HIDDEN = (".", "_")


def resolve(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """Filesystem and path inside it for a local path or a URI.

    On S3, file opens are delayed, so a small file (every summary, most steps files)
    goes up in one PutObject request instead of a three-request multipart upload.
    """
    location = os.fspath(location)
    if "://" not in location:
        return pafs.LocalFileSystem(), os.path.abspath(location)
    if location.startswith("s3://") and "allow_delayed_open" not in location:
        location += ("&" if "?" in location else "?") + "allow_delayed_open=true"
    return pafs.FileSystem.from_uri(location)


def join(fs: pafs.FileSystem, *parts: str) -> str:
    """`parts` joined into one path of `fs` (the OS separator locally, '/' elsewhere)."""
    if fs.type_name == "local":
        return os.path.join(*parts)
    return posixpath.join(*parts)


def split(fs: pafs.FileSystem, path: str) -> tuple[str, str]:
    """(directory, base name) of a path of `fs`."""
    return os.path.split(path) if fs.type_name == "local" else posixpath.split(path)


def base_name(path: str) -> str:
    """Last component of a path as pyarrow reports it (either separator)."""
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def child(location: str | os.PathLike, name: str) -> str:
    """`location/name` for a local path or a URI; a URI keeps its query options
    (e.g. `s3://bucket/res?endpoint_override=host:9000&scheme=http`)."""
    location = os.fspath(location)
    if "://" not in location:
        return os.path.join(location, name)
    base, sep, query = location.partition("?")
    return base.rstrip("/") + "/" + name + sep + query


def sweep_dir(results: str | os.PathLike, sweep: str) -> str:
    """Path (or URI) of a sweep's directory under the results root."""
    validate_name("sweep", sweep)
    results = os.fspath(results)
    return child(results if "://" in results else os.path.abspath(results), sweep)


def parquet_files(fs: pafs.FileSystem, directory: str) -> list[pafs.FileInfo]:
    """The `*.parquet` files of a directory, sorted by path, skipping hidden ones (such as
    a write's temporary file); [] if the directory is absent."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        (
            info
            for info in infos
            if info.type == pafs.FileType.File
            and info.base_name.endswith(".parquet")
            and not info.base_name.startswith(_HIDDEN)
        ),
        key=lambda info: info.path,
    )


def _holds_trials(fs: pafs.FileSystem, path: str) -> bool:
    return any(
        fs.get_file_info(join(fs, path, name)).type == pafs.FileType.Directory
        for name in (TRIALS_DIR, STEPS_DIR)
    )


def sweep_dirs(fs: pafs.FileSystem, path: str) -> list[str]:
    """`path` itself if it is a sweep directory (it has trials/ or steps/), else its sweep
    subdirectories, sorted. Raises FileNotFoundError if `path` is not a directory."""
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"results directory not found: {path}")
    if _holds_trials(fs, path):
        return [path]
    children = fs.get_file_info(pafs.FileSelector(path))
    return sorted(
        c.path
        for c in children
        if c.type == pafs.FileType.Directory
        and not c.base_name.startswith(_HIDDEN)
        and _holds_trials(fs, c.path)
    )


def is_sweep_dir(location: str | os.PathLike) -> bool:
    """Whether `location` (local path or URI) holds a sweep: a trials/ directory or a spec.yaml."""
    fs, path = resolve(location)
    kinds = fs.get_file_info([join(fs, path, TRIALS_DIR), join(fs, path, SPEC_FILE)])
    return kinds[0].type == pafs.FileType.Directory or kinds[1].type == pafs.FileType.File


def read_text(location: str | os.PathLike) -> str | None:
    """The text of a small file (e.g. a sweep's spec.yaml) at a local path or URI; None if absent."""
    fs, path = resolve(location)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read().decode("utf-8")
    except FileNotFoundError:
        return None
