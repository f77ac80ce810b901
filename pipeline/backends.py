"""The backend interfaces: one per model kind.

Every concrete backend (open_clip, classical, SmolVLM, BLIP, ViT-GPT2, kNN
consensus, sentence-transformers, OpenAI-compatible query generation) implements
exactly one of these. Stages only talk to these interfaces.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # keep imports light: the TUI imports this module at start-up
    import numpy as np
    from PIL import Image


@runtime_checkable
class ImageEmbedder(Protocol):
    key: str          # stable identity: embeddings are stored under (image sha256, key)
    dim: int

    def embed_images(self, images: Sequence["Image.Image"]) -> "np.ndarray":
        """float32 array (n, dim), rows L2-normalised."""

    @property
    def has_text_tower(self) -> bool: ...

    def embed_texts(self, texts: Sequence[str]) -> "np.ndarray":
        """Text tower (CLIP): float32 (n, dim), L2-normalised. Raises if there is none."""


@runtime_checkable
class Captioner(Protocol):
    name: str              # the captioner name in the config ("blip-base", "vlm-neighbours", ...)
    model_id: str          # hub name or local path it was loaded from
    needs_prompts: bool    # True when captions depend on the per-image prompt

    def settings(self) -> dict[str, Any]:
        """Generation settings, stored with every caption and part of its config hash."""

    def caption(
        self,
        images: Sequence["Image.Image"],
        prompts: Sequence[str | None],
        neighbour_captions: Sequence[Sequence[str]] | None = None,
    ) -> list[str]:
        """One caption per image, in order. May raise; the robust wrapper records failures.

        ``prompts[i]`` is the exact user text for image i (None for captioners without prompts);
        ``neighbour_captions[i]`` lists the reference captions of image i's neighbours, nearest first
        (used by kNN consensus; generative captioners ignore it).
        """


@runtime_checkable
class TextEmbedder(Protocol):
    key: str
    dim: int

    def embed_documents(self, texts: Sequence[str]) -> "np.ndarray":
        """float32 (n, dim) L2-normalised, using the model's document prompt if it has one."""

    def embed_queries(self, texts: Sequence[str]) -> "np.ndarray":
        """float32 (n, dim) L2-normalised, using the model's query prompt if it has one."""


@dataclass
class QueryRequest:
    image_id: str
    image_path: str
    reference_captions: list[str]    # the target's own held-out captions (never shown to a captioner)


@dataclass
class QueryResult:
    image_id: str
    queries: dict[str, str] = field(default_factory=dict)   # kind ("short" / "detail") -> text
    error: str | None = None                                 # set when generation failed (with the reason)
    source_caption_index: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class QueryGenerator(Protocol):
    name: str

    def settings(self) -> dict[str, Any]: ...

    def generate(self, requests: Sequence[QueryRequest], kinds: Sequence[str]) -> list[QueryResult]:
        """One result per request, in order. Failures are reported in QueryResult.error, never raised."""
