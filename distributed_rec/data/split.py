"""Leave-one-out split (SPEC §2) on time-ordered sequences stored flat.

Legend: n events, U users, S samples, W windows, H = max_history. A user's events are
`item[starts[u] : starts[u] + lengths[u]]` in time order. Test target = last item, valid target
= second to last; training samples are every prefix of the rest (history -> next item). A sample
whose history would be empty is not produced: users with 1 event have no test sample, users with
<= 2 no valid sample, and the first event of a sequence is never a training target.

For whole-sequence training the same targets are cut into windows of at most H + 1 items: a
window's first item is context only and every later item is a target, so the windows of a user
hold each of its training targets exactly once. They are cut from the end of the training
sequence, so the most recent targets have the longest histories (H items when the user has them).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

SAMPLE_SCHEMA = pa.schema(
    [("user_id", pa.int64()), ("history", pa.list_(pa.int64())), ("target", pa.int64())]
)
WINDOW_SCHEMA = pa.schema([("user_id", pa.int64()), ("items", pa.list_(pa.int64()))])


def samples_table(
    item: np.ndarray,
    starts: np.ndarray,
    user: np.ndarray,
    position: np.ndarray,
    max_history: int,
    user_ids: np.ndarray | None = None,
) -> pa.Table:
    """One row per sample: history = up to H items before `position` of user `user`.

    item int64 [n]; starts int64 [U]; user, position int64 [S] (position >= 1);
    user_ids int64 [U] maps local user indices to the written user_id (identity when None).
    """
    hist_len = np.minimum(position, max_history)
    begin = starts[user] + position - hist_len
    offsets = np.zeros(len(user) + 1, dtype=np.int64)
    np.cumsum(hist_len, out=offsets[1:])
    flat = np.repeat(begin - offsets[:-1], hist_len) + np.arange(offsets[-1])
    history = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(item[flat]))
    written = user if user_ids is None else user_ids[user]
    target = item[starts[user] + position]
    return pa.Table.from_arrays(
        [pa.array(written, pa.int64()), history, pa.array(target, pa.int64())], schema=SAMPLE_SCHEMA
    )


def eval_split(
    item: np.ndarray,
    lengths: np.ndarray,
    split: str,
    max_history: int,
    user_ids: np.ndarray | None = None,
) -> tuple[pa.Table, int]:
    """valid or test samples of every user that has a non-empty history, and the users without
    (user_ids int64 [U] maps local user indices to the written user_id; identity when None)."""
    back = {"test": 1, "valid": 2}[split]
    starts = np.cumsum(lengths) - lengths
    users = np.flatnonzero(lengths > back)
    table = samples_table(item, starts, users, lengths[users] - back, max_history, user_ids)
    return table, int(len(lengths) - len(users))


def train_positions(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(user, position) int64 [S] of every training sample: positions 1 .. length-3."""
    count = np.maximum(lengths - 3, 0)
    user = np.repeat(np.arange(len(lengths)), count)
    first = np.cumsum(count) - count
    position = np.arange(count.sum()) - np.repeat(first, count) + 1
    return user, position


def train_chunks(
    item: np.ndarray,
    lengths: np.ndarray,
    max_history: int,
    user_ids: np.ndarray,
    max_samples: int = 1 << 20,
) -> list[pa.Table]:
    """Training samples in user order, split between users into tables of <= ~max_samples rows."""
    starts = np.cumsum(lengths) - lengths
    per_user = np.maximum(lengths - 3, 0)
    bounds = np.searchsorted(
        np.cumsum(per_user), np.arange(max_samples, per_user.sum(), max_samples)
    )
    tables = []
    for users in np.split(np.arange(len(lengths)), np.unique(bounds + 1)):
        user, position = train_positions(lengths[users])
        tables.append(
            samples_table(item, starts[users], user, position, max_history, user_ids[users])
        )
    return [t for t in tables if t.num_rows] or [SAMPLE_SCHEMA.empty_table()]


def window_bounds(lengths: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, begin, size) int64 [W] of the training windows, each user's in time order.

    A user's training sequence is its first length - 2 events; windows of at most `window`
    items overlap by one item and end at its last training event.
    """
    if window < 2:
        raise ValueError(f"a window needs at least 2 items (got {window})")
    train = np.maximum(lengths - 2, 0)
    targets = np.maximum(train - 1, 0)
    count = -(-targets // (window - 1))
    user = np.repeat(np.arange(len(lengths)), count)
    first = np.cumsum(count) - count
    from_end = np.repeat(count, count) - 1 - (np.arange(count.sum()) - np.repeat(first, count))
    end = train[user] - 1 - from_end * (window - 1)
    begin = np.maximum(end - (window - 1), 0)
    return user, begin, end - begin + 1


def windows_table(
    item: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    window: int,
    user_ids: np.ndarray,
) -> pa.Table:
    """One row per training window of the users (starts/lengths int64 [U]): user_id, items."""
    user, begin, size = window_bounds(lengths, window)
    offsets = np.zeros(len(user) + 1, dtype=np.int64)
    np.cumsum(size, out=offsets[1:])
    flat = np.repeat(starts[user] + begin - offsets[:-1], size) + np.arange(offsets[-1])
    items = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(item[flat]))
    return pa.Table.from_arrays([pa.array(user_ids[user], pa.int64()), items], schema=WINDOW_SCHEMA)


def drop_training_items(
    item: np.ndarray, lengths: np.ndarray, user_ids: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(item, lengths) with `fraction` of each user's training items dropped (MaskGR's data-
    efficiency study): of the first length - 2 events, round((1 - fraction) * n) are kept, at
    least 3 (all when there are fewer), chosen uniformly without replacement and kept in time
    order; the valid and test items (the last two) are untouched. The draw of a user depends
    only on (seed, its user_id), not on sharding or order.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction {fraction} must lie in [0, 1)")
    if fraction == 0:
        return item, lengths
    starts = np.cumsum(lengths) - lengths
    kept_items, kept_lengths = [], np.empty_like(lengths)
    for u, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        sequence = item[start : start + length]
        train = max(int(length) - 2, 0)
        keep = min(train, max(3, int(round((1 - fraction) * train))))
        rng = np.random.default_rng([seed, int(user_ids[u])])
        chosen = np.sort(rng.choice(train, size=keep, replace=False))
        kept_items.append(np.concatenate([sequence[:train][chosen], sequence[train:]]))
        kept_lengths[u] = keep + (length - train)
    flat = np.concatenate(kept_items) if kept_items else item[:0]
    return flat.astype(item.dtype, copy=False), kept_lengths
