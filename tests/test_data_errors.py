"""Bad input: strict mode names file, line and problem; lenient mode skips and counts by reason."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_support import (
    EVENTS,
    META,
    meta_records,
    review_records,
    write_amazon2023,
    write_benchmark,
    write_jsonl,
    write_lcrec,
    write_table,
)

from distributed_rec.config import ConfigError, load_config
from distributed_rec.data.cleaning import clean
from distributed_rec.data.items import drop_missing_metadata, unique_metadata
from distributed_rec.data.readers import read_dataset
from distributed_rec.errors import DataError


def config(fmt, path, errors="strict", *extra):
    args = [f"--data.format={fmt}", f"--data.path={path}", f"--data.errors={errors}", *extra]
    return load_config(None, args).data


def amazon_with(tmp_path, replace: dict[int, object], gz=False, meta=None):
    """Amazon 2023 files whose review on line N (1-based) is replaced by `replace[N]`."""
    records: list[object] = review_records()
    for line, record in replace.items():
        records[line - 1] = record
    suffix = ".jsonl.gz" if gz else ".jsonl"
    write_jsonl(tmp_path / f"Home{suffix}", records)
    write_jsonl(tmp_path / f"meta_Home{suffix}", meta_records(meta or META))
    return tmp_path / f"Home{suffix}"


# case -> (reason, {line: replacement review}, line of the error, problem)
BAD_LINES = {
    "malformed_json": (
        "malformed_json",
        {3: '{"user_id": "u2", "parent_asin": '},
        3,
        "not valid JSON",
    ),
    "missing_field": (
        "missing_field",
        {2: {"user_id": "u1", "parent_asin": "i2"}},
        2,
        "missing field 'timestamp'",
    ),
    "bad_timestamp": (
        "bad_timestamp",
        {4: {"user_id": "u1", "parent_asin": "i2", "timestamp": "yesterday"}},
        4,
        "timestamp 'yesterday' is not a number",
    ),
    "timestamp_beyond_int64": (
        "bad_timestamp",
        {3: {"user_id": "u2", "parent_asin": "i2", "timestamp": 10**25}},
        3,
        "timestamp '10000000000000000000000000' is larger than 2^63-1 "
        "(timestamps must be in 0 .. 2^63-1)",
    ),
    "negative_timestamp": (
        "bad_timestamp",
        {3: {"user_id": "u2", "parent_asin": "i2", "timestamp": -5}},
        3,
        "timestamp '-5' is negative (timestamps must be in 0 .. 2^63-1)",
    ),
    "null_user": (
        "null_user",
        {5: {"user_id": None, "parent_asin": "i3", "timestamp": 1}},
        5,
        "empty user id",
    ),
    "duplicate_key": (
        "duplicate_key",
        {6: '{"user_id": "u3", "parent_asin": "i4", "timestamp": 10, "user_id": "u9"}'},
        6,
        "key 'user_id' appears twice in one object",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_strict_names_file_line_and_problem(tmp_path, case):
    _, replace, line, problem = BAD_LINES[case]
    path = amazon_with(tmp_path, replace)
    with pytest.raises(DataError) as err:
        read_dataset(config("amazon2023", tmp_path))
    assert (err.value.path, err.value.line) == (str(path), line)
    assert problem in err.value.problem
    assert str(err.value).startswith(f"{path}:{line}: ")


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_lenient_is_a_counted_skip(tmp_path, case):
    reason, replace, _, _ = BAD_LINES[case]
    amazon_with(tmp_path, replace)
    raw = read_dataset(config("amazon2023", tmp_path, "lenient"))
    assert raw.issues.as_dict() == {reason: 1}
    assert raw.interactions.num_rows == len(EVENTS) - 1 and raw.records == len(EVENTS)
    assert min(raw.interactions["timestamp"].to_pylist()) >= 0


def test_a_key_repeated_outside_the_used_fields_is_read_on_both_paths(tmp_path):
    """Repeats in fields no reader uses change nothing read: kept by the line-by-line parser and
    by Arrow's fast path alike (which ignores those fields); a repeated used field stays an
    error (BAD_LINES["duplicate_key"])."""
    import numpy as np

    from distributed_rec.data.issues import Issues
    from distributed_rec.data.jsonl import _arrow_rows, parse_review_block
    from distributed_rec.data.readers.amazon2023 import review_rows

    line = (
        '{"user_id": "u2", "parent_asin": "i1", "timestamp": 7, "text": "a", "text": "b", '
        '"images": [{"url": "x", "url": "y"}]}'
    )
    path = amazon_with(tmp_path, {3: line})
    issues = Issues("strict")
    slow = review_rows(path, issues)
    assert issues.as_dict() == {} and slow.num_rows == len(EVENTS)
    assert slow.slice(2, 1).to_pylist() == [
        {"user": "u2", "item": "i1", "timestamp": "7", "line": 3}
    ]
    data = path.read_bytes()
    assert _arrow_rows(data, np.arange(1, len(EVENTS) + 1)) is not None  # no fallback
    fast, _ = parse_review_block(path, data, 1, Issues("strict"))
    assert fast.drop_columns("timestamp").equals(slow.drop_columns("timestamp"))
    assert fast["timestamp"].to_pylist() == [int(t) for t in slow["timestamp"].to_pylist()]
    assert read_dataset(config("amazon2023", tmp_path)).interactions.num_rows == len(EVENTS)


def test_duplicate_key_in_a_metadata_line(tmp_path):
    records = meta_records()
    records[1] = '{"parent_asin": "i2", "title": "Blue Chair", "title": "Red Chair"}'
    write_jsonl(tmp_path / "Home.jsonl", review_records())
    path = write_jsonl(tmp_path / "meta_Home.jsonl", records)
    with pytest.raises(DataError, match=f"^{path}:2: key 'title' appears twice in one object$"):
        read_dataset(config("amazon2023", tmp_path))
    raw = read_dataset(config("amazon2023", tmp_path, "lenient"))
    assert raw.meta_issues.as_dict() == {"duplicate_key": 1}
    assert raw.items["item"].to_pylist() == ["i1", "i3", "i4"]


def test_truncated_gzip(tmp_path):
    events = [(f"u{i % 50}", f"i{i % 7}", i) for i in range(20000)]
    path = tmp_path / "Home.jsonl.gz"
    write_jsonl(path, review_records(events))
    write_jsonl(tmp_path / "meta_Home.jsonl.gz", meta_records())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        read_dataset(config("amazon2023", tmp_path))
    assert err.value.path == str(path) and err.value.line > 1
    raw = read_dataset(config("amazon2023", tmp_path, "lenient"))
    assert raw.issues.as_dict() == {"truncated_file": 1}
    assert 0 < raw.interactions.num_rows < len(events)


@pytest.mark.parametrize("errors", ["strict", "lenient"])
def test_item_absent_from_metadata(tmp_path, errors):
    meta = {k: v for k, v in META.items() if k != "i4"}
    path = amazon_with(tmp_path, {}, meta=meta)
    raw = read_dataset(config("amazon2023", tmp_path, errors))
    metadata = unique_metadata(raw)
    if errors == "strict":
        with pytest.raises(DataError) as err:
            drop_missing_metadata(raw, metadata)
        assert str(err.value).startswith(f"{path}:6: item 'i4' is absent from the metadata file")
    else:
        drop_missing_metadata(raw, metadata)
        assert raw.issues.as_dict() == {"missing_metadata": 1}
        assert "i4" not in raw.interactions["item"].to_pylist()


def test_duplicate_metadata_is_counted_and_first_record_wins(tmp_path):
    path = amazon_with(tmp_path, {})
    records = meta_records() + [{"parent_asin": "i1", "title": "Other"}]
    write_jsonl(tmp_path / "meta_Home.jsonl", records)
    raw = read_dataset(config("amazon2023", path.parent))
    metadata = unique_metadata(raw)
    assert metadata.num_rows == 4 and metadata["title"][0].as_py() == "Red <b>Lamp</b>"
    assert raw.meta_issues.as_dict() == {"duplicate_item": 1}


@pytest.mark.parametrize("errors", ["strict", "lenient"])
def test_empty_files_are_errors_in_both_modes(tmp_path, errors):
    (tmp_path / "Home.jsonl").write_text("")
    write_jsonl(tmp_path / "meta_Home.jsonl", meta_records())
    with pytest.raises(DataError, match="file is empty"):
        read_dataset(config("amazon2023", tmp_path, errors))
    lcrec = tmp_path / "lc"
    lcrec.mkdir()
    (lcrec / "X.inter.json").write_text("")
    (lcrec / "X.item.json").write_text("{}")
    with pytest.raises(DataError, match="X.inter.json: file is empty"):
        read_dataset(config("lcrec", lcrec, errors))
    table = tmp_path / "table"
    table.mkdir()
    (table / "interactions.csv").write_text("")
    (table / "items.csv").write_text("item_id,title\n")
    with pytest.raises(DataError, match="interactions.csv: file is empty"):
        read_dataset(config("table", table, errors))


@pytest.mark.parametrize(
    "fmt", ["lcrec", "amazon2023", "amazon2023_benchmark", "movielens", "table"]
)
def test_folder_without_recognised_files(tmp_path, fmt):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no recognised") as err:
        read_dataset(config(fmt, tmp_path))
    assert err.value.path == str(tmp_path)


def test_missing_folder_and_several_candidates(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        read_dataset(config("lcrec", tmp_path / "absent"))
    for name in ("A", "B"):
        (tmp_path / f"{name}.inter.json").write_text(json.dumps({"u": ["i"]}))
        (tmp_path / f"{name}.item.json").write_text(json.dumps({"i": {"title": "t"}}))
    with pytest.raises(DataError, match="several datasets .A, B.; choose one with --data.name"):
        read_dataset(config("lcrec", tmp_path))
    assert read_dataset(config("lcrec", tmp_path, "strict", "--data.name=B")).records == 1


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_null_user_in_a_table(tmp_path, kind):
    events = [(u if n != 2 else None, i, t) for n, (u, i, t) in enumerate(EVENTS)]
    write_table(tmp_path, kind, events)
    name = f"interactions.{kind}"
    where = 4 if kind == "csv" else 3  # CSV: line 4 (after the header); Parquet: row 3
    with pytest.raises(DataError, match=f"{name}:{where}: empty user id"):
        read_dataset(config("table", tmp_path))
    raw = read_dataset(config("table", tmp_path, "lenient"))
    assert raw.issues.as_dict() == {"null_user": 1} and raw.interactions.num_rows == len(EVENTS) - 1


def test_csv_problems_name_their_line(tmp_path):
    write_table(tmp_path, "csv")
    lines = (tmp_path / "interactions.csv").read_text().splitlines()
    lines[3] = "u2,i2"  # a cell short
    lines[5] = "u9,i1,soon"
    (tmp_path / "interactions.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"interactions.csv:4: expected 3 cells"):
        read_dataset(config("table", tmp_path))
    raw = read_dataset(config("table", tmp_path, "lenient"))
    assert raw.issues.as_dict() == {"malformed_row": 1, "bad_timestamp": 1}
    assert raw.interactions["line"].to_pylist() == [2, 3, 5, 7, 8, 9, 10]
    pq.write_table(pa.table({"user_id": ["a"]}), tmp_path / "x.interactions.parquet")
    pq.write_table(pa.table({"item_id": ["a"]}), tmp_path / "x.items.parquet")
    with pytest.raises(DataError, match="missing column.s. item_id, timestamp"):
        read_dataset(config("table", tmp_path, "strict", "--data.name=x"))


def test_unknown_format_is_a_config_error():
    with pytest.raises(ConfigError, match="data.format='parquet' is not one of"):
        load_config(None, ["--data.format=parquet", "--data.path=x"])


def test_cli_reports_one_line_and_exits_2(tmp_path):
    path = amazon_with(tmp_path, {3: "{not json"})
    command = [sys.executable, "-m", "distributed_rec", "prepare", f"--run_dir={tmp_path / 'run'}",
               "--data.format=amazon2023", f"--data.path={tmp_path}"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {path}:3: not valid JSON")
    assert "Traceback" not in result.stderr
    result = subprocess.run(command[:4] + ["--data.format=nope"], capture_output=True, text=True)
    assert result.returncode == 2 and "data.format='nope' is not one of" in result.stderr


def test_gzip_that_is_not_gzip(tmp_path):
    (tmp_path / "Home.jsonl.gz").write_bytes(b"plain text, not gzip\n")
    write_jsonl(tmp_path / "meta_Home.jsonl.gz", meta_records())
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_dataset(config("amazon2023", tmp_path))


def test_truncated_csv_gzip_keeps_only_whole_lines(tmp_path):
    rows = "".join(f"u{i % 300},i{i % 7},{i}\n" for i in range(60000))
    data = gzip.compress(("user_id,item_id,timestamp\n" + rows).encode())
    (tmp_path / "interactions.csv.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"i{i},T\n" for i in range(7)))
    with pytest.raises(DataError, match=r"interactions.csv.gz:\d+: truncated or corrupt"):
        read_dataset(config("table", tmp_path))
    raw = read_dataset(config("table", tmp_path, "lenient"))
    assert raw.issues.as_dict() == {"truncated_file": 1}
    kept = raw.interactions.num_rows
    assert 0 < kept < 60000
    # every kept row is complete and in place: row i (line i + 2) has timestamp i
    assert raw.interactions["timestamp"].to_pylist() == list(range(kept))
    assert raw.interactions["line"].to_pylist()[-1] == kept + 1


def test_benchmark_missing_metadata_names_the_split_file(tmp_path):
    write_benchmark(tmp_path)
    write_jsonl(
        tmp_path / "meta_Home.jsonl", [r for r in meta_records() if r["parent_asin"] != "i4"]
    )
    raw = read_dataset(config("amazon2023_benchmark", tmp_path))
    with pytest.raises(DataError) as err:
        drop_missing_metadata(raw, unique_metadata(raw))
    # (u3, i4) is the first row of Home.valid.csv: line 2 after the header
    assert (Path(err.value.path).name, err.value.line) == ("Home.valid.csv", 2)


def test_nothing_left_after_kcore_is_an_error(tmp_path):
    from distributed_rec.data.prepare import run_prepare

    write_table(tmp_path / "raw")
    args = [
        f"--run_dir={tmp_path / 'run'}",
        "--data.format=table",
        f"--data.path={tmp_path / 'raw'}",
    ]
    with pytest.raises(DataError, match=r"no interactions left after cleaning .*lower data.kcore"):
        run_prepare(load_config(None, [*args, "--data.kcore=50"]))
    assert not (tmp_path / "run" / "prepare" / "stats.json").exists()


def write_lcrec_text(root: Path, inter: str, item: str | None = None) -> tuple[Path, Path]:
    """LC-Rec files from literal JSON text (to repeat keys, which json.dumps cannot)."""
    root.mkdir(parents=True, exist_ok=True)
    items = {k: {"title": v["title"]} for k, v in META.items()}
    (root / "X.inter.json").write_text(inter)
    (root / "X.item.json").write_text(item if item is not None else json.dumps(items))
    return root / "X.inter.json", root / "X.item.json"


LCREC_USER_TWICE = """{
  "u1": ["i1", "i2"],
  "u2": ["i2", "i3", "i1"],
  "u1": ["i3", "i4", "i1"],
  "u3": ["i4", "i1"]
}
"""


def test_lcrec_user_key_twice(tmp_path):
    inter, _ = write_lcrec_text(tmp_path, LCREC_USER_TWICE)
    with pytest.raises(DataError) as err:
        read_dataset(config("lcrec", tmp_path))
    assert (err.value.path, err.value.line) == (str(inter), 4)
    assert err.value.problem == (
        "user 'u1' is a key of the JSON object a second time (its later list has 3 event(s)); "
        "each user must appear once"
    )
    raw = read_dataset(config("lcrec", tmp_path, "lenient"))
    assert raw.issues.as_dict() == {"duplicate_user": 3}
    assert raw.records == 10  # every event of the file: 7 kept + 3 counted
    users, items = raw.interactions["user"].to_pylist(), raw.interactions["item"].to_pylist()
    # the first list of u1 is the one kept
    assert list(zip(users, items, strict=True)) == [
        ("u1", "i1"), ("u1", "i2"), ("u2", "i2"), ("u2", "i3"), ("u2", "i1"),
        ("u3", "i4"), ("u3", "i1"),
    ]  # fmt: skip


def test_lcrec_item_key_twice_keeps_the_first_and_counts_it(tmp_path):
    item = json.dumps({"i1": {"title": "Red Lamp"}, "i2": {"title": "Chair"}})[:-1]
    item += ', "i3": {"title": "Table"}, "i4": {"title": "Pen"}, "i1": {"title": "Other"}}'
    write_lcrec_text(tmp_path, json.dumps({"u1": ["i1", "i2", "i3", "i4"]}), item)
    for errors in ("strict", "lenient"):
        raw = read_dataset(config("lcrec", tmp_path, errors))
        metadata = unique_metadata(raw)
        assert metadata["item"].to_pylist() == ["i1", "i2", "i3", "i4"]
        assert metadata["title"][0].as_py() == "Red Lamp"
        assert raw.meta_issues.as_dict() == {"duplicate_item": 1}


def test_lcrec_field_twice_in_an_item_record(tmp_path):
    item = '{"i1": {"title": "Lamp"}, "i2": {"title": "Chair", "title": "Stool"}}'
    _, item_path = write_lcrec_text(tmp_path, json.dumps({"u1": ["i1", "i2"]}), item)
    with pytest.raises(DataError) as err:
        read_dataset(config("lcrec", tmp_path))
    assert str(err.value) == f"{item_path}: item 'i2': field 'title' appears twice in its record"
    raw = read_dataset(config("lcrec", tmp_path, "lenient"))
    assert raw.meta_issues.as_dict() == {"duplicate_key": 1}
    assert raw.items["item"].to_pylist() == ["i1"]


def nan_user_table(root: Path) -> Path:
    """Parquet interactions with a float user_id: three NaNs (rows 2, 4, 5) and four users."""
    users = [1.0, float("nan"), 2.0, float("nan"), float("nan"), 3.0, 4.0]
    interactions = pa.table(
        {"user_id": users, "item_id": ["i1", "i2", "i3", "i4", "i1", "i2", "i3"],
         "timestamp": list(range(1, 8))}
    )  # fmt: skip
    pq.write_table(interactions, root / "interactions.parquet")
    items = pa.table({"item_id": ["i1", "i2", "i3", "i4"], "title": ["a", "b", "c", "d"]})
    pq.write_table(items, root / "items.parquet")
    return root / "interactions.parquet"


def test_nan_user_id_in_parquet_is_a_null(tmp_path):
    path = nan_user_table(tmp_path)
    with pytest.raises(DataError, match=f"^{path}:2: empty user id$"):
        read_dataset(config("table", tmp_path))
    raw = read_dataset(config("table", tmp_path, "lenient"))
    assert raw.issues.as_dict() == {"null_user": 3}
    assert raw.interactions["line"].to_pylist() == [1, 3, 6, 7]


def test_nan_item_id_in_the_items_table_is_a_null(tmp_path):
    write_table(tmp_path, "parquet")
    items = pa.table({"item_id": [1.0, float("nan"), 2.0], "title": ["a", "b", "c"]})
    pq.write_table(items, tmp_path / "items.parquet")
    with pytest.raises(DataError, match=r"items.parquet:2: empty item_id$"):
        read_dataset(config("table", tmp_path))
    raw = read_dataset(config("table", tmp_path, "lenient"))
    assert raw.meta_issues.as_dict() == {"missing_field": 1}
    assert raw.items["item"].to_pylist() == ["1", "2"]


RANGE = " (timestamps must be in 0 .. 2^63-1)"


@pytest.mark.parametrize(
    ("stamp", "reason", "problem"),
    [
        (float("nan"), "missing_field", "empty timestamp"),
        (float("inf"), "bad_timestamp", f"timestamp inf is larger than 2^63-1{RANGE}"),
        (-1.5, "bad_timestamp", f"timestamp -1.5 is negative{RANGE}"),
    ],
)
def test_odd_float_timestamps_in_parquet(tmp_path, stamp, reason, problem):
    write_table(tmp_path, "parquet")
    interactions = pq.read_table(tmp_path / "interactions.parquet")
    stamps = [float(t) for t in interactions["timestamp"].to_pylist()]
    stamps[3] = stamp
    interactions = interactions.set_column(2, "timestamp", pa.array(stamps))
    pq.write_table(interactions, tmp_path / "interactions.parquet")
    with pytest.raises(DataError) as err:
        read_dataset(config("table", tmp_path))
    assert str(err.value) == f"{tmp_path / 'interactions.parquet'}:4: {problem}"
    raw = read_dataset(config("table", tmp_path, "lenient"))
    assert raw.issues.as_dict() == {reason: 1}


def write_ratings_dat(root: Path, ratings: list[str], movies: list[str] | None = None) -> Path:
    folder = root / "ml-1m"
    folder.mkdir(parents=True)
    (folder / "ratings.dat").write_text("\n".join(ratings) + "\n")
    movies = movies or ["5::Heat (1995)::Action", "6::Casino (1995)::Drama"]
    (folder / "movies.dat").write_text("\n".join(movies) + "\n")
    return folder / "ratings.dat"


def test_movielens_ids_are_integers(tmp_path):
    ratings = ["10::5::4::881250949", "9::6::3::881250950", "abc::5::4::881250999"]
    path = write_ratings_dat(tmp_path, ratings)
    with pytest.raises(DataError) as err:
        read_dataset(config("movielens", tmp_path))
    assert str(err.value) == (
        f"{path}:3: user id 'abc' is not an integer (MovieLens ids are integers)"
    )
    raw = read_dataset(config("movielens", tmp_path, "lenient"))
    assert raw.issues.as_dict() == {"bad_user": 1}
    # dense user ids stay in numeric order: 9 before 10
    assert clean(raw, 0).user_ids.to_pylist() == ["9", "10"]


def test_movielens_item_ids_are_integers(tmp_path):
    path = write_ratings_dat(tmp_path, ["1::x7::4::881250949", "1::5::4::881250950"])
    with pytest.raises(DataError, match=f"^{path}:1: item id 'x7' is not an integer"):
        read_dataset(config("movielens", tmp_path))
    movies = ["5::Heat (1995)::Action", "M6::Casino (1995)::Drama"]
    write_ratings_dat(tmp_path / "m", ["1::5::4::881250950"], movies)
    with pytest.raises(DataError, match=r"movies.dat:2: item id 'M6' is not an integer"):
        read_dataset(config("movielens", tmp_path / "m"))
    raw = read_dataset(config("movielens", tmp_path / "m", "lenient"))
    assert raw.meta_issues.as_dict() == {"bad_item": 1}
    assert raw.items["item"].to_pylist() == ["5"]


def test_every_record_skipped_names_the_real_cause(tmp_path):
    from distributed_rec.data.prepare import run_prepare

    (tmp_path / "raw").mkdir()
    path = tmp_path / "raw" / "Home.jsonl.gz"
    path.write_bytes(b"plain text, not gzip\n")
    write_jsonl(tmp_path / "raw" / "meta_Home.jsonl", meta_records())
    args = [f"--run_dir={tmp_path / 'run'}", "--data.format=amazon2023", "--data.kcore=0",
            f"--data.path={tmp_path / 'raw'}", "--data.errors=lenient"]  # fmt: skip
    with pytest.raises(DataError) as err:
        run_prepare(load_config(None, args))
    assert err.value.path == str(path)
    assert err.value.problem.startswith(
        "no interactions left: every one of the 1 record(s) was skipped (data.errors=lenient): "
        f"truncated_file: 1 (first: {path}:1: compressed file is truncated or corrupt"
    )
    assert "kcore" not in err.value.problem
    assert not (tmp_path / "run" / "prepare").exists()


def test_csv_lines_are_physical_lines_with_quoted_newlines_and_blank_lines(tmp_path):
    write_table(tmp_path, "csv")
    text = (
        "user_id,item_id,timestamp\n"
        'u1,"i1",100\n'  # line 2
        '"u\n1",i2,200\n'  # lines 3-4: a quoted newline
        "\n"  # line 5: blank
        "u2,i2,soon\n"  # line 6
        'u3,"i\n4"\n'  # lines 7-8: a cell short
        "u3,i1,20\n"  # line 9
    )
    (tmp_path / "interactions.csv").write_text(text)
    path = tmp_path / "interactions.csv"
    with pytest.raises(DataError, match=f"^{path}:7: expected 3 cells$"):
        read_dataset(config("table", tmp_path))
    raw = read_dataset(config("table", tmp_path, "lenient"))
    assert raw.issues.as_dict() == {"bad_timestamp": 1, "malformed_row": 1}
    assert raw.issues.first == {
        "malformed_row": f"{path}:7: expected 3 cells",
        "bad_timestamp": f"{path}:6: timestamp 'soon' is not a number",
    }
    assert raw.interactions["line"].to_pylist() == [2, 3, 9]


def test_json_line_that_is_not_an_object(tmp_path):
    path = amazon_with(tmp_path, {2: '["u1", "i2", 200000]'})
    with pytest.raises(DataError, match=f"^{path}:2: expected a JSON object on each line$"):
        read_dataset(config("amazon2023", tmp_path))
    raw = read_dataset(config("amazon2023", tmp_path, "lenient"))
    assert raw.issues.as_dict() == {"malformed_json": 1}


@pytest.mark.parametrize("fmt", ["amazon2023", "lcrec", "table"])
def test_a_utf8_byte_order_mark_is_skipped(tmp_path, fmt):
    writers = {"amazon2023": lambda r: write_amazon2023(r, gz=False), "lcrec": write_lcrec,
               "table": write_table}  # fmt: skip
    root = writers[fmt](tmp_path / "raw")
    for path in root.iterdir():
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    raw = read_dataset(config(fmt, root))
    assert raw.issues.as_dict() == {} and raw.meta_issues.as_dict() == {}
    assert raw.records == len(EVENTS)


@pytest.mark.parametrize("errors", ["strict", "lenient"])
def test_text_that_is_not_utf8_is_an_error(tmp_path, errors):
    path = amazon_with(tmp_path, {})
    path.write_bytes(path.read_bytes() + b'{"user_id": "caf\xe9"}\n')
    with pytest.raises(DataError) as err:
        read_dataset(config("amazon2023", tmp_path, errors))
    assert (
        str(err.value)
        == f"{path}:10: not utf-8 text (invalid continuation byte at byte 17 of the line)"
    )
    lcrec, _ = write_lcrec_text(tmp_path / "lc", '{"u1": ["i1"],\n "u2": ["caf\xe9"]}')
    lcrec.write_bytes(lcrec.read_text().encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_dataset(config("lcrec", tmp_path / "lc", errors))
    assert (
        str(err.value)
        == f"{lcrec}:2: not utf-8 text (invalid continuation byte at byte 13 of the line)"
    )


@pytest.mark.parametrize(
    ("inter", "line", "problem"),
    [
        ('{"u1": ["i1",\n "i2"', 2, "not valid JSON (Expecting ',' delimiter, column 6)"),
        ('[["i1", "i2"]]', 1, "expected a JSON object {user: [item, ...]}"),
    ],
)
@pytest.mark.parametrize("errors", ["strict", "lenient"])
def test_lcrec_document_that_cannot_be_read_is_an_error(tmp_path, errors, inter, line, problem):
    path, _ = write_lcrec_text(tmp_path, inter)
    with pytest.raises(DataError) as err:
        read_dataset(config("lcrec", tmp_path, errors))
    assert str(err.value) == f"{path}:{line}: {problem}"


def test_lcrec_entries_that_are_not_lists_or_item_ids(tmp_path):
    path, _ = write_lcrec_text(tmp_path, '{"u1": ["i1", null, "i2"], "u2": "i3", "u3": ["i4"]}')
    with pytest.raises(DataError) as err:
        read_dataset(config("lcrec", tmp_path))
    assert str(err.value) == f"{path}: user 'u1', position 1: item None is not an item id"
    raw = read_dataset(config("lcrec", tmp_path, "lenient"))
    assert raw.issues.as_dict() == {"null_item": 1, "malformed_json": 1}
    assert raw.issues.first["malformed_json"] == f"{path}: user 'u2': expected a list of items"
    assert raw.interactions["item"].to_pylist() == ["i1", "i2", "i4"]


def test_movielens_short_rows(tmp_path):
    path = write_ratings_dat(tmp_path, ["1::5::4::881250949", "2::5::3", "3::6::4::881250951"])
    with pytest.raises(DataError) as err:
        read_dataset(config("movielens", tmp_path))
    assert str(err.value) == f"{path}:2: expected 4 fields separated by '::', got 3"
    raw = read_dataset(config("movielens", tmp_path, "lenient"))
    assert raw.issues.as_dict() == {"malformed_row": 1}
    assert raw.interactions["line"].to_pylist() == [1, 3]


def test_file_that_is_not_parquet(tmp_path):
    write_table(tmp_path, "parquet")
    (tmp_path / "interactions.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(DataError, match="interactions.parquet: not a readable Parquet file"):
        read_dataset(config("table", tmp_path, "lenient"))
