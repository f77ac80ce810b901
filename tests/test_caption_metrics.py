"""Caption metrics: known values, agreement with pycocoevalcap and the METEOR jar, the tokenizers, copy rate,
CLIPScore with a tiny open_clip model, the stage on the demo world (cached, human row, lite profile), and the
Java child processes (stopped on errors, gone after the parent is SIGKILLed)."""
from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.caption_metrics import coco
from pipeline.caption_metrics.copying import copy_and_overlap
from pipeline.caption_metrics.java import java_path
from pipeline.caption_metrics.results import HUMAN
from pipeline.caption_metrics.storage import load_caption_metrics, load_rows
from pipeline.caption_metrics.tokenize import PythonPtbTokenizer
from pipeline.stages.run import run_stage
from pipeline.stages.registry import build_stage, pipeline_stages

REPO = Path(__file__).resolve().parents[1]
needs_java = pytest.mark.skipif(java_path() is None, reason="no Java runtime: METEOR and Stanford's PTB tokenizer "
                                                            "need one (apt-get install default-jre-headless)")
HARD_CASES = [
    "A man's red colour-ful coat, isn't it?", "The dog (a \"big\" one) can't swim... 3.5 miles; 1,000 people!",
    "Mr. Smith's U.S. car.", "Two girls -- one in pink -- are playing & laughing; she'd gonna cannot",
    "he said 'hello' ok?! e-mail @ 10:30 a.m. $5 50% #1 the end.", "kids' toys and the dogs' bowls, st. louis etc.",
    "well-known ... well.known [sq] {curly} <angle> a/b 1/2 don't DON'T I'm we've you'll", "the café’s menu",
    "Don’t stop", "A.", "a b. c", "A black-and-white dog jumps over a log .", "", "   ", "A\tdog  runs",
]


def jar_eval(meteor, stats: np.ndarray) -> tuple[list[float], float]:
    """The METEOR jar's own answer to pycocoevalcap's ``EVAL`` request: per-row scores and the corpus score."""
    rows = [" ".join(f"{v:.1f}" if float(v).is_integer() else repr(float(v)) for v in row) for row in stats]
    meteor.process.stdin.write(("EVAL ||| " + " ||| ".join(rows) + "\n").encode("utf-8"))
    meteor.process.stdin.flush()
    per = [float(meteor.process.readline()) for _ in rows]
    return per, float(meteor.process.readline())


def tok(texts):
    return PythonPtbTokenizer().tokenize(texts)


# ------------------------------------------------------------------------------------------ known values

def test_identical_caption_and_references_score_bleu_4_one_and_the_maximum_cider_d():
    captions = ["a brown dog runs on the grass", "two children play with a red ball", "a man rides a bicycle"]
    refs = [[c] * 4 for c in captions]
    b = coco.bleu(captions, refs)
    assert b.corpus[3] == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(b.per_photo[:, 3], 1.0, atol=1e-6)
    # every n-gram of a photo's caption is in its references and in no other photo's: CIDEr-D's maximum, 10
    assert np.allclose(coco.cider_d(captions, refs), 10.0)
    assert np.allclose(coco.rouge_l(captions, refs), 1.0)
    worse = coco.cider_d(["a brown dog runs", *captions[1:]], refs)
    assert worse[0] < 10.0 and np.allclose(worse[1:], 10.0)


def test_bleu_and_rouge_l_computed_by_hand():
    hyp, refs = ["a dog runs fast"], [["a dog runs", "the dog is fast"]]
    b = coco.bleu(hyp, refs)
    # unigrams 4/4, bigrams 2/3 (a dog, dog runs), trigrams 1/2 (a dog runs), 4-grams 0/1; closest ref length 4
    assert b.corpus[0] == pytest.approx(1.0, abs=1e-8)
    assert b.corpus[1] == pytest.approx(math.sqrt(2 / 3), abs=1e-8)
    assert b.corpus[2] == pytest.approx((1 / 3) ** (1 / 3), abs=1e-8)
    assert b.corpus[3] < 1e-3
    # brevity penalty: a 2-word caption against 4-word references
    short = coco.bleu(["a dog"], [["a dog runs fast"]])
    assert short.corpus[0] == pytest.approx(math.exp(1 - 4 / 2), abs=1e-8)
    # ROUGE-L: LCS 3 with "a dog runs" (P 3/4, R 1), 2 with "the dog is fast"; F with beta 1.2 on max P, max R
    p, r, beta2 = 0.75, 1.0, 1.2 ** 2
    assert coco.rouge_l(hyp, refs)[0] == pytest.approx((1 + beta2) * p * r / (r + beta2 * p), abs=1e-12)


def test_cider_d_and_bleu_equal_pycocoevalcap_called_directly():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    hyps = tok(["A dog runs on the grass.", "Two cats sleep on a sofa.", "A red car parked near a tree.",
                "People walk in the rain.", ""])
    refs = [tok(["A brown dog running on grass.", "The dog runs across a lawn.", "A dog plays outside."]),
            tok(["Two cats sleeping on a couch.", "Cats asleep on the sofa.", "A pair of cats rest."]),
            tok(["A red car beside a tree.", "A car is parked by a tree.", "Red vehicle under a tree."]),
            tok(["Pedestrians in the rain.", "People with umbrellas walk.", "A rainy street with people."]),
            tok(["A blue boat on a lake.", "A boat floats on calm water.", "The lake has a boat."])]
    gts, res = dict(enumerate(refs)), {k: [h] for k, h in enumerate(hyps)}
    cider, per = Cider().compute_score(gts, res)
    assert np.array_equal(coco.cider_d(hyps, refs), per) and coco.cider_d(hyps, refs).mean() == cider
    score, _ = Bleu(4).compute_score(gts, res, verbose=0)
    b = coco.bleu(hyps, refs)
    assert b.corpus == score
    assert np.allclose(coco.bleu_corpus(b.stats), score, rtol=1e-12, atol=0)
    # a resample of photos (what the bootstrap aggregates) gives what pycocoevalcap gives on that resample
    pick = [0, 0, 2, 4, 3]
    again, _ = Bleu(4).compute_score({n: refs[k] for n, k in enumerate(pick)}, {n: [hyps[k]] for n, k in enumerate(pick)},
                                     verbose=0)
    assert np.allclose(coco.bleu_corpus(b.stats[pick]), again, rtol=1e-12, atol=0)


