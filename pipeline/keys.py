"""The names every layer uses to find what a stage stored: vector spaces, duplicate kinds, the key recipe.

A leaf module (it imports only ``pipeline.hashing``), so the store's helpers, the search, the evaluation,
the caption metrics, the stages, the flows and the TUI all read the same names without importing a stage.
Each stage's configuration and its hash are computed in ``pipeline.stage_keys`` (which needs the model
registries); this module holds what needs nothing.
"""
from __future__ import annotations

from typing import Any

from pipeline.hashing import hash_obj

# The variant of ``embed-captions`` that embeds the photos' human captions, the caption-metrics row of one
# human caption scored against the others, and the kind of a human caption in search results.
HUMAN = "human"

# How a neighbour relates to its target (the ``near_duplicate`` column of the neighbours table).
NOT_DUPLICATE, NEAR_DUPLICATE, EXACT_DUPLICATE = 0, 1, 2
DUPLICATE_KINDS = {NEAR_DUPLICATE: "near-duplicate", EXACT_DUPLICATE: "exact duplicate"}


def image_space(embedder_key: str) -> str:
    """Image vectors of an image embedder, keyed by the photo's sha256."""
    return f"image/{embedder_key}"


def document_space(text_key: str) -> str:
    """Caption vectors of a text embedder (documents), keyed by ``hash_text(caption)``."""
    return f"text/{text_key}/document"


def query_space(text_key: str) -> str:
    """Query vectors of a text embedder, keyed by ``hash_text(query)``."""
    return f"text/{text_key}/query"


def clip_text_space(image_key: str) -> str:
    """Text vectors of an image embedder's text tower (clip search, CLIPScore), keyed by ``hash_text``."""
    return f"clip-text/{image_key}"


def stage_key(name: str, variant: str, config: dict[str, Any]) -> str:
    """The configuration hash of a stage: every row it writes is keyed by it.

    The key "target" is the variant's name in every stored configuration hash: renaming it would orphan
    every row the store holds."""
    return hash_obj({"stage": name, "target": variant, **config})
