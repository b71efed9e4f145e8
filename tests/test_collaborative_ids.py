"""Collaborative item vectors for the tokenizer: co-occurrence, PPMI, truncated SVD, fusion, and
the tokenize stage reading nothing but the training split."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import ConfigError, load_config
from distributed_rec.data.prepare import run_prepare
from distributed_rec.distributed.ray_runtime import start_local_ray
from distributed_rec.embed.stage import write_embeddings
from distributed_rec.pipeline import stage_key
from distributed_rec.semantic_ids.collaborative import (
    Sequences,
    collaborative_vectors,
    cooccurrence,
    fuse_features,
    ppmi,
    truncated_svd,
)
from distributed_rec.semantic_ids.id_table import SemanticIdTable
from distributed_rec.semantic_ids.stage import run_tokenize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sequences(*lists: list[int]) -> Sequences:
    lengths = [len(x) for x in lists]
    return Sequences(
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        items=np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]),
    )


def test_cooccurrence_counts_pairs_within_the_window_of_one_sequence():
    seqs = sequences([0, 1, 2], [2, 3], [4])
    one = cooccurrence(seqs, 5, window=1).toarray()
    expected = np.zeros((5, 5))
    for a, b in ((0, 1), (1, 2), (2, 3)):  # never (2, 2) across the sequence boundary
        expected[a, b] = expected[b, a] = 1.0
    np.testing.assert_array_equal(one, expected)
    two = cooccurrence(seqs, 5, window=2).toarray()
    expected[0, 2] = expected[2, 0] = 0.5  # distance 2 counts 1/2
    np.testing.assert_array_equal(two, expected)
    # a repeated item adds no self pair; counts add up over sequences
    np.testing.assert_array_equal(
        cooccurrence(sequences([0, 0, 1], [0, 1]), 2, 1).toarray(), [[0, 2], [2, 0]]
    )
    with pytest.raises(ValueError, match="window 0"):
        cooccurrence(seqs, 5, window=0)


def test_ppmi_by_hand():
    counts = sp.csr_matrix(np.array([[0.0, 2.0, 1.0], [2.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    out = ppmi(counts, smoothing=1.0).toarray()
    # total 6; row sums 3, 2, 1: pmi(0,1) = log((2/6) / (3/6 * 2/6)) = log 2, pmi(0,2) = log 2,
    # pmi(1,0) = log((2/6) / (2/6 * 3/6)) = log 2, pmi(2,0) = log((1/6) / (1/6 * 3/6)) = log 2
    expected = np.zeros((3, 3))
    expected[0, 1] = expected[0, 2] = expected[1, 0] = expected[2, 0] = np.log(2)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    # negative PMI is cut to 0 (absent from the sparse matrix)
    skewed = sp.csr_matrix(np.array([[0.0, 9.0, 1.0], [9.0, 0.0, 1.0], [1.0, 1.0, 0.0]]))
    assert (ppmi(skewed).data > 0).all() and ppmi(skewed).nnz < skewed.nnz


def test_truncated_svd_matches_the_exact_svd():
    rng = np.random.default_rng(0)
    dense = rng.random((60, 60)) * (rng.random((60, 60)) < 0.2)
    dense = dense + dense.T
    u, s = truncated_svd(sp.csr_matrix(dense), dim=5, seed=3, power_iters=8)
    exact_u, exact_s, _ = np.linalg.svd(dense)
    np.testing.assert_allclose(s, exact_s[:5], rtol=1e-6)
    for j in range(5):  # the same subspace, column by column up to sign
        assert abs(abs(u[:, j] @ exact_u[:, j]) - 1.0) < 1e-5
    # deterministic for a seed, signs fixed: the largest loading of each column is positive
    again, _ = truncated_svd(sp.csr_matrix(dense), dim=5, seed=3, power_iters=8)
    np.testing.assert_array_equal(u, again)
    assert (u[np.abs(u).argmax(0), np.arange(5)] > 0).all()
    # more dimensions than the matrix has: zero-padded
    small_u, small_s = truncated_svd(sp.csr_matrix(np.eye(3)), dim=5, seed=0)
    assert small_u.shape == (3, 5) and (small_s[3:] == 0).all()


def test_collaborative_vectors_zero_for_items_never_seen():
    seqs = sequences([0, 1, 2, 0, 1], [1, 2, 3], [3, 0])
    vectors, seen = collaborative_vectors(seqs, 6, dim=3, window=2, seed=0)
    assert vectors.shape == (6, 3) and vectors.dtype == np.float32
    np.testing.assert_array_equal(seen, [True, True, True, True, False, False])
    assert (vectors[4:] == 0).all() and (np.abs(vectors[:4]).sum(1) > 0).all()
    again, _ = collaborative_vectors(seqs, 6, dim=3, window=2, seed=0)
    np.testing.assert_array_equal(vectors, again)


def test_fuse_features_gives_each_block_its_share_of_the_variance():
    rng = np.random.default_rng(1)
    text, collaborative = rng.normal(size=(500, 8)) * 7 + 3, rng.normal(size=(500, 4)) * 0.1
    fused = fuse_features(text, collaborative, 0.25)
    assert fused.shape == (500, 12)
    np.testing.assert_allclose(fused.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(fused[:, :8].var(0).sum(), 0.75, rtol=1e-5)
    np.testing.assert_allclose(fused[:, 8:].var(0).sum(), 0.25, rtol=1e-5)
    only = fuse_features(None, collaborative, 0.25)  # one block carries everything
    np.testing.assert_allclose(only.var(0).sum(), 1.0, rtol=1e-5)


def test_config_checks_the_collaborative_keys():
    with pytest.raises(ConfigError, match="tokenize.features='ids'"):
        load_config(None, ["--tokenize.features=ids"])
    with pytest.raises(ConfigError, match="tokenize.collaborative_share=1.5"):
        load_config(None, ["--tokenize.collaborative_share=1.5"])
    with pytest.raises(ConfigError, match="tokenize.collaborative_window=0"):
        load_config(None, ["--tokenize.collaborative_window=0"])


SMALL = [
    "--data.format=synthetic",
    "--data.synthetic_users=300",
    "--data.synthetic_items=120",
    "--data.synthetic_interactions=3000",
    "--data.num_shards=2",
    "--tokenize.codebook_size=16",
    "--tokenize.code_dim=4",
    "--tokenize.hidden_dims=32,16",
    "--tokenize.max_epochs=20",
    "--tokenize.patience=5",
    "--tokenize.kmeans_iters=10",
    "--tokenize.collaborative_dim=8",
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared synthetic run with random item embeddings (the embed stage's output)."""
    import ray

    root = tmp_path_factory.mktemp("collaborative")
    start_local_ray(num_cpus=2, log_to_driver=False)
    try:
        run_prepare(load_config(None, [f"--run_dir={root}", *SMALL]))
    finally:
        ray.shutdown()
    paths = RunPaths(root)
    num_items = pq.read_metadata(paths.items).num_rows
    vectors = np.random.default_rng(5).normal(size=(num_items, 24)).astype(np.float32)
    write_embeddings(paths.item_embeddings, vectors, {"cache_key": "test"})
    return root


