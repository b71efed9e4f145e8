"""Early stopping on a validation metric (higher is better), with a checkpointable state."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class EarlyStopping:
    patience: int
    best: float = -math.inf
    best_epoch: int = 0
    bad_validations: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    """One {"epoch", "valid" and, when reported, "test" metrics} per validation."""

    def update(
        self,
        value: float,
        epoch: int,
        metrics: dict[str, float],
        test_metrics: dict[str, float] | None = None,
    ) -> bool:
        """Record one validation (and the test metrics reported beside it); True when it is a
        new best."""
        entry: dict = {"epoch": epoch, "valid": dict(metrics)}
        if test_metrics is not None:
            entry["test"] = dict(test_metrics)
        self.history.append(entry)
        if value > self.best:
            self.best, self.best_epoch, self.bad_validations = value, epoch, 0
            self.best_metrics = dict(metrics)
            return True
        self.bad_validations += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_validations >= self.patience

    def state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> EarlyStopping:
        return cls(**state)
