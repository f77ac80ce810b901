"""Flickr8k download: progress, resume with HTTP Range, checksum, and a fast clear failure offline."""
from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.datasets.download import Archive, download_flickr8k
from pipeline.datasets.flickr8k import load_flickr8k
from pipeline.errors import DataError
from tests.fixtures.photos import build_flickr8k_like


def _zip_of(folder, arc_prefix=""):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, arc_prefix + p.relative_to(folder).as_posix())
    return buf.getvalue()


class _Server:
    """Serves files with Range support; can cut the first response short to test resume."""

    def __init__(self, files: dict[str, bytes], cut_first_after: int | None = None):
        self.files = files
        self.cut_first_after = cut_first_after
        self.ranges: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = outer.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(body):
                    self.send_response(416)
                    self.end_headers()
                    return
                part = body[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if outer.cut_first_after is not None:
                    cut, outer.cut_first_after = outer.cut_first_after, None
                    self.wfile.write(part[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def archives(tmp_path):
    src = tmp_path / "src"
    build_flickr8k_like(src, n=6)
    images = _zip_of(src / "Flicker8k_Dataset", "Flicker8k_Dataset/")
    text_dir = tmp_path / "text"
    text_dir.mkdir()
    (text_dir / "Flickr8k.token.txt").write_bytes((src / "Flickr8k.token.txt").read_bytes())
    text = _zip_of(text_dir)
    return {"Flickr8k_Dataset.zip": images, "Flickr8k_text.zip": text}


def _archives_for(server, files, md5=True):
    return tuple(Archive(f"{server.url}/{name}", hashlib.md5(body).hexdigest() if md5 else None) for name, body in files.items())


def test_download_resumes_and_unpacks(tmp_path, archives):
    server = _Server(archives, cut_first_after=1000)
    events = []
    try:
        with pytest.raises(DataError, match="run the same command again to resume"):
            download_flickr8k(tmp_path / "f8k", progress=events.append, archives=_archives_for(server, archives))
        part = tmp_path / "f8k" / "downloads" / "Flickr8k_Dataset.zip.part"
        assert part.exists() and part.stat().st_size == 1000
        root = download_flickr8k(tmp_path / "f8k", progress=events.append, archives=_archives_for(server, archives))
    finally:
        server.close()
    assert "bytes=1000-" in server.ranges  # resumed, not restarted
    assert len(load_flickr8k(root).items) == 6
    assert any(e.kind == "advance" and e.total == len(archives["Flickr8k_Dataset.zip"]) for e in events)


def test_checksum_mismatch_deletes_the_partial_file(tmp_path, archives):
    server = _Server(archives)
    bad = tuple(Archive(a.url, "0" * 32) for a in _archives_for(server, archives))
    try:
        with pytest.raises(DataError, match="checksum mismatch"):
            download_flickr8k(tmp_path / "f8k", archives=bad)
    finally:
        server.close()
    assert not list((tmp_path / "f8k" / "downloads").glob("*.part"))


def test_no_network_fails_at_once_with_instructions(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port
    t0 = time.monotonic()
    with pytest.raises(DataError) as err:
        download_flickr8k(tmp_path / "f8k", archives=(Archive(f"http://127.0.0.1:{port}/Flickr8k_Dataset.zip", None),))
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert "no network" in msg and "Flickr8k_Dataset.zip" in msg and str(tmp_path / "f8k") in msg
