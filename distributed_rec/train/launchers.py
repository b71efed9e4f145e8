"""Starting the training loop three ways: in this process, through the `deepspeed` launcher
(a subprocess), or as a Ray Train TorchTrainer (one loop per Ray worker)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import JobConfig, config_from_dict, replace_section, save_config
from distributed_rec.distributed.env import (
    free_port,
    process_group_backend,
    resolve_device,
    shutdown_distributed,
)
from distributed_rec.distributed.exits import RANK_EXITS_ENV, failure_cause, read_exits
from distributed_rec.distributed.loopback import (
    LOOPBACK,
    LOOPBACK_HOSTS,
    without_loopback_choices,
)
from distributed_rec.distributed.watchdog import DRIVER_PID_ENV
from distributed_rec.errors import DistributedRecError

log = logging.getLogger(__name__)

_RENDEZVOUS_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)


def deepspeed_command(config: JobConfig, job_config_path: Path) -> list[str]:
    """`deepspeed [--hostfile H] --num_gpus N --module distributed_rec.train.worker ...`.

    On CPU, --num_gpus sets the number of local processes.
    """
    executable = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or shutil.which(
        "deepspeed"
    )
    if executable is None:
        raise DistributedRecError("the `deepspeed` launcher is not installed in this environment")
    command = [executable]
    if config.train.hostfile:
        command += ["--hostfile", config.train.hostfile]
    else:
        command += ["--master_port", str(free_port())]
    command += ["--num_gpus", str(config.train.num_procs)]
    command += ["--module", "distributed_rec.train.worker", f"--job_config={job_config_path}"]
    return command


def _worker_job(config: JobConfig) -> tuple[RunPaths, JobConfig]:
    """The run's paths, and the config every training process gets: the local launcher and an
    absolute run directory (an object-store URI stays as it is: each process mirrors it)."""
    paths = RunPaths.of(config.run_dir)
    if paths.remote is None:
        paths = RunPaths(paths.root.resolve())
    config = replace_section(config, "train", launcher="local")
    return paths, config_from_dict({**config.to_dict(), "run_dir": paths.location})


def launch_deepspeed(config: JobConfig) -> None:
    """Run the loop under the `deepspeed` launcher; waits for it to finish."""
    paths, config = _worker_job(config)
    job_config_path = paths.stage_dir("train") / "launch_config.json"
    save_config(config, job_config_path)
    environment = {k: v for k, v in os.environ.items() if k not in _RENDEZVOUS_VARIABLES}
    environment[DRIVER_PID_ENV] = str(os.getpid())  # ranks end when this process is gone
    if config.train.hostfile:  # several machines: gloo/NCCL must not be held to loopback
        environment = without_loopback_choices(environment)
    command = deepspeed_command(config, job_config_path)
    log.info("launching: %s", " ".join(command))
    with tempfile.TemporaryDirectory(prefix="distributed_rec_rank_exits_") as exits:
        environment[RANK_EXITS_ENV] = exits  # this machine's ranks record how they ended
        completed = subprocess.run(command, env=environment, check=False)
        cause = failure_cause(read_exits(Path(exits)))
    if completed.returncode:
        raise DistributedRecError(
            failure_message("the deepspeed launcher", completed.returncode, paths, cause)
        )


def failure_message(what: str, status: int | str, paths: RunPaths, cause: str | None = None) -> str:
    """What failed, the cause (the ranks' own records when given, else guessed from the
    status), and where a resumed run would continue from."""
    from distributed_rec.train.checkpoint import latest_tag

    try:
        tag = latest_tag(paths.checkpoints)
    except DistributedRecError:
        tag = None
    if cause is None:
        cause = "a training process died or raised"
        if isinstance(status, int) and status in (-9, 137, 256 - 9):
            cause = "a training process was killed (SIGKILL)"
    resume = (
        f"--train.resume=true continues from checkpoint {tag} in {paths.where(paths.checkpoints)}"
        if tag
        else "no checkpoint was written yet (set --train.checkpoint_every_steps to keep one)"
    )
    return (
        f"training failed: {what} exited with status {status}: {cause}; see its log above; {resume}"
    )


def _ray_train_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker. On a cluster Ray has formed the process group; on the
    local instance (`master_port` given) the workers form it here, listening on loopback only
    (Ray Train's own store would listen on every interface)."""
    import ray.train

    from distributed_rec.train.loop import train_worker

    context = ray.train.get_context()
    job = config_from_dict(loop_config["job"])
    _record_worker_node(RunPaths.of(job.run_dir), context.get_world_rank())
    os.environ["LOCAL_RANK"] = str(context.get_local_rank())
    os.environ["LOCAL_WORLD_SIZE"] = str(context.get_local_world_size())
    port = loop_config.get("master_port")
    if port:
        os.environ["RANK"] = str(context.get_world_rank())
        os.environ["WORLD_SIZE"] = str(context.get_world_size())
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = LOOPBACK, str(port)
    train_worker(job)
    if port:
        shutdown_distributed()


