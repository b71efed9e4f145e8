"""DeepSpeed config builder, learning-rate schedule and the deterministic data plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distributed_rec.config import ConfigError, TrainConfig
from distributed_rec.errors import DataError
from distributed_rec.train.data import epoch_order, micro_batches, read_samples
from distributed_rec.train.ds_config import deepspeed_config, write_examples
from distributed_rec.train.optim import warmup_cosine

REPO = Path(__file__).resolve().parents[1]


def test_deepspeed_config_derives_accumulation_and_precision():
    train = TrainConfig(global_batch_size=1024, micro_batch_size=128, zero_stage=2, grad_clip=1.0)
    cfg = deepspeed_config(train, world_size=2, device="cpu")
    assert cfg["train_batch_size"] == 1024
    assert cfg["train_micro_batch_size_per_gpu"] == 128
    assert cfg["gradient_accumulation_steps"] == 4
    assert cfg["zero_optimization"]["stage"] == 2
    assert cfg["gradient_clipping"] == 1.0
    assert cfg["bf16"]["enabled"] is False
    assert deepspeed_config(train, 8, "cuda")["bf16"]["enabled"] is True
    assert deepspeed_config(TrainConfig(precision="fp32"), 1, "cuda")["bf16"]["enabled"] is False
    assert deepspeed_config(TrainConfig(precision="bf16"), 1, "cpu")["bf16"]["enabled"] is False
    zero3 = deepspeed_config(TrainConfig(zero_stage=3), 1, "cpu")["zero_optimization"]
    assert zero3 == {"stage": 3}


def test_deepspeed_config_rejects_indivisible_batches():
    with pytest.raises(ConfigError, match="global_batch_size=1000 is not a multiple"):
        deepspeed_config(TrainConfig(global_batch_size=1000, micro_batch_size=128), 2)


def test_cluster_config_examples_are_the_functions_output(tmp_path):
    for written in write_examples(tmp_path):
        shipped = REPO / "cluster_configs" / written.name
        assert json.loads(shipped.read_text()) == json.loads(written.read_text()), shipped


def test_warmup_cosine_schedule():
    multiplier = warmup_cosine(total_steps=100, warmup_ratio=0.1)
    assert multiplier(0) == pytest.approx(0.1)
    assert multiplier(9) == pytest.approx(1.0)
    assert multiplier(10) == pytest.approx(1.0)
    assert multiplier(55) == pytest.approx(0.5)
    assert multiplier(100) == pytest.approx(0.0)


def test_read_samples_truncates_history_and_appends_target(tmp_path):
    rows = {"user_id": [1, 2], "history": [[5, 6, 7, 8], [9]], "target": [3, 4]}
    pq.write_table(pa.table(rows), tmp_path / "part-00000.parquet")
    pq.write_table(
        pa.table({"user_id": [3], "history": [[1, 2]], "target": [0]}),
        tmp_path / "part-00001.parquet",
    )
    samples = read_samples(tmp_path, max_history=2)
    assert [s.tolist() for s in samples.sequences(range(3))] == [[7, 8, 3], [9, 4], [1, 2, 0]]
    assert samples.lengths.tolist() == [3, 2, 3]


def test_read_samples_rejects_empty_history(tmp_path):
    table = pa.table(
        {"user_id": [1], "history": pa.array([[]], pa.list_(pa.int64())), "target": [3]}
    )
    pq.write_table(table, tmp_path / "part-00000.parquet")
    with pytest.raises(DataError, match="part-00000.parquet: row 0 has an empty history"):
        read_samples(tmp_path, max_history=2)


def test_micro_batches_split_a_global_batch_the_same_way_for_any_world_size():
    ids = epoch_order(64, seed=3, epoch=1)[:16]
    assert np.array_equal(ids, epoch_order(64, seed=3, epoch=1)[:16])
    assert not np.array_equal(ids, epoch_order(64, seed=3, epoch=2)[:16])
    lengths = np.random.default_rng(0).integers(1, 10, size=16)
    single = micro_batches(ids, lengths, 4, rank=0, world_size=1)
    ranks = [micro_batches(ids, lengths, 4, rank=r, world_size=2) for r in range(2)]
    assert sorted(np.concatenate([m.rows for m in single]).tolist()) == list(range(16))
    # world 2: every other sample of the length order per rank, the same rows in all
    by_length = np.argsort(-lengths, kind="stable")
    for rank, shares in enumerate(ranks):
        rows = np.concatenate([m.rows for m in shares])
        assert rows.tolist() == by_length[rank::2].tolist()
        assert all(np.array_equal(m.sample_ids, ids[m.rows]) for m in shares)
    assert sorted(np.concatenate([m.rows for r in ranks for m in r]).tolist()) == list(range(16))
    # balanced: the ranks' total lengths differ by less than the longest sample
    totals = [sum(int(lengths[m.rows].sum()) for m in shares) for shares in ranks]
    assert abs(totals[0] - totals[1]) < lengths.max()
    # sorted by length: each micro-batch's lengths are contiguous in the sorted order
    sorted_lengths = [lengths[m.rows] for m in single]
    assert all(a.min() >= b.max() for a, b in zip(sorted_lengths, sorted_lengths[1:], strict=False))
