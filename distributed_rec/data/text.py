"""Item text: metadata fields flattened to strings, HTML unescaped, tags stripped, whitespace
collapsed, joined in the configured field order and truncated to a word budget (SPEC §2)."""

from __future__ import annotations

import html
import logging
import re
from typing import Any

import pyarrow as pa

from distributed_rec.errors import DataError

log = logging.getLogger(__name__)

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def field_text(value: Any) -> str | None:
    """A metadata value as one string: lists joined by ', ', mappings as 'key: value; ...'."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        parts = [f"{k}: {field_text(v)}" for k, v in value.items() if field_text(v)]
        return "; ".join(parts) or None
    if isinstance(value, (list, tuple)):
        parts = [t for t in (field_text(v) for v in value) if t]
        return ", ".join(parts) or None
    return str(value)


def clean_text(text: str) -> str:
    """HTML entities unescaped, tags removed, runs of whitespace collapsed to one space."""
    text = html.unescape(text)
    text = _TAG.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def truncate_words(text: str, max_words: int) -> str:
    words = text.split(" ")
    return text if len(words) <= max_words else " ".join(words[:max_words])


def resolve_fields(
    items: pa.Table, fields: list[str], aliases: dict[str, str], source: str
) -> list[str]:
    """Columns of `items` for the configured text fields; fields this format lacks are skipped."""
    available = [c for c in items.column_names if c != "item"]
    columns, missing = [], []
    for name in fields:
        column = name if name in available else aliases.get(name)
        if column in available and column not in columns:
            columns.append(column)
        elif column not in available:
            missing.append(name)
    if not columns:
        raise DataError(
            source,
            f"none of data.text_fields {fields} is in the item metadata "
            f"(this format has: {', '.join(available)})",
        )
    if missing:
        log.info("prepare: text fields %s are not in this format's metadata", missing)
    return columns


def item_texts(items: pa.Table, columns: list[str], max_words: int) -> list[str]:
    """One cleaned text per row of `items`: non-empty fields joined as sentences ('. ' unless a
    field already ends with . ! or ?), then truncated to `max_words` words."""
    values = [items[c].to_pylist() for c in columns]
    texts = []
    for row in zip(*values, strict=True):
        parts = [p for p in (clean_text(v) for v in row if v) if p]
        text = " ".join(p if p[-1] in ".!?" else p + "." for p in parts[:-1])
        text = f"{text} {parts[-1]}" if text else (parts[-1] if parts else "")
        texts.append(truncate_words(text, max_words))
    return texts
