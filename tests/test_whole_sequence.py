"""Whole-sequence (block-diffusion) training: one pass over a window gives, item by item, the
per-prefix losses of the old path under inter-item causal attention, with the same noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distributed_rec.config import ModelConfig
from distributed_rec.data.split import window_bounds, windows_table
from distributed_rec.model import build_mask_predictor, losses, masking
from distributed_rec.model.block_layout import (
    CLEAN,
    CONTEXT,
    TARGET,
    block_layout,
    layout_structure,
)
from distributed_rec.model.objectives import Normalisers, masked_pass
from distributed_rec.model.vocab import encode_sequences, encode_windows
from distributed_rec.model.whole_sequence import per_item_losses, whole_sequence_terms

pytestmark = pytest.mark.usefixtures("one_torch_thread")

M, K, S = 4, 8, 7
CODES = np.random.default_rng(0).integers(0, K, (30, M)).astype(np.int64)
WINDOWS = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13], [14, 15, 16]]


def block_model(objective: str = "llada", layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        d_model=32,
        num_layers=layers,
        num_attention_heads=4,
        ffn_dim=64,
        dropout=0.0,
        attention="inter_item_causal",
        objective=objective,
    )
    return build_mask_predictor(cfg, M, K, S).eval(), cfg


def prefix_noise(noise: masking.WindowNoise, row: int, end: int) -> masking.MaskNoise:
    """The per-prefix noise of the prefix ending at item `end` of window `row`: the same draws,
    laid out from the end of the prefix as the old path expects."""
    items = end + 1
    j_GS = torch.zeros(1, S, dtype=torch.long)
    j_GS[0, :items] = noise.j_GS[row, :items].flip(0)
    token_u_GT = torch.zeros(1, S * M)
    token_u_GT[0, : items * M] = noise.token_u_GSM[row, :items].reshape(-1).flip(0)
    return masking.MaskNoise(
        k_G=noise.k_GS[row, end : end + 1],
        order_GM=noise.order_GSM[row, end : end + 1],
        j_GS=j_GS,
        token_u_GT=token_u_GT,
        t_G=noise.t_G[row : row + 1],
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_each_items_loss_equals_the_per_prefix_loss_with_the_same_noise(seed):
    model, cfg = block_model(seed=seed)
    windows_BNM, lengths_B = encode_windows(WINDOWS, CODES, K)
    noise = masking.draw_window_noise(torch.Generator().manual_seed(seed), len(WINDOWS), S, M)
    with torch.no_grad():
        sums = per_item_losses(model, windows_BNM, lengths_B, noise, cfg)
        assert (sums["item"][:, 0] == 0).all()  # item 0 of a window is never a target
        for row, window in enumerate(WINDOWS):
            history_so_far = 0.0
            for end in range(len(window)):
                tokens, is_pad = encode_sequences([window[: end + 1]], CODES, K)
                old = prefix_noise(noise, row, end)
                mask, rate = masking.history_mask(old, is_pad, M)
                logits, codes, _ = masked_pass(model, tokens, is_pad, mask)
                history = losses.rate_weighted_loss_sum(logits, codes, rate[mask])
                # the prefix's history pass = the window's per-item history terms up to `end`
                history_so_far += float(sums["history"][row, end])
                assert float(history) == pytest.approx(history_so_far, rel=1e-5, abs=1e-5)
                if end == 0:
                    continue
                mask = masking.next_item_mask(old, tokens.shape[1], M)
                logits, codes, rows = masked_pass(model, tokens, is_pad, mask)
                item = losses.next_item_loss_sum(logits, codes, old.k_G[rows], M)
                assert float(item) == pytest.approx(float(sums["item"][row, end]), rel=1e-5)
        assert (sums["item"][lengths_B[:, None] <= torch.arange(S)[None, :S]] == 0).all()


def test_maskgr_items_equal_the_per_prefix_maskgr_pass():
    model, cfg = block_model("maskgr")
    windows_BNM, lengths_B = encode_windows(WINDOWS, CODES, K)
    noise = masking.draw_window_noise(torch.Generator().manual_seed(5), len(WINDOWS), S, M)
    with torch.no_grad():
        sums = per_item_losses(model, windows_BNM, lengths_B, noise, cfg)
        for row, window in enumerate(WINDOWS):
            tokens, is_pad = encode_sequences([window], CODES, K)
            old = prefix_noise(noise, row, len(window) - 1)
            mask, rate = masking.sequence_mask(old, is_pad)
            logits, codes, _ = masked_pass(model, tokens, is_pad, mask)
            expected = losses.rate_weighted_loss_sum(logits, codes, rate[mask])
            assert float(expected) == pytest.approx(float(sums["maskgr"][row].sum()), rel=1e-5)


def test_terms_are_global_batch_means_and_match_the_old_term_names():
    model, cfg = block_model()
    windows_BNM, lengths_B = encode_windows(WINDOWS, CODES, K)
    noise = masking.draw_window_noise(torch.Generator().manual_seed(2), len(WINDOWS), S, M)
    targets = int((lengths_B - 1).sum())
    norm = Normalisers(target_tokens=targets * M, real_tokens=int(lengths_B.sum()) * M)
    with torch.no_grad():
        terms = whole_sequence_terms(model, windows_BNM, lengths_B, noise, cfg, norm)
        sums = per_item_losses(model, windows_BNM, lengths_B, noise, cfg)
        # the same batch split in two micro-batches sums to the same loss
        halves = [
            whole_sequence_terms(
                model, windows_BNM[rows], lengths_B[rows], noise.rows(rows), cfg, norm
            )["loss"]
            for rows in (np.array([0, 1]), np.array([2, 3]))
        ]
    assert set(terms) == {"loss", "item", "history"}
    assert float(terms["item"]) == pytest.approx(float(sums["item"].sum()) / (targets * M))
    expected = float(terms["item"]) + cfg.history_loss_weight * float(terms["history"])
    assert float(terms["loss"]) == pytest.approx(expected)
    assert float(sum(halves)) == pytest.approx(float(terms["loss"]), rel=1e-5)


def test_item_loss_alone_skips_the_context_stream():
    model, cfg = block_model()
    cfg = ModelConfig(**{**cfg.__dict__, "history_loss_weight": 0.0})
    windows_BNM, lengths_B = encode_windows(WINDOWS, CODES, K)
    noise = masking.draw_window_noise(torch.Generator().manual_seed(2), len(WINDOWS), S, M)
    with torch.no_grad():
        sums = per_item_losses(model, windows_BNM, lengths_B, noise, cfg)
    assert set(sums) == {"item"}


def test_layout_attention_structure():
    # 3 items, M = 1: TARGET items 1, 2 | CONTEXT 0, 1, 2 | CLEAN 0, 1, 2
    layout = block_layout(3, 1, (TARGET, CONTEXT, CLEAN), torch.device("cpu"))
    assert layout.stream_T.tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    assert layout.item_T.tolist() == [1, 2, 0, 1, 2, 0, 1, 2]
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 1, 0, 0],  # target 1: itself, clean 0
            [0, 1, 0, 0, 0, 1, 1, 0],  # target 2: itself, clean 0-1
            [0, 0, 1, 0, 0, 0, 0, 0],  # context 0: context 0
            [0, 0, 1, 1, 0, 0, 0, 0],
            [0, 0, 1, 1, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 1, 0, 0],  # clean 0: clean 0
            [0, 0, 0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 1, 1, 1],
        ]
    )
    assert torch.equal(layout_structure(layout).int(), expected)
    with pytest.raises(ValueError, match="CLEAN"):
        block_layout(3, 1, (TARGET, CONTEXT), torch.device("cpu"))


def test_windows_hold_every_training_target_once():
    lengths = np.array([1, 2, 3, 4, 5, 10, 25, 50])
    user, begin, size = window_bounds(lengths, 6)
    assert int((size - 1).sum()) == int(np.maximum(lengths - 3, 0).sum())
    assert size.max() == 6 and size.min() >= 2
    # user 5 (10 events: 8 training items 0..7): windows [0..2] and [2..7], in time order
    assert [(int(b), int(n)) for u, b, n in zip(user, begin, size, strict=True) if u == 5] == [
        (0, 3),
        (2, 6),
    ]
    items = np.arange(int(lengths.sum()))
    starts = np.cumsum(lengths) - lengths
    table = windows_table(items, starts, lengths, 6, np.arange(len(lengths)) + 100)
    rows = table.to_pylist()
    assert rows[0] == {"user_id": 103, "items": [6, 7]}  # user 3: events 6..9, train 6..7
    last = [r for r in rows if r["user_id"] == 107][-1]
    assert last["items"] == list(range(50 + 42, 50 + 48))  # user 7 starts at event 50
