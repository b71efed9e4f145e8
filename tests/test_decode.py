"""Constrained beam search against a brute-force search over every item on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distributed_rec.decode import ValidIdIndex, full_pass, recommend
from distributed_rec.model.vocab import (
    encode_histories_for_decoding,
    mask_token,
    pad_token,
    vocab_size,
)
from distributed_rec.semantic_ids.id_table import SemanticIdTable

M, K, N = 4, 4, 40


class BagModel(nn.Module):
    """Logits of the target from the mean embedding of every non-pad token, filled ones included."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = nn.Embedding(vocab_size(M, K), 16)
        self.out = nn.Linear(16, M * K)
        nn.init.normal_(self.out.weight, std=2.0)

    def forward(self, tokens_BL: torch.Tensor, is_pad_BL: torch.Tensor) -> torch.Tensor:
        keep = (~is_pad_BL).float()[..., None]
        bag = (self.embedding(tokens_BL) * keep).sum(1) / keep.sum(1)
        return self.out(bag).view(-1, M, K)


def make_table(seed: int = 0, num_items: int = N) -> SemanticIdTable:
    rng = np.random.default_rng(seed)
    tuples = rng.choice(K**M, size=num_items, replace=False)
    codes = np.stack([(tuples // K**m) % K for m in range(M)], axis=1).astype(np.int64)
    return SemanticIdTable(np.arange(num_items, dtype=np.int64), codes, K)


HISTORIES = [[1, 2, 3], [5], [7, 8, 9, 10, 11], [0, 39], [20, 21]]


def brute_force(model, history, table, steps, order) -> tuple[list[int], list[float]]:
    """Every item scored along the path its own beam would take; best first."""
    tokens, is_pad = encode_histories_for_decoding([history], table.dense_codes(N), K)
    per_step = M // steps
    scored = []
    for item, codes in zip(table.item_ids, table.codes, strict=True):
        filled: dict[int, int] = {}
        score = 0.0
        for _ in range(steps):
            seq = tokens.clone()
            seq[0, -M:] = torch.tensor(
                [m * K + filled[m] if m in filled else mask_token(M, K) for m in range(M)]
            )
            log_probs = torch.log_softmax(model(seq, is_pad)[0].double(), -1).detach().numpy()
            agree = np.ones(N, dtype=bool)
            for m, v in filled.items():
                agree &= table.codes[:, m] == v
            consistent = table.codes[agree]
            free = [m for m in range(M) if m not in filled]
            if order == "adaptive":
                confidence = {m: log_probs[m, consistent[:, m]].max() for m in free}
                free.sort(key=lambda m: (-confidence[m], m))
            elif order == "r2l":
                free.reverse()
            for m in free[:per_step]:
                score += log_probs[m, codes[m]]
                filled[m] = int(codes[m])
        scored.append((score, int(item)))
    scored.sort(key=lambda pair: -pair[0])
    return [i for _, i in scored], [s for s, _ in scored]


@pytest.mark.parametrize(
    ("steps", "order"), [(1, "adaptive"), (2, "adaptive"), (4, "adaptive"), (4, "l2r"), (4, "r2l")]
)
def test_full_beam_returns_exact_top_k_by_joint_score(steps: int, order: str) -> None:
    model, table = BagModel(), make_table()
    ranked = recommend(
        full_pass(model),
        HISTORIES,
        table,
        beam_size=N,
        steps=steps,
        order=order,
        top_k=10,
        batch_size=2,
    )
    for history, row in zip(HISTORIES[:3], ranked[:3], strict=True):
        expected, scores = brute_force(model, history, table, steps, order)
        assert min(abs(a - b) for a, b in zip(scores[:10], scores[1:11], strict=True)) > 1e-4
        assert row.tolist() == expected[:10]


def test_orders_change_the_ranking() -> None:
    model, table = BagModel(), make_table()
    args = dict(beam_size=N, steps=4, top_k=10)
    adaptive = recommend(full_pass(model), HISTORIES, table, order="adaptive", **args)
    l2r = recommend(full_pass(model), HISTORIES, table, order="l2r", **args)
    assert not np.array_equal(adaptive, l2r)


def test_small_beams_return_only_real_distinct_items() -> None:
    model, table = BagModel(seed=3), make_table(seed=3)
    for beam_size, steps in [(1, 4), (3, 4), (5, 2), (2, 1)]:
        ranked = recommend(
            full_pass(model),
            HISTORIES,
            table,
            beam_size=beam_size,
            steps=steps,
            order="adaptive",
            top_k=10,
        )
        assert ranked.shape == (len(HISTORIES), 10)
        for row in ranked:
            real = row[row >= 0]
            assert len(real) >= min(beam_size, 10)
            assert len(set(real.tolist())) == len(real)
            assert set(real.tolist()) <= set(table.item_ids.tolist())
            assert (row[len(real) :] == -1).all()  # padding only at the end


def test_greedy_follows_the_most_likely_valid_code() -> None:
    model, table = BagModel(seed=1), make_table(seed=1)
    ranked = recommend(
        full_pass(model), HISTORIES, table, beam_size=1, steps=4, order="l2r", top_k=1
    )
    for history, row in zip(HISTORIES, ranked, strict=True):
        tokens, is_pad = encode_histories_for_decoding([history], table.dense_codes(N), K)
        consistent = list(table.codes)
        for m in range(M):
            seq = tokens.clone()
            prefix = consistent[0][:m]
            seq[0, -M:] = torch.tensor(
                [m2 * K + int(p) for m2, p in enumerate(prefix)] + [mask_token(M, K)] * (M - m)
            )
            log_probs = model(seq, is_pad)[0, m]
            best = max({int(c[m]) for c in consistent}, key=lambda k: log_probs[k].item())
            consistent = [c for c in consistent if c[m] == best]
        assert row.tolist() == [table.item_of(tuple(consistent[0]))]


def test_constraint_blocks_ids_of_no_item() -> None:
    # items (0,0,0,0) and (1,1,1,1); the model prefers code 0 at positions 0-1 and 1 at 2-3,
    # so unconstrained search would return (0,0,1,1), the ID of no item
    table = SemanticIdTable(np.array([10, 11]), np.array([[0, 0, 0, 0], [1, 1, 1, 1]]), K)
    preferred = torch.full((M, K), -5.0)
    preferred[[0, 1, 2, 3], [0, 0, 1, 1]] = torch.tensor([5.0, 5.0, 4.0, 4.0])

    def logits_fn(tokens_BL: torch.Tensor, is_pad_BL: torch.Tensor) -> torch.Tensor:
        return preferred.expand(len(tokens_BL), M, K)

    for steps in (1, 2, 4):
        ranked = recommend(
            full_pass(logits_fn), [[10]], table, beam_size=5, steps=steps, order="l2r", top_k=3
        )
        assert ranked.tolist() == [[10, 11, -1]]


def test_index_completions_and_valid_codes() -> None:
    table = SemanticIdTable(
        np.array([0, 1, 2]), np.array([[0, 1, 2, 3], [0, 2, 2, 0], [1, 1, 3, 3]]), K
    )
    index = ValidIdIndex(table)
    filled = torch.tensor([[-1, -1, -1, -1], [0, -1, -1, -1], [-1, 1, -1, 3], [1, 1, 3, 3]])
    target = (filled >= 0) | torch.tensor(
        [[True, False, False, False], [False, False, True, False], [True, False, False, False],
         [False, False, False, False]]
    )  # fmt: skip
    beam_P, row_P = index.completions(filled, target)
    tuples = sorted(
        (b, tuple(table.codes[r][target[b].numpy()].tolist()))
        for b, r in zip(beam_P.tolist(), row_P.tolist(), strict=True)
    )
    # beam 0: codes {0, 1} at position 0; beam 1: items 0 and 1 share code 2 at position 2 (one
    # completion); beam 2: items 0 and 2 agree with it and differ at position 0; beam 3: item 2
    assert tuples == [
        (0, (0,)), (0, (1,)), (1, (0, 2)), (2, (0, 1, 3)), (2, (1, 1, 3)), (3, (1, 1, 3, 3))
    ]  # fmt: skip
    valid = index.valid_codes(filled)
    assert valid[0, 3].tolist() == [True, False, False, True]
    assert valid[1, 1].tolist() == [False, True, True, False]
    assert valid[2, 2].tolist() == [False, False, True, True]
    assert not valid[3].any() and not valid[1, 0].any()  # filled positions stay False
    assert index.items_of(torch.tensor([[1, 1, 3, 3], [0, 2, 2, 0]])).tolist() == [2, 1]
    with pytest.raises(ValueError, match="belongs to no item"):
        index.items_of(torch.tensor([[1, 1, 1, 1]]))


def test_unknown_history_item_is_an_error() -> None:
    model, table = BagModel(), make_table()
    with pytest.raises(ValueError, match="history item 99 has no semantic ID"):
        recommend(
            full_pass(model), [[1, 99]], table, beam_size=2, steps=4, order="adaptive", top_k=5
        )


def test_tokens_fed_to_the_model_remask_unchosen_positions() -> None:
    table = make_table()
    seen: list[torch.Tensor] = []

    def logits_fn(tokens_BL: torch.Tensor, is_pad_BL: torch.Tensor) -> torch.Tensor:
        seen.append(tokens_BL[:, -M:].clone())
        assert not is_pad_BL[:, -M:].any()
        return torch.zeros(len(tokens_BL), M, K)

    recommend(full_pass(logits_fn), [[1, 2]], table, beam_size=3, steps=4, order="l2r", top_k=3)
    masked_per_step = [int((t == mask_token(M, K)).sum(1).unique().item()) for t in seen]
    assert masked_per_step == [4, 3, 2, 1]
    assert all(not (t == pad_token(M, K)).any() for t in seen)


@pytest.mark.parametrize(("beam_size", "steps"), [(N, 4), (N, 2), (1, 4), (5, 1)])
def test_excluded_history_items_are_replaced_by_the_next_best(beam_size: int, steps: int) -> None:
    model, table = BagModel(), make_table()
    args = dict(beam_size=beam_size, steps=steps, order="adaptive", top_k=10)
    plain = recommend(full_pass(model), HISTORIES, table, **{**args, "top_k": N})
    excluded = recommend(full_pass(model), HISTORIES, table, exclude_history=True, **args)
    for history, full_row, row in zip(HISTORIES, plain, excluded, strict=True):
        assert not set(row.tolist()) & set(history)
        if beam_size == N:  # every item survives to the last step: exactly the filtered ranking
            expected = [i for i in full_row.tolist() if i >= 0 and i not in history][:10]
            assert row.tolist() == expected
        else:  # the list is still filled with real items
            assert (row >= 0).sum() >= min(beam_size, 10)


def test_decode_precision_auto_follows_native_bf16(monkeypatch) -> None:
    import importlib

    recommend_module = importlib.import_module("distributed_rec.decode.scoring")

    assert recommend_module.decode_uses_bf16("bf16", "cpu")
    assert not recommend_module.decode_uses_bf16("fp32", "cuda")
    for native in (True, False):
        monkeypatch.setattr(recommend_module, "has_native_bf16", lambda device, n=native: n)
        assert recommend_module.decode_uses_bf16("auto", "cpu") is native


def test_best_consistent_is_the_max_over_matching_items() -> None:
    table = make_table(seed=4)
    index = ValidIdIndex(table)
    rng = np.random.default_rng(0)
    values_UN = torch.tensor(rng.normal(size=(3, N)), dtype=torch.float32)
    partial, users, expected = [], [], []
    for _ in range(60):
        item = int(rng.integers(N))
        keep = rng.random(M) < 0.5
        codes = np.where(keep, table.codes[item], -1)
        if rng.random() < 0.1:  # a partial ID of no item
            codes = np.where(keep, (table.codes[item] + 1) % K, -1)
        user = int(rng.integers(3))
        agree = np.all((codes < 0) | (table.codes == codes), axis=1)
        partial.append(codes)
        users.append(user)
        expected.append(values_UN[user, agree].max().item() if agree.any() else -np.inf)
    best = index.best_consistent(
        torch.tensor(np.array(partial)), torch.tensor(users), values_UN
    ).numpy()
    np.testing.assert_allclose(best, expected)


def test_dense_prior_guides_pruning_but_not_the_scores() -> None:
    from distributed_rec.decode.beam_search import beam_search
    from distributed_rec.decode.scoring import full_pass as scoring_of

    model, table = BagModel(seed=5), make_table(seed=5)
    index = ValidIdIndex(table)
    tokens, is_pad = encode_histories_for_decoding(HISTORIES, table.dense_codes(N), K)
    scorer = scoring_of(model)(tokens, is_pad)
    prior_UN = torch.tensor(np.random.default_rng(1).normal(size=(len(HISTORIES), N)) * 5)
    args = dict(beam_size=1, steps=4, order="adaptive", top_k=N)
    plain, plain_scores = beam_search(scorer, len(HISTORIES), index, **args)
    same, _ = beam_search(
        scorer, len(HISTORIES), index, prior_UN=prior_UN, prior_weight=0.0, **args
    )
    assert torch.equal(plain, same)
    guided, guided_scores = beam_search(
        scorer, len(HISTORIES), index, prior_UN=prior_UN, prior_weight=1e4, **args
    )
    # greedy pruning led by a dominant prior keeps the path to each user's best-prior item
    assert not torch.equal(plain, guided)
    for user in range(len(HISTORIES)):
        assert int(prior_UN[user].argmax()) in guided[user].tolist()
    # the returned list is ranked by generative scores, which the prior leaves alone
    finite = torch.isfinite(guided_scores)
    assert (guided_scores[:, :-1][finite[:, 1:]] >= guided_scores[:, 1:][finite[:, 1:]]).all()
    full, full_scores = beam_search(scorer, len(HISTORIES), index, **{**args, "beam_size": N})
    for user in range(len(HISTORIES)):
        by_item = dict(zip(full[user].tolist(), full_scores[user].tolist(), strict=True))
        for item, score in zip(guided[user].tolist(), guided_scores[user].tolist(), strict=True):
            if item >= 0:
                assert score == pytest.approx(by_item[item], abs=1e-5)
