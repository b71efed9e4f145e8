"""A Ray cluster of a head and two worker nodes on this machine (`ray.cluster_utils.Cluster`,
every node on 127.0.0.1 with its own CPUs; the head has none, so work lands on the workers):
Ray Train places its two workers on two nodes and trains as one process does; evaluation
shards run on both nodes, and when a worker node is removed mid-evaluation its shards are
retried on the survivors and the merged metrics equal an in-process run; when one is removed
mid-prepare, its tasks are retried on the survivor and the output equals an undisturbed run."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
import pytest
import torch
from cluster_support import final_weights
from eval_support import build_run_dir, eval_config
from train_support import make_tiny_run, tiny_config

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import config_from_dict, load_config, replace_section
from distributed_rec.data.prepare import run_prepare
from distributed_rec.data.tasks import ATTEMPTS_ENV as TASK_ATTEMPTS_ENV
from distributed_rec.evaluate.stage import run_evaluate
from distributed_rec.evaluate.worker import ATTEMPTS_ENV
from distributed_rec.train.stage import run_train

pytestmark = pytest.mark.slow
STEPS = ("--train.max_steps=3", "--train.zero_stage=2")
LOOPBACK = {"node_ip_address": "127.0.0.1", "include_dashboard": False}


@dataclass
class RayTestCluster:
    """The module's cluster, its live worker nodes and the test hooks' folders."""

    cluster: Any  # ray.cluster_utils.Cluster
    workers: list[Any]  # ray._private.node.Node of the worker nodes not removed
    shard_attempts: Path
    """evaluate's ATTEMPTS_ENV folder: every shard attempt names its node there."""
    task_attempts: Path
    """prepare's ATTEMPTS_ENV folder (absent unless a test creates it): task attempts name
    their step, process and node there, and wait while `hold-<step>` exists."""

    def node_ids(self) -> set[str]:
        return {node.node_id for node in self.workers}

    def remove(self, node_id: str) -> None:
        """Remove a worker node without a graceful drain, as a lost machine would be."""
        (node,) = [n for n in self.workers if n.node_id == node_id]
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def two_workers(self) -> None:
        """Add worker nodes until there are two (an earlier test removed one), then wait
        until both are idle (an earlier test's workers may still hold CPUs)."""
        import ray

        while len(self.workers) < 2:
            self.workers.append(self.cluster.add_node(**LOOPBACK, num_cpus=1))
        self.cluster.wait_for_nodes()
        _wait_for(lambda: ray.available_resources().get("CPU", 0) >= 2, 60, "2 free CPUs")


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    shard_attempts = tmp_path_factory.mktemp("shard_attempts")
    task_attempts = tmp_path_factory.mktemp("task_hook") / "attempts"  # created to arm it
    cluster = Cluster(initialize_head=True, head_node_args={**LOOPBACK, "num_cpus": 0})
    workers = [cluster.add_node(**LOOPBACK, num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    # ray.init rewrites a 127.0.0.1 address to the machine's address unless Ray runs in
    # single-machine mode (read at import, hence patched here; as start_local_ray does)
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    hooks = {ATTEMPTS_ENV: str(shard_attempts), TASK_ATTEMPTS_ENV: str(task_attempts)}
    try:
        ray.init(address=cluster.address, runtime_env={"env_vars": hooks})
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
    try:
        yield RayTestCluster(cluster, workers, shard_attempts, task_attempts)
    finally:
        ray.shutdown()
        cluster.shutdown()


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run fn() in a daemon thread; its result or exception lands in the returned dict."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _first_attempt_on(
    folder: Path, nodes: set[str], prefix: str, thread, outcome
) -> tuple[str, int]:
    """(node, process id) of the first attempt file `<prefix>...-<pid>-[<ns>-]<node>` in
    `folder` on one of `nodes` (waited for while `thread` runs)."""
    deadline = time.monotonic() + 150
    while True:
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        started = [n for n in names if n.startswith(prefix) and n.split("-")[-1] in nodes]
        if started:
            parts = started[0].split("-")
            return parts[-1], int(parts[-2] if prefix == "" else parts[-3])
        assert thread.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.05)


