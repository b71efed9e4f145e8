"""LC-Rec / LETTER JSON: `<Name>.inter.json` {user: [item, ...]} in time order and
`<Name>.item.json` {item: {title, description, brand, categories}}. No timestamps: the position
in a user's list is the time order (timestamp = position)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from distributed_rec.config import DataConfig
from distributed_rec.data.files import (
    JsonDocument,
    choose_name,
    data_root,
    find_by_suffix,
    load_json_document,
)
from distributed_rec.data.issues import Issues
from distributed_rec.data.raw import RawData
from distributed_rec.data.text import field_text
from distributed_rec.errors import DataError

FIELDS = ("title", "description", "brand", "categories")


def _report_repeated_users(document: JsonDocument, path: Path, issues: Issues) -> None:
    """A user key named twice: an error (strict) or the later list skipped, its events counted
    as duplicate_user (lenient); the first list is kept."""
    for repeat in document.repeats_in(document.value):
        events = len(repeat.value) if isinstance(repeat.value, list) else 1
        problem = (
            f"user {repeat.key!r} is a key of the JSON object a second time (its later list "
            f"has {events} event(s)); each user must appear once"
        )
        issues.report("duplicate_user", path, problem, repeat.line, count=events)


def read_lcrec(config: DataConfig) -> RawData:
    root = data_root(config.path)
    found = find_by_suffix(root, (".inter.json", ".inter.json.gz"))
    name = choose_name(root, found, config.name, "<Name>.inter.json and <Name>.item.json")
    inter_path = found[name]
    items_found = find_by_suffix(root, (".item.json", ".item.json.gz"))
    if name not in items_found:
        raise DataError(root, f"{inter_path.name} has no metadata file {name}.item.json")
    item_path = items_found[name]
    issues, meta_issues = Issues(config.errors), Issues(config.errors)

    document = load_json_document(inter_path)
    if not isinstance(document.value, dict):
        raise DataError(inter_path, "expected a JSON object {user: [item, ...]}", 1)
    _report_repeated_users(document, inter_path, issues)
    users: list[str] = []
    items: list[str] = []
    stamps: list[int] = []
    for user, sequence in document.value.items():
        if not user.strip():
            issues.report("null_user", inter_path, "empty user id (a key of the JSON object)")
            continue
        if not isinstance(sequence, list):
            issues.report("malformed_json", inter_path, f"user {user!r}: expected a list of items")
            continue
        for position, item in enumerate(sequence):
            if item is None or isinstance(item, (dict, list, bool)) or str(item).strip() == "":
                problem = f"user {user!r}, position {position}: item {item!r} is not an item id"
                issues.report("null_item", inter_path, problem)
                continue
            users.append(user)
            items.append(str(item))
            stamps.append(position)
    interactions = pa.table(
        {
            "user": pa.array(users, pa.string()),
            "item": pa.array(items, pa.string()),
            "timestamp": pa.array(stamps, pa.int64()),
            "line": pa.array(np.full(len(users), -1, dtype=np.int64)),
        }
    )
    if interactions.num_rows == 0 and not issues.total:
        raise DataError(inter_path, "no interactions in the file")

    metadata = load_json_document(item_path)
    if not isinstance(metadata.value, dict):
        raise DataError(item_path, "expected a JSON object {item: {title, ...}}", 1)
    # a repeated item key keeps the first record: the later ones follow, for unique_metadata
    # to count as duplicate_item like a repeated record of any other format
    records = list(metadata.value.items())
    records += [(r.key, r.value) for r in metadata.repeats_in(metadata.value)]
    ids: list[str] = []
    columns: dict[str, list[object]] = {f: [] for f in FIELDS}
    for item, record in records:
        if not isinstance(record, dict):
            meta_issues.report("malformed_json", item_path, f"item {item!r}: expected an object")
            continue
        repeats = metadata.repeats_in(record)
        if repeats:
            problem = f"item {item!r}: field {repeats[0].key!r} appears twice in its record"
            meta_issues.report("duplicate_key", item_path, problem)
            continue
        ids.append(str(item))
        for f in FIELDS:
            value = record.get(f)
            columns[f].append(field_text(value))
    item_table = pa.table(
        {
            "item": pa.array(ids, pa.string()),
            **{f: pa.array(v, pa.string()) for f, v in columns.items()},
        }
    )
    return RawData(interactions, item_table, inter_path, item_path, issues, meta_issues)
