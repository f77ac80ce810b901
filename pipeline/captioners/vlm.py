"""A chat vision-language model as captioner (SmolVLM and other ``AutoModelForImageTextToText`` models).

The product uses it twice: ``vlm-neighbours`` (each image's prompt lists its neighbours'
captions; ``needs_prompts=True``) and ``vlm-plain`` (one fixed instruction for every image).
Prompts go through the model's own chat template; batches are left-padded so that a
batch gives the same greedy tokens as each image alone.

Repetition guards are off by default here: ``repetition_penalty`` and ``no_repeat_ngram_size``
also count the prompt's tokens, so they would push the model away from the very words of
the neighbours' captions it is meant to reuse.
"""
from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, Sequence

from pipeline.captioners.generation import GenerationSettings, GenerativeCaptioner, clean_caption
from pipeline.errors import ModelLoadError
from pipeline.models.loading import hub_token, load_pretrained

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_VLM = "HuggingFaceTB/SmolVLM-Instruct"
DEFAULT_INSTRUCTION = "Describe this image in one sentence."


class VLMCaptioner(GenerativeCaptioner):
    kind = "vlm"
    default_generation = GenerationSettings(max_new_tokens=64)

    def __init__(self, name: str, model_id: str = DEFAULT_VLM, *, needs_prompts: bool = True,
                 instruction: str = DEFAULT_INSTRUCTION, **kwargs: Any):
        """``needs_prompts=False`` makes a plain captioner that sends ``instruction`` with every image."""
        super().__init__(name, model_id, **kwargs)
        self.needs_prompts = needs_prompts
        self.instruction = instruction

    def settings(self) -> dict[str, Any]:
        settings = super().settings()
        if not self.needs_prompts:
            settings["instruction"] = self.instruction
        return settings

    def _load_model(self, ref: str, *, dtype: Any, token: str | bool) -> Any:
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText.from_pretrained(ref, dtype=dtype, token=token)

    def _load_processor(self, ref: str, *, token: str | bool) -> Any:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(ref, token=token)
        if getattr(processor, "chat_template", None) is None:
            raise ModelLoadError(f"{self._what()} '{self.model_id}' has no chat template: it is not a chat VLM")
        tokenizer = processor.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return processor

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    def user_text(self, prompt: str | None) -> str:
        """The text sent with the image: the prompt, or the fixed instruction for a plain captioner."""
        return prompt if self.needs_prompts else self.instruction

    def chat_text(self, prompt: str | None) -> str:
        """The full templated prompt for one image, ending where the assistant's answer starts."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.user_text(prompt)}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def prepare_inputs(self, images: Sequence["Image.Image"], prompts: Sequence[str | None]) -> Any:
        texts = [self.chat_text(p) for p in prompts]
        inputs = self.processor(text=texts, images=list(images), return_tensors="pt", padding=True)
        return self._to_device(inputs)

    def _prefix_length(self, inputs: Any) -> int:
        return int(inputs["input_ids"].shape[1])

    def decode(self, ids: list[int]) -> str:
        tokenizer = self.tokenizer
        return clean_caption(tokenizer.decode(ids, skip_special_tokens=True), drop=tokenizer.all_special_tokens)

    # --- prompt budget, for the prompt builder -------------------------------------------------

    def count_prompt_tokens(self, text: str) -> int:
        """Tokens ``text`` takes as the user text of a prompt (the chat template and image not counted)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @cached_property
    def context_length(self) -> int:
        """The model's context window in tokens (read from its config, without loading the weights)."""
        from transformers import AutoConfig

        config = load_pretrained(lambda ref: AutoConfig.from_pretrained(ref, token=hub_token()),
                                 self.model_id, what=self._what())
        text_config = getattr(config, "text_config", None) or config
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(text_config, attr, None)
            if value:
                return int(value)
        raise ModelLoadError(f"{self._what()} '{self.model_id}': its config does not state a context length")

    @cached_property
    def template_tokens(self) -> int:
        """Tokens of the chat template around an empty user text, with the image at its largest size."""
        from PIL import Image

        side = _largest_image_side(self.processor.image_processor)
        probe = Image.new("RGB", (side, side), (127, 127, 127))
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ""}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return int(self.processor(text=[text], images=[[probe]], return_tensors="pt")["input_ids"].shape[1])

    @property
    def max_prompt_tokens(self) -> int:
        """The most user-text tokens (``count_prompt_tokens``) that fit the context with the image and the answer."""
        return self.context_length - self.template_tokens - self.generation.max_new_tokens


def _largest_image_side(image_processor: Any) -> int:
    for attr in ("size", "max_image_size"):
        size = getattr(image_processor, attr, None) or {}
        if not isinstance(size, dict):
            size = dict(size) if hasattr(size, "keys") else {}
        for key in ("longest_edge", "height", "shortest_edge"):
            if size.get(key):
                return int(size[key])
    return 512
