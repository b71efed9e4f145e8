"""The prepare stage end to end on Ray Data: real datasets' counts, the artifact contract,
identical output for identical input, and lenient skips reported in stats.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from data_support import META, meta_records, review_records, write_jsonl

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import load_config
from distributed_rec.data.prepare import run_prepare
from distributed_rec.data.sharding import user_shards
from distributed_rec.distributed.ray_runtime import start_local_ray

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    """One local Ray for the module (on loopback, as the stage starts it); run_prepare reuses
    it instead of starting its own."""
    import ray

    start_local_ray(num_cpus=2, log_to_driver=False)
    yield
    ray.shutdown()


def prepare(run_dir: Path, *args: str) -> tuple[dict, RunPaths]:
    recipe = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
    overrides = [a for a in args if not a.startswith("--config=")]
    config = load_config(recipe, [f"--run_dir={run_dir}", *overrides])
    run_prepare(config)
    paths = RunPaths(run_dir)
    return json.loads(paths.prepare_stats.read_text()), paths


def read_parts(folder: Path):
    import pyarrow as pa

    return pa.concat_tables(pq.read_table(p) for p in sorted(folder.glob("part-*.parquet")))


def check_contract(stats: dict, paths: RunPaths, max_history: int = 20) -> None:
    users, items, events = stats["users"], stats["items"], stats["interactions"]
    interactions = read_parts(paths.interactions)
    assert interactions.num_rows == events
    assert interactions.column_names == ["user_id", "raw_user_id", "item_id", "timestamp", "seq"]
    item_table = pq.read_table(paths.items)
    assert item_table["item_id"].to_pylist() == list(range(items))
    assert all(item_table["text"].to_pylist())
    lengths = np.bincount(interactions["user_id"].to_numpy(), minlength=users)
    assert lengths.min() >= 1 and len(lengths) == users
    # each shard holds exactly the users whose stable hash maps there
    for shard, part in enumerate(sorted(paths.interactions.glob("part-*.parquet"))):
        raw_users = set(pq.read_table(part, columns=["raw_user_id"])["raw_user_id"].to_pylist())
        assert set(user_shards(sorted(raw_users), stats["num_shards"])) <= {shard}
    train = read_parts(paths.train_split)
    assert (
        train.num_rows == int(np.maximum(lengths - 3, 0).sum()) == stats["split"]["train_samples"]
    )
    for table in (
        train,
        pq.read_table(paths.eval_split("valid")),
        pq.read_table(paths.eval_split("test")),
    ):
        sizes = [len(h) for h in table["history"].to_pylist()]
        assert all(1 <= size <= max_history for size in sizes)
    windows = read_parts(paths.train_windows)
    sizes = np.array([len(w) for w in windows["items"].to_pylist()])
    assert ((sizes >= 2) & (sizes <= max_history + 1)).all()
    assert int((sizes - 1).sum()) == train.num_rows  # every training target exactly once
    per_user = np.bincount(windows["user_id"].to_numpy(), minlength=users)
    expected_windows = -(-np.maximum(lengths - 3, 0) // max_history)
    assert np.array_equal(per_user, expected_windows)
    assert windows.num_rows == stats["split"]["train_windows"]
    test = pq.read_table(paths.eval_split("test"))
    assert test.num_rows == int((lengths >= 2).sum()) == stats["split"]["test_users"]
    assert sum(stats["dropped"].values()) + events == stats["raw"]["interactions"]


@pytest.mark.shared_data
def test_scientific_5core(tmp_path, scientific_dir):
    stats, paths = prepare(tmp_path, "--data.format=lcrec", f"--data.path={scientific_dir}")
    assert (stats["users"], stats["items"], stats["interactions"]) == (8317, 4344, 58492)
    assert (stats["split"]["train_samples"], stats["split"]["train_windows"]) == (33541, 8371)
    assert stats["dropped"] == {"duplicate": 0, "kcore": 0}
    check_contract(stats, paths)
    # the last event of user 0 is the test target, the one before it the valid target
    test = pq.read_table(paths.eval_split("test")).to_pylist()[0]
    valid = pq.read_table(paths.eval_split("valid")).to_pylist()[0]
    assert test == {"user_id": 0, "history": list(range(8)), "target": 8}
    assert valid == {"user_id": 0, "history": list(range(7)), "target": 7}


@pytest.mark.shared_data
def test_office_5core(tmp_path, office_dir):
    stats, paths = prepare(tmp_path, "--data.format=lcrec", f"--data.path={office_dir}",
                           "--data.num_shards=3")  # fmt: skip
    assert (stats["users"], stats["items"], stats["interactions"]) == (4905, 2420, 53258)
    assert (stats["split"]["train_samples"], stats["split"]["train_windows"]) == (38543, 5375)
    assert len(list(paths.train_split.glob("part-*.parquet"))) == 3
    check_contract(stats, paths)


def test_embedded_movielens_before_kcore(tmp_path):
    stats, paths = prepare(tmp_path, "--config=default", "--data.kcore=0", "--data.max_history=5")
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)
    assert abs(stats["sparsity"] - (1 - 100000 / (943 * 1682))) < 1e-12
    check_contract(stats, paths, max_history=5)
    text = pq.read_table(paths.items).to_pylist()[0]["text"]
    assert text == "Toy Story. 1995. Animation, Children's, Comedy"


def test_same_input_gives_identical_parquet(tmp_path):
    args = ("--config=debug", "--data.num_shards=3")
    prepare(tmp_path / "a", *args)
    _, paths = prepare(tmp_path / "b", *args)
    files = sorted(
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b" / "prepare").rglob("*.parquet")
    )
    assert len(files) == 3 + 3 + 3 + 3  # interactions, train, train_windows parts; items, splits
    for file in files:
        assert pq.read_table(tmp_path / "a" / file).equals(pq.read_table(tmp_path / "b" / file))
    # a second run into the same directory with fewer shards leaves no stale parts behind
    prepare(tmp_path / "b", "--config=debug", "--data.num_shards=2")
    assert len(list(paths.interactions.glob("*"))) == len(list(paths.train_split.glob("*"))) == 2
    assert len(list(paths.train_windows.glob("*"))) == 2


def test_lenient_skips_are_counted_in_stats(tmp_path):
    records: list[object] = review_records()
    records[1] = "{broken"
    records[2] = {"user_id": "u2", "parent_asin": "i2"}  # no timestamp
    records += [
        {"user_id": "u1", "parent_asin": "i9", "timestamp": 1},  # no metadata for i9
        {"user_id": None, "parent_asin": "i1", "timestamp": 1},
        {"user_id": "u3", "parent_asin": "i2", "timestamp": "noon"},
    ]
    write_jsonl(tmp_path / "Home.jsonl", records)
    write_jsonl(tmp_path / "meta_Home.jsonl", meta_records(META) + ["not json"])
    stats, paths = prepare(tmp_path / "run", "--data.format=amazon2023", f"--data.path={tmp_path}",
                           "--data.errors=lenient", "--data.kcore=0")  # fmt: skip
    assert stats["dropped"] == {
        "malformed_json": 1, "missing_field": 1, "missing_metadata": 1, "null_user": 1,
        "bad_timestamp": 1, "duplicate": 0, "kcore": 0,
    }  # fmt: skip
    assert stats["skipped_metadata"] == {"malformed_json": 1}
    assert stats["raw"]["interactions"] == 12 and stats["interactions"] == 7
    assert stats["split"]["valid_users_without_history"] == 2  # u2 and u3 keep 2 events each
    check_contract(stats, paths)


def test_training_item_drop_keeps_three_and_leaves_valid_and_test_alone():
    from distributed_rec.data.split import drop_training_items, eval_split

    # users with 12, 5 and 4 events (10, 3 and 2 training items)
    lengths = np.array([12, 5, 4], dtype=np.int64)
    item = np.arange(int(lengths.sum()), dtype=np.int64) + 100
    users = np.array([7, 8, 9], dtype=np.int64)
    kept, kept_lengths = drop_training_items(item, lengths, users, 0.5, seed=1)
    # round(0.5 * 10) = 5 kept; 3 -> max(3, 2) = 3 (all); 2 -> all 2
    assert kept_lengths.tolist() == [5 + 2, 3 + 2, 2 + 2]
    first = kept[:7]
    assert list(first[-2:]) == [110, 111]  # valid and test items untouched
    assert set(first[:5]) <= set(range(100, 110)) and list(first[:5]) == sorted(first[:5])
    assert list(kept[7:]) == list(range(112, 121))
    again, _ = drop_training_items(item, lengths, users, 0.5, seed=1)
    assert np.array_equal(again, kept)  # deterministic
    # a user's draw depends on its id, not on who else is in the shard
    alone, _ = drop_training_items(item[:12], lengths[:1], users[:1], 0.5, seed=1)
    assert np.array_equal(alone, kept[:7])
    # the evaluation splits are built from the full sequences elsewhere; unchanged here
    for split in ("valid", "test"):
        table, _ = eval_split(item, lengths, split, 20, users)
        assert table.num_rows == 3
    assert drop_training_items(item, lengths, users, 0.0, 1)[0] is item
    with pytest.raises(ValueError, match="fraction"):
        drop_training_items(item, lengths, users, 1.0, 1)


def test_prepare_with_training_item_drop(tmp_path):
    full, full_paths = prepare(tmp_path / "full", "--config=debug")
    half, half_paths = prepare(tmp_path / "half", "--config=debug", "--data.train_item_drop=0.5")
    assert half["split"]["train_item_drop"] == 0.5
    for split in ("valid", "test"):  # evaluation untouched
        assert pq.read_table(full_paths.eval_split(split)).equals(
            pq.read_table(half_paths.eval_split(split))
        )
    assert read_parts(full_paths.interactions).equals(read_parts(half_paths.interactions))
    # every user keeps round(n / 2) of its n training items, at least 3 (all if fewer)
    lengths = np.bincount(read_parts(full_paths.interactions)["user_id"].to_numpy())
    train = np.maximum(lengths - 2, 0)
    kept = np.minimum(train, np.maximum(3, np.round(0.5 * train).astype(np.int64)))
    assert half["split"]["train_samples"] == int(np.maximum(kept - 1, 0).sum())
    assert read_parts(half_paths.train_split).num_rows == half["split"]["train_samples"]
    assert half["split"]["train_samples"] < full["split"]["train_samples"]
    windows = read_parts(half_paths.train_windows)["items"].to_pylist()
    assert sum(len(w) - 1 for w in windows) == half["split"]["train_samples"]
