"""Decoding: valid-ID constraint index, adaptive-order beam search, greedy and fixed orders, and
the scorings it runs on (full passes or a cached history)."""

from distributed_rec.decode.beam_search import beam_search
from distributed_rec.decode.constraint import ValidIdIndex
from distributed_rec.decode.orders import ORDERS
from distributed_rec.decode.recommend import recommend
from distributed_rec.decode.scoring import (
    LogitsFn,
    Scoring,
    cached_history,
    full_pass,
    model_logits_fn,
    model_scoring,
)

__all__ = [
    "ORDERS",
    "LogitsFn",
    "Scoring",
    "ValidIdIndex",
    "beam_search",
    "cached_history",
    "full_pass",
    "model_logits_fn",
    "model_scoring",
    "recommend",
]
