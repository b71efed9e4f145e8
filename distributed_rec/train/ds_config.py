"""The DeepSpeed config, computed from the typed config (never hand-typed).

`cluster_configs/deepspeed_*.json` are this function's documented output
(`python -m distributed_rec.train.ds_config` regenerates them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from distributed_rec.config import ConfigError, TrainConfig


def resolve_precision(precision: str, device: str) -> str:
    """'fp32' or 'bf16': 'auto' is bf16 on GPU and fp32 on CPU."""
    if precision == "auto":
        return "bf16" if device == "cuda" else "fp32"
    return precision


def accumulation_steps(train: TrainConfig, world_size: int) -> int:
    """global_batch_size / (micro_batch_size x world_size), which must divide exactly."""
    per_step = train.micro_batch_size * world_size
    if train.global_batch_size % per_step:
        raise ConfigError(
            f"train.global_batch_size={train.global_batch_size} is not a multiple of "
            f"train.micro_batch_size={train.micro_batch_size} x {world_size} processes; "
            "choose sizes so that global = micro x accumulation x processes"
        )
    return train.global_batch_size // per_step


def deepspeed_config(
    train: TrainConfig, world_size: int, device: str = "cpu", load_universal: bool = False
) -> dict[str, Any]:
    """DeepSpeed JSON config: batch sizes, ZeRO stage, clipping, precision (bf16 on GPU);
    `load_universal` when resuming from a checkpoint of another world size (checkpoint.py)."""
    accumulation = accumulation_steps(train, world_size)
    precision = resolve_precision(train.precision, device)
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage in (1, 2):
        zero.update(
            {
                "contiguous_gradients": True,
                "overlap_comm": False,
                "reduce_scatter": True,
                "allgather_bucket_size": 50_000_000,
                "reduce_bucket_size": 50_000_000,
            }
        )
    config: dict[str, Any] = {
        "train_batch_size": train.micro_batch_size * accumulation * world_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": zero,
        # on CPU, bf16 is autocast around the forward pass (loop.py); DeepSpeed stays fp32
        "bf16": {"enabled": precision == "bf16" and device == "cuda"},
        "fp16": {"enabled": False},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }
    if load_universal:
        config["checkpoint"] = {"load_universal": True}
    return config


def write_examples(folder: Path) -> list[Path]:
    """The example JSON files of cluster_configs/ (reference batch 1024)."""
    examples = {
        "deepspeed_cpu_zero2_2procs.json": (TrainConfig(zero_stage=2), 2, "cpu"),
        "deepspeed_gpu_zero2_8gpus.json": (
            TrainConfig(zero_stage=2, micro_batch_size=128),
            8,
            "cuda",
        ),
        "deepspeed_gpu_zero3_16gpus.json": (
            TrainConfig(zero_stage=3, micro_batch_size=64),
            16,
            "cuda",
        ),
    }
    written = []
    for name, (train, world, device) in examples.items():
        path = folder / name
        path.write_text(json.dumps(deepspeed_config(train, world, device), indent=2) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("cluster_configs")
    for written_path in write_examples(target):
        print(written_path)
