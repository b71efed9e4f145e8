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
    write_benchmark,
    write_jsonl,
    write_table,
)

from distributed_rec.config import ConfigError, load_config
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


BAD_LINES = {
    "malformed_json": ({3: '{"user_id": "u2", "parent_asin": '}, 3, "not valid JSON"),
    "missing_field": ({2: {"user_id": "u1", "parent_asin": "i2"}}, 2, "missing field 'timestamp'"),
    "bad_timestamp": (
        {4: {"user_id": "u1", "parent_asin": "i2", "timestamp": "yesterday"}},
        4,
        "timestamp 'yesterday' is not a number",
    ),
    "null_user": ({5: {"user_id": None, "parent_asin": "i3", "timestamp": 1}}, 5, "empty user id"),
}


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
def test_bad_line_strict_names_file_line_and_problem(tmp_path, reason):
    replace, line, problem = BAD_LINES[reason]
    path = amazon_with(tmp_path, replace)
    with pytest.raises(DataError) as err:
        read_dataset(config("amazon2023", tmp_path))
    assert (err.value.path, err.value.line) == (str(path), line)
    assert problem in err.value.problem
    assert str(err.value).startswith(f"{path}:{line}: ")


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
def test_bad_line_lenient_is_a_counted_skip(tmp_path, reason):
    amazon_with(tmp_path, BAD_LINES[reason][0])
    raw = read_dataset(config("amazon2023", tmp_path, "lenient"))
    assert raw.issues.as_dict() == {reason: 1}
    assert raw.interactions.num_rows == len(EVENTS) - 1 and raw.records == len(EVENTS)


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
