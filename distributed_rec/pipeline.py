"""Runs stages by name, skipping those whose config and inputs are unchanged (SPEC §1)."""

from __future__ import annotations

import functools
import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed_rec.artifacts import (
    STAGES,
    RunPaths,
    clear_stage_marker,
    fingerprint_files,
    mark_stage_done,
    stage_is_current,
    stage_marker_path,
)
from distributed_rec.config import JobConfig, check_run_dir, replace_section, save_config
from distributed_rec.errors import StageUnavailableError
from distributed_rec.storage.uri import check_bucket, parse_uri

log = logging.getLogger(__name__)

# stage -> "module:function"; each function takes a JobConfig and returns a JSON-able summary.
STAGE_ENTRY_POINTS = {
    "prepare": "distributed_rec.data.prepare:run_prepare",
    "embed": "distributed_rec.embed.stage:run_embed",
    "tokenize": "distributed_rec.semantic_ids.stage:run_tokenize",
    "train": "distributed_rec.train.stage:run_train",
    "evaluate": "distributed_rec.evaluate.stage:run_evaluate",
    "baseline": "distributed_rec.baselines.stage:run_baseline",  # not part of `run`
}

# Config sections (or "section.key") that decide each stage's output.
STAGE_CONFIG_KEYS = {
    "prepare": ["data"],
    "embed": ["embed"],
    "tokenize": ["tokenize"],
    "train": [
        "model",
        "train",
        # validation's decoding and ranking mode select the best epoch
        "decode.valid_beam_size",
        "decode.valid_steps",
        "decode.valid_order",
        "decode.ranking",
        "decode.valid_ranking",
        "decode.dense_candidates",
        "decode.hybrid_weight",
        "decode.hybrid_grid",
        "decode.dense_prior_weight",
        "decode.exclude_history",
        "decode.cache_history",
        "data.max_history",
        "seed",
    ],
    "evaluate": [
        "decode",
        "evaluate.splits",
        "evaluate.max_users",
        "evaluate.sample_seed",
        "data.max_history",
    ],
    "baseline": ["baseline", "decode.top_k", "data.max_history", "seed"],
}
# Config keys that never change a stage's result.
_KEYS_WITHOUT_EFFECT = {
    "train.resume",
    "train.launcher",
    "train.num_procs",
    "train.hostfile",
    "train.log_every_steps",
    "evaluate.use_ray",
    "evaluate.num_shards",
    "baseline.in_run",
}


def _collaborative_inputs(paths: RunPaths, config: JobConfig) -> list[Path]:
    """The training windows, read by tokenize when its features are collaborative."""
    return [] if config.tokenize.features == "text" else [paths.train_windows]


def _stage_inputs(stage: str, paths: RunPaths, config: JobConfig) -> list[Path]:
    dense = [paths.item_embeddings] if config.model.dense_loss_weight > 0 else []
    if stage == "prepare":
        return []
    if stage == "embed":
        return [paths.items, paths.train_split]
    if stage == "tokenize":
        return [paths.item_embeddings, *_collaborative_inputs(paths, config)]
    if stage == "train":
        split = paths.train_windows if config.whole_sequence_training else paths.train_split
        test = [paths.eval_split("test")] if config.train.report_test else []
        return [split, paths.eval_split("valid"), paths.semantic_ids, *dense, *test]
    if stage == "baseline":
        splits = [paths.eval_split("valid"), paths.eval_split("test")]
        tiger = config.baseline.model == "tiger"
        windows = config.baseline.model == "sasrec" and config.baseline.whole_sequence
        train = paths.train_windows if windows else paths.train_split
        return [paths.items, train, *splits] + ([paths.semantic_ids] if tiger else [])
    return [
        paths.best_model,
        paths.semantic_ids,
        paths.eval_split("valid"),
        paths.eval_split("test"),
        *dense,
    ]


def _stage_reads(stage: str, paths: RunPaths, config: JobConfig) -> list[Path]:
    """Every artifact a stage reads (a superset of the inputs that decide its key): what a
    remote run directory's mirror must hold before the stage runs."""
    splits = [paths.eval_split("valid"), paths.eval_split("test")]
    dense = [paths.item_embeddings] if config.model.dense_loss_weight > 0 else []
    return {
        "prepare": [],
        "embed": [paths.items, paths.train_split],
        "tokenize": [paths.item_embeddings, *_collaborative_inputs(paths, config)],
        "train": [paths.semantic_ids, paths.train_split, paths.train_windows, *splits, *dense],
        "evaluate": [paths.best_model, paths.semantic_ids, paths.train_split, *splits, *dense],
        "baseline": [
            paths.items,
            paths.semantic_ids,
            paths.train_split,
            paths.train_windows,
            *splits,
        ],
    }[stage]


def stage_outputs(stage: str, paths: RunPaths) -> list[Path]:
    """What a stage writes: published to a remote run directory when it has run."""
    outputs = [paths.stage_dir(stage), paths.tensorboard(stage)]
    return outputs + ([paths.root / "baselines"] if stage == "baseline" else [])


def stage_config_values(config: JobConfig, keys: list[str]) -> dict[str, Any]:
    """The values of `keys` ("section" or "section.key"), keys that default to another key's
    value resolved (decode.valid_steps 0 and decode.steps 4 hash as valid_steps 4)."""
    values = config.to_dict()
    values["decode"]["valid_steps"] = config.validation_steps
    values["decode"]["valid_order"] = config.validation_order
    selected: dict[str, Any] = {}
    for key in keys:
        node: Any = values
        for part in key.split("."):
            node = node[part]
        if isinstance(node, dict):
            node = {k: v for k, v in node.items() if f"{key}.{k}" not in _KEYS_WITHOUT_EFFECT}
        selected[key] = node
    return selected


