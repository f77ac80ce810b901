"""Score rows (captioners and the ``human`` baseline) photo by photo, and summarise them with intervals.

Photos and references, as the published Flickr8k/COCO caption evaluation has them: the targets with at least
two held-out human captions, and every captioner scored against *all* of a target's human captions (five on
Flickr8k and the demo world). The ``human`` row is the mean over every leave-one-out hold-out: hold-out h
scores each photo's caption h against that photo's other captions (with unequal numbers of captions, hold-out
h covers the photos with more than h). Corpus scores (BLEU, METEOR) are computed per hold-out and averaged;
per-photo scores (ROUGE-L, CIDEr-D, ...) are each photo's mean over its hold-outs, averaged over photos (the
same number when every photo has as many captions). CIDEr-D's document frequencies come from the references of
the photos scored: all captions for a captioner, the other captions in each hold-out, as pycocoevalcap
computes them when it is called on that hold-out. A target whose caption failed, came out empty or is missing
scores 0 (it is counted, never dropped); a row none of whose photos has a caption is not applicable (no value,
no interval, no paired test). Without such targets (a personal collection) the reference-based metrics are not
applicable and the reference-free ones cover every target.

Intervals resample photos (each with all its hold-outs), so the human row's interval is how its hold-out mean
varies over photos; the choice of the held-out caption is averaged away, not part of it. Its paired test
compares a caption scored against one reference fewer than the captioners' (k - 1 against k): that lowers
BLEU and CIDEr-D, so a difference in the human row's favour is if anything understated.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from pipeline.caption_metrics import coco
from pipeline.caption_metrics.results import HUMAN, CaptionMetricsResult, RowScores
from pipeline.caption_metrics.stats import difference, interval, mean_of_scores, resampled
from pipeline.estimates import Difference, Estimate
from pipeline.keys import image_space
from pipeline.metric_facts import CAPTION_METRICS
from pipeline.metrics import _check_boot
from pipeline.stage_keys import stage_hash
from pipeline.workspace import resolve_home_path

if TYPE_CHECKING:
    from pipeline.workspace import Workspace

Say = Callable[..., None]


@dataclass(frozen=True)
class Environment:
    """What the metrics can use on this machine and configuration, and why not where they cannot."""

    tokenizer: str
    tokenizer_rules: int          # the tokenizer's rules version: new rules, new tokens, new row hashes
    meteor: str | None            # None: available; else the reason it is not
    spice: str | None
    clip_key: str | None          # the open_clip embedder key (None: CLIPScore not applicable)
    clip: str | None              # why CLIPScore is not applicable

    def as_dict(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer, "tokenizer_rules": self.tokenizer_rules, "meteor": self.meteor is None,
                "spice": self.spice is None, "clip": self.clip_key}


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
    tokenizer = default_tokenizer()
    return Environment(tokenizer.name, tokenizer.rules, None if java else f"no Java runtime ({why})",
                       spice_unavailable(), clip.key if clip is not None else None, no_clip)


@dataclass(frozen=True)
class Photos:
    """The photos scored and their references (raw text)."""

    ids: list[str]
    references: list[list[str]]           # each photo's human captions: every captioner is scored against all
    with_references: bool                 # False: no target has two human captions

    @property
    def describe(self) -> str:
        if not self.with_references:
            return "no target has two human captions: reference-based metrics are not applicable"
        counts = sorted({len(r) for r in self.references})
        many, others = ((str(counts[0]), str(counts[0] - 1)) if len(counts) == 1 else
                        (f"{counts[0]}-{counts[-1]}", f"{counts[0] - 1}-{counts[-1] - 1}"))
        return (f"every captioner against all {many} human captions of each target, as the Flickr8k/COCO "
                "evaluation does; the human row is the mean over leave-one-out hold-outs, each human caption "
                f"against the target's {others} others")

    def hold_outs(self) -> list["HoldOut"]:
        """The human row's hold-outs: hold-out h scores caption h of every photo with more than h captions
        against that photo's other captions."""
        out = []
        for h in range(max((len(r) for r in self.references), default=0) if self.with_references else 0):
            index = [n for n, refs in enumerate(self.references) if len(refs) > h]
            out.append(HoldOut(index, [self.references[n][h] for n in index],
                               [self.references[n][:h] + self.references[n][h + 1:] for n in index]))
        return out


@dataclass(frozen=True)
class HoldOut:
    """One leave-one-out hold-out of the human row."""

    index: list[int]                      # positions (in ``Photos.ids``) of the photos it covers
    captions: list[str]                   # each one's held-out caption
    references: list[list[str]]           # each one's other captions


