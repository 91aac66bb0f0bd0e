"""The fast tier's guard (tests/conftest.py): a test marked neither integration nor slow
cannot start a subprocess, a process, Ray or a server; an integration test can."""

from __future__ import annotations

import multiprocessing
import socket
import subprocess
import sys

import pytest
import ray

REFUSED = pytest.fail.Exception  # what pytest.fail raises: not an Exception, so never swallowed


def test_a_fast_test_cannot_start_a_subprocess() -> None:
    name = "test_tiers.py::test_a_fast_test_cannot_start_a_subprocess"
    with pytest.raises(REFUSED, match=f"{name} starts a subprocess; mark it integration"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_a_fast_test_cannot_start_a_process() -> None:
    with pytest.raises(REFUSED, match="starts a process; mark it integration"):
        multiprocessing.get_context("spawn").Process(target=print).start()


def test_a_fast_test_cannot_open_a_listening_socket() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        with pytest.raises(REFUSED, match="opens a listening socket; mark it integration"):
            server.listen()


def test_a_fast_test_cannot_start_ray() -> None:
    with pytest.raises(REFUSED, match="starts Ray; mark it integration"):
        ray.init(num_cpus=1, include_dashboard=False)


@pytest.mark.integration
def test_an_integration_test_can_start_a_subprocess() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True, check=True
    )
    assert proc.stdout == "42\n"
