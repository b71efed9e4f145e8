"""A synthetic interaction log for scale tests: users with log-normal sequence lengths, items
with Zipfian popularity inside topics, user preferences drifting between neighbouring topics, and
item text drawn from a topic vocabulary. Fully determined by data.synthetic_seed; generated in
chunks of users with vectorised numpy (10M interactions in seconds).

Legend: U users, I items, C topics, n interactions of one chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from distributed_rec.config import DataConfig
from distributed_rec.data.issues import Issues
from distributed_rec.data.raw import RawData

CHUNK_USERS = 1 << 16
DRIFT = 0.1
"""Probability that a user's next interaction moves to a neighbouring topic."""
START_TIME = 1_500_000_000
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "fu", "gi",
              "ha", "jo", "ly", "mo", "ni", "qu", "we")  # fmt: skip


def num_topics(num_items: int) -> int:
    return max(1, min(50, num_items // 20))


def _segment_cumsum(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each segment: int64 [n] for segments of `lengths` [u]."""
    total = np.cumsum(values)
    starts = np.cumsum(lengths) - lengths
    before = total[starts] - values[starts]
    return total - np.repeat(before, lengths)


def _user_plan(config: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sequence lengths int64 [U] summing to synthetic_interactions, start topics [U], starts [U]."""
    users, total = config.synthetic_users, config.synthetic_interactions
    rng = np.random.default_rng([config.synthetic_seed, 0])
    weights = rng.lognormal(0.0, 1.0, users)
    floor = max(1, min(5, total // users))
    lengths = floor + rng.multinomial(max(0, total - floor * users), weights / weights.sum())
    if lengths.sum() > total:  # fewer interactions than users: the first `total` users get one
        lengths = (np.arange(users) < total).astype(np.int64)
    topics = rng.integers(0, num_topics(config.synthetic_items), users)
    starts = START_TIME + rng.integers(0, 3 * 365 * 86400, users)
    return lengths.astype(np.int64), topics, starts


def generate_chunks(config: DataConfig, chunks: range | None = None) -> Iterator[pa.Table]:
    """Tables of user int64, item int64, timestamp int64 in user order, one per user chunk of
    `chunks` (default: all; chunk c holds users c * CHUNK_USERS ..)."""
    lengths, start_topic, start_time = _user_plan(config)
    items, topics = config.synthetic_items, num_topics(config.synthetic_items)
    per_topic = (items - np.arange(topics) + topics - 1) // topics  # items of topic t: t, t+C, ..
    ranks = np.arange(1, int(per_topic.max()) + 1, dtype=np.float64)
    cdf = np.cumsum(ranks**-config.synthetic_zipf)
    cdf /= cdf[-1]
    if chunks is None:
        chunks = range(-(-config.synthetic_users // CHUNK_USERS))
    for chunk in chunks:
        first = chunk * CHUNK_USERS
        rng = np.random.default_rng([config.synthetic_seed, 1, chunk])
        lens = lengths[first : first + CHUNK_USERS]
        users = np.repeat(np.arange(first, first + len(lens)), lens)
        n = len(users)
        steps = rng.choice(np.array([-1, 0, 1]), size=n, p=[DRIFT / 2, 1 - DRIFT, DRIFT / 2])
        topic = (start_topic[users] + _segment_cumsum(steps, lens)) % topics
        rank = np.minimum(np.searchsorted(cdf, rng.random(n)), per_topic[topic] - 1)
        item = rank * topics + topic
        gaps = rng.integers(0, 3, n) * 86400  # a gap of 0 days gives timestamp ties
        stamps = start_time[users] + _segment_cumsum(gaps, lens)
        yield pa.table({"user": users, "item": item, "timestamp": stamps.astype(np.int64)})


def generate_items(config: DataConfig) -> pa.Table:
    """Item metadata: title, description, categories, brand from a topic vocabulary."""
    rng = np.random.default_rng([config.synthetic_seed, 2])
    vocabulary = np.array(
        [a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in ("n", "r", "")]
    )
    topics = num_topics(config.synthetic_items)
    pools = rng.choice(len(vocabulary), size=(topics, 40))  # words of each topic
    names = [" ".join(vocabulary[pools[t, :2]]).title() for t in range(topics)]
    brands = [vocabulary[i].title() + " Co" for i in rng.choice(len(vocabulary), 50)]
    count = config.synthetic_items
    topic = np.arange(count) % topics
    title_words = vocabulary[pools[topic[:, None], rng.integers(0, 40, (count, 3))]]
    desc_words = vocabulary[pools[topic[:, None], rng.integers(0, 40, (count, 12))]]
    brand = rng.integers(0, len(brands), count)
    return pa.table(
        {
            "item": pa.array(np.arange(count, dtype=np.int64)),
            "title": [" ".join(w).title() + f" {i}" for i, w in enumerate(title_words.tolist())],
            "description": [" ".join(w) + "." for w in desc_words.tolist()],
            "categories": [f"Synthetic, {names[t]}" for t in topic.tolist()],
            "brand": [brands[b] for b in brand.tolist()],
        }
    )


def read_synthetic(config: DataConfig) -> RawData:
    interactions = pa.concat_tables(generate_chunks(config)).combine_chunks()
    source = Path("<synthetic>")
    return RawData(
        interactions, generate_items(config), source, source, Issues("strict"), Issues("strict")
    )
