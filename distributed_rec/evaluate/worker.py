"""One evaluation shard: load the checkpoint (once per worker process), decode, write Parquet.

`decode_shard` is a plain function: the stage runs it in-process or as a Ray task with retries.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import JobConfig
from distributed_rec.decode import ValidIdIndex, model_scoring, recommend
from distributed_rec.decode.hybrid import rank_with_dense
from distributed_rec.distributed.env import resolve_device
from distributed_rec.errors import ArtifactError
from distributed_rec.evaluate.shards import read_split_rows, shard_path, write_predictions
from distributed_rec.model import MaskPredictor
from distributed_rec.model.weights import load_best_model
from distributed_rec.semantic_ids.id_table import SemanticIdTable

CRASH_ONCE_ENV = "DISTRIBUTED_REC_TEST_CRASH_ONCE"
"""Tests only: a marker-file path; the first shard-0 attempt creates it and kills its process."""
ATTEMPTS_ENV = "DISTRIBUTED_REC_TEST_SHARD_ATTEMPTS"
"""Tests only: a folder; every shard attempt writes a file there naming its node, then waits a
second, so that a test can remove that node while shards run on it."""

_LOADED: dict[tuple[str, int], tuple[MaskPredictor, SemanticIdTable, ValidIdIndex]] = {}


def load_for_decoding(
    config: JobConfig,
) -> tuple[MaskPredictor, SemanticIdTable, ValidIdIndex]:
    """Model, ID table and constraint index; cached per process and per checkpoint version."""
    paths = RunPaths.of(config.run_dir)
    if not paths.best_model.exists():
        raise ArtifactError(f"{paths.best_model} is missing: run the train stage first")
    cache_key = (str(paths.best_model.resolve()), paths.best_model.stat().st_mtime_ns)
    if cache_key not in _LOADED:
        device = resolve_device(config.device)
        table = SemanticIdTable.read(paths.semantic_ids)
        _LOADED.clear()
        _LOADED[cache_key] = (load_best_model(config, device), table, ValidIdIndex(table, device))
    return _LOADED[cache_key]


def beam_size_for(config: JobConfig, split: str) -> int:
    """B of a split: `decode.valid_beam_size` on valid (greedy by default), `decode.beam_size` else."""
    return config.decode.valid_beam_size if split == "valid" else config.decode.beam_size


def _maybe_crash(marker: str, shard: int) -> None:
    if marker and shard == 0 and not os.path.exists(marker):
        Path(marker).write_text(f"killed pid {os.getpid()}\n")
        os._exit(1)  # a hard worker death, as from the OOM killer: Ray must retry the task


def _node_id() -> str | None:
    """The Ray node this runs on (None outside Ray)."""
    ray = sys.modules.get("ray")
    return ray.get_runtime_context().get_node_id() if ray and ray.is_initialized() else None


def _record_attempt(split: str, shard: int, node: str | None) -> None:
    folder = os.environ.get(ATTEMPTS_ENV, "")
    if folder:
        Path(folder, f"{split}-{shard:05d}-{os.getpid()}-{node}").touch()
        time.sleep(1.0)


def decode_lists(
    config: JobConfig,
    model: MaskPredictor,
    table: SemanticIdTable,
    index: ValidIdIndex,
    histories: list[np.ndarray],
    beam_size: int,
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """The generative lists int64 [U, K] of `histories` under `config.decode` with `beam_size`
    beams and, for a model with the dense head, the dense lists and the hybrid candidates with
    both scores ("dense", "candidates", "generative_scores", "dense_scores"; else None)."""
    decode = config.decode
    scoring = model_scoring(model, decode.precision, config.cached_decoding)
    search = {
        "beam_size": beam_size,
        "steps": decode.steps,
        "order": decode.order,
        "top_k": decode.top_k,
        "batch_size": config.evaluate.batch_size,
        "index": index,
        "exclude_history": decode.exclude_history,
    }
    if model.dense is None:
        return recommend(scoring, histories, table, **search), None
    outputs = rank_with_dense(
        model,
        scoring,
        histories,
        table,
        dense_candidates=decode.dense_candidates,
        cached=config.cached_decoding,
        precision=decode.precision,
        dense_prior_weight=decode.dense_prior_weight,
        **search,
    )
    extra = {
        "dense": outputs.dense_UK,
        "candidates": outputs.candidates_UC,
        "generative_scores": outputs.generative_UC,
        "dense_scores": outputs.dense_UC,
    }
    return outputs.generative_UK, extra


def decode_shard(
    config: JobConfig, split: str, shard: int, rows: np.ndarray, crash_marker: str = ""
) -> dict[str, Any]:
    """Decode the users of split-file rows `rows` (read here, in that order) and write
    DIR/evaluate/predictions/<split>/shard-XXXXX.parquet."""
    _maybe_crash(crash_marker, shard)
    node = _node_id()
    _record_attempt(split, shard, node)
    started = time.perf_counter()
    paths = RunPaths.of(config.run_dir)
    # a remote run directory: this machine's mirror may lack the inputs (another node)
    dense = [paths.item_embeddings] if config.model.dense_loss_weight > 0 else []
    paths.fetch(paths.eval_split(split), paths.semantic_ids, paths.best_model, *dense)
    users = read_split_rows(paths.eval_split(split), rows, config.data.max_history)
    model, table, index = load_for_decoding(config)
    ranked_UK, extra = decode_lists(
        config, model, table, index, users.histories, beam_size_for(config, split)
    )
    path = shard_path(paths.predictions(split), shard)
    write_predictions(path, users, ranked_UK, extra)
    paths.publish(path)  # the driver may run on another machine
    seconds = time.perf_counter() - started
    return {"path": str(path), "users": len(users), "seconds": seconds, "node": node}
