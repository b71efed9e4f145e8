"""`evaluate.max_users`: a seeded, order-preserving sample of a split's users."""

import numpy as np

from distributed_rec.config import EvaluateConfig
from distributed_rec.evaluate.shards import EvalUsers
from distributed_rec.evaluate.stage import sample_users


def _users(n: int) -> EvalUsers:
    return EvalUsers(np.arange(n) * 10, [[i] for i in range(n)], np.arange(n) + 100)


def test_zero_or_large_limit_keeps_every_user():
    users = _users(5)
    assert sample_users(users, EvaluateConfig(max_users=0)) is users
    assert sample_users(users, EvaluateConfig(max_users=5)) is users


def test_sample_is_seeded_sorted_and_consistent():
    users = _users(100)
    first = sample_users(users, EvaluateConfig(max_users=7, sample_seed=3))
    again = sample_users(users, EvaluateConfig(max_users=7, sample_seed=3))
    other = sample_users(users, EvaluateConfig(max_users=7, sample_seed=4))
    assert len(first) == 7
    np.testing.assert_array_equal(first.user_ids, again.user_ids)
    assert not np.array_equal(first.user_ids, other.user_ids)
    assert np.all(np.diff(first.user_ids) > 0)
    rows = first.user_ids // 10
    np.testing.assert_array_equal(first.targets, rows + 100)
    assert first.histories == [[int(r)] for r in rows]
