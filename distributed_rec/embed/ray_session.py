"""Connect to the configured Ray cluster, or start a local instance and stop it afterwards."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from distributed_rec.config import RayConfig

log = logging.getLogger(__name__)


@contextmanager
def ray_session(config: RayConfig) -> Iterator[bool]:
    """Yield True when this call started Ray (and will shut it down), False when reusing one.

    An already initialised Ray (a test, a notebook, a Ray job) is reused and left running.
    """
    import ray

    if ray.is_initialized():
        yield False
        return
    if config.address:
        ray.init(address=config.address, log_to_driver=False)
    else:
        ray.init(
            num_cpus=config.num_cpus or None,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
    log.info("ray: %s", "connected to " + config.address if config.address else "local instance")
    try:
        yield True
    finally:
        ray.shutdown()
