"""Connecting the driver to Ray: an embedded local Ray on 127.0.0.1, or an existing
cluster joined by address, with a one-line error naming the fix when it cannot be."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator

import ray

from sweeps.ray_private import AUTH_NOTICE, AUTH_NOTICE_LOGGER, LOOPBACK, loopback_only

__all__ = ["ClusterError", "init_ray"]


class ClusterError(RuntimeError):
    """The Ray cluster at `--address` cannot be joined; the message says what to fix."""


def init_ray(
    address: str | None, num_cpus: int | None = None, *, log_to_driver: bool = False
) -> None:
    """Join `address`, or start an embedded Ray of `num_cpus` CPUs (default: all) bound
    to 127.0.0.1 only; nothing when Ray is already initialized. `log_to_driver` shows
    the workers' own output (Ray's logs, warnings) on the driver's.

    Raises `ClusterError` (one line naming the fix) when the cluster cannot be joined.
    """
    if ray.is_initialized():
        return
    if address:
        _join_cluster(address, log_to_driver)
    else:
        _start_local(num_cpus, log_to_driver)


def _start_local(num_cpus: int | None, log_to_driver: bool) -> None:
    # A new local Ray turns token authentication on by default and logs a warning that it
    # did, on every run; that is the setting we want, so drop that one notice.
    notice = logging.getLogger(AUTH_NOTICE_LOGGER)
    quiet = _DropMessage(AUTH_NOTICE)
    notice.addFilter(quiet)
    try:
        with loopback_only() as node_address:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                dashboard_host=LOOPBACK,
                log_to_driver=log_to_driver,
                configure_logging=False,
                **node_address,
            )
    finally:
        notice.removeFilter(quiet)


class _DropMessage(logging.Filter):
    """Drops log records whose message starts with a given text."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _join_cluster(address: str, log_to_driver: bool) -> None:
    """`ray.init(address)`, with Ray's retry lines swallowed and a one-line error instead."""
    host, _, port = address.rpartition(":")
    if address != "auto" and "://" not in address:
        if not host or not port.isdigit():
            raise ClusterError(
                f"--address {address}: expected host:port (e.g. 10.0.0.5:6379) or auto"
            )
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise ClusterError(
                f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
                "give the head node's GCS address (ray start --head prints it), or auto on a node"
            ) from None
    with _captured_stderr() as captured:
        try:
            ray.init(address=address, log_to_driver=log_to_driver)
            error = None
        except (ConnectionError, RuntimeError, ValueError) as exc:
            error = exc
    text = "".join(captured)
    if error is None:
        sys.stderr.write(text)
        return
    if "InvalidAuthToken" in text or "Unauthenticated" in text or "auth" in str(error).lower():
        raise ClusterError(
            f"--address {address}: the cluster requires token authentication; set "
            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token "
            "(ray get-auth-token on the head node prints it)"
        ) from None
    raise ClusterError(f"--address {address}: cannot join the Ray cluster: {error}") from None


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Send file descriptor 2 (where Ray's C++ core logs) to a temporary file meanwhile;
    the yielded list holds its text afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    captured: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read())