@pytest.mark.timeout(300)
def test_ray_train_workers_on_two_nodes_match_one_process(tmp_path, cluster):
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
    assert set(nodes.values()) == cluster.node_ids()  # one rank on each worker node


@pytest.mark.timeout(300)
def test_worker_node_removed_mid_evaluation(tmp_path, cluster):
    """Shard attempts wait a second each (ATTEMPTS_ENV); once one runs on the victim node, the
    node is removed without a graceful drain, as a lost machine would be."""
    attempts = cluster.shard_attempts
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

    cluster.two_workers()  # the last test's workers are gone
    nodes = cluster.node_ids()
    thread, outcome = _in_thread(lambda: run_evaluate(config))
    victim, _ = _first_attempt_on(attempts, nodes, "", thread, outcome)  # of the first shard
    (survivor,) = nodes - {victim}
    cluster.remove(victim)
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


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _prepare_outputs(root: Path) -> dict[str, Any]:
    """Every table under `root`/prepare, and stats.json without its timings and nodes."""
    prepare = RunPaths(root).stage_dir("prepare")
    tables: dict[str, Any] = {
        str(p.relative_to(prepare)): pq.read_table(p) for p in sorted(prepare.rglob("*.parquet"))
    }
    stats = json.loads(RunPaths(root).prepare_stats.read_text())
    tables["stats"] = {k: v for k, v in stats.items() if k not in ("seconds", "task_nodes")}
    return tables


@pytest.mark.timeout(300)
def test_worker_node_removed_mid_prepare(tmp_path, cluster):
    """Prepare's write tasks are held at their start (the hook's `hold-write_shard`); the node
    of the first is removed without a graceful drain, and once that task's process is gone the
    hold is lifted. Ray re-runs the lost task on the survivor (max_retries), and the output
    equals an undisturbed run's."""
    cluster.two_workers()
    reference = run_prepare(load_config("debug", [f"--run_dir={tmp_path / 'reference'}"]))
    assert len(reference["task_nodes"]["write_shard"]) == 2  # SPREAD: one on each node
    config = load_config("debug", [f"--run_dir={tmp_path / 'run'}"])
    nodes = cluster.node_ids()
    cluster.task_attempts.mkdir()
    hold = cluster.task_attempts / "hold-write_shard"
    hold.touch()
    try:
        thread, outcome = _in_thread(lambda: run_prepare(config))
        victim, pid = _first_attempt_on(
            cluster.task_attempts, nodes, "write_shard-", thread, outcome
        )
        (survivor,) = nodes - {victim}
        cluster.remove(victim)
        removed = time.monotonic()
        _wait_for(lambda: not _running(pid), 30, f"end of the cut-off task's process {pid}")
        gone = time.monotonic() - removed
        hold.unlink()
        thread.join(timeout=180)
        finished = time.monotonic() - removed
    finally:
        shutil.rmtree(cluster.task_attempts)
    assert not thread.is_alive() and "error" not in outcome, outcome
    task_nodes = outcome["result"]["task_nodes"]
    assert task_nodes["write_shard"] == {survivor: 2}  # the cut-off write redone there
    assert task_nodes["merge_eval_split"] == {survivor: 2}
    assert _prepare_outputs(tmp_path / "run") == _prepare_outputs(tmp_path / "reference")
    print(f"prepare: task process gone {gone:.2f} s and prepare done {finished:.1f} s after "
          f"the node removal; {task_nodes}")  # fmt: skip
    left = [p.name for p in (tmp_path / "run").iterdir()] + [
        p.name for p in RunPaths(tmp_path / "run").stage_dir("prepare").iterdir()
    ]
    assert "_prepare_work" not in left and "_staging" not in left
