"""The per-shard steps of prepare, each a Ray task over the rows of one user shard.

A user's events all live in one shard, so time order, duplicate removal, the user side of the
k-core and the split are shard-local; only item counts cross shards, summed by the driver.

1. :func:`load_shard`: item metadata check (counted, the first absent row remembered), time
   order (timestamp, then input order), duplicate (user, item) removal keeping the first; the
   result is saved as `state/<shard>.arrow` (user: local index, item: metadata row,
   timestamp) and `state/<shard>.users.arrow` (raw ids of the local users).
2. :func:`kcore_round`: given the items still alive, drop users below k until none is left,
   and count the remaining events per item. The driver repeats it to the fixed point.
3. :func:`kept_users` then :func:`write_shard`: the kept users' raw ids (the driver orders them
   all into dense ids), then the shard's interactions, training samples and windows, and its
   valid/test rows (`eval/<split>/<shard>.parquet`, merged by :mod:`distributed_rec.data.merge`).

Legend: n rows of the shard, u its users, N metadata items.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distributed_rec.data.cleaning import digit_ids
from distributed_rec.data.sharding import INTERACTION_SCHEMA, write_shard_files
from distributed_rec.data.split import SAMPLE_SCHEMA, eval_split
from distributed_rec.data.work_files import SUFFIX, read_work_table, write_work_table

EVAL_ROW_GROUP = 1 << 16
"""Rows per row group of a shard's valid/test rows, so a merge reads only the users it needs."""


@dataclass
class ItemCounts:
    """Sparse events per item: items int32 [m] (distinct metadata rows), counts int32 [m]; m is
    at most the shard's rows, so S shards never ship S dense vectors of N."""

    items: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, item: np.ndarray) -> ItemCounts:
        items, counts = np.unique(item, return_counts=True)
        return cls(items.astype(np.int32), counts.astype(np.int32))


def total_counts(parts: list[ItemCounts], num_items: int) -> np.ndarray:
    """int64 [N]: the shards' counts summed."""
    if not parts:
        return np.zeros(num_items, np.int64)
    items = np.concatenate([p.items for p in parts])
    counts = np.concatenate([p.counts for p in parts]).astype(np.float64)  # exact below 2^53
    return np.bincount(items, weights=counts, minlength=num_items).astype(np.int64)


@dataclass
class AbsentItem:
    """The first row (in input order) of a shard whose item has no metadata."""

    order: int
    line: int
    source: int
    user: object
    item: object


@dataclass
class ShardLoad:
    """What :func:`load_shard` reports (all small: counts, flags, one item count vector)."""

    shard: int
    rows: int
    raw_users: int
    absent_rows: int
    absent_items: list[str]
    first_absent: AbsentItem | None
    duplicates: int
    user_digits: tuple[bool, bool]
    item_counts: ItemCounts
    """Events per metadata item after duplicate removal."""


def _state(work: Path, shard: int) -> tuple[Path, Path]:
    folder = work / "state"
    return folder / f"{shard:05d}{SUFFIX}", folder / f"{shard:05d}.users{SUFFIX}"


def _read_rows(work: Path, shard: int) -> pa.Table | None:
    files = sorted((work / "rows" / f"{shard:05d}").glob(f"*{SUFFIX}"))
    if not files:
        return None
    return pa.concat_tables([read_work_table(f) for f in files]).combine_chunks()


