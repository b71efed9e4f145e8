"""Training and evaluation inputs read from disk per use: equal to the in-memory readers."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distributed_rec.errors import DataError
from distributed_rec.evaluate.shards import (
    plan_shards,
    read_split,
    read_split_index,
    read_split_rows,
)
from distributed_rec.train.data import read_eval_split, read_samples, read_windows
from distributed_rec.train.streamed import open_samples, open_windows


def _samples(folder, rng, files=3, rows=700, max_len=9):
    folder.mkdir(parents=True)
    for part in range(files):
        history = [rng.integers(0, 50, rng.integers(1, max_len)).tolist() for _ in range(rows)]
        table = pa.table(
            {
                "user_id": np.arange(rows),
                "history": pa.array(history, pa.list_(pa.int64())),
                "target": rng.integers(0, 50, rows),
            }
        )
        pq.write_table(table, folder / f"part-{part:05d}.parquet", row_group_size=128)
    return folder


def test_streamed_samples_equal_the_in_memory_ones(tmp_path):
    rng = np.random.default_rng(0)
    folder = _samples(tmp_path / "splits" / "train", rng)
    memory, streamed = read_samples(folder, max_history=4), open_samples(folder, max_history=4)
    assert len(streamed) == len(memory) == 2100
    index = rng.permutation(len(memory))[:300]
    assert np.array_equal(streamed.lengths_of(index), memory.lengths[index])
    assert np.array_equal(streamed.targets_of(index), memory.targets[index])
    got, expected = streamed.sequences(index), memory.sequences(index)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert np.array_equal(streamed.item_ids(), np.unique(memory.items))
    # reused while the parts are unchanged, rebuilt when prepare writes new ones
    manifest = streamed.store / "manifest.json"
    built = manifest.stat().st_mtime_ns
    assert open_samples(folder, max_history=4).store == streamed.store
    assert manifest.stat().st_mtime_ns == built
    _samples(tmp_path / "other", rng, files=1, rows=100)
    (tmp_path / "other" / "part-00000.parquet").replace(folder / "part-00001.parquet")
    assert len(open_samples(folder, max_history=4)) == 1400 + 100
    assert json.loads(manifest.read_text())["samples"] == 1500


def test_streamed_windows_equal_the_in_memory_ones(tmp_path):
    folder = tmp_path / "splits" / "train_windows"
    folder.mkdir(parents=True)
    windows = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [3, 1]]
    pq.write_table(
        pa.table({"user_id": [0, 0, 1, 2], "items": windows}), folder / "part-00000.parquet"
    )
    memory, streamed = read_windows(folder, max_items=4), open_windows(folder, max_items=4)
    index = np.array([3, 0, 2])
    assert np.array_equal(streamed.targets_of(index), memory.targets[index])
    assert [s.tolist() for s in streamed.sequences(index)] == [[3, 1], [1, 2, 3], [6, 7, 8, 9]]


def test_streamed_samples_name_a_bad_row(tmp_path):
    folder = tmp_path / "splits" / "train"
    folder.mkdir(parents=True)
    history = pa.array([[1]] * 70000 + [[]], pa.list_(pa.int64()))
    table = pa.table(
        {
            "user_id": np.zeros(70001, np.int64),
            "history": history,
            "target": np.ones(70001, np.int64),
        }
    )
    pq.write_table(table, folder / "part-00000.parquet")
    with pytest.raises(DataError, match="part-00000.parquet: row 70000 has an empty history"):
        open_samples(folder, max_history=2)


def test_split_rows_read_by_a_shard_equal_the_whole_split(tmp_path):
    rng = np.random.default_rng(1)
    path = _samples(tmp_path / "valid", rng, files=1, rows=1000) / "part-00000.parquet"
    whole = read_split(path, max_history=3)
    index = read_split_index(path, max_history=3)
    assert np.array_equal(index.lengths, whole.lengths)
    assert np.array_equal(index.targets, whole.targets)
    plans = plan_shards(index, batch_size=16, num_shards=3)
    assert [p.tolist() for p in plans] == [p.tolist() for p in plan_shards(whole, 16, 3)]
    for rows in plans:
        users, expected = read_split_rows(path, rows, max_history=3), whole.take(rows)
        assert users.histories == expected.histories
        assert np.array_equal(users.user_ids, expected.user_ids)
        assert np.array_equal(users.targets, expected.targets)


def test_eval_split_rows_read_for_validation_equal_the_whole_split(tmp_path):
    rng = np.random.default_rng(2)
    path = _samples(tmp_path / "valid", rng, files=1, rows=1000) / "part-00000.parquet"
    rows = np.sort(rng.choice(1000, 77, replace=False))
    histories, targets = read_eval_split(path, max_history=3)
    some, some_targets = read_eval_split(path, max_history=3, rows=rows)
    assert len(histories) == 1000 and np.array_equal(some_targets, targets[rows])
    assert all(np.array_equal(a, histories[r]) for a, r in zip(some, rows, strict=True))
    whole = read_split(path, max_history=3)
    assert [h.tolist() for h in histories] == whole.histories
