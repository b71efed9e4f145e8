"""What this test process and its descendants listen on while a stage runs (the socket table
that `ss -ltnp` shows, read through psutil)."""

from __future__ import annotations

import threading
from types import TracebackType

import psutil

from distributed_rec.distributed.loopback import is_loopback


def listening(pids: set[int]) -> set[tuple[str, str, int]]:
    """(process name, address, port) of the TCP sockets listening in processes `pids`."""
    found = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = "?"
            found.add((name, conn.laddr.ip, conn.laddr.port))
    return found


class ListenWatch:
    """Samples, every `interval` seconds while the block runs, the listening sockets of this
    process and all its descendants (Ray's gcs_server, raylet, workers and agents, the
    deepspeed launcher's processes)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.seen: set[tuple[str, str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        me = psutil.Process()
        pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
        self.seen |= listening(pids)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> ListenWatch:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def names(self) -> set[str]:
        return {name for name, _, _ in self.seen}

    def beyond_loopback(self) -> list[tuple[str, str, int]]:
        return sorted(s for s in self.seen if not is_loopback(s[1]))
