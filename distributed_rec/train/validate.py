"""Validation during training: decoding with decode.valid_beam_size beams on the valid split.

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
    """Ranking metrics (recall@k, ndcg@k) of the top-k lists of `decode.valid_ranking` on the given
    users. With the dense head and generative or hybrid ranking also "generative/<metric>" and
    "dense/<metric>", and for hybrid ranking "hybrid_weight" (`decode.hybrid_weight`, or the
    best on these users when < 0); dense ranking decodes the dense lists only."""
    from distributed_rec.decode import model_scoring, recommend
    from distributed_rec.decode.hybrid import hybrid_rank, rank_with_dense
    from distributed_rec.evaluate.metrics import ranking_metrics
    from distributed_rec.evaluate.modes import choose_weight

    decode = config.decode
    ranking = config.validation_ranking
    search = {
        "beam_size": decode.valid_beam_size,
        "steps": config.validation_steps,
        "order": config.validation_order,
        "top_k": decode.top_k,
        "batch_size": max(config.evaluate.batch_size, 256),
        "index": index,
        "exclude_history": decode.exclude_history,
    }
    scoring = model_scoring(model, "fp32", config.cached_decoding)
    was_training = model.training
    model.eval()
    try:
        if model.dense is None:
            ranked_UK = recommend(scoring, histories, table, device=device, **search)
            metrics = ranking_metrics(ranked_UK, targets)
            return {key: float(value) for key, value in metrics.items()}
        out = rank_with_dense(
            model,
            scoring,
            histories,
            table,
            dense_candidates=decode.dense_candidates,
            cached=config.cached_decoding,
            dense_only=ranking == "dense",
            dense_prior_weight=decode.dense_prior_weight,
            **search,
        )
    finally:
        model.train(was_training)
    if ranking == "dense":  # no beam search: validation costs one pass per user
        metrics = ranking_metrics(out.dense_UK, targets)
        return {key: float(value) for key, value in metrics.items()}
    modes = {
        "generative": ranking_metrics(out.generative_UK, targets),
        "dense": ranking_metrics(out.dense_UK, targets),
    }
    result: dict[str, float] = {}
    if ranking == "hybrid":
        columns = {
            "candidates": out.candidates_UC,
            "generative_scores": out.generative_UC,
            "dense_scores": out.dense_UC,
        }
        weight = decode.hybrid_weight
        if weight < 0:
            weight, _ = choose_weight(columns, targets, decode.hybrid_grid, decode.top_k)
        ranked = hybrid_rank(
            out.candidates_UC, out.generative_UC, out.dense_UC, weight, decode.top_k
        )
        modes["hybrid"] = ranking_metrics(ranked, targets)
        result["hybrid_weight"] = float(weight)
    result.update({key: float(value) for key, value in modes[ranking].items()})
    for mode in ("generative", "dense"):
        result.update({f"{mode}/{key}": float(value) for key, value in modes[mode].items()})
    return result


class ValidationRunner:
    """Validation inside the training loop: rank 0 decodes, every rank learns the metrics."""

    def __init__(
        self,
        config: JobConfig,
        paths: RunPaths,
        table: SemanticIdTable,
        device: str,
        is_main: bool,
        split: str = "valid",
    ) -> None:
        self.config, self.paths, self.table = config, paths, table
        self.device, self.is_main, self.split = device, is_main, split
        self.histories: list[np.ndarray] = []
        self.targets = np.zeros(0, dtype=np.int64)
        self.index: Any = None
        if is_main:
            eval_split_rows(paths.eval_split(split))  # a missing split fails before training

    def _load(self) -> None:
        """The sampled users of the split (rank 0), read at the first validation: training that
        never validates never holds them (all users when train.eval_max_users is 0)."""
        from distributed_rec.decode import ValidIdIndex

        config, path = self.config, self.paths.eval_split(self.split)
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
