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


MODE_NOTE = (
    "The model's rows are its {mode} lists. Ranking modes, all from the same decode: generative "
    "(the beam search's lists), dense (every item scored by the dense retrieval head), hybrid (the "
    "beam's items plus the dense top-{dense_candidates}, ranked by (1 - w) * generative log-prob "
    "+ w * dense log-prob, w = {weight:.4g} from {weight_from})."
)


def _mode_rows(metrics: dict[str, Any]) -> list[tuple[str, int | None, dict[str, float]]]:
    ranking = metrics.get("ranking", {})
    users = metrics.get("users", {})
    rows = []
    modes = ranking.get("modes", {})
    for mode in ("generative", "dense", "hybrid"):
        by_split = modes.get(mode, {})
        for split in ("valid", "test"):
            if isinstance(by_split.get(split), dict):
                rows.append((f"{split} ({mode})", users.get(split), by_split[split]))
    return rows


def metrics_rows(
    metrics: dict[str, Any], baselines: dict[str, dict[str, Any]] | None = None
) -> list[tuple[str, int | None, dict[str, float]]]:
    """(label, users, values) per evaluated split, per ranking mode where the model has the
    dense head, for each baseline trained on the same splits (`baselines`: name -> its
    metrics.json), and for the popularity baseline."""
    users = metrics.get("users", {})
    rows = [
        (f"{split} (model)", users.get(split), metrics[split])
        for split in ("valid", "test")
        if isinstance(metrics.get(split), dict)
    ]
    rows += _mode_rows(metrics)
    for name, result in (baselines or {}).items():
        for split in ("valid", "test"):
            if isinstance(result.get(split), dict):
                count = result.get("users", {}).get(split)
                if split == "valid":  # its validation metrics are those of the selection sample
                    count = result.get("valid_users_for_selection", count)
                rows.append((f"{split} ({name})", count, result[split]))
    if isinstance(metrics.get("popularity"), dict):
        split = metrics.get("popularity_split", "test")
        rows.append((f"{split} (most popular)", users.get(split), metrics["popularity"]))
    return rows


def metrics_table(
    metrics: dict[str, Any], baselines: dict[str, dict[str, Any]] | None = None
) -> str:
    """A Markdown table: one row per split (and ranking mode, and baseline) and the popularity
    baseline, one column per metric."""
    lines = [
        "| split | users | " + " | ".join(METRIC_KEYS) + " |",
        "|---|---:|" + "---:|" * len(METRIC_KEYS),
    ]
    for label, users, values in metrics_rows(metrics, baselines):
        cells = " | ".join(f"{values[key]:.4f}" for key in METRIC_KEYS)
        lines.append(f"| {label} | {'' if users is None else users} | {cells} |")
    return "\n".join(lines)


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """DIR/evaluate/metrics.md: the table, how lists were made, speed and configuration hash."""
    decode = metrics["decode"]
    ranking = metrics.get("ranking", {})
    notes = [ranked_list_note(decode), ""]
    if "modes" in ranking:
        note = MODE_NOTE.format(
            mode=ranking["mode"],
            dense_candidates=decode.get("dense_candidates"),
            weight=ranking["hybrid_weight"],
            weight_from=ranking["hybrid_weight_from"],
        )
        notes += [note, ""]
    return "\n".join(
        [
            "# Evaluation",
            "",
            metrics_table(metrics),
            "",
            *notes,
            f"- users/s: {metrics['users_per_s']:.1f} ({metrics['decode_seconds']:.1f} s decoding, "
            f"{metrics['num_shards']} shards, {'Ray tasks' if metrics['use_ray'] else 'in-process'})",
            f"- wall time: {metrics['wall_seconds']:.1f} s",
            f"- configuration hash: {metrics['config_hash']}",
            "",
        ]
    )
