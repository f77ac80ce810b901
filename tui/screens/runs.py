"""Runs: this workspace's recent Prefect flow runs (from the server, or from the local Prefect database without
one), and its stage runs with the Prefect flow run each one was.

Flow runs are named as the flows name them in Prefect (``flows.naming``: ``demo · pipeline``,
``demo · caption:knn-consensus``), built from each run's parameters, so runs recorded before that naming read the
same. State and duration come right after the name, before anything that may not fit at 80 columns."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from flows import naming
from flows.naming import PIPELINE
from tui.screens.base import CapsearchScreen
from tui.widgets.progress import format_seconds
from tui.widgets.tables import fill_table

if TYPE_CHECKING:
    from flows.runtime.history import FlowRunRow
    from flows.runtime.prefect_runs import RecentFlowRuns
    from pipeline.store_rows import StageRunRow

FLOW_RUN_COLUMNS = [(key, key) for key in ("flow run", "state", "took", "started")]
STAGE_RUN_COLUMNS = [(key, key) for key in ("stage", "status", "took", "done", "failed", "started", "flow run",
                                             "message")]
PIPELINE_FLOW = "capsearch-pipeline"
NAME_WIDTH = 40           # a flow run's name is cut here (a run of many chosen stages lists them all)
LOCAL_NOTE = ("Flow runs from the local Prefect database ({path}); `capsearch server` shows the same runs in "
              "the Prefect UI.")
NO_DATABASE = ("No Prefect flow runs recorded yet (no local Prefect database); `capsearch server` shows runs in the "
               "Prefect UI once there are some.")
OTHER_DATABASE = "Prefect uses a database other than SQLite here: start `capsearch server` to see its runs"
STATE_STYLES = {"completed": "green", "failed": "red", "crashed": "bold red", "cancelled": "yellow",
                "running": "cyan", "pending": "dim", "scheduled": "dim"}


def _when(value: float | dt.datetime | None, short: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        value = dt.datetime.fromtimestamp(value)
    return value.astimezone().strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M")


def run_label(row: FlowRunRow) -> str:
    """What a flow run did: ``pipeline`` (``pipeline: evaluate, report`` for some stages) or its stage's label."""
    if row.flow == PIPELINE_FLOW:
        return PIPELINE + ("" if row.stage in ("", "all") else f": {row.stage}")
    return row.stage or row.flow.removeprefix("capsearch-")


def run_name(row: FlowRunRow, workspace: str) -> str:
    """``<workspace> · <what it did>``, as ``flows.naming`` names flow runs, in at most ``NAME_WIDTH`` characters:
    a long workspace name is cut first (the screen's title gives it whole), then what the run did."""
    label = run_label(row)
    name = naming.run_name(workspace, label)
    if len(name) <= NAME_WIDTH:
        return name
    ws_name = naming.workspace_name(workspace)
    room = max(8, NAME_WIDTH - len(naming.SEPARATOR) - len(label))
    if len(ws_name) > room:
        name = ws_name[:room - 1] + "…" + naming.SEPARATOR + label
    return name if len(name) <= NAME_WIDTH else name[:NAME_WIDTH - 1] + "…"


class FlowRunsLoaded(Message):
    """The recent Prefect flow runs, from the server when one is configured, else from the local database."""

    def __init__(self, flow_runs: RecentFlowRuns) -> None:
        super().__init__()
        self.flow_runs = flow_runs


class StageRunsLoaded(Message):
    """This workspace's recent stage runs, newest first."""

    def __init__(self, stage_runs: list[StageRunRow]) -> None:
        super().__init__()
        self.stage_runs = stage_runs


