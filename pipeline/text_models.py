"""The configured text-side models: text embedder, query generator, and the image embedder's text tower.

Building these objects is cheap (no weights are loaded until first use), so stages
may build them in ``config()`` to read their identity (``key``, ``settings()``).
"""
from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from pipeline.config import Config, environment
from pipeline.errors import ConfigError
from pipeline.query_encoder import EncoderUnavailable, OnnxQueryEncoder, encoder_folder

if TYPE_CHECKING:
    from pipeline.backends import ImageEmbedder, QueryGenerator
    from pipeline.text_embedding import SentenceTransformerEmbedder

# Used only to read the OpenAI generator's settings when no key is set (the run itself needs one).
_PROBE_BASE_URL = "https://api.openai.com/v1"


def build_text_embedder(cfg: Config) -> "SentenceTransformerEmbedder":
    """The sentence-transformers embedder named in ``[text_embedder]`` (kNN consensus and caption search use it);
    the model loads on first use, once per process."""
    from pipeline.text_embedding import SentenceTransformerEmbedder

    te = cfg.text_embedder
    return SentenceTransformerEmbedder(te.model, device=cfg.runtime.device, batch_size=te.batch_size)


def build_query_encoder(cfg: Config, embedder: "SentenceTransformerEmbedder | None" = None) -> "QueryEncoder":
    """What search embeds queries with: the text embedder's ONNX export (``pipeline.query_encoder``; no torch),
    else the text embedder itself, with a notice."""
    return QueryEncoder(cfg, embedder or build_text_embedder(cfg))


def configured_base_url(cfg: Config) -> str:
    """The chat endpoint: ``queries.base_url``, else ``$OPENAI_BASE_URL``, else '' (api.openai.com)."""
    return cfg.queries.base_url or environment().openai_base_url


def _openai_generator(cfg: Config, base_url: str | None) -> Any:
    from pipeline.queries.openai_gen import OpenAIQueryGenerator

    q = cfg.queries
    return OpenAIQueryGenerator(model=q.model, base_url=base_url, concurrency=q.concurrency, timeout=q.timeout,
                                max_retries=q.max_retries)


def build_query_generator(cfg: Config) -> "QueryGenerator":
    """The generator named in ``queries.generator``; the OpenAI one reads its key from the environment now."""
    if cfg.queries.generator == "reference":
        from pipeline.queries.reference import ReferenceQueryGenerator

        return ReferenceQueryGenerator()
    if cfg.queries.generator == "openai":
        return _openai_generator(cfg, configured_base_url(cfg) or None)
    raise ConfigError(f"queries.generator '{cfg.queries.generator}' is not one of reference, openai")


def query_generator_settings(cfg: Config) -> dict[str, Any]:
    """What decides the generated queries (part of the queries stage's hash); needs no API key."""
    if cfg.queries.generator != "openai":
        return build_query_generator(cfg).settings()
    from pipeline.queries.openai_gen import _redact_url

    base = configured_base_url(cfg)
    settings = dict(_openai_generator(cfg, base or _PROBE_BASE_URL).settings())
    settings["base_url"] = _redact_url(base) or None
    return settings


def build_clip_embedder(cfg: Config) -> "ImageEmbedder | None":
    """The configured image embedder when it has a text tower (open_clip: clip and hybrid search), else None."""
    from pipeline.embedders.registry import build_image_embedder

    embedder = build_image_embedder(cfg)
    return embedder if embedder.has_text_tower else None


def _notice(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


class QueryEncoder:
    """What search embeds queries with: the ONNX export of the configured text embedder when there is a sound
    one, else the sentence-transformers model itself (one notice says why, and the export is made in this
    process for the next search). Opened on first use; ``key`` is the text embedder's."""

    def __init__(self, cfg: Config, embedder: "SentenceTransformerEmbedder",
                 on_notice: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.embedder = embedder
        self.key = embedder.key
        self.folder = encoder_folder(cfg, embedder.key)
        self.on_notice = on_notice or _notice
        self._light: OnnxQueryEncoder | None = None
        self._fallback_reason: str | None = None
        self._lock = threading.Lock()

    def preload(self) -> None:
        """Open the export in a thread of its own now (onnxruntime builds its session without holding the GIL), so
        that it is ready when the first query comes; ``embed_queries`` waits for it.

        A process that exits meanwhile (the documents failed to load: a full disk) waits for the thread at exit:
        a daemon thread still inside onnxruntime when the interpreter finalizes aborts the process
        (``terminate called without an active exception``, exit code -6) after its one-line error."""
        if self._light is None and self._fallback_reason is None and self.cfg.text_embedder.light_queries:
            import atexit

            thread = threading.Thread(target=self._open, name="query-encoder", daemon=True)
            thread.start()
            atexit.register(thread.join, 30.0)

    @property
    def light(self) -> bool:
        """Whether queries go through the ONNX export (opens it on the first call)."""
        return self._open() is not None

    def _open(self) -> OnnxQueryEncoder | None:
        with self._lock:
            if self._light is None and self._fallback_reason is None:
                if not self.cfg.text_embedder.light_queries:
                    self._fallback_reason = "text_embedder.light_queries is off"
                else:
                    try:
                        self._light = OnnxQueryEncoder(self.folder, self.key)
                    except EncoderUnavailable as exc:
                        self._fallback_reason = str(exc)
                        self.on_notice(f"light query encoder for {self.embedder.model_name}: {exc}; "
                                       "loading sentence-transformers instead (a slower start)")
            return self._light

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        light = self._open()
        if light is not None:
            return light.embed_queries(texts)
        vectors = self.embedder.embed_queries(texts)
        if self.cfg.text_embedder.light_queries:
            self._export_once()
        return vectors

    def _export_once(self) -> None:
        """Export the model now that it is loaded here, so the next search starts light (failures are told)."""
        with self._lock:
            if getattr(self, "_export_tried", False):
                return
            self._export_tried = True
        from pipeline.query_export import QUICK, ensure_exported

        # the quick exporter only: a person is waiting (torch.export may take minutes: the stage tries it)
        if ensure_exported(self.embedder, self.folder, on_notice=self.on_notice, thorough=True,
                           exporters=QUICK) == "ready":
            self.on_notice(f"exported {self.embedder.model_name} for fast search to {self.folder}")
