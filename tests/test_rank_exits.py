"""Rank exit records: real processes that return, raise, get SIGTERM or SIGKILL, read back and
turned into the cause a failed launch names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distributed_rec.artifacts import RunPaths
from distributed_rec.distributed.exits import (
    RANK_EXITS_ENV,
    RankExit,
    failure_cause,
    read_exits,
    recorded_exit,
)
from distributed_rec.train.launchers import failure_message

RANK_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from distributed_rec.distributed.exits import recorded_exit

    with recorded_exit() as exit_status:
        how = sys.argv[1]
        if how == "raise":
            raise RuntimeError("connection closed by peer\\nsecond line")
        if how == "error":
            exit_status.status, exit_status.error = 2, "bad config"
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "wait":
            print("ready", flush=True)
            time.sleep(60)
    """
)


def _rank(folder: Path, rank: int, how: str) -> subprocess.Popen:
    env = {**os.environ, RANK_EXITS_ENV: str(folder), "RANK": str(rank)}
    return subprocess.Popen(
        [sys.executable, "-c", RANK_SCRIPT, how], env=env, stdout=subprocess.PIPE, text=True
    )


@pytest.mark.timeout(60)
def test_each_way_of_ending_is_recorded(tmp_path):
    ranks = {0: "return", 1: "raise", 2: "error", 3: "sigkill"}
    processes = {rank: _rank(tmp_path, rank, how) for rank, how in ranks.items()}
    waiting = _rank(tmp_path, 4, "wait")
    assert waiting.stdout.readline().strip() == "ready"
    waiting.send_signal(signal.SIGTERM)
    assert waiting.wait(timeout=20) == -signal.SIGTERM
    statuses = {rank: p.wait(timeout=20) for rank, p in processes.items()}
    assert statuses == {0: 0, 1: 1, 2: 0, 3: -signal.SIGKILL}

    exits = {e.rank: e for e in read_exits(tmp_path)}
    assert sorted(exits) == [0, 1, 2, 3, 4]
    assert exits[0].ended["status"] == 0 and not exits[0].failed and not exits[0].killed
    assert exits[1].ended["status"] == 1
    assert exits[1].ended["error"] == "RuntimeError: connection closed by peer"
    assert exits[2].ended == {"status": 2, "error": "bad config", "time": exits[2].ended["time"]}
    assert exits[3].ended is None and exits[3].killed
    assert exits[4].ended is None and not exits[4].killed
    assert "most recent call first" in exits[4].sigterm_stack  # where it was when stopped
    assert exits[3].pid == processes[3].pid


def _exit(rank: int, ended: dict | None = None, sigterm: str = "") -> RankExit:
    return RankExit(rank=rank, pid=100 + rank, ended=ended, sigterm_stack=sigterm)


def test_the_cause_is_the_kill_then_the_first_failure_then_a_sigterm():
    raised = {"status": 1, "error": "RuntimeError: connection closed", "time": 5.0}
    earlier = {"status": 2, "error": "bad input", "time": 4.0}
    killed, stopped, fine = _exit(1), _exit(2, sigterm="Thread 0x1"), {"status": 0, "error": ""}
    assert failure_cause([_exit(0, raised), killed, stopped]) == (
        "rank 1 (pid 101) was killed (SIGKILL: it ended without returning, raising or a SIGTERM, "
        "as the out-of-memory killer or a preemption ends a process)"
    )
    assert failure_cause([_exit(0, raised), _exit(3, earlier), stopped]) == (
        "rank 3 (pid 103) exited with status 2: bad input"
    )
    assert failure_cause([_exit(0, fine | {"time": 1.0}), stopped]) == (
        "rank 2 ended on SIGTERM (its stack was recorded at that moment)"
    )
    assert failure_cause([_exit(0, fine | {"time": 1.0})]) is None
    assert failure_cause([]) is None


def test_the_failure_message_prefers_the_records_over_the_launcher_status(tmp_path):
    paths = RunPaths(tmp_path)
    cause = failure_cause([_exit(0, {"status": 1, "error": "", "time": 1.0}), _exit(1)])
    message = failure_message("the deepspeed launcher", 1, paths, cause)
    assert message.startswith(
        "training failed: the deepspeed launcher exited with status 1: rank 1"
    )
    assert "SIGKILL" in message and "no checkpoint was written yet" in message
    guessed = failure_message("the deepspeed launcher", -9, paths)
    assert "a training process was killed (SIGKILL)" in guessed


def test_nothing_is_recorded_without_the_folder(tmp_path):
    missing = tmp_path / "elsewhere"
    with recorded_exit({RANK_EXITS_ENV: str(missing), "RANK": "0"}) as exit_status:
        exit_status.status = 0
    with recorded_exit({}) as exit_status:
        pass
    assert not missing.exists() and list(tmp_path.iterdir()) == []
