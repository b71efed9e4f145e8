"""Tests only: a training rank kills itself with SIGKILL at a chosen step, as a preempted or
OOM-killed process would. KILL_RANK_ENV holds `RANK:STEP`: that rank dies just before training
step STEP + 1, after step STEP's checkpoint (if any) was written."""

from __future__ import annotations

import os
import signal

KILL_RANK_ENV = "DISTRIBUTED_REC_TEST_KILL_RANK_AT_STEP"


def maybe_kill(rank: int, completed_steps: int) -> None:
    """SIGKILL this process when KILL_RANK_ENV names this rank and step."""
    value = os.environ.get(KILL_RANK_ENV, "")
    if not value:
        return
    target_rank, _, target_step = value.partition(":")
    if int(target_rank) == rank and int(target_step) == completed_steps:
        os.kill(os.getpid(), signal.SIGKILL)
