"""Each stage's configuration and its hash, computed from the settings without building a stage.

The stages whose outputs depend on the configuration alone (ingest, embed-images, neighbours, prompts,
caption, embed-captions, queries) have their ``config()`` computed here, from ``Config``: the stages'
``config()`` return what this module computes, and every reader of their rows (search, evaluation,
caption metrics, browse, status, the CLI) asks this module for the hash instead of importing
``pipeline.stages``. The hash is ``pipeline.keys.stage_key`` of the configuration, the recipe
``Stage.config_hash`` uses, so the two cannot differ.

The three stages whose configuration covers stored content (``evaluate``: a fingerprint of the captions
and queries it reads; ``caption-metrics``: its rows' captions and image vectors; ``report``: those two
hashes) are keyed next to the code that reads that content: ``pipeline.evaluation.evaluation_hash`` and
``pipeline.caption_metrics.identity.caption_metrics_hash``.

Building the embedders named here is cheap: no weights load until something is embedded.
"""
from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from pipeline.captioners.registry import default_model
from pipeline.embedders.registry import build_image_embedder
from pipeline.errors import CapsearchError, ConfigError
from pipeline.keys import HUMAN, stage_key
from pipeline.prompts import TOKENS_PER_WORD, load_template
from pipeline.queries.reference import check_kinds
from pipeline.text_models import build_text_embedder, query_generator_settings
from pipeline.workspace import resolve_home_path

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.workspace import Workspace

NEIGHBOURS_VERSION = 2   # 2: duplicates (same sha256, or similarity >= the threshold) marked and passed over
QUERIES_VERSION = 2


def token_captioner(cfg: "Config") -> str | None:
    """The first enabled ``vlm-neighbours`` captioner with its model's tokenizer here: it counts prompt tokens (an
    endpoint captioner with ``endpoint.image_size`` set has none: its prompts are counted in words)."""
    for name in cfg.enabled_captioners():
        cc = cfg.captioner(name)
        if cc.kind == "vlm-neighbours" and not (cc.uses_endpoint and cc.endpoint.image_size):
            return name
    return None


def caption_instruction(cfg: "Config", captioner: str) -> str:
    """The fixed instruction a ``vlm-plain`` captioner is given (its ``prompt``, else the default one)."""
    from pipeline.captioners.vlm import DEFAULT_INSTRUCTION

    return cfg.captioner(captioner).prompt or DEFAULT_INSTRUCTION


