"""Cleaning, leave-one-out split, truncation and stable sharding on hand-computed examples."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from distributed_rec.data.cleaning import drop_duplicates, kcore
from distributed_rec.data.sharding import shard_tables, stable_hash, user_shards
from distributed_rec.data.split import eval_split, train_chunks, train_positions
from distributed_rec.data.text import clean_text, field_text, truncate_words


def test_kcore_iterates_until_stable():
    # k=2: item z has one event -> (C, z) goes; then C has one event -> (C, x) goes; x keeps 2.
    users = np.array([0, 0, 1, 1, 2, 2])  # A A B B C C
    items = np.array([0, 1, 0, 1, 0, 2])  # x y x y x z
    assert kcore(users, items, 2).tolist() == [True, True, True, True, False, False]
    assert kcore(users, items, 0).all()
    assert not kcore(users, items, 3).any()


def test_duplicates_keep_the_first_in_the_given_order():
    users = np.array([0, 0, 0, 1, 1])
    items = np.array([5, 6, 5, 5, 5])
    assert drop_duplicates(users, items, 7).tolist() == [True, True, False, True, False]


def test_leave_one_out_split_and_history_truncation():
    item = np.array([10, 11, 12, 13, 14, 20, 21, 30])  # users of lengths 5, 2, 1
    lengths = np.array([5, 2, 1])
    test, no_test = eval_split(item, lengths, "test", max_history=3)
    assert test.to_pylist() == [
        {"user_id": 0, "history": [11, 12, 13], "target": 14},  # 4 items truncated to 3
        {"user_id": 1, "history": [20], "target": 21},
    ]
    assert no_test == 1  # the user with a single event has no history
    valid, no_valid = eval_split(item, lengths, "valid", max_history=3)
    assert valid.to_pylist() == [{"user_id": 0, "history": [10, 11, 12], "target": 13}]
    assert no_valid == 2
    (train,) = train_chunks(item, lengths, 2, user_ids=np.array([7, 8, 9]))
    assert train.to_pylist() == [  # every prefix of 10 11 12 (valid and test targets excluded)
        {"user_id": 7, "history": [10], "target": 11},
        {"user_id": 7, "history": [10, 11], "target": 12},
    ]


def test_train_positions_and_chunking_between_users():
    lengths = np.array([6, 3, 4, 8])
    user, position = train_positions(lengths)
    assert user.tolist() == [0, 0, 0, 2, 3, 3, 3, 3, 3]
    assert position.tolist() == [1, 2, 3, 1, 1, 2, 3, 4, 5]
    item = np.arange(lengths.sum())
    chunks = train_chunks(item, lengths, 20, np.arange(4), max_samples=3)
    assert [t.num_rows for t in chunks] == [
        3,
        6,
    ]  # cut after the users reaching 3, 6; never inside a user
    whole = train_chunks(item, lengths, 20, np.arange(4))
    rows = [r for t in chunks for r in t.to_pylist()]
    assert rows == whole[0].to_pylist()


def test_stable_hash_is_fixed_across_processes():
    assert stable_hash("user-1") == 9863422088627006618
    assert user_shards(["a", "b", "c", "d", "e", "f"], 4).tolist() == [0, 0, 3, 1, 0, 2]
    code = "from distributed_rec.data.sharding import user_shards; print(user_shards(['a','b'], 4))"
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.stdout.strip() == "[0 0]"


def test_shard_tables_group_users_by_shard():
    import pyarrow as pa

    table = pa.table({"user_id": [0, 0, 1, 2, 2, 2], "x": [1, 2, 3, 4, 5, 6]})
    parts = shard_tables(table, np.array([1, 0, 1]), 3)
    assert [p["x"].to_pylist() for p in parts] == [[3], [1, 2, 4, 5, 6], []]
    assert parts[1]["shard"].to_pylist() == [1] * 5


def test_text_cleaning():
    assert clean_text("A &amp; B<br/>\n\t<p>C</p>  ") == "A & B C"
    assert truncate_words("a b c d", 2) == "a b"
    assert field_text(["x", "", None, "y"]) == "x, y"
    assert field_text({"Size": "L", "Color": ["red", "blue"]}) == "Size: L; Color: red, blue"
    assert field_text(1995) == "1995" and field_text([]) is None


def test_compact_renumbers_in_order():
    from distributed_rec.data.cleaning import compact

    kept, codes = compact(np.array([7, 2, 7, 4]), 9)
    assert kept.tolist() == [2, 4, 7] and codes.tolist() == [2, 0, 2, 1]


def test_time_order_equals_the_three_key_sort():
    from distributed_rec.data.buckets import time_order

    rng = np.random.default_rng(3)
    for n, stamps in ((2000, 50), (2000, 10**12), (300, 2**62)):
        user = rng.integers(0, 40, n)
        stamp = rng.integers(-stamps, stamps, n)
        rank = np.sort(rng.choice(10 * n, n, replace=False))  # input order
        expected = np.lexsort((rank, stamp, user))
        assert np.array_equal(time_order(user, stamp, rank), expected)
        shuffled = rng.permutation(n)  # rows not in input order: the general sort
        got = time_order(user[shuffled], stamp[shuffled], rank[shuffled])
        assert np.array_equal(got, np.lexsort((rank[shuffled], stamp[shuffled], user[shuffled])))
    assert time_order(*(np.zeros(0, np.int64),) * 3).tolist() == []
