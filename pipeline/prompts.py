"""Neighbour prompts: the neighbours' captions put into a plain-text template.

A template is a text file with the placeholders ``{captions}`` (the numbered list
of captions, required) and ``{k}`` (how many neighbours' captions are listed).
They are substituted by plain string replacement in one pass, so any other
braces in a user's template (or in a caption) are left exactly as written.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Sequence

from pipeline.errors import ConfigError
from pipeline.hashing import hash_text

if TYPE_CHECKING:
    from pipeline.store import Store

DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "neighbours.txt"
CAPTIONS = "{captions}"
K = "{k}"
PER_NEIGHBOUR = ("all", "first", "central")
_PLACEHOLDER = re.compile(r"\{captions\}|\{k\}")
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an the and or of in on at to with by for from is are was were be being been it its this that "
    "there their his her he she they them some".split()
)
# Without a VLM tokenizer, prompt length is estimated: words and punctuation marks, times 1.3
# (English text averages about 1.3 BPE tokens per word).
TOKENS_PER_WORD = 1.3
_WORD_OR_MARK = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Word-based token estimate used to budget prompts when no VLM tokenizer is configured."""
    return math.ceil(len(_WORD_OR_MARK.findall(text)) * TOKENS_PER_WORD)


def neighbour_captions(store: "Store", neighbours_hash: str, ids: Sequence[str]) -> dict[str, list[tuple[str, list[str]]]]:
    """Per photo with neighbours: (neighbour id, its human captions) of every neighbour that is not a duplicate
    of the photo, nearest first. What prompts list and the kNN consensus chooses from, and nothing else."""
    neighbours = store.neighbours(neighbours_hash, ids)
    caps = store.reference_db_captions(sorted({n.id for ns in neighbours.values() for n in ns}))
    return {t: [(n.id, caps.get(n.id, [])) for n in ns if not n.duplicate] for t, ns in neighbours.items()}


@dataclass(frozen=True)
class PromptResult:
    text: str
    n_captions_used: int
    trimmed: bool
    warning: str | None = None


def load_template(path: str | Path | None = None) -> tuple[str, str]:
    """Read a template (the packaged default when path is empty): ``(text, template_id)``, id = hash of the text."""
    source = Path(path).expanduser() if path else DEFAULT_TEMPLATE
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"prompt template file '{source}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"prompt template file '{source}' cannot be read: {exc}") from None
    check_template(text, str(source))
    return text, hash_text(text)


def check_template(text: str, name: str = "the prompt template") -> None:
    if CAPTIONS not in text:
        raise ConfigError(f"prompt template {name!s} has no {CAPTIONS} placeholder for the neighbours' captions")


def _clean(caption: str) -> str:
    return " ".join(str(caption).split())


def _dedup_key(caption: str) -> str:
    return caption.lower().rstrip(" .!")


def content_tokens(caption: str) -> frozenset[str]:
    """Lower-cased words of a caption without the most common function words."""
    return frozenset(w for w in _WORD.findall(caption.lower()) if w not in _STOPWORDS)


def token_f1(a: frozenset[str], b: frozenset[str]) -> float:
    """Token-set F1 (Dice) overlap of two word sets."""
    if not a or not b:
        return 0.0
    return 2.0 * len(a & b) / (len(a) + len(b))


def central_caption(captions: Sequence[str]) -> str | None:
    """The caption with the highest mean token-set F1 to the others (first one on ties)."""
    captions = [c for c in (_clean(c) for c in captions) if c]
    if len(captions) <= 2:
        return captions[0] if captions else None
    tokens = [content_tokens(c) for c in captions]
    best, best_score = 0, -1.0
    for i, ti in enumerate(tokens):
        score = sum(token_f1(ti, tj) for j, tj in enumerate(tokens) if j != i) / (len(tokens) - 1)
        if score > best_score + 1e-12:
            best, best_score = i, score
    return captions[best]


