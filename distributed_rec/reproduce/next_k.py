"""`python -m distributed_rec.reproduce.next_k`: MaskGR's next-k study on a trained run.

    python -m distributed_rec.reproduce.next_k --config=scientific_dense --run_dir=R \\
        [--steps=1,2,4] [--max_users=2000] [--output=R/next_k] [--section.key=value ...]

For every user the history is the valid split's (all but the last two items) and the next two
items are the valid and test targets. For each T of --steps it decodes both with k = 2 in
parallel (T model calls per user) and in turn (2T calls; `decode/next_k.py`), and, for
reference, the second item given the true first one (the test split's setting, T calls).
Recall@10 and NDCG@10 are computed per position. Writes OUTPUT/next_k.json, next_k.md and
next_k.png (mean Recall@10 of the two positions against model calls per user).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from distributed_rec.artifacts import RunPaths, write_json_atomic
from distributed_rec.cli import configure_logging
from distributed_rec.config import JobConfig, load_config
from distributed_rec.decode import ValidIdIndex, model_scoring, recommend
from distributed_rec.decode.next_k import recommend_next_k
from distributed_rec.distributed.process_exit import end_process
from distributed_rec.evaluate.metrics import ranking_metrics
from distributed_rec.evaluate.shards import read_split
from distributed_rec.model.weights import load_best_model
from distributed_rec.semantic_ids.id_table import SemanticIdTable

log = logging.getLogger("distributed_rec.reproduce.next_k")


def two_step_users(paths: RunPaths, max_history: int, max_users: int, seed: int) -> dict:
    """{"histories", "first", "second", "test_histories"} of users in both splits (a seeded
    sample of `max_users` when > 0): valid history, valid target, test target, test history."""
    valid = read_split(paths.eval_split("valid"), max_history)
    test = read_split(paths.eval_split("test"), max_history)
    test_row = {int(u): r for r, u in enumerate(test.user_ids)}
    rows = [(r, test_row[int(u)]) for r, u in enumerate(valid.user_ids) if int(u) in test_row]
    if max_users and len(rows) > max_users:
        picked = np.sort(np.random.default_rng(seed).choice(len(rows), max_users, replace=False))
        rows = [rows[i] for i in picked]
    return {
        "histories": [valid.histories[v] for v, _ in rows],
        "first": np.array([valid.targets[v] for v, _ in rows], dtype=np.int64),
        "second": np.array([test.targets[t] for _, t in rows], dtype=np.int64),
        "test_histories": [test.histories[t] for _, t in rows],
    }


def run_study(config: JobConfig, steps: list[int], max_users: int) -> dict[str, Any]:
    paths = RunPaths.of(config.run_dir)
    dense = [paths.item_embeddings] if config.model.dense_loss_weight > 0 else []
    splits = [paths.eval_split("valid"), paths.eval_split("test")]
    paths.fetch(paths.semantic_ids, paths.best_model, *splits, *dense)  # an s3:// run
    model = load_best_model(config)
    table = SemanticIdTable.read(paths.semantic_ids)
    index = ValidIdIndex(table)
    scoring = model_scoring(model, config.decode.precision, config.cached_decoding)
    users = two_step_users(paths, config.data.max_history, max_users, config.evaluate.sample_seed)
    decode = config.decode
    rows: list[dict[str, Any]] = []
    for T in steps:
        common = {"beam_size": decode.beam_size, "steps": T, "order": decode.order, "top_k": 10}
        for mode in ("parallel", "sequential"):
            started = time.perf_counter()
            out = recommend_next_k(
                scoring,
                users["histories"],
                table,
                k=2,
                mode=mode,
                max_history=config.data.max_history,
                batch_size=config.evaluate.batch_size,
                index=index,
                exclude_history=decode.exclude_history,
                **common,
            )
            first = ranking_metrics(out.ranked_UkK[:, 0], users["first"])
            second = ranking_metrics(out.ranked_UkK[:, 1], users["second"])
            rows.append(
                {
                    "mode": mode,
                    "steps": T,
                    "calls_per_user": out.calls_per_user,
                    "first": first,
                    "second": second,
                    "mean_recall@10": (first["recall@10"] + second["recall@10"]) / 2,
                    "seconds": time.perf_counter() - started,
                }
            )
            log.info("next-k %s T=%d: %s", mode, T, rows[-1])
        started = time.perf_counter()
        given = recommend(
            scoring,
            users["test_histories"],
            table,
            batch_size=config.evaluate.batch_size,
            index=index,
            exclude_history=decode.exclude_history,
            **common,
        )
        rows.append(
            {
                "mode": "second given the true first",
                "steps": T,
                "calls_per_user": T,
                "second": ranking_metrics(given, users["second"]),
                "seconds": time.perf_counter() - started,
            }
        )
    return {"users": len(users["first"]), "beam_size": decode.beam_size, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Next-2 prediction ({result['users']} users, B = {result['beam_size']})",
        "",
        "| mode | T | model calls / user | R@10 item 1 | R@10 item 2 | mean R@10 | N@10 item 1 "
        "| N@10 item 2 | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        first = row.get("first", {})
        cells = [
            row["mode"],
            str(row["steps"]),
            str(row["calls_per_user"]),
            f"{first['recall@10']:.4f}" if first else "",
            f"{row['second']['recall@10']:.4f}",
            f"{row['mean_recall@10']:.4f}" if "mean_recall@10" in row else "",
            f"{first['ndcg@10']:.4f}" if first else "",
            f"{row['second']['ndcg@10']:.4f}",
            f"{row['seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> bool:
    """Mean Recall@10 against model calls per user, one line per mode; False without
    matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.5))
    for mode in ("parallel", "sequential"):
        points = [
            (r["calls_per_user"], r["mean_recall@10"]) for r in result["rows"] if r["mode"] == mode
        ]
        axes.plot(*zip(*sorted(points), strict=True), marker="o", label=mode)
    axes.set_xlabel("model calls per user (both items)")
    axes.set_ylabel("mean Recall@10 of the next 2 items")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def main(argv: list[str]) -> int:
    configure_logging()
    options = {"config": None, "steps": "1,2,4", "max_users": "2000", "output": ""}
    overrides = []
    for arg in argv:
        name, _, value = arg.removeprefix("--").partition("=")
        if name in options:
            options[name] = value
        else:
            overrides.append(arg)
    config = load_config(options["config"], overrides)
    steps = [int(s) for s in options["steps"].split(",") if s]
    result = run_study(config, steps, int(options["max_users"]))
    output = Path(options["output"] or RunPaths.of(config.run_dir).root / "next_k")
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output / "next_k.json", result)
    (output / "next_k.md").write_text(markdown(result))
    plotted = plot(result, output / "next_k.png")
    print(json.dumps({"output": str(output), "plotted": plotted}, indent=2))
    return 0


if __name__ == "__main__":
    end_process(main(sys.argv[1:]))
