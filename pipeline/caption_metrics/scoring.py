"""Score rows (captioners and the ``human`` baseline) photo by photo, and summarise them with intervals.

Photos and references: the targets with at least two held-out human captions. Each target's first human
caption is the ``human`` row's caption; every row is scored against the target's *other* captions, so
the human row is the usual one-against-the-rest baseline and all rows use the same references and the
same CIDEr-D document frequencies. A target whose caption failed, came out empty or is missing scores 0
(it is counted, never dropped). Without such targets (a personal collection) the reference-based metrics
are not applicable and the reference-free ones cover every target.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from pipeline.caption_metrics import coco
from pipeline.caption_metrics.results import HUMAN, METRICS, CaptionMetricsResult, RowScores
from pipeline.caption_metrics.stats import Interval, Paired, difference, interval, mean_of_scores, resampled
from pipeline.keys import image_space
from pipeline.metrics import _check_boot
from pipeline.stage_keys import stage_hash

if TYPE_CHECKING:
    from pipeline.workspace import Workspace

Say = Callable[..., None]


@dataclass(frozen=True)
class Environment:
    """What the metrics can use on this machine and configuration, and why not where they cannot."""

    tokenizer: str
    meteor: str | None            # None: available; else the reason it is not
    spice: str | None
    clip_key: str | None          # the open_clip embedder key (None: CLIPScore not applicable)
    clip: str | None              # why CLIPScore is not applicable

    def as_dict(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer, "meteor": self.meteor is None, "spice": self.spice is None,
                "clip": self.clip_key}


def environment(ws: "Workspace") -> Environment:
    from pipeline.caption_metrics.java import java_runtime
    from pipeline.caption_metrics.spice import spice_unavailable
    from pipeline.caption_metrics.tokenize import default_tokenizer
    from pipeline.text_models import build_clip_embedder

    java, why = java_runtime()
    clip = build_clip_embedder(ws.config)
    no_clip = None if clip is not None else (
        f"image embedder '{ws.config.image_embedder.name}' has no text side; CLIPScore needs "
        "image_embedder.name = \"open_clip\"")
    return Environment(default_tokenizer().name, None if java else f"no Java runtime ({why})",
                       spice_unavailable(), clip.key if clip is not None else None, no_clip)


@dataclass(frozen=True)
class Photos:
    """The photos scored and their references (raw text)."""

    ids: list[str]
    human: list[str]                      # each photo's first human caption (the human row's caption)
    references: list[list[str]]           # each photo's other human captions
    with_references: bool                 # False: no target has two human captions

    @property
    def describe(self) -> str:
        if not self.with_references:
            return "no target has two human captions: reference-based metrics are not applicable"
        return ("each target's first human caption is the human row; every row is scored against the "
                "target's other human captions")


def photos(ws: "Workspace") -> Photos:
    store = ws.store
    targets = store.image_ids("target")
    refs = store.reference_captions(targets)
    usable = {i: [c for c in refs.get(i, []) if c.strip()] for i in targets}
    ids = [i for i in targets if len(usable[i]) >= 2]
    if not ids:
        return Photos(list(targets), ["" for _ in targets], [[] for _ in targets], False)
    return Photos(ids, [usable[i][0] for i in ids], [usable[i][1:] for i in ids], True)


def row_captions(ws: "Workspace", row: str, ids: Sequence[str], human: Sequence[str]) -> list[str]:
    """The caption each photo has in a row ('' where it has no usable one)."""
    if row == HUMAN:
        return list(human)
    rows = ws.store.captions(row, stage_hash(ws, "caption", row), ids=ids, status="ok")
    return [rows[i].text if i in rows and rows[i].text.strip() else "" for i in ids]


def row_steps(row: str, env: Environment, with_references: bool) -> list[str]:
    """The units of work that scoring one row takes, in order (each one advances the progress bar)."""
    steps = []
    if with_references:
        steps += ["BLEU", "ROUGE-L", "CIDEr-D"]
        if env.meteor is None:
            steps.append("METEOR")
        if env.spice is None:
            steps.append("SPICE")
    if env.clip_key is not None:
        steps.append("CLIPScore")
    if row != HUMAN:
        steps.append("copy rate")
    steps.append("length")                  # length, vocabulary and distinct captions
    return steps


def count_steps(ws: "Workspace", rows: Sequence[str], env: Environment) -> int:
    """Units of work of ``score_rows`` for these rows: the tokenizer run, the CLIP inputs, each row's steps."""
    if not rows:
        return 0
    with_references = photos(ws).with_references
    return 1 + (env.clip_key is not None) + sum(len(row_steps(r, env, with_references)) for r in rows)


