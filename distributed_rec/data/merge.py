"""valid.parquet / test.parquet from the shards' rows: a streaming merge by dense user id.

Each shard's rows are sorted by user_id in row groups of EVAL_ROW_GROUP rows, so a range of
users is read from every shard with a row-group-pruning filter, sorted, and appended; memory
holds one range (`users_per_part` users), not the split.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from distributed_rec.data.sharding import PLAIN_INTEGERS
from distributed_rec.data.split import SAMPLE_SCHEMA

USERS_PER_PART = 1 << 20
"""Users per appended piece (also the row-group size pq.write_table uses by default)."""


def merge_eval_split(
    parts: list[str], out: str, num_users: int, users_per_part: int = USERS_PER_PART
) -> int:
    """Ray task: write the rows of `parts` (each sorted by user_id) to `out` in user_id order;
    returns the rows written. Dense user ids are 0 .. num_users - 1."""
    dataset = ds.dataset([p for p in parts if Path(p).exists()], format="parquet")
    rows = 0
    with pq.ParquetWriter(out, SAMPLE_SCHEMA, **PLAIN_INTEGERS) as writer:
        for first in range(0, max(num_users, 1), users_per_part):
            user = ds.field("user_id")
            piece = dataset.to_table(filter=(user >= first) & (user < first + users_per_part))
            if piece.num_rows:
                piece = piece.sort_by("user_id").cast(SAMPLE_SCHEMA)
                writer.write_table(piece, row_group_size=users_per_part)
                rows += piece.num_rows
    return rows
