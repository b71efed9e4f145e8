"""On one machine nothing the project starts listens beyond loopback: the local Ray instance of
a stage (gcs_server, raylet, workers, agents) and torch.distributed's store. Training with two
processes (deepspeed launcher, Ray Train) is checked in test_train_distributed.py, the Ray
evaluation in test_evaluate.py."""

from __future__ import annotations

import os
import socket

import psutil
import pytest
from data_support import write_table
from net_support import ListenWatch

from distributed_rec.config import load_config
from distributed_rec.distributed import loopback
from distributed_rec.distributed.loopback import is_loopback, loopback_store


def test_the_watch_sees_a_socket_listening_on_all_interfaces():
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen()
        port = server.getsockname()[1]
        watch = ListenWatch()
        watch.sample()
    assert [s for s in watch.beyond_loopback() if s[2] == port] == [
        (psutil.Process().name(), "0.0.0.0", port)
    ]


@pytest.mark.parametrize(
    ("ip", "expected"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("::ffff:127.0.0.1", True),
     ("0.0.0.0", False), ("::", False), ("192.0.2.2", False), ("::ffff:192.0.2.2", False)],
)  # fmt: skip
def test_is_loopback(ip, expected):
    assert is_loopback(ip) is expected


def test_the_store_of_a_world_of_one_listens_on_loopback_only():
    watch = ListenWatch()
    store = loopback_store("127.0.0.1", 0, 0, 1)
    store.set("k", "v")
    watch.sample()
    assert store.get("k") == b"v"
    assert watch.seen and watch.beyond_loopback() == []
    del store


def test_a_multi_node_launch_drops_the_loopback_interface_choices(monkeypatch):
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "")  # restored (unset) after the test
    monkeypatch.delenv("GLOO_SOCKET_IFNAME")
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "eth7")  # the user's choice is kept
    monkeypatch.setattr(loopback, "_SET_HERE", {})
    loopback.keep_collectives_on_loopback()
    assert loopback.loopback_interface() == "lo"  # Linux
    assert os.environ["GLOO_SOCKET_IFNAME"] == "lo" and os.environ["NCCL_SOCKET_IFNAME"] == "eth7"
    environment = loopback.without_loopback_choices(dict(os.environ))
    assert "GLOO_SOCKET_IFNAME" not in environment and environment["NCCL_SOCKET_IFNAME"] == "eth7"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_prepare_starts_ray_on_loopback_only(tmp_path):
    import ray

    from distributed_rec.data.prepare import run_prepare

    assert not ray.is_initialized()  # the stage starts its own local instance
    write_table(tmp_path / "raw")
    args = [f"--run_dir={tmp_path / 'run'}", "--data.format=table", "--data.kcore=0",
            f"--data.path={tmp_path / 'raw'}", "--ray.num_cpus=1"]  # fmt: skip
    with ListenWatch() as watch:
        run_prepare(load_config(None, args))
    assert not ray.is_initialized()
    assert {"gcs_server", "raylet"} <= watch.names(), watch.seen
    assert watch.beyond_loopback() == []
