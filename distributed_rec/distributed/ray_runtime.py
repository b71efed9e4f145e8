"""Connect to the Ray cluster a stage runs on, or start a local one and stop only that.

Under `ray job submit` the job's driver finds the cluster through the RAY_ADDRESS variable that
Ray sets; `ray.address` in the config overrides it; with neither, a local instance is started.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from distributed_rec.config import RayConfig
from distributed_rec.errors import DistributedRecError

log = logging.getLogger(__name__)


def cluster_address(config: RayConfig) -> str:
    """The address to connect to ('' = start a local instance)."""
    address = config.address or os.environ.get("RAY_ADDRESS", "")
    if address.startswith(("http://", "https://")):
        raise DistributedRecError(
            f"RAY_ADDRESS={address} is a job-server address: submit with "
            "`ray job submit --address ... --working-dir . -- python -m distributed_rec ...`, "
            "or set --ray.address to the cluster (e.g. auto), or unset RAY_ADDRESS to run locally"
        )
    return address


@contextmanager
def ray_connection(config: RayConfig) -> Iterator[str]:
    """Yield 'reused' (Ray already initialised), 'connected' or 'started'.

    A started instance is shut down on exit; a connection is only closed, never the cluster.
    """
    import ray

    if ray.is_initialized():
        yield "reused"
        return
    address = cluster_address(config)
    if address:
        ray.init(address=address)
        mode = "connected"
    else:
        ray.init(
            num_cpus=config.num_cpus or None,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
        )
        mode = "started"
    log.info("ray: %s %s", mode, address or "a local instance")
    try:
        yield mode
    finally:
        ray.shutdown()
