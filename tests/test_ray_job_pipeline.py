"""The whole debug pipeline through `launcher/submit_ray_job.sh` (`ray job submit --working-dir
. -- python -m distributed_rec run --ray.address=auto`) on a head and two worker nodes of
`ray.cluster_utils.Cluster` on this machine (every node on 127.0.0.1 with its own CPUs; the head
has none, so work lands on the workers): prepare's tasks, embed's actors and the evaluation
shards ran on both worker nodes, as their stage summaries record, and nothing listened beyond
loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from net_support import ListenWatch

from distributed_rec.artifacts import RunPaths

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FAST = (
    "--train.max_steps=2",  # the recipe's 3 epochs take ~1 min on 2 loaded cores
    "--embed.concurrency=2",  # one embedding actor per worker node
    "--embed.batch_size=32",  # 4 blocks of the 120 items for the 2 actors
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _submit(url: str, *args: str) -> subprocess.CompletedProcess:
    """launcher/submit_ray_job.sh with `args`; re-submitted while the job server has no job
    agent yet (the head's agent registers some seconds after the node; no job was started)."""
    deadline = time.monotonic() + 90
    while True:
        submit = subprocess.run(
            [str(REPO_ROOT / "launcher" / "submit_ray_job.sh"), *args],
            env={**os.environ, "RAY_ADDRESS": url, "RUNTIME_ENV": ""},
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=480,
        )  # fmt: skip
        if "No available agent" not in submit.stderr or time.monotonic() > deadline:
            return submit
        time.sleep(2)


@pytest.fixture
def job_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, set[str], Path]]:
    """(job server URL, worker node ids, head's log folder) of a head with the dashboard and
    no CPUs and two worker nodes of 2 CPUs each (room for an embedding actor beside a Ray Data
    read task)."""
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # unix socket paths must be short
    # Ray's session folders and the cluster's address file go to <temp>/ray: in /tmp/ray, a
    # plain ray.init() of someone else on this machine would join this cluster
    monkeypatch.setenv("RAY_TMPDIR", temp)
    # inherited by the job's driver and workers: Ray's single-machine mode keeps 127.0.0.1
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")  # `python`
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    port = _free_port()
    loopback = {"node_ip_address": "127.0.0.1"}
    cluster = Cluster(
        initialize_head=True,
        # the head's agent (which runs the job's driver) would listen on Ray's fixed 52365,
        # taken whenever another Ray instance runs on this machine: the job server then
        # answers "No available agent" for good
        head_node_args={**loopback, "num_cpus": 0, "include_dashboard": True,
                        "dashboard_host": "127.0.0.1", "dashboard_port": port,
                        "dashboard_agent_listen_port": _free_port()},
    )  # fmt: skip
    try:
        # each node its own folder, as on separate machines: every node's runtime-env agent
        # unpacks the job's working dir anew (replacing the folder the driver runs in if shared)
        workers = [
            cluster.add_node(**loopback, num_cpus=2, temp_dir=f"{temp}/w{i}") for i in range(2)
        ]
        cluster.wait_for_nodes()
        logs = Path(temp, "ray", "session_latest", "logs")
        yield f"http://127.0.0.1:{port}", {node.node_id for node in workers}, logs
    finally:
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.timeout(600)
def test_ray_job_submit_runs_the_pipeline_on_two_worker_nodes(
    tmp_path: Path, job_cluster: tuple[str, set[str], Path]
) -> None:
    url, workers, logs = job_cluster
    run_dir = tmp_path / "run"
    started = time.monotonic()
    with ListenWatch(interval=1.0) as watch:
        submit = _submit(url, "run", "--config=debug", f"--run_dir={run_dir}", *FAST)
    seconds = time.monotonic() - started
    agent_log = logs / "dashboard_agent.log"
    assert submit.returncode == 0, (
        submit.stdout[-6000:] + submit.stderr[-3000:]
        + (agent_log.read_text()[-3000:] if agent_log.exists() else "no agent log")
    )  # fmt: skip
    assert "succeeded" in submit.stdout
    assert watch.seen and watch.beyond_loopback() == []

    paths = RunPaths(run_dir)
    stages = {s["stage"]: s for s in json.loads(paths.results_json.read_text())["stages"]}
    assert all(not s["skipped"] for s in stages.values()), stages
    task_nodes = json.loads(paths.prepare_stats.read_text())["task_nodes"]
    assert task_nodes == stages["prepare"]["task_nodes"]
    prepare_nodes = {node for step in task_nodes.values() for node in step}
    embed_nodes = stages["embed"]["actor_nodes"]
    shard_nodes = json.loads(paths.eval_metrics.read_text())["shard_nodes"]
    times = {name: round(stage["seconds"], 1) for name, stage in stages.items()}
    print(f"pipeline job: {seconds:.1f} s, stages {times}; prepare {task_nodes}; "
          f"embed {embed_nodes}; shards {shard_nodes}")  # fmt: skip
    assert prepare_nodes == workers  # prepare's tasks ran on both worker nodes, none elsewhere
    assert set(embed_nodes) == workers
    assert sum(embed_nodes.values()) == stages["embed"]["num_items"]
    assert set(shard_nodes) == workers
