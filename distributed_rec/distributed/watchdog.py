"""Training processes end when the command that launched them is gone.

`python -m distributed_rec train --train.launcher=deepspeed` starts the `deepspeed` launcher,
which starts `deepspeed.launcher.launch`, which starts the ranks. Killing the driver (SIGKILL,
a preempted node, a closed terminal) used to leave that tree running: the launcher in local mode
forwards no signal. The driver now names itself in DRIVER_PID_ENV; every rank watches that
process and exits with DRIVER_GONE_STATUS once it has gone, so the launcher sees a failed rank,
stops the others and exits too.
"""

from __future__ import annotations

import os
import sys
import threading

import psutil

DRIVER_PID_ENV = "DISTRIBUTED_REC_DRIVER_PID"
DRIVER_GONE_STATUS = 75
POLL_SECONDS = 1.0


def driver_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _watch(pid: int, stop: threading.Event) -> None:
    while not stop.wait(POLL_SECONDS):
        if not driver_alive(pid):
            print(
                f"error: the launching command (pid {pid}) is gone; rank process {os.getpid()} "
                "ends the job (resume with --train.resume=true)",
                file=sys.stderr,
                flush=True,
            )
            os._exit(DRIVER_GONE_STATUS)


def watch_driver(environment: dict[str, str] | None = None) -> threading.Event | None:
    """Start watching the driver named in DRIVER_PID_ENV (nothing when unset); returns the
    event that stops the watch."""
    value = (os.environ if environment is None else environment).get(DRIVER_PID_ENV, "")
    if not value.isdigit():
        return None
    stop = threading.Event()
    threading.Thread(target=_watch, args=(int(value), stop), daemon=True).start()
    return stop
