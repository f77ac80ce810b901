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

Identical photos (the same sha256: the same picture stored twice) are one unit
and always land on the same side: a group's score is its lowest member's, a
benchmark takes whole groups as targets, and in a folder a group is a reference
photo when any copy of it is captioned. So a target's own picture is never in the
reference DB under another name.

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
    group: str = ""              # photos with the same group (their sha256) share a side; "" : on its own

    @property
    def key(self) -> str:
        return self.group or f"id:{self.id}"


def _score(seed: int, image_id: str) -> str:
    return hashlib.sha256(f"{seed}:{image_id}".encode("utf-8")).hexdigest()


def assign_splits(items: Iterable[SplitItem], n_targets: int, seed: int, official_test_targets: bool = False) -> dict[str, str]:
    items = list(items)
    groups: dict[str, list[SplitItem]] = {}
    for item in items:
        groups.setdefault(item.key, []).append(item)
    if any(not i.has_captions for i in items):
        captioned_groups = {k for k, members in groups.items() if any(m.has_captions for m in members)}
        return {i.id: "reference" if i.key in captioned_groups else "target" for i in items}
    pool = items
    if official_test_targets:
        test = [i for i in items if i.official_split == "test"]
        if test:
            pool = test
    group_score = {k: min(_score(seed, m.id) for m in groups[k]) for k in {i.key for i in pool}}
    chosen: set[str] = set()
    count = 0
    for key in sorted(group_score, key=lambda k: (group_score[k], k)):
        if count >= n_targets:
            break
        chosen.add(key)
        count += len(groups[key])
    return {i.id: ("target" if i.key in chosen else "reference") for i in items}


def split_hash(splits: dict[str, str]) -> str:
    """Identity of a split assignment (part of every downstream configuration hash)."""
    return hash_obj(sorted(splits.items()))
