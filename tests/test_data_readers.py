"""Readers of every input format yield the same raw events; cleaning gives the hand-computed result."""

from __future__ import annotations

import numpy as np
import pytest
from data_support import (
    EVENTS,
    write_amazon2023,
    write_benchmark,
    write_lcrec,
    write_ml1m,
    write_ml100k,
    write_table,
)

from distributed_rec.config import load_config
from distributed_rec.data.cleaning import clean
from distributed_rec.data.items import drop_missing_metadata, items_table, unique_metadata
from distributed_rec.data.readers import read_dataset
from distributed_rec.data.readers.synthetic import read_synthetic


def data_config(fmt: str, path="", *extra: str):
    args = [f"--data.format={fmt}", "--data.kcore=0"]
    return load_config(None, args + ([f"--data.path={path}"] if path else []) + list(extra)).data


def cleaned_sequences(config):
    raw = read_dataset(config)
    metadata = unique_metadata(raw)
    drop_missing_metadata(raw, metadata)
    cleaned = clean(raw, config.kcore)
    users = cleaned.user_ids.to_pylist()
    items = cleaned.item_ids.to_pylist()
    sequences: dict[str, list[str]] = {}
    for u, i in zip(cleaned.user.tolist(), cleaned.item.tolist(), strict=True):
        sequences.setdefault(users[u], []).append(items[i])
    return raw, metadata, cleaned, sequences


# u1: i2 repeated later (dropped); u2: i2 and i3 share a timestamp (input order decides)
EXPECTED = {"u1": ["i1", "i2", "i3"], "u2": ["i2", "i3", "i1"], "u3": ["i4", "i1"]}


@pytest.mark.parametrize(
    "fmt,writer",
    [
        ("amazon2023", write_amazon2023),
        ("amazon2023_benchmark", write_benchmark),
        ("lcrec", write_lcrec),
        ("table", lambda root: write_table(root, "csv")),
        ("table", lambda root: write_table(root, "parquet")),
    ],
)
def test_every_format_gives_the_same_clean_sequences(tmp_path, fmt, writer):
    config = data_config(fmt, writer(tmp_path / "raw"))
    raw, _, cleaned, sequences = cleaned_sequences(config)
    assert raw.records == len(EVENTS)
    assert sequences == EXPECTED
    assert cleaned.dropped == {"duplicate": 1, "kcore": 0}
    assert cleaned.seq.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


def test_amazon_item_text_is_cleaned_and_uses_store_for_brand(tmp_path):
    config = data_config("amazon2023", write_amazon2023(tmp_path, gz=False))
    raw, metadata, cleaned, _ = cleaned_sequences(config)
    items = items_table(cleaned.item_ids, metadata, raw, config).to_pylist()
    assert [r["item_id"] for r in items] == [0, 1, 2, 3]
    assert items[0] == {"item_id": 0, "raw_item_id": "i1",
                        "text": "Red Lamp. Bright & warm, LED. Home. Acme"}  # fmt: skip
    assert items[2]["text"] == "Green Table. Oak. Home"  # no doubled '.', no empty store


def test_text_is_truncated_to_the_word_budget(tmp_path):
    config = data_config("amazon2023", write_amazon2023(tmp_path), "--data.text_max_words=3")
    raw, metadata, cleaned, _ = cleaned_sequences(config)
    texts = items_table(cleaned.item_ids, metadata, raw, config)["text"].to_pylist()
    assert texts[0] == "Red Lamp. Bright"


def test_movielens_100k_and_1m(tmp_path):
    config = data_config("movielens", write_ml100k(tmp_path / "a"))
    raw, metadata, cleaned, sequences = cleaned_sequences(config)
    assert sequences == {"1": ["10", "20"], "2": ["10"]}  # tie on 881250949: input order
    config = data_config("movielens", tmp_path / "a", "--data.text_fields=title,year,categories")
    texts = items_table(cleaned.item_ids, metadata, raw, config)["text"].to_pylist()
    assert texts == ["Toy Story. 1995. Animation, Comedy", "Caf\xe9 Society. 1996"]

    config = data_config("movielens", write_ml1m(tmp_path / "b"))
    raw, metadata, cleaned, _ = cleaned_sequences(config)
    text = items_table(cleaned.item_ids, metadata, raw, config)["text"].to_pylist()
    assert text == ["Jumanji. Adventure, Children's, Fantasy"]


def test_dense_ids_follow_numeric_order_of_raw_ids(tmp_path):
    events = [("10", "b", 1), ("9", "a", 2), ("2", "a", 3), ("9", "b", 4)]
    root = tmp_path / "t"
    write_table(root, "csv", events)
    (root / "items.csv").write_text("item_id,title\na,A\nb,B\n")
    _, _, cleaned, _ = cleaned_sequences(data_config("table", root))
    assert cleaned.user_ids.to_pylist() == ["2", "9", "10"]
    assert cleaned.user.tolist() == [0, 1, 1, 2]
    assert cleaned.item.tolist() == [0, 0, 1, 1]


def test_embedded_movielens_100k_counts():
    raw, metadata, cleaned, _ = cleaned_sequences(data_config("embedded"))
    assert (len(cleaned.user_ids), len(cleaned.item_ids), len(cleaned.user)) == (943, 1682, 100000)
    assert raw.records == 100000 and metadata.num_rows == 1682
    # about half of the ratings tie with another of the same user: order within ties is input order
    assert np.all(np.diff(cleaned.timestamp)[np.diff(cleaned.user) == 0] >= 0)


def test_synthetic_is_deterministic_and_zipfian():
    args = ("--data.synthetic_users=300", "--data.synthetic_items=200",
            "--data.synthetic_interactions=6000")  # fmt: skip
    first = read_synthetic(data_config("synthetic", "", *args))
    again = read_synthetic(data_config("synthetic", "", *args))
    other = read_synthetic(data_config("synthetic", "", *args, "--data.synthetic_seed=1"))
    assert first.interactions.equals(again.interactions) and first.items.equals(again.items)
    assert not first.interactions.equals(other.interactions)
    assert first.interactions.num_rows == 6000 and first.items.num_rows == 200
    counts = np.sort(np.bincount(first.interactions["item"].to_numpy(), minlength=200))[::-1]
    assert counts[:20].sum() > 3 * counts[-100:].sum()  # popularity is heavy-headed


def test_table_with_arrow_timestamps_and_custom_columns(tmp_path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    day = dt.datetime(2024, 1, 1)
    stamps = [day + dt.timedelta(hours=h) for h in (5, 1, 3)]
    pq.write_table(
        pa.table({"who": ["a", "a", "a"], "what": ["x", "y", "x"], "when": stamps}),
        tmp_path / "Shop.interactions.parquet",
    )
    pq.write_table(
        pa.table({"what": ["x", "y"], "name": ["X", "Y"], "tags": [["t1", "t2"], []]}),
        tmp_path / "Shop.items.parquet",
    )
    config = data_config(
        "table", tmp_path, "--data.user_column=who", "--data.item_column=what",
        "--data.timestamp_column=when", "--data.text_fields=name,tags",
    )  # fmt: skip
    raw, metadata, cleaned, sequences = cleaned_sequences(config)
    assert sequences == {"a": ["y", "x"]}  # 01:00 y, 03:00 x; the 05:00 x is a duplicate
    texts = items_table(cleaned.item_ids, metadata, raw, config)["text"].to_pylist()
    assert texts == ["X. t1, t2", "Y"]
