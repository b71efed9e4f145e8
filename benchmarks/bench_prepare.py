"""Wall time, rows/s and peak memory of the prepare stage: the embedded default, synthetic logs
of several sizes (10M, 30M and 100M interactions by default) and a generated Amazon-2023-format
review file (JSON lines, 20M lines by default), each prepared by the out-of-core pipeline.

    nice -n 10 .venv/bin/python benchmarks/bench_prepare.py [--interactions=10000000,30000000]
        [--users_per_interaction=0.1] [--items=200000] [--jsonl_lines=20000000]
        [--num_shards=32] [--run_dir=/tmp/bench_prepare] [--skip_embedded] [--keep]

Each run starts its own local Ray (as `python -m distributed_rec prepare` does), so the times
include Ray start-up. Peak memory is sampled every 0.2 s over this process and all its
descendants (raylet, GCS, Ray workers): the sum of PSS (shared pages such as the object store
counted once, proportionally) and, as an upper bound, the sum of RSS. The JSON-lines file is
generated before its run (not timed) from the synthetic log's users and items, with the fields
and sizes of real Amazon Reviews 2023 lines (~235 bytes); `--jsonl_lines=0` skips it. The last
line prints the time per interaction of each synthetic size relative to the smallest (1.0 or
less is at most linear). `--keep` keeps the run folders (e.g. to train on the largest).
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from distributed_rec.config import load_config
from distributed_rec.data.prepare import run_prepare
from distributed_rec.data.readers.synthetic import generate_chunks

GIB = 1 << 30


class PeakMemory:
    """Samples the process tree's memory in a background thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peak_pss, self.peak_rss = interval, 0, 0
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        root = psutil.Process()
        pss = rss = 0
        for proc in [root, *root.children(recursive=True)]:
            try:
                info = proc.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            pss += getattr(info, "pss", info.rss)
            rss += info.rss
            try:
                times = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            self._cpu[proc.pid] = times.user + times.system
        self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of the tree (each process as last sampled: up to 0.2 s of a process
        that ended is missed)."""
        return sum(self._cpu.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed_prepare(recipe: str | None, overrides: list[str]) -> tuple[dict, float, PeakMemory]:
    config = load_config(recipe, overrides)
    shutil.rmtree(config.run_dir, ignore_errors=True)
    with PeakMemory() as memory:
        started = time.perf_counter()
        run_prepare(config)
        seconds = time.perf_counter() - started
    stats = json.loads((Path(config.run_dir) / "prepare" / "stats.json").read_text())
    return stats, seconds, memory


def report(name: str, stats: dict, seconds: float, memory: PeakMemory) -> None:
    raw = stats["raw"]["interactions"]
    print(
        f"{name}: {seconds:.1f} s wall, {raw:,} raw rows -> {stats['users']:,} users, "
        f"{stats['items']:,} items, {stats['interactions']:,} interactions, "
        f"{stats['split']['train_samples']:,} train samples; {raw / seconds:,.0f} rows/s; "
        f"peak memory {memory.peak_pss / GIB:.2f} GiB PSS ({memory.peak_rss / GIB:.2f} GiB RSS sum); "
        f"{memory.cpu_seconds:.0f} CPU-s (process tree); "
        f"phases {json.dumps({k: round(v, 1) for k, v in stats['seconds'].items()})}",
        flush=True,
    )


def _ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Amazon-looking ids: `prefix` + the number in base 36, left-padded to `width`."""
    digits = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    out = np.full((len(numbers), width), "0")
    value = numbers.copy()
    for column in range(width - 1, -1, -1):
        out[:, column] = digits[value % 36]
        value //= 36
    return np.char.add(prefix, np.array(["".join(r) for r in out]))


