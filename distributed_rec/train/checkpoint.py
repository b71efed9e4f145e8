"""Resumable checkpoints: DeepSpeed's files, a JSON marker written last, weights-only loading.

`engine.save_checkpoint` writes DIR/train/checkpoints/<tag>/ (model, ZeRO-partitioned optimiser,
scheduler, our client state); only then, after every process has finished, rank 0 atomically
writes `latest.json` naming the tag, so a crash mid-save leaves the previous checkpoint current.
DeepSpeed 0.19.8 loads with `torch.load(weights_only=False)`; we swap in a checkpoint engine that
loads with `weights_only=True`, allowing only the few plain DeepSpeed classes its files contain.

A checkpoint saved by another number of processes is re-sharded through DeepSpeed's universal
checkpoint (:func:`make_universal`: `deepspeed.checkpoint.ds_to_universal`, then the engine is
built with `checkpoint.load_universal`), which merges each parameter's fp32 master copy and Adam
moments and slices them again for the new world size.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
from deepspeed.runtime.zero.config import ZeroStageEnum
from deepspeed.utils.tensor_fragment import fragment_address

from distributed_rec.artifacts import write_json_atomic
from distributed_rec.distributed import env
from distributed_rec.errors import ArtifactError

MARKER = "latest.json"
KEEP_LAST = 2
_SAFE_DEEPSPEED_GLOBALS = [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]
_LOAD_ERRORS = (
    RuntimeError,
    pickle.UnpicklingError,
    EOFError,
    OSError,
    KeyError,
    ValueError,
    zipfile.BadZipFile,
    AssertionError,
)


class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
    """DeepSpeed's torch checkpoint engine, loading with `weights_only=True`."""

    def load(self, path: str, map_location: Any = None) -> Any:
        with torch.serialization.safe_globals(_SAFE_DEEPSPEED_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)


def make_loading_safe(engine: Any) -> None:
    engine.checkpoint_engine = WeightsOnlyCheckpointEngine(engine._config)


def save(engine: Any, folder: Path, step: int, client_state: dict[str, Any]) -> str:
    """Checkpoint on every process; returns the tag. Old tags beyond KEEP_LAST are removed."""
    tag = f"step-{step:08d}"
    engine.save_checkpoint(str(folder), tag=tag, client_state=client_state, save_latest=False)
    env.barrier()
    if env.rank() == 0:
        marker = {"tag": tag, "step": step, "world_size": env.world_size()}
        write_json_atomic(folder / MARKER, marker)
        tags = sorted(p for p in folder.glob("step-*") if p.is_dir() and p.name.count("-") == 1)
        for old in tags[:-KEEP_LAST]:
            if old.name != tag:
                shutil.rmtree(old, ignore_errors=True)
                shutil.rmtree(folder / f"{old.name}{UNIVERSAL_SUFFIX}", ignore_errors=True)
    env.barrier()
    return tag


def _read_marker(folder: Path) -> dict[str, Any] | None:
    marker = folder / MARKER
    if not marker.exists():
        return None
    try:
        content = json.loads(marker.read_text())
        tag = content["tag"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ArtifactError(f"{marker} is damaged ({err}); delete {folder} to start over") from None
    if not (folder / tag).is_dir():
        raise ArtifactError(f"{marker} names {tag}, which is missing from {folder}")
    return content


def latest_tag(folder: Path) -> str | None:
    """The tag of the last completed checkpoint, None when there is none."""
    content = _read_marker(folder)
    return None if content is None else str(content["tag"])


def saved_world_size(folder: Path) -> int | None:
    """The number of processes that wrote the last checkpoint (None: no checkpoint, or one
    written before the marker recorded it)."""
    content = _read_marker(folder)
    if content is None or "world_size" not in content:
        return None
    return int(content["world_size"])


UNIVERSAL_SUFFIX = "-universal"


def make_universal(folder: Path, tag: str) -> str:
    """Convert checkpoint `tag` to DeepSpeed's universal format (once); returns its tag.

    Runs on rank 0 while the others wait; the output folder appears only when complete.
    """
    universal = f"{tag}{UNIVERSAL_SUFFIX}"
    target = folder / universal
    if env.rank() == 0 and not target.is_dir():
        staging = folder / f".{universal}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        command = [
            sys.executable,
            "-m",
            "deepspeed.checkpoint.ds_to_universal",
            f"--input_folder={folder / tag}",
            f"--output_folder={staging}",
            "--inject_missing_state",  # our engines record no tensor-parallel layout
            "--num_extract_workers=1",
            "--num_merge_workers=1",
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise ArtifactError(
                f"{folder / tag}: conversion to a universal checkpoint failed "
                f"(status {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"
            )
        staging.replace(target)
    env.barrier()
    return universal


def load(engine: Any, folder: Path, tag: str | None = None) -> dict[str, Any]:
    """Restore model, optimiser and scheduler (of `tag`, default the latest); returns our
    client state."""
    tag = tag or latest_tag(folder)
    if tag is None:
        raise ArtifactError(f"--resume: no completed checkpoint in {folder} ({MARKER} missing)")
    try:
        load_path, client_state = engine.load_checkpoint(
            str(folder),
            tag=tag,
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
            load_module_strict=True,
        )
    except _LOAD_ERRORS as err:
        raise ArtifactError(
            f"{folder / tag}: damaged or incompatible checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); delete it or train without --resume"
        ) from None
    if load_path is None or not client_state or "progress" not in client_state:
        raise ArtifactError(f"{folder / tag}: incomplete checkpoint (no training progress saved)")
    return client_state
