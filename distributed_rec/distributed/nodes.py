"""Which Ray node ran a piece of work: the node id inside a task or actor, and a per-step tally
of them that stage summaries record (`prepare/stats.json: task_nodes`, embed's `actor_nodes`)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable


def current_node() -> str | None:
    """The id (hex) of the Ray node this process runs on; None outside Ray."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


class NodeTally:
    """How many units of work (tasks, items) each node did, per step name."""

    def __init__(self) -> None:
        self._steps: dict[str, Counter[str]] = {}

    def add(self, step: str, nodes: Iterable[str | None]) -> None:
        """Count one unit of `step` for each entry of `nodes` (None, outside Ray: "local")."""
        self._steps.setdefault(step, Counter()).update(node or "local" for node in nodes)

    def as_dict(self) -> dict[str, dict[str, int]]:
        """step -> node id -> units, nodes sorted (JSON-able)."""
        return {step: dict(sorted(c.items())) for step, c in self._steps.items()}
