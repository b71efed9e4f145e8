"""`ray job submit --working-dir . -- python -m distributed_rec evaluate` on a local cluster.

The test starts its own head node (`ray start --head --block` in a new process group, with its
own ports and temp dir) and stops exactly that process group; `ray stop` would stop every Ray
instance on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import ray
from eval_support import NUM_USERS, build_run_dir, eval_config, eval_overrides

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import RayConfig
from distributed_rec.distributed.ray_runtime import ray_connection

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _wait_for_dashboard(url: str, head: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5):
                return
        except urllib.error.HTTPError as err:
            if err.code == 401:  # up, and asking for the cluster's token: the clients have it
                return
            time.sleep(1)
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"the Ray dashboard at {url} did not come up in {timeout} s")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_ray_job_submit_runs_the_evaluate_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = eval_config(tmp_path / "run")
    build_run_dir(config)
    gcs, dashboard, *others = _free_ports(9)
    temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # unix socket paths must be short
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` of this venv
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        # Ray 2.60 enables token authentication on new clusters; with RAY_AUTH_MODE=token the
        # head and the `ray job` client both use the token in ~/.ray/auth_token.
        "RAY_AUTH_MODE": "token",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("RAY_ADDRESS", None)
    head_log = tmp_path / "ray-start.log"
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--include-dashboard=true",
            "--num-cpus=2",
            f"--temp-dir={temp_dir}",
            f"--ray-client-server-port={others[0]}",
            f"--dashboard-agent-listen-port={others[1]}",
            f"--dashboard-agent-grpc-port={others[2]}",
            f"--runtime-env-agent-port={others[3]}",
            f"--metrics-export-port={others[4]}",
            f"--node-manager-port={others[5]}",
            f"--object-manager-port={others[6]}",
        ],  # fmt: skip
        env=env,
        cwd=tmp_path,
        start_new_session=True,
        stdout=head_log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        try:
            _wait_for_dashboard(url, head, timeout=180)
        except (RuntimeError, TimeoutError) as err:
            raise AssertionError(f"{err}\n{head_log.read_text()[-3000:]}") from None
        submit = subprocess.run(
            [
                str(BIN / "ray"),
                "job",
                "submit",
                "--address",
                url,
                "--working-dir",
                str(REPO_ROOT),
                "--",
                "python",
                "-m",
                "distributed_rec",
                "evaluate",
                *eval_overrides(config.run_dir),
            ],  # fmt: skip
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        assert "succeeded" in submit.stdout
        # A stage without a configured address starts its own instance beside this running
        # cluster; plain ray.init() would find the cluster's gcs_server and join it.
        with ray_connection(RayConfig(num_cpus=1)) as mode:
            assert mode == "started"
            assert ray.get_runtime_context().gcs_address != f"127.0.0.1:{gcs}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
    metrics = json.loads(RunPaths(tmp_path / "run").eval_metrics.read_text())
    assert metrics["users"] == {"valid": NUM_USERS, "test": NUM_USERS}
    assert metrics["use_ray"] is True and metrics["num_shards"] == 6
