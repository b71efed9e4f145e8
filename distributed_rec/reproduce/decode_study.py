"""`python -m distributed_rec.reproduce.decode_study`: decoding variants of one trained run,
measured side by side on the validation split (where decoding choices are made).

    python -m distributed_rec.reproduce.decode_study --config=scientific_dense --run_dir=R \\
        --variant=decode.steps=1 --variant=decode.steps=2,decode.beam_size=100 \\
        [--max_users=0] [--split=valid] [--output=R/decode_study] [--section.key=value ...]

The first row is the run's own `[decode]` settings; every `--variant` is a comma-separated list
of `decode.<key>=<value>` changes to it. Each row decodes the same users once, as the test
split is decoded (`decode.beam_size` beams, whichever split is read), and reports the
generative list and, for a model with the dense head, the dense list and the hybrid list at the
weight the validation curve picks (`evaluate/modes.py:choose_weight`) with that curve. Writes
OUTPUT/decode_study.json and decode_study.md.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from distributed_rec.artifacts import RunPaths, write_json_atomic
from distributed_rec.cli import configure_logging
from distributed_rec.config import ConfigError, JobConfig, load_config, with_overrides
from distributed_rec.decode import ValidIdIndex
from distributed_rec.distributed.process_exit import end_process
from distributed_rec.evaluate.metrics import ranking_metrics
from distributed_rec.evaluate.modes import choose_weight, hybrid_lists
from distributed_rec.evaluate.shards import read_split
from distributed_rec.evaluate.worker import decode_lists
from distributed_rec.model.weights import load_best_model
from distributed_rec.semantic_ids.id_table import SemanticIdTable

log = logging.getLogger("distributed_rec.reproduce.decode_study")

REPORTED = ("recall@10", "ndcg@10")


def parse_variant(text: str) -> dict[str, str]:
    """'decode.steps=1,decode.beam_size=100' -> {'steps': '1', 'beam_size': '100'}."""
    changes: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        section, dot, name = key.partition(".")
        if not sep or section != "decode" or not dot or not name:
            raise ConfigError(f"--variant {text!r}: expected decode.<key>=<value>[,...]")
        changes[name] = value
    return changes


def variant_config(config: JobConfig, changes: dict[str, str]) -> JobConfig:
    """`config` with the decode keys changed, values coerced and checked like CLI overrides."""
    overrides = [f"--decode.{key}={value}" for key, value in changes.items()]
    return with_overrides(config, overrides)


def decode_row(
    config: JobConfig,
    model: Any,
    table: SemanticIdTable,
    index: ValidIdIndex,
    histories: list[np.ndarray],
    targets: np.ndarray,
) -> dict[str, Any]:
    """Metrics of each ranked list of one decoding variant on the given users, decoded as the
    test split is (`decode.beam_size` beams, whatever the split)."""
    started = time.perf_counter()
    beam_size = config.decode.beam_size
    ranked_UK, columns = decode_lists(config, model, table, index, histories, beam_size)
    row: dict[str, Any] = {"generative": ranking_metrics(ranked_UK, targets)}
    if columns is not None:
        top_k = config.decode.top_k
        weight, curve = choose_weight(columns, targets, config.decode.hybrid_grid, top_k)
        row["dense"] = ranking_metrics(columns["dense"], targets)
        row["hybrid"] = ranking_metrics(hybrid_lists(columns, weight, top_k), targets)
        row["hybrid_weight"] = weight
        row["valid_by_weight"] = curve
    row["seconds"] = time.perf_counter() - started
    return row


def run_study(
    config: JobConfig, variants: list[dict[str, str]], max_users: int, split: str = "valid"
) -> dict[str, Any]:
    paths = RunPaths.of(config.run_dir)
    dense = [paths.item_embeddings] if config.model.dense_loss_weight > 0 else []
    paths.fetch(paths.semantic_ids, paths.best_model, paths.eval_split(split), *dense)
    model = load_best_model(config)
    table = SemanticIdTable.read(paths.semantic_ids)
    index = ValidIdIndex(table)
    users = read_split(paths.eval_split(split), config.data.max_history)
    rows_U = np.arange(len(users.targets))
    if max_users and len(rows_U) > max_users:
        rng = np.random.default_rng(config.evaluate.sample_seed)
        rows_U = np.sort(rng.choice(len(rows_U), max_users, replace=False))
    histories = [users.histories[r] for r in rows_U]
    targets = users.targets[rows_U]
    rows = []
    for changes in [{}, *variants]:
        variant = variant_config(config, changes)
        row = decode_row(variant, model, table, index, histories, targets)
        row["variant"] = ", ".join(f"{k}={v}" for k, v in changes.items()) or "the run's decode"
        log.info(
            "decode study %s: %s",
            row["variant"],
            {k: row[k] for k in row if k != "valid_by_weight"},
        )
        rows.append(row)
    return {"split": split, "users": len(targets), "decode": vars(config.decode), "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lists = [m for m in ("generative", "dense", "hybrid") if m in result["rows"][0]]
    header = ["variant"]
    for mode in lists:
        header += [f"{mode} R@10", f"{mode} N@10"]
    header += ["w", "seconds"] if "hybrid" in lists else ["seconds"]
    lines = [
        f"# Decoding variants ({result['split']} split, {result['users']} users)",
        "",
        "| " + " | ".join(header) + " |",
        "|---" + "|---:" * (len(header) - 1) + "|",
    ]
    for row in result["rows"]:
        cells = [row["variant"]]
        for mode in lists:
            cells += [f"{row[mode][key]:.4f}" for key in REPORTED]
        if "hybrid" in lists:
            cells.append(f"{row['hybrid_weight']:.2f}")
        cells.append(f"{row['seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    configure_logging()
    recipe, run_dir, output, max_users, split = None, None, None, 0, "valid"
    variants: list[dict[str, str]] = []
    overrides: list[str] = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "--config":
            recipe = value
        elif key == "--output":
            output = value
        elif key == "--max_users":
            max_users = int(value)
        elif key == "--split":
            split = value
        elif key == "--variant":
            variants.append(parse_variant(value))
        else:
            if key == "--run_dir":
                run_dir = value
            overrides.append(arg)
    if split not in ("valid", "test"):
        raise ConfigError(f"--split={split!r} is not one of valid, test")
    if run_dir is None:
        raise ConfigError("--run_dir=DIR of a trained run is required")
    config = load_config(recipe, overrides)
    result = run_study(config, variants, max_users, split)
    folder = Path(output) if output else RunPaths.of(config.run_dir).root / "decode_study"
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "decode_study.json", result)
    (folder / "decode_study.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    try:
        status = main(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        status = 2
    end_process(status)
