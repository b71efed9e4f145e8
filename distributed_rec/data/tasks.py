"""Running one function over many inputs as Ray tasks, results in input order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

TASK_CPUS = 1.0
"""CPUs each prepare task reserves: tasks are CPU-bound, and one per CPU bounds their memory."""


def run_tasks(fn: Callable[..., Any], calls: Sequence[tuple], num_cpus: float = TASK_CPUS) -> list:
    """fn(*args) for every args of `calls` as Ray tasks (Ray must be initialised); a task that
    raises re-raises here."""
    import ray

    remote = ray.remote(fn).options(num_cpus=num_cpus, max_retries=2)
    return ray.get([remote.remote(*args) for args in calls])