def photos(ws: "Workspace") -> Photos:
    store = ws.store
    targets = store.image_ids("target")
    refs = store.reference_captions(targets)
    usable = {i: [c for c in refs.get(i, []) if c.strip()] for i in targets}
    ids = [i for i in targets if len(usable[i]) >= 2]
    if not ids:
        return Photos(list(targets), [[] for _ in targets], False)
    return Photos(ids, [usable[i] for i in ids], True)


HUMAN_JOIN = " / "         # the human row's 'caption' of a photo: its human captions, as the report lists them


def row_captions(ws: "Workspace", row: str, ph: Photos) -> list[str]:
    """The caption each photo has in a row ('' where it has no usable one); for ``human``, every human caption
    of the photo (it is scored one hold-out at a time)."""
    ids = ph.ids
    if row == HUMAN:
        return [HUMAN_JOIN.join(refs) for refs in ph.references]
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
    captions = {r: row_captions(ws, r, ph) for r in rows}
    tokenizer = JavaPtbTokenizer() if env.tokenizer == "ptb-java" else PythonPtbTokenizer()
    texts = list(dict.fromkeys([c for r, caps in captions.items() if r != HUMAN for c in caps]
                               + [r for refs in ph.references for r in refs]))
    t0 = time.perf_counter()
    tokens = dict(zip(texts, tokenizer.tokenize(texts)))
    say(f"tokenised {len(texts)} captions and references ({tokenizer.name}) in {time.perf_counter() - t0:.1f} s")
    tick()
    clip_vectors = _clip_inputs(ws, env, ph, captions, say)
    if env.clip_key is not None:
        tick()

    with ExitStack() as stack:
        meteor_ctx = None
        if ph.with_references and env.meteor is None:
            from pipeline.caption_metrics.meteor import MeteorScorer

            cache = ws.config.evaluate.meteor_cache
            # at most one jar process, stopped on any exit; none when the home's cache holds every pair
            meteor_ctx = stack.enter_context(MeteorScorer(resolve_home_path(cache) if cache else None, say))
        for row in rows:
            t_row = time.perf_counter()
            caps = captions[row]
            scores: dict[str, list[float | None]] = {}
            missing = [] if row == HUMAN else [i for i, c in zip(ph.ids, caps) if not c]
            result = RowScores(row, list(ph.ids), list(caps), missing, scores)
            # a captioner is one set of (caption, references) pairs; the human row one per hold-out
            sets = ([_Scored(list(range(len(ph.ids))), caps, ph.references)] if row != HUMAN else
                    [_Scored(h.index, h.captions, h.references) for h in ph.hold_outs()])
            n = len(ph.ids)
            for name in row_steps(row, env, ph.with_references):
                if halt():
                    return
                if name == "BLEU":
                    per = _Blocks(n, len(sets), coco.BLEU_N)
                    stats = _Blocks(n, len(sets), coco.BLEU_STATS, fill=0.0)
                    for h, part in enumerate(sets):
                        b = coco.bleu(part.hyp(tokens), part.refs(tokens))
                        per.put(h, part.index, b.per_photo)
                        stats.put(h, part.index, b.stats)
                    for k, metric in enumerate(coco.BLEU_NAMES):
                        scores[metric] = per.photo_mean(k)
                    result.bleu_stats = stats.flat()
                elif name == "ROUGE-L":
                    scores["ROUGE-L"] = _photo_means(sets, n, [coco.rouge_l(p.hyp(tokens), p.refs(tokens)) for p in sets])
                elif name == "CIDEr-D":
                    scores["CIDEr-D"] = _photo_means(sets, n, [coco.cider_d(p.hyp(tokens), p.refs(tokens)) for p in sets])
                elif name == "METEOR" and meteor_ctx is not None:
                    from pipeline.caption_metrics.meteor import N_STATS, segment_scores

                    per = _Blocks(n, len(sets), 1)
                    stats = _Blocks(n, len(sets), N_STATS, fill=0.0)
                    before = meteor_ctx.from_cache
                    for h, part in enumerate(sets):
                        got = meteor_ctx.stats(part.hyp(tokens), part.refs(tokens))
                        stats.put(h, part.index, got)
                        per.put(h, part.index, segment_scores(got)[:, None])
                    cached = meteor_ctx.from_cache - before
                    say(f"{row}: METEOR for {sum(len(p.index) for p in sets)} captions"
                        + (f" ({cached} from the cache)" if cached else ""))
                    result.meteor_stats = stats.flat()
                    scores["METEOR"] = per.photo_mean(0)
                elif name == "SPICE":
                    from pipeline.caption_metrics.spice import spice

                    scores["SPICE"] = _photo_means(sets, n, [spice(p.hyp(tokens), p.refs(tokens)) for p in sets])
                elif name == "CLIPScore" and clip_vectors is not None:
                    both = [_clip_scores(clip_vectors, [ph.ids[k] for k in p.index], p.captions, p.references)
                            for p in sets]
                    scores["CLIPScore"] = _photo_means(sets, n, [b[0] for b in both])
                    scores["RefCLIPScore"] = _photo_means(sets, n, [b[1] for b in both])
                elif name == "copy rate":
                    shown, what = shown_captions(ws, row, ph.ids)
                    pairs = [copy_and_overlap(c, shown.get(i, [])) if c else (0.0, 0.0)
                             for i, c in zip(ph.ids, caps)]
                    scores["copy rate"] = [p[0] for p in pairs]
                    scores["prompt overlap"] = [p[1] for p in pairs]
                    result.shown = what
                elif name == "length":
                    scores["length"] = _photo_means(sets, n, [[float(len(tokens[c].split())) if c else None
                                                               for c in p.captions] for p in sets])
                    present = [c for part in sets for c in part.captions if c]
                    result.vocabulary = len({w for c in present for w in tokens[c].split()})
                    result.distinct = len({normalise(c) for c in present}) / len(present) if present else None
                tick()
            result.seconds = time.perf_counter() - t_row
            done(result)


