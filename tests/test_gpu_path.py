"""The GPU path, checked as far as a CPU machine allows: for the GPU recipe
(`recipes/scientific_gpu.toml`) the DeepSpeed config, the process-group backend, the Ray
resource requests and the launcher commands are those of one process per GPU with NCCL and
bf16. Nothing here runs on a GPU (docs/cluster.md lists what has)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from cluster_support import REPO_ROOT, launcher_env

from distributed_rec.config import load_config
from distributed_rec.distributed.env import process_group_backend
from distributed_rec.embed.stage import actor_resources
from distributed_rec.evaluate.stage import shard_task_options
from distributed_rec.train.ds_config import deepspeed_config
from distributed_rec.train.launchers import deepspeed_command, ray_scaling


@pytest.fixture
def gpu():
    return load_config("scientific_gpu", [])


def test_deepspeed_config_is_bf16_zero2_one_micro_batch_per_gpu(gpu):
    nodes, per_node = 2, gpu.train.num_procs
    config = deepspeed_config(gpu.train, nodes * per_node, gpu.device)
    assert config["bf16"] == {"enabled": True} and config["fp16"] == {"enabled": False}
    assert config["zero_optimization"]["stage"] == 2
    # global 1024 = micro 64 x 16 GPUs x accumulation 1 (x 2 on one node of 8)
    assert config["train_micro_batch_size_per_gpu"] == 64
    assert config["train_batch_size"] == 1024 and config["gradient_accumulation_steps"] == 1
    assert deepspeed_config(gpu.train, per_node, gpu.device)["gradient_accumulation_steps"] == 2


def test_backend_and_ray_requests_are_per_gpu(gpu):
    assert process_group_backend(gpu.device) == "nccl"
    assert process_group_backend("cpu") == "gloo"
    scaling = ray_scaling(gpu)
    assert scaling == {
        "num_workers": 8,
        "use_gpu": True,
        "resources_per_worker": {"CPU": 4, "GPU": 1},
    }
    assert actor_resources(gpu) == {"num_cpus": 4, "num_gpus": 1}
    assert shard_task_options(gpu)["num_gpus"] == 1
    cpu = load_config("debug", [])
    assert (
        ray_scaling(cpu)["use_gpu"] is False
        and "GPU" not in ray_scaling(cpu)["resources_per_worker"]
    )
    assert shard_task_options(cpu)["num_gpus"] == 0


def test_deepspeed_command_with_a_hostfile_starts_one_process_per_gpu(gpu, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("gpu-1 slots=8\ngpu-2 slots=8\n")
    config = load_config("scientific_gpu", [f"--train.hostfile={hostfile}"])
    command = deepspeed_command(config, Path("/shared/runs/x/train/launch_config.json"))
    assert command[1:] == [
        "--hostfile", str(hostfile), "--num_gpus", "8", "--module",
        "distributed_rec.train.worker", "--job_config=/shared/runs/x/train/launch_config.json",
    ]  # fmt: skip


def _dry_run(script: str, *args: str, **env: str) -> list[str]:
    done = subprocess.run(
        [f"launcher/{script}", *args], env=launcher_env(DRY_RUN="1", **env), cwd=REPO_ROOT,
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return done.stdout.split()


def test_per_node_launcher_scripts_for_a_gpu_cluster():
    node = {"NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    deepspeed = _dry_run("train_deepspeed.sh", "--config=scientific_gpu", HOSTFILE="hosts", **node)
    assert deepspeed[1:] == [
        "--master_port", "29500", "--hostfile", "hosts", "--no_ssh", "--node_rank", "1",
        "--master_addr", "10.0.0.1", "--module", "distributed_rec.train.worker",
        "--config=scientific_gpu",
    ]  # fmt: skip
    torchrun = _dry_run(
        "train_torchrun.sh", "--config=scientific_gpu", NNODES="2", NUM_PROCS="8", **node
    )
    assert torchrun[1:] == [
        "--nnodes", "2", "--node_rank", "1", "--nproc_per_node", "8", "--master_addr",
        "10.0.0.1", "--master_port", "29500", "--max_restarts", "0", "-m",
        "distributed_rec.train.worker", "--config=scientific_gpu",
    ]  # fmt: skip


def test_gpu_extra_installs_faiss_gpu():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("faiss-gpu") for dep in project["optional-dependencies"]["gpu"])
