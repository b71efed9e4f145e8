"""The four tokenizers behind one interface, FAISS initialisation, determinism, collisions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distributed_rec.config import TokenizerConfig
from distributed_rec.semantic_ids.base import Tokenizer, code_statistics, collision_rate, kmeans
from distributed_rec.semantic_ids.collisions import (
    colliding_mask,
    make_unique,
    rebalance_last_head,
    sinkhorn_assign,
)
from distributed_rec.semantic_ids.stage import TokenizerError, build_tokenizer, tokenize
from distributed_rec.semantic_ids.vq_tokenizer import VQTokenizer
from distributed_rec.semantic_ids.vqvae import VQAutoencoder

METHODS = ("mhvq", "rqvae", "rqkmeans", "opq")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def items() -> np.ndarray:
    """300 items in 30 loose clusters, 32-d."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(30, 32))
    return (centers[rng.integers(0, 30, 300)] + 0.7 * rng.normal(size=(300, 32))).astype(np.float32)


def small_config(method: str, **changes) -> TokenizerConfig:
    values = dict(
        method=method,
        codebook_size=16,
        code_dim=4,
        hidden_dims=[32, 16],
        batch_size=128,
        max_epochs=30,
        patience=5,
        dead_code_reseed_every=5,
        kmeans_iters=10,
    )
    return TokenizerConfig(**{**values, **changes})


@pytest.mark.parametrize("method", METHODS)
def test_every_tokenizer_gives_unique_ids_through_one_interface(items, method):
    tokenizer, codes, metrics = tokenize(items, small_config(method))
    assert isinstance(tokenizer, Tokenizer)
    assert codes.shape == (300, 4) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < 16
    assert len({tuple(row) for row in codes}) == 300
    assert metrics["collision_rate_after"] == 0.0
    assert 0.0 <= metrics["collision_rate_before"] <= 1.0
    assert len(metrics["codebook_usage"]) == len(metrics["perplexity"]) == 4
    assert np.isfinite(metrics["recon_mse"])
    assert tokenizer.code_distances(items).shape == (300, 4, 16)
    assert tokenizer.reconstruct(items).shape == items.shape
    # the raw assignment is the nearest code of each head (first head: no residual dependence)
    raw = tokenizer.encode(items)
    np.testing.assert_array_equal(raw[:, 0], tokenizer.code_distances(items)[:, 0].argmin(1))
    # items that did not collide keep their nearest codes
    keep = ~colliding_mask(raw)
    np.testing.assert_array_equal(codes[keep], raw[keep])


@pytest.mark.parametrize("method", METHODS)
def test_fixed_seed_gives_identical_ids(items, method):
    _, first, _ = tokenize(items, small_config(method, seed=3))
    _, second, _ = tokenize(items, small_config(method, seed=3))
    np.testing.assert_array_equal(first, second)


def test_state_dict_loads_weights_only(items, tmp_path):
    for method in METHODS:
        tokenizer, _, _ = tokenize(items, small_config(method))
        torch.save(tokenizer.state_dict(), tmp_path / f"{method}.pt")
        state = torch.load(tmp_path / f"{method}.pt", weights_only=True)
        assert state["method"] == method


@pytest.mark.parametrize("multi_head", [True, False])
def test_codebooks_start_at_faiss_kmeans_of_all_encoder_outputs(items, multi_head):
    config = small_config("mhvq" if multi_head else "rqvae")
    tokenizer = VQTokenizer(config, multi_head=multi_head).fit(items)
    # rebuild the initial encoder from the seed and run FAISS k-means by hand
    torch.manual_seed(config.seed)
    fresh_model = VQAutoencoder(32, config.hidden_dims, 4, 16, 4, multi_head)
    standardized = (items - items.mean(0)) / np.sqrt(items.var(0).mean())
    with torch.no_grad():
        z = fresh_model.encoder(torch.from_numpy(standardized.astype(np.float32))).numpy()
    first_input = z[:, :4] if multi_head else z
    expected = kmeans(first_input, 16, config.kmeans_iters, config.seed)
    np.testing.assert_allclose(tokenizer.initial_codebooks[0], expected, rtol=1e-5, atol=1e-6)
    # training moved the codebooks away from their initial values
    trained = tokenizer.model.quantizer.codebooks.detach().numpy()
    assert not np.allclose(trained, tokenizer.initial_codebooks)


def test_opq_rejects_codebook_size_not_power_of_two(items):
    with pytest.raises(TokenizerError, match="power of two"):
        tokenize(items, small_config("opq", codebook_size=12))


def test_codebook_larger_than_item_count_is_a_clear_error(items):
    with pytest.raises(TokenizerError, match="codebook_size=512 exceeds the number of items"):
        tokenize(items, small_config("rqkmeans", codebook_size=512))


def test_build_tokenizer_picks_the_method():
    kinds = {m: type(build_tokenizer(small_config(m))).__name__ for m in METHODS}
    assert kinds == {
        "mhvq": "VQTokenizer",
        "rqvae": "VQTokenizer",
        "rqkmeans": "ResidualKMeansTokenizer",
        "opq": "OPQTokenizer",
    }