@dataclass(frozen=True)
class _Scored:
    """(caption, references) pairs scored together: a captioner's photos, or one hold-out of the human row."""

    index: list[int]                      # positions in ``Photos.ids``
    captions: Sequence[str]
    references: Sequence[Sequence[str]]

    def hyp(self, tokens: dict[str, str]) -> list[str]:
        return [tokens[c] if c else "" for c in self.captions]

    def refs(self, tokens: dict[str, str]) -> list[list[str]]:
        return [[tokens[r] for r in refs] for refs in self.references]


class _Blocks:
    """Per photo, one block of ``width`` numbers per set scored (the human row: per hold-out); a photo a set
    does not cover keeps ``fill`` (NaN: no value; 0: counts that add nothing to a corpus score)."""

    def __init__(self, n: int, sets: int, width: int, fill: float = np.nan) -> None:
        self.data = np.full((n, sets, width), fill, dtype=np.float64)

    def put(self, h: int, index: list[int], values: np.ndarray) -> None:
        if index:
            self.data[index, h, :] = np.asarray(values, dtype=np.float64).reshape(len(index), -1)

    def photo_mean(self, column: int) -> list[float | None]:
        """Each photo's mean over the sets that scored it (a captioner: its one value); None where none did."""
        values = self.data[:, :, column]
        count = (~np.isnan(values)).sum(axis=1)
        total = np.where(np.isnan(values), 0.0, values).sum(axis=1)
        return [float(t / c) if c else None for t, c in zip(total, count)]

    def flat(self) -> list[list[float]]:
        """Per photo: the blocks one after the other (what ``_per_photo`` reads back, a block per hold-out)."""
        return self.data.reshape(self.data.shape[0], -1).tolist()


def _photo_means(sets: list[_Scored], n: int, per_set: list[Sequence[float | None]]) -> list[float | None]:
    """A per-photo metric given per set: each photo's mean over the sets that scored it (NaN/None: no value)."""
    blocks = _Blocks(n, len(sets), 1)
    for h, (part, values) in enumerate(zip(sets, per_set)):
        blocks.put(h, part.index, np.asarray([np.nan if v is None else v for v in values], dtype=np.float64))
    return blocks.photo_mean(0)


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
    texts = list(dict.fromkeys([c for row, caps in captions.items() if row != HUMAN for c in caps if c]
                               + [r for refs in ph.references for r in refs if r]))
    vectors, n_new = caption_vectors(store, embedder, texts)
    if n_new:
        say(f"CLIPScore: embedded {n_new} caption texts with {embedder.key}")
    return _ClipInputs(embedder, image, dict(zip(texts, vectors)))


def _clip_scores(inputs: _ClipInputs, ids: Sequence[str], caps: Sequence[str],
                 references: Sequence[Sequence[str]]) -> tuple[list[float | None], list[float | None]]:
    from pipeline.caption_metrics.clipscore import clip_score, ref_clip_score

    clip_s: list[float | None] = []
    ref_s: list[float | None] = []
    for i, cap, refs in zip(ids, caps, references):
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

