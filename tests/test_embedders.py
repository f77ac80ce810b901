"""Image embedders: the classical descriptor and open_clip (tiny model built offline)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.backends import ImageEmbedder
from pipeline.embedders.classical import ClassicalEmbedder, srgb_to_lab
from pipeline.embedders.loader import PREFETCH_BATCHES, iter_decoded_batches
from pipeline.errors import ConfigError, ModelLoadError


def stripes(colour: tuple[int, int, int], vertical: bool, size=(320, 240), period=24) -> Image.Image:
    img = Image.new("RGB", size, (235, 235, 225))
    draw = ImageDraw.Draw(img)
    w, h = size
    for x in range(0, w if vertical else h, period):
        box = [x, 0, x + period // 2, h] if vertical else [0, x, w, x + period // 2]
        draw.rectangle(box, fill=colour)
    return img


def recompressed(img: Image.Image, quality=70, size=(300, 225)) -> Image.Image:
    buf = io.BytesIO()
    img.resize(size).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def write_photos(folder: Path, images: list[Image.Image]) -> list[Path]:
    paths = []
    for i, img in enumerate(images):
        p = folder / f"photo_{i}.png"
        img.save(p)
        paths.append(p)
    return paths


def bad_files(folder: Path) -> dict[str, Path]:
    not_image = folder / "notes.jpg"
    not_image.write_bytes(b"this is not a jpeg")
    buf = io.BytesIO()
    stripes((200, 30, 30), True).save(buf, "JPEG")
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    return {"not_image": not_image, "truncated": truncated, "missing": folder / "gone.jpg"}


# ---------------------------------------------------------------- classical


def test_srgb_to_lab_matches_reference_values():
    rgb = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255], [128, 128, 128]], dtype=np.uint8)
    lab = srgb_to_lab(rgb)
    expected = [[100, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20], [32.30, 79.19, -107.86], [53.59, 0, 0]]
    np.testing.assert_allclose(lab, expected, atol=0.05)


def test_classical_vectors_are_unit_float32_and_deterministic():
    emb = ClassicalEmbedder()
    assert isinstance(emb, ImageEmbedder)
    imgs = [stripes((200, 30, 30), True), stripes((30, 60, 200), False), Image.new("L", (64, 48), 90)]
    a = emb.embed_images(imgs)
    b = ClassicalEmbedder().embed_images(imgs)
    assert a.shape == (3, emb.dim) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    assert emb.embed_images([]).shape == (0, emb.dim)


def test_classical_key_names_version_and_changes_with_parameters():
    base = ClassicalEmbedder()
    assert base.key.startswith("classical-v1-")
    assert ClassicalEmbedder().key == base.key
    other = ClassicalEmbedder(orientation_bins=8)
    assert other.key != base.key and other.dim != base.dim
    assert other.embed_images([stripes((9, 9, 9), True)]).shape == (1, other.dim)


def test_classical_tells_colour_and_structure_apart_but_not_recompression():
    emb = ClassicalEmbedder()
    red_v = stripes((200, 30, 30), vertical=True)
    vecs = emb.embed_images([red_v, recompressed(red_v), stripes((30, 60, 200), True), stripes((200, 30, 30), False)])
    sim = vecs @ vecs[0]
    same, other_colour, other_orientation = sim[1], sim[2], sim[3]
    assert same > 0.9
    assert other_colour < same - 0.2
    assert other_orientation < same - 0.1


def test_classical_has_no_text_tower():
    emb = ClassicalEmbedder()
    assert emb.has_text_tower is False
    with pytest.raises(ConfigError, match="no text tower"):
        emb.embed_texts(["a dog"])


def test_classical_rejects_bad_parameters():
    with pytest.raises(ConfigError, match="gradient_levels"):
        ClassicalEmbedder(gradient_levels=(1, 3, 4))
    with pytest.raises(ConfigError, match="no parameter colour_bins"):
        ClassicalEmbedder(colour_bins=8)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_classical_embed_paths_reports_bad_files_and_matches_embed_images(tmp_path, num_workers):
    emb = ClassicalEmbedder()
    good = [stripes((200, 30, 30), True), stripes((30, 160, 60), False), stripes((90, 90, 20), True, period=10)]
    good_paths = write_photos(tmp_path, good)
    bad = bad_files(tmp_path)
    paths = [good_paths[0], bad["not_image"], good_paths[1], bad["truncated"], bad["missing"], good_paths[2]]
    errors: list[tuple[str, str]] = []
    progress: list[tuple[int, int]] = []
    vecs, ok = emb.embed_paths(
        paths, batch_size=4, num_workers=num_workers,
        on_error=lambda p, r: errors.append((p, r)), progress=lambda n, f: progress.append((n, f)),
    )
    assert ok.tolist() == [True, False, True, False, False, True]
    assert sorted(p for p, _ in errors) == sorted(str(bad[k]) for k in bad)
    assert all(reason for _, reason in errors)
    np.testing.assert_array_equal(vecs[~ok], 0.0)
    np.testing.assert_allclose(vecs[ok], emb.embed_images(good), atol=1e-6)
    assert sum(n for n, _ in progress) == len(paths) and sum(f for _, f in progress) == 3


def test_decoding_runs_in_threads_of_this_process_even_from_a_task_thread(tmp_path):
    """Flows embed in a pool thread of a process full of threads: decoding must never fork it."""
    paths = write_photos(tmp_path, [stripes((40 * i, 90, 200 - 30 * i), i % 2 == 0) for i in range(6)])
    emb = ClassicalEmbedder()
    seen: set[tuple[int, str]] = set()

    class Watched(ClassicalEmbedder):
        def path_transform(self):
            describe = super().path_transform()

            def transform(image):
                seen.add((os.getpid(), threading.current_thread().name.rsplit("_", 1)[0]))
                return describe(image)
            return transform

    forks: list[int] = []
    os.register_at_fork(before=lambda: forks.append(1))
    with ThreadPoolExecutor(1, thread_name_prefix="task") as pool:  # as a flow's task runner does
        vecs, ok = pool.submit(Watched().embed_paths, paths, batch_size=2, num_workers=2).result()
    assert ok.all()
    np.testing.assert_allclose(vecs, emb.embed_paths(paths, num_workers=0)[0], atol=1e-6)
    assert seen == {(os.getpid(), "capsearch-decode")}
    assert not forks, "no process was forked"
    assert not [t for t in threading.enumerate() if t.name.startswith("capsearch-decode")]


def test_closing_the_decoder_early_stops_its_threads(tmp_path):
    paths = write_photos(tmp_path, [stripes((30 * i, 60, 90), True) for i in range(8)]) * 8
    decoded: list[int] = []
    emb = ClassicalEmbedder()

    def transform(image):
        decoded.append(1)
        return emb.path_transform()(image)

    batches = iter_decoded_batches(paths, transform, batch_size=4, num_workers=2)
    first = next(batches)
    assert first.indices == [0, 1, 2, 3]
    batches.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("capsearch-decode")]
    assert len(decoded) <= 4 * (1 + PREFETCH_BATCHES), "decoding stays at most two batches ahead"


def test_embedder_modules_import_without_torch():
    code = (
        "import sys, pipeline.embedders.classical, pipeline.embedders.open_clip_embedder, "
        "pipeline.embedders.loader, pipeline.neighbours, pipeline.prompts, pipeline.captioners.knn_consensus; "
        "heavy = [m for m in ('torch', 'open_clip', 'transformers', 'faiss') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# ---------------------------------------------------------------- open_clip


@pytest.fixture(scope="module")
def clip(tiny_open_clip):
    from pipeline.embedders.open_clip_embedder import OpenClipEmbedder

    return OpenClipEmbedder(tiny_open_clip.model, tiny_open_clip.weights_file, device="cpu", batch_size=2)


def test_open_clip_embeds_with_the_weights_in_the_file(clip, tiny_open_clip):
    import open_clip
    import torch
    from safetensors.torch import load_file

    imgs = [stripes((200, 30, 30), True), stripes((30, 60, 200), False), stripes((20, 150, 20), True, period=8)]
    vecs = clip.embed_images(imgs)
    assert isinstance(clip, ImageEmbedder) and clip.dim == tiny_open_clip.embed_dim
    assert vecs.shape == (3, clip.dim) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)

    torch.manual_seed(123)
    reference, _, preprocess = open_clip.create_model_and_transforms(tiny_open_clip.model)
    batch = torch.stack([preprocess(im) for im in imgs])
    with torch.no_grad():
        random_init = torch.nn.functional.normalize(reference.eval().encode_image(batch), dim=-1).numpy()
        reference.load_state_dict(load_file(tiny_open_clip.weights_file))
        saved = torch.nn.functional.normalize(reference.encode_image(batch), dim=-1).numpy()
    np.testing.assert_allclose(vecs, saved, atol=1e-5)
    assert np.abs(vecs - random_init).max() > 1e-2


def test_open_clip_local_dir_loads_the_same_model(clip, tiny_open_clip):
    from pipeline.embedders.open_clip_embedder import OpenClipEmbedder

    local = OpenClipEmbedder(pretrained="local-dir:" + tiny_open_clip.local_dir, device="cpu")
    imgs = [stripes((200, 30, 30), True), stripes((30, 60, 200), False)]
    np.testing.assert_allclose(local.embed_images(imgs), clip.embed_images(imgs), atol=1e-6)
    assert local.dim == clip.dim
    assert local.key.startswith("openclip-v1-") and local.key != clip.key


def test_open_clip_key_names_model_and_weights_not_device(clip, tiny_open_clip):
    from pipeline.embedders.open_clip_embedder import OpenClipEmbedder

    assert tiny_open_clip.model in clip.key and "file-" in clip.key
    assert "cpu" not in clip.key
    assert OpenClipEmbedder(tiny_open_clip.model, tiny_open_clip.weights_file, device="auto").key == clip.key
    tagged = OpenClipEmbedder("ViT-B-32", "laion2b_s34b_b79k")
    assert tagged.key == "openclip-v1-ViT-B-32-laion2b_s34b_b79k" and tagged.dim == 512


def test_open_clip_model_is_loaded_once_per_process(clip, tiny_open_clip):
    from pipeline.embedders.open_clip_embedder import OpenClipEmbedder
    from pipeline.models import cache

    clip.embed_images([stripes((1, 2, 3), True)])
    again = OpenClipEmbedder(tiny_open_clip.model, tiny_open_clip.weights_file, device="cpu")
    again.embed_images([stripes((1, 2, 3), True)])
    again.embed_texts(["a red wall"])
    assert cache.load_counts[clip._cache_key()] == 1


def test_open_clip_text_tower(clip):
    assert clip.has_text_tower
    vecs = clip.embed_texts(["a dog runs on the beach", "a red car", "a dog runs on the beach"])
    assert vecs.shape == (3, clip.dim) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vecs[0], vecs[2], atol=1e-6)
    assert np.abs(vecs[0] - vecs[1]).max() > 1e-3


def test_open_clip_embed_paths_in_decoding_threads(clip, tmp_path):
    good = [stripes((200, 30, 30), True), stripes((30, 160, 60), False), stripes((90, 90, 20), True, period=10)]
    good_paths = write_photos(tmp_path, good)
    bad = bad_files(tmp_path)
    paths = [bad["truncated"], good_paths[0], good_paths[1], bad["not_image"], good_paths[2]]
    errors: list[tuple[str, str]] = []
    vecs, ok = clip.embed_paths(paths, batch_size=2, num_workers=2, on_error=lambda p, r: errors.append((p, r)))
    assert ok.tolist() == [False, True, True, False, True]
    assert {p for p, _ in errors} == {str(bad["truncated"]), str(bad["not_image"])}
    np.testing.assert_allclose(vecs[ok], clip.embed_images(good), atol=1e-5)


@pytest.mark.parametrize(
    "model, pretrained, message",
    [
        ("no-such-clip", "laion2b_s34b_b79k", "no model named 'no-such-clip'"),
        ("capsearch-tiny-clip", "/nowhere/weights.safetensors", "does not exist"),
        ("capsearch-tiny-clip", "not_a_tag", "not_a_tag"),
    ],
)
def test_open_clip_load_errors_are_one_clear_line(tiny_open_clip, model, pretrained, message):
    from pipeline.embedders.open_clip_embedder import OpenClipEmbedder

    emb = OpenClipEmbedder(model, pretrained, device="cpu")
    with pytest.raises(ModelLoadError, match=message) as info:
        emb.key, emb.embed_images([stripes((1, 2, 3), True)])
    assert "\n" not in str(info.value)


def test_open_clip_local_dir_without_config_is_a_clear_error(tmp_path):
    from pipeline.embedders.open_clip_embedder import OpenClipEmbedder

    with pytest.raises(ModelLoadError, match="open_clip_config.json"):
        OpenClipEmbedder(pretrained=f"local-dir:{tmp_path}", device="cpu").key
