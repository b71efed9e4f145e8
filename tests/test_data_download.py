"""Downloads against a local HTTP server on 127.0.0.1: resume with Range, checksum verification,
interrupted transfers kept for resuming, MovieLens zip extraction, Amazon 2023 file layout."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from data_support import meta_records, review_records, write_jsonl, write_ml100k

from distributed_rec.config import load_config
from distributed_rec.data.download import download_dataset, download_file
from distributed_rec.data.readers import read_dataset
from distributed_rec.errors import DataError

pytestmark = pytest.mark.timeout(60)


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.files`, honouring `Range: bytes=N-`; paths in `server.cut` are sent
    half-way once (with the full Content-Length) to simulate a dropped connection."""

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        server = self.server
        body = server.files.get(self.path)
        server.requests.append((self.path, self.headers.get("Range")))
        if body is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path in server.cut:
            server.cut.discard(self.path)
            self.wfile.write(body[start : start + (len(body) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.cut = {}, [], set()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


PAYLOAD = bytes(range(256)) * 40


def test_download_resumes_a_partial_file(tmp_path, server):
    server.files["/data.bin"] = PAYLOAD
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:1000])
    download_file(f"{server.base}/data.bin", dest, md5=hashlib.md5(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "data.bin.part").exists()
    assert server.requests == [("/data.bin", "bytes=1000-")]
    download_file(f"{server.base}/data.bin", dest)  # present: no request
    assert len(server.requests) == 1


def test_interrupted_download_is_kept_and_resumed(tmp_path, server):
    server.files["/data.bin"] = PAYLOAD
    server.cut.add("/data.bin")
    dest = tmp_path / "data.bin"
    with pytest.raises(DataError, match="interrupted.*run again to resume"):
        download_file(f"{server.base}/data.bin", dest)
    part = tmp_path / "data.bin.part"
    assert not dest.exists() and 0 < part.stat().st_size < len(PAYLOAD)
    download_file(f"{server.base}/data.bin", dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/data.bin", f"bytes={len(PAYLOAD) // 2}-")


def test_checksum_mismatch_removes_the_download(tmp_path, server):
    server.files["/data.bin"] = PAYLOAD
    with pytest.raises(DataError, match="checksum mismatch: expected md5 0{32}"):
        download_file(f"{server.base}/data.bin", tmp_path / "data.bin", md5="0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_a_clear_error(tmp_path, server):
    with pytest.raises(DataError, match="HTTP 404"):
        download_file(f"{server.base}/nope.zip", tmp_path / "nope.zip")


def _movielens_zip(tmp_path: Path) -> bytes:
    write_ml100k(tmp_path / "src")
    archive = shutil.make_archive(str(tmp_path / "ml-100k"), "zip", tmp_path / "src", "ml-100k")
    return Path(archive).read_bytes()


def test_movielens_download_verifies_md5_and_extracts(tmp_path, server):
    body = _movielens_zip(tmp_path)
    server.files["/ml-100k.zip"] = body
    server.files["/ml-100k.zip.md5"] = (
        f"MD5 (ml-100k.zip) = {hashlib.md5(body).hexdigest()}\n".encode()
    )
    root = tmp_path / "raw"
    args = ["--data.format=movielens", f"--data.path={root}", "--data.download=true",
            f"--data.download_base_url={server.base}"]  # fmt: skip
    config = download_dataset(load_config(None, args).data)
    assert (root / "ml-100k" / "u.data").is_file() and config.name == "ml-100k"
    assert read_dataset(config).records == 3
    download_dataset(config)  # already there: nothing fetched
    assert [p for p, _ in server.requests] == ["/ml-100k.zip.md5", "/ml-100k.zip"]


def test_movielens_checksum_mismatch(tmp_path, server):
    server.files["/ml-100k.zip"] = _movielens_zip(tmp_path)
    server.files["/ml-100k.zip.md5"] = b"0123456789abcdef0123456789abcdef  ml-100k.zip\n"
    args = ["--data.format=movielens", f"--data.path={tmp_path / 'raw'}", "--data.download=true",
            f"--data.download_base_url={server.base}"]  # fmt: skip
    with pytest.raises(DataError, match="checksum mismatch"):
        download_dataset(load_config(None, args).data)
    assert not (tmp_path / "raw" / "ml-100k").exists()
    assert not (tmp_path / "raw" / "ml-100k.zip").exists()


def test_amazon2023_download_layout(tmp_path, server):
    for name, records in (("review_categories/Home", review_records()),
                          ("meta_categories/meta_Home", meta_records())):  # fmt: skip
        path = write_jsonl(tmp_path / "x.jsonl.gz", records)
        server.files[f"/raw/{name}.jsonl.gz"] = path.read_bytes()
    args = ["--data.format=amazon2023", f"--data.path={tmp_path / 'raw'}", "--data.name=Home",
            "--data.download=true", f"--data.download_base_url={server.base}"]  # fmt: skip
    config = download_dataset(load_config(None, args).data)
    assert read_dataset(config).records == 9
    assert gzip.decompress((tmp_path / "raw" / "Home.jsonl.gz").read_bytes()).count(b"\n") == 9
    args[2] = "--data.name="
    with pytest.raises(DataError, match="set --data.name"):
        download_dataset(load_config(None, args).data)
