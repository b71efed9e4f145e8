"""Item metadata: de-duplication, the check that every interacted item has metadata, and the
items table (item_id dense, raw_item_id, cleaned text)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distributed_rec.config import DataConfig
from distributed_rec.data.raw import RawData
from distributed_rec.data.text import item_texts, resolve_fields

ITEMS_SCHEMA = pa.schema(
    [("item_id", pa.int64()), ("raw_item_id", pa.string()), ("text", pa.string())]
)


def unique_metadata(raw: RawData) -> pa.Table:
    """Metadata rows with the first record of each item id; later repeats are counted."""
    items = raw.items.set_column(0, "item", pc.cast(raw.items["item"], pa.string()))
    ids = items["item"].combine_chunks()
    first = pc.index_in(ids, value_set=pc.unique(ids)).to_numpy()
    _, keep = np.unique(first, return_index=True)
    repeats = items.num_rows - len(keep)
    if repeats:
        raw.meta_issues.counts["duplicate_item"] += repeats
    return items.take(pa.array(np.sort(keep)))


def drop_missing_metadata(raw: RawData, metadata: pa.Table) -> None:
    """Interactions whose item has no metadata: DataError (strict) or counted `missing_metadata`."""
    table = raw.interactions
    distinct = pc.unique(table["item"])
    absent = distinct.filter(pc.invert(pc.is_in(pc.cast(distinct, pa.string()), metadata["item"])))
    if len(absent) == 0:
        return
    bad = pc.is_in(table["item"], value_set=absent)
    row = int(np.argmax(bad.to_numpy(zero_copy_only=False)))
    line = int(table["line"][row].as_py()) if "line" in table.column_names else -1
    problem = (
        f"item {absent[0].as_py()!r} is absent from the metadata file {raw.items_path.name}"
        f" ({len(absent)} item(s) without metadata)"
    )
    if line < 0:
        user = table["user"][row].as_py()
        problem += f" (user {user!r})"
    raw.issues.report(
        "missing_metadata",
        raw.row_path(row),
        problem,
        line if line >= 0 else None,
        count=pc.sum(bad).as_py(),
    )
    raw.interactions = table.filter(pc.invert(bad))


def items_table(
    item_ids: pa.Array, metadata: pa.Table, raw: RawData, config: DataConfig
) -> pa.Table:
    """item_id int64 [N], raw_item_id, text for the items left after cleaning."""
    columns = resolve_fields(metadata, config.text_fields, raw.aliases, str(raw.items_path))
    rows = pc.index_in(item_ids, value_set=metadata["item"])
    texts = item_texts(metadata.take(rows), columns, config.text_max_words)
    return pa.Table.from_arrays(
        [
            pa.array(np.arange(len(item_ids), dtype=np.int64)),
            item_ids,
            pa.array(texts, pa.string()),
        ],
        schema=ITEMS_SCHEMA,
    )
