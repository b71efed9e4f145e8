"""The evaluate stage: sharded (in-process and Ray) predictions, metrics files, retries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from eval_support import NUM_ITEMS, NUM_USERS, build_run_dir, eval_config
from net_support import ListenWatch

from distributed_rec.artifacts import RunPaths
from distributed_rec.errors import ArtifactError
from distributed_rec.evaluate.metrics import METRIC_KEYS
from distributed_rec.evaluate.shards import EvalUsers, plan_shards
from distributed_rec.evaluate.stage import run_evaluate
from distributed_rec.evaluate.worker import CRASH_ONCE_ENV
from distributed_rec.report import write_results


def _predictions(run_dir: Path, split: str) -> list[tuple]:
    files = sorted(RunPaths(run_dir).predictions(split).glob("shard-*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    return sorted((r["user_id"], r["target"], tuple(r["ranked"])) for r in rows)


def test_plan_shards_deals_whole_length_sorted_batches() -> None:
    users = EvalUsers(
        user_ids=np.array([5, 3, 9, 1, 7]),
        histories=[[1, 2], [1], [1, 2, 3], [4], [2, 2]],
        targets=np.zeros(5, dtype=np.int64),
    )
    assert [s.tolist() for s in plan_shards(users, batch_size=2, num_shards=2)] == [
        [3, 1, 2],  # (length, user id): batches (1,1) (1,3) | (2,5) (2,7) | (3,9), dealt in turn
        [0, 4],
    ]
    assert len(plan_shards(users, batch_size=2, num_shards=9)) == 3  # never an empty shard


def test_in_process_shards_equal_one_shard(tmp_path: Path) -> None:
    single = eval_config(tmp_path / "one", "--evaluate.use_ray=false", "--evaluate.num_shards=1")
    sharded = eval_config(tmp_path / "three", "--evaluate.use_ray=false")
    build_run_dir(single)
    build_run_dir(sharded)
    one, three = run_evaluate(single), run_evaluate(sharded)
    assert one["test"] == three["test"] and one["valid"] == three["valid"]
    assert _predictions(tmp_path / "one", "test") == _predictions(tmp_path / "three", "test")
    assert len(list(RunPaths(tmp_path / "three").predictions("test").glob("*.parquet"))) == 3

    metrics = json.loads(RunPaths(tmp_path / "three").eval_metrics.read_text())
    assert set(METRIC_KEYS) == set(metrics["test"]) == set(metrics["valid"])
    assert set(METRIC_KEYS) == set(metrics["popularity"])
    assert metrics["users"] == {"valid": NUM_USERS, "test": NUM_USERS}
    assert metrics["users_per_s"] > 0 and metrics["decode"]["beam_size"] == 5
    assert metrics["decode"]["valid_beam_size"] == 1  # validation decodes greedily (SPEC §7)
    assert set(metrics["users_per_worker_s"]) == {"valid", "test"}
    table = RunPaths(tmp_path / "three").eval_table.read_text()
    assert "Ranked lists are the generated top-K" in table
    assert "| test (most popular) | 40 |" in table
    for _user, _target, ranked in _predictions(tmp_path / "three", "test"):
        real = [i for i in ranked if i >= 0]
        assert len(ranked) == 10 and len(set(real)) == len(real) >= 5
        assert all(0 <= i < NUM_ITEMS for i in real)

    results = write_results(sharded, [{"stage": "evaluate", "skipped": False, "seconds": 1.0}])
    ratios = results["model_vs_popularity"]
    for key in ("recall@10", "ndcg@10"):
        if metrics["popularity"][key]:
            assert ratios[key] == pytest.approx(metrics["test"][key] / metrics["popularity"][key])
    report = RunPaths(tmp_path / "three").results_md.read_text()
    assert "| test (model) | 40 |" in report and "Ranked lists are the generated top-K" in report


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    config = eval_config(tmp_path, "--evaluate.use_ray=false")
    build_run_dir(config)
    RunPaths(tmp_path).best_model.unlink()
    with pytest.raises(ArtifactError, match="model.pt is missing: run the train stage"):
        run_evaluate(config)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ray_shards_survive_a_killed_worker(tmp_path: Path, monkeypatch) -> None:
    reference = eval_config(tmp_path / "ref", "--evaluate.use_ray=false", "--evaluate.num_shards=1")
    config = eval_config(tmp_path / "ray", "--evaluate.use_ray=true", "--ray.actor_num_cpus=0.5")
    build_run_dir(reference)
    build_run_dir(config)
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(CRASH_ONCE_ENV, str(marker))
    import ray

    assert not ray.is_initialized()
    with ListenWatch() as watch:
        with_ray = run_evaluate(config)
    assert marker.exists()  # the first attempt of shard 0 died with os._exit(1)
    assert not ray.is_initialized()  # the stage stopped the instance it started
    assert {"gcs_server", "raylet"} <= watch.names(), watch.seen
    assert watch.beyond_loopback() == []  # the local instance listens on loopback only
    monkeypatch.delenv(CRASH_ONCE_ENV)
    alone = run_evaluate(reference)
    assert with_ray["test"] == alone["test"] and with_ray["valid"] == alone["valid"]
    assert _predictions(tmp_path / "ray", "valid") == _predictions(tmp_path / "ref", "valid")


def test_job_server_address_is_not_a_cluster_address(monkeypatch) -> None:
    from distributed_rec.config import RayConfig
    from distributed_rec.distributed.ray_runtime import cluster_address
    from distributed_rec.errors import DistributedRecError

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert cluster_address(RayConfig()) == "127.0.0.1:6379"  # as set by `ray job submit`
    assert cluster_address(RayConfig(address="auto")) == "auto"
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    with pytest.raises(DistributedRecError, match="job-server address"):
        cluster_address(RayConfig())
    monkeypatch.delenv("RAY_ADDRESS")
    assert cluster_address(RayConfig()) == ""
