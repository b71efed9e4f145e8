"""A generic interactions table plus an items table, Parquet or CSV (header row), in data.path:
`[<Name>.]interactions.{parquet,csv,csv.gz}` and `[<Name>.]items.{parquet,csv,csv.gz}`.

Columns are named by data.user_column, data.item_column, data.timestamp_column (interactions)
and data.item_column (items); every other items column is a text field by its own name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distributed_rec.config import DataConfig
from distributed_rec.data.files import choose_name, data_root, read_csv_strings
from distributed_rec.data.issues import Issues
from distributed_rec.data.raw import RawData, is_blank, validate_interactions
from distributed_rec.data.text import field_text
from distributed_rec.errors import DataError

_SUFFIXES = (".parquet", ".csv", ".csv.gz")


def _find(root: Path, kind: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        for suffix in _SUFFIXES:
            tail = kind + suffix
            if path.is_file() and (path.name == tail or path.name.endswith("." + tail)):
                found.setdefault(path.name[: -len(tail)].rstrip("."), path)
    return found


def _read(path: Path, columns: tuple[str, ...], issues: Issues) -> pa.Table:
    if path.suffix != ".parquet":
        return read_csv_strings(path, issues, columns)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(path, f"not a readable Parquet file ({err})") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        have = ", ".join(table.column_names)
        raise DataError(path, f"missing column(s) {', '.join(missing)}; the table has {have}")
    if table.num_rows == 0:
        raise DataError(path, "table has no rows")
    return table.append_column("line", pa.array(np.arange(1, table.num_rows + 1)))


def read_table(config: DataConfig) -> RawData:
    root = data_root(config.path)
    found = _find(root, "interactions")
    expected = "[<Name>.]interactions.{parquet,csv} and [<Name>.]items.{parquet,csv}"
    name = choose_name(root, found, config.name, expected)
    items_found = _find(root, "items")
    if name not in items_found:
        raise DataError(root, f"{found[name].name} has no items table ({expected})")
    inter_path, items_path = found[name], items_found[name]
    issues, meta_issues = Issues(config.errors), Issues(config.errors)
    user, item, stamp = config.user_column, config.item_column, config.timestamp_column
    table = _read(inter_path, (user, item, stamp), issues)
    rows = pa.table(
        {"user": table[user], "item": table[item], "timestamp": table[stamp], "line": table["line"]}
    )
    interactions = validate_interactions(rows, inter_path, issues)

    items = _read(items_path, (item,), meta_issues)
    missing_id = is_blank(items[item])
    if pc.any(missing_id).as_py():
        line = int(items["line"].filter(missing_id)[0].as_py())
        meta_issues.report(
            "missing_field", items_path, f"empty {item}", line, pc.sum(missing_id).as_py()
        )
        items = items.filter(pc.invert(missing_id))
    columns = {"item": pc.cast(items[item], pa.string())}
    for column in items.column_names:
        if column not in (item, "line"):
            values = items[column]
            if not pa.types.is_string(values.type):
                values = pa.array([field_text(v) for v in values.to_pylist()], pa.string())
            columns[column] = values
    return RawData(interactions, pa.table(columns), inter_path, items_path, issues, meta_issues)