def write_reviews(root: Path, lines: int, users: int, items: int) -> Path:
    """Bench.jsonl (reviews) and meta_Bench.jsonl in `root`, from the synthetic generator."""
    root.mkdir(parents=True, exist_ok=True)
    config = load_config(
        None,
        [
            "--data.format=synthetic",
            f"--data.synthetic_users={users}",
            f"--data.synthetic_items={items}",
            f"--data.synthetic_interactions={lines}",
        ],
    ).data
    asins = _ids("B0", np.arange(items), 8)
    names = _ids("A", np.arange(users), 27)
    text = "Works as described, would buy again."
    with (root / "Bench.jsonl").open("w") as out:
        for chunk in generate_chunks(config):
            rng = np.random.default_rng(len(chunk))
            order = rng.permutation(chunk.num_rows)  # reviews are not grouped by user
            user = names[chunk["user"].to_numpy()[order]]
            item = asins[chunk["item"].to_numpy()[order]]
            stamp = chunk["timestamp"].to_numpy()[order] * 1000 + rng.integers(0, 1000, len(order))
            rating = rng.integers(1, 6, len(order))
            out.writelines(
                f'{{"rating": {r}.0, "title": "Good", "text": "{text}", "images": [], '
                f'"asin": "{i}", "parent_asin": "{i}", "user_id": "{u}", "timestamp": {t}, '
                f'"helpful_vote": 0, "verified_purchase": true}}\n'
                for r, i, u, t in zip(
                    rating.tolist(), item.tolist(), user.tolist(), stamp.tolist(), strict=True
                )
            )
    with (root / "meta_Bench.jsonl").open("w") as out:
        for index, asin in enumerate(asins.tolist()):
            record = {
                "main_category": "Bench",
                "title": f"Product {index}",
                "features": ["Sturdy", "Light"],
                "description": [f"Item number {index} of the benchmark catalogue."],
                "categories": ["Bench", f"Group {index % 50}"],
                "store": f"Store {index % 97}",
                "details": {"Colour": "Grey"},
                "parent_asin": asin,
            }
            out.write(json.dumps(record) + "\n")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", default="10000000,30000000,100000000")
    parser.add_argument("--users_per_interaction", type=float, default=0.1)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--jsonl_lines", type=int, default=20_000_000)
    parser.add_argument("--num_shards", type=int, default=32)
    parser.add_argument("--run_dir", default="/tmp/bench_prepare")
    parser.add_argument("--skip_embedded", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    root = Path(args.run_dir)
    print(f"CPUs: {psutil.cpu_count()}, memory: {psutil.virtual_memory().total / GIB:.1f} GiB")
    if not args.skip_embedded:
        stats, seconds, memory = timed_prepare("default", [f"--run_dir={root}/embedded"])
        report("embedded MovieLens 100K (default recipe)", stats, seconds, memory)
    per_row: dict[int, float] = {}
    cpu_per_row: dict[int, float] = {}
    for size in (int(n) for n in args.interactions.split(",") if n):
        users = max(1, int(size * args.users_per_interaction))
        overrides = [
            f"--run_dir={root}/synthetic_{size}",
            "--data.format=synthetic",
            f"--data.synthetic_users={users}",
            f"--data.synthetic_items={args.items}",
            f"--data.synthetic_interactions={size}",
            f"--data.num_shards={args.num_shards}",
        ]
        stats, seconds, memory = timed_prepare(None, overrides)
        report(f"synthetic {size:,} interactions ({users:,} users)", stats, seconds, memory)
        per_row[size] = seconds / size
        cpu_per_row[size] = memory.cpu_seconds / size
        if not args.keep:
            shutil.rmtree(f"{root}/synthetic_{size}", ignore_errors=True)
    if args.jsonl_lines:
        raw = root / "jsonl_raw"
        users = max(1, int(args.jsonl_lines * args.users_per_interaction))
        started = time.perf_counter()
        write_reviews(raw, args.jsonl_lines, users, args.items)
        size = (raw / "Bench.jsonl").stat().st_size
        print(f"generated {args.jsonl_lines:,} review lines ({size / GIB:.2f} GiB) in "
              f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
        overrides = [
            f"--run_dir={root}/jsonl",
            "--data.format=amazon2023",
            f"--data.path={raw}",
            f"--data.num_shards={args.num_shards}",
        ]
        stats, seconds, memory = timed_prepare(None, overrides)
        report(f"Amazon-2023 JSONL, {args.jsonl_lines:,} lines", stats, seconds, memory)
        if not args.keep:
            shutil.rmtree(raw, ignore_errors=True)
            shutil.rmtree(f"{root}/jsonl", ignore_errors=True)
    for name, figures in (("wall time", per_row), ("CPU time", cpu_per_row)):
        if len(figures) > 1:
            base = figures[min(figures)]
            relative = ", ".join(f"{n:,}: {t / base:.2f}" for n, t in sorted(figures.items()))
            print(f"{name} per interaction relative to {min(figures):,}: {relative}")


if __name__ == "__main__":
    main()
