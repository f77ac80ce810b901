"""Pipeline: per-stage counts, launching runs, live progress, the log and the problems."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, OptionList, RichLog, Static, TabbedContent, TabPane
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState

from pipeline.runs import describe_run
from tui.failures import WorkerFailure
from tui.messages import RunFinished, RunSeen, StageProgressed
from tui.screens.base import CapsearchScreen
from tui.widgets.progress import ProgressPanel, format_seconds
from tui.widgets.tables import fill_table

if TYPE_CHECKING:
    from flows.runtime.detach import Detached
    from pipeline.stages.base import StageCounts
    from pipeline.status import StatusReport

LEVEL_STYLES = {"info": "", "warning": "yellow", "error": "bold red"}
STAGE_COLUMNS = [(key, key) for key in ("stage", "done", "missing", "failed", "total")]
PROBLEM_COLUMNS = [(key, key) for key in ("severity", "stage", "item", "reason")]
SEVERITY_STYLES = {"skipped": "yellow", "failed": "red", "repaired": "cyan", "warning": "yellow"}
FINISHED = (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED)


class StatusLoaded(Message):
    """Per-stage counts and problems from ``workspace_status``."""

    def __init__(self, status: StatusReport) -> None:
        super().__init__()
        self.status = status


@dataclass(frozen=True)
class RunRequest:
    """What the user asked to run."""

    stages: tuple[str, ...] | None = None       # None: the whole pipeline
    captioners: tuple[str, ...] | None = None   # None: the enabled captioners
    retry_failed: bool = False

    def describe(self) -> str:
        what = "the whole pipeline" if self.stages is None else ", ".join(self.stages)
        if self.captioners:
            what += f" for {', '.join(self.captioners)}"
        return what + (" (retrying failed items)" if self.retry_failed else "")


class RunStarted(Message):
    """This TUI asked for a run (it starts outside the TUI: ``flows.runtime.detach``)."""

    def __init__(self, request: RunRequest) -> None:
        super().__init__()
        self.request = request


class RunLaunched(Message):
    """The run this TUI asked for has started outside it (``flows.runtime.detach``)."""

    def __init__(self, request: RunRequest, detached: Detached) -> None:
        super().__init__()
        self.request = request
        self.detached = detached


class CancelSent(Message):
    """What ``x`` did: the run was asked to stop (a failure to ask goes the way of every worker's failure)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class CaptionerChooser(ModalScreen[str | None]):
    """Pick a configured captioner to run (its caption and embed-captions stages)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, names: list[str], enabled: list[str]) -> None:
        super().__init__()
        self.names = names
        self.enabled = enabled

    def compose(self) -> ComposeResult:
        with Vertical(id="chooser"):
            yield Label("Run which captioner? (enter runs it, escape closes)")
            yield OptionList(*[Option(f"{n}{'  (enabled)' if n in self.enabled else ''}", id=n) for n in self.names])

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class PipelineScreen(CapsearchScreen):
    MODE = "pipeline"
    HELP = ("Every stage with its done / missing / failed counts. Runs go on outside the TUI (a background "
            "capsearch process, or a run of the deployment `capsearch serve` serves), so quitting, closing the "
            "terminal or losing SSH leaves them running; the live bars show whatever run is going on in the "
            "workspace, whoever started it, and x stops it after the batches in flight.")
    BINDINGS = [
        Binding("r", "run_stage", "Run stage", tooltip="run the highlighted stage (its missing items only)"),
        Binding("a", "run_all", "Run all", tooltip="run the whole pipeline (only what is missing)"),
        Binding("c", "run_captioner", "Captioner",
                tooltip="choose a captioner and run its caption and embed-captions stages"),
        Binding("x", "cancel", "Cancel",
                tooltip="cancel the run going on in the workspace, whoever started it: it stops after the "
                        "batches in flight"),
        Binding("f", "retry_failed", "Retry failed", show=False,
                tooltip="run the highlighted stage again for its failed items too"),
        Binding("l", "toggle_pane", "Log/Problems", show=False,
                tooltip="switch the lower pane between the run log and the problems (failed or skipped items "
                        "with their reasons)"),
        Binding("u", "refresh", "Refresh", show=False, tooltip="read the counts from the store again"),
    ]
    LOADING_LINES = {"status": "#pipeline-summary"}

    def __init__(self) -> None:
        super().__init__()
        self.stage_labels: list[str] = []
        self.running = None            # the run going on in the workspace (pipeline.runs.RunInfo), whoever started it
        self.launching: RunRequest | None = None   # a run this TUI asked for that has not been seen running yet
        self.follower = None
        self.status: StatusReport | None = None
        self._status_loading = False
        self._status_again = False
        self._first_status_read = False

    def compose_body(self) -> ComposeResult:
        with Vertical(id="pipeline-body"):
            yield Static("loading the workspace…", id="pipeline-summary")
            yield DataTable(id="stages", cursor_type="row", zebra_stripes=True)
            yield ProgressPanel(id="progress")
            with TabbedContent(id="pane"):
                with TabPane("Log", id="log-tab"):
                    yield RichLog(id="log", wrap=True, markup=False, highlight=False, max_lines=2000, min_width=20)
                with TabPane("Problems", id="problems-tab"):
                    yield DataTable(id="problems", cursor_type="row")

    def on_mount(self) -> None:
        from tui.live import RunFollower

        self.query_one("#progress").display = False
        self.call_after_refresh(self.log_line, f"workspace {self.ws.name}: r runs the highlighted stage, "
                                "a the whole pipeline, c a captioner; ? lists every key")
        self.refresh_status()
        self.follower = RunFollower(self.ws, self.post_message)
        self.follower.start()
        self.capsearch_app.failed.subscribe(self, self._worker_failed)
        self._fill_problems()

    def on_unmount(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        if self.running is not None:
            # quitting leaves the run going on; the TUI says so when it exits (tui.launch.report_exit)
            self.capsearch_app.run_going_on_at_exit = self.running

    # -- status ------------------------------------------------------------------------------------
    def refresh_status(self) -> None:
        if self._status_loading:
            self._status_again = True
            return
        self._status_loading = True
        self._load_status()

    @work(thread=True, group="status", exit_on_error=False, description="reading the workspace's stages")
    def _load_status(self) -> None:
        from pipeline.status import workspace_status

        self.post_message(StatusLoaded(workspace_status(self.ws)))

    @on(Worker.StateChanged)
    def _worker_ended(self, event: Worker.StateChanged) -> None:
        """A status read ended (loaded, or failed: the app shows why): read again if asked meanwhile. A run
        that could not start is not starting any more."""
        group = event.worker.group
        if event.state not in FINISHED:
            return
        if group == "status":
            self._status_loading = False
            if not self._first_status_read:
                self._first_status_read = True
                self.capsearch_app.preload_search_index()
            if self._status_again:
                self._status_again = False
                self.refresh_status()
        elif group == "run" and event.state != WorkerState.SUCCESS:
            self.launching = None
            self._show_summary()

    @on(StatusLoaded)
    def _status_loaded(self, message: StatusLoaded) -> None:
        self.status = status = message.status
        self._show_summary()
        self.stage_labels = [s.stage for s in status.stages]
        fill_table(self.query_one("#stages", DataTable), STAGE_COLUMNS,
                   [self._cells(s) for s in status.stages], self.stage_labels)
        self._fill_problems()

    def _worker_failed(self, failure: WorkerFailure) -> None:
        self.log_line(failure.line(), "error")
        self._fill_problems()

    def _fill_problems(self) -> None:
        """The stages' problems (from the last status read), then what failed in the TUI itself."""
        status = self.status
        stages = status.stages if status is not None else ()
        problems = [(Text("error", style="bold red"), s.stage, "(the stage)", s.error) for s in stages if s.error]
        problems += [(Text("n/a", style="dim"), s.stage, "(the stage)", f"not applicable: {s.not_applicable}")
                     for s in stages if s.not_applicable]
        problems += [(Text(p.severity, style=SEVERITY_STYLES.get(p.severity, "")), p.stage, p.item, p.reason)
                     for p in (status.problems if status is not None else ())]
        problems += [(Text("error", style="bold red"), "(the TUI)", f.what, f.reason)
                     for f in self.capsearch_app.failures]
        fill_table(self.query_one("#problems", DataTable), PROBLEM_COLUMNS, problems)
        self.query_one(TabbedContent).get_tab("problems-tab").label = f"Problems ({len(problems)})"

    @staticmethod
    def _cells(s: StageCounts) -> tuple:
        if s.not_applicable:   # not a failure, not done: the reason is in the Problems pane
            dash = Text("–", style="dim")
            return Text(s.stage + " n/a", style="dim"), dash, dash, dash, dash
        failed = Text(str(s.failed), style="bold red") if s.failed else Text("0", style="dim")
        missing = Text(str(s.missing), style="yellow") if s.missing else Text("0", style="dim")
        stage = Text(s.stage)
        if s.error:
            stage.append(" !", style="red")
        elif s.total and not s.missing and not s.failed:
            stage.append(" ✓", style="green")
        return stage, Text(str(s.done)), missing, failed, Text(str(s.total))

    def _show_summary(self) -> None:
        status = self.status
        if status is None:
            return
        images = status.images
        if self.running is not None:
            state = f"running {self.running.what} (started by {self.running.started_by})"
        elif self.launching is not None:
            state = f"starting {self.launching.describe()}…"
        else:
            state = "idle"
        text = Text()
        text.append(f"{self.ws.name}", style="bold")
        text.append(f" · {status.profile} · {images.total} photos "
                    f"({images.reference} reference, {images.target} targets) · ")
        text.append(state, style="bold yellow" if state != "idle" else "green")
        self.query_one("#pipeline-summary", Static).update(text)

    # -- runs --------------------------------------------------------------------------------------
    def _selected_stage(self) -> tuple[str, str] | None:
        table = self.query_one("#stages", DataTable)
        if not self.stage_labels or table.cursor_row < 0:
            return None
        label = self.stage_labels[min(table.cursor_row, len(self.stage_labels) - 1)]
        name, _, variant = label.partition(":")
        return name, variant

    def action_run_stage(self) -> None:
        chosen = self._selected_stage()
        if chosen is None:
            self.notify("no stage selected", severity="warning")
            return
        name, variant = chosen
        self.start_run(RunRequest((name,), (variant,) if variant else None))

    def action_retry_failed(self) -> None:
        chosen = self._selected_stage()
        if chosen is None:
            return
        name, variant = chosen
        self.start_run(RunRequest((name,), (variant,) if variant else None, retry_failed=True))

    def action_run_all(self) -> None:
        self.start_run(RunRequest())

    def action_run_captioner(self) -> None:
        cfg = self.ws.config
        names = cfg.captioners.names()

        def chosen(name: str | None) -> None:
            if name:
                self.start_run(RunRequest(("caption", "embed-captions"), (name,)))

        self.app.push_screen(CaptionerChooser(names, cfg.enabled_captioners()), chosen)

    def start_run(self, request: RunRequest) -> None:
        what = (self.running.what if self.running is not None
                else self.launching.describe() if self.launching is not None else None)
        if what is not None:
            self.notify(f"a run is going on ({what}); x cancels it", severity="warning")
            return
        self.launching = request
        self.post_message(RunStarted(request))
        self._launch(request)

    @work(thread=True, group="run", exit_on_error=False, description="starting the run")
    def _launch(self, request: RunRequest) -> None:
        """Start the run outside the TUI (``flows.runtime.detach``): it goes on when the TUI is closed. It may not start
        (another run holds the workspace, the background process ended at once): the app shows why."""
        import os

        from flows.runtime.detach import start_detached
        from flows.workspace_run import user_name

        try:
            detached = start_detached(self.ws, request.stages, request.captioners, request.retry_failed,
                                      started_by=f"{user_name()} from the TUI (pid {os.getpid()})")
        finally:
            self._quiet_libraries()
        self.post_message(RunLaunched(request, detached))

    def _quiet_libraries(self) -> None:
        """Prefect, once imported (a run through `capsearch serve`, a cancel), logs to files only."""
        from tui.quiet import route_library_logging

        route_library_logging(self.capsearch_app.log_path)

    @on(RunLaunched)
    def _launched(self, message: RunLaunched) -> None:
        detached = message.detached
        if self.follower is not None:
            self.follower.launched(detached)
        self.log_line(f"started {detached.describe()}; it goes on if the TUI is closed")
        if detached.how == "deployment":
            self.log_line("waiting for `capsearch serve` to start it…")

    def action_cancel(self) -> None:
        pending = self.follower.pending if self.follower is not None else None
        if self.running is None and pending is None:
            self.notify("nothing is running")
            return
        self.log_line("cancelling: the run stops after the batches in flight", "warning")
        self._cancel(self.running, pending)

    @work(thread=True, group="cancel", exit_on_error=False, description="cancelling the run")
    def _cancel(self, running, pending) -> None:
        from flows.runtime.control import cancel_flow_run, cancel_run

        try:
            if running is not None:
                request = cancel_run(self.ws, running)
                self.post_message(CancelSent(request.message))
            elif pending is not None:
                state = cancel_flow_run(pending.api_url, pending.flow_run_id, "cancelled from the capsearch TUI")
                self.post_message(CancelSent(f"flow run {pending.flow_run_name}: {state}"))
        finally:
            self._quiet_libraries()

    @on(CancelSent)
    def _cancel_sent(self, message: CancelSent) -> None:
        self.log_line(message.text, "warning")

    def action_refresh(self) -> None:
        self.refresh_status()

    def action_toggle_pane(self) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = "problems-tab" if tabs.active == "log-tab" else "log-tab"

    @on(RunStarted)
    def _run_started(self, message: RunStarted) -> None:
        self.log_line(f"run: {message.request.describe()} (starting it outside the TUI…)")
        self._show_summary()

    @on(RunSeen)
    def _run_seen(self, message: RunSeen) -> None:
        run = message.run
        self.running = run
        self.launching = None
        panel = self.query_one("#progress", ProgressPanel)
        panel.reset()
        panel.display = True
        self.log_line(f"a run is going on: {describe_run(run)}")
        self._show_summary()

    @on(StageProgressed)
    def _progressed(self, message: StageProgressed) -> None:
        event = message.event
        if event.kind == "message":
            self.log_line(f"{event.stage}: {event.message}", event.level)
            return
        panel = self.query_one("#progress", ProgressPanel)
        before = panel.bar_event(event.stage)
        panel.show_event(event)
        if event.kind == "not-applicable" and (before is None or before.kind != "not-applicable"):
            self.log_line(f"{event.stage}: not applicable: {event.message}", "info")
        if event.kind == "finish" and (before is None or before.kind != "finish"):
            self.capsearch_app.data_version += 1
            line = event.message or f"{event.stage}: {event.done} done"
            self.log_line(line, "warning" if event.failures else "info")
            self.refresh_status()

    @on(RunFinished)
    def _run_finished(self, message: RunFinished) -> None:
        self.capsearch_app.data_version += 1
        self.running = None
        self.launching = None
        outcome = message.outcome
        took = format_seconds(outcome.seconds)
        if outcome.status == "completed":
            failed = outcome.failed_items
            extra = f", {failed} items failed (see Problems)" if failed else ""
            self.log_line(f"run completed in {took}{extra}", "warning" if failed else "info")
            self.notify(f"run completed in {took}{extra}")
        elif outcome.status == "cancelled":
            self.log_line(f"run cancelled after {took}; finished batches are kept", "warning")
            self.notify("run cancelled", severity="warning")
        else:
            self.log_line(f"run {outcome.status} after {took}: {outcome.error}", "error")
            self.notify(f"run {outcome.status}: {outcome.error}", severity="error", timeout=10)
        self._show_summary()
        self.refresh_status()

    # -- log ---------------------------------------------------------------------------------------
    def log_line(self, text: str, level: str = "info") -> None:
        self.query_one("#log", RichLog).write(Text(text, style=LEVEL_STYLES.get(level, "")), expand=True)
