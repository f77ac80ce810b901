"""Every stage, in pipeline order, built for a workspace's configuration.

The one place a stage is built from its name (``build_stage``: a registered name, or ``module:Class`` for a
stage defined outside the registry) and its current configuration hash read (``stage_hash``).
"""
from __future__ import annotations

import importlib
import importlib.util

from pipeline.errors import CapsearchError, ConfigError
from pipeline.stages.base import Stage
from pipeline.workspace import Workspace

# Stage names in the order the pipeline runs them. Per-captioner stages take the captioner as their variant.
STAGE_ORDER = ("ingest", "embed-images", "neighbours", "prompts", "caption", "embed-captions", "caption-metrics", "queries",
               "evaluate", "report")
PER_CAPTIONER = ("caption", "embed-captions")
HUMAN = "human"          # embed-captions:human: the photos' human captions
# Modules that define more stages in a STAGES dict (name -> class).
_STAGE_MODULES = ("pipeline.stages.vision", "pipeline.stages.text", "pipeline.stages.caption_metrics")


def stage_class(name: str) -> type[Stage]:
    from pipeline.stages.ingest import IngestStage

    classes: dict[str, type[Stage]] = {"ingest": IngestStage}
    for module in _STAGE_MODULES:
        if importlib.util.find_spec(module) is not None:
            classes.update(importlib.import_module(module).STAGES)
    if name not in classes:
        raise KeyError(name)
    return classes[name]


def available_stages() -> list[str]:
    out = []
    for name in STAGE_ORDER:
        try:
            stage_class(name)
            out.append(name)
        except KeyError:
            pass
    return out


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
        if name in STAGE_ORDER:
            raise StageNotInstalled(f"stage {name} is not installed in this capsearch") from None
        raise ConfigError(f"unknown stage '{name}'; stages: {', '.join(STAGE_ORDER)}") from None


class StageNotInstalled(ConfigError):
    """A stage of the pipeline whose module this installation lacks."""


def build_stage(ws: Workspace, name: str, variant: str = "") -> Stage:
    """The stage ``name`` (registered, or ``module:Class``) for ``variant`` (a captioner, ``human``, or '')."""
    return resolve_stage_class(name)(ws, variant)


def stage_hash(ws: Workspace, name: str, variant: str = "") -> str:
    """The current configuration hash of a stage (the rows it reads or writes are keyed by it)."""
    try:
        return build_stage(ws, name, variant).config_hash()
    except StageNotInstalled:
        label = f"{name}:{variant}" if variant else name
        raise CapsearchError(f"stage {label} is not installed in this capsearch") from None


def optional_stage_hash(ws: Workspace, name: str, variant: str = "") -> str | None:
    """A stage's configuration hash, or None where the stage is not installed or cannot be built."""
    try:
        return stage_hash(ws, name, variant)
    except CapsearchError:
        return None


def pipeline_stages(ws: Workspace, names: list[str] | None = None, captioners: list[str] | None = None) -> list[Stage]:
    """Stage instances in run order; per-captioner stages are expanded for each captioner.

    ``embed-captions`` also gets the target ``human`` (the photos' human captions, for searching the whole
    collection) unless particular captioners were asked for."""
    wanted = names or available_stages()
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
