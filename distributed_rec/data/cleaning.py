"""Cleaning (SPEC §2): items without metadata, dense ids, chronological order with an input-order
tie-break, duplicate (user, item) removal keeping the first, iterative k-core.

Legend: n interactions, U users, N items. Dense ids follow the sorted raw ids (numerically when
every raw id is an integer, else lexicographically), so they do not depend on input order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distributed_rec.data.raw import RawData


@dataclass
class Cleaned:
    """Cleaned interactions grouped by user, each user's events in time order."""

    user: np.ndarray
    """int64 [n]: dense user id 0..U-1, non-decreasing."""
    item: np.ndarray
    """int64 [n]: dense item id 0..N-1."""
    timestamp: np.ndarray
    """int64 [n]."""
    seq: np.ndarray
    """int32 [n]: position of the event in its user's sequence."""
    user_ids: pa.Array
    """string [U]: raw id of each dense user id."""
    item_ids: pa.Array
    """string [N]: raw id of each dense item id."""
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def lengths(self) -> np.ndarray:
        """int64 [U]: events per user."""
        return np.bincount(self.user, minlength=len(self.user_ids))


def sorted_ids(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Distinct values in id order: numeric when all are integers (or digit strings)."""
    unique = pc.unique(column)
    if pa.types.is_integer(unique.type):
        return unique.take(pc.sort_indices(unique))
    unique = pc.cast(unique, pa.string())
    if len(unique) and pc.all(pc.utf8_is_digit(unique)).as_py():
        try:
            numbers = pc.cast(unique, pa.int64())
        except pa.ArrowInvalid:  # more digits than int64 holds
            return unique.take(pc.sort_indices(unique))
        keys = pa.table({"n": numbers, "s": unique})
        return unique.take(pc.sort_indices(keys, [("n", "ascending"), ("s", "ascending")]))
    return unique.take(pc.sort_indices(unique))


def digit_ids(unique: pa.Array) -> tuple[bool, bool]:
    """(every id is a digit string, every id fits int64) of distinct string ids: the facts
    :func:`sorted_ids` decides its order on, computable part by part and combined with `and`."""
    if len(unique) == 0:
        return True, True
    if not pc.all(pc.utf8_is_digit(unique)).as_py():
        return False, True
    try:
        pc.cast(unique, pa.int64())
    except pa.ArrowInvalid:
        return True, False
    return True, True


def id_order(ids: pa.Array, numeric: bool) -> np.ndarray:
    """int64 [len(ids)]: the indices that sort distinct `ids` in :func:`sorted_ids` order, with
    the numeric decision (all ids digits and within int64, over the whole column) given."""
    if pa.types.is_integer(ids.type):
        return pc.sort_indices(ids).to_numpy()
    if numeric and len(ids):
        keys = pa.table({"n": pc.cast(ids, pa.int64()), "s": ids})
        return pc.sort_indices(keys, [("n", "ascending"), ("s", "ascending")]).to_numpy()
    return pc.sort_indices(ids).to_numpy()


def encode(column: pa.ChunkedArray, ids: pa.Array) -> np.ndarray:
    """int64 [n]: index of each value of `column` in `ids`."""
    if pa.types.is_integer(column.type) != pa.types.is_integer(ids.type):
        column = pc.cast(column, ids.type)
    codes = pc.index_in(column, value_set=ids)
    return codes.to_numpy().astype(np.int64)


def drop_duplicates(user: np.ndarray, item: np.ndarray, num_items: int) -> np.ndarray:
    """bool [n]: False for a (user, item) pair seen earlier in the given (chronological) order."""
    _, first = np.unique(user * num_items + item, return_index=True)
    keep = np.zeros(len(user), dtype=bool)
    keep[first] = True
    return keep


def kcore(user: np.ndarray, item: np.ndarray, k: int) -> np.ndarray:
    """bool [n]: events kept by iterative k-core (every kept user and item has >= k events)."""
    keep = np.ones(len(user), dtype=bool)
    if k <= 0:
        return keep
    while True:
        user_count = np.bincount(user[keep], minlength=int(user.max(initial=-1)) + 1)
        item_count = np.bincount(item[keep], minlength=int(item.max(initial=-1)) + 1)
        still = keep & (user_count[user] >= k) & (item_count[item] >= k)
        if still.sum() == keep.sum():
            return keep
        keep = still


def compact(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept codes in increasing order, codes renumbered 0..K-1 keeping their order) in O(n)."""
    present = np.bincount(codes, minlength=size) > 0
    renumber = np.cumsum(present) - 1
    return np.flatnonzero(present), renumber[codes]


def clean(raw: RawData, kcore_k: int) -> Cleaned:
    """Order, de-duplicate and k-core the interactions of `raw` (already checked for metadata)."""
    table = raw.interactions
    user_ids, item_ids = sorted_ids(table["user"]), sorted_ids(table["item"])
    user = encode(table["user"], user_ids)
    item = encode(table["item"], item_ids)
    stamp = table["timestamp"].to_numpy()
    order = np.lexsort((stamp, user))  # stable: equal timestamps keep the input order
    user, item, stamp = user[order], item[order], stamp[order]

    unique = drop_duplicates(user, item, len(item_ids))
    user, item, stamp = user[unique], item[unique], stamp[unique]
    core = kcore(user, item, kcore_k)
    dropped = {"duplicate": int((~unique).sum()), "kcore": int((~core).sum())}
    user, item, stamp = user[core], item[core], stamp[core]

    kept_users, user = compact(user, len(user_ids))
    kept_items, item = compact(item, len(item_ids))
    starts = np.searchsorted(user, np.arange(len(kept_users)))
    seq = (np.arange(len(user)) - starts[user]).astype(np.int32)
    return Cleaned(
        user=user.astype(np.int64),
        item=item.astype(np.int64),
        timestamp=stamp,
        seq=seq,
        user_ids=pc.cast(user_ids.take(pa.array(kept_users)), pa.string()),
        item_ids=pc.cast(item_ids.take(pa.array(kept_items)), pa.string()),
        dropped=dropped,
    )
