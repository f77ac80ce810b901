"""Does a captioner describe the photo, or copy a caption it was shown?

*Shown captions* are the captions a captioner saw for a photo:

* ``vlm-neighbours``: the neighbours' captions listed in the photo's stored prompt (the prompt stage's
  selection, after its token budget dropped any);
* ``knn-consensus``: every caption of the photo's neighbours (it picks one of them, so it copies by design);
* ``vlm-plain``, ``blip``, ``vit-gpt2``: none (their prompt shows no caption, so they copy nothing).

*Copy*: the caption equals one of the shown captions verbatim or after normalisation (PTB tokens, lower
case, punctuation removed). *Prompt overlap*: the share of the caption's n-grams (n = 1..4, clipped counts
as in BLEU's modified precision, averaged over the orders the caption has) that occur in a shown caption.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Sequence

from pipeline.caption_metrics.tokenize import normalise
from pipeline.prompts import neighbour_captions, select_captions
from pipeline.stage_keys import stage_hash

if TYPE_CHECKING:
    from pipeline.workspace import Workspace

MAX_N = 4


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def copy_and_overlap(caption: str, shown: Sequence[str]) -> tuple[float, float]:
    """(1.0 if the caption is one of ``shown`` after normalisation else 0.0, prompt n-gram overlap)."""
    norm = normalise(caption)
    if not norm or not shown:
        return 0.0, 0.0
    shown_norm = [normalise(s) for s in shown]
    copied = 1.0 if norm in set(shown_norm) else 0.0
    tokens = norm.split(" ")
    shown_tokens = [s.split(" ") for s in shown_norm if s]
    shares = []
    for n in range(1, MAX_N + 1):
        mine = _ngrams(tokens, n)
        if not mine:
            break
        most: Counter = Counter()
        for other in shown_tokens:
            most |= _ngrams(other, n)          # max count of each n-gram over the shown captions
        matched = sum(min(count, most[g]) for g, count in mine.items())
        shares.append(matched / sum(mine.values()))
    return copied, sum(shares) / len(shares)


def shown_captions(ws: "Workspace", captioner: str, ids: Sequence[str]) -> tuple[dict[str, list[str]], str]:
    """Per photo, the captions the captioner was shown, and one line saying what they are."""
    cfg, store = ws.config, ws.store
    kind = cfg.captioner(captioner).kind
    if kind == "vlm-neighbours":
        prompts_hash = stage_hash(ws, "prompts")
        prompts = store.prompts(prompts_hash, ids)
        neighbours = neighbour_captions(store, stage_hash(ws, "neighbours"), ids)
        out: dict[str, list[str]] = {}
        for i in ids:
            text = prompts[i].text if i in prompts else ""
            listed = select_captions([caps for _n, caps in neighbours.get(i, [])], cfg.prompts.per_neighbour)
            out[i] = [c for _, c in listed if c in text]
        return out, "the neighbours' captions listed in its prompt"
    if kind == "knn-consensus":
        neighbours = neighbour_captions(store, stage_hash(ws, "neighbours"), ids)
        return ({i: [c for _n, caps in neighbours.get(i, []) for c in caps] for i in ids},
                "every caption of its neighbours (it chooses one of them)")
    return {i: [] for i in ids}, "no captions (its prompt shows none)"
