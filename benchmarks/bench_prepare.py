"""Wall time of the prepare stage on the embedded default, and time, rows/s and peak memory of
preparing a large synthetic log (10M interactions by default).

    nice -n 10 .venv/bin/python benchmarks/bench_prepare.py [--interactions=10000000]
        [--users=1000000] [--items=200000] [--run_dir=/tmp/bench_prepare] [--skip_embedded]

Each run starts its own local Ray (as `python -m distributed_rec prepare` does), so the times
include Ray start-up. Peak memory is sampled every 0.2 s over this process and all its
descendants (raylet, GCS, Ray workers): the sum of PSS (shared pages such as the object store
counted once, proportionally) and, as an upper bound, the sum of RSS.
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from pathlib import Path

import psutil

from distributed_rec.config import load_config
from distributed_rec.data.prepare import run_prepare

GIB = 1 << 30


class PeakMemory:
    """Samples the process tree's memory in a background thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peak_pss, self.peak_rss = interval, 0, 0
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
        self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)

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
        f"phases {json.dumps({k: round(v, 1) for k, v in stats['seconds'].items()})}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--num_shards", type=int, default=8)
    parser.add_argument("--run_dir", default="/tmp/bench_prepare")
    parser.add_argument("--skip_embedded", action="store_true")
    args = parser.parse_args()
    print(f"CPUs: {psutil.cpu_count()}, memory: {psutil.virtual_memory().total / GIB:.1f} GiB")
    if not args.skip_embedded:
        stats, seconds, memory = timed_prepare("default", [f"--run_dir={args.run_dir}/embedded"])
        report("embedded MovieLens 100K (default recipe)", stats, seconds, memory)
    overrides = [
        f"--run_dir={args.run_dir}/synthetic",
        "--data.format=synthetic",
        f"--data.synthetic_users={args.users}",
        f"--data.synthetic_items={args.items}",
        f"--data.synthetic_interactions={args.interactions}",
        f"--data.num_shards={args.num_shards}",
    ]
    stats, seconds, memory = timed_prepare(None, overrides)
    report(f"synthetic {args.interactions:,} interactions", stats, seconds, memory)


if __name__ == "__main__":
    main()
