"""BLIP image captioning (``BlipForConditionalGeneration`` + ``BlipProcessor``), unconditional."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from pipeline.captioners.generation import GUARDED_GENERATION, GenerativeCaptioner, clean_caption
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

BLIP_MODELS = {
    "blip-base": "Salesforce/blip-image-captioning-base",
    "blip-large": "Salesforce/blip-image-captioning-large",
}


class BlipCaptioner(GenerativeCaptioner):
    """``model_id`` defaults to the checkpoint named by ``name`` (blip-base or blip-large).

    BLIP loops ("a dog dog dog") without the repetition guards, so they are on by default.
    """

    kind = "blip"

    default_generation = GUARDED_GENERATION

    def __init__(self, name: str = "blip-base", model_id: str | None = None, **kwargs: Any):
        if model_id is None:
            if name not in BLIP_MODELS:
                raise ConfigError(f"captioner {name}: no model_id given and '{name}' is not one of "
                                  f"{', '.join(BLIP_MODELS)}")
            model_id = BLIP_MODELS[name]
        super().__init__(name, model_id, **kwargs)

    def _load_model(self, ref: str, *, dtype: Any, token: str | bool) -> Any:
        from transformers import BlipForConditionalGeneration

        return BlipForConditionalGeneration.from_pretrained(ref, dtype=dtype, token=token)

    def _load_processor(self, ref: str, *, token: str | bool) -> Any:
        from transformers import BlipProcessor

        return BlipProcessor.from_pretrained(ref, token=token)

    def prepare_inputs(self, images: Sequence["Image.Image"], prompts: Sequence[str | None]) -> Any:
        return self._to_device(self.processor(images=list(images), return_tensors="pt"))

    def _prefix_length(self, inputs: Any) -> int:
        return 1  # the [DEC] start token

    def decode(self, ids: list[int]) -> str:
        return clean_caption(self.processor.tokenizer.decode(ids, skip_special_tokens=True))
