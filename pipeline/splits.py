"""Reference DB / target splits, deterministic from the seed.

Rule: every photo gets a score ``sha256("<seed>:<id>")``; among the candidates,
the ``n_targets`` lowest scores are the targets. This is the same on every
machine and Python version, and adding photos to a collection never moves an
existing photo from one split to the other unless it displaces it from the
lowest ``n_targets``.

- Benchmark collections (every photo captioned: Flickr8k, the demo world, or a
  fully captioned folder): targets are drawn from all photos, or only from the
  official test list when asked; the rest form the reference DB.
- A folder with some photos uncaptioned: captioned photos form the reference DB,
  uncaptioned ones are the targets.

A target's captions are never part of the reference DB: they are kept only to
make evaluation queries.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

from pipeline.hashing import hash_obj


@dataclass(frozen=True)
class SplitItem:
    id: str
    has_captions: bool
    official_split: str | None = None


def _score(seed: int, image_id: str) -> str:
    return hashlib.sha256(f"{seed}:{image_id}".encode("utf-8")).hexdigest()


def assign_splits(items: Iterable[SplitItem], n_targets: int, seed: int, official_test_targets: bool = False) -> dict[str, str]:
    items = list(items)
    captioned = [i for i in items if i.has_captions]
    uncaptioned = [i for i in items if not i.has_captions]
    if uncaptioned:
        splits = {i.id: "target" for i in uncaptioned}
        splits.update({i.id: "reference" for i in captioned})
        return splits
    pool = captioned
    if official_test_targets:
        test = [i for i in captioned if i.official_split == "test"]
        if test:
            pool = test
    chosen = {i.id for i in sorted(pool, key=lambda i: _score(seed, i.id))[:n_targets]}
    return {i.id: ("target" if i.id in chosen else "reference") for i in captioned}


def split_hash(splits: dict[str, str]) -> str:
    """Identity of a split assignment (part of every downstream configuration hash)."""
    return hash_obj(sorted(splits.items()))
