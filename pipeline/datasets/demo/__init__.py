"""The demo world: a deterministic, generated photo collection in the Flickr8k layout.

Every photo is a rendered scene (one to three objects of one kind, one colour, on one
of eight backgrounds, sometimes with a second object) and gets five differently
worded, truthful captions in the style of Flickr8k. The ground truth of every scene
is written to ``demo_scenes.jsonl`` so that tests can check what neighbours share.

Image ``i`` depends only on ``(seed, i)``; captions also avoid every caption of the
images before it, so that no caption text occurs twice in the world.

Modules: ``vocabulary`` (kinds, colours, backgrounds, word tables), ``layout`` and
``scenes`` (sampling each image's scene), ``pen``, ``figures``, ``backdrops`` and
``drawing`` (rendering it with Pillow), ``phrases`` and ``captions`` (its five
captions), ``world`` (writing the world to disk).
"""
from __future__ import annotations

from pipeline.datasets.demo.captions import CAPTIONS_PER_IMAGE, write_captions
from pipeline.datasets.demo.drawing import render_scene
from pipeline.datasets.demo.scenes import Scene, SceneObject, sample_scene
from pipeline.datasets.demo.vocabulary import BACKGROUNDS, COLOUR_WORDS, COLOURS, KIND_WORDS, KINDS, RGB, KindSpec
from pipeline.datasets.demo.world import (
    DEFAULT_DEMO_IMAGES,
    GENERATOR_VERSION,
    IMAGE_DIR,
    JPEG_QUALITY,
    MANIFEST_FILE,
    SCENES_FILE,
    SPLIT_FILES,
    SPLIT_FRACTIONS,
    TOKEN_FILE,
    DemoSummary,
    demo_world_matches,
    generate_demo_world,
)

__all__ = [
    "BACKGROUNDS", "CAPTIONS_PER_IMAGE", "COLOURS", "COLOUR_WORDS", "DEFAULT_DEMO_IMAGES", "GENERATOR_VERSION",
    "IMAGE_DIR", "JPEG_QUALITY", "KINDS", "KIND_WORDS", "MANIFEST_FILE", "RGB", "SCENES_FILE", "SPLIT_FILES",
    "SPLIT_FRACTIONS", "TOKEN_FILE", "DemoSummary", "KindSpec", "Scene", "SceneObject", "demo_world_matches",
    "generate_demo_world", "render_scene", "sample_scene", "write_captions",
]
