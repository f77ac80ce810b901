"""METEOR 1.5 as the COCO caption evaluation computes it, with corpus scores for any resample of photos.

The statistics of each (caption, references) pair come from the METEOR 1.5 jar that pycocoevalcap ships,
run with pycocoevalcap's command line (``-stdio -l en -norm``) and its ``SCORE ||| refs ||| caption``
requests. pycocoevalcap then asks the jar for the corpus score with one ``EVAL`` request; capsearch
computes the same score from the same statistics in numpy (``meteor_scores``: METEOR 1.5's
``MeteorStats.addStats`` + ``MeteorScorer.computeMetrics`` for English, task "rank": alpha 0.85,
beta 0.2, gamma 0.6, delta 0.75, module weights 1.0 0.6 0.8 0.6), so the bootstrap can re-aggregate
the statistics of a thousand resamples without a thousand requests to Java. A test checks the result
against the jar's own ``EVAL`` answer, per caption and for the corpus.

Starting the jar costs about 6 s of CPU (it reads a 62 MB paraphrase table) however few pairs it is asked
about. A pair's statistics depend only on the pair and the jar, so they are kept in a cache that the
workspaces of a capsearch home share (``evaluate.meteor_cache``, a SQLite file keyed by the jar's digest and
the request): an evaluation whose pairs were all scored before, in any workspace of the home (the human
row of the same photos, a captioner's unchanged captions), starts no jar at all. A damaged cache is moved
aside and started again, with one notice.
"""
from __future__ import annotations

import hashlib
import sqlite3
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

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


@lru_cache(maxsize=2)
def _jar_digest(path: Path) -> str:
    """What the statistics depend on besides the request: the jar, its paraphrase table, its command line."""
    digest = hashlib.sha256(path.read_bytes())
    for data in sorted((path.parent / "data").glob("*")):
        digest.update(f"{data.name}:{data.stat().st_size}".encode())
    digest.update(" ".join(METEOR_ARGS).encode())
    return digest.hexdigest()


class MeteorCache:
    """Pairs' statistics by (jar digest, request), in a SQLite file that several processes of one machine share."""

    def __init__(self, path: Path, jar_digest: str, say: Callable[..., None] | None = None) -> None:
        self.path = path
        self.jar = jar_digest
        self.say = say or (lambda text, level="info": None)
        self.conn: sqlite3.Connection | None = None
        try:
            self.conn = self._open()
        except sqlite3.DatabaseError as exc:     # not a database, or a damaged one: set it aside, start again
            aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                path.replace(aside)
                self.conn = self._open()
                self.say(f"the METEOR cache {path} could not be read ({exc}): moved to {aside.name}, "
                         "started again", "warning")
            except (OSError, sqlite3.Error) as again:
                self.say(f"the METEOR cache {path} is not used: {again}", "warning")
        except OSError as exc:
            self.say(f"the METEOR cache {path} is not used: {exc}", "warning")

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS meteor_stats (key TEXT PRIMARY KEY, stats BLOB NOT NULL)")
        conn.execute("SELECT COUNT(*) FROM meteor_stats WHERE key = ''").fetchone()     # reads a page: damage shows
        return conn

    def key(self, request: str) -> str:
        return hashlib.sha256(f"{self.jar}\n{request}".encode()).hexdigest()

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        if self.conn is None or not keys:
            return {}
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            part = list(keys[start:start + 500])
            rows = self.conn.execute(f"SELECT key, stats FROM meteor_stats WHERE key IN ({','.join('?' * len(part))})",
                                     part)
            for key, blob in rows:
                values = np.frombuffer(blob, dtype=np.float64)
                if values.shape == (N_STATS,):
                    found[key] = values
        return found

    def put(self, items: dict[str, np.ndarray]) -> None:
        if self.conn is None or not items:
            return
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("INSERT OR REPLACE INTO meteor_stats(key, stats) VALUES (?, ?)",
                                  [(k, np.asarray(v, dtype=np.float64).tobytes()) for k, v in items.items()])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class MeteorScorer:
    """METEOR statistics of (hypothesis, references) pairs for the ``with`` block, from one jar process.

    Without a cache the jar starts with the block. With one (``cache``: its file) the cache answers the pairs
    it holds and the jar starts at the first pair it does not: a block whose pairs are all cached starts none.
    ``from_cache`` counts the pairs the cache answered."""

    def __init__(self, cache: Path | None = None, say: Callable[..., None] | None = None) -> None:
        path = jar(*METEOR_JAR)
        self.process = JavaProcess(list(METEOR_ARGS), path.parent, "METEOR")
        self.cache = MeteorCache(cache, _jar_digest(path), say) if cache is not None else None
        self.from_cache = 0
        self._started = False

    def __enter__(self) -> "MeteorScorer":
        if self.cache is None:
            self._start()
        return self

    def _start(self) -> None:
        if not self._started:
            self.process.__enter__()
            self._started = True

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.cache is not None:
            self.cache.close()
        if self._started:
            self.process.__exit__(exc_type, exc, tb)

    def stats(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]],
              progress=None) -> np.ndarray:
        """(n, 23) statistics, one row per (hypothesis, its references); identical pairs are asked once, and
        pairs in the cache not at all."""
        requests = [_request(hyp, refs) for hyp, refs in zip(hypotheses, references)]
        unique = list(dict.fromkeys(requests))
        known: dict[str, np.ndarray] = {}
        keys: dict[str, str] = {}
        if self.cache is not None:
            keys = {r: self.cache.key(r) for r in unique}
            cached = self.cache.get(list(keys.values()))
            known = {r: cached[k] for r, k in keys.items() if k in cached}
            self.from_cache += sum(1 for r in requests if r in known)
        asked: dict[str, np.ndarray] = {}
        out = np.zeros((len(requests), N_STATS), dtype=np.float64)
        for i, request in enumerate(requests):
            if request not in known:
                self._start()
                known[request] = asked[request] = self._ask(request)
            out[i] = known[request]
            if progress is not None:
                progress(1)
        if self.cache is not None:
            self.cache.put({keys[r]: v for r, v in asked.items()})
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
