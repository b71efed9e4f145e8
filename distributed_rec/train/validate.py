"""Validation during training: greedy (decode.valid_beam_size) decoding on the valid split.

Legend: U users, K top-k.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import JobConfig
from distributed_rec.distributed import env
from distributed_rec.model import MaskPredictor
from distributed_rec.model.weights import save_best_model
from distributed_rec.semantic_ids.id_table import SemanticIdTable
from distributed_rec.train.data import eval_split_rows, read_eval_split


def sample_users(num_users: int, max_users: int, seed: int) -> np.ndarray:
    """Fixed (sorted) sample of user rows; all users when max_users is 0."""
    if max_users <= 0 or max_users >= num_users:
        return np.arange(num_users)
    return np.sort(np.random.default_rng([seed, 7]).choice(num_users, max_users, replace=False))


@torch.no_grad()
def validate(
    model: MaskPredictor,
    histories: list[np.ndarray],
    targets: np.ndarray,
    table: SemanticIdTable,
    config: JobConfig,
    device: str = "cpu",
    index: Any = None,
) -> dict[str, float]:
    """Ranking metrics (recall@k, ndcg@k) of the generated top-k on the given users."""
    from distributed_rec.decode import model_scoring, recommend
    from distributed_rec.evaluate.metrics import ranking_metrics

    was_training = model.training
    model.eval()
    try:
        ranked_UK = recommend(
            model_scoring(model, "fp32", config.cached_decoding),
            histories,
            table,
            beam_size=config.decode.valid_beam_size,
            steps=config.decode.steps,
            order=config.decode.order,
            top_k=config.decode.top_k,
            batch_size=max(config.evaluate.batch_size, 256),
            device=device,
            index=index,
            exclude_history=config.decode.exclude_history,
        )
    finally:
        model.train(was_training)
    return {key: float(value) for key, value in ranking_metrics(ranked_UK, targets).items()}


class ValidationRunner:
    """Validation inside the training loop: rank 0 decodes, every rank learns the metrics."""

    def __init__(
        self, config: JobConfig, paths: RunPaths, table: SemanticIdTable, device: str, is_main: bool
    ) -> None:
        self.config, self.paths, self.table = config, paths, table
        self.device, self.is_main = device, is_main
        self.histories: list[np.ndarray] = []
        self.targets = np.zeros(0, dtype=np.int64)
        self.index: Any = None
        if is_main:
            eval_split_rows(paths.eval_split("valid"))  # a missing split fails before training

    def _load(self) -> None:
        """The sampled valid users (rank 0), read at the first validation: training that never
        validates never holds them (all users when train.eval_max_users is 0)."""
        from distributed_rec.decode import ValidIdIndex

        config, path = self.config, self.paths.eval_split("valid")
        self.index = ValidIdIndex(self.table, self.device)
        users = sample_users(eval_split_rows(path), config.train.eval_max_users, config.train.seed)
        self.histories, self.targets = read_eval_split(path, config.data.max_history, users)

    def _gathered(self, engine: Any) -> Any:
        """Full parameters on every rank under ZeRO-3 (a no-op context otherwise)."""
        import deepspeed

        return deepspeed.zero.GatheredParameters(
            list(engine.module.parameters()), enabled=self.config.train.zero_stage == 3
        )

    def run(self, engine: Any) -> dict[str, float]:
        metrics: list[dict[str, float] | None] = [None]
        with self._gathered(engine):
            if self.is_main:
                if self.index is None:
                    self._load()
                metrics[0] = validate(
                    engine.module.model,
                    self.histories,
                    self.targets,
                    self.table,
                    self.config,
                    self.device,
                    self.index,
                )
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast_object_list(metrics, src=0)
        assert metrics[0] is not None
        return metrics[0]

    def save_best(self, engine: Any) -> None:
        with self._gathered(engine):
            if self.is_main:
                save_best_model(engine.module.model, self.paths.best_model)
        env.barrier()
