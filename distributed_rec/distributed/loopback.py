"""Single-node runs listen on the loopback interface only.

torch.distributed's TCPStore server listens on every interface whatever host it is given, and
gloo and NCCL listen on the interface they pick (the host name's address, the first NIC). For a
run on one machine the project serves the store itself from a socket bound to the loopback
address (TCPStore's `master_listen_fd`) and points gloo and NCCL at the loopback interface
(GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME, unless already set). Runs on several machines (a
hostfile, a Ray cluster) keep torch's defaults.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from datetime import timedelta

import torch.distributed as dist

LOOPBACK = "127.0.0.1"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
STORE_TIMEOUT = timedelta(minutes=30)
"""How long ranks wait for each other in the store (torch's init_process_group default)."""


def is_loopback(ip: str) -> bool:
    """Whether a listening address is reachable only from this machine (127.0.0.0/8, ::1, or an
    IPv4-mapped loopback address such as ::ffff:127.0.0.1)."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def loopback_interface() -> str | None:
    """The name of the interface holding 127.0.0.1 ('lo' on Linux, 'lo0' on macOS)."""
    if hasattr(socket, "if_nameindex"):
        names = [name for _, name in socket.if_nameindex()]
        for name in ("lo", "lo0"):
            if name in names:
                return name
    return None


_SET_HERE: dict[str, str] = {}
"""Interface variables keep_collectives_on_loopback set in this process (and their values)."""


def keep_collectives_on_loopback() -> None:
    """Let gloo and NCCL listen on the loopback interface, unless the user chose interfaces.

    The variables stay set in this process (NCCL reads them when its first communicator is
    made, after init_process_group); :func:`without_loopback_choices` drops them again from the
    environment of a multi-node launch."""
    name = loopback_interface()
    for variable in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        if name and variable not in os.environ:
            os.environ[variable] = _SET_HERE[variable] = name


def without_loopback_choices(environment: dict[str, str]) -> dict[str, str]:
    """`environment` without the interface variables keep_collectives_on_loopback set."""
    return {k: v for k, v in environment.items() if _SET_HERE.get(k) != v}


def loopback_store(host: str, port: int, rank: int, world_size: int) -> dist.TCPStore:
    """The rendezvous store of a single-node group; rank 0 serves it on `host`:`port` only
    (port 0: a free one, for a group of one)."""
    if rank != 0:
        return dist.TCPStore(host, port, world_size, False, STORE_TIMEOUT)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    try:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((host, port))
        server.listen(socket.SOMAXCONN)
    except OSError:
        server.close()
        raise
    port = server.getsockname()[1]
    # the store owns the socket from here on: detach it so that Python never closes it
    return dist.TCPStore(
        host, port, world_size, True, STORE_TIMEOUT, master_listen_fd=server.detach()
    )


def init_single_node_group(backend: str, host: str, port: int, rank: int, world_size: int) -> None:
    """init_process_group for processes of one machine, listening on loopback only."""
    keep_collectives_on_loopback()
    store = loopback_store(host, port, rank, world_size)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size)