def load_shard(shard: int, work: str, meta_ids: pa.Array) -> ShardLoad:
    """Step 1 on shard `shard` of `work`/rows; `meta_ids` [N] are the metadata item ids."""
    root = Path(work)
    (root / "state").mkdir(exist_ok=True)
    table = _read_rows(root, shard)
    if table is None:
        return ShardLoad(
            shard, 0, 0, 0, [], None, 0, (True, True), ItemCounts.of(np.zeros(0, np.int64))
        )
    encoded = pc.dictionary_encode(table["user"]).combine_chunks()
    raw_users = len(encoded.dictionary)
    codes = pc.index_in(pc.cast(table["item"], pa.string()), value_set=meta_ids)
    absent = pc.is_null(codes)
    absent_rows = pc.sum(absent).as_py() or 0
    first_absent, absent_items = None, []
    if absent_rows:
        missing = table.filter(absent)
        row = int(np.argmin(missing["order"].to_numpy()))
        source = int(missing["source"][row].as_py()) if "source" in missing.column_names else 0
        first_absent = AbsentItem(
            int(missing["order"][row].as_py()),
            int(missing["line"][row].as_py()),
            source,
            missing["user"][row].as_py(),
            missing["item"][row].as_py(),
        )
        absent_items = pc.unique(pc.cast(missing["item"], pa.string())).to_pylist()
        table, codes = table.filter(pc.invert(absent)), codes.filter(pc.invert(absent))
        encoded = pc.dictionary_encode(table["user"]).combine_chunks()  # users with rows left
    users_u = encoded.dictionary
    digits = (True, True)
    if not pa.types.is_integer(users_u.type):
        digits = digit_ids(pc.cast(users_u, pa.string()))
    user = encoded.indices.to_numpy().astype(np.int64)
    item = codes.to_numpy().astype(np.int64)
    stamp = table["timestamp"].to_numpy()
    order = time_order(user, stamp, table["order"].to_numpy())
    user, item, stamp = user[order], item[order], stamp[order]
    _, first = np.unique(user * len(meta_ids) + item, return_index=True)
    first.sort()
    user, item, stamp = user[first], item[first], stamp[first]
    state, users_file = _state(root, shard)
    write_work_table(
        pa.table(
            {"user": user.astype(np.int32), "item": item.astype(np.int32), "timestamp": stamp}
        ),
        state,
    )
    write_work_table(pa.table({"user": users_u}), users_file)
    return ShardLoad(
        shard,
        table.num_rows + absent_rows,
        raw_users,
        absent_rows,
        absent_items,
        first_absent,
        table.num_rows - len(user),
        digits,
        ItemCounts.of(item),
    )


