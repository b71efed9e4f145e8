"""How each training rank ended, so the command that launched them can name the cause.

The `deepspeed` launcher polls its ranks once a second from an unordered set and exits with the
first non-zero status it meets. When rank 1 is SIGKILLed (out of memory, preempted) and rank 0
fails on the broken collective within the same second, the launcher may report rank 0's
status 1, and the kill goes unnamed. So the driver names a local folder in RANK_EXITS_ENV and
every rank on its machine leaves three records there:

- `rank-NNNNN.started.json` when it starts (pid, time);
- `rank-NNNNN.ended.json` when it returns or raises (status, exception, time);
- `rank-NNNNN.sigterm.txt`, opened at start and written by `faulthandler` (at C level, so a rank
  blocked inside a collective still records it) with every thread's stack when a SIGTERM comes,
  before the default action ends the process.

A rank that started, never ended and got no SIGTERM was killed by a signal that cannot be caught:
SIGKILL. Ranks on other machines (hostfile runs) do not see the folder and record nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

RANK_EXITS_ENV = "DISTRIBUTED_REC_RANK_EXITS_DIR"


@dataclasses.dataclass
class ExitStatus:
    """What the rank's code sets before it returns: its exit status and, if any, its error."""

    status: int = 0
    error: str = ""


@dataclasses.dataclass(frozen=True)
class RankExit:
    """One rank's records, read back. `ended` is None when the rank never returned or raised."""

    rank: int
    pid: int
    ended: dict[str, Any] | None
    sigterm_stack: str

    @property
    def killed(self) -> bool:
        """Ended without returning, raising or receiving SIGTERM: SIGKILL (or a hard crash)."""
        return self.ended is None and not self.sigterm_stack

    @property
    def failed(self) -> bool:
        return self.ended is not None and self.ended["status"] != 0


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, sort_keys=True) + "\n")
    tmp.replace(path)


def _stem(rank: int) -> str:
    return f"rank-{rank:05d}"


@contextlib.contextmanager
def recorded_exit(environment: dict[str, str] | None = None) -> Iterator[ExitStatus]:
    """Record this rank's start and end in the folder named in RANK_EXITS_ENV (nothing when it
    is unset or not on this machine). The body sets the yielded ExitStatus; an exception that
    leaves the body is recorded as status 1 with its type and first line, then re-raised."""
    env = os.environ if environment is None else environment
    folder = Path(env.get(RANK_EXITS_ENV, "") or "/nonexistent")
    exit_status = ExitStatus()
    if not folder.is_dir():
        yield exit_status
        return
    stem = folder / _stem(int(env.get("RANK", "0")))
    _write_json(stem.with_suffix(".started.json"), {"pid": os.getpid(), "time": time.time()})
    sigterm_file: IO[str] = open(stem.with_suffix(".sigterm.txt"), "w")  # noqa: SIM115
    faulthandler.register(signal.SIGTERM, file=sigterm_file, all_threads=True, chain=True)
    try:
        yield exit_status
    except BaseException as err:
        first_line = (str(err).splitlines() or [""])[0]
        exit_status = ExitStatus(1, f"{type(err).__name__}: {first_line}".rstrip(": "))
        raise
    finally:
        faulthandler.unregister(signal.SIGTERM)
        sigterm_file.close()
        ended = dataclasses.asdict(exit_status) | {"time": time.time()}
        _write_json(stem.with_suffix(".ended.json"), ended)


def read_exits(folder: Path) -> list[RankExit]:
    """Every rank that started, in rank order."""
    exits = []
    for started in sorted(folder.glob("rank-*.started.json")):
        rank = int(started.name.split(".")[0].removeprefix("rank-"))
        stem = folder / _stem(rank)
        ended_path, sigterm_path = stem.with_suffix(".ended.json"), stem.with_suffix(".sigterm.txt")
        exits.append(
            RankExit(
                rank=rank,
                pid=json.loads(started.read_text())["pid"],
                ended=json.loads(ended_path.read_text()) if ended_path.exists() else None,
                sigterm_stack=sigterm_path.read_text() if sigterm_path.exists() else "",
            )
        )
    return exits


def failure_cause(exits: list[RankExit]) -> str | None:
    """The first cause among the ranks' records: a killed rank, else the rank whose failure was
    recorded first, else a rank stopped by SIGTERM from outside; None when nothing failed."""
    killed = [e for e in exits if e.killed]
    if killed:
        ranks = ", ".join(f"rank {e.rank} (pid {e.pid})" for e in killed)
        verb = "was" if len(killed) == 1 else "were"
        return (
            f"{ranks} {verb} killed (SIGKILL: it ended without returning, raising or a SIGTERM, "
            "as the out-of-memory killer or a preemption ends a process)"
        )
    failed = sorted((e for e in exits if e.failed), key=lambda e: e.ended["time"])
    if failed:
        first = failed[0]
        error = f": {first.ended['error']}" if first.ended["error"] else ""
        return (
            f"rank {first.rank} (pid {first.pid}) exited with status {first.ended['status']}{error}"
        )
    terminated = [e for e in exits if e.ended is None]
    if terminated:
        ranks = ", ".join(str(e.rank) for e in terminated)
        return f"rank {ranks} ended on SIGTERM (its stack was recorded at that moment)"
    return None
