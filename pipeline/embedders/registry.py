"""Build the configured image embedder (``[image_embedder]`` and ``[runtime]`` of a workspace config)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.backends import ImageEmbedder
    from pipeline.config import Config

EMBEDDERS = ("classical", "open_clip")


def build_image_embedder(cfg: "Config") -> "ImageEmbedder":
    """The embedder named by ``image_embedder.name``; cheap: models load on first use, once per process."""
    ie = cfg.image_embedder
    if ie.name == "classical":
        from pipeline.embedders.classical import ClassicalEmbedder

        return ClassicalEmbedder(batch_size=ie.batch_size, num_workers=ie.num_workers)
    if ie.name == "open_clip":
        from pipeline.embedders.open_clip_embedder import OpenClipEmbedder

        return OpenClipEmbedder(ie.model, ie.pretrained, device=cfg.runtime.device, dtype=cfg.runtime.dtype,
                                batch_size=ie.batch_size, num_workers=ie.num_workers)
    raise ConfigError(f"image_embedder.name '{ie.name}' is not one of {', '.join(EMBEDDERS)}")


def embedder_runs_on_gpu(cfg: "Config") -> bool:
    """True when the configured image embedder runs its model on a GPU (classical never does)."""
    if cfg.image_embedder.name != "open_clip":
        return False
    from pipeline.models.device import resolve_device

    return resolve_device(cfg.runtime.device).startswith("cuda")


def embedder_models_to_pull(cfg: "Config") -> tuple[list[str], list[str]]:
    """(hub repositories or local paths to fetch ahead, notes about weights that do not come from the hub)."""
    ie = cfg.image_embedder
    if ie.name != "open_clip":
        return [], []
    from pipeline.embedders.open_clip_embedder import HF_HUB, LOCAL_DIR

    if ie.pretrained.startswith(LOCAL_DIR):
        return [ie.pretrained[len(LOCAL_DIR):]], []
    if ie.model.startswith(HF_HUB):
        return [ie.model[len(HF_HUB):]], []
    if os.path.sep in ie.pretrained or os.path.isfile(ie.pretrained):
        return [ie.pretrained], []
    import open_clip

    pretrained_cfg = open_clip.get_pretrained_cfg(ie.model, ie.pretrained) or {}
    hub = str(pretrained_cfg.get("hf_hub") or "").strip("/")
    if hub:
        return [hub], []
    url = pretrained_cfg.get("url")
    if url:
        return [], [f"open_clip {ie.model}/{ie.pretrained} is downloaded from {url} on first use, not from the hub"]
    return [], [f"open_clip knows no pretrained tag '{ie.pretrained}' for {ie.model}"]