def test_the_human_row_averages_corpus_bleu_over_hold_outs_of_unequal_size():
    """Photos with 2, 3 and 3 captions: hold-outs 0 and 1 cover all three, hold-out 2 the last two. The row's
    BLEU is the mean of pycocoevalcap's corpus BLEU of each hold-out, on the whole set and on a resample
    (where a hold-out with no photo in it is left out of the mean)."""
    from pipeline.caption_metrics.scoring import Photos, hold_out_mean

    refs = [tok(["A dog runs on grass.", "A brown dog running."]),
            tok(["Two cats on a sofa.", "Cats sleep on a couch.", "A pair of cats rest inside."]),
            tok(["A red car by a tree.", "A car parked near a tree.", "Red vehicle under a big tree."])]
    ph = Photos(["a", "b", "c"], refs, True)
    hold_outs = ph.hold_outs()
    assert [h.index for h in hold_outs] == [[0, 1, 2], [0, 1, 2], [1, 2]]
    blocks = np.zeros((3, len(hold_outs), coco.BLEU_STATS))
    corpus = []
    for h, held in enumerate(hold_outs):
        b = coco.bleu(held.captions, held.references)
        blocks[held.index, h] = b.stats
        corpus.append(b.corpus)
    data = blocks.reshape(3, -1)
    bleu4 = hold_out_mean(lambda d: coco.bleu_corpus(d)[..., 3], coco.BLEU_STATS)
    assert float(bleu4(data)) == pytest.approx(np.mean([c[3] for c in corpus]), rel=1e-12)
    only_first = data[[0, 0]]                          # a resample holding photo a twice: hold-out 2 is empty
    expected = np.mean([coco.bleu([held.captions[0]] * 2, [held.references[0]] * 2).corpus[3]
                        for held in hold_outs[:2]])
    assert float(bleu4(only_first)) == pytest.approx(expected, rel=1e-12)
    assert bleu4(np.stack([data, only_first[[0, 1, 0]]])).shape == (2,)      # resamples on a leading axis


@needs_java
def test_meteor_scores_from_the_jar_statistics_equal_the_jar_s_own(tui_workspace):
    from pipeline.caption_metrics.meteor import MeteorScorer, corpus_score, segment_scores

    refs = [c for c in tui_workspace.store.reference_captions().values() if len(c) >= 2][:25]
    hyps = tok([r[0] for r in refs])
    hyps[3] = ""                                             # a missing caption scores 0
    hyps[4] = tok([refs[4][1]])[0]                           # a caption equal to a reference: a perfect match
    references = [tok(r[1:]) for r in refs]
    with MeteorScorer() as meteor:
        stats = meteor.stats(hyps, references)
        per, corpus = jar_eval(meteor, stats)
        _, sub = jar_eval(meteor, stats[[0, 0, 5, 4, 9]])
    assert np.allclose(segment_scores(stats), per, rtol=0, atol=1e-12)
    assert segment_scores(stats)[3] == 0.0 and segment_scores(stats)[4] > 0.9
    assert corpus_score(stats) == pytest.approx(corpus, abs=1e-12)
    assert corpus_score(stats[[0, 0, 5, 4, 9]]) == pytest.approx(sub, abs=1e-12)
    assert meteor.process.proc is None                     # stopped when the block ended


def test_spearman_with_ties_and_the_paired_difference():
    from pipeline.caption_metrics.stats import difference, interval, mean_of_scores, resampled, spearman

    # ranks of x with a tie: 1, 2.5, 2.5, 4; y falls as x rises
    rx, ry = np.array([1, 2.5, 2.5, 4]) - 2.5, np.array([4, 3, 2, 1]) - 2.5
    assert spearman([0.1, 0.5, 0.5, 0.9], [10, 7, 3, 1]) == pytest.approx((rx @ ry) / np.sqrt((rx @ rx) * (ry @ ry)))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    a = np.array([[1.0], [0.0], [1.0], [1.0], [np.nan]])
    b = np.zeros((5, 1))
    boot_a, boot_b = resampled(a, mean_of_scores, 500, 0), resampled(b, mean_of_scores, 500, 0)
    est = interval(float(mean_of_scores(a)), boot_a)
    assert est.value == 0.75 and 0.0 <= est.low <= est.value <= est.high <= 1.0   # the NaN photo is left out
    d = difference(0.75, boot_a, boot_b)
    assert d.diff == 0.75 and d.low > 0 and d.p < 0.05


# ------------------------------------------------------------------------------------------ tokenizers

@needs_java
def test_python_tokenizer_gives_stanford_s_tokens_on_the_demo_world(tui_workspace):
    from pipeline.caption_metrics.tokenize import JavaPtbTokenizer

    store = tui_workspace.store
    texts = [c for caps in store.reference_captions().values() for c in caps]
    texts += [r[3] for r in store.conn.execute("SELECT image_id, captioner, config_hash, text FROM captions")]
    texts += HARD_CASES
    java, python = JavaPtbTokenizer().tokenize(texts), tok(texts)
    assert len(texts) > 400
    assert [(t, j) for t, j, p in zip(texts, java, python) if j != p] == []


