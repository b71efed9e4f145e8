"""Where each stage writes its artifacts under the run directory, and stage skipping.

The layout (SPEC §1) is the contract between stages:

    DIR/config.json                         resolved JobConfig of the last command
    DIR/prepare/items.parquet               item_id:int64 (dense 0..N-1), raw_item_id:str, text:str
    DIR/prepare/interactions/part-*.parquet user_id:int64, raw_user_id:str, item_id:int64,
                                            timestamp:int64, seq:int32 (order within the user)
    DIR/prepare/splits/train/part-*.parquet user_id:int64, history:list<int64>, target:int64
    DIR/prepare/splits/train_windows/part-*.parquet
                                            user_id:int64, items:list<int64> (whole-sequence
                                            training: item 0 context, items 1.. targets)
    DIR/prepare/splits/valid.parquet        user_id:int64, history:list<int64>, target:int64
    DIR/prepare/splits/test.parquet         user_id:int64, history:list<int64>, target:int64
    DIR/prepare/stats.json
    DIR/embed/item_embeddings.parquet       item_id:int64, embedding:fixed_size_list<float32>
    DIR/tokenize/semantic_ids.parquet       item_id:int64, c_1..c_M:int32
    DIR/tokenize/tokenizer.pt               tokenizer weights (weights-only loadable)
    DIR/tokenize/tokenizer_metrics.json
    DIR/train/checkpoints/                  resumable DeepSpeed checkpoints
    DIR/train/best/model.pt                 best mask-predictor state dict (weights only)
    DIR/train/train_metrics.json
    DIR/tensorboard/<stage>/                TensorBoard event files
    DIR/evaluate/predictions/<split>/shard-*.parquet
    DIR/evaluate/metrics.json, metrics.md
    DIR/results.json, results.md            written by the `run` stage

DIR may be `s3://bucket/prefix` (storage/): then `RunPaths.root` is the local staging mirror of
that prefix, every stage reads and writes there as it would in a local folder, and the pipeline
calls `fetch` (object store -> mirror) before and `publish` (mirror -> object store) after each
stage; checkpoints and evaluation shards are also published as they are written.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGES = ("prepare", "embed", "tokenize", "train", "evaluate")


@dataclass(frozen=True)
class RunPaths:
    """Paths of every artifact of one run directory.

    `root` is where the files are read and written on this machine; `remote` is the
    `s3://bucket/prefix` that `root` mirrors, None for a local run directory.
    """

    root: Path
    remote: str | None = None

    @classmethod
    def of(cls, run_dir: str | Path) -> RunPaths:
        """The paths of `run_dir`: a local folder, or an object-store URI and its local mirror."""
        from distributed_rec.storage.uri import is_remote, parse_uri, staging_dir

        if is_remote(str(run_dir)):
            remote = parse_uri(str(run_dir))
            return cls(staging_dir(remote), remote=remote.uri)
        return cls(Path(run_dir))

    @property
    def location(self) -> str:
        """The run directory as the user named it (the URI for a remote one)."""
        return self.remote or str(self.root)

    def where(self, path: Path) -> str:
        """`path` (under root) as the user knows it: its object-store URI for a remote run."""
        if self.remote is None:
            return str(path)
        return f"{self.remote}/{Path(path).relative_to(self.root).as_posix()}"

    def fetch(self, *paths: Path) -> int:
        """Make the local copies of `paths` (files or folders under root) equal the object
        store's, deleting what it lacks; a no-op for a local run directory. Returns the number
        of files downloaded."""
        return sum(mirror.fetch(relative) for mirror, relative in self._mirrored(paths))

    def publish(self, *paths: Path, delete: bool = True) -> int:
        """Make the object store's copies of `paths` equal the local ones (removed ones are
        deleted; with `delete=False` files are only added or replaced); a no-op for a local
        run directory. Returns the number of files uploaded."""
        mirrored = self._mirrored(paths)
        return sum(mirror.publish(relative, delete=delete) for mirror, relative in mirrored)

    def prune(self, folder: Path) -> None:
        """Delete from the object store the entries of `folder` that are gone locally."""
        for mirror, relative in self._mirrored((folder,)):
            mirror.prune(relative)

    def _mirrored(self, paths: tuple[Path, ...]) -> list[tuple[Any, str]]:
        if self.remote is None:
            return []
        from distributed_rec.storage.sync import Mirror
        from distributed_rec.storage.uri import parse_uri

        mirror = Mirror(parse_uri(self.remote), self.root)
        return [(mirror, Path(p).relative_to(self.root).as_posix()) for p in paths]

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    # prepare
    @property
    def items(self) -> Path:
        return self.root / "prepare" / "items.parquet"

    @property
    def interactions(self) -> Path:
        return self.root / "prepare" / "interactions"

    @property
    def train_split(self) -> Path:
        return self.root / "prepare" / "splits" / "train"

    @property
    def train_windows(self) -> Path:
        return self.root / "prepare" / "splits" / "train_windows"

    def eval_split(self, split: str) -> Path:
        return self.root / "prepare" / "splits" / f"{split}.parquet"

    @property
    def prepare_stats(self) -> Path:
        return self.root / "prepare" / "stats.json"

    # embed
    @property
    def item_embeddings(self) -> Path:
        return self.root / "embed" / "item_embeddings.parquet"

    # tokenize
    @property
    def semantic_ids(self) -> Path:
        return self.root / "tokenize" / "semantic_ids.parquet"

    @property
    def tokenizer_checkpoint(self) -> Path:
        return self.root / "tokenize" / "tokenizer.pt"

    @property
    def tokenizer_metrics(self) -> Path:
        return self.root / "tokenize" / "tokenizer_metrics.json"

    # train
    @property
    def checkpoints(self) -> Path:
        return self.root / "train" / "checkpoints"

    @property
    def best_model(self) -> Path:
        return self.root / "train" / "best" / "model.pt"

    @property
    def train_metrics(self) -> Path:
        return self.root / "train" / "train_metrics.json"

    def tensorboard(self, stage: str) -> Path:
        return self.root / "tensorboard" / stage

    # evaluate
    def predictions(self, split: str) -> Path:
        return self.root / "evaluate" / "predictions" / split

    @property
    def eval_metrics(self) -> Path:
        return self.root / "evaluate" / "metrics.json"

    @property
    def eval_table(self) -> Path:
        return self.root / "evaluate" / "metrics.md"

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def results_md(self) -> Path:
        return self.root / "results.md"


def read_artifact_table(path: Path, columns: tuple[str, ...], producer: str) -> Any:
    """A stage's Parquet artifact as a pyarrow Table, checked for its required `columns`.

    A missing file names the stage that produces it; a missing column names the file.
    """
    import pyarrow.parquet as pq

    from distributed_rec.errors import ArtifactError, DataError

    if not path.exists():
        raise ArtifactError(f"{path} is missing: run the {producer} stage first")
    table = pq.read_table(path)
    for column in columns:
        if column not in table.column_names:
            raise DataError(path, f"no column {column!r} (columns: {table.column_names})")
    return table


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def fingerprint_files(paths: list[Path]) -> str:
    """Content hash of files (folders: every file inside, in sorted order)."""
    digest = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(path.parent)).encode())
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def stage_marker_path(paths: RunPaths, stage: str) -> Path:
    """Where a finished stage's marker lives (written last, after every output)."""
    return paths.stage_dir(stage) / "_DONE.json"


def stage_is_current(paths: RunPaths, stage: str, key: str) -> bool:
    """True when `stage` finished before with the same key (config + inputs hash)."""
    return (stage_marker(paths, stage) or {}).get("key") == key


def mark_stage_done(paths: RunPaths, stage: str, key: str, seconds: float | None = None) -> None:
    write_json_atomic(
        stage_marker_path(paths, stage), {"stage": stage, "key": key, "seconds": seconds}
    )


def stage_marker(paths: RunPaths, stage: str) -> dict[str, Any] | None:
    """The marker of a finished stage ({"stage", "key", "seconds"}), None when there is none."""
    marker = stage_marker_path(paths, stage)
    if not marker.exists():
        return None
    try:
        return json.loads(marker.read_text())
    except json.JSONDecodeError:
        return None


def clear_stage_marker(paths: RunPaths, stage: str) -> None:
    stage_marker_path(paths, stage).unlink(missing_ok=True)
