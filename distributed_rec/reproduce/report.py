"""docs/results/<dataset>.md from a study's results: one table per study table (SPEC §9 shape)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from distributed_rec.evaluate.metrics import METRIC_KEYS
from distributed_rec.reproduce.study import Study

_PACKAGES = ("torch", "deepspeed", "ray", "faiss-cpu", "sentence-transformers", "pyarrow")
KIND_NAMES = {"llada": "LLaDA-Rec", "sasrec": "SASRec", "tiger": "TIGER-style"}


def software_versions() -> dict[str, str]:
    """Installed versions of the packages results depend on, and this checkout's commit."""
    versions = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["distributed_rec"] = git_commit()
    return versions


def machine_description() -> str:
    """CPU count and GPU (if any) of this machine, for the report header."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), {gpu}"


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    )
    return completed.stdout.strip()


def git_commit() -> str:
    """HEAD of the checkout this package runs from (+'-dirty' with local changes), or 'unknown'."""
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def format_seconds(seconds: float | None, partial: bool = False) -> str:
    if seconds is None:
        return "n/a"
    text = f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
    return text + ("+" if partial else "")


def study_compute_seconds(rows: list[dict[str, Any]]) -> tuple[float, bool]:
    """Seconds of every distinct stage the rows used, shared stages once; and whether some
    stage's time was not recorded (then the figure is a lower bound)."""
    seen: dict[str, float | None] = {}
    for row in rows:
        dirs = row.get("stage_dirs") or {}
        for stage, seconds in (row.get("stage_seconds") or {}).items():
            seen[dirs.get(stage, f"{row['row_dir']}/{stage}")] = seconds
    known = [s for s in seen.values() if s is not None]
    return sum(known), len(known) < len(seen)


def _wall(row: dict[str, Any]) -> str:
    known = [s for s in (row.get("stage_seconds") or {}).values() if s is not None]
    if not known:
        return "n/a"
    partial = len(known) < len(row.get("stage_seconds") or {})
    return format_seconds(sum(known), partial)


def _epochs(row: dict[str, Any]) -> str:
    train = row.get("train") or {}
    if train.get("epochs_run") is None:
        return ""
    best = train.get("best_epoch")
    return f"{train['epochs_run']}" + (f" (best {best})" if best else "")


def results_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of one study table's rows, with a popularity floor row where known."""
    header = ["row", "model", *METRIC_KEYS, "users", "epochs", "wall", "config"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for row in rows:
        if row.get("metrics"):
            cells = [f"{row['metrics'][key]:.4f}" for key in METRIC_KEYS]
        else:
            cells = [""] * len(METRIC_KEYS)
        label = row["label"] if row["status"] == "done" else f"{row['label']} ({row['status']})"
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    KIND_NAMES[row["kind"]],
                    *cells,
                    "" if row.get("users") is None else str(row["users"]),
                    _epochs(row),
                    _wall(row),
                    f"`{row['config_hash']}`",
                ]
            )
            + " |"
        )
    floor = next((r["popularity"] for r in rows if r.get("popularity")), None)
    if floor:
        users = next((r["users"] for r in rows if r.get("popularity")), "")
        cells = [f"{floor[key]:.4f}" for key in METRIC_KEYS]
        lines.append("| most popular (floor) | | " + " | ".join(cells) + f" | {users} | | | |")
    return "\n".join(lines)


def _overrides_text(overrides: dict[str, Any]) -> str:
    if not overrides:
        return "(recipe as is)"
    return " ".join(f"`--{key}={value}`" for key, value in sorted(overrides.items()))


def write_report(
    study: Study,
    results: dict[str, Any],
    dataset: str,
    output: Path,
    command: str,
    recipe: str,
    plots: list[Path],
    notes: str = "",
) -> Path:
    """Write `output/<dataset>.md`; plot paths are linked relative to it. Returns its path."""
    rows_by_table: dict[str, list[dict[str, Any]]] = {}
    for row in results["rows"]:
        rows_by_table.setdefault(row["table"], []).append(row)
    versions = results.get("versions") or software_versions()
    lines = [
        f"# Results on {dataset}: study `{study.name}`",
        "",
        f"{study.description}.",
        "",
        "Produced by",
        "",
        "```",
        command,
        "```",
        "",
        f"- recipe: `{recipe}`; study file: `{study.path.name}`",
        f"- machine: {results.get('machine') or machine_description()}",
        f"- compute of the rows reported (every distinct stage once): "
        f"{format_seconds(*study_compute_seconds(results['rows']))}; time spent by the last "
        f"invocation: {format_seconds(results.get('elapsed_seconds'))}"
        + (
            f" of a {format_seconds(results['budget_seconds'])} budget"
            if results.get("budget_seconds")  # 0: a collect-only invocation
            else ""
        ),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "- Ranked lists are the generated top-K (K = 10 distinct real items from constrained "
        "beam search for LLaDA-Rec and TIGER-style; SASRec ranks all items); items of the user's "
        "history are never recommended, by any model or the popularity floor.",
        "- `wall` adds up the stages the row needs (prepare, embed, tokenize, train, evaluate or "
        "baseline), including stages it shares with other rows; `+` means some stage times were "
        "not recorded. `config` is the hash of every setting that decides the row's result.",
    ]
    budgets = study.budgets
    for name, values in budgets.items():
        settings = ", ".join(f"`{k}={v}`" for k, v in values.items())
        lines.append(f"- budget `{name}` (tables marked with it): {settings}")
    if notes:
        lines += ["", notes.strip()]
    for table in study.tables:
        rows = rows_by_table.get(table.id)
        if not rows:
            continue
        budget = f" — budget `{table.budget}`" if table.budget else ""
        lines += ["", f"## {table.title}{budget}", "", results_table(rows), ""]
        lines.append(
            "Rows: " + "; ".join(f"{r.label}: {_overrides_text(r.overrides)}" for r in table.rows)
        )
    if plots:
        lines += ["", "## Plots", ""]
        for plot in plots:
            relative = os.path.relpath(plot, output)
            lines.append(f"![{plot.stem}]({relative})")
            lines.append("")
    path = output / f"{dataset}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
