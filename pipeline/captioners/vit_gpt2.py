"""ViT-GPT2 image captioning (``VisionEncoderDecoderModel`` + ``AutoImageProcessor`` + ``AutoTokenizer``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from pipeline.captioners.generation import GUARDED_GENERATION, GenerativeCaptioner, clean_caption

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_VIT_GPT2 = "nlpconnect/vit-gpt2-image-captioning"


class VitGpt2Captioner(GenerativeCaptioner):
    """A vision encoder with a GPT-2 decoder; repetition guards on by default (it loops without them)."""

    kind = "vit-gpt2"

    default_generation = GUARDED_GENERATION

    def __init__(self, name: str = "vit-gpt2", model_id: str = DEFAULT_VIT_GPT2, **kwargs: Any):
        super().__init__(name, model_id, **kwargs)

    def _load_model(self, ref: str, *, dtype: Any, token: str | bool) -> Any:
        from transformers import VisionEncoderDecoderModel

        return VisionEncoderDecoderModel.from_pretrained(ref, dtype=dtype, token=token)

    def _load_processor(self, ref: str, *, token: str | bool) -> tuple[Any, Any]:
        """(image processor, tokenizer): the model has no combined processor."""
        from transformers import AutoImageProcessor, AutoTokenizer

        return (AutoImageProcessor.from_pretrained(ref, token=token),
                AutoTokenizer.from_pretrained(ref, token=token))

    def prepare_inputs(self, images: Sequence["Image.Image"], prompts: Sequence[str | None]) -> Any:
        image_processor, _ = self.processor
        return self._to_device(image_processor(images=list(images), return_tensors="pt"))

    def _prefix_length(self, inputs: Any) -> int:
        return 1  # the decoder start token

    def decode(self, ids: list[int]) -> str:
        _, tokenizer = self.processor
        return clean_caption(tokenizer.decode(ids, skip_special_tokens=True))
