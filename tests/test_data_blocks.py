"""The out-of-core prepare path: block planning, the fast JSON-lines parser against the exact
one, and the sharded pipeline against the in-memory reference (read_dataset + clean)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_support import META, meta_records, review_records, write_jsonl

from distributed_rec.config import load_config
from distributed_rec.data import blocks
from distributed_rec.data.cleaning import clean
from distributed_rec.data.files import iter_block_lines
from distributed_rec.data.issues import Issues
from distributed_rec.data.items import drop_missing_metadata, unique_metadata
from distributed_rec.data.jsonl import content_lines, parse_review_block
from distributed_rec.data.prepare import run_prepare
from distributed_rec.data.raw import validate_interactions
from distributed_rec.data.readers import read_dataset
from distributed_rec.data.readers.amazon2023 import review_rows
from distributed_rec.distributed.ray_runtime import start_local_ray
from distributed_rec.errors import DataError

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ray_instance():
    import ray

    start_local_ray(num_cpus=2, log_to_driver=False)
    yield
    ray.shutdown()


def _many_reviews(n: int = 3000) -> list[object]:
    rng = np.random.default_rng(0)
    events = [(f"u{rng.integers(0, 200)}", f"i{rng.integers(1, 5)}", int(t)) for t in range(n)]
    records: list[object] = review_records(events)
    records[17] = "{broken"
    records[400] = {"user_id": "u1", "parent_asin": "i2"}  # no timestamp
    records[1900] = {"user_id": None, "parent_asin": "i1", "timestamp": 5}
    records[2500] = {"user_id": "u7", "parent_asin": "i9", "timestamp": 5}  # no metadata
    records[2600] = '{"user_id": "u2", "parent_asin": "i1", "timestamp": 5, "user_id": "u3"}'
    records[2650] = '{"user_id": "u2", "parent_asin": "i1", "timestamp": 6, "x": {"a": 1, "a": 2}}'
    records[2700] = {"user_id": "u3", "parent_asin": "i1", "timestamp": "noon"}
    return records


def test_line_blocks_cover_the_file_on_line_boundaries(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"".join(b"%d\n" % i * (i % 3) for i in range(200)) + b"tail")
    planned = blocks.line_blocks(path, block_bytes=37)
    data = path.read_bytes()
    assert planned[0].start == 0 and planned[-1].end == len(data)
    for before, after in zip(planned, planned[1:], strict=False):
        assert before.end == after.start and data[before.end - 1 : before.end] == b"\n"
        assert after.first_line == before.first_line + data.count(b"\n", before.start, before.end)


def test_review_ranges_cover_the_file_and_only_the_first_knows_its_line(tmp_path):
    path = write_jsonl(tmp_path / "Home.jsonl", review_records())
    data = path.read_bytes()
    planned = blocks.review_ranges(path, block_bytes=60)
    assert len(planned) > 3 and (planned[0].start, planned[-1].end) == (0, len(data))
    assert [b.first_line for b in planned] == [1] + [0] * (len(planned) - 1)
    for before, after in zip(planned, planned[1:], strict=False):
        assert before.end == after.start and data[before.end - 1 : before.end] == b"\n"


def _read_in_process(path: Path, block_bytes: int, errors: str, work: Path):
    """Plan, read and settle the review ranges of `path` in this process."""
    config = load_config(
        None, ["--data.format=amazon2023", f"--data.path={path.parent}", f"--data.errors={errors}"]
    ).data
    planned = blocks.review_ranges(path, block_bytes)
    first = [blocks.read_block(b, config, str(work)) for b in planned]
    settled, shift = blocks.settle_lines(planned, first, config, str(work), _in_process)
    return planned, first, settled, shift


@pytest.mark.parametrize("errors", ["strict", "lenient"])
def test_provisional_lines_are_settled_to_the_physical_ones(tmp_path, errors):
    records = review_records([(f"u{i % 7}", f"i{1 + i % 4}", i) for i in range(300)])
    records[150] = "{broken"  # line 151
    records.insert(200, "")  # a blank line: the lines after it move by one
    records[250] = {"user_id": "u1", "parent_asin": "i2"}  # line 251, no timestamp
    path = write_jsonl(tmp_path / "Home.jsonl", records)
    planned, first, settled, shift = _read_in_process(path, 2048, errors, tmp_path / "work")
    assert len(planned) > 5
    reread = [r.index for r in first if r.reread]
    if errors == "strict":
        failed = [r for r in settled if r.error is not None]
        assert failed[0].error[1].startswith("not valid JSON") and failed[0].error[2] == 151
        assert failed[1].error[1:] == ("missing field 'timestamp'", 251)
        assert reread == [r.index for r in failed]
        return
    issues = Issues(errors)
    for result in settled:
        issues.merge(result.issues)
    assert issues.as_dict() == {"malformed_json": 1, "missing_field": 1}
    assert issues.first["malformed_json"].startswith(f"{path}:151: not valid JSON")
    assert issues.first["missing_field"] == f"{path}:251: missing field 'timestamp'"
    assert len(reread) == 2 and not any(r.reread for r in settled)
    assert sum(r.rows for r in settled) == 298
    # the other blocks' rows carry provisional lines: line + shift is the physical line
    for block in planned:
        if block.index in reread:
            assert shift[block.index] == 0
            continue
        for part in (tmp_path / "work" / "rows").glob(f"*/{block.index:06d}-*"):
            table = pa.ipc.open_file(part).read_all()
            lines = table["line"].to_numpy() + shift[block.index]
            for line, user in zip(lines, table["user"].to_pylist(), strict=True):
                assert json.loads(path.read_text().splitlines()[line - 1])["user_id"] == user


@pytest.mark.parametrize("scan_bytes", [1 << 20, 5])
def test_content_lines_equal_the_line_by_line_definition(monkeypatch, scan_bytes):
    from distributed_rec.data import jsonl

    monkeypatch.setattr(jsonl, "_SCAN_BYTES", scan_bytes)  # newlines found 5 bytes at a time

    def by_line(data: bytes, first: int) -> list[int]:
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        return [first + i for i, line in enumerate(lines) if line.strip()]

    assert content_lines(b'{"a": 1}\n\n \t\n {"b": 2}\r\n\x0c\nend', 7).tolist() == [7, 10, 12]
    rng = np.random.default_rng(0)
    alphabet = [b"x", b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c", b"{", b"\xc3"]
    for _ in range(3000):
        data = b"".join(alphabet[i] for i in rng.integers(0, len(alphabet), rng.integers(0, 24)))
        assert content_lines(data, 3).tolist() == by_line(data, 3), data


@pytest.mark.parametrize("errors", ["strict", "lenient"])
def test_fast_parser_equals_the_exact_one(tmp_path, errors):
    path = write_jsonl(tmp_path / "Home.jsonl", [*review_records(), "", "  ", *review_records()])
    data = path.read_bytes()
    fast_issues, exact_issues = Issues(errors), Issues(errors)
    fast, newlines = parse_review_block(path, data, 1, fast_issues)
    exact = review_rows(path, exact_issues, iter_block_lines(path, data, 1))
    assert fast["timestamp"].type == pa.int64() and exact["timestamp"].type == pa.string()
    assert fast.drop_columns("timestamp").equals(exact.drop_columns("timestamp"))
    validated = [validate_interactions(t, path, Issues(errors)) for t in (fast, exact)]
    assert validated[0].equals(validated[1])
    assert fast["line"].to_pylist()[-1] == 20 and newlines == 20
    # a block with a bad line falls back to the exact parser: same rows, same counted skip
    bad = data.replace(b'"u2"', b'"u2', 1)
    if errors == "strict":
        with pytest.raises(Exception, match=":3: not valid JSON"):
            parse_review_block(path, bad, 1, Issues(errors))
        return
    fast_issues = Issues(errors)
    fast, newlines = parse_review_block(path, bad, 1, fast_issues)
    assert newlines == 20 and fast.num_rows == 17 and fast_issues.as_dict() == {"malformed_json": 1}


def _in_process(fn, calls):
    return [fn(*args) for args in calls]


@pytest.mark.parametrize("errors", ["strict", "lenient"])
def test_metadata_blocks_equal_the_line_by_line_reader(tmp_path, monkeypatch, errors):
    from distributed_rec.data.readers.amazon2023 import read_metadata

    records: list[object] = [
        {"parent_asin": f"i{n}", "title": f"Item {n}", "features": ["a", n], "details": {"n": n}}
        for n in range(400)
    ]
    records[5] = ""
    records[150] = {"title": "no id"}
    records[260] = '{"parent_asin": "i260", "title": "x", "title": "y"}'
    path = write_jsonl(tmp_path / "meta_Home.jsonl", records)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 2048)
    assert len(blocks.line_blocks(path, blocks.BLOCK_BYTES)) > 10
    if errors == "strict":
        with pytest.raises(DataError) as err:
            blocks.read_metadata_blocks(path, errors, _in_process)
        assert (err.value.line, err.value.problem) == (151, "missing field 'parent_asin'")
        return
    items, issues = blocks.read_metadata_blocks(path, errors, _in_process)
    expected, _, expected_issues = read_metadata(tmp_path, "Home", errors)
    assert items.equals(expected) and items.num_rows == 397
    assert issues.as_dict() == expected_issues.as_dict() == {"duplicate_key": 1, "missing_field": 1}
    assert issues.first == expected_issues.first
    (tmp_path / "empty").mkdir()
    empty = write_jsonl(tmp_path / "empty" / "meta_Home.jsonl", ["", "  "])
    with pytest.raises(DataError, match="file is empty"):
        blocks.read_metadata_blocks(empty, errors, _in_process)


def _prepare(run_dir: Path, *args: str) -> dict:
    run_prepare(load_config(None, [f"--run_dir={run_dir}", *args]))
    return json.loads((run_dir / "prepare" / "stats.json").read_text())


def _outputs(run_dir: Path) -> dict[str, pa.Table]:
    root = run_dir / "prepare"
    return {str(p.relative_to(root)): pq.read_table(p) for p in sorted(root.rglob("*.parquet"))}


def test_many_blocks_and_gzip_equal_one_block_and_the_reference(
    tmp_path, monkeypatch, ray_instance
):
    records = _many_reviews()
    raw = tmp_path / "plain"
    raw.mkdir()
    write_jsonl(raw / "Home.jsonl", records)
    write_jsonl(raw / "meta_Home.jsonl", meta_records(META))
    packed = tmp_path / "gz"
    packed.mkdir()
    (packed / "Home.jsonl.gz").write_bytes(gzip.compress((raw / "Home.jsonl").read_bytes()))
    write_jsonl(packed / "meta_Home.jsonl", meta_records(META))
    args = ("--data.format=amazon2023", "--data.errors=lenient", "--data.kcore=2")
    one = _prepare(tmp_path / "one", *args, f"--data.path={raw}", "--data.num_shards=3")
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 4096)
    assert len(blocks.plan_blocks(load_config(None, [*args, f"--data.path={raw}"]).data)) > 20
    many = _prepare(tmp_path / "many", *args, f"--data.path={raw}", "--data.num_shards=3")
    gz = _prepare(tmp_path / "gz_run", *args, f"--data.path={packed}", "--data.num_shards=3")
    assert many["read_blocks"] > 20 and gz["read_blocks"] == 1
    assert one["dropped"] == many["dropped"] == gz["dropped"] == {
        "malformed_json": 1, "missing_field": 1, "null_user": 1, "bad_timestamp": 1,
        "duplicate_key": 1, "missing_metadata": 1, "duplicate": one["dropped"]["duplicate"],
        "kcore": one["dropped"]["kcore"],
    }  # fmt: skip
    for stats in (many, gz):
        for key in ("users", "items", "interactions", "raw", "split", "shards"):
            assert stats[key] == one[key]
    expected = _outputs(tmp_path / "one")
    for run in ("many", "gz_run"):
        got = _outputs(tmp_path / run)
        assert got.keys() == expected.keys()
        assert all(got[name].equals(expected[name]) for name in expected)
    # the in-memory reference: read_dataset, metadata check and clean() in one process
    config = load_config(None, [*args, f"--data.path={raw}"]).data
    reference = read_dataset(config)
    drop_missing_metadata(reference, unique_metadata(reference))
    cleaned = clean(reference, 2)
    interactions = pa.concat_tables(
        expected[name] for name in sorted(expected) if name.startswith("interactions/")
    ).sort_by([("user_id", "ascending"), ("seq", "ascending")])
    assert interactions["user_id"].to_pylist() == cleaned.user.tolist()
    assert interactions["item_id"].to_pylist() == cleaned.item.tolist()
    assert interactions["timestamp"].to_pylist() == cleaned.timestamp.tolist()
    assert one["dropped"]["duplicate"] == cleaned.dropped["duplicate"]
    assert one["dropped"]["kcore"] == cleaned.dropped["kcore"]


def test_synthetic_integer_ids_match_the_reference(tmp_path, monkeypatch, ray_instance):
    args = ["--data.format=synthetic", "--data.synthetic_users=140000",
            "--data.synthetic_items=20000", "--data.synthetic_interactions=700000",
            "--data.kcore=5", "--data.num_shards=4"]  # fmt: skip
    monkeypatch.setattr(blocks, "SYNTHETIC_CHUNKS_PER_BLOCK", 1)
    stats = _prepare(tmp_path / "run", *args)
    assert stats["read_blocks"] == 3 and stats["kcore_rounds"] >= 2
    cleaned = clean(read_dataset(load_config(None, args).data), 5)
    got = _outputs(tmp_path / "run")
    interactions = pa.concat_tables(
        got[n] for n in sorted(got) if n.startswith("interactions/")
    ).sort_by([("user_id", "ascending"), ("seq", "ascending")])
    assert (
        interactions["raw_user_id"].to_pylist()
        == cleaned.user_ids.take(pa.array(cleaned.user)).to_pylist()
    )
    assert interactions["item_id"].to_pylist() == cleaned.item.tolist()
    assert got["items.parquet"]["raw_item_id"].to_pylist() == cleaned.item_ids.to_pylist()
    assert stats["dropped"] == cleaned.dropped


def test_strict_error_in_a_later_block_names_its_line(tmp_path, monkeypatch, ray_instance):
    records = review_records(
        [(f"u{i % 50}", f"i{1 + i % 4}", i) for i in range(2000)]  # about 110 bytes a line
    )
    records[1499] = '{"user_id": "u1", "parent_asin": '
    write_jsonl(tmp_path / "Home.jsonl", records)
    write_jsonl(tmp_path / "meta_Home.jsonl", meta_records(META))
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 8192)
    args = ["--data.format=amazon2023", f"--data.path={tmp_path}"]
    assert len(blocks.plan_blocks(load_config(None, args).data)) > 10
    with pytest.raises(DataError) as err:
        run_prepare(load_config(None, [f"--run_dir={tmp_path / 'run'}", *args]))
    assert (err.value.path, err.value.line) == (str(tmp_path / "Home.jsonl"), 1500)
    assert err.value.problem.startswith("not valid JSON")
    assert not (tmp_path / "run" / "prepare").exists()
    # an item without metadata in a later block: its row's line is shifted to the physical one
    records[1499] = {"user_id": "u1", "parent_asin": "i77", "timestamp": 1499}
    write_jsonl(tmp_path / "Home.jsonl", records)
    with pytest.raises(DataError) as err:
        run_prepare(load_config(None, [f"--run_dir={tmp_path / 'run'}", *args]))
    assert err.value.line == 1500 and err.value.problem.startswith("item 'i77' is absent")
    assert not (tmp_path / "run" / "_prepare_work").exists()
