"""Set-up shared by every test package: one torch thread, a real S3-compatible server on
loopback for the object-storage tests, and the two test tiers.

A test that starts Ray, a subprocess, a process or a listening socket (a server) is
marked `integration`; heavy ones are marked `slow`. The fast tier (`pytest --fast`,
`make test-fast`) is every test marked neither. While a fast-tier test sets up or runs,
in every run (CI's included), those calls fail it with a message naming what it
started, so the fast tier cannot silently grow slow.
"""

import contextlib
import multiprocessing.process
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

OUTSIDE_FAST_TIER = ("integration", "slow")


# --------------------------------------------------------------------------- test tiers


def in_fast_tier(item: pytest.Item) -> bool:
    """Whether `item` is marked neither integration nor slow."""
    return not any(item.get_closest_marker(name) for name in OUTSIDE_FAST_TIER)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="run the fast tier only: leave out tests marked integration or slow",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Under pytest-xdist (`-n N --dist loadgroup`, as `make test` runs), every integration
    # test goes to one worker, one after another as without xdist: they start Ray
    # clusters, servers and processes that must not compete for ports and cores.
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.xdist_group("integration"))
    if not config.getoption("fast"):
        return
    left_out = [item for item in items if not in_fast_tier(item)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if in_fast_tier(item)]


def _refuse(item: pytest.Item, what: str) -> Callable[..., None]:
    def refused(*args, **kwargs) -> None:
        pytest.fail(f"fast tier: {item.nodeid} {what}; mark it integration", pytrace=True)

    return refused


@contextlib.contextmanager
def _no_processes_or_servers(item: pytest.Item) -> Iterator[None]:
    """Within the block, starting Ray, a subprocess, a process or a listening socket fails
    `item` if it is in the fast tier."""
    if not in_fast_tier(item):
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        # Patched on the classes, so `from subprocess import Popen` and subprocess.run
        # are caught as well; Ray's own start-up goes through Popen too.
        patch.setattr(subprocess.Popen, "__init__", _refuse(item, "starts a subprocess"))
        patch.setattr(
            multiprocessing.process.BaseProcess, "start", _refuse(item, "starts a process")
        )
        patch.setattr(socket.socket, "listen", _refuse(item, "opens a listening socket"))
        ray = sys.modules.get("ray")
        if ray is not None:
            patch.setattr(ray, "init", _refuse(item, "starts Ray"))
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    # Setup too: a session fixture (the S3 server) starts in the first test that asks for it.
    with _no_processes_or_servers(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _no_processes_or_servers(item):
        return (yield)


def pytest_configure(config: pytest.Config) -> None:
    # Every test starts on one torch thread: the tests' tiny models run many times faster
    # than on two busy cores (a second thread waits on the first whenever another process
    # holds a core), and one thread sums floats in one order on any machine.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module, whatever an earlier test set (see pytest_configure)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- object storage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-compatible server (moto's standalone server) on 127.0.0.1; yields its
    `host:port`. Credentials for it are set in the environment, so subprocesses (the CLI,
    Ray workers) reach it too."""
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("moto_server did not start on 127.0.0.1")
            time.sleep(0.2)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask a cloud metadata service
        yield f"127.0.0.1:{port}"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


@pytest.fixture
def bucket(s3_server: str) -> str:
    """A fresh, empty bucket on the test S3 server, as the `s3://` URI of a results root
    (`s3://<bucket>/results?endpoint_override=...&scheme=http`)."""
    import pyarrow.fs as pafs

    name = f"test-{uuid.uuid4().hex[:12]}"
    options = f"endpoint_override={s3_server}&scheme=http"
    fs = pafs.S3FileSystem(endpoint_override=s3_server, scheme="http", allow_bucket_creation=True)
    fs.create_dir(name)
    return f"s3://{name}/results?{options}"
