"""The transformers captioners (VLM, BLIP, ViT-GPT2) on tiny random models of the same classes.

Random models write nonsense, so these tests compare token ids and inputs, never caption wording.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pipeline.backends import Captioner
from pipeline.captioners.blip import BlipCaptioner
from pipeline.captioners.generation import clean_caption
from pipeline.captioners.vit_gpt2 import VitGpt2Captioner
from pipeline.captioners.vlm import VLMCaptioner
from pipeline.errors import ConfigError, ModelLoadError
from pipeline.models import cache

NEIGHBOURS = [
    "a dog runs across the green grass in the park",
    "two children play with a red ball on the beach",
]
NEIGHBOUR_PROMPT = "Captions of similar photos: " + "; ".join(NEIGHBOURS) + ". Write one caption for this photo."
PROMPTS = [
    NEIGHBOUR_PROMPT,
    "Describe this image in one sentence.",
    "Captions of similar photos: a woman holds an umbrella in the rain. Write one caption for this photo.",
    "a cat",
]


@pytest.fixture
def make_captioner(tiny_smolvlm_dir: Path, tiny_blip_dir: Path, tiny_vit_gpt2_dir: Path):
    def make(kind: str, **kwargs):
        if kind == "vlm":
            return VLMCaptioner("vlm-neighbours", str(tiny_smolvlm_dir), device="cpu", **{"max_new_tokens": 8, **kwargs})
        if kind == "blip":
            return BlipCaptioner("blip-base", str(tiny_blip_dir), device="cpu", **{"max_new_tokens": 8, **kwargs})
        return VitGpt2Captioner("vit-gpt2", str(tiny_vit_gpt2_dir), device="cpu", **{"max_new_tokens": 8, **kwargs})

    return make


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("kind", ["vlm", "blip", "vit-gpt2"])
def test_captions_real_images_and_a_batch_equals_single_images(make_captioner, tiny_caption_images, kind: str,
                                                               num_beams: int) -> None:
    captioner = make_captioner(kind, num_beams=num_beams)
    assert isinstance(captioner, Captioner)
    captions = captioner.caption(tiny_caption_images, PROMPTS)
    assert len(captions) == len(tiny_caption_images) and all(isinstance(c, str) for c in captions)

    batch = captioner.generate_ids(tiny_caption_images, PROMPTS)
    single = [captioner.generate_ids([image], [prompt])[0] for image, prompt in zip(tiny_caption_images, PROMPTS)]
    assert batch == single
    assert all(batch), "every image gets some tokens"
    assert len({tuple(ids) for ids in batch}) > 1, "different inputs lead to different captions"
    assert captions == [captioner.decode(ids) for ids in single]


def test_vlm_batch_is_left_padded_and_right_padding_would_change_the_output(make_captioner, tiny_caption_images):
    captioner = make_captioner("vlm")
    images, prompts = tiny_caption_images[:2], PROMPTS[:2]
    inputs = captioner.prepare_inputs(images, prompts)
    pad = captioner.tokenizer.pad_token_id
    shorter = int(inputs["attention_mask"].sum(dim=1).argmin())
    assert inputs["input_ids"][shorter, 0] == pad and inputs["input_ids"][shorter, -1] != pad
    left = captioner.generate_ids(images, prompts)

    captioner.tokenizer.padding_side = "right"  # what a plain processor call would do
    try:
        right = captioner.generate_ids(images, prompts)
    finally:
        captioner.tokenizer.padding_side = "left"
    assert right != left  # so the batch == single comparison above can catch wrong padding


def test_neighbour_captions_reach_the_model(make_captioner, tiny_caption_images) -> None:
    captioner = make_captioner("vlm")
    image = tiny_caption_images[0]
    inputs = captioner.prepare_inputs([image], [NEIGHBOUR_PROMPT])
    ids = inputs["input_ids"][0].tolist()
    text = captioner.tokenizer.decode(ids)
    for caption in NEIGHBOURS:
        assert caption in text
    prompt_ids = captioner.tokenizer(NEIGHBOUR_PROMPT, add_special_tokens=False)["input_ids"]
    assert any(ids[i:i + len(prompt_ids)] == prompt_ids for i in range(len(ids)))
    assert ids.count(captioner.processor.image_token_id) > 0, "the image is in the prompt too"

    other = "Captions of similar photos: a woman holds an umbrella in the rain. Write one caption for this photo."
    assert captioner.generate_ids([image], [NEIGHBOUR_PROMPT]) != captioner.generate_ids([image], [other])


def test_plain_vlm_sends_its_instruction_and_needs_no_prompt(tiny_smolvlm_dir, tiny_caption_images) -> None:
    plain = VLMCaptioner("vlm-plain", str(tiny_smolvlm_dir), needs_prompts=False,
                         instruction="Describe this image in one sentence.", device="cpu", max_new_tokens=6)
    assert not plain.needs_prompts
    text = plain.tokenizer.decode(plain.prepare_inputs(tiny_caption_images[:1], [None])["input_ids"][0])
    assert "Describe this image in one sentence." in text
    assert plain.caption(tiny_caption_images[:2], [None, None]) == plain.caption(tiny_caption_images[:2], ["x", "y"])
    assert plain.settings()["instruction"] == "Describe this image in one sentence."


def test_vlm_with_neighbours_rejects_a_missing_prompt_naming_the_item(make_captioner, tiny_caption_images) -> None:
    captioner = make_captioner("vlm")
    with pytest.raises(ValueError, match="image 1: vlm-neighbours needs a prompt"):
        captioner.caption(tiny_caption_images[:2], [NEIGHBOUR_PROMPT, None])


def test_chat_scaffolding_is_stripped_from_what_the_vlm_writes(make_captioner) -> None:
    captioner = make_captioner("vlm")
    written = captioner.tokenizer(' Assistant: "a dog runs in the park." a man rides.<end_of_utterance>\nUser: two',
                                  add_special_tokens=False)["input_ids"]
    assert captioner.decode(written) == "a dog runs in the park."


@pytest.mark.parametrize("raw, clean", [
    ("Assistant: A dog runs across the grass.<end_of_utterance>", "A dog runs across the grass."),
    ("assistant\nA cat sleeps on a chair.", "A cat sleeps on a chair."),
    ('  "Two children play on the beach."  ', "Two children play on the beach."),
    ("A man rides a bike. He wears a helmet.", "A man rides a bike."),
    ("A woman with an umbrella\nUser: and now?", "A woman with an umbrella"),
    ("<|im_start|>assistant: people walk at night<|im_end|>", "people walk at night"),
    ("a dog   on\tgrass [SEP]", "a dog on grass"),
    ("Assistant:", ""),
])
def test_clean_caption(raw: str, clean: str) -> None:
    assert clean_caption(raw) == clean


def test_settings_are_reported_and_used(make_captioner, tiny_caption_images) -> None:
    captioner = make_captioner("blip", max_new_tokens=3, num_beams=2, no_repeat_ngram_size=2, repetition_penalty=1.5)
    assert captioner.settings() == {
        "model_id": captioner.model_id, "max_new_tokens": 3, "num_beams": 2, "no_repeat_ngram_size": 2,
        "repetition_penalty": 1.5, "do_sample": False,
    }
    assert all(0 < len(ids) <= 3 for ids in captioner.generate_ids(tiny_caption_images))
    longer = make_captioner("blip", max_new_tokens=12, num_beams=1, no_repeat_ngram_size=0, repetition_penalty=1.0)
    assert max(len(ids) for ids in longer.generate_ids(tiny_caption_images)) > 3


def test_repetition_guard_stops_repeated_ngrams(make_captioner, tiny_caption_images) -> None:
    looping = make_captioner("blip", max_new_tokens=12, num_beams=1, no_repeat_ngram_size=0, repetition_penalty=1.0)
    guarded = make_captioner("blip", max_new_tokens=12, num_beams=1, no_repeat_ngram_size=2, repetition_penalty=1.0)

    def repeats_a_pair(ids: list[int]) -> bool:
        pairs = list(zip(ids, ids[1:]))
        return len(pairs) != len(set(pairs))

    assert any(repeats_a_pair(ids) for ids in looping.generate_ids(tiny_caption_images))
    assert not any(repeats_a_pair(ids) for ids in guarded.generate_ids(tiny_caption_images))


def test_default_model_ids_and_bad_settings() -> None:
    assert BlipCaptioner("blip-large").model_id == "Salesforce/blip-image-captioning-large"
    assert VitGpt2Captioner().model_id == "nlpconnect/vit-gpt2-image-captioning"
    assert VLMCaptioner("vlm-plain", needs_prompts=False).model_id == "HuggingFaceTB/SmolVLM-Instruct"
    with pytest.raises(ConfigError, match="blip-huge"):
        BlipCaptioner("blip-huge")
    with pytest.raises(ConfigError, match="max_new_tokens must be at least 1"):
        VitGpt2Captioner(max_new_tokens=0)


def test_a_model_is_loaded_once_and_shared(tiny_smolvlm_dir, tiny_caption_images) -> None:
    neighbours = VLMCaptioner("vlm-neighbours", str(tiny_smolvlm_dir), device="cpu", max_new_tokens=4)
    plain = VLMCaptioner("vlm-plain", str(tiny_smolvlm_dir), needs_prompts=False, device="cpu", max_new_tokens=4)
    assert neighbours.cache_key == plain.cache_key
    cache.evict(neighbours.cache_key)
    before = cache.load_counts.get(neighbours.cache_key, 0)
    neighbours.caption(tiny_caption_images[:2], PROMPTS[:2])
    neighbours.caption(tiny_caption_images[2:], PROMPTS[2:])
    plain.caption(tiny_caption_images[:1], [None])
    assert cache.load_counts[neighbours.cache_key] == before + 1
    assert neighbours.model is plain.model


def test_prompt_budget_fits_the_context(make_captioner, tiny_caption_images) -> None:
    captioner = make_captioner("vlm", max_new_tokens=16)
    budget = captioner.max_prompt_tokens
    assert 0 < budget < captioner.context_length
    words = " ".join(["dog runs"] * budget)
    prompt = captioner.tokenizer.decode(captioner.tokenizer(words, add_special_tokens=False)["input_ids"][:budget])
    assert captioner.count_prompt_tokens(prompt) == budget
    length = captioner.prepare_inputs(tiny_caption_images[:1], [prompt])["input_ids"].shape[1]
    assert length + 16 <= captioner.context_length
    too_long = prompt + " dog runs dog runs"
    longer = captioner.prepare_inputs(tiny_caption_images[:1], [too_long])["input_ids"].shape[1]
    assert longer + 16 > captioner.context_length


def test_images_of_any_mode_are_captioned_and_bad_items_named(make_captioner, tiny_caption_images) -> None:
    captioner = make_captioner("vit-gpt2", num_beams=1)
    rgb = tiny_caption_images[0]
    others = [rgb.convert("L"), rgb.convert("RGBA"), rgb.convert("P"), rgb.convert("CMYK")]
    assert len(captioner.caption(others, [None] * 4)) == 4
    with pytest.raises(ValueError, match="image 1: expected a PIL image"):
        captioner.caption([rgb, "photo.jpg"], [None, None])
    with pytest.raises(ValueError, match="image 0: empty image"):
        captioner.caption([Image.new("RGB", (0, 3)), rgb], [None, None])


@pytest.mark.parametrize("kind", ["vlm", "blip", "vit-gpt2"])
def test_a_missing_model_gives_one_line_on_first_use(tmp_path: Path, tiny_caption_images, kind: str) -> None:
    cls = {"vlm": VLMCaptioner, "blip": BlipCaptioner, "vit-gpt2": VitGpt2Captioner}[kind]
    captioner = cls("test-" + kind, str(tmp_path / "absent"), device="cpu")  # constructing loads nothing
    with pytest.raises(ModelLoadError) as err:
        captioner.caption(tiny_caption_images[:1], ["a prompt"])
    assert "\n" not in str(err.value) and "does not exist" in str(err.value) and "test-" + kind in str(err.value)


def test_a_vlm_name_that_is_not_a_chat_model_is_refused(tiny_blip_dir, tiny_caption_images) -> None:
    captioner = VLMCaptioner("vlm-plain", str(tiny_blip_dir), needs_prompts=False, device="cpu")
    loads = cache.load_counts.get(captioner.cache_key, 0)
    with pytest.raises(ModelLoadError, match="no chat template"):
        captioner.caption(tiny_caption_images[:1], [None])
    assert cache.load_counts.get(captioner.cache_key, 0) == loads, "the weights were not loaded for nothing"
