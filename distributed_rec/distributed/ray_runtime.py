"""Connect to the Ray cluster a stage runs on, or start a local one and stop only that.

Under `ray job submit` the job's driver finds the cluster through the RAY_ADDRESS variable that
Ray sets; `ray.address` in the config overrides it; with neither, a local instance is started,
listening on 127.0.0.1 only (:func:`start_local_ray`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed_rec.config import RayConfig
from distributed_rec.distributed.loopback import LOOPBACK
from distributed_rec.errors import DistributedRecError

log = logging.getLogger(__name__)

SINGLE_MACHINE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's own switch between cluster mode and single-machine mode (the default on macOS and
Windows); set to 0 while a local instance starts."""


def start_local_ray(num_cpus: int = 0, **options: Any) -> None:
    """Start a local Ray instance whose every process listens on 127.0.0.1 only.

    ray.init(_node_ip_address="127.0.0.1") alone is not enough: in cluster mode (Ray's default
    on Linux) Ray replaces a loopback node address with this machine's external address, and
    its processes then listen on all interfaces (gcs_server, raylet, workers), 0.0.0.0
    (dashboard agent, metrics) or the external address (runtime-env agent). In single-machine
    mode the node address stays 127.0.0.1, and gcs_server, raylet, the workers and every agent
    bind to it. The switch is set around ray.init only (the processes it starts inherit it).
    address="local" starts a new instance even where a cluster started by `ray start` (another
    job's, a test's) is running on this machine: without it ray.init() joins that cluster, and
    its owner stopping it kills this stage's tasks. `options` go to ray.init (e.g. log_to_driver).
    """
    import ray
    import ray._private.ray_constants as ray_constants

    saved = os.environ.get(SINGLE_MACHINE_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import; this process imported Ray already
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus or None,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,
            **options,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]
        if saved[0] is None:
            os.environ.pop(SINGLE_MACHINE_SWITCH, None)
        else:
            os.environ[SINGLE_MACHINE_SWITCH] = saved[0]
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:
        log.warning("ray: the local instance runs on %s, not on %s", node_ip, LOOPBACK)


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
        start_local_ray(config.num_cpus)
        mode = "started"
    log.info("ray: %s %s", mode, address or "a local instance")
    try:
        yield mode
    finally:
        ray.shutdown()
