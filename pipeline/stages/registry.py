"""Every stage, in pipeline order, built for a workspace's configuration.

The one place a stage is built from its name (``build_stage``: a registered name, or ``module:Class`` for a
stage defined outside the registry) and any stage's current configuration hash read by building it
(``stage_hash``; readers of the configuration-only stages' rows use ``pipeline.stage_keys`` instead, which
builds no stage).
"""
from __future__ import annotations

import importlib

from pipeline.errors import ConfigError
from pipeline.keys import HUMAN
from pipeline.stages.base import Stage
from pipeline.stages.caption_metrics import CaptionMetricsStage
from pipeline.stages.ingest import IngestStage
from pipeline.stages.text import EmbedCaptionsStage, EvaluateStage, QueriesStage, ReportStage
from pipeline.stages.vision import CaptionStage, EmbedImagesStage, NeighboursStage, PromptsStage
from pipeline.workspace import Workspace

# The stages in the order the pipeline runs them. Per-captioner stages take the captioner as their variant.
STAGE_CLASSES: dict[str, type[Stage]] = {
    "ingest": IngestStage,
    "embed-images": EmbedImagesStage,
    "neighbours": NeighboursStage,
    "prompts": PromptsStage,
    "caption": CaptionStage,
    "embed-captions": EmbedCaptionsStage,
    "caption-metrics": CaptionMetricsStage,
    "queries": QueriesStage,
    "evaluate": EvaluateStage,
    "report": ReportStage,
}
STAGE_ORDER = tuple(STAGE_CLASSES)
PER_CAPTIONER = ("caption", "embed-captions")


def stage_class(name: str) -> type[Stage]:
    """The class of a registered stage (KeyError for another name)."""
    return STAGE_CLASSES[name]


def resolve_stage_class(name: str) -> type[Stage]:
    """A registered stage name, or ``package.module:Class`` for a stage defined outside the registry."""
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"stage '{name}' cannot be imported: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise ConfigError(f"stage '{name}' is not a Stage subclass")
        return cls
    try:
        return stage_class(name)
    except KeyError:
        raise ConfigError(f"unknown stage '{name}'; stages: {', '.join(STAGE_ORDER)}") from None


def build_stage(ws: Workspace, name: str, variant: str = "") -> Stage:
    """The stage ``name`` (registered, or ``module:Class``) for ``variant`` (a captioner, ``human``, or '')."""
    return resolve_stage_class(name)(ws, variant)


def stage_hash(ws: Workspace, name: str, variant: str = "") -> str:
    """The current configuration hash of any stage, built from its name (the rows it writes are keyed by it)."""
    return build_stage(ws, name, variant).config_hash()


def pipeline_stages(ws: Workspace, names: list[str] | None = None, captioners: list[str] | None = None) -> list[Stage]:
    """Stage instances in run order; per-captioner stages are expanded for each captioner.

    ``embed-captions`` also gets the target ``human`` (the photos' human captions, for searching the whole
    collection) unless particular captioners were asked for."""
    wanted = names or STAGE_ORDER
    caps = captioners or ws.config.enabled_captioners()
    stages: list[Stage] = []
    for name in STAGE_ORDER:
        if name not in wanted:
            continue
        cls = stage_class(name)
        if name in PER_CAPTIONER:
            targets = ([HUMAN] if name == "embed-captions" and captioners is None else []) + list(caps)
            stages.extend(cls(ws, c) for c in targets)
        else:
            stages.append(cls(ws))
    return stages
