"""What `capsearch status` and the TUI's pipeline screen show: per stage done / missing / failed."""
from __future__ import annotations

from typing import Any

from pipeline.errors import CapsearchError
from pipeline.stages.registry import pipeline_stages
from pipeline.workspace import Workspace


def workspace_status(ws: Workspace) -> dict[str, Any]:
    store = ws.store
    stages = []
    for stage in pipeline_stages(ws):
        try:
            counts = stage.counts().as_dict()
        except CapsearchError as exc:  # e.g. the data folder is missing: say so instead of failing
            counts = {"stage": stage.label, "total": 0, "done": 0, "failed": 0, "missing": 0, "failures": {},
                      "error": str(exc)}
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
        "runs": store.stage_runs(limit=20),
    }
