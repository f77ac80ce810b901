"""Opening and checking photos: one place that knows every way an image file can be bad.

A photo is a local path, a URL (``pipeline.locations``: ``s3://``, ``gs://``, ``http(s)://``, read through
fsspec) or a ``PhotoSource`` carrying its bytes (sent with a batch to a worker that cannot see the folder).
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Union

from pipeline.hashing import sha256_file
from pipeline.locations import is_url, read_bytes


@dataclass(frozen=True)
class PhotoSource:
    """Where a worker reads a photo: its location (a path or URL, which also names it in messages) and, when
    the flow sends them with the batch, its bytes."""
    location: str
    data: bytes | None = None

    def __str__(self) -> str:
        return self.location

    @property
    def size(self) -> int:
        """Bytes this source carries with it (0: the worker reads the location itself)."""
        return len(self.data) if self.data is not None else 0


Photo = Union[str, Path, PhotoSource]


def _readable(photo: Photo) -> Any:
    """What ``Image.open`` reads: the path of a local file, else the bytes (from the source or the URL)."""
    if isinstance(photo, PhotoSource):
        if photo.data is not None:
            return io.BytesIO(photo.data)
        photo = photo.location
    if is_url(str(photo)) and not isinstance(photo, Path):
        return io.BytesIO(read_bytes(str(photo)))
    return photo

# Extensions always accepted, plus whatever the installed Pillow can open (see image_extensions()).
_BASE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def image_extensions() -> set[str]:
    from PIL import Image

    exts = set(_BASE_EXTENSIONS)
    exts.update(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)
    exts.discard(".pdf")  # Pillow registers PDF for saving only
    return exts


@dataclass(frozen=True)
class ImageCheck:
    path: Path
    ok: bool
    reason: str = ""          # why the image was skipped (ok False)
    note: str = ""            # what was repaired when read (ok True), e.g. "CMYK converted to RGB"
    width: int = 0
    height: int = 0
    sha256: str = ""
    size: int = 0
    mtime: float = 0.0


_MODE_NOTES = {
    "CMYK": "CMYK converted to RGB",
    "L": "greyscale converted to RGB",
    "LA": "greyscale with alpha flattened to RGB",
    "RGBA": "alpha channel flattened onto white",
    "P": "palette image converted to RGB",
    "PA": "palette image with alpha flattened to RGB",
    "1": "1-bit image converted to RGB",
    "I": "32-bit integer image scaled to RGB",
    "I;16": "16-bit image scaled to RGB",
    "I;16B": "16-bit image scaled to RGB",
    "F": "floating-point image scaled to RGB",
    "YCbCr": "YCbCr converted to RGB",
    "LAB": "Lab converted to RGB",
    "HSV": "HSV converted to RGB",
}


def check_image(path: str | Path, max_pixels: int = 100_000_000, *, size: int | None = None,
                mtime: float | None = None) -> ImageCheck:
    """Fully decode one file and say whether it can be used, and what was repaired.

    A URL is read once (its bytes hashed and decoded); ``size`` and ``mtime`` are then its listing's."""
    if isinstance(path, str) and is_url(path):
        return _check_url(path, max_pixels, size, mtime)
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        return ImageCheck(path, False, f"cannot read file: {exc.strerror or exc}")
    return _check_decoded(path, path, st.st_size, st.st_mtime, max_pixels, lambda: sha256_file(path))


def _check_url(url: str, max_pixels: int, size: int | None, mtime: float | None) -> ImageCheck:
    from pipeline.errors import one_line

    try:
        data = read_bytes(url)
    except Exception as exc:  # noqa: BLE001 - unreachable, missing, denied: the photo's reason
        return ImageCheck(url, False, f"cannot read file: {one_line(exc)}")  # type: ignore[arg-type]
    return _check_decoded(url, io.BytesIO(data), len(data) if size is None else size, mtime or 0.0,  # type: ignore[arg-type]
                          max_pixels, lambda: hashlib.sha256(data).hexdigest())


def _check_decoded(path: Any, source: Any, st_size: int, st_mtime: float, max_pixels: int, digest: Any) -> ImageCheck:
    from PIL import Image, UnidentifiedImageError

    st = SimpleNamespace(st_size=st_size, st_mtime=st_mtime)
    if st.st_size == 0:
        return ImageCheck(path, False, "empty file (0 bytes)", size=0, mtime=st.st_mtime)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            old_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                with Image.open(source) as img:
                    width, height = img.size
                    mode = img.mode
                    if width * height > max_pixels:
                        return ImageCheck(
                            path, False,
                            f"too large: {width}x{height} = {width * height:,} pixels exceeds max_image_pixels={max_pixels:,}",
                            width=width, height=height, size=st.st_size, mtime=st.st_mtime,
                        )
                    if width == 0 or height == 0:
                        return ImageCheck(path, False, f"image has no pixels ({width}x{height})", size=st.st_size, mtime=st.st_mtime)
                    img.load()  # a full decode: catches truncated and corrupt data that verify() misses
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
    except UnidentifiedImageError:
        return ImageCheck(path, False, "not an image (Pillow cannot identify the file format)", size=st.st_size, mtime=st.st_mtime)
    except (OSError, SyntaxError, ValueError) as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text.lower():
            text = f"truncated image data ({text})"
        return ImageCheck(path, False, f"corrupt image: {text}", size=st.st_size, mtime=st.st_mtime)
    except Exception as exc:  # Pillow plugins raise a variety of errors on hostile files
        return ImageCheck(path, False, f"corrupt image: {type(exc).__name__}: {exc}", size=st.st_size, mtime=st.st_mtime)
    return ImageCheck(
        path, True, note=_MODE_NOTES.get(mode, "" if mode == "RGB" else f"{mode} converted to RGB"),
        width=width, height=height, sha256=digest(), size=st.st_size, mtime=st.st_mtime,
    )


def to_rgb(img: "Image.Image") -> "Image.Image":  # noqa: F821 - PIL imported lazily
    """Any Pillow image as RGB: alpha flattened onto white, high bit depths scaled, CMYK converted."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = ((arr - lo) / (hi - lo) * 255.0) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype("uint8"), "L").convert("RGB")
    return img.convert("RGB")


def open_rgb(path: Photo, max_side: int | None = None) -> "Image.Image":  # noqa: F821
    """Open a photo (a path, a URL or a ``PhotoSource``) as an RGB image with EXIF orientation applied,
    optionally downscaled (fast for JPEG)."""
    from PIL import Image, ImageOps

    with Image.open(_readable(path)) as img:
        if max_side and img.format == "JPEG":
            img.draft("RGB", (max_side, max_side))
        img = ImageOps.exif_transpose(img)
        img.load()
        out = to_rgb(img)
    if max_side and max(out.size) > max_side:
        out.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return out


def sha256_photo(location: str | Path) -> str:
    """The sha256 of a photo's bytes, local or at a URL."""
    if isinstance(location, str) and is_url(location):
        return hashlib.sha256(read_bytes(location)).hexdigest()
    return sha256_file(location)


def walk_images(root: Path) -> list[Path]:
    """Every file under root with an image extension (recursive, hidden folders skipped, sorted)."""
    exts = image_extensions()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in exts:
                found.append(Path(dirpath) / name)
    return sorted(found)
