"""results.json and results.md of the `run` stage: what ran, what was skipped, the metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distributed_rec.artifacts import STAGES, RunPaths, write_json_atomic
from distributed_rec.config import JobConfig
from distributed_rec.evaluate.tables import metrics_table, ranked_list_note


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def write_results(config: JobConfig, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Collect each stage's summary and metrics files into results.json and results.md."""
    paths = RunPaths.of(config.run_dir)
    summaries_of = (paths.prepare_stats, paths.tokenizer_metrics, paths.train_metrics)
    paths.fetch(*summaries_of, paths.eval_metrics)  # skipped stages' files (remote run dir)
    ran = {s["stage"]: s for s in summaries}
    results = {
        "run_dir": paths.location,
        "stages": summaries,
        "unavailable": [s for s in STAGES if ran.get(s, {}).get("unavailable")]
        + [s for s in STAGES if s not in ran],
        "prepare": _read_json(paths.prepare_stats),
        "tokenize": _read_json(paths.tokenizer_metrics),
        "train": _read_json(paths.train_metrics),
        "evaluate": _read_json(paths.eval_metrics),
    }
    baselines = {}
    for model in config.baseline.in_run:
        path = paths.root / "baselines" / model / "metrics.json"
        paths.fetch(path)
        baselines[model] = _read_json(path)
    results["baselines"] = {k: v for k, v in baselines.items() if v}
    if results["evaluate"]:
        results["model_vs_popularity"] = model_vs_popularity(results["evaluate"])
        for model, metrics in results["baselines"].items():
            floor = results["evaluate"].get("popularity", {})
            results[f"{model}_vs_popularity"] = _ratios(metrics.get("test", {}), floor)
    write_json_atomic(paths.results_json, results)
    paths.results_md.write_text(render_markdown(results))
    paths.publish(paths.results_json, paths.results_md)
    print(render_markdown(results))
    return results


def _ratios(values: dict[str, float], floor: dict[str, float]) -> dict[str, float | None]:
    return {
        key: (values[key] / floor[key] if floor.get(key) else None)
        for key in floor
        if key in values
    }


def model_vs_popularity(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Model metric / popularity metric on the popularity split (None where the floor is 0)."""
    model = metrics.get(metrics.get("popularity_split", "test"), {})
    return _ratios(model, metrics.get("popularity", {}))


def render_markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Results: {results['run_dir']}",
        "",
        "| stage | status | seconds |",
        "|---|---|---|",
    ]
    for summary in results["stages"]:
        if summary.get("unavailable"):
            status = "not available yet"
        else:
            status = "skipped (unchanged)" if summary.get("skipped") else "ran"
        seconds = summary.get("seconds")
        lines.append(
            f"| {summary['stage']} | {status} | {'' if seconds is None else f'{seconds:.1f}'} |"
        )
    for stage in results["unavailable"]:
        if all(s["stage"] != stage for s in results["stages"]):
            lines.append(f"| {stage} | not run (an earlier stage is not available) | |")
    stats = results.get("prepare")
    if stats:
        lines += ["", "## Data", ""]
        lines += [f"- {key}: {stats[key]}" for key in ("users", "items", "interactions")]
    metrics = results.get("evaluate")
    if metrics:
        baselines = results.get("baselines") or {}
        lines += ["", "## Metrics: model vs most-popular floor", ""]
        lines += [metrics_table(metrics, baselines), ""]
        lines.append(ranked_list_note(metrics["decode"]))
        mode = metrics.get("ranking", {}).get("mode", "generative")
        for name, key in (
            (f"Model ({mode})", "model_vs_popularity"),
            *((f"{model}", f"{model}_vs_popularity") for model in baselines),
        ):
            ratios = results.get(key) or {}
            if ratios.get("recall@10") and ratios.get("ndcg@10"):
                lines += [
                    "",
                    f"{name} / popularity: recall@10 x{ratios['recall@10']:.2f}, "
                    f"ndcg@10 x{ratios['ndcg@10']:.2f}.",
                ]
        lines += [
            "",
            f"- evaluation users/s: {metrics['users_per_s']:.1f}",
            f"- configuration hash: {metrics['config_hash']}",
        ]
    return "\n".join(lines) + "\n"
