"""Every stage, in pipeline order, built for a workspace's configuration."""
from __future__ import annotations

import importlib
import importlib.util

from pipeline.stages.base import Stage
from pipeline.workspace import Workspace

# Stage names in the order the pipeline runs them. Per-captioner stages take the captioner as target.
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


def build_stage(ws: Workspace, name: str, target: str = "") -> Stage:
    return stage_class(name)(ws, target)


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
