"""What every data set loader returns: the photos, their captions, and what was wrong with the input."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CollectionItem:
    id: str                          # relative posix path inside the collection root
    path: Path | str                 # absolute path of the file, or its URL (``s3://bucket/prefix/<id>``)
    captions: list[str] = field(default_factory=list)
    official_split: str | None = None  # Flickr8k: 'train' | 'dev' | 'test'
    stat: tuple[int, float] | None = None  # a URL's (size, last-modified) from the listing; local files: None


@dataclass
class Collection:
    name: str                        # 'demo' | 'flickr8k' | 'folder'
    root: Path | str                 # a folder, or a URL prefix
    items: list[CollectionItem]
    # (item, severity, reason) for input problems found while reading: malformed lines, captions of
    # missing images, duplicates... Image files themselves are checked later, at ingest.
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    benchmark: bool = True           # every photo has captions: targets are drawn from them

    def by_id(self) -> dict[str, CollectionItem]:
        return {item.id: item for item in self.items}
