"""The report's account of captioning through a model server: per endpoint captioner, what its stored captions
cost (tokens, and USD where prices are set) and how its last run went (photos/s, tokens/s)."""
from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.workspace import Workspace


def caption_usage(ws: "Workspace") -> list[dict[str, Any]]:
    """One entry per enabled endpoint captioner: ``stored`` (its current captions' tokens and cost) and
    ``last_run`` (the newest stage run that sent requests: its status and usage with rates), as in ``--json``."""
    from pipeline.stages.vision import CaptionStage

    cfg = ws.config
    names = [n for n in cfg.enabled_captioners() if cfg.captioner(n).uses_endpoint]
    if not names:
        return []
    runs = [r for r in ws.store.stage_runs(stage="caption", limit=200) if r.usage]
    out = []
    for name in names:
        stage = CaptionStage(ws, name)
        last = next((r for r in runs if r.variant == name), None)
        out.append({"captioner": name, "model": stage.captioner.served_model, "stored": stage.stored_usage(),
                    "last_run": None if last is None else {"status": last.status, "started_at": last.started_at,
                                                           **last.as_dict()["usage"]}})
    return out


def _money(value: float | None) -> str:
    return "–" if value is None else f"${value:,.4f}"


def _rate(value: float | None, unit: str) -> str:
    return "–" if not value else f"{value:,.1f} {unit}"


def usage_section(entries: list[dict[str, Any]]) -> str:
    """The HTML section (empty when no captioner used a server)."""
    if not entries:
        return ""
    rows = []
    for e in entries:
        stored, last = e["stored"], e.get("last_run") or {}
        rows.append(
            f"<tr><td><b>{escape(e['captioner'])}</b><br><small>{escape(e['model'])}</small></td>"
            f"<td>{stored['photos']:,}</td><td>{stored['prompt_tokens']:,}</td><td>{stored['completion_tokens']:,}</td>"
            f"<td>{_money(stored.get('cost_usd'))}</td>"
            f"<td>{_rate(last.get('photos_per_second'), 'photos/s')}<br>"
            f"<small>{_rate(last.get('tokens_per_second'), 'tokens/s')}</small></td></tr>")
    return ("<h2>Captioning through a server</h2>"
            "<p class=\"meta\">Tokens the server counted for the captions stored now, their cost at the configured prices "
            "(per million tokens), and the last run's speed.</p>"
            "<table class=\"metrics\"><tr><th>captioner</th><th>photos</th><th>prompt tokens</th>"
            "<th>completion tokens</th><th>cost</th><th>last run</th></tr>" + "".join(rows) + "</table>")