def score_rows(ws: "Workspace", rows: Sequence[str], env: Environment, say: Say,
               done: Callable[[RowScores], None], step: Callable[[], None] | None = None,
               stop: Callable[[], bool] | None = None) -> None:
    """Score every row photo by photo; ``done`` receives each row as it is finished, ``step`` is called after
    each unit of work (``count_steps`` of them), and when ``stop()`` turns true scoring ends before the next
    unit (the row in progress is dropped; rows already given to ``done`` are whole)."""
    from pipeline.caption_metrics.copying import copy_and_overlap, shown_captions
    from pipeline.caption_metrics.tokenize import JavaPtbTokenizer, PythonPtbTokenizer, normalise

    if not rows:
        return
    tick = step or (lambda: None)
    halt = stop or (lambda: False)
    ph = photos(ws)
    captions = {r: row_captions(ws, r, ph.ids, ph.human) for r in rows}
    tokenizer = JavaPtbTokenizer() if env.tokenizer == "ptb-java" else PythonPtbTokenizer()
    texts = list(dict.fromkeys([c for caps in captions.values() for c in caps]
                               + [r for refs in ph.references for r in refs]))
    t0 = time.perf_counter()
    tokens = dict(zip(texts, tokenizer.tokenize(texts)))
    say(f"tokenised {len(texts)} captions and references ({tokenizer.name}) in {time.perf_counter() - t0:.1f} s")
    tick()
    ref_tokens = [[tokens[r] for r in refs] for refs in ph.references]
    clip_vectors = _clip_inputs(ws, env, ph, captions, say)
    if env.clip_key is not None:
        tick()

    with ExitStack() as stack:
        meteor_ctx = None
        if ph.with_references and env.meteor is None:
            from pipeline.caption_metrics.meteor import MeteorScorer

            meteor_ctx = stack.enter_context(MeteorScorer())      # one jar process, stopped on any exit
        for row in rows:
            t_row = time.perf_counter()
            caps = captions[row]
            hyp = [tokens[c] for c in caps]
            scores: dict[str, list[float | None]] = {}
            result = RowScores(row, list(ph.ids), list(caps), [i for i, c in zip(ph.ids, caps) if not c], scores)
            for name in row_steps(row, env, ph.with_references):
                if halt():
                    return
                if name == "BLEU":
                    b = coco.bleu(hyp, ref_tokens)
                    for k, metric in enumerate(coco.BLEU_NAMES):
                        scores[metric] = b.per_photo[:, k].tolist()
                    result.bleu_stats = b.stats.tolist()
                elif name == "ROUGE-L":
                    scores["ROUGE-L"] = coco.rouge_l(hyp, ref_tokens).tolist()
                elif name == "CIDEr-D":
                    scores["CIDEr-D"] = coco.cider_d(hyp, ref_tokens).tolist()
                elif name == "METEOR" and meteor_ctx is not None:
                    from pipeline.caption_metrics.meteor import segment_scores

                    say(f"{row}: METEOR for {len(hyp)} captions")
                    stats = meteor_ctx.stats(hyp, ref_tokens)
                    result.meteor_stats = stats.tolist()
                    scores["METEOR"] = segment_scores(stats).tolist()
                elif name == "SPICE":
                    from pipeline.caption_metrics.spice import spice

                    scores["SPICE"] = [None if np.isnan(v) else float(v) for v in spice(hyp, ref_tokens)]
                elif name == "CLIPScore" and clip_vectors is not None:
                    scores["CLIPScore"], scores["RefCLIPScore"] = _clip_scores(clip_vectors, caps, ph)
                elif name == "copy rate":
                    shown, what = shown_captions(ws, row, ph.ids)
                    pairs = [copy_and_overlap(c, shown.get(i, [])) if c else (0.0, 0.0)
                             for i, c in zip(ph.ids, caps)]
                    scores["copy rate"] = [p[0] for p in pairs]
                    scores["prompt overlap"] = [p[1] for p in pairs]
                    result.shown = what
                elif name == "length":
                    scores["length"] = [float(len(tokens[c].split())) if c else None for c in caps]
                    present = [c for c in caps if c]
                    result.vocabulary = len({w for c in present for w in tokens[c].split()})
                    result.distinct = len({normalise(c) for c in present}) / len(present) if present else None
                tick()
            result.seconds = time.perf_counter() - t_row
            done(result)


@dataclass
class _ClipInputs:
    embedder: Any
    image: dict[str, np.ndarray]                      # photo id -> image vector
    text: dict[str, np.ndarray]                       # caption text -> vector of PREFIX + text


def _clip_inputs(ws: "Workspace", env: Environment, ph: Photos, captions: dict[str, list[str]],
                 say: Say) -> _ClipInputs | None:
    if env.clip_key is None:
        return None
    from pipeline.caption_metrics.clipscore import caption_vectors
    from pipeline.text_models import build_clip_embedder

    embedder = build_clip_embedder(ws.config)
    store = ws.store
    shas = {img.id: img.sha256 for img in store.images(ids=ph.ids)}
    keys, mat = store.get_vectors(image_space(embedder.key), sorted(set(shas.values())))
    by_sha = dict(zip(keys, mat))
    image = {i: by_sha[s] for i, s in shas.items() if s in by_sha}
    if len(image) < len(ph.ids):
        say(f"CLIPScore: {len(ph.ids) - len(image)} photos have no image vector (run embed-images); "
            "they are left out of CLIPScore", "warning")
    texts = list(dict.fromkeys([c for caps in captions.values() for c in caps if c]
                               + [r for refs in ph.references for r in refs if r]))
    vectors, n_new = caption_vectors(store, embedder, texts)
    if n_new:
        say(f"CLIPScore: embedded {n_new} caption texts with {embedder.key}")
    return _ClipInputs(embedder, image, dict(zip(texts, vectors)))


