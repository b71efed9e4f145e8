"""Amazon Reviews 2023 (McAuley lab): raw `<Category>.jsonl[.gz]` reviews (user_id, parent_asin,
timestamp in ms, rating) with `meta_<Category>.jsonl[.gz]` (parent_asin, title, features,
description, categories, store, details), and the benchmark CSVs
`<Category>.{train,valid,test}.csv[.gz]` (user_id, parent_asin, rating, timestamp[, history])
read together with the same metadata file. The item is `parent_asin`; `brand` reads `store`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from distributed_rec.config import DataConfig
from distributed_rec.data.files import (
    choose_name,
    data_root,
    find_by_suffix,
    iter_json_records,
    read_csv_strings,
)
from distributed_rec.data.issues import Issues
from distributed_rec.data.raw import RawData, validate_interactions
from distributed_rec.data.text import field_text
from distributed_rec.errors import DataError

META_FIELDS = ("title", "features", "description", "categories", "store", "details")
ALIASES = {"brand": "store"}
REVIEW_FIELDS = ("user_id", "parent_asin", "timestamp")
_JSONL = (".jsonl", ".jsonl.gz")


def metadata_file(root: Path, name: str) -> Path:
    """meta_<name>.jsonl[.gz] in `root`."""
    found = find_by_suffix(root, _JSONL, prefix="meta_")
    if name not in found:
        raise DataError(root, f"no metadata file meta_{name}.jsonl[.gz] for the reviews of {name}")
    return found[name]


def metadata_rows(
    path: Path, issues: Issues, lines_in: Iterator[tuple[int, str]] | None = None
) -> pa.Table:
    """item (parent_asin) and the META_FIELDS as text of the metadata records of `path` (or of
    `lines_in`, some of its lines), in file order; problems go to `issues`."""
    ids: list[str] = []
    columns: dict[str, list[str | None]] = {f: [] for f in META_FIELDS}
    for lineno, record in iter_json_records(path, issues, lines_in):
        asin = record.get("parent_asin")
        if asin is None or str(asin).strip() == "":
            issues.report("missing_field", path, "missing field 'parent_asin'", lineno)
            continue
        ids.append(str(asin))
        for f in META_FIELDS:
            columns[f].append(field_text(record.get(f)))
    return pa.table(
        {
            "item": pa.array(ids, pa.string()),
            **{f: pa.array(v, pa.string()) for f, v in columns.items()},
        }
    )


def read_metadata(root: Path, name: str, errors: str) -> tuple[pa.Table, Path, Issues]:
    """The metadata of the reviews of `name`, read line by line in this process."""
    path, issues = metadata_file(root, name), Issues(errors)
    return metadata_rows(path, issues), path, issues


def review_rows(
    path: Path, issues: Issues, lines_in: Iterator[tuple[int, str]] | None = None
) -> pa.Table:
    """user, item, timestamp (strings) and line of the reviews of `path` (or of `lines_in`,
    some of its lines), parsed line by line; problems go to `issues`."""
    users: list[object] = []
    items: list[object] = []
    stamps: list[object] = []
    lines: list[int] = []
    for lineno, record in iter_json_records(path, issues, lines_in, REVIEW_FIELDS):
        absent = [f for f in REVIEW_FIELDS if f not in record]
        if absent:
            issues.report("missing_field", path, f"missing field '{absent[0]}'", lineno)
            continue
        stamp = record["timestamp"]
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float, str, type(None))):
            stamp = "<non-scalar>"
        users.append(None if record["user_id"] is None else str(record["user_id"]))
        items.append(None if record["parent_asin"] is None else str(record["parent_asin"]))
        stamps.append(None if stamp is None else str(stamp))
        lines.append(lineno)
    return pa.table(
        {
            "user": pa.array(users, pa.string()),
            "item": pa.array(items, pa.string()),
            "timestamp": pa.array(stamps, pa.string()),
            "line": pa.array(lines, pa.int64()),
        }
    )


def read_amazon2023(config: DataConfig) -> RawData:
    root = data_root(config.path)
    found = find_by_suffix(root, _JSONL, exclude_prefix="meta_")
    name = choose_name(
        root, found, config.name, "<Category>.jsonl[.gz] and meta_<Category>.jsonl[.gz]"
    )
    path, issues = found[name], Issues(config.errors)
    interactions = validate_interactions(review_rows(path, issues), path, issues)
    items, meta_path, meta_issues = read_metadata(root, name, config.errors)
    return RawData(interactions, items, path, meta_path, issues, meta_issues, dict(ALIASES))


def read_amazon2023_benchmark(config: DataConfig) -> RawData:
    root = data_root(config.path)
    found = find_by_suffix(root, (".train.csv", ".train.csv.gz"))
    name = choose_name(
        root, found, config.name, "<Category>.{train,valid,test}.csv with meta_<Category>.jsonl"
    )
    issues = Issues(config.errors)
    parts, paths = [], []
    for split in ("train", "valid", "test"):
        split_files = find_by_suffix(root, (f".{split}.csv", f".{split}.csv.gz"))
        if name not in split_files:
            raise DataError(root, f"missing {name}.{split}.csv of the benchmark split")
        path = split_files[name]
        table = read_csv_strings(path, issues, ("user_id", "parent_asin", "timestamp"))
        rows = pa.table(
            {
                "user": table["user_id"],
                "item": table["parent_asin"],
                "timestamp": table["timestamp"],
                "line": table["line"],
            }
        )
        rows = validate_interactions(rows, path, issues)
        source = pa.array([len(paths)] * rows.num_rows, pa.int32())
        parts.append(rows.append_column("source", source))
        paths.append(path)
    items, meta_path, meta_issues = read_metadata(root, name, config.errors)
    interactions = pa.concat_tables(parts)
    return RawData(
        interactions, items, found[name], meta_path, issues, meta_issues, dict(ALIASES), paths
    )
