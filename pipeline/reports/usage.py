"""The report's account of captioning through a model server: per endpoint captioner, what its stored captions
cost (tokens, and USD where prices are set) and how its last run went (photos/s, tokens/s). The entries come
from the report stage (``pipeline.stages.text.caption_usage``), which knows the captioning stages."""
from __future__ import annotations

from html import escape
from typing import Any


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