def select_captions(neighbour_captions: Sequence[Sequence[str]], per_neighbour: str = "all") -> list[tuple[int, str]]:
    """``(neighbour rank, caption)`` pairs to list, nearest neighbour first, without repeats."""
    if per_neighbour not in PER_NEIGHBOUR:
        raise ConfigError(f"per_neighbour '{per_neighbour}' is not one of {', '.join(PER_NEIGHBOUR)}")
    chosen: list[tuple[int, str]] = []
    seen: set[str] = set()
    for rank, captions in enumerate(neighbour_captions):
        cleaned = [c for c in (_clean(c) for c in captions) if c]
        if per_neighbour == "first":
            cleaned = cleaned[:1]
        elif per_neighbour == "central":
            central = central_caption(cleaned)
            cleaned = [central] if central else []
        for caption in cleaned:
            key = _dedup_key(caption)
            if key not in seen:
                seen.add(key)
                chosen.append((rank, caption))
    return chosen


def _render(template: str, captions: Sequence[tuple[int, str]]) -> str:
    listing = "\n".join(f"{i}. {c}" for i, (_, c) in enumerate(captions, start=1))
    values = {CAPTIONS: listing, K: str(len({rank for rank, _ in captions}))}
    return _PLACEHOLDER.sub(lambda m: values[m.group(0)], template).strip()


def _largest_fitting(n: int, fits: Callable[[int], bool]) -> int:
    """Largest m in [0, n] with fits(m), given fits is monotone (true up to some m) and fits(0) may be false."""
    lo, hi = 0, n
    if not fits(0):
        return -1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def build_prompt(
    template: str,
    neighbour_captions: Sequence[Sequence[str]],
    *,
    per_neighbour: Literal["all", "first", "central"] | str = "all",
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> PromptResult:
    """Fill the template with the neighbours' captions (nearest first).

    ``per_neighbour``: "all" captions of each neighbour, its "first" one, or its
    "central" one (highest mean token-set F1 to that neighbour's other captions).
    Repeated captions are listed once. With ``max_tokens`` (and ``count_tokens``,
    the VLM tokenizer's counter) an over-long prompt drops the farthest
    neighbours' captions first, then truncates the last caption left word by word.
    """
    check_template(template)
    captions = select_captions(neighbour_captions, per_neighbour)
    text = _render(template, captions)
    if not captions:
        return PromptResult(text, 0, False, "no neighbour captions to list")
    if not max_tokens or max_tokens <= 0:
        return PromptResult(text, len(captions), False)
    if count_tokens is None:
        raise ValueError("build_prompt: max_tokens needs count_tokens (the captioner tokenizer's token counter)")
    if count_tokens(text) <= max_tokens:
        return PromptResult(text, len(captions), False)

    def fits(m: int) -> bool:
        return count_tokens(_render(template, captions[:m])) <= max_tokens

    keep = _largest_fitting(len(captions), fits)
    if keep < 0:
        empty = _render(template, [])
        return PromptResult(
            empty, 0, True,
            f"the template alone is {count_tokens(empty)} tokens, over max_tokens={max_tokens}: no captions listed",
        )
    if keep >= 1:
        dropped = len(captions) - keep
        return PromptResult(
            _render(template, captions[:keep]), keep, True,
            f"prompt over max_tokens={max_tokens}: dropped {dropped} of {len(captions)} captions (farthest neighbours first)",
        )
    rank, first = captions[0]
    words = first.split()

    def fits_words(m: int) -> bool:
        return count_tokens(_render(template, [(rank, " ".join(words[:m]))])) <= max_tokens

    n_words = max(_largest_fitting(len(words), fits_words), 0)
    if n_words == 0:
        return PromptResult(
            _render(template, []), 0, True,
            f"prompt over max_tokens={max_tokens}: no caption fits, none listed",
        )
    return PromptResult(
        _render(template, [(rank, " ".join(words[:n_words]))]), 1, True,
        f"prompt over max_tokens={max_tokens}: kept only the nearest caption, cut to {n_words} of {len(words)} words",
    )
