"""The baseline stage: train SASRec or TIGER-style on the train split, early-stop on valid
NDCG@10, evaluate valid and test with the shared metrics, write DIR/baselines/<model>/metrics.json.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from distributed_rec.artifacts import RunPaths, write_json_atomic
from distributed_rec.baselines.sasrec import SASRec
from distributed_rec.baselines.tiger import TigerDecoder, TigerRecommender
from distributed_rec.baselines.train import evaluate, fit, summary_of
from distributed_rec.config import JobConfig
from distributed_rec.errors import ArtifactError, DataError
from distributed_rec.semantic_ids.id_table import SemanticIdTable
from distributed_rec.train.data import read_eval_split, read_samples, read_windows
from distributed_rec.train.loop import resolve_device
from distributed_rec.train.validate import sample_users

log = logging.getLogger(__name__)


def baseline_metrics_path(config: JobConfig) -> Path:
    return RunPaths.of(config.run_dir).root / "baselines" / config.baseline.model / "metrics.json"


def _num_items(paths: RunPaths) -> int:
    if not paths.items.exists():
        raise ArtifactError(f"{paths.items} is missing: run the prepare stage first")
    return pq.read_metadata(paths.items).num_rows


def _check_item_ids(name: Path, item_ids: np.ndarray, num_items: int) -> None:
    if len(item_ids) and (item_ids.min() < 0 or item_ids.max() >= num_items):
        bad = item_ids[(item_ids < 0) | (item_ids >= num_items)][0]
        raise DataError(name, f"item id {bad} is outside 0..{num_items - 1} of items.parquet")


def windowed(config: JobConfig) -> bool:
    """Whether the baseline trains on whole windows (SASRec with baseline.whole_sequence)."""
    return config.baseline.model == "sasrec" and config.baseline.whole_sequence


def build_baseline(config: JobConfig, num_items: int) -> nn.Module:
    """A freshly initialised baseline of kind `config.baseline.model`."""
    cfg, max_history = config.baseline, config.data.max_history
    if cfg.model == "sasrec":
        return SASRec(
            num_items,
            max_history,
            cfg.d_model,
            cfg.num_layers,
            cfg.num_attention_heads,
            cfg.dropout,
            whole_sequence=cfg.whole_sequence,
        )
    paths = RunPaths.of(config.run_dir)
    table = SemanticIdTable.read(paths.semantic_ids)
    _check_item_ids(paths.semantic_ids, table.item_ids, num_items)
    missing = np.setdiff1d(np.arange(num_items), table.item_ids)
    if len(missing):
        raise ArtifactError(f"{paths.semantic_ids}: item {missing[0]} has no semantic ID")
    if config.tokenize.method != "rqvae":
        log.warning(
            "tiger baseline over %r semantic IDs (TIGER uses rqvae)", config.tokenize.method
        )
    decoder = TigerDecoder(
        table.num_heads,
        table.codebook_size,
        max_history,
        cfg.d_model,
        cfg.num_layers,
        cfg.num_attention_heads,
        cfg.dropout,
    )
    return TigerRecommender(table, num_items, decoder, cfg.beam_size)


def run_baseline(config: JobConfig) -> dict[str, Any]:
    """Train, early-stop and evaluate the configured baseline; returns the metrics summary."""
    started = time.perf_counter()
    paths = RunPaths.of(config.run_dir)
    cfg, max_history, top_k = config.baseline, config.data.max_history, config.decode.top_k
    num_items = _num_items(paths)
    if windowed(config):
        samples = read_windows(paths.train_windows, max_history + 1)
        _check_item_ids(paths.train_windows, samples.items, num_items)
    else:
        samples = read_samples(paths.train_split, max_history)
        _check_item_ids(paths.train_split, samples.items, num_items)
    splits = {}
    for split in ("valid", "test"):
        histories, targets = read_eval_split(paths.eval_split(split), max_history)
        _check_item_ids(paths.eval_split(split), np.concatenate([targets, *histories]), num_items)
        splits[split] = (histories, targets)

    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    model = build_baseline(config, num_items).to(device)
    # a TIGER batch of users decodes beam_size sequences per user at once
    eval_batch = max(1, cfg.batch_size // cfg.beam_size) if cfg.model == "tiger" else cfg.batch_size
    valid_histories, valid_targets = splits["valid"]
    if cfg.valid_max_users:
        rows = sample_users(len(valid_targets), cfg.valid_max_users, config.seed)
        valid_histories = [valid_histories[r] for r in rows]
        valid_targets = valid_targets[rows]
    result = fit(
        model,
        samples,
        (valid_histories, valid_targets),
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        max_epochs=cfg.max_epochs,
        patience=cfg.patience,
        top_k=top_k,
        seed=config.seed,
        eval_batch_size=eval_batch,
    )
    test = evaluate(model, *splits["test"], top_k=top_k, batch_size=eval_batch)
    metrics = {
        "valid": result.best_valid,
        "test": test,
        "model": cfg.model,
        "users": {split: len(targets) for split, (_, targets) in splits.items()},
        "valid_users_for_selection": len(valid_targets),
        "num_items": num_items,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer": config.tokenize.method if cfg.model == "tiger" else None,
        # the seed too: runs that differ only in it must not share a hash; TIGER's IDs too
        "config_hash": config.section_hash(
            "data", "baseline", "decode", "seed", *(("tokenize",) if cfg.model == "tiger" else ())
        ),
        "seed": config.seed,
        "device": device,
        **summary_of(result),
        "wall_seconds": time.perf_counter() - started,
    }
    write_json_atomic(baseline_metrics_path(config), metrics)
    log.info("baseline %s: valid %s test %s", cfg.model, metrics["valid"], test)
    return {key: metrics[key] for key in ("model", "valid", "test", "best_epoch", "wall_seconds")}
