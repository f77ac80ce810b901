"""Downloading Flickr8k for users with the network: progress, resume, checksum.

Each archive is fetched to ``<root>/downloads/<name>.part`` and resumed with an
HTTP Range request when a partial file is there; it is renamed only after its
MD5 matches the published checksum, then unzipped into ``<root>``. Without
network the download fails at once with a line that says what to fetch by hand
and where to put it.
"""
from __future__ import annotations

import hashlib
import shutil
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pipeline.datasets.flickr8k import MANUAL_DOWNLOAD_HELP, is_flickr8k_layout
from pipeline.errors import DataError
from pipeline.progress import ProgressCallback, StageProgress

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str | None     # published checksum; None skips the check (tests, private mirrors)

    @property
    def filename(self) -> str:
        return Path(urlparse(self.url).path).name


# The commonly used mirror of the original University of Illinois archives, with their published MD5s.
FLICKR8K_ARCHIVES = (
    Archive("https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
            "f18a1e2920de5bd84dae7cf08ec78978"),
    Archive("https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",
            "bf6c1abcb8e4a833b7f922104de18627"),
)


def _reachable(url: str, timeout: float) -> str | None:
    """None when the host accepts a TCP connection, else the reason."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch(archive: Archive, dest_dir: Path, progress: ProgressCallback | None = None, timeout: float = 30.0) -> Path:
    """Download one archive into dest_dir with resume; returns the verified file."""
    import httpx

    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / archive.filename
    if final.exists() and (archive.md5 is None or md5_file(final) == archive.md5):
        return final
    part = final.with_name(final.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with httpx.stream("GET", archive.url, headers=headers, timeout=timeout, follow_redirects=True) as resp:
            if resp.status_code == 416:  # the partial file is already complete
                resp.close()
            else:
                if resp.status_code not in (200, 206):
                    raise DataError(f"downloading {archive.url} failed: HTTP {resp.status_code}")
                if resp.status_code == 200:
                    have = 0  # the server ignored the range: start over
                length = int(resp.headers.get("content-length") or 0)
                total = have + length if length else 0
                sp = StageProgress(f"download {archive.filename}", total, progress)
                sp.done = have
                with open(part, "ab" if have else "wb") as out:
                    for chunk in resp.iter_bytes():
                        out.write(chunk)
                        sp.advance(len(chunk))
                sp.finish()
    except httpx.HTTPError as exc:
        raise DataError(
            f"download of {archive.filename} interrupted ({type(exc).__name__}: {exc}); run the same command again to resume"
        ) from None
    if archive.md5 is not None:
        got = md5_file(part)
        if got != archive.md5:
            part.unlink(missing_ok=True)
            raise DataError(f"{archive.filename}: checksum mismatch (md5 {got}, expected {archive.md5}); "
                            "the partial file was deleted, run the command again")
    part.replace(final)
    return final


def extract(zip_path: Path, root: Path) -> None:
    with zipfile.ZipFile(zip_path) as zf:
        for member in zf.infolist():
            name = member.filename
            if name.startswith("__MACOSX/") or ".." in Path(name).parts or Path(name).is_absolute():
                continue
            target = root / name
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def download_flickr8k(root: str | Path, progress: ProgressCallback | None = None,
                      archives: tuple[Archive, ...] = FLICKR8K_ARCHIVES, connect_timeout: float = 5.0) -> Path:
    root = Path(root).expanduser().resolve()
    if is_flickr8k_layout(root):
        return root
    reason = _reachable(archives[0].url, connect_timeout)
    if reason is not None:
        host = urlparse(archives[0].url).hostname
        raise DataError(f"cannot reach {host} ({reason}): no network? To install Flickr8k by hand, "
                        + MANUAL_DOWNLOAD_HELP.format(root=root))
    downloads = root / "downloads"
    for archive in archives:
        path = fetch(archive, downloads, progress)
        extract(path, root)
    if not is_flickr8k_layout(root):
        raise DataError(f"the downloaded archives did not unpack into the Flickr8k layout under {root}")
    return root