def test_python_tokenizer_rules():
    assert tok(["A man's dog can't swim, isn't it?"]) == ["a man 's dog ca n't swim is n't it"]
    assert tok(["The U.S. team (in red) won 1,000 games."]) == ["the u.s. team -lrb- in red -rrb- won 1,000 games"]
    assert tok(['He said "hi" -- twice...']) == ["he said hi twice"]
    # what Stanford's jar does beyond ASCII: dashes and ellipses are punctuation, emoji are dropped, a combining
    # accent stays with its letter
    assert tok(["A dog \u2014 running\u2014fast \u2013 on the beach\u2026"]) == ["a dog running fast on the beach"]
    assert tok(["A cat \U0001F600 smiling\U0001F44D\U0001F3FD and a \U0001F1FA\U0001F1F8 flag, \u2600\ufe0f sun"]) == [
        "a cat smiling and a flag \u2600 sun"]
    assert tok(["The cafe\u0301 and the re\u0301sume\u0301"]) == ["the cafe\u0301 and the re\u0301sume\u0301"]
    assert tok(["\u00bd cup for \u20ac5, \u00abquoted\u00bb, soft\u00adhyphen"]) == ["1/2 cup for $ 5 quoted softhyphen"]


@needs_java
def test_python_tokenizer_gives_the_jar_s_tokens_on_every_character_of_its_unicode_blocks():
    """Every assigned character of ``UNICODE_BLOCKS`` (Latin, combining accents, General Punctuation, currency,
    number forms, the symbol and emoji blocks, variation selectors), alone and inside a word, and emoji
    sequences: the Python rules give exactly the jar's tokens."""
    import unicodedata

    from pipeline.caption_metrics.tokenize import UNICODE_BLOCKS, JavaPtbTokenizer

    texts = []
    for low, high in UNICODE_BLOCKS:
        for code in range(low, high + 1):
            ch = chr(code)
            if unicodedata.category(ch) in ("Cn", "Co", "Cs"):
                continue
            texts.append(f"a {ch} b")
            if ch != "\u2019":     # an apostrophe inside a word follows the jar's word lists (o'clock, but a ' b)
                texts.append(f"a{ch}b")
    texts += ["a dog \u2014 running", "cafe\u0301s on the street", "\U0001F468\u200d\U0001F469\u200d\U0001F467 family",
              "1\ufe0f\u20e3 dog", "\U0001F44D\U0001F3FD thumbs", "E\u0301TE\u0301 nai\u0308ve", "x \u0301 y", "5\u0301",
              "soft\u00adhyphen", "tab \u00ad x", "1\u20442 cup", "1\u00bd cups", "5\u20ac", "\u00a35", "the dog\u2026 runs",
              "\u00abquoted\u00bb \u2039x\u203a", "well\u2010known non\u2011stop", "a\u2010 b", "x\u00b2y", "e\u0301\u20ddx"]
    java, python = JavaPtbTokenizer().tokenize(texts), tok(texts)
    assert len(texts) > 8000
    assert [(t, j, p) for t, j, p in zip(texts, java, python) if j != p] == []


# ------------------------------------------------------------------------------------------ copy rate

def test_copy_and_overlap():
    shown = ["A brown dog runs on the grass .", "Two dogs play in a park ."]
    assert copy_and_overlap("a brown dog runs on the grass", shown) == (1.0, 1.0)     # copied after normalising
    copied, overlap = copy_and_overlap("A brown dog sleeps", shown)
    # unigrams 3/4, bigrams 2/3 (a brown, brown dog), trigrams 1/2, 4-grams 0/1
    assert copied == 0.0 and overlap == pytest.approx((3 / 4 + 2 / 3 + 1 / 2 + 0) / 4)
    assert copy_and_overlap("a brown dog runs on the grass", []) == (0.0, 0.0)       # shown nothing: copies nothing


# ------------------------------------------------------------------------------------------ the stage

@pytest.fixture
def lite_copy(tui_workspace, tmp_path):
    """A copy of the TUI tests' lite demo workspace (every stage, caption metrics included, already run)."""
    from pipeline.workspace import Workspace

    root = tmp_path / "demo"
    shutil.copytree(tui_workspace.root, root, ignore=shutil.ignore_patterns("logs"))
    return Workspace(root)


def test_lite_demo_world_rows_human_baseline_and_clipscore_not_applicable(lite_copy):
    ws = lite_copy
    result = load_caption_metrics(ws)
    assert result is not None and result.rows == [HUMAN, "knn-consensus"] and result.baseline == "knn-consensus"
    targets = ws.store.image_ids("target")
    assert result.n_photos == len(targets) == 30 and result.missing == {HUMAN: 0, "knn-consensus": 0}
    assert "clipscore needs image_embedder.name" in result.not_applicable["CLIPScore"].lower()
    assert "RefCLIPScore" in result.not_applicable and "CLIPScore" not in result.metrics
    assert "SPICE" in result.not_applicable
    for metric in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D", "copy rate", "length", "vocabulary", "distinct"):
        assert metric in result.metrics
    # people agree with each other more than the neighbours' consensus agrees with them
    for metric in ("BLEU-4", "ROUGE-L", "CIDEr-D"):
        human, knn = result.get(HUMAN, metric), result.get("knn-consensus", metric)
        assert human.value > knn.value and knn.low <= knn.value <= knn.high
        assert result.vs_baseline[HUMAN][metric].diff == pytest.approx(human.value - knn.value)
    # kNN consensus copies a neighbour's caption by construction; the human row has no copy rate
    assert result.get("knn-consensus", "copy rate").value == 1.0 and result.get(HUMAN, "copy rate") is None
    rows = load_rows(ws, result)
    refs = ws.store.reference_captions(targets)
    assert rows[HUMAN].captions == [" / ".join(refs[i]) for i in rows[HUMAN].ids]     # every caption, one at a time
    knn = rows["knn-consensus"]
    assert np.mean(knn.scores["CIDEr-D"]) == pytest.approx(result.get("knn-consensus", "CIDEr-D").value)
    if java_path() is not None:
        assert "METEOR" in result.metrics and result.tokenizer == "ptb-java"
    else:
        assert "Java" in result.not_applicable["METEOR"] and result.tokenizer == "ptb-python"


