"""Running one function over many inputs as Ray tasks, results in input order, the node of
every task counted.

Tasks are spread over the nodes (Ray's SPREAD strategy: they are CPU-bound and their inputs are
files, not objects held by one node) and retried when their worker or node dies; a task that
raises is not retried (its error is the input's).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed_rec.distributed.nodes import NodeTally, current_node

TASK_CPUS = 1.0
"""CPUs each prepare task reserves: tasks are CPU-bound, and one per CPU bounds their memory."""
TASK_RETRIES = 2
"""Ray re-runs a task whose worker process or node died this many times. Every task writes its
files under names fixed by its arguments, so a re-run replaces what a lost attempt left."""
ATTEMPTS_ENV = "DISTRIBUTED_REC_TEST_TASK_ATTEMPTS"
"""Tests only: a folder; while it exists, every task attempt writes a file there,
`<step>-<pid>-<ns>-<node>`, and an attempt of step S then waits while `hold-S` exists there, so
that a test can remove a node while a task of S runs on it."""


def _record_attempt(step: str, node: str | None) -> None:
    folder = os.environ.get(ATTEMPTS_ENV, "")
    if folder and os.path.isdir(folder):
        Path(folder, f"{step}-{os.getpid()}-{time.monotonic_ns()}-{node}").touch()
        hold = Path(folder, f"hold-{step}")
        while hold.exists():
            time.sleep(0.05)


def _on_node(fn: Callable[..., Any], *args: Any) -> tuple[str | None, Any]:
    """The task body: (this node's id, fn(*args))."""
    node = current_node()
    _record_attempt(fn.__name__, node)
    return node, fn(*args)


@dataclass
class PendingTasks:
    """Tasks submitted by :func:`submit_tasks`, not yet waited for."""

    step: str
    refs: list

    def results(self, nodes: NodeTally | None = None) -> list:
        """The tasks' results in input order (a task that raised re-raises here); `nodes`
        counts them per node under the step."""
        import ray

        done = ray.get(self.refs)
        if nodes is not None:
            nodes.add(self.step, [node for node, _ in done])
        return [result for _, result in done]


def submit_tasks(
    fn: Callable[..., Any], calls: Sequence[tuple], num_cpus: float = TASK_CPUS
) -> PendingTasks:
    """Start fn(*args) for every args of `calls` as Ray tasks (Ray must be initialised), so
    that the caller can work meanwhile."""
    import ray

    remote = ray.remote(_on_node).options(
        name=fn.__name__,  # the task's name in Ray's dashboard and state API
        num_cpus=num_cpus,
        max_retries=TASK_RETRIES,
        scheduling_strategy="SPREAD",
    )
    return PendingTasks(fn.__name__, [remote.remote(fn, *args) for args in calls])


def run_tasks(
    fn: Callable[..., Any],
    calls: Sequence[tuple],
    num_cpus: float = TASK_CPUS,
    nodes: NodeTally | None = None,
) -> list:
    """fn(*args) for every args of `calls` as Ray tasks (Ray must be initialised); a task that
    raises re-raises here. `nodes` counts the tasks per node under the step `fn.__name__`."""
    return submit_tasks(fn, calls, num_cpus).results(nodes)
