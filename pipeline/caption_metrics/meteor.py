"""METEOR 1.5 as the COCO caption evaluation computes it, with corpus scores for any resample of photos.

The statistics of each (caption, references) pair come from the METEOR 1.5 jar that pycocoevalcap ships,
run with pycocoevalcap's command line (``-stdio -l en -norm``) and its ``SCORE ||| refs ||| caption``
requests. pycocoevalcap then asks the jar for the corpus score with one ``EVAL`` request; capsearch
computes the same score from the same statistics in numpy (``meteor_scores``: METEOR 1.5's
``MeteorStats.addStats`` + ``MeteorScorer.computeMetrics`` for English, task "rank": alpha 0.85,
beta 0.2, gamma 0.6, delta 0.75, module weights 1.0 0.6 0.8 0.6), so the bootstrap can re-aggregate
the statistics of a thousand resamples without a thousand requests to Java. A test checks the result
against the jar's own ``EVAL`` answer, per caption and for the corpus.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.caption_metrics.java import JavaProcess, jar

METEOR_JAR = ("meteor", "meteor-1.5.jar")
METEOR_ARGS = ("-jar", "-Xmx2G", "meteor-1.5.jar", "-", "-", "-stdio", "-l", "en", "-norm")
N_STATS = 23                     # test/ref length, test/ref function words, 4 modules x 4, chunks, word matches
ALPHA, BETA, GAMMA, DELTA = 0.85, 0.2, 0.6, 0.75
MODULE_WEIGHTS = (1.0, 0.6, 0.8, 0.6)


def _request(hypothesis: str, references: Sequence[str]) -> str:
    # as pycocoevalcap.meteor.Meteor._stat
    hypothesis = hypothesis.replace("|||", "").replace("  ", " ")
    return " ||| ".join(("SCORE", " ||| ".join(references), hypothesis))


class MeteorScorer:
    """One METEOR jar process for the ``with`` block; ``stats`` asks it for each pair's statistics."""

    def __init__(self) -> None:
        path = jar(*METEOR_JAR)
        self.process = JavaProcess(list(METEOR_ARGS), path.parent, "METEOR")

    def __enter__(self) -> "MeteorScorer":
        self.process.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.process.__exit__(exc_type, exc, tb)

    def stats(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]],
              progress=None) -> np.ndarray:
        """(n, 23) statistics, one row per (hypothesis, its references); identical pairs are asked once."""
        out = np.zeros((len(hypotheses), N_STATS), dtype=np.float64)
        seen: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
        for i, (hyp, refs) in enumerate(zip(hypotheses, references)):
            key = (hyp, tuple(refs))
            if key not in seen:
                seen[key] = self._ask(_request(hyp, refs))
            out[i] = seen[key]
            if progress is not None:
                progress(1)
        return out

    def _ask(self, line: str) -> np.ndarray:
        self.process.stdin.write((line.replace("\n", " ") + "\n").encode("utf-8"))
        self.process.stdin.flush()
        answer = self.process.readline().split()
        try:
            values = [float(v) for v in answer]
        except ValueError:
            raise self.process.fail(f"unexpected answer {' '.join(answer)[:200]!r}") from None
        if len(values) != N_STATS:
            raise self.process.fail(f"expected {N_STATS} statistics, got {len(values)}")
        return np.asarray(values)


def _score(total: np.ndarray, test_total: np.ndarray, ref_total: np.ndarray) -> np.ndarray:
    """METEOR 1.5 ``computeMetrics`` on (..., 23) statistics (already summed for a corpus)."""
    t = total
    weights = np.asarray(MODULE_WEIGHTS)
    content_test, content_ref = t[..., 4:20:4], t[..., 5:20:4]
    function_test, function_ref = t[..., 6:20:4], t[..., 7:20:4]
    test_matches = (content_test * weights * DELTA).sum(axis=-1) + (function_test * weights * (1 - DELTA)).sum(axis=-1)
    ref_matches = (content_ref * weights * DELTA).sum(axis=-1) + (function_ref * weights * (1 - DELTA)).sum(axis=-1)
    test_len = DELTA * (t[..., 0] - t[..., 2]) + (1 - DELTA) * t[..., 2]
    ref_len = DELTA * (t[..., 1] - t[..., 3]) + (1 - DELTA) * t[..., 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = test_matches / test_len
        recall = ref_matches / ref_len
        fmean = 1.0 / ((1 - ALPHA) / precision + ALPHA / recall)
        frag = np.where((test_total == t[..., 0]) & (ref_total == t[..., 1]) & (t[..., 20] == 1.0), 0.0,
                        t[..., 20] / ((t[..., 21] + t[..., 22]) / 2))
        score = fmean * (1 - GAMMA * frag ** BETA)
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))


def _totals(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    test_total = stats[..., 4:20:4].sum(axis=-1) + stats[..., 6:20:4].sum(axis=-1)
    ref_total = stats[..., 5:20:4].sum(axis=-1) + stats[..., 7:20:4].sum(axis=-1)
    return test_total, ref_total


def segment_scores(stats: np.ndarray) -> np.ndarray:
    """METEOR of each row of (n, 23) statistics (what the jar prints per segment)."""
    test_total, ref_total = _totals(stats)
    return _score(stats, test_total, ref_total)


def corpus_score(stats: np.ndarray) -> np.ndarray:
    """Corpus METEOR of (..., n, 23) statistics: rows summed as METEOR's ``addStats`` does (a row whose words
    all matched in one chunk adds no chunks), then scored. Leading axes are resamples."""
    test_total, ref_total = _totals(stats)
    perfect = (test_total == stats[..., 0]) & (ref_total == stats[..., 1]) & (stats[..., 20] == 1.0)
    summed = stats.sum(axis=-2)
    summed[..., 20] = np.where(perfect, 0.0, stats[..., 20]).sum(axis=-1)
    return _score(summed, test_total.sum(axis=-1), ref_total.sum(axis=-1))
