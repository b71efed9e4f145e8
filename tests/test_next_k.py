"""Next-k prediction: k distinct real items per user, in parallel (T calls) or in turn (k*T)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distributed_rec.config import ModelConfig
from distributed_rec.decode import ValidIdIndex, cached_history
from distributed_rec.decode.next_k import recommend_next_k
from distributed_rec.decode.recommend import recommend
from distributed_rec.model import build_mask_predictor
from distributed_rec.semantic_ids.id_table import SemanticIdTable

pytestmark = pytest.mark.usefixtures("one_torch_thread")

M, K, NUM_ITEMS, MAX_HISTORY = 4, 8, 30, 5
_rng = np.random.default_rng(3)
CODES = np.stack(
    np.unravel_index(_rng.choice(K**M, NUM_ITEMS, replace=False), (K,) * M), axis=1
).astype(np.int64)
HISTORIES = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11, 12], [13], [14, 15, 16, 17]]


def setup():
    torch.manual_seed(0)
    cfg = ModelConfig(
        d_model=16,
        num_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        dropout=0.0,
        attention="inter_item_causal",
    )
    model = build_mask_predictor(cfg, M, K, MAX_HISTORY + 1).eval()
    table = SemanticIdTable(np.arange(NUM_ITEMS), CODES, K)
    return cached_history(model), table, ValidIdIndex(table)


SEARCH = dict(beam_size=6, steps=2, order="adaptive", top_k=5, max_history=MAX_HISTORY)


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_k_distinct_real_items_per_user_history_excluded(mode):
    scoring, table, index = setup()
    out = recommend_next_k(scoring, HISTORIES, table, k=3, mode=mode, index=index, **SEARCH)
    assert out.ranked_UkK.shape == (len(HISTORIES), 3, 5)
    assert out.calls_per_user == (2 if mode == "parallel" else 6)
    for user, history in enumerate(HISTORIES):
        picked = out.predicted_Uk[user].tolist()
        assert len(set(picked)) == 3 and min(picked) >= 0
        for j in range(3):
            row = out.ranked_UkK[user, j].tolist()
            assert min(row) >= 0 and len(set(row)) == 5
            assert not set(row) & set(history)
            assert not set(row) & set(picked[:j])  # earlier positions' picks are dropped


def test_first_position_is_the_plain_recommendation_and_sequential_conditions_on_it():
    scoring, table, index = setup()
    plain = recommend(
        scoring,
        [h[-MAX_HISTORY:] for h in HISTORIES],
        table,
        beam_size=6,
        steps=2,
        order="adaptive",
        top_k=5,
        index=index,
        exclude_history=True,
    )
    for mode in ("parallel", "sequential"):
        out = recommend_next_k(scoring, HISTORIES, table, k=2, mode=mode, index=index, **SEARCH)
        # user 2's history is longer than MAX_HISTORY: truncated in both, excluded in full here
        for user in (0, 1, 3, 4):
            assert out.ranked_UkK[user, 0].tolist() == plain[user].tolist()
    sequential = recommend_next_k(
        scoring, HISTORIES, table, k=2, mode="sequential", index=index, **SEARCH
    )
    extended = [h + [int(p)] for h, p in zip(HISTORIES, sequential.predicted_Uk[:, 0], strict=True)]
    second = recommend(
        scoring,
        [e[-MAX_HISTORY:] for e in extended],
        table,
        beam_size=6,
        steps=2,
        order="adaptive",
        top_k=5,
        index=index,
        exclude_history=True,
    )
    for user in (0, 1, 3):
        assert sequential.ranked_UkK[user, 1].tolist() == second[user].tolist()


def test_bad_arguments():
    scoring, table, index = setup()
    with pytest.raises(ValueError, match="mode"):
        recommend_next_k(scoring, HISTORIES, table, k=2, mode="joint", index=index, **SEARCH)
    with pytest.raises(ValueError, match="k=9"):
        recommend_next_k(scoring, HISTORIES, table, k=9, mode="parallel", index=index, **SEARCH)


def test_next_k_study_writes_its_table_and_plot(tmp_path):
    import json

    from eval_support import build_run_dir, eval_config, eval_overrides

    from distributed_rec.reproduce.next_k import main

    build_run_dir(eval_config(tmp_path, "--model.attention=inter_item_causal"))
    argv = [*eval_overrides(tmp_path), "--model.attention=inter_item_causal", "--steps=1,2"]
    assert main([*argv, "--max_users=12", f"--output={tmp_path / 'out'}"]) == 0
    result = json.loads((tmp_path / "out" / "next_k.json").read_text())
    assert result["users"] == 12
    modes = [(r["mode"], r["steps"], r["calls_per_user"]) for r in result["rows"]]
    assert modes == [
        ("parallel", 1, 1),
        ("sequential", 1, 2),
        ("second given the true first", 1, 1),
        ("parallel", 2, 2),
        ("sequential", 2, 4),
        ("second given the true first", 2, 2),
    ]
    assert "| parallel | 2 | 2 |" in (tmp_path / "out" / "next_k.md").read_text()
    assert (tmp_path / "out" / "next_k.png").stat().st_size > 0
