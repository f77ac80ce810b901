"""The CLI end to end on the demo world in a temporary workspace."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.cli import run_cli
from tests.fixtures.photos import make_photo


def test_init_writes_commented_config_and_store(home, capsys):
    code, out, _ = run_cli(capsys, "init", "--workspace", str(home / "ws"), "--profile", "full")
    assert code == 0
    text = (home / "ws" / "capsearch.toml").read_text()
    assert 'profile = "full"' in text and "# neighbours per target" in text
    assert (home / "ws" / "capsearch.db").exists()
    code, out, _ = run_cli(capsys, "init", "--workspace", str(home / "ws"))
    assert code == 0 and "left as it is" in out
    assert 'profile = "full"' in (home / "ws" / "capsearch.toml").read_text()


def test_config_show_masks_secrets_and_applies_env(home, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-topsecret-123456")
    monkeypatch.setenv("CAPSEARCH_NEIGHBOURS__K", "9")
    code, out, _ = run_cli(capsys, "config", "show", "--workspace", str(home / "ws"))
    assert code == 0
    assert "k = 9" in out and "topsecret" not in out and "OPENAI_API_KEY: set" in out
    code, out, _ = run_cli(capsys, "config", "show", "--json", "--workspace", str(home / "ws"))
    data = json.loads(out)
    assert data["config"]["neighbours"]["k"] == 9 and "topsecret" not in out


def test_data_demo_then_status(home, capsys):
    ws = home / "outputs" / "demo"
    code, out, err = run_cli(capsys, "--workspace", str(ws), "data", "demo", "--images", "60")
    assert code == 0, err
    assert "demo world: 60 photos" in out and "ingested 60 photos" in out
    assert (home / "data" / "demo" / "Flickr8k.token.txt").exists()
    code, out, _ = run_cli(capsys, "status", "--json", "--workspace", str(ws))
    report = json.loads(out)
    ingest = next(s for s in report["stages"] if s["stage"] == "ingest")
    assert ingest["done"] == 60 and ingest["missing"] == 0 and ingest["failed"] == 0
    assert report["images"]["target"] + report["images"]["reference"] == 60
    code, out, _ = run_cli(capsys, "status", "--workspace", str(ws))
    assert code == 0 and "ingest" in out and "60" in out


def test_data_folder_and_status_lists_skipped(home, capsys):
    photos = home / "photos"
    make_photo(photos / "a b.jpg")
    make_photo(photos / "ü.png", (10, 200, 10))
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    code, out, err = run_cli(capsys, "data", "folder", str(photos), "--workspace", str(home / "ws"))
    assert code == 0, err
    assert "ingested 2 photos" in out and "1 items skipped" in out
    code, out, _ = run_cli(capsys, "status", "--workspace", str(home / "ws"))
    assert "broken.jpg" in out and "not an image" in out


def test_errors_are_one_line_with_nonzero_exit(home, capsys):
    code, out, err = run_cli(capsys, "data", "folder", str(home / "nope"), "--workspace", str(home / "ws"))
    assert code == 1
    assert "error:" in err and "does not exist" in err and "Traceback" not in err + out
    code, _, err = run_cli(capsys, "init", "--profile", "huge", "--workspace", str(home / "ws"))
    assert code == 1 and "profile 'huge'" in err
    code, _, err = run_cli(capsys, "no-such-command")
    assert code == 2


@pytest.mark.parametrize("variable", ["CAPSEARCH_DEBUG", "CAPSEARCH_CLI__DEBUG"])
def test_debug_from_the_environment_shows_the_traceback_even_when_the_configuration_is_broken(
        home, capsys, monkeypatch, variable):
    from pipeline.errors import CapsearchError

    monkeypatch.setenv(variable, "1")
    with pytest.raises(CapsearchError, match="does not exist"):        # raised, not a one-line message
        run_cli(capsys, "data", "folder", str(home / "nope"), "--workspace", str(home / "ws"))
    (home / "outputs" / "default").mkdir(parents=True)
    (home / "outputs" / "default" / "capsearch.toml").write_text("profile = [unclosed")
    with pytest.raises(CapsearchError, match="not valid TOML"):
        run_cli(capsys, "status")
    monkeypatch.setenv(variable, "0")
    code, _, err = run_cli(capsys, "status")
    assert code == 1 and "not valid TOML" in err


def test_debug_in_the_workspace_configuration(home, capsys):
    from pipeline.config_file import update_config_file
    from pipeline.errors import CapsearchError

    update_config_file(home / "outputs" / "default" / "capsearch.toml", {"cli": {"debug": True}})
    with pytest.raises(CapsearchError, match="does not exist"):
        run_cli(capsys, "data", "folder", str(home / "nope"))


@pytest.mark.parametrize("argv", [[], ["init"], ["config", "show"], ["data"], ["data", "demo"], ["data", "flickr8k"],
                                  ["data", "folder"], ["status"], ["demo"]])
def test_help_on_every_command(capsys, argv):
    code, out, _ = run_cli(capsys, *argv, "--help")
    assert code == 0 and "Usage" in out


def test_console_script_exit_code_and_no_traceback(home):
    exe = Path(sys.executable).with_name("capsearch")
    proc = subprocess.run([str(exe), "data", "folder", str(home / "missing")], capture_output=True, text=True,
                          env={**os.environ, "CAPSEARCH_HOME": str(home)}, timeout=120)
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_data_demo_regenerates_only_when_settings_change(home, capsys):
    ws = str(home / "ws")
    run_cli(capsys, "data", "demo", "--images", "40", "--workspace", ws)
    code, out, _ = run_cli(capsys, "data", "demo", "--images", "40", "--workspace", ws)
    assert code == 0 and "already at" in out
    code, out, _ = run_cli(capsys, "data", "demo", "--images", "50", "--workspace", ws)
    assert code == 0 and "demo world: 50 photos" in out and "ingested 50 photos" in out


def test_status_on_a_fresh_workspace_writes_nothing(home, capsys):
    run_cli(capsys, "init", "--workspace", str(home / "ws"))
    code, out, _ = run_cli(capsys, "status", "--json", "--workspace", str(home / "ws"))
    assert code == 0
    ingest = next(s for s in json.loads(out)["stages"] if s["stage"] == "ingest")
    assert "not generated yet" in ingest["error"] and "capsearch data demo" in ingest["error"]
    assert not (home / "data" / "demo").exists()


@pytest.mark.parametrize("argv", [["status"], ["search", "a dog"], ["run"], ["queries"], ["embed-images"], ["tui"]])
def test_commands_refuse_a_workspace_that_does_not_exist(home, capsys, argv):
    """A mistyped -w names the path and how to create a workspace; nothing is created there."""
    typo = home / "outputs" / "dmeo"
    code, out, err = run_cli(capsys, *argv, "--workspace", str(typo))
    assert code == 1, out + err
    assert f"no workspace at {typo}" in err and "capsearch init" in err and "Traceback" not in err
    assert not typo.exists() and not (home / "outputs").exists()


def test_a_foreign_sqlite_file_is_refused_by_name(home, capsys):
    import sqlite3

    ws = home / "ws"
    ws.mkdir()
    with sqlite3.connect(ws / "capsearch.db") as conn:
        conn.execute("CREATE TABLE meta (k TEXT)")
        conn.execute("CREATE TABLE photos (id TEXT)")
    before = (ws / "capsearch.db").read_bytes()
    code, _, err = run_cli(capsys, "status", "--workspace", str(ws))
    assert code == 1
    assert "another program" in err and "meta, photos" in err and "not a capsearch store" in err
    assert "already exists" not in err and "Traceback" not in err
    assert (ws / "capsearch.db").read_bytes() == before   # left alone
    (ws / "capsearch.db").write_bytes(b"not sqlite at all " * 100)
    code, _, err = run_cli(capsys, "status", "--workspace", str(ws))
    assert code == 1 and "not a capsearch store (not an SQLite database)" in err
