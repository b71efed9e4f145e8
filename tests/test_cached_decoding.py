"""History-cached beam search: the same ranked lists as re-encoding every beam's whole sequence,
under the same attention, in fp32, for random and trained weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distributed_rec.config import ModelConfig
from distributed_rec.decode import (
    ValidIdIndex,
    cached_history,
    full_pass,
    model_logits_fn,
    model_scoring,
    recommend,
)
from distributed_rec.model import build_mask_predictor, masking
from distributed_rec.model.objectives import Normalisers
from distributed_rec.model.vocab import encode_sequences, encode_windows, mask_token
from distributed_rec.model.whole_sequence import whole_sequence_terms
from distributed_rec.semantic_ids.id_table import SemanticIdTable

pytestmark = pytest.mark.usefixtures("one_torch_thread")

M, K, ITEMS, MAX_ITEMS = 4, 6, 150, 9
RNG = np.random.default_rng(0)
TABLE = SemanticIdTable(
    np.arange(ITEMS, dtype=np.int64),
    np.stack(np.unravel_index(RNG.choice(K**M, ITEMS, replace=False), (K,) * M), axis=1).astype(
        np.int64
    ),
    K,
)
HISTORIES = [RNG.choice(ITEMS, int(n), replace=False).tolist() for n in RNG.integers(1, 9, 14)]


def make_model(attention: str, trained: bool) -> torch.nn.Module:
    torch.manual_seed(1)
    cfg = ModelConfig(
        d_model=32, num_layers=2, num_attention_heads=4, ffn_dim=64, dropout=0.0,
        attention=attention,
    )  # fmt: skip
    model = build_mask_predictor(cfg, M, K, MAX_ITEMS)
    if trained:  # peaked, history-dependent distributions instead of near-uniform ones
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        rng = np.random.default_rng(1)
        windows = [rng.choice(ITEMS, MAX_ITEMS, replace=False) % 40 for _ in range(64)]
        tokens, lengths = encode_windows(windows, TABLE.dense_codes(ITEMS), K)
        norm = Normalisers(target_tokens=64 * (MAX_ITEMS - 1) * M, real_tokens=64 * MAX_ITEMS * M)
        if attention != "inter_item_causal":  # whole-sequence training is exact only there
            cfg = ModelConfig(**{**cfg.__dict__, "attention": "inter_item_causal"})
        for step in range(40):
            noise = masking.draw_window_noise(torch.Generator().manual_seed(step), 64, MAX_ITEMS, M)
            loss = whole_sequence_terms(model, tokens, lengths, noise, cfg, norm)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module", params=["inter_item_causal", "causal"])
def attention(request):
    return request.param


@pytest.fixture(scope="module", params=[False, True], ids=["random", "trained"])
def models(request, attention):
    return make_model(attention, request.param)


@pytest.mark.parametrize(
    ("beam_size", "steps", "order"),
    [(12, 1, "adaptive"), (12, 2, "adaptive"), (12, 4, "adaptive"), (12, 4, "l2r"),
     (12, 4, "r2l"), (1, 4, "adaptive")],
)  # fmt: skip
@pytest.mark.parametrize("exclude_history", [False, True])
def test_cached_lists_equal_full_pass_lists(models, beam_size, steps, order, exclude_history):
    index = ValidIdIndex(TABLE)
    args = dict(
        beam_size=beam_size, steps=steps, order=order, top_k=10, batch_size=5, index=index,
        exclude_history=exclude_history,
    )  # fmt: skip
    with torch.no_grad():
        uncached = recommend(full_pass(model_logits_fn(models, "fp32")), HISTORIES, TABLE, **args)
        cached = recommend(cached_history(models, "fp32"), HISTORIES, TABLE, **args)
    assert (uncached[:, 0] >= 0).sum() >= len(HISTORIES) - 2  # (greedy may end on history)
    np.testing.assert_array_equal(cached, uncached)


def test_cached_logits_equal_full_pass_logits(models):
    tokens, is_pad = encode_sequences(HISTORIES[:4], TABLE.dense_codes(ITEMS), K)
    targets_URM = torch.randint(0, K, (4, 3, M)) + torch.arange(M) * K
    targets_URM[:, 1, 2:] = mask_token(M, K)
    with torch.no_grad():
        cache = models.encode_history(tokens, is_pad)
        cached = models.cached_target_logits(cache, targets_URM)
        for user in range(4):
            full_tokens = torch.cat([tokens[user : user + 1].expand(3, -1), targets_URM[user]], 1)
            full_pad = torch.cat(
                [is_pad[user : user + 1].expand(3, -1), torch.zeros(3, M, dtype=torch.bool)], 1
            )
            expected = models.target_logits(full_tokens, full_pad)
            torch.testing.assert_close(cached[user], expected, rtol=1e-5, atol=1e-5)


def test_attention_that_sees_the_target_cannot_be_cached():
    model = make_model("bidirectional", trained=False)
    tokens, is_pad = encode_sequences(HISTORIES[:2], TABLE.dense_codes(ITEMS), K)
    with pytest.raises(ValueError, match="not cacheable"):
        model.encode_history(tokens, is_pad)
    # the full-pass scoring serves it instead
    scorer = model_scoring(model, "fp32", cache_history=False)(tokens, is_pad)
    assert scorer(torch.tensor([0, 1]), torch.full((2, M), mask_token(M, K))).shape == (2, M, K)


def test_beams_must_be_grouped_by_user():
    model = make_model("inter_item_causal", trained=False)
    tokens, is_pad = encode_sequences(HISTORIES[:2], TABLE.dense_codes(ITEMS), K)
    scorer = cached_history(model)(tokens, is_pad)
    targets = torch.full((3, M), mask_token(M, K))
    assert scorer(torch.tensor([0, 0, 1]), targets).shape == (3, M, K)
    with pytest.raises(ValueError, match="grouped by user"):
        scorer(torch.tensor([1, 0, 1]), targets)