def tokenize_copy(source, target, features: str, *extra: str) -> tuple[np.ndarray, dict]:
    shutil.copytree(source, target)
    config = load_config(
        None, [f"--run_dir={target}", *SMALL, f"--tokenize.features={features}", *extra]
    )
    run_tokenize(config)
    paths = RunPaths(target)
    return SemanticIdTable.read(paths.semantic_ids).codes, json.loads(
        paths.tokenizer_metrics.read_text()
    )


@pytest.mark.timeout(300)
def test_valid_and_test_targets_never_reach_the_tokenizer(prepared, tmp_path):
    """The collaborative IDs are a function of the training windows alone: with the valid and
    test splits replaced by other targets, or gone, the IDs are identical; with one training
    window changed, they are not."""
    reference, metrics = tokenize_copy(prepared, tmp_path / "a", "text+collaborative")
    assert metrics["features"] == "text+collaborative" and metrics["feature_dim"] == 24 + 8

    changed = tmp_path / "b"
    shutil.copytree(prepared, changed)
    paths = RunPaths(changed)
    for split in ("valid", "test"):
        table = pq.read_table(paths.eval_split(split))
        other = pa.array(np.roll(table["target"].to_numpy(), 7))
        pq.write_table(table.set_column(2, "target", other), paths.eval_split(split))
    shutil.rmtree(changed / "tokenize", ignore_errors=True)
    codes, _ = tokenize_copy(changed, tmp_path / "b2", "text+collaborative")
    np.testing.assert_array_equal(codes, reference)

    gone = tmp_path / "c"
    shutil.copytree(prepared, gone)
    for split in ("valid", "test"):
        RunPaths(gone).eval_split(split).unlink()
    codes, _ = tokenize_copy(gone, tmp_path / "c2", "text+collaborative")
    np.testing.assert_array_equal(codes, reference)

    # control: the training windows do decide the IDs
    edited = tmp_path / "d"
    shutil.copytree(prepared, edited)
    part = sorted(RunPaths(edited).train_windows.glob("part-*.parquet"))[0]
    windows = pq.read_table(part)
    items = windows["items"].to_pylist()
    items[0] = list(reversed(items[0]))[:2] + [items[1][0]]
    pq.write_table(windows.set_column(1, "items", pa.array(items)), part)
    codes, _ = tokenize_copy(edited, tmp_path / "d2", "text+collaborative")
    assert not np.array_equal(codes, reference)


@pytest.mark.timeout(300)
def test_collaborative_features_change_the_ids_and_the_stage_key(prepared, tmp_path):
    text, metrics = tokenize_copy(prepared, tmp_path / "text", "text")
    assert metrics["features"] == "text" and metrics["feature_dim"] == 24
    collaborative, metrics = tokenize_copy(prepared, tmp_path / "cf", "collaborative")
    assert metrics["feature_dim"] == 8 and collaborative.shape == text.shape
    assert not np.array_equal(text, collaborative)
    assert len(np.unique(collaborative, axis=0)) == len(collaborative)  # still unique IDs

    # tokenize's key depends on the training windows only when the features read them
    config = load_config(None, [f"--run_dir={tmp_path / 'cf'}", *SMALL])
    cf_config = load_config(
        None, [f"--run_dir={tmp_path / 'cf'}", *SMALL, "--tokenize.features=collaborative"]
    )
    before = (stage_key("tokenize", config), stage_key("tokenize", cf_config))
    part = sorted(RunPaths(tmp_path / "cf").train_windows.glob("part-*.parquet"))[0]
    pq.write_table(pq.read_table(part).slice(1), part)
    after = (stage_key("tokenize", config), stage_key("tokenize", cf_config))
    assert before[0] == after[0] and before[1] != after[1]
