"""Connecting to Ray: reuse a running session, join ``address``, or start a local one."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ray_dissect.errors import StageError

log = logging.getLogger(__name__)

INIT_ATTEMPTS = 3
"""Tries to start or join Ray before giving up (start-up can time out on a loaded machine)."""


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
    _init(address, actors)
    log.info("ray resources: %s", ray.cluster_resources())
    try:
        yield
    finally:
        ray.shutdown()


def _init(address: str | None, actors: int) -> None:
    """``ray.init``, tried :data:`INIT_ATTEMPTS` times; without ``address`` (and without the
    ``RAY_ADDRESS`` variable) a private local cluster (``address="local"``), never one that
    ``ray start`` left an address file of in ``/tmp/ray``.

    Raises:
        StageError: Ray did not start or could not be joined, in one line.
    """
    import ray

    local = _starts_local(address)
    for attempt in range(1, INIT_ATTEMPTS + 1):
        try:
            ray.init(address="local" if local else address, include_dashboard=False,
                     logging_level=logging.WARNING, configure_logging=True, log_to_driver=True,
                     _system_config=_local_config(actors) if local else None)
            return
        except (OSError, RuntimeError, ValueError) as err:  # timeouts, sockets, joining
            ray.shutdown()
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            if attempt == INIT_ATTEMPTS:
                where = "start a local Ray cluster" if local else f"join Ray at {address!r}"
                raise StageError(f"cannot {where} after {attempt} tries: {reason}",
                                 hint="retry when the machine is less loaded, or check "
                                      "`ray status`") from None
            log.warning("Ray start-up failed (%s); trying again", reason)
            time.sleep(2.0 * attempt)


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
