"""Embedding throughput and tokenizer training on Amazon Scientific (4,344 items).

    nice -n 10 .venv/bin/python benchmarks/bench_embed_tokenize.py [--run_dir=/tmp/ids_sci]
        [--methods=mhvq,rqvae,rqkmeans,opq] [--section.key=value ...]

Uses DIR/prepare from the prepare stage when present; otherwise writes a minimal items.parquet
(title, description, brand, categories in item-id order) and a leave-one-out training split
straight from ../shared/data/scientific. Prints items/s, seconds and the tokenizer metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from distributed_rec.artifacts import RunPaths  # noqa: E402
from distributed_rec.config import load_config, replace_section  # noqa: E402
from distributed_rec.embed.stage import run_embed  # noqa: E402
from distributed_rec.semantic_ids.stage import run_tokenize  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scientific"
FIELDS = ("title", "description", "brand", "categories")


def write_scientific_prepare(
    paths: RunPaths, data: Path, max_history: int = 20, max_words: int = 128
) -> None:
    """items.parquet and splits/train/part-0.parquet from the LC-Rec JSON files."""
    items = json.loads((data / "Scientific.item.json").read_text())
    ids = sorted(int(i) for i in items)
    texts = []
    for i in ids:
        fields = [str(items[str(i)].get(f) or "").strip() for f in FIELDS]
        words = " ".join(f for f in fields if f).split()
        texts.append(" ".join(words[:max_words]))
    paths.items.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({"item_id": ids, "raw_item_id": [str(i) for i in ids], "text": texts}),
        paths.items,
    )
    users, histories, targets = [], [], []
    for user, seq in json.loads((data / "Scientific.inter.json").read_text()).items():
        train = seq[:-2]
        for t in range(1, len(train)):
            users.append(int(user))
            histories.append(train[max(0, t - max_history) : t])
            targets.append(train[t])
    paths.train_split.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "history": pa.array(histories, pa.list_(pa.int64())),
            "target": pa.array(targets, pa.int64()),
        }
    )
    pq.write_table(table, paths.train_split / "part-0.parquet")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default="/tmp/ids_sci")
    parser.add_argument("--methods", default="mhvq")
    parser.add_argument("--data", default=str(DATA))
    args, overrides = parser.parse_known_args(argv)
    config = load_config(None, [f"--run_dir={args.run_dir}", *overrides])
    paths = RunPaths(Path(args.run_dir))
    if not paths.items.exists():
        write_scientific_prepare(
            paths, Path(args.data), config.data.max_history, config.data.text_max_words
        )
        print(f"wrote {paths.items} and {paths.train_split} from {args.data}")

    started = time.perf_counter()
    summary = run_embed(config)
    embed_wall = time.perf_counter() - started
    print(f"embed: {json.dumps(summary, sort_keys=True)}")
    print(f"embed wall {embed_wall:.1f} s (Ray start-up and model load included)")

    for method in args.methods.split(","):
        method_config = replace_section(config, "tokenize", method=method)
        started = time.perf_counter()
        result = run_tokenize(method_config)
        wall = time.perf_counter() - started
        metrics = json.loads(paths.tokenizer_metrics.read_text())
        usage = ", ".join(f"{u:.3f}" for u in metrics["codebook_usage"])
        ppl = ", ".join(f"{p:.1f}" for p in metrics["perplexity"])
        print(
            f"tokenize[{method}]: {wall:.1f} s wall, {metrics['epochs']} epochs, "
            f"collision_rate_before={metrics['collision_rate_before']:.4f} "
            f"after_rebalance={metrics['collision_rate_after_rebalance']:.4f} "
            f"after={metrics['collision_rate_after']:.4f} recon_mse={metrics['recon_mse']:.5f} "
            f"usage=[{usage}] perplexity=[{ppl}]"
        )
        print(f"  summary: {json.dumps(result, sort_keys=True)}")
        print(f"  embed + tokenize[{method}]: {embed_wall + wall:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
