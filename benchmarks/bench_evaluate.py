"""Evaluation speed on a real split: users/s of constrained beam search (B=50, T=4) and greedy
decoding, on the split's own history lengths.

    .venv/bin/python -m distributed_rec prepare --run_dir=/tmp/eval_sci \\
        --data.format=lcrec --data.path=../shared/data/scientific
    nice -n 10 .venv/bin/python benchmarks/bench_evaluate.py --run_dir=/tmp/eval_sci \\
        --attention inter_item_causal

Uses the run's semantic IDs and trained model when they exist (DIR/tokenize/semantic_ids.parquet,
DIR/train/best/model.pt, with the run's config.json); otherwise random unique IDs (M=4, K=256)
and a randomly initialised reference-sized model. Decoding cost does not depend on the weights'
values, only on the shapes. Real histories are shorter than the fixed 20 items of
`bench_shapes.py`, which is the like-for-like comparison with the authors' code.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import JobConfig, config_from_dict, load_config, replace_section
from distributed_rec.decode import ValidIdIndex, model_scoring, recommend
from distributed_rec.decode.scoring import decode_uses_bf16
from distributed_rec.evaluate.metrics import ranking_metrics
from distributed_rec.evaluate.shards import EvalUsers, read_split
from distributed_rec.model import build_mask_predictor, count_parameters
from distributed_rec.semantic_ids.id_table import SemanticIdTable


def _ids_and_model(
    config: JobConfig, num_items: int
) -> tuple[SemanticIdTable, torch.nn.Module, str]:
    paths = RunPaths(Path(config.run_dir))
    if paths.semantic_ids.exists():
        table, ids = SemanticIdTable.read(paths.semantic_ids), "the run's semantic IDs"
    else:
        M, K = config.tokenize.num_heads, config.tokenize.codebook_size
        tuples = np.random.default_rng(0).choice(K**M, size=num_items, replace=False)
        codes = np.stack([(tuples // K**m) % K for m in range(M)], axis=1).astype(np.int64)
        table, ids = SemanticIdTable(np.arange(num_items), codes, K), "random unique IDs"
    if paths.best_model.exists() and paths.semantic_ids.exists():
        from distributed_rec.model.weights import load_best_model

        return table, load_best_model(config, "cpu"), ids + ", trained weights"
    torch.manual_seed(0)
    model = build_mask_predictor(
        config.model, table.num_heads, table.codebook_size, config.data.max_history + 1
    )
    return table, model.eval(), ids + ", random weights"


def _timed(label: str, histories, targets, table, model, index, **decode) -> float:
    """Decode and print users/s (wall) and CPU seconds per user; returns wall seconds."""
    load_before = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    ranked = recommend(model, histories, table, index=index, **decode)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    metrics = ranking_metrics(ranked, targets)
    print(
        f"{label}: {len(histories)} users in {seconds:.1f} s = {len(histories) / seconds:.2f} "
        f"users/s ({seconds / len(histories):.4f} s/user wall, {cpu / len(histories):.4f} CPU "
        f"s/user); recall@10={metrics['recall@10']:.4f}; load average "
        f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return seconds


def quantile_batches(users: EvalUsers, batch_size: int, count: int) -> EvalUsers:
    """`count` whole decoding batches at evenly spaced quantiles of the (length, user) order.

    The evaluate stage decodes all users in batches of similar history length; timing a few of
    those batches spread over the length distribution estimates its per-user cost.
    """
    lengths = np.fromiter((len(h) for h in users.histories), np.int64, len(users))
    order = np.lexsort((users.user_ids, lengths))
    num_batches = len(order) // batch_size
    picks = ((np.arange(count) + 0.5) * num_batches / count).astype(int)
    return users.take(np.concatenate([order[b * batch_size : (b + 1) * batch_size] for b in picks]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--beam_batches", type=int, default=4, help="test batches timed at B=50")
    parser.add_argument("--beam_size", type=int, default=50)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--greedy_batch_size", type=int, default=512)
    parser.add_argument(
        "--precision", nargs="+", default=["fp32", "bf16"], help="fp32, bf16 or auto (default)"
    )
    parser.add_argument("--skip_greedy", action="store_true")
    parser.add_argument(
        "--attention", default="", help="model.attention of a random model (default: the run's)"
    )
    parser.add_argument("--cache_history", default="auto", help="decode.cache_history")
    args = parser.parse_args()

    paths = RunPaths(Path(args.run_dir))
    if paths.config.exists():
        import json

        config = config_from_dict(json.loads(paths.config.read_text()))
    else:
        config = load_config(None, [f"--run_dir={args.run_dir}"])
    if args.attention:
        config = replace_section(config, "model", attention=args.attention)
    config = replace_section(config, "decode", cache_history=args.cache_history)
    test = read_split(paths.eval_split("test"), config.data.max_history)
    valid = read_split(paths.eval_split("valid"), config.data.max_history)
    import pyarrow.parquet as pq

    num_items = pq.read_metadata(paths.items).num_rows
    table, model, source = _ids_and_model(config, num_items)
    index = ValidIdIndex(table)
    beam_users = quantile_batches(test, args.batch_size, args.beam_batches)
    print(
        f"model: {count_parameters(model):,} parameters ({source}); torch threads "
        f"{torch.get_num_threads()}; {len(test)} test / {len(valid)} valid users, {num_items} items; "
        f"attention {config.model.attention}, history cache {config.cached_decoding}"
    )
    for precision in args.precision:
        scoring = model_scoring(model, precision, config.cached_decoding)
        if precision == "auto":
            resolved = "bf16" if decode_uses_bf16("auto", "cpu") else "fp32"
            print(f"[auto] the default decode.precision runs the model in {resolved} here")
        _timed(
            f"[{precision}] beam search B={args.beam_size} T={args.steps} on "
            f"{args.beam_batches} test batches at evenly spaced length quantiles",
            beam_users.histories,
            beam_users.targets,
            table,
            scoring,
            index,
            beam_size=args.beam_size,
            steps=args.steps,
            order="adaptive",
            top_k=10,
            batch_size=args.batch_size,
            exclude_history=config.decode.exclude_history,
        )
        if args.skip_greedy:
            continue
        _timed(
            f"[{precision}] greedy (B=1) T={args.steps} on all validation users",
            valid.histories,
            valid.targets,
            table,
            scoring,
            index,
            beam_size=1,
            steps=args.steps,
            order="adaptive",
            top_k=10,
            batch_size=args.greedy_batch_size,
            exclude_history=config.decode.exclude_history,
        )


if __name__ == "__main__":
    main()
