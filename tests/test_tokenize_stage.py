"""The tokenize stage end to end on a tiny embedding file: artifacts, ID table round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import load_config
from distributed_rec.embed.stage import write_embeddings
from distributed_rec.errors import ArtifactError
from distributed_rec.semantic_ids.id_table import SemanticIdTable
from distributed_rec.semantic_ids.stage import run_tokenize

SMALL = [
    "--tokenize.codebook_size=16",
    "--tokenize.code_dim=4",
    "--tokenize.hidden_dims=32,16",
    "--tokenize.batch_size=128",
    "--tokenize.max_epochs=20",
    "--tokenize.patience=5",
    "--tokenize.kmeans_iters=10",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_items(root: Path, n: int = 240, d: int = 24) -> np.ndarray:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    write_embeddings(RunPaths(root).item_embeddings, vectors, {"cache_key": "test"})
    return vectors


@pytest.mark.parametrize("method", ["mhvq", "opq"])
def test_run_tokenize_writes_every_artifact(tmp_path, method):
    write_items(tmp_path)
    config = load_config(None, [f"--run_dir={tmp_path}", f"--tokenize.method={method}", *SMALL])
    summary = run_tokenize(config)
    paths = RunPaths(tmp_path)
    assert summary["collision_rate_after"] == 0.0 and summary["num_items"] == 240

    table = SemanticIdTable.read(paths.semantic_ids)
    np.testing.assert_array_equal(table.item_ids, np.arange(240))
    assert table.codebook_size == 16 and table.num_heads == 4
    # the two-way map: every item's tuple leads back to the item
    for item in (0, 17, 239):
        assert table.item_of(tuple(table.codes_of(np.array([item]))[0])) == item
    assert table.item_of((15, 15, 15, 15)) in (None, *range(240))

    checkpoint = torch.load(paths.tokenizer_checkpoint, weights_only=True)
    assert checkpoint["method"] == method and checkpoint["input_dim"] == 24
    np.testing.assert_array_equal(checkpoint["codes"].numpy(), table.codes)

    metrics = json.loads(paths.tokenizer_metrics.read_text())
    for key in (
        "collision_rate_before",
        "collision_rate_after",
        "codebook_usage",
        "perplexity",
        "recon_mse",
        "epochs",
        "seconds",
        "method",
    ):
        assert key in metrics
    assert metrics["method"] == method and len(metrics["codebook_usage"]) == 4
    assert all(1.0 <= p <= 16.0 for p in metrics["perplexity"])
    if method == "mhvq":
        assert metrics["epochs"] >= 1
        assert list(paths.tensorboard("tokenize").glob("events.out.tfevents.*"))


def test_run_tokenize_without_embeddings_names_the_stage(tmp_path):
    config = load_config(None, [f"--run_dir={tmp_path}", *SMALL])
    with pytest.raises(ArtifactError, match="run the embed stage first"):
        run_tokenize(config)
