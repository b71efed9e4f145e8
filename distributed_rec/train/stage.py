"""The train stage: start the loop with the configured launcher, return its metrics."""

from __future__ import annotations

import json
from typing import Any

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import JobConfig
from distributed_rec.errors import ArtifactError


def run_train(config: JobConfig) -> dict[str, Any]:
    """`--train.launcher=local|deepspeed|ray` (`--train.num_procs=N` for the last two)."""
    paths = RunPaths.of(config.run_dir)
    paths.train_metrics.unlink(missing_ok=True)
    if config.train.launcher == "local":
        from distributed_rec.train.loop import train_worker

        return train_worker(config)
    if config.train.launcher == "deepspeed":
        from distributed_rec.train.launchers import launch_deepspeed

        launch_deepspeed(config)
    else:
        from distributed_rec.train.launchers import launch_ray

        launch_ray(config)
    # rank 0 published these (a remote run directory; it may have run on another machine)
    paths.fetch(paths.train_metrics, paths.best_model.parent, paths.checkpoints)
    if not paths.train_metrics.exists():
        raise ArtifactError(f"{paths.train_metrics} was not written: training did not finish")
    return json.loads(paths.train_metrics.read_text())