def raw_input_signature(config: JobConfig) -> str:
    """Size and mtime of the raw data files (cheap; content hashing 10M rows is not). Tells
    whether the files changed since a stage ran on this machine, not what they contain."""
    if not config.data.path:
        return ""
    root = Path(config.data.path)
    if not root.exists():
        return "missing"
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    return ";".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def raw_input_digest(config: JobConfig) -> str:
    """Content hash of the raw data files: the same data gives the same digest wherever and
    whenever it was copied (a fresh copy has new mtimes). Hashed once per process and file state."""
    signature = raw_input_signature(config)
    if signature in ("", "missing"):
        return signature
    return _content_digest(str(Path(config.data.path).resolve()), signature)


@functools.lru_cache(maxsize=16)
def _content_digest(root: str, signature: str) -> str:
    del signature  # only part of the cache key: files changed since are hashed again
    return fingerprint_files([Path(root)])


def stage_key(stage: str, config: JobConfig) -> str:
    """Hash of what decides a stage's output: its config keys and its input artifacts."""
    import hashlib
    import json

    paths = RunPaths.of(config.run_dir)  # a remote one's mirror holds the inputs (run_stage)
    inputs = [p for p in _stage_inputs(stage, paths, config) if p.exists()]
    payload = {
        "config": stage_config_values(config, STAGE_CONFIG_KEYS[stage]),
        "inputs": fingerprint_files(inputs) if inputs else "",
        "raw": raw_input_signature(config) if stage == "prepare" else "",
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def load_stage(stage: str) -> Callable[[JobConfig], dict[str, Any]]:
    module_name, function_name = STAGE_ENTRY_POINTS[stage].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise StageUnavailableError(
                f"stage {stage!r} is not available yet in this version"
            ) from None
        raise
    return getattr(module, function_name)


def checked_run_paths(run_dir: str) -> RunPaths:
    """The run directory's paths, checked before anything is written: a writable local folder,
    or an object-store URI whose bucket exists."""
    paths = RunPaths.of(run_dir)
    if paths.remote is None:
        return RunPaths(check_run_dir(run_dir))
    check_bucket(parse_uri(paths.remote))
    check_run_dir(str(paths.root))  # the local mirror must be writable too
    return paths


class _SyncTimer:
    """fetch/publish of one stage, timed and counted (a remote run directory's cost)."""

    def __init__(self, paths: RunPaths) -> None:
        self.paths, self.seconds, self.downloaded, self.uploaded = paths, 0.0, 0, 0

    def fetch(self, *paths: Path) -> None:
        started = time.perf_counter()
        self.downloaded += self.paths.fetch(*paths)
        self.seconds += time.perf_counter() - started

    def publish(self, *paths: Path) -> None:
        started = time.perf_counter()
        self.uploaded += self.paths.publish(*paths)
        self.seconds += time.perf_counter() - started

    def summary(self) -> dict[str, Any]:
        """For a remote run: seconds spent syncing around the stage, files moved each way."""
        if self.paths.remote is None:
            return {}
        return {
            "sync_seconds": self.seconds,
            "files_downloaded": self.downloaded,
            "files_uploaded": self.uploaded,
        }


def run_stage(stage: str, config: JobConfig, force: bool = False) -> dict[str, Any]:
    """Run one stage unless its outputs are current; returns its summary.

    With a remote run directory the stage's reads and its marker are fetched into the local
    mirror first; its outputs too when it runs (resume, caches), then published, marker last.
    """
    paths = checked_run_paths(config.run_dir)
    sync = _SyncTimer(paths)
    save_config(config, paths.config)
    sync.publish(paths.config)
    function = load_stage(stage)
    marker = stage_marker_path(paths, stage)
    sync.fetch(*_stage_reads(stage, paths, config), marker)
    key = stage_key(stage, config)
    resuming = stage == "train" and config.train.resume
    if not force and not resuming and stage_is_current(paths, stage, key):
        log.info("%s: inputs and config unchanged, skipped", stage)
        return {"stage": stage, "skipped": True, **sync.summary()}
    clear_stage_marker(paths, stage)
    sync.publish(marker)  # outputs are about to change: not current any more
    outputs = stage_outputs(stage, paths)
    sync.fetch(*outputs)
    started = time.perf_counter()
    summary = function(config) or {}
    seconds = time.perf_counter() - started
    sync.publish(*outputs)
    mark_stage_done(paths, stage, key, seconds)
    sync.publish(marker)
    summary = {"stage": stage, "skipped": False, "seconds": seconds, **summary, **sync.summary()}
    if paths.remote:
        log.info("%s: synced with %s in %.1f s", stage, paths.remote, sync.seconds)
    log.info("%s: done in %.1f s", stage, summary["seconds"])
    return summary


def baseline_config(config: JobConfig, model: str) -> JobConfig:
    """`config` with `baseline.model` set to `model`."""
    return replace_section(config, "baseline", model=model)


def run_all(config: JobConfig, force: bool = False) -> list[dict[str, Any]]:
    """Every stage in order, then the baselines of `baseline.in_run`; stages not available in
    this version are reported and skipped."""
    summaries = []
    for stage in STAGES:
        try:
            summaries.append(run_stage(stage, config, force=force))
        except StageUnavailableError as err:
            log.warning("%s", err)
            summaries.append({"stage": stage, "unavailable": True})
            return summaries
    for model in config.baseline.in_run:
        summary = run_stage("baseline", baseline_config(config, model), force=force)
        summaries.append({**summary, "stage": f"baseline ({model})"})
    return summaries
