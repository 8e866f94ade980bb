"""Connecting to Ray: reuse a running session, join ``address``, or start a local one."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Make Ray available for the duration of the block.

    An already initialised session (e.g. a test's shared cluster) is reused and left running;
    otherwise Ray connects to ``address`` (``auto``, ``ray://...`` or ``HOST:PORT``) or starts a
    local cluster with every CPU of this machine, and shuts it down afterwards.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
             configure_logging=True, log_to_driver=True)
    log.info("ray resources: %s", ray.cluster_resources())
    try:
        yield
    finally:
        ray.shutdown()


def gpus_per_actor(requested: str | float) -> float:
    """Resolve ``auto``: one GPU per actor when the cluster has GPUs, else none."""
    import ray

    if requested != "auto":
        return float(requested)
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
