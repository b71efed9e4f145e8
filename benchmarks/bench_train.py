"""Training throughput of the reference-sized mask predictor (d_model 256, 4 layers, ~4.73M
parameters) on a prepared run directory, with 1 and 2 processes.

    nice -n 10 .venv/bin/python benchmarks/bench_train.py --run_dir=/tmp/train_sci [--steps=8]

Reads DIR/prepare/splits; uses DIR/tokenize/semantic_ids.parquet when it exists, otherwise
random unique semantic IDs (M=4, K=256) -- throughput does not depend on which IDs. Each
configuration trains `--steps` optimiser steps of the reference batch 1024 (`--batch`; micro-
batches of `--micro`, gradient accumulation) without validation, in a scratch copy of the run directory,
and prints samples/s, tokens/s (real, non-pad input tokens), samples per CPU-second of rank 0
(the fair figure on a machine shared with other work) and peak RSS per process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import load_config
from distributed_rec.semantic_ids.id_table import SemanticIdTable
from distributed_rec.train.stage import run_train


def random_ids(num_items: int, num_heads: int = 4, codebook: int = 256) -> SemanticIdTable:
    rng = np.random.default_rng(0)
    flat = rng.choice(codebook**num_heads, size=num_items, replace=False)
    codes = np.stack(np.unravel_index(flat, (codebook,) * num_heads), axis=1).astype(np.int64)
    return SemanticIdTable(np.arange(num_items, dtype=np.int64), codes, codebook)


def scratch_run(source: RunPaths) -> tuple[RunPaths, str]:
    scratch = RunPaths(Path(tempfile.mkdtemp(prefix="bench_train_")))
    (scratch.root / "prepare").mkdir(parents=True)
    (scratch.root / "prepare" / "splits").symlink_to((source.root / "prepare" / "splits").resolve())
    scratch.semantic_ids.parent.mkdir(parents=True)
    if source.semantic_ids.exists():
        shutil.copy(source.semantic_ids, scratch.semantic_ids)
        return scratch, f"tokenize output {source.semantic_ids}"
    num_items = pq.ParquetFile(source.items).metadata.num_rows
    random_ids(num_items).write(scratch.semantic_ids)
    return scratch, "random unique IDs (M=4, K=256)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--micro", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--threads", type=int, default=0, help="OMP threads per process")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    scratch, ids_source = scratch_run(RunPaths(Path(args.run_dir)))
    print(
        f"data: {args.run_dir}; semantic IDs: {ids_source}; batch {args.batch}, micro {args.micro}"
    )
    rows = []
    for procs in (int(p) for p in args.procs.split(",")):
        launcher = "local" if procs == 1 else "deepspeed"
        config = load_config(
            None,
            [
                f"--run_dir={scratch.root}",
                "--device=cpu",
                f"--train.launcher={launcher}",
                f"--train.num_procs={procs}",
                f"--train.max_steps={args.steps}",
                f"--train.global_batch_size={args.batch}",
                f"--train.micro_batch_size={args.micro}",
                "--train.eval_every_epochs=1000",
                "--train.checkpoint_every_steps=0",
            ],
        )
        summary = run_train(config)
        rows.append((procs, summary))
        print(json.dumps({"procs": procs, **summary}, sort_keys=True))
    print()
    print(
        "| procs | samples/s | tokens/s | s/step | samples per CPU-s (rank 0) "
        "| peak RSS per process (MiB) | params |"
    )
    print("|---|---|---|---|---|---|---|")
    for procs, s in rows:
        print(
            f"| {procs} | {s['samples_per_s']:.0f} | {s['tokens_per_s']:.0f} | "
            f"{args.batch / s['samples_per_s']:.2f} | {s['samples_per_cpu_s']:.0f} | "
            f"{s['peak_rss_mb']:.0f} | {s['num_parameters']} |"
        )
    shutil.rmtree(scratch.root, ignore_errors=True)


if __name__ == "__main__":
    main()
