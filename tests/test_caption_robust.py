"""caption_robust: batches, retries, out-of-memory back-off, per-item failures, nothing good lost.

Runs the real tiny BLIP captioner. Where a failure must happen on purpose, a small subclass of it
fails on chosen images (the captioning itself stays real); for out-of-memory, ``SmallGpuCaptioner``
(tests/fixtures/small_gpu.py) acts as a GPU that has room for only so many images per batch.
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image

from pipeline.captioners.blip import BlipCaptioner
from pipeline.captioners.robust import EMPTY, OUT_OF_MEMORY, caption_robust
from pipeline.errors import ModelLoadError
from pipeline.models.batch_limit import BatchLimit
from pipeline.progress import ProgressEvent, StageProgress
from tests.fixtures.small_gpu import RecordingCaptioner, SmallGpuCaptioner
from tests.fixtures.tiny_transformers import make_caption_images


class BatchShyCaptioner(RecordingCaptioner):
    """Fails whenever ``shy`` is captioned together with other images, works for it alone."""

    def __init__(self, model_dir: Path, shy: Image.Image):
        super().__init__(model_dir)
        self.shy = shy

    def caption(self, images, prompts, neighbour_captions=None):
        if len(images) > 1 and any(i is self.shy for i in images):
            self.batches.append(len(images))
            raise RuntimeError("shape mismatch in batch")
        return super().caption(images, prompts, neighbour_captions)


class MuteCaptioner(RecordingCaptioner):
    """Writes nothing for the images in ``mute``."""

    def __init__(self, model_dir: Path, mute: tuple[Image.Image, ...]):
        super().__init__(model_dir)
        self.mute = mute

    def caption(self, images, prompts, neighbour_captions=None):
        texts = super().caption(images, prompts, neighbour_captions)
        return ["" if any(i is m for m in self.mute) else t for i, t in zip(images, texts)]


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return make_caption_images(7)


@pytest.fixture(scope="module")
def expected(tiny_blip_dir: Path, images) -> list[str]:
    """What the captioner writes for each image alone."""
    plain = RecordingCaptioner(tiny_blip_dir)
    return [plain.caption([image], [None])[0] for image in images]


def _truncated_jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return Image.open(io.BytesIO(buffer.getvalue()[: len(buffer.getvalue()) // 2]))


def test_all_good_items_come_back_in_order_with_timing(tiny_blip_dir, images, expected) -> None:
    captioner = RecordingCaptioner(tiny_blip_dir)
    started = time.monotonic()
    outcomes = caption_robust(captioner, images, [None] * len(images), batch_size=3)
    elapsed = time.monotonic() - started
    assert [o.text for o in outcomes] == expected
    assert all(o.status == "ok" and o.error is None and o.attempts == 1 for o in outcomes)
    assert captioner.batches == [3, 3, 1]
    assert outcomes[0].seconds == outcomes[1].seconds == outcomes[2].seconds > 0  # batch time / batch size
    assert sum(o.seconds for o in outcomes) <= elapsed


def test_a_corrupt_photo_fails_alone_and_the_rest_of_its_batch_is_kept(tiny_blip_dir, images, expected) -> None:
    captioner = RecordingCaptioner(tiny_blip_dir)
    broken = _truncated_jpeg(images[1])
    batch = [images[0], broken, images[2], images[3]]
    events: list[ProgressEvent] = []
    progress = StageProgress("caption:blip-base", len(batch), events.append)
    outcomes = caption_robust(captioner, batch, [None] * 4, batch_size=4, progress=progress,
                              item_names=["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    assert [o.status for o in outcomes] == ["ok", "failed", "ok", "ok"]
    assert [outcomes[i].text for i in (0, 2, 3)] == [expected[0], expected[2], expected[3]]
    assert "cannot be read" in outcomes[1].error and "truncated" in outcomes[1].error
    assert outcomes[1].attempts == 2
    assert captioner.batches == [4, 1, 1, 1, 1]
    assert events[-1].done == 4 and events[-1].failures == 1
    assert any("b.jpg failed" in e.message and e.level == "warning" for e in events)


def test_an_item_that_only_fails_in_a_batch_succeeds_on_its_retry(tiny_blip_dir, images, expected) -> None:
    captioner = BatchShyCaptioner(tiny_blip_dir, shy=images[2])
    outcomes = caption_robust(captioner, images[:4], [None] * 4, batch_size=4)
    assert [o.text for o in outcomes] == expected[:4]
    assert all(o.status == "ok" and o.attempts == 2 for o in outcomes)


def test_empty_captions_are_retried_once_then_recorded(tiny_blip_dir, images, expected) -> None:
    captioner = MuteCaptioner(tiny_blip_dir, mute=(images[3],))
    outcomes = caption_robust(captioner, images[:5], [None] * 5, batch_size=5)
    assert outcomes[3].status == "empty" and outcomes[3].error == EMPTY and outcomes[3].attempts == 2
    assert [o.text for i, o in enumerate(outcomes) if i != 3] == expected[:3] + [expected[4]]
    assert captioner.batches == [5, 1], "only the empty item is captioned again"


def test_out_of_memory_halves_the_batch_and_goes_on(tiny_blip_dir, images, expected) -> None:
    captioner = SmallGpuCaptioner(tiny_blip_dir, room=2)
    events: list[ProgressEvent] = []
    outcomes = caption_robust(captioner, images, [None] * 7, batch_size=8,
                              progress=StageProgress("caption:blip-base", 7, events.append))
    assert [o.text for o in outcomes] == expected
    assert all(o.status == "ok" and o.attempts == 1 for o in outcomes)
    assert captioner.batches == [7, 4, 2, 2, 2, 1]  # 8 -> 4 -> 2, then it stays at 2
    assert any("batch size lowered to 2" in e.message for e in events)


def test_a_shared_batch_limit_keeps_the_halved_size_for_later_calls(tiny_blip_dir, images, expected) -> None:
    """A stage passes one BatchLimit to every batch of its run: the second batch starts at the lowered size."""
    captioner = SmallGpuCaptioner(tiny_blip_dir, room=2)
    limit = BatchLimit(4)
    first = caption_robust(captioner, images[:4], [None] * 4, batch_size=limit)
    second = caption_robust(captioner, images[4:], [None] * 3, batch_size=limit)
    assert [o.text for o in first + second] == expected
    assert captioner.batches == [4, 2, 2, 2, 1], "only the first call tries 4"
    assert limit.size == 2 and limit.configured == 4


def test_an_image_too_big_even_alone_is_recorded_as_out_of_memory(tiny_blip_dir, images, expected) -> None:
    captioner = SmallGpuCaptioner(tiny_blip_dir, room=4, huge=(images[1],))
    outcomes = caption_robust(captioner, images[:4], [None] * 4, batch_size=4)
    assert outcomes[1].status == "failed" and outcomes[1].error == OUT_OF_MEMORY
    assert [outcomes[i].text for i in (0, 2, 3)] == [expected[0], expected[2], expected[3]]


def test_a_model_that_cannot_load_stops_the_run_with_its_reason(tmp_path: Path, images) -> None:
    captioner = BlipCaptioner("blip-base", str(tmp_path / "absent"), device="cpu")
    with pytest.raises(ModelLoadError, match="does not exist"):
        caption_robust(captioner, images[:3], [None] * 3, batch_size=2)


def test_mismatched_inputs_are_refused(tiny_blip_dir, images) -> None:
    with pytest.raises(ValueError, match="3 images but 2 prompts"):
        caption_robust(RecordingCaptioner(tiny_blip_dir), images[:3], [None] * 2, batch_size=2)
