"""A small single-process training loop shared by the baselines, with early stopping.

A baseline is an `nn.Module` with `loss(sequences) -> scalar` (each sequence is history items
then the target) and `recommend(histories, top_k) -> int64 [U, top_k]`. Each epoch visits the
training samples in the order of `train.data.epoch_order`; after it, NDCG@10 on the validation
users decides whether the weights are the best so far; `patience` epochs without improvement stop.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from distributed_rec.evaluate.metrics import ranking_metrics
from distributed_rec.train.data import SampleSet, epoch_order

log = logging.getLogger(__name__)

MONITOR = "ndcg@10"


class Baseline(Protocol):
    def loss(self, sequences: Sequence[np.ndarray]) -> torch.Tensor: ...

    def recommend(self, histories: Sequence[Sequence[int]], top_k: int) -> np.ndarray: ...


@dataclass
class FitResult:
    """What `fit` did: per-epoch history, the best epoch and its validation metrics."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_valid: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0


def evaluate(
    model: nn.Module,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    top_k: int,
    batch_size: int,
) -> dict[str, float]:
    """`ranking_metrics` of the model's top-k lists for all users (batched, eval mode)."""
    model.eval()
    ranked = [
        model.recommend(histories[start : start + batch_size], top_k)
        for start in range(0, len(histories), batch_size)
    ]
    ranked_UK = np.concatenate(ranked) if ranked else np.zeros((0, top_k), dtype=np.int64)
    return ranking_metrics(ranked_UK, targets)


def fit(
    model: nn.Module,
    samples: SampleSet,
    valid: tuple[Sequence[np.ndarray], np.ndarray],
    *,
    lr: float,
    batch_size: int,
    max_epochs: int,
    patience: int,
    top_k: int,
    seed: int,
    eval_batch_size: int,
) -> FitResult:
    """Train with AdamW; leaves the model holding the weights of the best validation epoch."""
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    result = FitResult()
    best_score, best_state, waited = -np.inf, copy.deepcopy(model.state_dict()), 0
    started = time.perf_counter()
    for epoch in range(max_epochs):
        model.train()
        order = epoch_order(len(samples), seed, epoch)
        losses = []
        for start in range(0, len(order), batch_size):
            loss = model.loss(samples.sequences(order[start : start + batch_size]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        metrics = evaluate(model, *valid, top_k=top_k, batch_size=eval_batch_size)
        row = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan")}
        row.update({f"valid/{k}": v for k, v in metrics.items()})
        result.epochs.append(row)
        log.info("epoch %d loss %.4f valid %s %.4f", epoch, row["loss"], MONITOR, metrics[MONITOR])
        if metrics[MONITOR] > best_score:
            best_score, waited = metrics[MONITOR], 0
            best_state = copy.deepcopy(model.state_dict())
            result.best_epoch, result.best_valid = epoch, metrics
        else:
            waited += 1
            if waited >= patience:
                break
    model.load_state_dict(best_state)
    result.train_seconds = time.perf_counter() - started
    return result


def summary_of(result: FitResult) -> dict[str, Any]:
    return {
        "epochs_run": len(result.epochs),
        "best_epoch": result.best_epoch,
        "train_seconds": result.train_seconds,
        "history": result.epochs,
    }
