"""The light query encoder: the text embedder's model run with onnxruntime + tokenizers, for search.

A text query is one short text for a small model, but ``sentence_transformers`` costs 6-8 s to import
(torch, transformers' model registry, scikit-learn) on a 2-core machine, for 20-40 ms of work. So the
search path encodes queries with the same model exported to ONNX once (``pipeline.query_export``, by the
process that already has torch loaded: the embed-captions stage, or the first search that needs it) and
kept in ``<capsearch home>/<text_embedder.query_encoder_dir>/<embedder key>/``:

* ``model.onnx``: the whole sentence-transformers model (transformer, pooling, dense layers) for one text, its
  weights in ``model.onnx.data`` (onnxruntime maps them: a third of the start-up of one file to parse);
* ``tokenizer.json``: the model's own tokenizer, truncating where sentence-transformers does;
* ``manifest.json`` (written last): the embedder key, the query prompt, the inputs, and each file's size
  and CRC-32, checked when the encoder is opened (a damaged or partial export is not used).

The export checks its vectors against sentence-transformers' on probe texts (cosine within 1e-6) before it
is kept. What search uses is ``pipeline.text_models.QueryEncoder``: this module's ONNX encoder when the export is
there and sound, else sentence-transformers with one line on stderr saying why (and, in that process, the export
is made for next time). Nothing here imports torch.
"""
from __future__ import annotations

import json
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from pipeline.errors import CapsearchError

if TYPE_CHECKING:
    from pipeline.config import Config

FORMAT = 2
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"      # the weights, outside the graph: onnxruntime maps them instead of parsing them
TOKENIZER_FILE = "tokenizer.json"
FAILED = "failed.json"             # an export that could not be made for these library versions
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class EncoderUnavailable(CapsearchError):
    """No usable light encoder for this text embedder (the reason is the message)."""


def encoder_folder(cfg: "Config", key: str) -> Path:
    """Where the export of the text embedder ``key`` lives (``text_embedder.query_encoder_dir`` under the
    capsearch home when relative)."""
    from pipeline.workspace import resolve_home_path

    return resolve_home_path(cfg.text_embedder.query_encoder_dir) / key


def file_record(path: Path) -> dict[str, int]:
    """Size and CRC-32 of a file (read through a memory map: no copy of the weights)."""
    import mmap

    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if not size:
            return {"size": 0, "crc32": 0}
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return {"size": size, "crc32": zlib.crc32(view)}


@dataclass(frozen=True)
class Manifest:
    key: str
    model: str
    query_prompt: str
    inputs: tuple[str, ...]
    dim: int
    files: dict[str, dict[str, int]]

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        path = folder / MANIFEST
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EncoderUnavailable(_why_missing(folder)) from None
        except (OSError, ValueError) as exc:
            raise EncoderUnavailable(f"{path} is unreadable ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise EncoderUnavailable(f"{path} is of another format")
        try:
            return cls(key=str(raw["key"]), model=str(raw["model"]), query_prompt=str(raw["query_prompt"]),
                       inputs=tuple(raw["inputs"]), dim=int(raw["dim"]),
                       files={str(k): {"size": int(v["size"]), "crc32": int(v["crc32"])}
                              for k, v in raw["files"].items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EncoderUnavailable(f"{path} is incomplete ({exc!r})") from None

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "key": self.key, "model": self.model, "query_prompt": self.query_prompt,
                "inputs": list(self.inputs), "dim": self.dim, "files": self.files}


def _why_missing(folder: Path) -> str:
    failed = folder / FAILED
    if failed.is_file():
        try:
            return f"its export failed: {json.loads(failed.read_text(encoding='utf-8'))['reason']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "its export failed"
    return "not exported yet (the embed-captions stage exports it)"


class OnnxQueryEncoder:
    """Query vectors from the exported model: float32, L2-normalised, one text at a time (no padding, so
    each vector is what sentence-transformers gives for that text alone)."""

    def __init__(self, folder: Path, key: str):
        manifest = Manifest.read(folder)
        if manifest.key != key:
            raise EncoderUnavailable(f"{folder / MANIFEST} is for '{manifest.key}', not '{key}'")
        for name in {MODEL_FILE, TOKENIZER_FILE, *manifest.files}:
            expected = manifest.files.get(name)
            try:
                found = file_record(folder / name)
            except OSError as exc:
                raise EncoderUnavailable(f"{folder / name} is unreadable ({exc.strerror or exc})") from None
            if found != expected:
                raise EncoderUnavailable(f"{folder / name} is damaged (size or checksum differs from the manifest)")
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EncoderUnavailable(f"{exc.name} is not installed") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1          # one short text: threads cost more than they give
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # basic optimisations only: the extended ones fuse kernels chosen by the CPU, and vectors must not depend on it
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        try:
            self.session = ort.InferenceSession(str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])
            self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        except Exception as exc:  # noqa: BLE001 - a damaged export of any kind: fall back, with the reason
            raise EncoderUnavailable(f"{folder} cannot be opened ({type(exc).__name__}: {exc})") from None
        self.key = key
        self.folder = folder
        self.manifest = manifest
        self.dim = manifest.dim
        self._lock = threading.Lock()

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is {type(text).__name__}, not a string")
            enc = self.tokenizer.encode(self.manifest.query_prompt + text)
            feed = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
            with self._lock:
                vec = self.session.run(None, {name: np.asarray([feed[name]], dtype=np.int64)
                                              for name in self.manifest.inputs})[0][0]
            out[i] = vec / max(float(np.linalg.norm(vec)), 1e-12)
        return out


def remove_stale_temporaries(parent: Path) -> None:
    """Temporary export folders of writers that are gone (``.<key>.<pid>.<random>.tmp``)."""
    from pipeline.atomic import pid_alive

    if not parent.is_dir():
        return
    import shutil

    for entry in parent.iterdir():
        parts = entry.name.split(".")
        if entry.is_dir() and entry.name.startswith(".") and entry.name.endswith(".tmp") and len(parts) >= 4:
            try:
                pid = int(parts[-3])
            except ValueError:
                continue
            if pid != os.getpid() and not pid_alive(pid):
                shutil.rmtree(entry, ignore_errors=True)