def test_captioners_are_scored_against_every_human_caption_and_human_is_the_leave_one_out_mean(lite_copy):
    """The published Flickr8k/COCO protocol, checked against pycocoevalcap called directly: a captioner against
    all five human captions of each target; the human row the mean over the five hold-outs (each caption against
    the other four), its per-photo scores each photo's mean over its hold-outs."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    from pipeline.caption_metrics.tokenize import default_tokenizer

    ws = lite_copy
    result = load_caption_metrics(ws)
    rows = load_rows(ws, result)
    ids = rows["knn-consensus"].ids
    refs = ws.store.reference_captions(ids)
    assert {len(refs[i]) for i in ids} == {5}
    tokenizer = default_tokenizer()
    assert tokenizer.name == result.tokenizer

    def direct(captions: dict[str, str], references: dict[str, list[str]]):
        texts = list(captions.values()) + [r for rs in references.values() for r in rs]
        tokens = dict(zip(texts, tokenizer.tokenize(texts)))
        gts = {i: [tokens[r] for r in rs] for i, rs in references.items()}
        res = {i: [tokens[c]] for i, c in captions.items()}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        cider, cider_per = Cider().compute_score(gts, res)
        rouge, rouge_per = Rouge().compute_score(gts, res)
        return bleu[3], cider, dict(zip(captions, cider_per)), rouge, dict(zip(captions, rouge_per))

    knn = {i: c for i, c in zip(ids, rows["knn-consensus"].captions)}
    bleu4, cider, cider_per, rouge, _ = direct(knn, {i: refs[i] for i in ids})
    assert result.get("knn-consensus", "BLEU-4").value == pytest.approx(bleu4, rel=1e-12)
    assert result.get("knn-consensus", "CIDEr-D").value == pytest.approx(cider, rel=1e-12)
    assert result.get("knn-consensus", "ROUGE-L").value == pytest.approx(rouge, rel=1e-12)
    assert rows["knn-consensus"].scores["CIDEr-D"] == pytest.approx([cider_per[i] for i in ids], rel=1e-12)
    hold_outs = [direct({i: refs[i][h] for i in ids}, {i: refs[i][:h] + refs[i][h + 1:] for i in ids})
                 for h in range(5)]
    assert result.get(HUMAN, "BLEU-4").value == pytest.approx(np.mean([d[0] for d in hold_outs]), rel=1e-12)
    assert result.get(HUMAN, "CIDEr-D").value == pytest.approx(np.mean([d[1] for d in hold_outs]), rel=1e-12)
    assert result.get(HUMAN, "ROUGE-L").value == pytest.approx(np.mean([d[3] for d in hold_outs]), rel=1e-12)
    assert rows[HUMAN].scores["CIDEr-D"] == pytest.approx([np.mean([d[2][i] for d in hold_outs]) for i in ids],
                                                          rel=1e-12)
    # the first hold-out alone (what the human row used to be) is not the row's value
    assert abs(hold_outs[0][0] - result.get(HUMAN, "BLEU-4").value) > 1e-6
    low, high = result.get(HUMAN, "BLEU-4").low, result.get(HUMAN, "BLEU-4").high
    assert low < result.get(HUMAN, "BLEU-4").value < high
    assert "every captioner against all 5 human captions of each target" in result.references
    assert "each human caption against the target's 4 others" in result.references


def test_a_row_without_a_single_caption_is_not_applicable_with_its_reason(lite_copy):
    """Every knn-consensus caption failed: its row has no value, no interval and no paired test (not 0 with an
    interval of [0, 0] and p=0.002), anywhere; the human row, whose baseline it was, has no paired test."""
    from pipeline.stages.registry import stage_hash

    ws = lite_copy
    targets = ws.store.image_ids("target")
    ws.store.put_captions("knn-consensus", stage_hash(ws, "caption", "knn-consensus"),
                          [{"image_id": t, "text": "", "status": "failed", "error": "model crashed"} for t in targets])
    run_stage(build_stage(ws, "caption-metrics"))
    result = load_caption_metrics(ws)
    reason = result.rows_not_applicable()["knn-consensus"]
    assert "none of the 30 photos has a usable knn-consensus caption" in reason
    assert all(result.get("knn-consensus", m) is None for m in result.metrics)
    assert result.vs_baseline[HUMAN] == {} and any("baseline 'knn-consensus' is not applicable" in n for n in result.notes)
    stored = ws.store.caption_metrics.summary(result.config_hash)
    assert {v.row for v in stored.values} == {HUMAN}                              # no number stored for the row
    assert result.get(HUMAN, "CIDEr-D").value > 0


def test_report_files_carry_the_caption_metrics_and_their_correlation_with_retrieval(lite_copy):
    import csv
    import json

    ws = lite_copy
    result = load_caption_metrics(ws)
    reports = ws.reports_dir
    data = json.loads((reports / "metrics.json").read_text())["caption_metrics"]
    assert data["rows"] == result.rows and data["values"] == json.loads(json.dumps(result.as_dict()))["values"]
    rho = data["retrieval_correlation"]["spearman"]["knn-consensus"]
    assert set(rho) >= {"BLEU-4", "ROUGE-L", "CIDEr-D", "length"} and -1.0 <= rho["CIDEr-D"] <= 1.0
    assert rho["copy rate"] is None                              # constant 1.0: no correlation to speak of
    with (reports / "metrics.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["query_kind"] == "caption"]
    cider = {r["method"]: r for r in rows if r["metric"] == "CIDEr-D"}
    assert float(cider[HUMAN]["value"]) == pytest.approx(result.get(HUMAN, "CIDEr-D").value)
    assert cider[HUMAN]["baseline"] == "knn-consensus" and cider["knn-consensus"]["diff"] == ""
    page = (reports / "index.html").read_text()
    assert "<h2>Caption metrics</h2>" in page and 'alt="caption metrics"' in page
    assert "Which caption metric predicts retrieval?" in page and "Worst captions by CIDEr-D" in page
    assert "Ranked by CIDEr-D, lowest first" in page
    assert (reports / "caption_metrics.png").stat().st_size > 0


def test_the_stage_is_cached_and_a_changed_captioner_recomputes_only_its_row(lite_copy):
    ws = lite_copy
    stage = build_stage(ws, "caption-metrics")
    assert stage.plan(only_missing=True) == [] and run_stage(stage).ran == 0
    before = load_caption_metrics(ws)
    # one caption changes: the knn-consensus row (and the summary) are computed again, the human row is not
    from pipeline.stages.registry import stage_hash

    target = ws.store.image_ids("target")[0]
    ws.store.put_captions("knn-consensus", stage_hash(ws, "caption", "knn-consensus"),
                          [{"image_id": target, "text": "", "status": "failed", "error": "out of memory"}])
    stage = build_stage(ws, "caption-metrics")
    assert stage.settled_items() == {HUMAN}
    report = run_stage(stage)
    assert report.done == 1
    after = load_caption_metrics(ws)
    assert after.config_hash != before.config_hash and after.row_hashes[HUMAN] == before.row_hashes[HUMAN]
    assert after.missing["knn-consensus"] == 1
    knn = load_rows(ws, after)["knn-consensus"]
    n = knn.ids.index(target)
    assert knn.captions[n] == "" and knn.scores["CIDEr-D"][n] == 0.0 and knn.scores["BLEU-1"][n] < 1e-6


def _same_numbers(a, b) -> None:
    """Two summaries show the same table: rows, metrics, reasons, values, intervals and paired tests."""
    for field in ("rows", "metrics", "not_applicable", "baseline", "n_photos", "missing", "values", "vs_baseline",
                  "n", "notes", "tokenizer", "references", "n_boot", "confidence", "row_hashes"):
        assert getattr(a, field) == getattr(b, field), field


def test_summary_and_rows_are_typed_rows_of_their_own_tables(lite_copy):
    from pipeline.caption_metrics.results import PER_PHOTO

    ws = lite_copy
    result = load_caption_metrics(ws)
    stored = ws.store.caption_metrics.summary(result.config_hash)
    assert [r.row for r in stored.rows] == result.rows and stored.metrics == tuple(result.metrics)
    assert dict(stored.not_computed) == result.not_applicable and "SPICE" in dict(stored.not_computed)
    cider = next(v for v in stored.values if v.row == HUMAN and v.metric == "CIDEr-D")
    assert cider.estimate == result.get(HUMAN, "CIDEr-D")
    assert cider.n == result.n_photos and cider.baseline == "knn-consensus" and cider.vs_baseline.p < 0.05
    knn = ws.store.caption_metrics.row(result.row_hashes["knn-consensus"])
    assert knn.row == "knn-consensus" and len(knn.photos) == result.n_photos
    assert {s.metric for s in knn.scores} <= set(PER_PHOTO) and "CIDEr-D" in {s.metric for s in knn.scores}
    assert len(knn.photos[0].bleu_stats) == coco.BLEU_STATS
    assert ws.store.get_meta("caption-metrics/latest") is None                 # nothing of it in meta


def test_a_new_baseline_writes_only_the_summary(lite_copy):
    ws = lite_copy
    before = load_caption_metrics(ws)
    ws.config.evaluate.baseline = HUMAN
    stage = build_stage(ws, "caption-metrics")
    # every row is stored, but this configuration has no summary: nothing is done until the batch writes it
    assert stage.done_items() == set() and stage.counts().done == 0
    report = run_stage(stage)
    assert report.ran == 1 and report.done == 0              # no row scored again
    after = load_caption_metrics(ws)
    assert after.baseline == HUMAN and after.row_hashes == before.row_hashes
    d = after.vs_baseline["knn-consensus"]["CIDEr-D"]
    assert d.diff == pytest.approx(-before.vs_baseline[HUMAN]["CIDEr-D"].diff)
    assert build_stage(ws, "caption-metrics").counts().done == 2


def test_a_workspace_with_the_schema_2_blobs_recomputes_the_same_numbers(lite_copy):
    """capsearch before schema 3 kept caption metrics as JSON in meta: opening such a workspace removes them
    (nothing stale is shown) and the next run computes the same numbers into the tables."""
    import json
    import sqlite3

    from pipeline.workspace import Workspace

    ws = lite_copy
    before = load_caption_metrics(ws)
    rows = load_rows(ws, before)
    ws.store.close()
    conn = sqlite3.connect(ws.root / "capsearch.db")               # the store as schema 2 left it
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'caption_metric%'")]
    assert len(tables) == 7
    for table in tables:
        conn.execute(f"DROP TABLE {table}")
    for table in ("item_inputs", "runs", "run_progress", "run_log"):    # what schemas 4 and 5 added
        conn.execute(f"DROP TABLE {table}")
    conn.execute("ALTER TABLE stage_runs DROP COLUMN run_id")
    for table, column in (("captions", "prompt_tokens"), ("captions", "completion_tokens"),
                          ("stage_runs", "usage")):                 # what schema 6 added
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    blobs = {f"caption-metrics/row/{before.row_hashes[r]}": rows[r].as_dict() for r in rows}
    blobs[f"caption-metrics/{before.config_hash}"] = before.as_dict()
    blobs["caption-metrics/latest"] = before.config_hash
    conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in blobs.items()])
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()

    ws = Workspace(ws.root)
    assert ws.store.conn.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'caption-metrics/%'").fetchone()[0] == 0
    assert load_caption_metrics(ws) is None and build_stage(ws, "caption-metrics").counts().done == 0
    assert run_stage(build_stage(ws, "caption-metrics")).done == 2
    after = load_caption_metrics(ws)
    _same_numbers(after, before)
    again = load_rows(ws, after)
    assert {r: (x.ids, x.captions, x.scores, x.bleu_stats, x.meteor_stats, x.vocabulary, x.distinct, x.shown)
            for r, x in again.items()} == {
        r: (x.ids, x.captions, x.scores, x.bleu_stats, x.meteor_stats, x.vocabulary, x.distinct, x.shown)
        for r, x in rows.items()}


def test_progress_moves_per_metric_of_each_row(lite_copy):
    from pipeline.caption_metrics import scoring

    ws = lite_copy
    ws.store.caption_metrics.delete_all()
    events = []
    stage = build_stage(ws, "caption-metrics")
    run_stage(stage, events.append)
    advances = [e for e in events if e.stage == "caption-metrics" and e.kind == "advance"]
    steps = scoring.count_steps(ws, stage.rows(), stage.env)
    # the tokenizer run, BLEU, ROUGE-L, CIDEr-D (METEOR), copy rate, length per row, then the summary
    assert steps >= 1 + 2 * 4 and advances[-1].total == steps + 1
    assert [e.done for e in advances if e.done] == list(range(1, steps + 2))
    assert all(e.total == steps + 1 for e in advances[1:])


def test_a_cancelled_run_keeps_the_rows_it_scored_and_the_next_run_scores_the_rest(lite_copy, prefect_harness):
    import threading

    from flows.api import run

    ws = lite_copy
    reference = load_caption_metrics(ws)
    ws.store.caption_metrics.delete_all()
    cancel = threading.Event()

    def progress(event):
        if event.kind == "message" and event.message.startswith(f"{HUMAN}: ") and "photos scored" in event.message:
            cancel.set()                                         # after the first row, before the second

    summary = run(ws, ["caption-metrics"], progress=progress, cancel=cancel)
    assert summary.status == "cancelled" and summary.stage("caption-metrics").status == "cancelled"
    assert ws.store.stage_runs("caption-metrics")[0].status == "cancelled"
    assert ws.store.caption_metrics.stored_rows(reference.row_hashes.values()) == {reference.row_hashes[HUMAN]}
    assert load_caption_metrics(ws) is None
    assert build_stage(ws, "caption-metrics").counts().done == 1

    again = run(ws, ["caption-metrics"])
    assert again.status == "completed" and again.stage("caption-metrics").done == 1   # only the other row
    _same_numbers(load_caption_metrics(ws), reference)


def test_evaluate_twice_computes_the_caption_metrics_once(tmp_path, capsys):
    import json

    from tests.fixtures.cli import run_cli
    from tests.fixtures.text_worlds import text_world

    root = tmp_path / "ws"
    shutil.copytree(text_world(), root, ignore=shutil.ignore_patterns("logs"))
    code, out, err = run_cli(capsys, "evaluate", "--json", "-w", str(root))
    assert code == 0, err
    data = json.loads(out)["caption_metrics"]
    assert data["rows"] == [HUMAN, "knn-consensus"] and data["values"]["knn-consensus"]["CIDEr-D"]["value"] > 0
    from pipeline.workspace import Workspace

    ws = Workspace(root)
    first = load_caption_metrics(ws)
    runs = len(ws.store.stage_runs("caption-metrics"))
    code, out, err = run_cli(capsys, "evaluate", "-w", str(root))
    assert code == 0, err
    assert "Caption metrics" in out and "CIDEr-D" in out and "human" in out
    last = ws.store.stage_runs("caption-metrics")[0]
    assert len(ws.store.stage_runs("caption-metrics")) == runs + 1 and last.done == 0
    assert load_caption_metrics(ws).created_at == first.created_at      # the summary was not made again


def test_a_captioner_that_copies_its_first_neighbour_scores_1_and_vlm_plain_0(tmp_path, tiny_smolvlm_dir):
    from pipeline.config_file import update_config_file
    from pipeline.stages.registry import stage_hash
    from pipeline.workspace import Workspace
    from tests.fixtures.tui_world import tui_workspace_at
    from tests.fixtures.captioner_configs import SHORT_TEMPLATE, generative_captioners

    template = tmp_path / "short.txt"
    template.write_text(SHORT_TEMPLATE, encoding="utf-8")      # short enough for the tiny VLM's context
    ws = tui_workspace_at(tmp_path / "ws", tmp_path / "world")
    caps = generative_captioners(vlm_neighbours=tiny_smolvlm_dir, vlm_plain=tiny_smolvlm_dir)
    caps["enabled"] = [*caps["enabled"], "knn-consensus"]
    update_config_file(ws.config_path, {"captioners": caps, "prompts": {"template": str(template), "per_neighbour": "first"},
                                        "evaluate": {"baseline": "vlm-plain", "n_boot": 200}})
    ws = Workspace(ws.root)
    for stage in pipeline_stages(ws, ["ingest", "embed-images", "neighbours", "prompts"]):
        run_stage(stage)
    run_stage(build_stage(ws, "caption", "knn-consensus"))
    store = ws.store
    targets = store.image_ids("target")
    prompts = store.prompts(stage_hash(ws, "prompts"), targets)
    first = {t: next(line[3:] for line in prompts[t].text.splitlines() if line.startswith("1. ")) for t in targets}
    neighbours = store.neighbours(stage_hash(ws, "neighbours"), targets)
    refs = store.reference_db_captions()
    assert all(first[t] == refs[neighbours[t][0].id][0] for t in targets)     # the first neighbour's first caption
    # what a VLM that copies its nearest neighbour's caption writes (the tiny test VLM writes noise)
    for name in ("vlm-neighbours", "vlm-plain"):
        store.put_captions(name, stage_hash(ws, "caption", name),
                           [{"image_id": t, "text": first[t].upper(), "status": "ok"} for t in targets])
    run_stage(build_stage(ws, "caption-metrics"))
    result = load_caption_metrics(ws)
    assert result.get("vlm-neighbours", "copy rate").value == 1.0
    assert result.get("vlm-neighbours", "prompt overlap").value == 1.0
    assert result.get("vlm-plain", "copy rate").value == 0.0         # its prompt shows no caption
    assert result.get("knn-consensus", "copy rate").value == 1.0
    d = result.vs_baseline["vlm-neighbours"]["copy rate"]
    assert d.diff == 1.0 and d.p < 0.05


def test_clipscore_and_refclipscore_equal_a_direct_computation(tmp_path, tiny_open_clip):
    import open_clip
    import torch

    from pipeline.caption_metrics.clipscore import PREFIX
    from pipeline.config_file import update_config_file
    from pipeline.images import open_rgb
    from pipeline.workspace import Workspace
    from tests.fixtures.tui_world import tui_workspace_at

    ws = tui_workspace_at(tmp_path / "ws", tmp_path / "world")
    update_config_file(ws.config_path, {"image_embedder": {"name": "open_clip", "model": tiny_open_clip.model,
                                                           "pretrained": tiny_open_clip.weights_file},
                                        "evaluate": {"n_boot": 200}})
    ws = Workspace(ws.root)
    for stage in pipeline_stages(ws, ["ingest", "embed-images", "neighbours", "prompts", "caption"]):
        run_stage(stage)
    run_stage(build_stage(ws, "caption-metrics"))
    result = load_caption_metrics(ws)
    assert "CLIPScore" in result.metrics and "RefCLIPScore" in result.metrics
    rows = load_rows(ws, result)

    model, _, preprocess = open_clip.create_model_and_transforms(tiny_open_clip.model,
                                                                 pretrained=tiny_open_clip.weights_file)
    tokenizer = open_clip.get_tokenizer(tiny_open_clip.model)
    model.eval()
    root = Path(ws.store.get_meta("collection")["root"])
    paths = {img.id: root / img.path for img in ws.store.images(split="target")}
    refs = ws.store.reference_captions(split="target")

    def text(captions):
        with torch.no_grad():
            return torch.nn.functional.normalize(model.encode_text(tokenizer([PREFIX + c for c in captions])), dim=-1)

    def scores(image, caption: str, references: list[str]) -> tuple[float, float]:
        cap = text([caption])
        clip_s = 2.5 * max(float((image * cap).sum()), 0.0)
        text_s = max(float((text(references) @ cap.T).max()), 0.0)
        return clip_s, (2 * clip_s * text_s / (clip_s + text_s) if clip_s + text_s else 0.0)

    for name in (HUMAN, "knn-consensus"):
        row = rows[name]
        for n in range(0, len(row.ids), 7):
            image_id, caption, mine = row.ids[n], row.captions[n], refs[row.ids[n]]
            with torch.no_grad():
                image = torch.nn.functional.normalize(model.encode_image(preprocess(open_rgb(paths[image_id]))[None]),
                                                      dim=-1)
            if name == HUMAN:      # the mean over the photo's hold-outs: each caption, its others the references
                each = [scores(image, mine[h], mine[:h] + mine[h + 1:]) for h in range(len(mine))]
                clip_s, ref_s = np.mean([e[0] for e in each]), np.mean([e[1] for e in each])
            else:                  # a captioner: every human caption is a reference
                clip_s, ref_s = scores(image, caption, mine)
            assert row.scores["CLIPScore"][n] == pytest.approx(clip_s, abs=2e-4)
            assert row.scores["RefCLIPScore"][n] == pytest.approx(ref_s, abs=2e-4)
    assert result.get(HUMAN, "CLIPScore").value == pytest.approx(np.mean(rows[HUMAN].scores["CLIPScore"]))


# ------------------------------------------------------------------------------------------ processes

CHILD = """
import sys, time
from pipeline.caption_metrics.meteor import MeteorScorer
with MeteorScorer() as m:
    m.stats(["a dog runs"], [["a dog is running"]])
    print(m.process.proc.pid, flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1].split()[0] != "Z"
    except OSError:
        return True


