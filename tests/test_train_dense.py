"""Training with the dense retrieval head and with test metrics reported beside validation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from train_support import NUM_ITEMS, make_tiny_run, tiny_config

from distributed_rec.artifacts import RunPaths
from distributed_rec.embed.stage import write_embeddings
from distributed_rec.model.weights import load_best_model
from distributed_rec.train.checkpoint import MARKER
from distributed_rec.train.loop import train_worker
from distributed_rec.train.selection import average_ranks, spearman

os.environ.setdefault("OMP_NUM_THREADS", "1")

DENSE = (
    "--model.attention=inter_item_causal",
    "--model.dense_loss_weight=1",
    "--model.dense_learned_keys=true",
)


def dense_run(root) -> RunPaths:
    paths = make_tiny_run(root)
    vectors = np.random.default_rng(1).normal(size=(NUM_ITEMS, 10)).astype(np.float32)
    write_embeddings(paths.item_embeddings, vectors, {"model": "random"})
    return paths


def hybrid_config(paths: RunPaths, *overrides: str):
    """The dense head with hybrid ranking, validated after every epoch."""
    return tiny_config(
        paths.root, *DENSE, "--decode.ranking=hybrid", "--train.eval_every_epochs=1", *overrides
    )


def final_weights(paths: RunPaths) -> dict[str, torch.Tensor]:
    tag = json.loads((paths.checkpoints / MARKER).read_text())["tag"]
    state = torch.load(paths.checkpoints / tag / "mp_rank_00_model_states.pt", weights_only=True)
    return state["module"]


@pytest.mark.timeout(180)
def test_dense_whole_sequence_training_resumes_exactly(tmp_path):
    overrides = (*DENSE, "--train.max_steps=8", "--train.checkpoint_every_steps=3")
    straight = dense_run(tmp_path / "straight")
    summary = train_worker(tiny_config(straight.root, *overrides))
    assert summary["whole_sequence"] is True and summary["steps"] == 8
    killed = dense_run(tmp_path / "killed")
    train_worker(tiny_config(killed.root, *overrides), stop_after_step=4)
    resumed = train_worker(tiny_config(killed.root, *overrides, "--train.resume=true"))
    assert resumed["last_loss"] == summary["last_loss"]
    a, b = final_weights(straight), final_weights(killed)
    assert any(name.endswith("dense.key_offset.weight") for name in a)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    model = load_best_model(tiny_config(straight.root, *overrides))
    assert model.dense is not None and model.dense.num_items == NUM_ITEMS
    events = EventAccumulator(str(straight.tensorboard("train")))
    events.Reload()
    assert "train/dense" in events.Tags()["scalars"]


@pytest.mark.timeout(180)
def test_reported_test_metrics_and_their_rank_correlation(tmp_path):
    paths = dense_run(tmp_path)
    config = hybrid_config(paths, "--train.max_epochs=3", "--train.report_test=true")
    summary = train_worker(config)
    history = summary["validation_history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for entry in history:
        assert {"ndcg@10", "dense/ndcg@10", "generative/ndcg@10", "hybrid_weight"} <= set(
            entry["valid"]
        )
        assert set(entry["test"]) == set(entry["valid"])
    valid = [h["valid"]["ndcg@10"] for h in history]
    test = [h["test"]["ndcg@10"] for h in history]
    assert summary["valid_test_spearman"] == spearman(valid, test)
    assert summary["best_metrics"] == history[int(np.argmax(valid))]["valid"]
    events = EventAccumulator(str(paths.tensorboard("train")))
    events.Reload()
    assert {"test/ndcg@10", "valid/dense/ndcg@10"} <= set(events.Tags()["scalars"])


@pytest.mark.timeout(180)
def test_validation_decodes_valid_ranking_not_the_test_ranking(tmp_path):
    paths = dense_run(tmp_path)
    config = hybrid_config(paths, "--train.max_epochs=2", "--decode.valid_ranking=dense")
    assert config.validation_ranking == "dense"
    summary = train_worker(config)
    for entry in summary["validation_history"]:
        # dense validation: the dense lists only, no beam search and no weight to choose
        assert "hybrid_weight" not in entry["valid"]
        assert not any("/" in key for key in entry["valid"])
        assert "ndcg@10" in entry["valid"]


def test_spearman_on_hand_computed_cases():
    assert average_ranks([0.3, 0.1, 0.3, 0.2]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1, 2, 3, 4) vs (2, 1, 4, 3): d = (1, 1, 1, 1), 1 - 6 * 4 / (4 * 15) = 0.6
    assert spearman([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(0.6)
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    with pytest.raises(ValueError, match="series"):
        spearman([1, 2, 3], [1, 2])
