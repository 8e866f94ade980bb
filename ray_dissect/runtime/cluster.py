"""Connecting to Ray: reuse a running session, join ``address``, or start a local one."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def ray_session(address: str | None = None, actors: int = 0) -> Iterator[None]:
    """Make Ray available for the duration of the block.

    An already initialised session (e.g. a test's shared cluster) is reused and left running;
    otherwise Ray connects to ``address`` (``auto``, ``ray://...`` or ``HOST:PORT``) or starts a
    local cluster with every CPU of this machine, and shuts it down afterwards.

    A local cluster keeps up to one idle worker process per CPU beside the job's ``actors``
    (Ray's default, one per CPU in all, ends the CPU tasks' warm workers while the model
    actors run, and the next CPU stage pays for new processes and their imports again).
    """
    import ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
             configure_logging=True, log_to_driver=True,
             _system_config=_local_config(actors) if _starts_local(address) else None)
    log.info("ray resources: %s", ray.cluster_resources())
    try:
        yield
    finally:
        ray.shutdown()


def _starts_local(address: str | None) -> bool:
    """Whether ``ray.init(address)`` starts a new local cluster (rather than joining one)."""
    return address is None and not os.environ.get("RAY_ADDRESS")


def _local_config(actors: int) -> dict[str, int]:
    """System settings of a local cluster for a job with ``actors`` model actors."""
    return {"num_workers_soft_limit": (os.cpu_count() or 1) + actors}


def gpus_per_actor(requested: str | float) -> float:
    """Resolve ``auto``: one GPU per actor when the cluster has GPUs, else none."""
    import ray

    if requested != "auto":
        return float(requested)
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