# --- collisions and code statistics -----------------------------------------------------------


def test_collision_rate_and_statistics_by_hand():
    codes = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [2, 0]])
    assert collision_rate(codes) == pytest.approx(3 / 5)
    np.testing.assert_array_equal(colliding_mask(codes), [True, True, False, True, False])
    stats = code_statistics(codes, codebook_size=4)
    assert stats["codebook_usage"] == [0.5, 0.75]
    # head 0: codes 0,0,2,0,2 -> p = (3/5, 2/5)
    p = np.array([0.6, 0.4])
    assert stats["perplexity"][0] == pytest.approx(np.exp(-(p * np.log(p)).sum()))


def test_make_unique_moves_twins_to_their_nearest_free_tuple():
    # three items share (0, 0); item 3 holds (0, 1)
    codes = np.array([[0, 0], [0, 0], [0, 0], [0, 1]])
    dists = np.zeros((4, 2, 3))
    dists[:, 0] = [0.0, 5.0, 9.0]  # head 0: code 1 is next-nearest, +5
    dists[:, 1] = [0.0, 1.0, 2.0]  # head 1: code 1 (+1) then code 2 (+2)
    out = make_unique(codes, dists)
    # item 0 keeps (0,0); item 1: (0,1) is taken by item 3 -> (0,2) (+2); item 2: next is (1,0)
    np.testing.assert_array_equal(out, [[0, 0], [0, 2], [1, 0], [0, 1]])
    np.testing.assert_array_equal(make_unique(codes, dists), out)  # deterministic


def test_make_unique_refuses_more_items_than_tuples():
    with pytest.raises(ValueError, match="cannot have distinct IDs"):
        make_unique(np.zeros((5, 2), dtype=np.int64), np.zeros((5, 2, 2)))


def test_sinkhorn_spreads_items_that_prefer_the_same_code():
    # 4 items all nearest to code 0 of 4; balanced assignment gives each its own code
    dists = np.array(
        [[0.0, 1.0, 2.0, 3.0], [0.0, 3.0, 1.0, 2.0], [0.0, 2.0, 3.0, 1.0], [0.0, 1.5, 1.5, 1.5]]
    )
    assigned = sinkhorn_assign(dists, iters=100)
    assert sorted(assigned.tolist()) == [0, 1, 2, 3]


def test_rebalance_lowers_collisions_then_unique():
    codes = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [2, 3]])
    dists = np.tile(np.array([[0.0, 1.0, 1.0, 1.0], [0.0, 0.1, 0.2, 0.3]]), (5, 1, 1))
    dists[0, 1] = [0.0, 0.1, 0.2, 0.3]
    dists[1, 1] = [0.1, 0.0, 0.2, 0.3]
    dists[2, 1] = [0.2, 0.1, 0.0, 0.3]
    dists[3, 1] = [0.3, 0.2, 0.1, 0.0]
    rebalanced = rebalance_last_head(codes, dists, iters=50)
    assert collision_rate(rebalanced) < collision_rate(codes)
    np.testing.assert_array_equal(rebalanced[:, 0], codes[:, 0])  # only the last head changes
    assert collision_rate(make_unique(rebalanced, dists)) == 0.0


def test_stopping_rule_restores_the_best_epoch(items):
    config = small_config("mhvq", max_epochs=400, patience=4, min_delta=0.05)
    tokenizer = VQTokenizer(config, multi_head=True).fit(items)
    history = tokenizer.history
    assert history["stopped_early"] is True
    assert history["epochs"] - history["best_epoch"] == 4
    # the restored weights reproduce the best epoch's monitor
    scores = tokenizer._evaluate(tokenizer._standardize(items))
    assert scores["monitor"] == pytest.approx(history["best_monitor"], rel=1e-5)


def test_dead_codes_move_onto_the_worst_quantised_items(items):
    tokenizer = VQTokenizer(small_config("mhvq", max_epochs=2), multi_head=True).fit(items)
    v = tokenizer._standardize(items)
    used = torch.ones(4, 16, dtype=torch.bool)
    used[1, [3, 7]] = False  # two dead codes in head 1
    with torch.no_grad():
        out = tokenizer.model(v)
    worst = torch.argsort(out["errors"][:, 1], descending=True, stable=True)[:2]
    expected = tokenizer.model.quantizer.head_slice(out["z"], 1)[worst]
    before = tokenizer.model.quantizer.codebooks.detach().clone()
    assert tokenizer._reseed_dead_codes(v, used) == 2
    after = tokenizer.model.quantizer.codebooks.detach()
    torch.testing.assert_close(after[1, [3, 7]], expected)
    untouched = torch.ones(4, 16, dtype=torch.bool)
    untouched[1, [3, 7]] = False
    torch.testing.assert_close(after[untouched], before[untouched])
