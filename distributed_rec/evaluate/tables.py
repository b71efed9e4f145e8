"""Markdown tables of evaluation metrics (DIR/evaluate/metrics.md, results.md)."""

from __future__ import annotations

from typing import Any

from distributed_rec.evaluate.metrics import METRIC_KEYS

RANKED_LIST_NOTE = (
    "Ranked lists are the generated top-K: the {top_k} distinct real items returned by "
    "constrained {order}-order beam search (B={beam_size} on test, B={valid_beam_size} on valid; "
    "T={steps}) for each user, {history_rule}; "
    "the popularity floor ranks the most frequent training items not in the user's history."
)


def ranked_list_note(decode: dict[str, Any]) -> str:
    """RANKED_LIST_NOTE for a run's decode settings (metrics.json's "decode")."""
    excluded = decode.get("exclude_history", False)
    rule = "items of the user's history excluded" if excluded else "history items allowed"
    if decode.get("forward_dtype"):
        rule += f"; model forward pass in {decode['forward_dtype']}, scores in fp32"
    return RANKED_LIST_NOTE.format(history_rule=rule, **decode)


def metrics_rows(metrics: dict[str, Any]) -> list[tuple[str, int | None, dict[str, float]]]:
    """(label, users, values) per evaluated split and for the popularity baseline."""
    users = metrics.get("users", {})
    rows = [
        (f"{split} (model)", users.get(split), metrics[split])
        for split in ("valid", "test")
        if isinstance(metrics.get(split), dict)
    ]
    if isinstance(metrics.get("popularity"), dict):
        split = metrics.get("popularity_split", "test")
        rows.append((f"{split} (most popular)", users.get(split), metrics["popularity"]))
    return rows


def metrics_table(metrics: dict[str, Any]) -> str:
    """A Markdown table: one row per split and the popularity baseline, one column per metric."""
    lines = [
        "| split | users | " + " | ".join(METRIC_KEYS) + " |",
        "|---|---:|" + "---:|" * len(METRIC_KEYS),
    ]
    for label, users, values in metrics_rows(metrics):
        cells = " | ".join(f"{values[key]:.4f}" for key in METRIC_KEYS)
        lines.append(f"| {label} | {'' if users is None else users} | {cells} |")
    return "\n".join(lines)


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """DIR/evaluate/metrics.md: the table, how lists were made, speed and configuration hash."""
    decode = metrics["decode"]
    return "\n".join(
        [
            "# Evaluation",
            "",
            metrics_table(metrics),
            "",
            ranked_list_note(decode),
            "",
            f"- users/s: {metrics['users_per_s']:.1f} ({metrics['decode_seconds']:.1f} s decoding, "
            f"{metrics['num_shards']} shards, {'Ray tasks' if metrics['use_ray'] else 'in-process'})",
            f"- wall time: {metrics['wall_seconds']:.1f} s",
            f"- configuration hash: {metrics['config_hash']}",
            "",
        ]
    )