def _worker_nodes_dir(paths: RunPaths) -> Path:
    return paths.stage_dir("train") / "ray_worker_nodes"


def _record_worker_node(paths: RunPaths, rank: int) -> None:
    import ray

    from distributed_rec.artifacts import write_json_atomic

    context = ray.get_runtime_context()
    node = {"rank": rank, "node_id": context.get_node_id(), "pid": os.getpid()}
    write_json_atomic(_worker_nodes_dir(paths) / f"rank-{rank:05d}.json", node)


def _merge_worker_nodes(paths: RunPaths) -> None:
    """Add each rank's Ray node to train_metrics.json (`ray_worker_nodes`: rank -> node id)."""
    import json

    from distributed_rec.artifacts import write_json_atomic

    records = [json.loads(f.read_text()) for f in sorted(_worker_nodes_dir(paths).glob("*.json"))]
    if paths.train_metrics.exists() and records:
        metrics = json.loads(paths.train_metrics.read_text())
        metrics["ray_worker_nodes"] = {str(r["rank"]): r["node_id"] for r in records}
        write_json_atomic(paths.train_metrics, metrics)


def ray_scaling(config: JobConfig) -> dict[str, Any]:
    """ScalingConfig arguments: train.num_procs workers, each with `ray.actor_num_cpus` CPUs
    and, on GPU, one GPU (one process per GPU)."""
    use_gpu = resolve_device(config.device) == "cuda"
    resources: dict[str, float] = {"CPU": config.ray.actor_num_cpus}
    if use_gpu:
        resources["GPU"] = 1
    return {
        "num_workers": config.train.num_procs,
        "use_gpu": use_gpu,
        "resources_per_worker": resources,
    }


def cluster_on_loopback() -> bool:
    """Whether every alive node of the connected Ray cluster is on this machine's loopback
    address (a local instance, or test clusters of several nodes on one machine)."""
    import ray

    return all(
        node["NodeManagerAddress"] in LOOPBACK_HOSTS for node in ray.nodes() if node["Alive"]
    )


def _workers_form_the_group() -> Any:
    """A TorchConfig whose Ray Train backend leaves the process group to the workers."""
    from ray.train.backend import Backend
    from ray.train.torch import TorchConfig

    class WorkersFormTheGroup(Backend):
        share_cuda_visible_devices = True  # as Ray's torch backend: local ranks index GPUs

    class LoopbackTorchConfig(TorchConfig):
        @property
        def backend_cls(self) -> type:
            return WorkersFormTheGroup

    return LoopbackTorchConfig


def launch_ray(config: JobConfig) -> None:
    """Run the loop as a Ray Train TorchTrainer with train.num_procs workers."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from distributed_rec.distributed.ray_runtime import start_local_ray

    paths, config = _worker_job(config)
    scaling = ray_scaling(config)
    started_here = not ray.is_initialized()
    if started_here and not (config.ray.address or os.environ.get("RAY_ADDRESS")):
        start_local_ray(config.ray.num_cpus)
    elif started_here:  # `ray job submit` sets RAY_ADDRESS: join that cluster
        ray.init(address=config.ray.address or None)
    loop_config: dict[str, Any] = {"job": config.to_dict()}
    torch_config_class = TorchConfig
    shutil.rmtree(_worker_nodes_dir(paths), ignore_errors=True)
    if cluster_on_loopback():  # Ray Train's store would listen on every interface
        loop_config["master_port"] = free_port()
        torch_config_class = _workers_form_the_group()
    try:
        trainer = TorchTrainer(
            _ray_train_loop,
            train_loop_config=loop_config,
            scaling_config=ScalingConfig(**scaling),
            torch_config=torch_config_class(
                backend=process_group_backend("cuda" if scaling["use_gpu"] else "cpu")
            ),
            run_config=RunConfig(name="train", storage_path=str(paths.stage_dir("train") / "ray")),
        )
        result = trainer.fit()
        if result.error is not None:
            first_line = str(result.error).strip().splitlines()[:1]
            raise DistributedRecError(
                failure_message("Ray Train", f"{type(result.error).__name__} {first_line}", paths)
            )
        _merge_worker_nodes(paths)
    finally:
        if started_here:
            ray.shutdown()
