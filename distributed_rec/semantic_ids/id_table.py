"""The two-way map between items and their semantic IDs, shared by training and evaluation.

Legend: N items, M positions (codebooks), K codes per codebook.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distributed_rec.errors import ArtifactError


@dataclass(frozen=True)
class SemanticIdTable:
    """Item ids and their M-tuples of codes; every tuple belongs to exactly one item.

    `item_ids` is int64 [N]; `codes` is int64 [N, M] with values in [0, K).
    """

    item_ids: np.ndarray
    codes: np.ndarray
    codebook_size: int

    def __post_init__(self) -> None:
        if self.codes.ndim != 2 or len(self.codes) != len(self.item_ids):
            raise ValueError(f"codes must be [N, M] with N={len(self.item_ids)}")
        if len(self.codes) and (self.codes.min() < 0 or self.codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        object.__setattr__(self, "_row_of_item", {int(i): r for r, i in enumerate(self.item_ids)})
        object.__setattr__(
            self,
            "_item_of_tuple",
            {tuple(map(int, c)): int(i) for c, i in zip(self.codes, self.item_ids, strict=True)},
        )
        if len(self._item_of_tuple) != len(self.item_ids):
            raise ValueError(
                "two items share a semantic ID; resolve collisions before building the table"
            )

    @property
    def num_heads(self) -> int:
        return int(self.codes.shape[1])

    @property
    def num_items(self) -> int:
        return int(len(self.item_ids))

    def codes_of(self, item_ids: np.ndarray) -> np.ndarray:
        """int64 [..., M] codes of the given item ids (KeyError for an unknown item)."""
        rows = np.vectorize(self._row_of_item.__getitem__, otypes=[np.int64])(np.asarray(item_ids))
        return self.codes[rows]

    def item_of(self, codes: tuple[int, ...]) -> int | None:
        """The item whose ID is `codes`, or None when no item has it."""
        return self._item_of_tuple.get(tuple(int(c) for c in codes))

    def dense_codes(self, num_items: int) -> np.ndarray:
        """int64 [num_items, M] codes indexed by item id (item ids must be 0..num_items-1)."""
        dense = np.full((num_items, self.num_heads), -1, dtype=np.int64)
        dense[self.item_ids] = self.codes
        return dense

    # --- Parquet ---------------------------------------------------------------------------

    def write(self, path: Path) -> None:
        """Write `item_id, c_1..c_M` columns; K is stored in the schema metadata."""
        columns = {"item_id": pa.array(self.item_ids, pa.int64())}
        for m in range(self.num_heads):
            columns[f"c_{m + 1}"] = pa.array(self.codes[:, m], pa.int32())
        table = pa.table(columns).replace_schema_metadata(
            {"codebook_size": str(self.codebook_size)}
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> SemanticIdTable:
        if not path.exists():
            raise ArtifactError(f"{path} is missing: run the tokenize stage first")
        table = pq.read_table(path)
        metadata = table.schema.metadata or {}
        if b"codebook_size" not in metadata:
            raise ArtifactError(f"{path}: no codebook_size in the schema metadata")
        heads = sorted(
            (n for n in table.column_names if n.startswith("c_")), key=lambda n: int(n[2:])
        )
        codes = np.stack([table[n].to_numpy().astype(np.int64) for n in heads], axis=1)
        return cls(
            item_ids=table["item_id"].to_numpy().astype(np.int64),
            codes=codes,
            codebook_size=int(metadata[b"codebook_size"]),
        )
