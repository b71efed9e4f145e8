"""Small hand-built raw datasets in every input format, written into a test's tmp_path."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# (user, item, timestamp) in input order: 3 users, 4 items, one duplicate (u1, i2), one tie.
EVENTS = [
    ("u1", "i1", 100),
    ("u1", "i2", 200),
    ("u2", "i2", 50),
    ("u1", "i2", 300),  # duplicate of (u1, i2): dropped, the earlier one is kept
    ("u2", "i3", 50),  # same timestamp as (u2, i2): input order decides
    ("u3", "i4", 10),
    ("u1", "i3", 400),
    ("u2", "i1", 60),
    ("u3", "i1", 20),
]
META = {
    "i1": {
        "title": "Red <b>Lamp</b>",
        "description": ["Bright &amp; warm", "LED"],
        "store": "Acme",
    },
    "i2": {"title": "Blue   Chair", "description": [], "store": "Seats"},
    "i3": {"title": "Green Table.", "description": ["Oak"], "store": None},
    "i4": {"title": "Pen", "description": ["Black ink"], "store": "Ink Co"},
}


def write_jsonl(path: Path, records: list, gz: bool | None = None) -> Path:
    lines = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if gz if gz is not None else path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(lines)
    else:
        path.write_text(lines)
    return path


def review_records(events: list = EVENTS) -> list[dict]:
    return [
        {"rating": 5.0, "user_id": u, "parent_asin": i, "timestamp": t * 1000, "text": "ok"}
        for u, i, t in events
    ]


def meta_records(meta: dict = META) -> list[dict]:
    return [
        {"parent_asin": k, "features": [], "categories": ["Home"], "details": {"Color": "x"}, **v}
        for k, v in meta.items()
    ]


def write_amazon2023(root: Path, name: str = "Home", gz: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".jsonl.gz" if gz else ".jsonl"
    write_jsonl(root / f"{name}{suffix}", review_records())
    write_jsonl(root / f"meta_{name}{suffix}", meta_records())
    return root


def write_benchmark(root: Path, name: str = "Home") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    splits = {"train": EVENTS[:5], "valid": EVENTS[5:7], "test": EVENTS[7:]}
    for split, events in splits.items():
        with (root / f"{name}.{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["user_id", "parent_asin", "rating", "timestamp", "history"])
            for u, i, t in events:
                writer.writerow([u, i, 5.0, t * 1000, ""])
    write_jsonl(root / f"meta_{name}.jsonl", meta_records())
    return root


def write_lcrec(root: Path, name: str = "Tiny") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    sequences: dict[str, list[str]] = {}
    for user, item, _ in sorted(EVENTS, key=lambda e: (e[0], e[2])):
        sequences.setdefault(user, []).append(item)
    (root / f"{name}.inter.json").write_text(json.dumps(sequences))
    items = {k: {"title": v["title"], "description": "", "brand": v["store"] or "",
                 "categories": "Home,Decor"} for k, v in META.items()}  # fmt: skip
    (root / f"{name}.item.json").write_text(json.dumps(items))
    return root


def write_table(root: Path, kind: str = "csv", events: list = EVENTS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    interactions = pa.table(
        {
            "user_id": [e[0] for e in events],
            "item_id": [e[1] for e in events],
            "timestamp": [e[2] for e in events],
        }
    )
    items = pa.table({"item_id": list(META), "title": [v["title"] for v in META.values()]})
    if kind == "parquet":
        pq.write_table(interactions, root / "interactions.parquet")
        pq.write_table(items, root / "items.parquet")
    else:
        interactions.to_pandas().to_csv(root / "interactions.csv", index=False)
        items.to_pandas().to_csv(root / "items.csv", index=False)
    return root


def write_ml100k(root: Path) -> Path:
    folder = root / "ml-100k"
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["1\t10\t5\t881250949", "1\t20\t3\t881250949", "2\t10\t4\t881250950"]
    (folder / "u.data").write_text("\n".join(rows) + "\n")
    flags = "|".join(["0"] * 19)
    genre_flags = ["0"] * 19
    genre_flags[3] = genre_flags[5] = "1"  # Animation, Comedy
    lines = [
        "10|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(genre_flags),
        "20|Caf\xe9 Society (1996)|01-Jan-1996||http://y|" + flags,
    ]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return root


def write_ml1m(root: Path) -> Path:
    folder = root / "ml-1m"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("1::10::5::978300760\n2::10::3::978302109\n")
    movies = "10::Jumanji (1995)::Adventure|Children's|Fantasy\n"
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    return root