class StageKeys:
    """The configurations (and hashes) of the configuration-only stages under one ``Config``; what they share
    (the embedders' keys, the prompt template) is read once per instance."""

    def __init__(self, cfg: "Config"):
        self.cfg = cfg

    @cached_property
    def image_embedder_key(self) -> str:
        return build_image_embedder(self.cfg).key

    @cached_property
    def text_embedder_key(self) -> str:
        return build_text_embedder(self.cfg).key

    @cached_property
    def template(self) -> tuple[str, str]:
        """The prompt template: (text, template id)."""
        path = self.cfg.prompts.template
        return load_template(resolve_home_path(path) if path else None)

    # -- each stage's configuration ----------------------------------------------------------------------
    def ingest(self) -> dict[str, Any]:
        d = self.cfg.data
        return {"source": d.source, "path": str(resolve_home_path(d.path)), "captions": d.captions,
                "n_targets": d.n_targets, "seed": d.seed, "official_test_targets": d.official_test_targets,
                "max_image_pixels": d.max_image_pixels}

    def embed_images(self) -> dict[str, Any]:
        return {"embedder": self.image_embedder_key}

    def neighbours(self) -> dict[str, Any]:
        n = self.cfg.neighbours
        # "auto" is keyed as "exact": lists found below the threshold are exact, and a collection growing past it
        # must not recompute every stored list, prompt and caption (the index's recall is measured and shown)
        return {"embedder": self.image_embedder_key, "k": n.k, "near_duplicate_threshold": n.near_duplicate_threshold,
                "index": "exact" if n.index == "auto" else n.index, "version": NEIGHBOURS_VERSION}

    def _token_budget(self) -> dict[str, Any]:
        name = token_captioner(self.cfg)
        if name is None:
            return {"counter": f"words-x{TOKENS_PER_WORD}", "max_tokens": self.cfg.prompts.max_tokens}
        cc = self.cfg.captioner(name)
        return {"counter": "tokenizer", "model": cc.model or default_model(cc.kind),
                "max_tokens": self.cfg.prompts.max_tokens or "model context", "max_new_tokens": cc.max_new_tokens}

    def prompts(self) -> dict[str, Any]:
        return {"neighbours": self.hash("neighbours"), "template_id": self.template[1],
                "per_neighbour": self.cfg.prompts.per_neighbour, "token_budget": self._token_budget()}

    def caption(self, captioner: str) -> dict[str, Any]:
        """A captioner's settings (``CaptionerConfig.identity``: not its batch size, nor how an endpoint is reached)
        and what it reads: the prompts (``vlm-neighbours``), the neighbours and the text embedder
        (``knn-consensus``) or its fixed instruction (``vlm-plain``)."""
        if not captioner:
            raise ConfigError("the caption stage needs a captioner name, e.g. caption:knn-consensus")
        cc = self.cfg.captioner(captioner)
        out: dict[str, Any] = {"captioner": cc.identity(), "model_id": cc.model or default_model(cc.kind)}
        if cc.kind == "vlm-neighbours":
            out["prompts"] = self.hash("prompts")
        elif cc.kind == "knn-consensus":
            out["neighbours"] = self.hash("neighbours")
            out["text_embedder"] = self.text_embedder_key
        elif cc.kind == "vlm-plain":
            out["prompt"] = caption_instruction(self.cfg, captioner)
        return out

    def caption_hash(self, variant: str) -> str:
        """The hash of the captions ``embed-captions:<variant>`` embeds ('' for the human captions)."""
        return "" if variant == HUMAN else self.hash("caption", variant)

    def embed_captions(self, variant: str) -> dict[str, Any]:
        if not variant:
            raise CapsearchError("embed-captions needs a captioner (embed-captions:<captioner>)")
        return {"captions": HUMAN if variant == HUMAN else self.caption_hash(variant),
                "text_embedder": self.text_embedder_key}

    def query_kinds(self) -> list[str]:
        return check_kinds(self.cfg.queries.kinds)

    def queries(self) -> dict[str, Any]:
        return {"kinds": self.query_kinds(), "generator": query_generator_settings(self.cfg),
                "version": QUERIES_VERSION}

    # -- by name -----------------------------------------------------------------------------------------
    def config(self, name: str, variant: str = "") -> dict[str, Any]:
        """The configuration of the stage ``name`` (``variant``: the captioner of a per-captioner stage)."""
        if name == "caption":
            return self.caption(variant)
        if name == "embed-captions":
            return self.embed_captions(variant)
        build = {"ingest": self.ingest, "embed-images": self.embed_images, "neighbours": self.neighbours,
                 "prompts": self.prompts, "queries": self.queries}.get(name)
        if build is None:
            raise ValueError(f"stage '{name}' is not keyed by its configuration alone")
        return build()

    def hash(self, name: str, variant: str = "") -> str:
        return stage_key(name, variant, self.config(name, variant))


def stage_hash(ws: "Workspace", name: str, variant: str = "") -> str:
    """The current configuration hash of a configuration-only stage (the rows it writes are keyed by it)."""
    return StageKeys(ws.config).hash(name, variant)


def optional_stage_hash(ws: "Workspace", name: str, variant: str = "") -> str | None:
    """A stage's configuration hash, or None where the configuration does not allow one (a bad setting)."""
    try:
        return stage_hash(ws, name, variant)
    except CapsearchError:
        return None
