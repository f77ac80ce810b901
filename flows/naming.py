"""What capsearch's runs are called in Prefect: flow run names, tags, deployment names and artifact keys.

One place for every name a person reads or filters by in the Prefect UI, so that the flows, the deployments,
the artifacts and the TUI's Runs screen say the same thing:

* flow runs are named for what they are, ``<workspace> · pipeline`` and ``<workspace> · caption:vlm-neighbours``
  (the workspace's folder name, as a person knows it);
* flow runs are tagged ``capsearch``, ``workspace:<id>`` and ``profile:<profile>``, so the Flow Runs page
  filters one workspace's runs;
* artifact keys are ``capsearch-<id>-<what>`` (``capsearch-demo-3fa2c1-evaluation``), stable per workspace,
  so the Artifacts page shows the latest of each with its history; searching the page for the id shows one
  workspace's artifacts;
* deployments are ``nightly-<id>`` and ``run-<id>``.

The workspace's ``<id>`` is its folder name (lowercase letters, digits and dashes, as Prefect's keys need)
and the first 6 hex digits of the SHA-256 of its absolute path: two workspaces with one name (``outputs/default``
in two capsearch homes reporting to one Prefect server, or two folders called ``photos``) get different keys,
tags and deployments, where the name alone would mix their histories and one ``serve`` would overwrite the
other's deployments. The id stays the same as long as the workspace stays where it is; a moved workspace
starts a new history.

No Prefect import here: the TUI and the CLI read names without paying for Prefect.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from pipeline.workspace import Workspace

SEPARATOR = " · "
PIPELINE = "pipeline"
NIGHTLY = "nightly"                # deployment name prefix of the scheduled runs
ON_DEMAND = "run"                  # deployment name prefix of runs started from the TUI or `run --detach`
PATH_DIGITS = 6


def slug(text: str) -> str:
    """Lowercase letters, digits and single dashes (what Prefect allows in an artifact key)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def workspace_name(workspace: "Workspace | str | Path") -> str:
    """The workspace's folder name: from a ``Workspace`` or the path a flow run has as its parameter."""
    root = getattr(workspace, "root", workspace)
    return Path(str(root).rstrip("/")).name or str(root)


def workspace_id(workspace: "Workspace | str | Path") -> str:
    """``<folder name>-<6 hex digits of the absolute path>``: stable per workspace, unique across homes."""
    root = Path(str(getattr(workspace, "root", workspace))).expanduser().resolve()
    digest = hashlib.sha256(str(root).encode("utf-8", "surrogateescape")).hexdigest()[:PATH_DIGITS]
    return f"{slug(root.name)}-{digest}"


def run_name(workspace: "Workspace | str | Path", what: str) -> str:
    """``<workspace> · <what>``."""
    return f"{workspace_name(workspace)}{SEPARATOR}{what}"


def pipeline_run_name(workspace: "Workspace | str | Path", stages: Sequence[str] | None = None) -> str:
    """``demo · pipeline``, or ``demo · pipeline: evaluate, report`` for a run of some stages."""
    what = PIPELINE + (f": {', '.join(stages)}" if stages else "")
    return run_name(workspace, what)


def stage_run_name(workspace: "Workspace | str | Path", label: str) -> str:
    """``demo · caption:vlm-neighbours``: the flow run of one stage."""
    return run_name(workspace, label)


def workspace_tag(workspace: "Workspace | str | Path") -> str:
    return f"workspace:{workspace_id(workspace)}"


def run_tags(ws: "Workspace") -> list[str]:
    """The tags of every flow run of a workspace: ``capsearch``, its workspace and its profile."""
    return ["capsearch", workspace_tag(ws), f"profile:{ws.config.profile}"]


def artifact_key(workspace: "Workspace | str | Path", what: str) -> str:
    """``capsearch-<workspace id>-<what>``, e.g. ``capsearch-demo-3fa2c1-evaluation``."""
    return f"capsearch-{workspace_id(workspace)}-{slug(what)}"


def nightly_deployment_name(ws: "Workspace") -> str:
    return f"{NIGHTLY}-{workspace_id(ws)}"


def on_demand_deployment_name(ws: "Workspace") -> str:
    return f"{ON_DEMAND}-{workspace_id(ws)}"
