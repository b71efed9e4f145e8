"""Training across two "nodes" on one machine, started the way a cluster scheduler starts them
(one launcher per node with its node rank, master on 127.0.0.1): the `deepspeed` launcher in its
no-ssh mode and `torchrun --nnodes=2`, through the scripts in launcher/. Each gives the loss and
weights of one node with two processes, bitwise: the ranks, their shares and the gloo
collectives are the same, only the processes' parents differ."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from cluster_support import (
    REPO_ROOT,
    assert_same_weights,
    final_weights,
    launcher_env,
    processes_mentioning,
    wait_until_gone,
)
from train_support import make_tiny_run, tiny_config, tiny_overrides

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import save_config
from distributed_rec.distributed.env import free_port
from distributed_rec.train.faults import KILL_RANK_ENV
from distributed_rec.train.stage import run_train

STEPS = ("--train.max_steps=8", "--train.zero_stage=2", "--train.checkpoint_every_steps=1")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_node_two_procs(tmp_path_factory):
    """The reference: the deepspeed launcher with 2 processes on one node."""
    paths = make_tiny_run(tmp_path_factory.mktemp("one_node"))
    config = tiny_config(paths.root, *STEPS, "--train.launcher=deepspeed", "--train.num_procs=2")
    summary = run_train(config)
    assert summary["world_size"] == 2 and summary["steps"] == 8
    return summary, final_weights(paths)


def _job_config(paths: RunPaths) -> str:
    path = paths.root / "job.json"
    save_config(tiny_config(paths.root, *STEPS), path)
    return f"--job_config={path}"


def _run_nodes(commands: list[list[str]], envs: list[dict[str, str]], timeout: float) -> list:
    nodes = [
        subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                         stderr=subprocess.STDOUT, start_new_session=True)
        for command, env in zip(commands, envs, strict=True)
    ]  # fmt: skip
    try:
        outputs = [node.communicate(timeout=timeout)[0] for node in nodes]
    finally:
        for node in nodes:  # each node's whole process group: launcher and ranks
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait()
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-4000:]
    return outputs


def _assert_matches(paths: RunPaths, reference) -> None:
    summary, weights = reference
    metrics = json.loads(paths.train_metrics.read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 8
    assert metrics["last_loss"] == summary["last_loss"]
    assert_same_weights(final_weights(paths), weights)


@pytest.mark.timeout(150)
def test_deepspeed_no_ssh_two_nodes_match_one_node(tmp_path, one_node_two_procs):
    paths = make_tiny_run(tmp_path / "run")
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-0 slots=1\nnode-1 slots=1\n")
    port = str(free_port())
    envs = [
        launcher_env(HOSTFILE=str(hostfile), NODE_RANK=str(n), MASTER_ADDR="127.0.0.1",
                     MASTER_PORT=port)
        for n in range(2)
    ]  # fmt: skip
    command = ["launcher/train_deepspeed.sh", _job_config(paths)]
    outputs = _run_nodes([command, command], envs, timeout=120)
    assert "nnodes=2, num_local_procs=1, node_rank=1" in outputs[1]
    _assert_matches(paths, one_node_two_procs)


@pytest.mark.timeout(150)
def test_torchrun_two_nodes_match_one_node(tmp_path, one_node_two_procs):
    paths = make_tiny_run(tmp_path / "run")
    port = str(free_port())
    envs = [
        launcher_env(NNODES="2", NODE_RANK=str(n), NUM_PROCS="1", MASTER_ADDR="127.0.0.1",
                     MASTER_PORT=port)
        for n in range(2)
    ]  # fmt: skip
    command = ["launcher/train_torchrun.sh", _job_config(paths)]
    _run_nodes([command, command], envs, timeout=120)
    _assert_matches(paths, one_node_two_procs)


def _train_command(paths: RunPaths, *overrides: str) -> list[str]:
    """`python -m distributed_rec train` of the tiny run under the deepspeed launcher."""
    args = tiny_overrides(paths.root, *STEPS, "--train.launcher=deepspeed", "--train.num_procs=2")
    return [sys.executable, "-m", "distributed_rec", "train", *args, *overrides]


@pytest.mark.timeout(420)
def test_sigkilled_rank_ends_the_job_and_resume_continues_exactly(tmp_path, one_node_two_procs):
    """Rank 1 is SIGKILLed before step 4 (mid-epoch: 5 steps per epoch, checkpoint after each
    step): the command fails in bounded time with a message naming the kill and the checkpoint
    to resume from, leaving no process behind; resuming on 2 processes gives the uninterrupted
    weights bitwise, on 1 process (re-sharded through a universal checkpoint) within 1e-4."""
    paths = make_tiny_run(tmp_path / "run")
    env = launcher_env(**{KILL_RANK_ENV: "1:3"})
    started = time.monotonic()
    killed = subprocess.run(
        _train_command(paths), env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=150
    )
    seconds = time.monotonic() - started
    assert killed.returncode == 2, killed.stderr[-3000:]
    message = killed.stderr.strip().splitlines()[-1]
    assert message.startswith("error: training failed: the deepspeed launcher exited"), message
    # the ranks' own records name rank 1, whichever failed rank the launcher met first
    assert (
        ": rank 1 (pid" in message
        and "was killed (SIGKILL" in message
        and "step-00000003" in message
    ), message
    assert processes_mentioning(str(paths.root)) == []
    print(f"killed rank: the command failed after {seconds:.1f} s: {message}")
    other_world = tmp_path / "other_world"
    shutil.copytree(paths.root, other_world)

    summary, weights = one_node_two_procs
    resume = ("--train.resume=true",)
    config = tiny_config(paths.root, *STEPS, *resume, "--train.launcher=deepspeed",
                         "--train.num_procs=2")  # fmt: skip
    resumed = run_train(config)
    assert resumed["steps"] == 8 and resumed["resumed_from_world_size"] == 2
    assert resumed["last_loss"] == summary["last_loss"]
    assert_same_weights(final_weights(paths), weights)

    # world size 2 -> 1: the ZeRO-2 shards are merged and sliced again; the loss and weights
    # then differ from the 2-process run only by the order of floating-point sums
    resharded = run_train(tiny_config(other_world, *STEPS, *resume, "--train.launcher=local"))
    assert resharded["world_size"] == 1 and resharded["steps"] == 8
    assert resharded["last_loss"] == pytest.approx(summary["last_loss"], rel=1e-5)
    assert_same_weights(final_weights(RunPaths(other_world)), weights, atol=1e-4)
    assert resharded["resumed_from_world_size"] == 2


@pytest.mark.timeout(180)
def test_killed_driver_takes_its_ranks_down(tmp_path):
    """SIGKILL of `python -m distributed_rec train` (launcher deepspeed): its ranks notice
    within seconds and end; the launcher and its children follow."""
    paths = make_tiny_run(tmp_path / "run")
    command = _train_command(paths, "--train.max_steps=100000", "--train.max_epochs=100000")
    driver = subprocess.Popen(command, env=launcher_env(), cwd=REPO_ROOT, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 150
        while not (paths.checkpoints / "latest.json").exists():  # training has started
            assert driver.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        assert len(processes_mentioning(str(paths.root))) >= 4  # launcher, launch, 2 ranks
        driver.kill()
        driver.wait()
        seconds = wait_until_gone(str(paths.root), timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    print(f"killed driver: its ranks were gone {seconds:.1f} s later")
