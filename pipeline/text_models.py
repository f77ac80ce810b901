"""The configured text-side models: text embedder, query generator, and the image embedder's text tower.

Building these objects is cheap (no weights are loaded until first use), so stages
may build them in ``config()`` to read their identity (``key``, ``settings()``).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pipeline.config import Config
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.backends import ImageEmbedder, QueryGenerator
    from pipeline.query_encoder import QueryEncoder
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
    from pipeline.query_encoder import QueryEncoder

    return QueryEncoder(cfg, embedder or build_text_embedder(cfg))


def configured_base_url(cfg: Config) -> str:
    """The chat endpoint: ``queries.base_url``, else ``$OPENAI_BASE_URL``, else '' (api.openai.com)."""
    return cfg.queries.base_url or os.environ.get("OPENAI_BASE_URL", "")


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
