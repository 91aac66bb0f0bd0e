"""The driver's reliance on Ray internals, in one place (checked against ray 2.60.0).

Ray offers no public way to do these; each is what Ray's own source does in the
version named by `CHECKED_RAY_VERSION`, and tests/sweeps/test_ray_private.py fails
when a newer Ray changes it:

- `loopback_only()`: an embedded Ray bound to 127.0.0.1 only. `ray.init(
  _node_ip_address="127.0.0.1")` (a hidden keyword of `ray.init`) alone is not
  enough on Linux: Ray swaps a loopback node address for the machine's routable
  one (`ray._private.services.resolve_ip_for_localhost`), and GCS, raylet and
  workers then listen on every interface. Ray keeps loopback only where
  `ray._private.ray_constants.ENABLE_RAY_CLUSTER` says clusters are unsupported;
  the context claims that for one start.
- `AUTH_NOTICE_LOGGER`/`AUTH_NOTICE`: the logger and text of the warning a new
  local Ray logs because it turned token authentication on.
- `use_legacy_reporter()`: Tune's new console output prints tables whatever
  `verbose` says; `RAY_AIR_NEW_OUTPUT=0` keeps the legacy reporter, which honours
  `verbose=0` (`ray.tune.experimental.output.get_air_verbosity`).
- `no_callback_census()`: before it starts a trial, `tune.run` counts the callbacks
  it was given for Ray's usage statistics (`ray.air._internal.usage.tag_callbacks`),
  importing its W&B, MLflow, Comet and Aim integrations to do so, and those import
  wandb and mlflow when installed: 2 s of the driver's start-up on the project's
  machine. The tool's own callbacks are none of those; the context skips the count.

The worker side (a stopped trial's `tune.report` raising `SystemExit`, Tune's
`__mixins__` hook) is in `trials.tune`, where the trainable calls Ray.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ray._private import ray_constants

__all__ = [
    "AUTH_NOTICE",
    "AUTH_NOTICE_LOGGER",
    "CHECKED_RAY_VERSION",
    "LOOPBACK",
    "NODE_IP_KEYWORD",
    "loopback_only",
    "no_callback_census",
    "use_legacy_reporter",
]

CHECKED_RAY_VERSION = "2.60.0"

LOOPBACK = "127.0.0.1"
# ray.init's hidden keyword for the address this node's services bind to.
NODE_IP_KEYWORD = "_node_ip_address"

AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
AUTH_NOTICE = "Token authentication is enabled for this Ray cluster"


@contextlib.contextmanager
def loopback_only() -> Iterator[dict[str, str]]:
    """Meanwhile Ray keeps a loopback node address; yields the `ray.init` keyword that
    sets it. Restores Ray's setting after, so that a later `ray.init(address=...)` in
    the same process still finds its routable IP."""
    cluster_mode = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield {NODE_IP_KEYWORD: LOOPBACK}
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode


def use_legacy_reporter() -> None:
    """Have Tune use its legacy console reporter (which honours `verbose=0`), unless the
    user chose otherwise; must run before a `tune.Tuner` is made."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


@contextlib.contextmanager
def no_callback_census() -> Iterator[None]:
    """Meanwhile `tune.run` records no count of its callbacks (see the module docstring);
    restores Ray's function after."""
    from ray.air._internal import usage as air_usage  # 0.5 s; Tune imports it anyway

    census = air_usage.tag_callbacks
    air_usage.tag_callbacks = _no_census
    try:
        yield
    finally:
        air_usage.tag_callbacks = census


def _no_census(callbacks: object) -> bool:
    """`tag_callbacks`' signature; recorded nothing."""
    return False
