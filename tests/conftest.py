"""Shared fixtures: the ../shared/data datasets (mandatory in CI) and small run directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get("DISTRIBUTED_REC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_dataset(name: str) -> Path:
    """Path of ../shared/data/<name>; skips the test where absent, fails in CI."""
    path = SHARED_DATA / name
    if not path.exists():
        reason = f"{path} is absent (the real datasets live in ../shared/data beside the checkout)"
        if os.environ.get("DISTRIBUTED_REC_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(reason + "; DISTRIBUTED_REC_REQUIRE_SHARED_DATA=1 makes it mandatory")
        pytest.skip(reason)
    return path


@pytest.fixture
def scientific_dir() -> Path:
    return shared_dataset("scientific")


@pytest.fixture
def office_dir() -> Path:
    return shared_dataset("office")


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one thread avoids contention and is deterministic.

    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
