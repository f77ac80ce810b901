"""Build the ``Captioner`` of a configured captioner name: the one place that maps ``kind`` to a backend.

A captioner is configured in ``[captioners.<name>]`` with a ``kind``:

- ``vlm-neighbours``: a chat VLM given each photo's neighbour prompt,
- ``vlm-plain``: the same kind of VLM with one fixed instruction (``prompt``);
  either runs in this process (``backend = "transformers"``) or in a server (``backend = "endpoint"``:
  ``pipeline.captioners.endpoint``, the same prompts and photos sent to an OpenAI-compatible server),
- ``blip``: BLIP captioning (base or large, by ``model``),
- ``vit-gpt2``: a ViT encoder with a GPT-2 decoder,
- ``knn-consensus``: the neighbours' consensus caption, chosen with the text embedder.

Building is cheap: models and processors load on first use, once per process.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.backends import Captioner
    from pipeline.config import CaptionerConfig, Config
    from pipeline.store import Store

GENERATIVE_KINDS = ("vlm-neighbours", "vlm-plain", "blip", "vit-gpt2")


def _generation(cc: "CaptionerConfig") -> dict[str, Any]:
    return {"max_new_tokens": cc.max_new_tokens, "num_beams": cc.num_beams,
            "no_repeat_ngram_size": cc.no_repeat_ngram_size, "repetition_penalty": cc.repetition_penalty}


def _placement(cfg: "Config") -> dict[str, Any]:
    return {"device": cfg.runtime.device, "dtype": cfg.runtime.dtype}


def _vlm(name: str, cc: "CaptionerConfig", cfg: "Config", store: "Store | None" = None) -> "Captioner":
    from pipeline.captioners.vlm import DEFAULT_INSTRUCTION, DEFAULT_VLM, VLMCaptioner

    plain = cc.kind == "vlm-plain"
    instruction = (cc.prompt or DEFAULT_INSTRUCTION) if plain else DEFAULT_INSTRUCTION
    if cc.uses_endpoint:   # the same prompts and photos, sent to an OpenAI-compatible server
        from pipeline.captioners.endpoint import EndpointCaptioner

        return EndpointCaptioner(name, cc.model or DEFAULT_VLM, cc.endpoint, needs_prompts=not plain,
                                 instruction=instruction, max_new_tokens=cc.max_new_tokens)
    return VLMCaptioner(name, cc.model or DEFAULT_VLM, needs_prompts=not plain, instruction=instruction,
                        **_placement(cfg), **_generation(cc))


def _blip(name: str, cc: "CaptionerConfig", cfg: "Config", store: "Store | None" = None) -> "Captioner":
    from pipeline.captioners.blip import BlipCaptioner

    return BlipCaptioner(name, cc.model or None, **_placement(cfg), **_generation(cc))


def _vit_gpt2(name: str, cc: "CaptionerConfig", cfg: "Config", store: "Store | None" = None) -> "Captioner":
    from pipeline.captioners.vit_gpt2 import DEFAULT_VIT_GPT2, VitGpt2Captioner

    return VitGpt2Captioner(name, cc.model or DEFAULT_VIT_GPT2, **_placement(cfg), **_generation(cc))


def _knn(name: str, cc: "CaptionerConfig", cfg: "Config", store: "Store | None" = None) -> "Captioner":
    from pipeline.captioners.knn_consensus import KnnConsensusCaptioner
    from pipeline.text_models import build_text_embedder

    embedder = build_text_embedder(cfg)
    if store is not None:
        # Candidates are reference captions shared by many targets: embed each once per workspace.
        from pipeline.text_vectors import StoreCachedTextEmbedder

        embedder = StoreCachedTextEmbedder(embedder, store)
    return KnnConsensusCaptioner(embedder, name=name)


# Each builder takes (name, captioner config, config, store or None).
BUILDERS: dict[str, Callable[..., "Captioner"]] = {
    "vlm-neighbours": _vlm,
    "vlm-plain": _vlm,
    "blip": _blip,
    "vit-gpt2": _vit_gpt2,
    "knn-consensus": _knn,
}


def build_captioner(cfg: "Config", name: str, store: "Store | None" = None) -> "Captioner":
    """The captioner configured as ``[captioners.<name>]``; a clear error for an unknown name or kind.

    With a store, captioners that embed text (kNN consensus) keep those vectors in it.
    """
    cc = cfg.captioner(name)
    builder = BUILDERS.get(cc.kind)
    if builder is None:
        raise ConfigError(f"captioner '{name}': kind '{cc.kind}' is not one of {', '.join(BUILDERS)}")
    return builder(name, cc, cfg, store)


def is_generative(cfg: "Config", name: str) -> bool:
    return cfg.captioner(name).kind in GENERATIVE_KINDS


def runs_model_here(cfg: "Config", name: str) -> bool:
    """Whether the captioner runs a generative model in this process (not kNN consensus, not a server's model)."""
    cc = cfg.captioner(name)
    return cc.kind in GENERATIVE_KINDS and not cc.uses_endpoint


def default_model(kind: str) -> str:
    """The model a captioner of this kind loads when its ``model`` is empty ("" for knn-consensus)."""
    if kind in ("vlm-neighbours", "vlm-plain"):
        from pipeline.captioners.vlm import DEFAULT_VLM

        return DEFAULT_VLM
    if kind == "vit-gpt2":
        from pipeline.captioners.vit_gpt2 import DEFAULT_VIT_GPT2

        return DEFAULT_VIT_GPT2
    return ""


def captioner_models_to_pull(cfg: "Config", names: list[str] | None = None) -> list[str]:
    """Model ids (hub names or local paths) of the given captioners (default: the enabled ones), in order."""
    out: list[str] = []
    for name in names if names is not None else cfg.enabled_captioners():
        cc = cfg.captioner(name)
        if cc.kind not in GENERATIVE_KINDS or (cc.uses_endpoint and cc.endpoint.image_size):
            continue   # no model here (an endpoint captioner with a processor needs that model's processor files)
        model = cc.model or default_model(cc.kind)
        if not model and cc.kind == "blip":
            from pipeline.captioners.blip import BLIP_MODELS

            model = BLIP_MODELS.get(name, "")
        if model and model not in out:
            out.append(model)
    return out
