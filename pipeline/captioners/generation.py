"""Pieces shared by the generative captioners (VLM, BLIP, ViT-GPT2).

``GenerativeCaptioner`` holds what the three have in common: lazy loading through
the process-wide model cache, device and dtype placement, image and prompt checks,
greedy or beam generation with the configured settings, cutting the generated ids
at the end token, and cleaning the decoded text to one sentence. A backend only
says how to load its model and processor, how to turn images (and prompts) into
model inputs, and how to decode ids.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from pipeline.errors import ConfigError
from pipeline.models.cache import get_or_load
from pipeline.models.loading import hub_token, load_pretrained, place_model, resolve_placement

if TYPE_CHECKING:
    import torch
    from PIL import Image


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings; deterministic (no sampling), so the same inputs give the same caption."""

    max_new_tokens: int = 30
    num_beams: int = 1
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    do_sample: bool = False

    def validate(self, captioner: str) -> "GenerationSettings":
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be at least 1 (got {self.max_new_tokens})")
        if self.num_beams < 1:
            problems.append(f"num_beams must be at least 1 (got {self.num_beams})")
        if self.no_repeat_ngram_size < 0:
            problems.append(f"no_repeat_ngram_size must be 0 (off) or more (got {self.no_repeat_ngram_size})")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be above 0 (got {self.repetition_penalty})")
        if problems:
            raise ConfigError(f"captioner {captioner}: " + "; ".join(problems))
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate``."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.do_sample,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        return kwargs


# BLIP and ViT-GPT2 loop ("a dog dog dog") without repetition guards, so theirs are on by default.
GUARDED_GENERATION = GenerationSettings(max_new_tokens=30, num_beams=3, no_repeat_ngram_size=3, repetition_penalty=1.2)


def _item(i: int, n: int) -> str:
    """How a message names item ``i`` of a batch of ``n`` (nothing for a single item)."""
    return f"image {i}: " if n > 1 else ""


def to_rgb(images: Sequence["Image.Image"]) -> list["Image.Image"]:
    """Each image as an RGB PIL image (transparent areas on white); a bad item raises ValueError naming it."""
    from PIL import Image

    out = []
    for i, image in enumerate(images):
        label = _item(i, len(images))
        if not isinstance(image, Image.Image):
            raise ValueError(f"{label}expected a PIL image, got {type(image).__name__}")
        try:
            if image.width < 1 or image.height < 1:
                raise ValueError(f"{label}empty image ({image.width}x{image.height})")
            if image.mode == "RGB":
                image.load()
                out.append(image)
            elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                out.append(Image.alpha_composite(background, rgba).convert("RGB"))
            else:
                out.append(image.convert("RGB"))
        except OSError as exc:
            raise ValueError(f"{label}the image cannot be read ({exc})") from exc
    return out


def check_prompts(prompts: Sequence[str | None] | None, n_images: int, *, captioner: str,
                  required: bool) -> list[str | None]:
    """The prompts as a list of the right length; with ``required``, each must be non-empty text."""
    prompts = list(prompts) if prompts is not None else [None] * n_images
    if len(prompts) != n_images:
        raise ValueError(f"{captioner}: got {len(prompts)} prompts for {n_images} images")
    if required:
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"{_item(i, n_images)}{captioner} needs a prompt, got {prompt!r}")
    return prompts


_ROLE_PREFIX = re.compile(r"^\s*(?:<\|?[a-z_]+\|?>)?\s*(?:assistant|model|bot|gpt)\s*[:\n]\s*", re.IGNORECASE)
_NEXT_TURN = re.compile(r"(?:\n|^|\s)(?:user|human|assistant)\s*:", re.IGNORECASE)
_SPECIAL_TOKEN = re.compile(r"<\|[^|<>]{1,40}\|>|<(?:end_of_utterance|eos|/s|s|pad|unk)>|\[(?:SEP|CLS|PAD|DEC|ENC)\]")
_FIRST_SENTENCE = re.compile(r"^.*?[.!?][\"'”’]?(?=\s|$)")
_QUOTES = "\"'“”‘’`"


def clean_caption(text: str, *, drop: Sequence[str] = ()) -> str:
    """One plain sentence from decoded model output.

    Removes chat scaffolding (``Assistant:`` and other role prefixes, a following ``User:`` turn,
    end-of-utterance and other special tokens, and any literal strings in ``drop``), surrounding
    quotes, control characters and extra whitespace, and keeps the first sentence.
    """
    for token in drop:
        if token:
            text = text.replace(token, " ")
    text = "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in text)
    text = _SPECIAL_TOKEN.sub(" ", text)
    previous = None
    while previous != text:
        previous = text
        text = _ROLE_PREFIX.sub("", text, count=1)
    turn = _NEXT_TURN.search(text)
    if turn and turn.start() > 0:
        text = text[: turn.start()]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = " ".join(lines[0].split()) if lines else ""
    first = _FIRST_SENTENCE.match(text)
    text = first.group(0) if first else text
    text = text.strip().strip(_QUOTES).strip()
    return text


