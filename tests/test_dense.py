"""MaskGR's dense retrieval head: its loss on a hand-computed case, the item lookup and text
input, the whole-sequence term against the per-prefix one, and dense / hybrid ranking."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from distributed_rec.config import ModelConfig
from distributed_rec.decode import ValidIdIndex, cached_history, model_scoring
from distributed_rec.decode.beam_search import beam_search, path_scores
from distributed_rec.decode.hybrid import hybrid_rank, rank_with_dense
from distributed_rec.decode.recommend import recommend
from distributed_rec.model import DenseItems, build_mask_predictor, masking
from distributed_rec.model.dense import DenseRetrieval
from distributed_rec.model.losses import Normalisers
from distributed_rec.model.objectives import masked_pass, objective_terms, query_loss_sums
from distributed_rec.model.vocab import encode_sequences, encode_windows, mask_token, pad_token
from distributed_rec.model.whole_sequence import per_item_losses, whole_sequence_terms
from distributed_rec.semantic_ids.id_table import SemanticIdTable

pytestmark = pytest.mark.usefixtures("one_torch_thread")

M, K, S, E = 4, 8, 7, 12
NUM_ITEMS = 30
_rng = np.random.default_rng(0)
_TUPLES = _rng.choice(K**M, size=NUM_ITEMS, replace=False)
CODES = np.stack([(_TUPLES // K**m) % K for m in range(M)], axis=1).astype(np.int64)
TEXT = _rng.normal(size=(NUM_ITEMS, E)).astype(np.float32)
WINDOWS = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13], [14, 15, 16]]


def dense_model(attention: str = "inter_item_causal", seed: int = 0, learned_keys: bool = True):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        d_model=32,
        num_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        dropout=0.0,
        attention=attention,
        dense_loss_weight=0.5,
        dense_learned_keys=learned_keys,
    )
    model = build_mask_predictor(cfg, M, K, S, DenseItems(CODES, TEXT))
    with torch.no_grad():  # the learned offsets start at 0: make them matter in the tests
        if model.dense.key_offset is not None:
            model.dense.key_offset.weight.normal_(0, 0.3)
    return model.eval(), cfg


def test_loss_on_a_hand_computed_case():
    # 3 items, M = 1, D = E = 2, identity query projection, tau 0.5
    items = DenseItems(np.array([[0], [1], [2]]), np.array([[1.0, 0], [0, 1], [1, 1]], np.float32))
    head = DenseRetrieval(
        items, codebook_size=3, d_model=2, temperature=0.5, learned_keys=False, text_input=False
    )
    with torch.no_grad():
        head.query_projection.weight.copy_(torch.eye(2))
        head.query_projection.bias.zero_()
    hidden = torch.tensor([[[2.0, 0.0]], [[0.0, 3.0]]])  # [B=2, M=1, D=2]
    # cosines (1, 0, 1/sqrt 2) and (0, 1, 1/sqrt 2), / 0.5
    # -> logits (2, 0, 1.41421) and (0, 2, 1.41421); targets 2 and 1
    lse = math.log(math.exp(2) + 1 + math.exp(math.sqrt(2)))
    expected = (lse - math.sqrt(2)) + (lse - 2)  # 1.1117 + 0.5259
    with torch.no_grad():
        loss = float(head.loss_sum(hidden, torch.tensor([2, 1])))
    assert loss == pytest.approx(expected, rel=1e-6)
    assert loss == pytest.approx(1.6376, abs=1e-4)


def test_rows_of_finds_real_items_only():
    model, _ = dense_model()
    tokens = torch.as_tensor(CODES + np.arange(M) * K)  # [I, M] tokens of every item
    assert model.dense.rows_of(tokens[None]).tolist() == [list(range(NUM_ITEMS))]
    masked = tokens[:3].clone()
    masked[0, 1] = mask_token(M, K)
    masked[1, :] = pad_token(M, K)
    unknown = set(range(K**M)) - set(_TUPLES.tolist())
    code = min(unknown)
    masked[2] = torch.tensor([(code // K**m) % K + m * K for m in range(M)])
    assert model.dense.rows_of(masked[None]).tolist() == [[-1, -1, -1]]


def test_text_input_only_on_fully_known_items():
    model, _ = dense_model()
    tokens_BL, _ = encode_sequences([[3, 4]], CODES, K)
    tokens_BL[0, 4] = mask_token(M, K)  # item 4 has a masked token
    extra = model.dense.input_embeddings(tokens_BL)[0].view(2, M, -1)
    projected = model.dense.input_projection(model.dense.text_IE[3]).view(M, -1)
    assert torch.allclose(extra[0], projected)
    assert (extra[1] == 0).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_whole_sequence_dense_term_equals_the_per_prefix_term(seed):
    model, cfg = dense_model(seed=seed)
    windows_BNM, lengths_B = encode_windows(WINDOWS, CODES, K)
    noise = masking.draw_window_noise(torch.Generator().manual_seed(seed), len(WINDOWS), S, M)
    with torch.no_grad():
        sums = per_item_losses(model, windows_BNM, lengths_B, noise, cfg)
        assert (sums["dense"][:, 0] == 0).all()
        for row, window in enumerate(WINDOWS):
            for end in range(1, len(window)):
                tokens, is_pad = encode_sequences([window[: end + 1]], CODES, K)
                expected = query_loss_sums(model, tokens, is_pad, ["dense"])["dense"]
                assert float(sums["dense"][row, end]) == pytest.approx(float(expected), rel=1e-5)
        # the generative terms still equal the per-prefix ones with the text input on
        tokens, is_pad = encode_sequences([WINDOWS[0]], CODES, K)
        end = len(WINDOWS[0]) - 1
        k = int(noise.k_GS[0, end])
        order = noise.order_GSM[0, end]
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        mask[0, -M:] = order.argsort().argsort() < k
        logits, codes, _ = masked_pass(model, tokens, is_pad, mask)
        item = torch.nn.functional.cross_entropy(logits, codes, reduction="sum") * M / k
        assert float(item) == pytest.approx(float(sums["item"][0, end]), rel=1e-5)


def test_dense_terms_are_means_over_targets_in_both_objectives():
    model, cfg = dense_model()
    windows_BNM, lengths_B = encode_windows(WINDOWS, CODES, K)
    noise = masking.draw_window_noise(torch.Generator().manual_seed(3), len(WINDOWS), S, M)
    targets = int((lengths_B - 1).sum())
    norm = Normalisers(target_tokens=targets * M, real_tokens=int(lengths_B.sum()) * M)
    with torch.no_grad():
        terms = whole_sequence_terms(model, windows_BNM, lengths_B, noise, cfg, norm)
        sums = per_item_losses(model, windows_BNM, lengths_B, noise, cfg)
    assert set(terms) == {"loss", "item", "history", "dense"}
    assert float(terms["dense"]) == pytest.approx(float(sums["dense"].sum()) / targets)
    expected = (
        float(terms["item"])
        + cfg.history_loss_weight * float(terms["history"])
        + cfg.dense_loss_weight * float(terms["dense"])
    )
    assert float(terms["loss"]) == pytest.approx(expected, rel=1e-6)

    prefix_model, prefix_cfg = dense_model("bidirectional")
    tokens, is_pad = encode_sequences([w[:3] for w in WINDOWS], CODES, K)
    prefix_noise = masking.draw_noise(torch.Generator().manual_seed(3), len(WINDOWS), S, M)
    norm = Normalisers(target_tokens=len(WINDOWS) * M, real_tokens=int((~is_pad).sum()))
    with torch.no_grad():
        prefix_terms = objective_terms(prefix_model, tokens, is_pad, prefix_noise, prefix_cfg, norm)
        dense = query_loss_sums(prefix_model, tokens, is_pad, ["dense"])["dense"] / len(WINDOWS)
    assert float(prefix_terms["dense"]) == pytest.approx(float(dense), rel=1e-6)


def _ranking_setup(attention: str):
    model, _ = dense_model(attention)
    table = SemanticIdTable(np.arange(NUM_ITEMS), CODES, K)
    histories = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10], [11, 12, 13, 14, 15]]
    return model, table, histories


@pytest.mark.parametrize("attention", ["inter_item_causal", "bidirectional"])
def test_hybrid_lists_are_distinct_real_items_and_match_both_ends(attention):
    model, table, histories = _ranking_setup(attention)
    cached = attention == "inter_item_causal"
    scoring = model_scoring(model, "fp32", cached)
    index = ValidIdIndex(table)
    search = dict(beam_size=6, steps=2, order="adaptive", top_k=5, index=index)
    out = rank_with_dense(
        model,
        scoring,
        histories,
        table,
        dense_candidates=8,
        cached=cached,
        exclude_history=True,
        batch_size=2,
        **search,
    )
    generative = recommend(scoring, histories, table, exclude_history=True, batch_size=2, **search)
    assert np.array_equal(out.generative_UK, generative)
    for weight in (0.0, 0.3, 0.7, 1.0):
        ranked = hybrid_rank(out.candidates_UC, out.generative_UC, out.dense_UC, weight, 5)
        for user, history in enumerate(histories):
            row = ranked[user]
            assert (row >= 0).all() and len(set(row.tolist())) == 5
            assert not set(row.tolist()) & set(history)
    # weight 1: the dense list
    ranked = hybrid_rank(out.candidates_UC, out.generative_UC, out.dense_UC, 1.0, 5)
    assert np.array_equal(ranked, out.dense_UK)
    # weight 0 with no dense candidates: the generative list
    beam_only = out.candidates_UC[:, :6]
    ranked = hybrid_rank(beam_only, out.generative_UC[:, :6], out.dense_UC[:, :6], 0.0, 5)
    assert np.array_equal(ranked, generative)


def test_dense_list_is_the_top_of_all_item_scores_without_history():
    model, table, histories = _ranking_setup("inter_item_causal")
    scoring = cached_history(model)
    out = rank_with_dense(
        model,
        scoring,
        histories,
        table,
        beam_size=4,
        steps=2,
        order="adaptive",
        top_k=5,
        dense_candidates=0,
        cached=True,
        exclude_history=True,
    )
    tokens, is_pad = encode_sequences(histories, CODES, K)
    masked = torch.full((len(histories), M), mask_token(M, K))
    with torch.no_grad():
        hidden = model.encode(
            torch.cat([tokens, masked], 1),
            torch.cat([is_pad, torch.zeros_like(masked, dtype=torch.bool)], 1),
            last_only=M,
        )
        scores = model.dense_scores(hidden)
    for user, history in enumerate(histories):
        scores[user, history] = -torch.inf
    assert np.array_equal(out.dense_UK, scores.topk(5, dim=1).indices.numpy())
    assert out.candidates_UC.shape[1] == 5  # no dense candidates: the beam's list only
    alone = rank_with_dense(
        model,
        scoring,
        histories,
        table,
        beam_size=4,
        steps=2,
        order="adaptive",
        top_k=5,
        dense_candidates=0,
        cached=True,
        exclude_history=True,
        dense_only=True,
    )
    assert np.array_equal(alone.dense_UK, out.dense_UK)
    assert (alone.generative_UK == -1).all()  # no beam search


def test_path_scores_equal_the_beam_scores_of_the_beams_items():
    model, table, histories = _ranking_setup("inter_item_causal")
    index = ValidIdIndex(table)
    tokens, is_pad = encode_sequences(histories, CODES, K)
    scorer = cached_history(model)(tokens, is_pad)
    items, scores = beam_search(
        scorer, len(histories), index, beam_size=6, steps=4, order="adaptive", top_k=6
    )
    user_R, slot_R = (items >= 0).nonzero(as_tuple=True)
    again = path_scores(
        scorer,
        user_R,
        index.codes_NM[items[user_R, slot_R]],
        index=index,
        steps=4,
        order="adaptive",
    )
    assert torch.allclose(again, scores[user_R, slot_R], atol=1e-5)


def test_model_without_dense_head_refuses_dense_scores():
    cfg = ModelConfig(d_model=16, num_layers=1, num_attention_heads=2, ffn_dim=32)
    model = build_mask_predictor(cfg, M, K, S)
    with pytest.raises(ValueError, match="dense_loss_weight"):
        model.dense_scores(torch.zeros(1, M, 16))
    with pytest.raises(ValueError, match="needs the items"):
        build_mask_predictor(ModelConfig(dense_loss_weight=1.0), M, K, S)


def test_evaluate_stage_reports_every_mode_and_picks_the_weight_on_valid(tmp_path):
    from eval_support import build_run_dir, eval_config

    from distributed_rec.evaluate.stage import run_evaluate

    config = eval_config(
        tmp_path,
        "--model.dense_loss_weight=1",
        "--decode.ranking=hybrid",
        "--decode.hybrid_grid=4",
        "--evaluate.use_ray=false",
        "--model.attention=inter_item_causal",
    )
    build_run_dir(config)
    run_evaluate(config)
    metrics = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    ranking = metrics["ranking"]
    assert ranking["mode"] == "hybrid" and ranking["hybrid_weight_from"] == "valid"
    by_weight = ranking["valid_by_weight"]
    assert list(by_weight) == ["0", "0.25", "0.5", "0.75", "1"]
    best = max(by_weight.values())
    assert by_weight[f"{ranking['hybrid_weight']:.4g}"] == best
    assert min(float(w) for w, v in by_weight.items() if v == best) == ranking["hybrid_weight"]
    for split in ("valid", "test"):
        assert metrics[split] == ranking["modes"]["hybrid"][split]
    assert ranking["modes"]["hybrid"]["valid"]["ndcg@10"] == best
    table = (tmp_path / "evaluate" / "metrics.md").read_text()
    assert "| test (generative) |" in table and "| test (dense) |" in table
    assert "from valid" in table

    fixed = eval_config(
        tmp_path,
        "--model.dense_loss_weight=1",
        "--decode.ranking=dense",
        "--decode.hybrid_weight=0",
        "--evaluate.use_ray=false",
        "--evaluate.splits=test",
        "--model.attention=inter_item_causal",
    )
    run_evaluate(fixed)
    again = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert again["ranking"]["hybrid_weight_from"] == "decode.hybrid_weight"
    assert again["test"] == again["ranking"]["modes"]["dense"]["test"]
    # the generative lists do not depend on the ranking mode
    assert (
        again["ranking"]["modes"]["generative"]["test"]
        == metrics["ranking"]["modes"]["generative"]["test"]
    )


def test_dense_ranking_needs_the_dense_head():
    from distributed_rec.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="dense_loss_weight"):
        load_config(None, ["--decode.ranking=hybrid"])
    with pytest.raises(ConfigError, match="hybrid_weight"):
        load_config(None, ["--decode.hybrid_weight=1.5"])
    with pytest.raises(ConfigError, match="decode.valid_ranking='dense' needs the dense head"):
        load_config(None, ["--decode.valid_ranking=dense"])
    with pytest.raises(ConfigError, match="decode.valid_ranking"):
        load_config(None, ["--decode.valid_ranking=greedy"])
    with pytest.raises(ConfigError, match="decode.dense_prior_weight > 0 guides the beam"):
        load_config(None, ["--decode.dense_prior_weight=0.5"])
    with pytest.raises(ConfigError, match="decode.dense_prior_weight=-1"):
        load_config(None, ["--model.dense_loss_weight=1", "--decode.dense_prior_weight=-1"])
    dense = ["--model.dense_loss_weight=1", "--decode.ranking=hybrid"]
    assert load_config(None, dense).validation_ranking == "hybrid"
    chosen = load_config(None, [*dense, "--decode.valid_ranking=dense"])
    assert chosen.validation_ranking == "dense" and chosen.decode.ranking == "hybrid"
