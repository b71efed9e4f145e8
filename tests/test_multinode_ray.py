"""A Ray cluster of a head and two worker nodes on this machine (`ray.cluster_utils.Cluster`,
every node on 127.0.0.1 with its own CPUs; the head has none, so work lands on the workers):
Ray Train places its two workers on two nodes and trains as one process does; evaluation
shards run on both nodes, and when a worker node is removed mid-evaluation its shards are
retried on the survivors and the merged metrics equal an in-process run."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from cluster_support import final_weights
from eval_support import build_run_dir, eval_config
from train_support import make_tiny_run, tiny_config

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import config_from_dict, replace_section
from distributed_rec.evaluate.stage import run_evaluate
from distributed_rec.evaluate.worker import ATTEMPTS_ENV
from distributed_rec.train.stage import run_train

pytestmark = pytest.mark.slow
STEPS = ("--train.max_steps=3", "--train.zero_stage=2")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    loopback = {"node_ip_address": "127.0.0.1", "include_dashboard": False}
    attempts = tmp_path_factory.mktemp("shard_attempts")
    cluster = Cluster(initialize_head=True, head_node_args={**loopback, "num_cpus": 0})
    workers = [cluster.add_node(**loopback, num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    # ray.init rewrites a 127.0.0.1 address to the machine's address unless Ray runs in
    # single-machine mode (read at import, hence patched here; as start_local_ray does)
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address=cluster.address, runtime_env={"env_vars": {ATTEMPTS_ENV: str(attempts)}})
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
    try:
        yield cluster, workers, attempts
    finally:
        ray.shutdown()
        cluster.shutdown()


def _worker_node_ids(workers) -> set[str]:
    return {node.node_id for node in workers}


@pytest.mark.timeout(300)
def test_ray_train_workers_on_two_nodes_match_one_process(tmp_path, cluster):
    _, workers, _ = cluster
    single = make_tiny_run(tmp_path / "single")
    reference = run_train(tiny_config(single.root, *STEPS))
    paths = make_tiny_run(tmp_path / "ray")
    config = tiny_config(
        paths.root, *STEPS, "--train.launcher=ray", "--train.num_procs=2",
        "--ray.actor_num_cpus=1",
    )  # fmt: skip
    summary = run_train(config)
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert summary["last_loss"] == pytest.approx(reference["last_loss"], rel=1e-5)
    expected = final_weights(single)
    for name, tensor in final_weights(paths).items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-4, atol=1e-5)
    nodes = json.loads(paths.train_metrics.read_text())["ray_worker_nodes"]
    assert set(nodes.values()) == _worker_node_ids(workers)  # one rank on each worker node


@pytest.mark.timeout(300)
def test_worker_node_removed_mid_evaluation(tmp_path, cluster):
    """Shard attempts wait a second each (ATTEMPTS_ENV); once one runs on the victim node, the
    node is removed without a graceful drain, as a lost machine would be."""
    the_cluster, workers, attempts = cluster
    config = eval_config(tmp_path / "run", "--evaluate.num_shards=4", "--ray.actor_num_cpus=1")
    build_run_dir(config)
    in_process = tmp_path / "in_process"
    shutil.copytree(config.run_dir, in_process)
    expected = run_evaluate(
        config_from_dict(
            {**replace_section(config, "evaluate", use_ray=False).to_dict(),
             "run_dir": str(in_process)}
        )
    )  # fmt: skip

    import ray

    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < 2:  # the last test's workers are gone
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.2)
    outcome: dict[str, object] = {}

    def evaluate() -> None:
        try:
            outcome["result"] = run_evaluate(config)
        except BaseException as err:  # noqa: BLE001 - reported by the test thread below
            outcome["error"] = err

    thread = threading.Thread(target=evaluate, daemon=True)
    thread.start()
    by_id = {node.node_id: node for node in workers}
    deadline = time.monotonic() + 150
    while not (started := [p for p in attempts.iterdir() if p.name.split("-")[-1] in by_id]):
        assert thread.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.05)
    victim = started[0].name.split("-")[-1]  # the node of the first shard attempt
    (survivor,) = set(by_id) - {victim}
    the_cluster.remove_node(by_id[victim], allow_graceful=False)
    thread.join(timeout=180)
    assert not thread.is_alive() and "error" not in outcome, outcome
    result = outcome["result"]
    for split in ("valid", "test"):
        assert result[split] == expected[split]  # merged metrics equal, exactly

    metrics = json.loads(RunPaths(Path(config.run_dir)).eval_metrics.read_text())
    tried_on_victim = {
        tuple(p.name.split("-")[:2]) for p in attempts.iterdir() if p.name.endswith(victim)
    }
    plan = [(split, f"{shard:05d}") for split in ("valid", "test") for shard in range(4)]
    finished_on = dict(zip(plan, metrics["shard_nodes"], strict=True))
    retried = [key for key in tried_on_victim if finished_on[key] == survivor]
    assert retried, (tried_on_victim, finished_on)  # a shard cut off on the victim, redone
    assert set(metrics["shard_nodes"]) <= {victim, survivor}
