"""What the caption metrics are keyed by: each row's hash and the ``caption-metrics`` stage's configuration.

A *row* (``human``, or an enabled captioner) is stored under a hash of what it reads (its captions, the
photos and their references, the image vectors CLIPScore uses), how it is tokenised and which metrics can
run (``scoring.Environment``); the stage's configuration is every row's hash plus the summary's settings
(baseline, bootstrap, confidence). The stage (``pipeline.stages.caption_metrics``), the readers of the
stored summary (``storage``) and the report's key read them here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.caption_metrics import scoring
from pipeline.errors import CapsearchError
from pipeline.estimates import CONFIDENCE
from pipeline.hashing import hash_obj, hash_text
from pipeline.keys import HUMAN, image_space, stage_key
from pipeline.stage_keys import stage_hash

if TYPE_CHECKING:
    from pipeline.workspace import Workspace

STAGE = "caption-metrics"
VERSION = 2     # 1: captioners against all but the first human caption, human = the first caption only;
                # 2: captioners against every human caption, human = the mean over leave-one-out hold-outs


def rows(ws: "Workspace") -> list[str]:
    """``human`` (where targets have two human captions) and every enabled captioner."""
    human = [HUMAN] if scoring.photos(ws).with_references else []
    return [*human, *ws.config.enabled_captioners()]


def _image_fingerprint(ws: "Workspace", env: scoring.Environment, ids: list[str]) -> str:
    if env.clip_key is None:
        return ""
    store = ws.store
    shas = sorted({img.sha256 for img in store.images(ids=ids)})
    return hash_obj(sorted(store.has_vectors(image_space(env.clip_key), shas)))


def row_hashes(ws: "Workspace", env: scoring.Environment) -> dict[str, str]:
    """Each row's identity: what it reads, how it is tokenised, which metrics can run."""
    ph = scoring.photos(ws)
    common = {"version": VERSION, "env": env.as_dict(),
              "photos": hash_obj([ph.ids, ph.references]), "images": _image_fingerprint(ws, env, ph.ids)}
    out = {}
    for row in rows(ws):
        ident: dict[str, Any] = dict(common, row=row)
        if row != HUMAN:
            caps = scoring.row_captions(ws, row, ph)
            ident.update(caption_stage=stage_hash(ws, "caption", row), captions=hash_obj([hash_text(c) for c in caps]))
        out[row] = hash_obj(ident)
    return out


def summary_config(ws: "Workspace", hashes: dict[str, str]) -> dict[str, Any]:
    """The stage's configuration: its rows' hashes and the summary's settings."""
    ev = ws.config.evaluate
    return {"rows": hashes, "baseline": ev.baseline, "n_boot": ev.n_boot, "seed": ev.seed,
            "confidence": CONFIDENCE, "version": VERSION}


def summary_hash(ws: "Workspace", hashes: dict[str, str]) -> str:
    """The stage's configuration hash for these row hashes (the summary is stored under it)."""
    return stage_key(STAGE, "", summary_config(ws, hashes))


def caption_metrics_hash(ws: "Workspace") -> str:
    """The current configuration hash of the ``caption-metrics`` stage."""
    return summary_hash(ws, row_hashes(ws, scoring.environment(ws)))


def current_caption_metrics_hash(ws: "Workspace") -> str | None:
    """``caption_metrics_hash``, or None where the configuration does not allow one (a bad setting)."""
    try:
        return caption_metrics_hash(ws)
    except CapsearchError:
        return None