@needs_java
def test_meteor_jar_is_stopped_on_an_error_and_exits_when_its_parent_is_killed():
    from pipeline.caption_metrics.meteor import MeteorScorer

    with pytest.raises(RuntimeError):
        with MeteorScorer() as m:
            proc = m.process.proc
            raise RuntimeError("interrupted")
    assert proc.poll() is not None

    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        java_pid = int(child.stdout.readline())
        assert _alive(java_pid)
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 20
        while _alive(java_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(java_pid), "the METEOR jar outlived its killed parent"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_new_protocol_or_tokenizer_rules_make_the_stored_numbers_stale(lite_copy, monkeypatch):
    """How references are chosen and how text is tokenised are part of every row hash: numbers stored under an
    older protocol (or older Python tokenizer rules) are shown as from an earlier configuration, and the next
    run computes them again; the same for the evaluation's protocol."""
    import pipeline.evaluation as evaluation
    import pipeline.caption_metrics.identity as stage_module
    from pipeline.caption_metrics.storage import latest_caption_metrics
    from pipeline.caption_metrics.tokenize import default_tokenizer
    from pipeline.evaluation import current_eval_hash, latest_evaluation

    ws = lite_copy
    stage = build_stage(ws, "caption-metrics")
    rows, config = stage.row_hashes(), stage.config_hash()
    assert latest_caption_metrics(ws) == (load_caption_metrics(ws), False)
    tokenizer = type(default_tokenizer())
    monkeypatch.setattr(tokenizer, "rules", tokenizer.rules + 1)
    changed = build_stage(ws, "caption-metrics")
    assert set(changed.row_hashes().values()).isdisjoint(rows.values()) and changed.config_hash() != config
    monkeypatch.undo()
    monkeypatch.setattr(stage_module, "VERSION", stage_module.VERSION + 1)
    changed = build_stage(ws, "caption-metrics")
    assert set(changed.row_hashes().values()).isdisjoint(rows.values())
    shown, stale = latest_caption_metrics(ws)
    assert stale and shown.config_hash == config and changed.settled_items() == set()
    eval_hash = current_eval_hash(ws)
    monkeypatch.setattr(evaluation, "VERSION", evaluation.VERSION + 1)
    assert current_eval_hash(ws) != eval_hash
    shown, stale = latest_evaluation(ws)
    assert stale and shown.eval_hash == eval_hash


# ------------------------------------------------------------------------------------------ the METEOR cache
def _jar_starts(monkeypatch) -> list[str]:
    """The METEOR jar processes started from now on (the real ones: this only notes each start)."""
    from pipeline.caption_metrics.java import JavaProcess

    started: list[str] = []
    real_enter = JavaProcess.__enter__

    def enter(self):
        started.append(self.name)
        return real_enter(self)

    monkeypatch.setattr(JavaProcess, "__enter__", enter)
    return started


def _score_again(ws, events: list) -> None:
    ws.store.caption_metrics.delete_all()
    run_stage(build_stage(ws, "caption-metrics"), events.append)


@needs_java
def test_meteor_statistics_come_from_the_homes_cache_the_second_time_with_the_same_numbers(lite_copy, tmp_path,
                                                                                         monkeypatch):
    """A second evaluation of the same pairs (here: the same workspace scored again; equally another workspace
    of the home over the same photos) starts no METEOR jar, says how many pairs the cache answered, and stores
    the very statistics the jar gave."""
    cache = tmp_path / "home" / "meteor.sqlite"
    monkeypatch.setenv("CAPSEARCH_EVALUATE__METEOR_CACHE", str(cache))
    ws = lite_copy
    ws.reload_config()
    before = load_caption_metrics(ws)
    rows = load_rows(ws, before)
    started = _jar_starts(monkeypatch)

    first: list = []
    _score_again(ws, first)
    assert "METEOR" in started and cache.exists()
    said = [e.message for e in first if e.kind == "message" and "METEOR for" in (e.message or "")]
    assert len(said) == 2 and not any("from the cache" in m for m in said), said
    _same_numbers(load_caption_metrics(ws), before)

    started.clear()
    again: list = []
    _score_again(ws, again)
    assert "METEOR" not in started, "every pair was in the cache, yet the jar started"
    said = [e.message for e in again if e.kind == "message" and "METEOR for" in (e.message or "")]
    assert said == [f"{HUMAN}: METEOR for 150 captions (150 from the cache)",
                    "knn-consensus: METEOR for 30 captions (30 from the cache)"], said
    after = load_caption_metrics(ws)
    _same_numbers(after, before)
    assert {r: x.meteor_stats for r, x in load_rows(ws, after).items()} == {r: x.meteor_stats for r, x in rows.items()}


@needs_java
def test_a_damaged_meteor_cache_is_set_aside_with_one_notice_and_the_numbers_do_not_change(lite_copy, tmp_path,
                                                                                          monkeypatch):
    cache = tmp_path / "meteor.sqlite"
    cache.write_bytes(b"this is not a SQLite database" * 100)
    monkeypatch.setenv("CAPSEARCH_EVALUATE__METEOR_CACHE", str(cache))
    ws = lite_copy
    ws.reload_config()
    before = load_caption_metrics(ws)
    events: list = []
    _score_again(ws, events)
    notices = [e.message for e in events if e.kind == "message" and "METEOR cache" in (e.message or "")]
    assert len(notices) == 1 and "could not be read" in notices[0] and "moved to meteor.sqlite.damaged-" in notices[0]
    assert [p.name for p in tmp_path.glob("meteor.sqlite.damaged-*")] and cache.exists()
    _same_numbers(load_caption_metrics(ws), before)
