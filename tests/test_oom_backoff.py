"""Out of GPU memory during a stage run: the halved batch size is kept for every later batch of the run.

Batches of a stage run are separate Prefect tasks; these run the real flow (thread runner) with the
real tiny BLIP captioner and tiny open_clip embedder on a pretend small GPU (tests/fixtures/small_gpu.py:
they raise torch.OutOfMemoryError above a batch size, which a CPU cannot produce for real). The test
stages claim the GPU, as caption and embed-images do on a CUDA device, so their batches run one at a
time, in a known order.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import ClassVar

import pytest

from flows.api import run
from pipeline.datasets.demo import generate_demo_world
from pipeline.progress import ProgressEvent
from pipeline.stages.vision import CaptionStage, EmbedImagesStage
from tests.fixtures.small_gpu import SmallGpuCaptioner, SmallGpuOpenClip
from tests.fixtures.workspaces import make_workspace

pytestmark = pytest.mark.slow

N_IMAGES = 48
MODULE = __name__


class SmallGpuCaptionStage(CaptionStage):
    """caption:blip-base on a GPU with room for 2 photos a batch."""

    built: ClassVar[list[SmallGpuCaptioner]] = []

    def __init__(self, ws, variant: str = ""):
        super().__init__(ws, variant or "blip-base")

    @property
    def uses_gpu(self) -> bool:  # type: ignore[override]
        return True

    @cached_property
    def captioner(self) -> SmallGpuCaptioner:  # type: ignore[override]
        captioner = SmallGpuCaptioner(Path(self.captioner_config.model), room=2)
        self.built.append(captioner)
        return captioner


class SmallGpuEmbedImagesStage(EmbedImagesStage):
    """embed-images with the configured open_clip model on a GPU with room for 3 photos a forward pass."""

    built: ClassVar[list[SmallGpuOpenClip]] = []

    @property
    def uses_gpu(self) -> bool:  # type: ignore[override]
        return True

    @cached_property
    def embedder(self) -> SmallGpuOpenClip:  # type: ignore[override]
        ie = self.cfg.image_embedder
        embedder = SmallGpuOpenClip(ie.model, ie.pretrained, device="cpu", batch_size=ie.batch_size,
                                    num_workers=ie.num_workers, room=3)
        self.built.append(embedder)
        return embedder


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("oom-world")
    generate_demo_world(root, n_images=N_IMAGES, seed=7)
    return root


def data(world: Path, n_targets: int) -> dict:
    return {"source": "demo", "path": str(world), "demo_images": N_IMAGES, "demo_seed": 7, "n_targets": n_targets}


def test_captioning_keeps_the_halved_batch_size_for_the_rest_of_the_run(world, tmp_path, tiny_blip_dir,
                                                                         prefect_harness):
    ws = make_workspace(tmp_path / "ws", data=data(world, n_targets=12), orchestration={"batch_size": 4},
                        captioners={"enabled": ["blip-base"],
                                    "blip-base": {"kind": "blip", "model": str(tiny_blip_dir), "batch_size": 4,
                                                  "max_new_tokens": 6, "num_beams": 1}})
    events: list[ProgressEvent] = []
    summary = run(ws, ["ingest", f"{MODULE}:SmallGpuCaptionStage"], progress=events.append)

    outcome = summary.stage("caption:blip-base")
    assert summary.status == "completed" and outcome.batches == 3 and outcome.done == 12 and outcome.failed == 0
    captioner = SmallGpuCaptionStage.built[-1]
    assert captioner.batches == [4] + [2] * 6, "only the first batch of the run tries 4 photos"
    lowered = [e.message for e in events if "out of GPU memory" in e.message]
    assert lowered == ["blip-base: out of GPU memory, batch size lowered to 2 for the rest of this run"]
    rows = ws.store.captions("blip-base", outcome.config_hash)
    assert len(rows) == 12 and all(r.status == "ok" for r in rows.values())


def test_image_embedding_backs_off_and_keeps_the_halved_batch_size(world, tmp_path, tiny_open_clip,
                                                                    prefect_harness):
    ws = make_workspace(tmp_path / "ws", data=data(world, n_targets=12), orchestration={"batch_size": 16},
                        image_embedder={"name": "open_clip", "model": tiny_open_clip.model,
                                        "pretrained": tiny_open_clip.weights_file, "batch_size": 8, "num_workers": 2},
                        runtime={"device": "cpu"})
    events: list[ProgressEvent] = []
    summary = run(ws, ["ingest", f"{MODULE}:SmallGpuEmbedImagesStage"], progress=events.append)

    outcome = summary.stage("embed-images")
    photos = len({r.sha256 for r in ws.store.images()})  # identical photos are embedded once
    assert summary.status == "completed" and outcome.batches >= 2
    assert outcome.done == N_IMAGES and outcome.failed == 0
    embedder = SmallGpuEmbedImagesStage.built[-1]
    assert embedder.batches[:2] == [8, 4], "8 and 4 do not fit, 2 does"
    later = embedder.batches[2:]
    assert max(later) == 2 and sum(later) == photos, "every later forward pass takes at most 2, each photo once"
    lowered = [e.message for e in events if "out of GPU memory" in e.message]
    assert lowered == ["embed-images: out of GPU memory, batch size lowered to 2 for the rest of this run"]
    keys, vectors = ws.store.get_vectors(SmallGpuEmbedImagesStage(ws).space)
    assert len(keys) == photos and vectors.shape == (photos, tiny_open_clip.embed_dim)
