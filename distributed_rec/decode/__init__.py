"""Decoding: valid-ID constraint index, adaptive-order beam search, greedy and fixed orders."""

from distributed_rec.decode.beam_search import LogitsFn, beam_search
from distributed_rec.decode.constraint import ValidIdIndex
from distributed_rec.decode.orders import ORDERS
from distributed_rec.decode.recommend import model_logits_fn, recommend

__all__ = ["ORDERS", "LogitsFn", "ValidIdIndex", "beam_search", "model_logits_fn", "recommend"]
