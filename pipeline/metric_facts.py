"""What every metric is: one table of facts, and the one way its numbers are written.

A ``MetricFact`` says a metric's name, which way is better (``Direction``: MedR, a median rank, is lower-is-better;
copy rate and length are neither: read, do not maximise), how many decimals its value is written with (its
interval and a paired difference one fewer, at least one), its family and whether it has a score per photo, and
the largest value it can take (a rate's 1, which charts scale to). The retrieval metrics (``R@K`` for any K, MRR,
MedR) and the caption metrics (``CAPTION_METRICS``, in catalogue order) are both here; the CLI
(``capsearch.cli.summary``), the HTML report (``pipeline.reports``), the TUI (the Evaluation screen and its
widgets) and the Prefect artifacts (``flows.result_tables``) read them, and format an estimate and its paired
difference with ``metric_cell`` so that the same number reads the same everywhere (``–`` where there is none).
Each surface lays the pieces of a ``Cell`` out in its own markup.

Standard library only: every layer imports it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from pipeline.estimates import Difference, Estimate, finite

DASH = "–"                   # where there is no number


class Direction(StrEnum):
    HIGHER = "higher is better"
    LOWER = "lower is better"
    NEITHER = "neither"      # describes a caption (length, copy rate): read, do not maximise


class Verdict(StrEnum):
    """A significant paired difference, read in the metric's direction."""

    BETTER = "better"
    WORSE = "worse"


@dataclass(frozen=True)
class MetricFact:
    name: str
    direction: Direction
    digits: int                    # decimals of a value
    family: str                    # 'retrieval' | 'reference' | 'reference-free' | 'copy' | 'descriptive'
    per_photo: bool = False        # has a score per photo (caption metrics: sortable, correlated with retrieval)
    description: str = ""
    ceiling: float | None = None   # the largest value it can take (rates: 1), where charts scale to it

    @property
    def interval_digits(self) -> int:
        """Decimals of its interval and of a paired difference: one fewer than the value's, at least one."""
        return max(1, self.digits - 1)

    @property
    def higher_is_better(self) -> bool | None:
        return {Direction.HIGHER: True, Direction.LOWER: False}.get(self.direction)

    def verdict(self, difference: Difference | None) -> Verdict | None:
        """BETTER or WORSE for a significant difference of a metric with a direction; None otherwise."""
        if difference is None or not difference.significant or self.direction is Direction.NEITHER:
            return None
        up = float(difference.diff) > 0
        return Verdict.BETTER if up == (self.direction is Direction.HIGHER) else Verdict.WORSE

    def best(self, values: list[float | None]) -> float | None:
        """The best of ``values`` in the metric's direction (None: no known value, or no direction)."""
        known = [v for v in map(finite, values) if v is not None]
        if not known or self.direction is Direction.NEITHER:
            return None
        return max(known) if self.direction is Direction.HIGHER else min(known)


_H, _N = Direction.HIGHER, Direction.NEITHER

MRR = MetricFact("MRR", _H, 3, "retrieval", description="mean reciprocal rank of the true photo", ceiling=1.0)
MEDR = MetricFact("MedR", Direction.LOWER, 1, "retrieval", description="median rank of the true photo")

CAPTION_METRICS: tuple[MetricFact, ...] = (
    MetricFact("BLEU-1", _H, 3, "reference", True, "n-gram precision with brevity penalty (Papineni et al., 2002)"),
    MetricFact("BLEU-2", _H, 3, "reference", True),
    MetricFact("BLEU-3", _H, 3, "reference", True),
    MetricFact("BLEU-4", _H, 3, "reference", True),
    MetricFact("METEOR", _H, 3, "reference", True,
               "unigram F-mean with stems, synonyms and paraphrases (Denkowski & Lavie, 2014)"),
    MetricFact("ROUGE-L", _H, 3, "reference", True, "longest common subsequence F-measure (Lin, 2004)"),
    MetricFact("CIDEr-D", _H, 3, "reference", True, "TF-IDF n-gram consensus (Vedantam et al., 2015)"),
    MetricFact("SPICE", _H, 3, "reference", True, "scene-graph F-score (Anderson et al., 2016)"),
    MetricFact("CLIPScore", _H, 3, "reference-free", True, "image-caption CLIP similarity (Hessel et al., 2021)"),
    MetricFact("RefCLIPScore", _H, 3, "reference-free", True, "CLIPScore with the references (Hessel et al., 2021)"),
    MetricFact("copy rate", _N, 3, "copy", True, "share of captions equal to a caption shown in the prompt"),
    MetricFact("prompt overlap", _N, 3, "copy", True, "share of a caption's n-grams found in the prompt's captions"),
    MetricFact("length", _N, 1, "descriptive", True, "words per caption"),
    MetricFact("vocabulary", _N, 0, "descriptive", False, "distinct words over all captions"),
    MetricFact("distinct", _N, 3, "descriptive", False,
               "distinct captions per caption (1: no two photos got the same caption)"),
)
FACTS: dict[str, MetricFact] = {f.name: f for f in (MRR, MEDR, *CAPTION_METRICS)}
_RECALL = re.compile(r"R@(\d+)")


