"""Offline evaluation queries made from a target's own held-out reference captions.

One caption per target is chosen deterministically: index
``sha256(f"{seed}:{image_id}") mod n`` among its non-blank captions (the index into the
original caption list is recorded in ``QueryResult.source_caption_index``). Both
query kinds come from that caption:

* ``detail`` - the caption cleaned: whitespace collapsed, tokenised spacing before
  punctuation undone (" ," -> ",", " 's" -> "'s"), trailing full stops removed, first
  letter capitalised. "A black dog is running through the snow ." -> "A black dog is
  running through the snow".
* ``short`` - how a person types a search: lower-case, possessive "'s" removed, words
  split on anything that is not a letter or digit, then words in ``STOP_WORDS``
  (articles, auxiliaries, pronouns, prepositions, conjunctions) and one-letter words
  dropped, repeats dropped, and the first ``max_words`` (4) remaining words kept in
  order. "A black dog is running through the snow ." -> "black dog running snow". If
  no word survives ("It is there ."), the caption's words minus articles are used.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Sequence

from pipeline.backends import QueryRequest, QueryResult
from pipeline.errors import ConfigError

QUERY_KINDS = ("short", "detail")
RULE_VERSION = 1
ARTICLES = frozenset({"a", "an", "the"})
STOP_WORDS = ARTICLES | frozenset(
    """
    is are was were be been being am has have had do does did will would can could should may might must
    he she it they them him his her hers its their theirs this that these those who whom whose which what
    there here i you we me my your our us
    in on at of to from with by for into onto through over under near across along around behind between
    beside besides beneath below above about against among amongst toward towards past inside outside
    up down out off upon within without via like than
    and or but while as then so also either neither nor both
    some any each other another very just one ones
    """.split()
)


def check_kinds(kinds: Sequence[str]) -> list[str]:
    """The requested query kinds, validated (a bad kind is a configuration error)."""
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in QUERY_KINDS]
    if unknown or not kinds:
        raise ConfigError(f"query kinds must be among {', '.join(QUERY_KINDS)}; got {', '.join(kinds) or 'none'}")
    return kinds


def choose_caption_index(image_id: str, captions: Sequence[str], seed: int = 0) -> int | None:
    """Index of the caption to use for this image (deterministic per seed and id); None if all are blank."""
    usable = [i for i, c in enumerate(captions) if isinstance(c, str) and c.strip()]
    if not usable:
        return None
    digest = hashlib.sha256(f"{seed}:{image_id}".encode("utf-8")).hexdigest()
    return usable[int(digest[:16], 16) % len(usable)]


def clean_caption(text: str) -> str:
    """A reference caption as a sentence: "A dog runs ." -> "A dog runs"."""
    text = " ".join(text.split())
    text = re.sub(r"\s+([,;:!?])", r"\1", text)
    text = re.sub(r"\s+'(s|re|ve|ll|d|t)\b", r"'\1", text)
    text = re.sub(r"[\s.]+$", "", text)
    return text[:1].upper() + text[1:]


def short_query(text: str, max_words: int = 4) -> str:
    """Keyword query from a caption by the rule in the module docstring."""
    words = re.findall(r"[a-z0-9]+", re.sub(r"'s\b", "", text.lower()))
    content = _unique(w for w in words if w not in STOP_WORDS and (len(w) > 1 or w.isdigit()))
    if not content:
        content = _unique(w for w in words if w not in ARTICLES)
    return " ".join(content[:max_words])


def _unique(words: Any) -> list[str]:
    seen: set[str] = set()
    return [w for w in words if not (w in seen or seen.add(w))]


class ReferenceQueryGenerator:
    """``QueryGenerator`` that needs no model: queries from the target's own reference captions."""

    name = "reference"

    def __init__(self, seed: int = 0, short_max_words: int = 4):
        if short_max_words < 1:
            raise ConfigError(f"short_max_words must be >= 1, got {short_max_words}")
        self.seed = seed
        self.short_max_words = short_max_words

    def settings(self) -> dict[str, Any]:
        return {"generator": self.name, "seed": self.seed, "short_max_words": self.short_max_words,
                "rule_version": RULE_VERSION}

    def generate(self, requests: Sequence[QueryRequest], kinds: Sequence[str]) -> list[QueryResult]:
        kinds = check_kinds(kinds)
        return [self._one(r, kinds) for r in requests]

    def _one(self, request: QueryRequest, kinds: list[str]) -> QueryResult:
        index = choose_caption_index(request.image_id, request.reference_captions, self.seed)
        if index is None:
            return QueryResult(request.image_id, error=f"image {request.image_id}: no reference caption to make queries from")
        caption = request.reference_captions[index]
        make = {"detail": clean_caption, "short": lambda c: short_query(c, self.short_max_words)}
        queries = {kind: make[kind](caption) for kind in kinds}
        empty = [k for k, q in queries.items() if not q]
        if empty:
            return QueryResult(request.image_id, source_caption_index=index,
                               error=f"image {request.image_id}: caption {index} gives an empty {empty[0]} query")
        return QueryResult(request.image_id, queries=queries, source_caption_index=index)
