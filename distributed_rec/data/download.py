"""Downloading raw datasets from their publishers: atomic (`<file>.part`, renamed when complete),
resumable (an HTTP Range request continues a `.part` left by an interrupted run) and checked
against the publisher's checksum where one exists (GroupLens publishes `<zip>.md5`; the McAuley
lab publishes none for Amazon Reviews 2023).

Official locations (data.download_base_url replaces the base, e.g. for a mirror or a test server):
  Amazon Reviews 2023  https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023
      raw/review_categories/<Category>.jsonl.gz, raw/meta_categories/meta_<Category>.jsonl.gz,
      benchmark/5core/last_out_w_his/<Category>.{train,valid,test}.csv.gz
  MovieLens            https://files.grouplens.org/datasets/movielens/<name>.zip (+ .md5)
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import logging
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from distributed_rec.config import DataConfig
from distributed_rec.errors import DataError

log = logging.getLogger(__name__)

AMAZON_BASE = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023"
MOVIELENS_BASE = "https://files.grouplens.org/datasets/movielens"
BENCHMARK_SPLIT = "benchmark/5core/last_out_w_his"
_CHUNK = 1 << 20
_MD5 = re.compile(r"\b([0-9a-fA-F]{32})\b")


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(url: str, offset: int, timeout: float):  # noqa: ANN202 (an http.client response)
    headers = {"User-Agent": "distributed_rec", **({"Range": f"bytes={offset}-"} if offset else {})}
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def download_file(url: str, dest: Path, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch `url` to `dest` through `dest.part`, resuming a partial file; verify `md5` if given."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:  # 416: the .part already holds the whole file
            raise DataError(url, f"download failed: HTTP {err.code} {err.reason}") from None
        response = None
    except (urllib.error.URLError, OSError) as err:
        raise DataError(url, f"download failed: {err}") from None
    if response is not None:
        with response:
            if offset and response.status != 206:  # the server ignored the range: start over
                offset = 0
            expected = response.headers.get("Content-Length")
            received = 0
            with part.open("ab" if offset else "wb") as out:
                try:
                    for block in iter(lambda: response.read(_CHUNK), b""):
                        out.write(block)
                        received += len(block)
                except (OSError, http.client.HTTPException) as err:
                    raise DataError(
                        url, f"download interrupted ({err}); run again to resume"
                    ) from None
            if expected is not None and received < int(expected):
                raise DataError(
                    url,
                    f"download interrupted after {received} of {expected} bytes; run again to resume",
                )
        log.info("downloaded %s (%s bytes resumed)", url, offset)
    if md5:
        actual = md5_of(part)
        if actual.lower() != md5.lower():
            part.unlink()
            raise DataError(
                dest, f"checksum mismatch: expected md5 {md5}, got {actual}; removed, run again"
            )
    part.replace(dest)
    return dest


def published_md5(url: str, timeout: float = 60.0) -> str:
    """The md5 in a publisher's `.md5` file ('MD5 (x.zip) = <hex>' or '<hex>  x.zip')."""
    try:
        with _open(url, 0, timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as err:
        raise DataError(url, f"cannot fetch the checksum: {err}") from None
    match = _MD5.search(text)
    if not match:
        raise DataError(url, "no md5 checksum in the file")
    return match.group(1)


def _movielens(root: Path, name: str, base: str) -> None:
    if (root / name).is_dir():
        return
    archive = root / f"{name}.zip"
    download_file(f"{base}/{name}.zip", archive, md5=published_md5(f"{base}/{name}.zip.md5"))
    staging = root / f".{name}.extract"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(staging)
    except zipfile.BadZipFile as err:
        raise DataError(archive, f"not a zip archive ({err}); delete it and run again") from None
    inner = staging / name if (staging / name).is_dir() else staging
    inner.rename(root / name)
    shutil.rmtree(staging, ignore_errors=True)


def download_dataset(config: DataConfig) -> DataConfig:
    """Download the files `config` needs into data.path (default data/raw/<format>) when missing;
    returns the config with data.path set."""
    root = Path(config.path or f"data/raw/{config.format}")
    root.mkdir(parents=True, exist_ok=True)
    if config.format == "movielens":
        name = config.name or "ml-100k"
        _movielens(root, name, (config.download_base_url or MOVIELENS_BASE).rstrip("/"))
        return dataclasses.replace(config, path=str(root), name=name)
    if config.format not in ("amazon2023", "amazon2023_benchmark"):
        raise DataError(
            root,
            f"data.download supports amazon2023, amazon2023_benchmark and movielens, "
            f"not {config.format!r}",
        )
    if not config.name:
        raise DataError(
            root, "set --data.name to the Amazon category to download (e.g. All_Beauty)"
        )
    base, name = (config.download_base_url or AMAZON_BASE).rstrip("/"), config.name
    files = [f"raw/meta_categories/meta_{name}.jsonl.gz"]
    if config.format == "amazon2023":
        files.append(f"raw/review_categories/{name}.jsonl.gz")
    else:
        files += [
            f"{BENCHMARK_SPLIT}/{name}.{split}.csv.gz" for split in ("train", "valid", "test")
        ]
    for file in files:
        download_file(f"{base}/{file}", root / Path(file).name)
    return dataclasses.replace(config, path=str(root))