class RunsScreen(CapsearchScreen):
    MODE = "runs"
    HELP = ("This workspace's recent Prefect flow runs (state, duration, start), named as in the Prefect UI "
            "(`<workspace> · pipeline`, `<workspace> · <stage>`), from the Prefect server when one is configured, "
            "else from the local Prefect database (`capsearch server` shows the same runs in the Prefect UI); "
            "below, every stage run recorded in this workspace with its Prefect flow run (highlight one to see "
            "its id and address).")
    BINDINGS = [Binding("u", "refresh", "Refresh", tooltip="read the flow runs and stage runs again")]
    LOADING_LINES = {"flow-runs": "#prefect-line", "stage-runs": "#stage-runs-title"}
    PREFECT_TIMEOUT = 3.0

    def __init__(self) -> None:
        super().__init__()
        self.prefect: RecentFlowRuns | None = None
        self.stage_runs: list[StageRunRow] | None = None      # None: not read yet

    def compose_body(self) -> ComposeResult:
        with Vertical(id="runs-body"):
            yield Static("reading Prefect flow runs…", id="prefect-line")
            yield DataTable(id="flow-runs", cursor_type="row", zebra_stripes=True)
            yield Static(Text("Stage runs in this workspace", style="bold"), id="stage-runs-title")
            yield DataTable(id="stage-runs", cursor_type="row", zebra_stripes=True)
            yield Static("", id="stage-run-detail")

    def on_mount(self) -> None:
        self.query_one("#flow-runs", DataTable).display = False
        self.query_one("#stage-runs", DataTable).focus()
        self._load()

    def reload(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self.query_one("#prefect-line", Static).update("reading Prefect flow runs…")
        self._load()

    def _load(self) -> None:
        self._load_stage_runs()
        self._load_flow_runs()

    @work(thread=True, group="stage-runs", exclusive=True, exit_on_error=False,
          description="reading the workspace's stage runs")
    def _load_stage_runs(self) -> None:
        self.post_message(StageRunsLoaded(self.ws.store.stage_runs(limit=50)))

    @work(thread=True, group="flow-runs", exclusive=True, exit_on_error=False,
          description="reading the Prefect flow runs")
    def _load_flow_runs(self) -> None:
        from flows.runtime.prefect_runs import read_recent_runs

        self.post_message(FlowRunsLoaded(read_recent_runs(timeout=self.PREFECT_TIMEOUT,
                                                          api_url=self.capsearch_app.prefect_api_url,
                                                          workspace=str(self.ws.root))))

    @on(FlowRunsLoaded)
    def _flow_runs_loaded(self, message: FlowRunsLoaded) -> None:
        self.prefect = message.flow_runs
        self._fill_flow_runs()
        self._fill_stage_runs()

    def on_resize(self) -> None:
        if self.prefect is not None:
            self._fill_flow_runs()
        self._fill_stage_runs()

    def _fill_flow_runs(self) -> None:
        p = self.prefect
        assert p is not None
        line = self.query_one("#prefect-line", Static)
        flow_runs = self.query_one("#flow-runs", DataTable)
        narrow = self.narrow
        recent = Text(f"\n{len(p.runs)} recent flow runs of ", style="dim")
        recent.append(self.ws.name, style="bold")
        recent.append(f" ({self.ws.root})" if not narrow else "", style="dim")
        text = Text()
        if p.api_url is None:
            if p.database is None:
                text.append(OTHER_DATABASE, style="yellow")
            elif not p.runs:
                text.append(NO_DATABASE, style="yellow")
            elif narrow:      # one line: the table below needs the rows
                text.append(f"{len(p.runs)} flow runs of ", style="dim")
                text.append(self.ws.name, style="bold")
                text.append(" (local Prefect database; `capsearch server` shows them)", style="dim")
            else:
                text.append(LOCAL_NOTE.format(path=p.database), style="dim")
                text.append_text(recent)
        else:
            text.append("Prefect UI ", style="dim")
            text.append(p.ui_url or p.api_url, style="bold underline")
            text.append(f"  (API {p.api_url})", style="dim")
            text.append_text(recent)
        line.update(text)
        flow_runs.display = bool(p.runs)
        fill_table(flow_runs, FLOW_RUN_COLUMNS, [
            (run_name(r, str(self.ws.root)), Text(r.state, style=STATE_STYLES.get(r.state.lower(), "")),
             format_seconds(r.seconds), _when(r.started, short=narrow)) for r in p.runs])

    @on(StageRunsLoaded)
    def _stage_runs_loaded(self, message: StageRunsLoaded) -> None:
        self.stage_runs = message.stage_runs
        self._fill_stage_runs()

    def _fill_stage_runs(self) -> None:
        """Each stage run with its flow run: by name when that run is among the recent ones, else by id."""
        workspace = str(self.ws.root)
        names = {r.id: run_name(r, workspace) for r in self.prefect.runs} if self.prefect is not None else {}
        rows = []
        for r in self.stage_runs or ():
            stage = f"{r.stage}:{r.variant}" if r.variant else r.stage
            took = (r.finished_at - r.started_at) if r.finished_at else None
            flow_run = r.flow_run_id or ""
            rows.append((stage, Text(r.status, style=STATE_STYLES.get(r.status, "")), format_seconds(took),
                         str(r.done), str(r.failed), _when(r.started_at, short=self.narrow),
                         names.get(flow_run) or flow_run[:8] or "-", r.message or ""))
        fill_table(self.query_one("#stage-runs", DataTable), STAGE_RUN_COLUMNS, rows)
        if self.stage_runs is not None:      # (the flow runs may arrive first: the title waits for the stage runs)
            self.query_one("#stage-runs-title", Static).update(Text(
                "Stage runs in this workspace" + ("" if self.stage_runs else ": none yet"), style="bold"))
        self._detail()

    @on(DataTable.RowHighlighted, "#stage-runs")
    def _highlighted(self) -> None:
        self._detail()

    def _detail(self) -> None:
        """The highlighted stage run's Prefect flow run: its id, and its page in the Prefect UI."""
        runs = self.stage_runs or []
        detail = self.query_one("#stage-run-detail", Static)
        if not runs:
            detail.update("")
            return
        row = self.query_one("#stage-runs", DataTable).cursor_row
        r = runs[min(max(row, 0), len(runs) - 1)]
        flow_run = r.flow_run_id or ""
        text = Text()
        if not flow_run:
            text.append("no Prefect flow run recorded for this stage run", style="dim")
        else:
            text.append("Prefect flow run ", style="dim")
            text.append(flow_run, style="bold")
            p = self.prefect
            if p is not None and p.api_url is not None:
                text.append(f"  {(p.ui_url or p.api_url).rstrip('/')}/runs/flow-run/{flow_run}", style="underline")
            elif not self.narrow:
                text.append("  (`capsearch server` shows it in the Prefect UI)", style="dim")
        detail.update(text)
