"""Helpers of the multi-node tests: the environment of launcher subprocesses, the processes a
run left behind, the final weights of a run directory."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psutil
import torch

from distributed_rec.artifacts import RunPaths
from distributed_rec.train.checkpoint import MARKER

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def launcher_env(**extra: str) -> dict[str, str]:
    """This environment for a launcher script: this venv's python first on PATH, one thread
    per rank, no rendezvous variables inherited from a surrounding launcher."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHON=sys.executable,
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
    )
    env.update(extra)
    return env


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live processes whose command line contains `text` (a run directory's path)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(text in part for part in process.info["cmdline"] or ()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def wait_until_gone(text: str, timeout: float) -> float:
    """Seconds until no process mentions `text`; fails after `timeout` (and kills them)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not processes_mentioning(text):
            return time.monotonic() - started
        time.sleep(0.2)
    left = processes_mentioning(text)
    for process in left:
        process.kill()
    raise AssertionError(f"processes still running after {timeout} s: {[p.pid for p in left]}")


def final_weights(paths: RunPaths) -> dict[str, torch.Tensor]:
    """The model weights of the latest checkpoint."""
    tag = json.loads((paths.checkpoints / MARKER).read_text())["tag"]
    state = torch.load(paths.checkpoints / tag / "mp_rank_00_model_states.pt", weights_only=True)
    return state["module"]


def assert_same_weights(
    actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float = 0.0
) -> None:
    """Equal tensors (bitwise with atol=0)."""
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=0 if not atol else 1e-4, atol=atol)
