"""The TUI in a terminal never swallows a key and never keeps a person waiting: a key typed while it starts does what
the footer says once the screen is up, and q returns to the shell even while a background read waits."""
from __future__ import annotations

import shutil
import sqlite3
import sys
import time

import pytest

from tests.fixtures.pty_terminal import PtyTerminal
from tui.terminal import parse

pytestmark = pytest.mark.filterwarnings("ignore:Image.Image.getdata:DeprecationWarning")


def tui_command(ws, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tui", "--workspace", str(ws.root), *extra]


def test_the_terminals_answers_are_told_apart_from_what_was_typed():
    typed = b"4\x1b[A"                                          # a key and an arrow, before and between the answers
    answers = parse(typed[:1] + b"\x1b[6;20;10t\x1b_Gi=31;OK\x1b\\" + typed[1:] + b"\x1b[?62;4;22c")
    assert answers.typed == typed
    assert (answers.cell, answers.sixel, answers.kitty_graphics) == ((10, 20), True, True)
    assert answers.image_mode == "sixel"
    plain = parse(b"\x1b[?1;2cq")
    assert (plain.typed, plain.sixel, plain.image_mode) == (b"q", False, "halfcell")


@pytest.mark.parametrize("key, shows", [(b"4", "MedR"), (b"2", "target photos")])
def test_a_key_typed_while_the_tui_starts_does_what_the_footer_says(tui_workspace, key, shows):
    """Typed before the app draws anything (while photos' drawing is set up): the Evaluation or Captions screen
    opens, not the help screen."""
    with PtyTerminal(tui_command(tui_workspace, "--images", "auto")) as term:
        term.type(key)
        term.wait_for(shows, timeout=90)
        term.pump(0.5)
        assert "capsearch keys" not in term.text(), "the help screen opened"
        term.type(b"q")
        assert term.wait_exit(30) == 0


def test_q_returns_to_the_shell_while_a_background_read_waits(tui_workspace, tmp_path):
    """Another process holds the workspace's database (its reads wait up to a minute): the stage counts cannot be
    read, and q still ends the TUI at once instead of waiting for the read."""
    root = tmp_path / "demo"
    shutil.copytree(tui_workspace.root, root, ignore=shutil.ignore_patterns("logs"))
    holder = sqlite3.connect(root / "capsearch.db", isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("CREATE TABLE held_by_the_test (x)")   # a write: the exclusive lock is held until rollback
        with PtyTerminal([sys.executable, "-m", "tui", "--workspace", str(root), "--images", "none"]) as term:
            term.wait_for("1 Pipeline", timeout=60)
            term.wait_for("loading the workspace", timeout=30)
            term.pump(1.0)
            assert "ingest" not in term.text(), "the counts were read: the database was not held"
            pressed = time.perf_counter()
            term.type(b"q")
            code = term.wait_exit(20)
            took = time.perf_counter() - pressed
            assert code == 0, f"the TUI did not end within 20 s of q (the read waits {took:.0f} s)"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
