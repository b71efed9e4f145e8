"""AdamW with a linear warm-up then cosine decay to zero (SPEC §6)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from distributed_rec.config import TrainConfig


def warmup_cosine(total_steps: int, warmup_ratio: float):
    """lr multiplier of optimiser step `step` (0-based): linear up to 1, then cosine to 0."""
    warmup = int(round(warmup_ratio * total_steps))

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return multiplier


def build_optimizer(
    module: torch.nn.Module, train: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """AdamW (weight decay on matrices only, not on norms, biases or embeddings) + schedule."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        is_matrix = param.ndim >= 2 and "embedding" not in name
        (decay if is_matrix else no_decay).append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": train.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=train.lr,
        betas=(0.9, 0.999),
    )
    return optimizer, LambdaLR(optimizer, warmup_cosine(total_steps, train.warmup_ratio))
