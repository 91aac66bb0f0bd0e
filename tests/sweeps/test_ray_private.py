"""The Ray internals the tool relies on (`sweeps.ray_private`, `trials.tune`), checked
against the installed Ray: each test fails when a Ray release changes one of them.

The last two start an embedded Ray (shut down at the end of the module).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import signal
from pathlib import Path

import pytest
import ray
from ray import tune
from ray._private import ray_constants, services
from ray.air._internal import usage
from ray.tune import tune as tune_module
from ray.tune.experimental.output import get_air_verbosity
from ray.tune.schedulers import ASHAScheduler
from ray.tune.trainable.function_trainable import wrap_function

from sweeps import init_ray
from sweeps.ray_private import (
    AUTH_NOTICE,
    AUTH_NOTICE_LOGGER,
    CHECKED_RAY_VERSION,
    LOOPBACK,
    NODE_IP_KEYWORD,
    loopback_only,
    no_callback_census,
    use_legacy_reporter,
)
from trials.tune import WaitForFiles, trainable

CHANGED = f"Ray {ray.__version__} changed an internal checked against {CHECKED_RAY_VERSION}"


@pytest.fixture
def no_ray():
    """Ray not initialized (a running node answers address questions itself)."""
    if ray.is_initialized():  # e.g. left over by another module: start from a known state
        ray.shutdown()


def test_the_cluster_flag_decides_whether_a_loopback_node_address_is_kept(no_ray, monkeypatch):
    routable = "192.0.2.7"  # what Linux finds for this machine (TEST-NET, never used)
    monkeypatch.setattr(services, "node_ip_address_from_perspective", lambda *a, **k: routable)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    # What ray.init does with `_node_ip_address` before starting the node's services.
    assert services.resolve_ip_for_localhost(LOOPBACK) == routable, CHANGED
    with loopback_only() as keywords:
        assert services.resolve_ip_for_localhost(keywords[NODE_IP_KEYWORD]) == LOOPBACK, CHANGED
    assert ray_constants.ENABLE_RAY_CLUSTER is True  # restored for a later ray.init(address)


@pytest.mark.integration  # starts Ray
def test_ray_init_accepts_the_hidden_node_address_keyword(no_ray) -> None:
    # ray.init refuses unknown keywords before it starts anything: only the bogus one is named.
    sigterm = signal.getsignal(signal.SIGTERM)  # ray.init installs its own handler first
    try:
        with pytest.raises(RuntimeError, match=r"Unknown keyword argument\(s\): _no_such_option$"):
            ray.init(configure_logging=False, _no_such_option=1, **{NODE_IP_KEYWORD: LOOPBACK})
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    assert not ray.is_initialized()


def test_the_token_auth_notice_comes_from_the_logger_we_filter() -> None:
    module = importlib.import_module(AUTH_NOTICE_LOGGER)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(AUTH_NOTICE_LOGGER)
    logger.addHandler(handler)
    try:
        module._warn_token_auth_enabled()  # what a new local Ray logs when it turns auth on
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage().startswith(AUTH_NOTICE) for r in records] == [True], CHANGED


def test_the_legacy_reporter_honours_verbose_0(monkeypatch) -> None:
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT")  # restored after the test
    assert get_air_verbosity(0) is not None  # Tune's new output, which prints anyway
    use_legacy_reporter()
    assert get_air_verbosity(0) is None, CHANGED


def test_tune_counts_its_callbacks_by_importing_the_integrations_and_the_census_skips_it():

    # What tune.run calls on the callbacks it is given, and what that call imports.
    assert "air_usage.tag_callbacks(callbacks)" in inspect.getsource(tune_module.run), CHANGED
    assert tune_module.air_usage is usage, CHANGED
    count = inspect.getsource(usage._count_callbacks)
    assert "ray.air.integrations.wandb" in count and "ray.air.integrations.mlflow" in count
    original = usage.tag_callbacks
    with no_callback_census():
        assert tune_module.air_usage.tag_callbacks([object()]) is False
    assert usage.tag_callbacks is original  # restored


@pytest.fixture(scope="module")
def ray_local():
    if ray.is_initialized():
        ray.shutdown()
    init_ray(None, num_cpus=1)
    yield
    ray.shutdown()


@pytest.mark.integration
def test_tune_builds_the_sweeps_trainable_class_with_its_mixins(ray_local) -> None:
    # As `sweeps.tuner` hands it to Tune: with parameters (which keeps `__mixins__`).
    fn = tune.with_parameters(trainable, base={}, results="", sweep="")
    assert issubclass(wrap_function(fn), WaitForFiles), CHANGED


@pytest.mark.integration
def test_a_stopped_function_trainables_report_raises_system_exit(ray_local, tmp_path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()

    # Defined here, so that Ray's pickler sends them by value to the worker.
    def probe(config, marks: str) -> None:
        for step in range(1, 10):
            try:
                tune.report({"step": step, "loss": 1.0})
            except SystemExit:
                Path(marks, "system-exit").write_text(str(step))
                raise
            Path(marks, "reported").write_text(str(step))

    class Cleanup:
        def cleanup(self) -> None:
            super().cleanup()  # type: ignore[misc]
            Path(marks, "mixin-cleanup").touch()

    probe.__mixins__ = (Cleanup,)  # type: ignore[attr-defined]
    # ASHA stops the trial at the rung max_t = 1: on its first report.
    asha = ASHAScheduler(time_attr="step", metric="loss", mode="min", max_t=1, grace_period=1)
    tune.Tuner(
        tune.with_parameters(probe, marks=str(marks)),
        tune_config=tune.TuneConfig(scheduler=asha),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0),
    ).fit()
    assert (marks / "system-exit").exists(), CHANGED
    stopped_at = int((marks / "system-exit").read_text())
    assert not (marks / "reported").exists() or int((marks / "reported").read_text()) < stopped_at
    assert (marks / "mixin-cleanup").exists(), CHANGED