def hold_out_mean(aggregate: Callable[[np.ndarray], np.ndarray], width: int) -> Callable[[np.ndarray], np.ndarray]:
    """A corpus score of per-photo counts kept as one block of ``width`` per hold-out (the human row: (..., n,
    hold-outs x width)), as the mean over hold-outs of the score of each hold-out's photos. A photo outside a
    hold-out has zero counts there (adding nothing); a hold-out with no photo in a resample (no reference
    words: column 1, the reference length of both BLEU's and METEOR's counts) is left out of the mean."""
    def mean(data: np.ndarray) -> np.ndarray:
        blocks = np.swapaxes(data.reshape(*data.shape[:-1], -1, width), -3, -2)     # (..., hold-outs, n, width)
        scores = aggregate(blocks)                                                  # (..., hold-outs)
        present = blocks[..., 1].sum(axis=-1) > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(present, scores, 0.0).sum(axis=-1) / present.sum(axis=-1)
    return mean


def _per_photo(row: RowScores, metric: str) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]] | None:
    """(per-photo data, aggregate) for a metric of a row, or None when the row lacks the metric. BLEU and METEOR
    are corpus scores of per-photo counts: one block of counts per photo for a captioner, one per hold-out for
    the human row (averaged over hold-outs)."""
    if metric in coco.BLEU_NAMES and row.bleu_stats:
        k = coco.BLEU_NAMES.index(metric)
        data = np.asarray(row.bleu_stats, dtype=np.float64)
        return data, hold_out_mean(lambda d, k=k: coco.bleu_corpus(d)[..., k], coco.BLEU_STATS)
    if metric == "METEOR" and row.meteor_stats:
        from pipeline.caption_metrics.meteor import N_STATS, corpus_score

        return np.asarray(row.meteor_stats, dtype=np.float64), hold_out_mean(corpus_score, N_STATS)
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
    # a row none of whose photos has a caption has nothing to measure: no value, no interval, no paired test
    scored = [r for r in rows if not (r.ids and len(r.missing) == len(r.ids))]
    if base is not None and base not in scored:
        base = None
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
    metrics = [m.name for m in CAPTION_METRICS if m.name not in not_applicable]
    values: dict[str, dict[str, Estimate]] = {r.row: {} for r in rows}
    diffs: dict[str, dict[str, Difference]] = {r.row: {} for r in rows}
    counts: dict[str, dict[str, int]] = {r.row: {} for r in rows}
    _check_boot(n_boot, confidence)
    for metric in metrics:
        boots: dict[str, tuple[float, np.ndarray]] = {}       # row -> (point, resampled values)
        for row in scored:
            if metric == "vocabulary":
                values[row.row][metric] = Estimate(float(row.vocabulary))
                counts[row.row][metric] = len(row.ids) - len(row.missing)
                continue
            if metric == "distinct":
                values[row.row][metric] = Estimate(row.distinct)
                counts[row.row][metric] = len(row.ids) - len(row.missing)
                continue
            got = _per_photo(row, metric)
            if got is None or got[0].shape[0] == 0:
                continue
            data, aggregate = got
            counts[row.row][metric] = int((~np.isnan(data).all(axis=1)).sum())
            point = float(aggregate(data))
            boots[row.row] = (point, resampled(data, aggregate, n_boot, seed))    # same photo resamples per row
            values[row.row][metric] = interval(point, boots[row.row][1], confidence)
        if base is None or base.row not in boots:
            continue
        base_point, base_boot = boots[base.row]
        for name, (point, boot) in boots.items():
            if name != base.row:
                diffs[name][metric] = difference(point - base_point, boot, base_boot, confidence)
    result = CaptionMetricsResult(
        config_hash=config_hash, rows=names, metrics=metrics, not_applicable=not_applicable,
        baseline=base.row if base is not None else None, n_photos=len(ph.ids),
        missing={r.row: len(r.missing) for r in rows}, values=values, vs_baseline=diffs,
        tokenizer=env.tokenizer, references=ph.describe, n_boot=n_boot, confidence=confidence,
        created_at=time.time(), n=counts)
    if baseline and base is None:
        reason = result.rows_not_applicable().get(baseline)
        result.notes.append(f"baseline '{baseline}' is not applicable ({reason}); no paired test" if reason else
                            f"baseline '{baseline}' is not a captioner scored here; no paired test")
    result.seconds = time.perf_counter() - t0
    return result