def time_order(user: np.ndarray, stamp: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """int64 [n]: the permutation sorting rows by (user, timestamp, rank); all int64 [n].

    The rows files hold a shard's rows in input order (rank increasing), so a sort on the one
    key user * span + timestamp, stable, breaks ties by rank already: half the cost of a
    two-key lexsort; unstable (quicksort, a quarter again) when no two rows share the key."""
    if len(user) == 0:
        return np.zeros(0, np.int64)
    low, span = int(stamp.min()), int(stamp.max()) - int(stamp.min()) + 1
    if not np.all(rank[1:] > rank[:-1]) or (int(user.max()) + 1) * span >= 1 << 62:
        return np.lexsort((rank, stamp, user))
    key = user * span + (stamp - low)
    order = np.argsort(key)
    ordered = key[order]
    if np.any(ordered[1:] == ordered[:-1]):
        return np.argsort(key, kind="stable")
    return order


def _kept(user: np.ndarray, item: np.ndarray, alive: np.ndarray, k: int) -> np.ndarray:
    """bool [n]: rows whose item is alive and whose user keeps >= k such rows."""
    keep = alive[item]
    if k <= 0:
        return keep
    while True:
        count = np.bincount(user[keep], minlength=int(user.max(initial=-1)) + 1)
        still = keep & (count[user] >= k)
        if still.sum() == keep.sum():
            return keep
        keep = still


def _load_state(work: Path, shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    state, _ = _state(work, shard)
    if not state.exists():
        return None
    table = read_work_table(state)
    return (
        table["user"].to_numpy().astype(np.int64),
        table["item"].to_numpy().astype(np.int64),
        table["timestamp"].to_numpy(),
    )


def kcore_round(shard: int, work: str, alive: np.ndarray, k: int) -> ItemCounts:
    """Step 2: events per item among the rows kept, given bool [N] `alive`."""
    loaded = _load_state(Path(work), shard)
    if loaded is None:
        return ItemCounts.of(np.zeros(0, np.int64))
    user, item, _ = loaded
    return ItemCounts.of(item[_kept(user, item, alive, k)])


def kept_users(shard: int, work: str, alive: np.ndarray, k: int) -> pa.Array | None:
    """Step 3a: raw ids of the shard's users left by the k-core, in local index order."""
    loaded = _load_state(Path(work), shard)
    if loaded is None:
        return None
    user, item, _ = loaded
    keep = _kept(user, item, alive, k)
    local = np.unique(user[keep])
    raw = read_work_table(_state(Path(work), shard)[1])["user"].combine_chunks()
    return raw.take(pa.array(local))


def write_shard(
    shard: int,
    work: str,
    out_dir: str,
    alive: np.ndarray,
    k: int,
    item_dense: np.ndarray,
    user_dense: np.ndarray | None,
    max_history: int,
    train_drop: float = 0.0,
    seed: int = 0,
) -> dict[str, int]:
    """Step 3b: the shard's Parquet parts and valid/test rows; returns its counts.

    `train_drop` and `seed`: data.train_item_drop and data.train_drop_seed.

    item_dense int64 [N] maps metadata rows to dense item ids; user_dense int64 [kept users]
    gives the dense id of each kept user in :func:`kept_users` order."""
    root, out = Path(work), Path(out_dir)
    loaded = _load_state(root, shard)
    if loaded is None or user_dense is None:
        interactions = INTERACTION_SCHEMA.empty_table()
        users = lengths = np.zeros(0, np.int64)
    else:
        user, item, stamp = loaded
        keep = _kept(user, item, alive, k)
        user, item, stamp = user[keep], item[keep], stamp[keep]
        if np.any(user[1:] < user[:-1]):
            raise RuntimeError(f"shard {shard}: load_shard left rows not grouped by user")
        counts = np.bincount(user)
        local = np.flatnonzero(counts)  # the kept users, in kept_users order
        counts = counts[local]
        by_dense = np.argsort(user_dense, kind="stable")
        users, lengths = user_dense[by_dense], counts[by_dense]
        # each user's run of rows, moved whole into dense-id order: rows keep their time order
        first = np.cumsum(lengths) - lengths
        order = np.repeat((np.cumsum(counts) - counts)[by_dense] - first, lengths)
        order += np.arange(len(user))
        raw = read_work_table(_state(root, shard)[1])["user"].combine_chunks()
        raw_row = pc.cast(raw.take(pa.array(np.repeat(local[by_dense], lengths))), pa.string())
        seq = (np.arange(len(user)) - np.repeat(first, lengths)).astype(np.int32)
        columns = [np.repeat(users, lengths), raw_row, item_dense[item[order]], stamp[order], seq]
        interactions = pa.Table.from_arrays(
            [c if isinstance(c, pa.Array) else pa.array(c) for c in columns],
            schema=INTERACTION_SCHEMA,
        )
    samples, windows = write_shard_files(
        interactions, out, shard, max_history, train_drop, seed, runs=(users, lengths)
    )
    item_col = interactions["item_id"].to_numpy()
    result = {
        "shard": shard,
        "interactions": interactions.num_rows,
        "train_samples": samples,
        "train_windows": windows,
    }
    for split in ("valid", "test"):
        table, without = eval_split(item_col, lengths, split, max_history, user_ids=users)
        folder = root / "eval" / split
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            table.cast(SAMPLE_SCHEMA),
            folder / f"{shard:05d}.parquet",
            row_group_size=EVAL_ROW_GROUP,
            use_dictionary=False,
            compression="none",  # read back once by the merge, then removed
        )
        result[f"{split}_users"] = table.num_rows
        result[f"{split}_users_without_history"] = without
    return result