def trim_generated(
    sequences: "torch.Tensor", prefix_len: int, stop_ids: set[int], pad_id: int | None
) -> list[list[int]]:
    """New token ids per row: drop the first ``prefix_len`` positions, cut at the first stop id,
    and drop padding, so a row generated in a batch compares equal to the same row generated alone."""
    rows = []
    for row in sequences[:, prefix_len:].tolist():
        out = []
        for token in row:
            if token in stop_ids:
                break
            if token != pad_id:
                out.append(token)
        rows.append(out)
    return rows


def stop_token_ids(generation_config: Any) -> set[int]:
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(t) for t in eos} if isinstance(eos, (list, tuple)) else {int(eos)}


class GenerativeCaptioner:
    """Base of the transformers captioners; implements ``pipeline.backends.Captioner``.

    Subclasses set ``kind`` and implement ``_load_model``, ``_load_processor``, ``prepare_inputs``,
    ``_prefix_length`` and ``decode``.
    """

    kind: ClassVar[str]
    needs_prompts: bool = False
    default_generation: ClassVar[GenerationSettings] = GenerationSettings()

    def __init__(self, name: str, model_id: str, *, device: str = "auto", dtype: str = "auto", **generation: Any):
        """``generation`` overrides fields of the class's ``default_generation`` (max_new_tokens, num_beams, ...)."""
        unknown = sorted(set(generation) - {f.name for f in fields(GenerationSettings)})
        if unknown:
            raise TypeError(f"captioner {name}: unknown generation settings {', '.join(unknown)}")
        self.name = name
        self.model_id = model_id
        self.device_spec = device
        self.dtype_spec = dtype
        self.generation = replace(self.default_generation, **generation).validate(name)
        self._placement: tuple[str, Any] | None = None

    # --- loading -------------------------------------------------------------------------------

    @property
    def placement(self) -> tuple[str, "torch.dtype"]:
        """The resolved (device, dtype)."""
        if self._placement is None:
            self._placement = resolve_placement(self.device_spec, self.dtype_spec)
        return self._placement

    @property
    def cache_key(self) -> str:
        """Model cache key: captioners with the same model, device and dtype share one loaded model."""
        device, dtype = self.placement
        return f"captioner:{self.kind}:{self.model_id}:{device}:{str(dtype).removeprefix('torch.')}"

    @property
    def model(self) -> Any:
        return get_or_load(self.cache_key, self._load_placed_model)

    @property
    def processor(self) -> Any:
        """The model's processor (or processors); loaded without the weights, shared per model id."""
        return get_or_load(f"captioner-processor:{self.kind}:{self.model_id}", self._load_processor_checked)

    def _what(self) -> str:
        return f"captioner {self.name}"

    def _load_placed_model(self) -> Any:
        device, dtype = self.placement
        model = load_pretrained(lambda ref: self._load_model(ref, dtype=dtype, token=hub_token()),
                                self.model_id, what=self._what())
        return place_model(model, device, dtype, what=self._what(), model_id=self.model_id)

    def _load_processor_checked(self) -> Any:
        return load_pretrained(lambda ref: self._load_processor(ref, token=hub_token()),
                               self.model_id, what=self._what())

    def _load_model(self, ref: str, *, dtype: Any, token: str | bool) -> Any:
        raise NotImplementedError

    def _load_processor(self, ref: str, *, token: str | bool) -> Any:
        raise NotImplementedError

    # --- generation ----------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return {"model_id": self.model_id, **self.generation.as_dict()}

    def prepare_inputs(self, images: Sequence["Image.Image"], prompts: Sequence[str | None]) -> Any:
        """Model inputs (a dict of tensors on the model's device) for RGB images and their prompts."""
        raise NotImplementedError

    def _prefix_length(self, inputs: Any) -> int:
        """How many leading positions of ``generate``'s output are not new tokens."""
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def generate_ids(self, images: Sequence["Image.Image"], prompts: Sequence[str | None] | None = None) -> list[list[int]]:
        """The new token ids for each image (without prompt, start token, end token or padding)."""
        import torch

        rgb = to_rgb(images)
        checked = check_prompts(prompts, len(rgb), captioner=self.name, required=self.needs_prompts)
        if not rgb:
            return []
        inputs = self.prepare_inputs(rgb, checked)
        model = self.model
        with torch.inference_mode():
            sequences = model.generate(**inputs, **self.generation.generate_kwargs())
        config = model.generation_config
        return trim_generated(sequences, self._prefix_length(inputs), stop_token_ids(config),
                              getattr(config, "pad_token_id", None))

    def caption(
        self,
        images: Sequence["Image.Image"],
        prompts: Sequence[str | None] | None = None,
        neighbour_captions: Sequence[Sequence[str]] | None = None,
    ) -> list[str]:
        """One cleaned, one-sentence caption per image, in order (``neighbour_captions`` is unused)."""
        return [self.decode(ids) for ids in self.generate_ids(images, prompts)]

    def _to_device(self, inputs: Any) -> Any:
        device, dtype = self.placement
        return inputs.to(device=device, dtype=dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model_id={self.model_id!r})"