def recall_fact(k: int) -> MetricFact:
    return MetricFact(f"R@{k}", _H, 3, "retrieval", description=f"share of queries whose true photo is in the top {k}",
                      ceiling=1.0)


def fact(metric: str) -> MetricFact:
    """The facts of ``metric`` (``R@K`` for any K); a name not in the table (from a later capsearch) reads as a
    metric with no direction and three decimals."""
    known = FACTS.get(metric)
    if known is not None:
        return known
    recall = _RECALL.fullmatch(metric)
    if recall:
        return recall_fact(int(recall.group(1)))
    return MetricFact(metric, _N, 3, "unknown")


# -- numbers as text ----------------------------------------------------------------------------------------------

def number(value: float | None, digits: int) -> str:
    """``0.367``; ``–`` where there is no value (None, NaN)."""
    known = finite(value)
    return DASH if known is None else f"{known:.{digits}f}"


def signed(value: float | None, digits: int) -> str:
    """``+0.05``; ``–`` where there is no value."""
    known = finite(value)
    return DASH if known is None else f"{known:+.{digits}f}"


@dataclass(frozen=True)
class Cell:
    """An estimate and its paired difference as text, in the metric's decimals: the pieces every surface lays out."""

    value: str                           # '0.367'
    low: str | None = None               # '0.30' (None: no interval)
    high: str | None = None
    spread: str | None = None            # '±0.07': half the interval's width
    delta: str | None = None             # '+0.05' (None: no paired test)
    delta_low: str | None = None
    delta_high: str | None = None
    p: str | None = None                 # '0.080'
    verdict: Verdict | None = None       # a significant difference, better or worse

    @property
    def interval(self) -> str:
        """``[0.30, 0.43]``, or '' where there is none."""
        return f"[{self.low}, {self.high}]" if self.low is not None else ""

    @property
    def compared(self) -> str:
        """``Δ +0.05 p=0.080``, or '' where there is no paired test: the "Δ vs baseline, p" of every surface."""
        return f"Δ {self.delta} p={self.p}" if self.delta is not None else ""

    @property
    def delta_interval(self) -> str:
        return f"[{self.delta_low}, {self.delta_high}]" if self.delta_low is not None else ""

    def line(self) -> str:
        """``0.367 [0.30, 0.43] Δ +0.05 p=0.080``: the whole cell on one line."""
        return " ".join(part for part in (self.value, self.interval, self.compared) if part)


def metric_cell(metric: str, estimate: Estimate | None, difference: Difference | None = None) -> Cell | None:
    """``metric``'s estimate and its difference to the baseline as text (None: no estimate, or no value)."""
    if estimate is None or not estimate.known:
        return None
    f = fact(metric)
    ci = f.interval_digits
    low = high = spread = None
    if estimate.has_interval:
        low, high = number(estimate.low, ci), number(estimate.high, ci)
        spread = f"±{number((estimate.high - estimate.low) / 2, ci)}"
    cell = Cell(number(estimate.value, f.digits), low, high, spread)
    if difference is None or finite(difference.diff) is None:
        return cell
    has_interval = finite(difference.low) is not None and finite(difference.high) is not None
    return Cell(cell.value, low, high, spread, signed(difference.diff, ci),
                signed(difference.low, ci) if has_interval else None,
                signed(difference.high, ci) if has_interval else None,
                number(difference.p, 3), f.verdict(difference))
