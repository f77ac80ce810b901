"""BLEU-1..4, ROUGE-L and CIDEr-D from ``pycocoevalcap``, with what the bootstrap needs to re-aggregate them.

* BLEU: ``pycocoevalcap.bleu.bleu_scorer.BleuScorer`` ("closest" reference length, as ``Bleu`` uses). The
  corpus score is computed from summed per-photo counts (test length, closest reference length, guessed
  and correct n-grams), so ``bleu_corpus`` on those counts reproduces it for the whole set and for any
  resample of photos (a test checks the whole-set value against pycocoevalcap's).
* ROUGE-L: ``pycocoevalcap.rouge.Rouge`` (beta 1.2); the corpus score is the mean over photos.
* CIDEr-D: ``pycocoevalcap.cider.Cider`` (sigma 6, clipped, x10); its document frequencies come from the
  references of every photo scored, so every captioner is scored over the same photos with the same
  references and the rows compare. The corpus score is the mean over photos.

Inputs are already tokenised (``tokenize``): a caption and each reference as space-separated tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

BLEU_N = 4
BLEU_NAMES = tuple(f"BLEU-{n}" for n in range(1, BLEU_N + 1))
# per-photo BLEU counts: testlen, reflen (closest), guess[1..4], correct[1..4]
BLEU_STATS = 2 + 2 * BLEU_N
_SMALL, _TINY = 1e-9, 1e-15          # as pycocoevalcap's BleuScorer


@dataclass
class BleuResult:
    corpus: list[float]               # BLEU-1..4 of the whole set (pycocoevalcap's number)
    per_photo: np.ndarray             # (n, 4) per-photo BLEU-1..4 (pycocoevalcap's bleu_list)
    stats: np.ndarray                 # (n, BLEU_STATS) counts the corpus score is made from


def bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> BleuResult:
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    scorer = BleuScorer(n=BLEU_N)
    for hyp, refs in zip(hypotheses, references):
        scorer += (hyp, list(refs))
    corpus, per = scorer.compute_score(option="closest", verbose=0)
    stats = np.zeros((len(hypotheses), BLEU_STATS), dtype=np.float64)
    for i, comps in enumerate(scorer.ctest):
        testlen = comps["testlen"]
        stats[i, 0] = testlen
        stats[i, 1] = scorer._single_reflen(comps["reflen"], "closest", testlen)
        stats[i, 2:2 + BLEU_N] = comps["guess"]
        stats[i, 2 + BLEU_N:] = comps["correct"]
    per_photo = np.asarray(per, dtype=np.float64).T if hypotheses else np.zeros((0, BLEU_N))
    return BleuResult([float(v) for v in corpus], per_photo, stats)


def bleu_corpus(stats: np.ndarray) -> np.ndarray:
    """BLEU-1..4 from (..., n, BLEU_STATS) per-photo counts, as ``BleuScorer.compute_score`` aggregates them
    (leading axes are resamples); returns (..., 4)."""
    total = stats.sum(axis=-2)
    testlen, reflen = total[..., 0], total[..., 1]
    guess, correct = total[..., 2:2 + BLEU_N], total[..., 2 + BLEU_N:]
    out = np.empty(total.shape[:-1] + (BLEU_N,))
    product = np.ones(total.shape[:-1])
    for k in range(BLEU_N):
        product = product * ((correct[..., k] + _TINY) / (guess[..., k] + _SMALL))
        out[..., k] = product ** (1.0 / (k + 1))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    penalty = np.where(ratio < 1, np.exp(1 - 1 / np.where(ratio < 1, ratio, 1.0)), 1.0)
    return out * penalty[..., None]


def rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    """Per-photo ROUGE-L (pycocoevalcap's ``Rouge.calc_score``)."""
    from pycocoevalcap.rouge.rouge import Rouge

    scorer = Rouge()
    return np.asarray([scorer.calc_score([hyp], list(refs)) for hyp, refs in zip(hypotheses, references)],
                      dtype=np.float64)


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    """Per-photo CIDEr-D (pycocoevalcap's ``Cider``); document frequencies from these photos' references."""
    from pycocoevalcap.cider.cider import Cider

    if not hypotheses:
        return np.zeros(0)
    keys = list(range(len(hypotheses)))
    _, per = Cider().compute_score({k: list(references[k]) for k in keys}, {k: [hypotheses[k]] for k in keys})
    return np.asarray(per, dtype=np.float64)