def _clip_scores(inputs: _ClipInputs, caps: Sequence[str], ph: Photos) -> tuple[list[float | None], list[float | None]]:
    from pipeline.caption_metrics.clipscore import clip_score, ref_clip_score

    clip_s: list[float | None] = []
    ref_s: list[float | None] = []
    for i, cap, refs in zip(ph.ids, caps, ph.references):
        image = inputs.image.get(i)
        if image is None:
            clip_s.append(None)
            ref_s.append(None)
            continue
        if not cap:
            clip_s.append(0.0)
            ref_s.append(0.0 if refs else None)
            continue
        vec = inputs.text[cap]
        s = clip_score(image, vec)
        clip_s.append(s)
        ref_s.append(ref_clip_score(s, vec, [inputs.text[r] for r in refs]) if refs else None)
    return clip_s, ref_s


# -- summary ------------------------------------------------------------------------------------------------

def _per_photo(row: RowScores, metric: str) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]] | None:
    """(per-photo data, aggregate) for a metric of a row, or None when the row lacks the metric."""
    if metric in coco.BLEU_NAMES and row.bleu_stats:
        k = coco.BLEU_NAMES.index(metric)
        return np.asarray(row.bleu_stats, dtype=np.float64), lambda d, k=k: coco.bleu_corpus(d)[..., k]
    if metric == "METEOR" and row.meteor_stats:
        from pipeline.caption_metrics.meteor import corpus_score

        return np.asarray(row.meteor_stats, dtype=np.float64), corpus_score
    values = row.scores.get(metric)
    if values is None or all(v is None for v in values):
        return None
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)[:, None], mean_of_scores


def summarise(config_hash: str, rows: list[RowScores], env: Environment, ph: Photos, baseline: str | None,
              n_boot: int, seed: int, confidence: float) -> CaptionMetricsResult:
    t0 = time.perf_counter()
    names = [r.row for r in rows]
    by_name = {r.row: r for r in rows}
    base = by_name.get(baseline) if baseline else None
    not_applicable: dict[str, str] = {}
    if not ph.with_references:
        for m in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE", "RefCLIPScore"):
            not_applicable[m] = "no target has two human captions to score against"
    if env.meteor and "METEOR" not in not_applicable:
        not_applicable["METEOR"] = env.meteor
    if env.spice and "SPICE" not in not_applicable:
        not_applicable["SPICE"] = env.spice
    if env.clip:
        not_applicable.setdefault("CLIPScore", env.clip)
        not_applicable.setdefault("RefCLIPScore", env.clip)
    metrics = [m.name for m in METRICS if m.name not in not_applicable]
    values: dict[str, dict[str, dict[str, float | None]]] = {r.row: {} for r in rows}
    diffs: dict[str, dict[str, dict[str, float | None]]] = {r.row: {} for r in rows}
    counts: dict[str, dict[str, int]] = {r.row: {} for r in rows}
    _check_boot(n_boot, confidence)
    for metric in metrics:
        boots: dict[str, tuple[float, np.ndarray]] = {}       # row -> (point, resampled values)
        for row in rows:
            if metric == "vocabulary":
                values[row.row][metric] = {"value": float(row.vocabulary), "low": None, "high": None}
                counts[row.row][metric] = len(row.ids) - len(row.missing)
                continue
            if metric == "distinct":
                values[row.row][metric] = {"value": row.distinct, "low": None, "high": None}
                counts[row.row][metric] = len(row.ids) - len(row.missing)
                continue
            got = _per_photo(row, metric)
            if got is None or got[0].shape[0] == 0:
                continue
            data, aggregate = got
            counts[row.row][metric] = int((~np.isnan(data).all(axis=1)).sum())
            point = float(aggregate(data))
            boots[row.row] = (point, resampled(data, aggregate, n_boot, seed))    # same photo resamples per row
            est: Interval = interval(point, boots[row.row][1], confidence)
            values[row.row][metric] = {"value": est.value, "low": est.low, "high": est.high}
        if base is None or base.row not in boots:
            continue
        base_point, base_boot = boots[base.row]
        for name, (point, boot) in boots.items():
            if name != base.row:
                d: Paired = difference(point - base_point, boot, base_boot, confidence)
                diffs[name][metric] = {"diff": d.diff, "low": d.low, "high": d.high, "p": d.p}
    result = CaptionMetricsResult(
        config_hash=config_hash, rows=names, metrics=metrics, not_applicable=not_applicable,
        baseline=base.row if base is not None else None, n_photos=len(ph.ids),
        missing={r.row: len(r.missing) for r in rows}, values=values, vs_baseline=diffs,
        tokenizer=env.tokenizer, references=ph.describe, n_boot=n_boot, confidence=confidence,
        created_at=time.time(), n=counts)
    if baseline and base is None:
        result.notes.append(f"baseline '{baseline}' is not a captioner scored here; no paired test")
    result.seconds = time.perf_counter() - t0
    return result

