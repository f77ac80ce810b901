"""What `capsearch status` and the TUI's pipeline screen show: per stage done / missing / failed, or why a
stage does not apply; photos removed from the collection; duplicates kept out of the neighbours' captions."""
from __future__ import annotations

from typing import Any

from pipeline.errors import CapsearchError
from pipeline.stages.registry import pipeline_stages
from pipeline.workspace import Workspace


def duplicate_counts(ws: Workspace) -> dict[str, int]:
    """Identical photos in the collection (same sha256, beyond the first copy), and photos whose neighbour list
    holds an exact or a near duplicate of them (listed, but their captions never reach a prompt or the
    consensus), under the current neighbours configuration."""
    from pipeline.stages.vision import EXACT_DUPLICATE, NEAR_DUPLICATE, NeighboursStage

    store = ws.store
    copies = store.conn.execute(
        "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM images GROUP BY sha256 HAVING n > 1)"
    ).fetchone()[0]
    out = {"identical_photos": int(copies), "with_exact_duplicate_neighbour": 0, "with_near_duplicate_neighbour": 0}
    try:
        config_hash = NeighboursStage(ws).config_hash()
    except CapsearchError:
        return out
    for kind, key in ((EXACT_DUPLICATE, "with_exact_duplicate_neighbour"),
                      (NEAR_DUPLICATE, "with_near_duplicate_neighbour")):
        out[key] = store.conn.execute(
            "SELECT COUNT(DISTINCT n.target_id) FROM neighbours n JOIN images i ON i.id = n.target_id "
            "WHERE n.config_hash=? AND n.near_duplicate=?", (config_hash, kind)).fetchone()[0]
    return out


def workspace_status(ws: Workspace) -> dict[str, Any]:
    from pipeline.stages.ingest import removed_photos

    store = ws.store
    stages = []
    for stage in pipeline_stages(ws):
        try:
            counts = stage.counts().as_dict()
        except CapsearchError as exc:  # e.g. the data folder is missing: say so instead of failing
            counts = {"stage": stage.label, "state": "error", "total": 0, "done": 0, "failed": 0, "missing": 0,
                      "failures": {}, "not_applicable": None, "error": str(exc)}
        stages.append(counts)
    problems = [p.__dict__ for p in store.problems()]
    for s in stages:
        for item, reason in s["failures"].items():
            if not any(p["item"] == item and p["stage"] == s["stage"] for p in problems):
                problems.append({"stage": s["stage"], "item": item, "severity": "failed", "reason": reason})
    return {
        "workspace": str(ws.root),
        "profile": ws.config.profile,
        "images": {"total": store.count_images(), "reference": store.count_images("reference"),
                   "target": store.count_images("target")},
        "stages": stages,
        "problems": problems,
        "removed": removed_photos(store),
        "duplicates": duplicate_counts(ws),
        "runs": store.stage_runs(limit=20),
    }
