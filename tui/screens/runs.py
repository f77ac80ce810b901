"""Runs: recent Prefect flow runs (from the server, or from the local Prefect database without one), and this
workspace's stage runs with the Prefect flow run each one was."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from tui.messages import FlowRunsLoaded, StageRunsLoaded
from tui.screens.base import CapsearchScreen
from tui.widgets.progress import format_seconds
from tui.widgets.tables import fill_table

if TYPE_CHECKING:
    from flows.runtime.prefect_runs import RecentFlowRuns
    from pipeline.store_rows import StageRunRow

FLOW_RUN_COLUMNS = [(key, key) for key in ("flow run", "flow", "state", "stage", "started", "took")]
STAGE_RUN_COLUMNS = [(key, key) for key in ("stage", "status", "done", "failed", "started", "took", "flow run",
                                             "message")]
LOCAL_NOTE = ("Flow runs from the local Prefect database ({path}); `capsearch server` shows the same runs in "
              "the Prefect UI.")
NO_DATABASE = ("No Prefect flow runs recorded yet (no local Prefect database); `capsearch server` shows runs in the "
               "Prefect UI once there are some.")
OTHER_DATABASE = "Prefect uses a database other than SQLite here: start `capsearch server` to see its runs"
STATE_STYLES = {"completed": "green", "failed": "red", "crashed": "bold red", "cancelled": "yellow",
                "running": "cyan", "pending": "dim", "scheduled": "dim"}


def _when(value: float | dt.datetime | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        value = dt.datetime.fromtimestamp(value)
    return value.astimezone().strftime("%Y-%m-%d %H:%M")


class RunsScreen(CapsearchScreen):
    MODE = "runs"
    HELP = ("Recent Prefect flow runs (state, stage, duration), from the Prefect server when one is configured, "
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
                                                          api_url=self.capsearch_app.prefect_api_url)))

    @on(FlowRunsLoaded)
    def _flow_runs_loaded(self, message: FlowRunsLoaded) -> None:
        p = self.prefect = message.flow_runs
        line = self.query_one("#prefect-line", Static)
        flow_runs = self.query_one("#flow-runs", DataTable)
        text = Text()
        if p.api_url is None:
            if p.database is None:
                text.append(OTHER_DATABASE, style="yellow")
            elif not p.runs:
                text.append(NO_DATABASE, style="yellow")
            else:
                text.append(LOCAL_NOTE.format(path=p.database), style="dim")
                text.append(f"\n{len(p.runs)} recent flow runs", style="dim")
        else:
            text.append("Prefect UI ", style="dim")
            text.append(p.ui_url or p.api_url, style="bold underline")
            text.append(f"  (API {p.api_url})", style="dim")
            text.append(f"\n{len(p.runs)} recent flow runs", style="dim")
        line.update(text)
        flow_runs.display = bool(p.runs)
        fill_table(flow_runs, FLOW_RUN_COLUMNS, [
            (r.name, r.flow, Text(r.state, style=STATE_STYLES.get(r.state.lower(), "")), r.stage,
             _when(r.started), format_seconds(r.seconds)) for r in p.runs])
        self._fill_stage_runs()

    @on(StageRunsLoaded)
    def _stage_runs_loaded(self, message: StageRunsLoaded) -> None:
        self.stage_runs = message.stage_runs
        self._fill_stage_runs()

    def _fill_stage_runs(self) -> None:
        """Each stage run with its flow run: by name when that run is among the recent ones, else by id."""
        names = {r.id: r.name for r in self.prefect.runs} if self.prefect is not None else {}
        rows = []
        for r in self.stage_runs or ():
            stage = f"{r.stage}:{r.variant}" if r.variant else r.stage
            took = (r.finished_at - r.started_at) if r.finished_at else None
            flow_run = r.flow_run_id or ""
            rows.append((stage, Text(r.status, style=STATE_STYLES.get(r.status, "")), str(r.done),
                         str(r.failed), _when(r.started_at), format_seconds(took),
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
            else:
                text.append("  (`capsearch server` shows it in the Prefect UI)", style="dim")
        detail.update(text)
