"""Prefect set-up: settings, logs off the terminal, the one-time migration, `capsearch server`, deployments."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from flows.runtime import settings
from flows.runtime.settings import ServerRecord, apply_settings, read_server_record, write_server_record
from pipeline.errors import ConfigError
from tests.fixtures.workspaces import make_workspace

REPO = Path(__file__).resolve().parents[1]
CAPSEARCH = [sys.executable, "-c", "from capsearch.cli import main; main()"]


def test_settings_put_prefect_home_under_capsearch_home_and_keep_user_values(tmp_path):
    env = {"CAPSEARCH_HOME": str(tmp_path)}
    set_now = apply_settings(env)
    home = tmp_path / ".prefect"
    assert env["PREFECT_HOME"] == str(home) and set_now["PREFECT_HOME"] == str(home)
    assert env["DO_NOT_TRACK"] == "1" and env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert float(env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) >= 120
    logging_yml = Path(env["PREFECT_LOGGING_SETTINGS_PATH"]).read_text()
    assert str(home / "logs" / "prefect.log") in logging_yml
    assert "PrefectConsoleHandler" not in logging_yml and "sys.stderr" not in logging_yml
    assert "PREFECT_API_URL" not in env

    mine = {"CAPSEARCH_HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "mine"), "DO_NOT_TRACK": "0",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600"}
    apply_settings(mine)
    assert mine["PREFECT_HOME"] == str(tmp_path / "mine") and mine["DO_NOT_TRACK"] == "0"
    assert mine["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "600"


def test_runs_report_to_a_recorded_server_only_while_it_is_up(tmp_path):
    home = tmp_path / "prefect"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        record = ServerRecord(f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}", os.getpid(), "127.0.0.1", port)
        write_server_record(record, home)
        env = {"PREFECT_HOME": str(home)}
        apply_settings(env)
        assert env["PREFECT_API_URL"] == record.api_url
        user = {"PREFECT_HOME": str(home), "PREFECT_API_URL": "http://elsewhere:4200/api"}
        apply_settings(user)
        assert user["PREFECT_API_URL"] == "http://elsewhere:4200/api"
    gone = {"PREFECT_HOME": str(home)}
    apply_settings(gone)
    assert "PREFECT_API_URL" not in gone


def test_server_refuses_a_public_host_without_the_flag():
    from flows.runtime.server import check_host

    assert check_host("127.0.0.1", False) is None
    with pytest.raises(ConfigError, match="--allow-remote"):
        check_host("0.0.0.0", False)
    assert "without authentication" in check_host("0.0.0.0", True)


@pytest.mark.slow
def test_capsearch_server_serves_the_ui_and_later_runs_report_to_it(tmp_path, monkeypatch):
    from flows.runtime.server import start_server
    from flows.runtime.server import free_port

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    handle = start_server("127.0.0.1", free_port())
    try:
        record = read_server_record()
        assert record == handle.record and record.is_alive()
        assert httpx.get(f"{record.api_url}/health", timeout=10).status_code == 200
        page = httpx.get(record.ui_url, timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        entry = ("from flows.runtime.settings import apply_settings, configured_api_url; apply_settings(); "
                 "print(configured_api_url())")
        child = subprocess.run([sys.executable, "-c", entry],
                               cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                               timeout=60)
        assert child.stdout.strip() == record.api_url
    finally:
        handle.stop()
    assert read_server_record() is None


@pytest.mark.slow
def test_init_migrates_prefect_once_and_runs_keep_prefect_logs_off_the_terminal(tmp_path):
    """`capsearch init` in a fresh home prepares the Prefect database; `capsearch run` prints only its own output."""
    from tests.fixtures.flow_stages import demo_data

    from pipeline.datasets.demo import generate_demo_world

    world = tmp_path / "world"
    generate_demo_world(world, n_images=24, seed=7)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(CAPSEARCH_HOME=str(tmp_path), PYTHONPATH=str(REPO), COLUMNS="120")
    init = subprocess.run([*CAPSEARCH, "-w", "outputs/ws", "init"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert init.returncode == 0, init.stderr
    assert "Prefect database ready" in init.stdout
    db = tmp_path / ".prefect" / "prefect.db"
    import sqlite3

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()
        assert conn.execute("SELECT COUNT(*) FROM block_type").fetchone()[0] > 0

    make_workspace(tmp_path / "outputs" / "ws", data={**demo_data(world), "demo_images": 24, "n_targets": 8},
                   orchestration={"batch_size": 8})
    ran = subprocess.run([*CAPSEARCH, "-w", "outputs/ws", "run", "--stage", "ingest"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    terminal = ran.stdout + ran.stderr
    # ingest is cheap: one task for all 24 photos, computed (nothing was cached before)
    assert "1 stage: 1 batch computed, 0 reused from the cache" in terminal, terminal
    for prefect_line in ("Beginning flow run", "Finished in state", "temporary server", "prefect.", "| INFO"):
        assert prefect_line not in terminal
    log = (tmp_path / ".prefect" / "logs" / "prefect.log").read_text()
    assert "Beginning flow run" in log and "Finished in state Completed" in log


def test_serve_registers_the_nightly_deployment_with_the_configured_schedule(tmp_path, prefect_harness):
    from prefect.client.orchestration import get_client

    from flows.deployments import build_deployments, register
    from flows.naming import nightly_deployment_name, workspace_id
    from pipeline.workspace import Workspace

    ws = make_workspace(tmp_path / "night", orchestration={"schedule_cron": "30 3 * * 1-5",
                                                            "schedule_timezone": "Europe/Berlin",
                                                            "watch_folder": str(tmp_path / "inbox")})
    assert nightly_deployment_name(ws) == f"nightly-{workspace_id(ws)}" and workspace_id(ws).startswith("night-")
    (ids,) = [register(build_deployments(ws))]
    other = register(build_deployments(Workspace(ws.root), cron="0 1 * * *", timezone="UTC"))
    assert other == ids, "registering again updates the same deployment"
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"capsearch-pipeline/{nightly_deployment_name(ws)}")
    assert deployment.id == ids[0]
    (schedule,) = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 1 * * *", "UTC")
    assert deployment.parameters["workspace"] == str(ws.root)
    assert deployment.parameters["data_path"] == str(tmp_path / "inbox")
    assert deployment.entrypoint == "flows.pipeline_flow.pipeline"
    assert set(deployment.tags) >= {"capsearch", "nightly", f"workspace:{workspace_id(ws)}", "profile:lite"}

    register(build_deployments(ws))
    with get_client(sync_client=True) as client:
        (schedule,) = client.read_deployment_by_name(f"capsearch-pipeline/{nightly_deployment_name(ws)}").schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 3 * * 1-5", "Europe/Berlin")
    with pytest.raises(ConfigError, match="schedule_cron"):
        build_deployments(ws, cron="every night")


def test_settings_module_does_not_import_prefect():
    out = subprocess.run([sys.executable, "-c", "import sys, flows, flows.runtime.settings; print('prefect' in sys.modules)"],
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    assert settings.applied() is not None


def test_the_served_ui_asks_its_api_where_the_server_listens():
    """`capsearch server --port 4288`: the UI's API address follows (it stayed at 4200 before); a UI address the
    user set (a reverse proxy) is kept. The served UI is checked for real in tests/test_detached_runs.py."""
    from flows.runtime.server import server_environment

    base = {"PATH": "/usr/bin", "PREFECT_API_URL": "http://elsewhere:4200/api"}
    env = server_environment("127.0.0.1", 4288, "http://127.0.0.1:4288", base)
    assert env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4288/api"
    assert (env["PREFECT_SERVER_API_HOST"], env["PREFECT_SERVER_API_PORT"]) == ("127.0.0.1", "4288")
    assert "PREFECT_API_URL" not in env, "the server serves its own API, not another one"
    proxied = server_environment("0.0.0.0", 4288, "http://box:4288",
                                 {**base, "PREFECT_UI_API_URL": "https://photos.example.org/prefect/api"})
    assert proxied["PREFECT_UI_API_URL"] == "https://photos.example.org/prefect/api"
