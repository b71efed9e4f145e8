"""The generative catalogue loss: item scores as summed code logits (hand-computed), equal in
ranking to one-step beam search, and its whole-sequence term equal to the per-prefix one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distributed_rec.config import ConfigError, ModelConfig, load_config
from distributed_rec.decode import ValidIdIndex, cached_history
from distributed_rec.decode.beam_search import beam_search
from distributed_rec.model import build_mask_predictor, masking
from distributed_rec.model.catalog import ItemCodes
from distributed_rec.model.losses import Normalisers
from distributed_rec.model.objectives import objective_terms, query_loss_sums
from distributed_rec.model.vocab import encode_sequences, encode_windows, mask_token
from distributed_rec.model.whole_sequence import per_item_losses, whole_sequence_terms
from distributed_rec.semantic_ids.id_table import SemanticIdTable

pytestmark = pytest.mark.usefixtures("one_torch_thread")

M, K, S = 4, 8, 7
NUM_ITEMS = 30
_rng = np.random.default_rng(2)
_TUPLES = _rng.choice(K**M, size=NUM_ITEMS, replace=False)
CODES = np.stack([(_TUPLES // K**m) % K for m in range(M)], axis=1).astype(np.int64)
WINDOWS = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13], [14, 15, 16]]


def catalog_model(attention: str = "inter_item_causal", seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        d_model=32,
        num_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        dropout=0.0,
        attention=attention,
        catalog_loss_weight=0.7,
    )
    return build_mask_predictor(cfg, M, K, S, item_codes=CODES).eval(), cfg


def test_item_logits_by_hand():
    codes = np.array([[0, 1], [1, 1], [2, 0]])
    catalog = ItemCodes(codes, codebook_size=3)
    logits = torch.tensor([[[0.5, 1.0, -1.0], [2.0, 3.0, 0.0]]])  # [B=1, M=2, K=3]
    # item 0: 0.5 + 3.0; item 1: 1.0 + 3.0; item 2: -1.0 + 2.0
    assert catalog.item_logits(logits).tolist() == [[3.5, 4.0, 1.0]]
    tokens = torch.tensor([[[0, 4], [2, 3], [1, 1]]])  # position m's codes are offset by m * K
    assert catalog.rows_of(tokens).tolist() == [[0, 2, -1]]
    assert "codes_IM" not in catalog.state_dict()  # derived from the table, never stored


def test_catalog_scores_rank_like_one_step_beam_search():
    model, _ = catalog_model()
    table = SemanticIdTable(np.arange(NUM_ITEMS), CODES, K)
    index = ValidIdIndex(table)
    histories = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    tokens, is_pad = encode_sequences(histories, CODES, K)
    masked = torch.full((len(histories), M), mask_token(M, K))
    with torch.no_grad():
        hidden = model.encode(torch.cat([tokens, masked], 1), torch.cat([is_pad, masked < 0], 1),
                              last_only=M)  # fmt: skip
        scores = model.catalog_scores(hidden)
        ranked, beam_scores = beam_search(
            cached_history(model)(tokens, is_pad), len(histories), index,
            beam_size=NUM_ITEMS, steps=1, order="adaptive", top_k=NUM_ITEMS,
        )  # fmt: skip
    expected = torch.argsort(scores, dim=1, descending=True, stable=True)
    assert torch.equal(ranked, expected)
    # the beam score is the catalogue score minus one constant per user (the log-normalisers)
    gathered = scores.gather(1, ranked)
    shift = gathered - beam_scores
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_whole_sequence_catalog_term_equals_the_per_prefix_term(seed):
    model, cfg = catalog_model(seed=seed)
    windows_BNM, lengths_B = encode_windows(WINDOWS, CODES, K)
    noise = masking.draw_window_noise(torch.Generator().manual_seed(seed), len(WINDOWS), S, M)
    with torch.no_grad():
        sums = per_item_losses(model, windows_BNM, lengths_B, noise, cfg)
        assert "dense" not in sums and (sums["catalog"][:, 0] == 0).all()
        for row, window in enumerate(WINDOWS):
            for end in range(1, len(window)):
                tokens, is_pad = encode_sequences([window[: end + 1]], CODES, K)
                expected = query_loss_sums(model, tokens, is_pad, ["catalog"])["catalog"]
                assert float(sums["catalog"][row, end]) == pytest.approx(float(expected), rel=1e-5)
                # by hand: -log softmax over the catalogue of the target's summed logits
                hidden = model.encode(
                    torch.cat([tokens[:, :-M], torch.full((1, M), mask_token(M, K))], 1),
                    is_pad, last_only=M,
                )  # fmt: skip
                scores = model.catalog_scores(hidden)[0]
                by_hand = torch.logsumexp(scores, 0) - scores[window[end]]
                assert float(expected) == pytest.approx(float(by_hand), rel=1e-5)


def test_catalog_terms_are_means_over_targets_in_both_objectives():
    model, cfg = catalog_model()
    windows_BNM, lengths_B = encode_windows(WINDOWS, CODES, K)
    noise = masking.draw_window_noise(torch.Generator().manual_seed(3), len(WINDOWS), S, M)
    targets = int((lengths_B - 1).sum())
    norm = Normalisers(target_tokens=targets * M, real_tokens=int(lengths_B.sum()) * M)
    with torch.no_grad():
        terms = whole_sequence_terms(model, windows_BNM, lengths_B, noise, cfg, norm)
        sums = per_item_losses(model, windows_BNM, lengths_B, noise, cfg)
    assert set(terms) == {"loss", "item", "history", "catalog"}
    assert float(terms["catalog"]) == pytest.approx(float(sums["catalog"].sum()) / targets)
    expected = (
        float(terms["item"])
        + cfg.history_loss_weight * float(terms["history"])
        + cfg.catalog_loss_weight * float(terms["catalog"])
    )
    assert float(terms["loss"]) == pytest.approx(expected, rel=1e-6)

    prefix_model, prefix_cfg = catalog_model("bidirectional")
    tokens, is_pad = encode_sequences([w[:3] for w in WINDOWS], CODES, K)
    prefix_noise = masking.draw_noise(torch.Generator().manual_seed(3), len(WINDOWS), S, M)
    norm = Normalisers(target_tokens=len(WINDOWS) * M, real_tokens=int((~is_pad).sum()))
    with torch.no_grad():
        prefix_terms = objective_terms(prefix_model, tokens, is_pad, prefix_noise, prefix_cfg, norm)
        catalog = query_loss_sums(prefix_model, tokens, is_pad, ["catalog"])["catalog"]
    assert float(prefix_terms["catalog"]) == pytest.approx(float(catalog) / len(WINDOWS), rel=1e-6)


def test_the_catalogue_needs_codes_and_a_valid_weight():
    with pytest.raises(ValueError, match="needs the items' codes"):
        build_mask_predictor(ModelConfig(catalog_loss_weight=1.0), M, K, S)
    with pytest.raises(ConfigError, match="model.catalog_loss_weight=-1"):
        load_config(None, ["--model.catalog_loss_weight=-1"])
