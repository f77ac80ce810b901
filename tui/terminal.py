"""The real terminal before the app owns it: what it can draw, asked in one round trip, and the keys typed meanwhile,
handed to the app instead of lost.

textual-image asks the terminal its questions (sixel? the kitty graphics protocol? a cell's size in pixels?) when it
is imported, one at a time, reading the answers from stdin a byte at a time. A key pressed during start-up was read
as the first byte of an answer, so the key was lost and the terminal's real answer (``ESC [ ? 62 ; 22 c``) stayed
in the input, where Textual read its tail as keys: ``?`` opened the help screen, whatever was pressed.

Here (``ask_terminal``) the questions the chosen way of drawing photos needs are written at once, followed by a
request for the device attributes (DA1), which every terminal answers, and answers in order: its answer ends the
exchange. Every answer is taken out of what arrived; the rest is what the person typed, and ``terminal_driver``'s
driver gives it to Textual before anything it reads itself. textual-image is then imported with stdout pointed away
from the terminal, so that it asks nothing (``import_image_library``), and is told the cell size through its own
environment variables; the app draws photos with the class the answers call for (``TerminalAnswers.image_mode``).
"""
from __future__ import annotations

import os
import re
import select
import struct
import sys
import termios
import time
import tty
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, TextIO

if TYPE_CHECKING:
    from textual.drivers.linux_driver import LinuxDriver

DEVICE_ATTRIBUTES = b"\x1b[c"                                         # DA1: every terminal answers ESC [ ? ... c
CELL_SIZE = b"\x1b[16t"                                               # answered ESC [ 6 ; height ; width t
KITTY_GRAPHICS = b"\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA\x1b\\"       # answered ESC _ G i=31;OK ESC \ if supported
ANSWERS = re.compile(rb"\x1b\[\?(?P<da1>[\d;]*)c|\x1b\[6;(?P<height>\d+);(?P<width>\d+)t|\x1b_G(?P<kitty>[^\x1b]*)\x1b\\")
WAIT_SECONDS = 0.5     # for a terminal that does not answer at all (every VT100-like one does, within a round trip)


@dataclass(frozen=True)
class TerminalAnswers:
    """What the terminal said (nothing, when it was not asked) and what was typed while it was asked."""

    cell: tuple[int, int] | None = None      # a character cell's width and height in pixels
    sixel: bool = False
    kitty_graphics: bool = False
    typed: bytes = b""

    @property
    def image_mode(self) -> str:
        """The best way the terminal draws photos, in textual-image's order of preference."""
        return "sixel" if self.sixel else "tgp" if self.kitty_graphics else "halfcell"


def window_cell(fd: int) -> tuple[int, int] | None:
    """A cell's size in pixels from the kernel's window size (None when the terminal does not fill in pixels)."""
    import fcntl

    try:
        rows, cols, width, height = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    if rows and cols and width and height:
        return width // cols, height // rows
    return None


def parse(data: bytes) -> TerminalAnswers:
    """The answers in ``data`` and, apart, every other byte (what was typed), in order."""
    cell, sixel, kitty = None, False, False
    typed, last = bytearray(), 0
    for m in ANSWERS.finditer(data):
        typed += data[last:m.start()]
        last = m.end()
        if m["da1"] is not None:
            sixel = "4" in m["da1"].decode().split(";")
        elif m["kitty"] is not None:
            kitty = m["kitty"].decode(errors="replace").rsplit(";", 1)[-1] == "OK"
        else:
            cell = (int(m["width"]), int(m["height"]))
    typed += data[last:]
    return TerminalAnswers(cell, sixel, kitty, bytes(typed))


def ask_terminal(fd_in: int, fd_out: int, *, graphics: bool, cell: bool, wait: float = WAIT_SECONDS) -> TerminalAnswers:
    """Ask the terminal on ``fd_in``/``fd_out`` whether it draws sixel or kitty graphics (``graphics``) and a cell's
    size (``cell``, unless the window size has it), in one round trip; nothing is asked when nothing is needed or
    either side is not a terminal. Keys typed before the answers came are in ``typed``."""
    if not (os.isatty(fd_in) and os.isatty(fd_out)):
        return TerminalAnswers()
    known = window_cell(fd_out)
    questions = (CELL_SIZE if cell and known is None else b"") + (KITTY_GRAPHICS if graphics else b"")
    if not questions:
        return TerminalAnswers(cell=known)
    saved = termios.tcgetattr(fd_in)
    data = b""
    try:
        tty.setcbreak(fd_in, termios.TCSANOW)        # no echo, every byte readable at once (typed ones too)
        os.write(fd_out, questions + DEVICE_ATTRIBUTES)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd_in], [], [], left)
            if not ready:
                break
            chunk = os.read(fd_in, 4096)
            if not chunk:
                break
            data += chunk
            if any(m["da1"] is not None for m in ANSWERS.finditer(data)):
                break                                  # the last answer: the terminal has said everything
    finally:
        termios.tcsetattr(fd_in, termios.TCSANOW, saved)
    answers = parse(data)
    return TerminalAnswers(answers.cell or known, answers.sixel, answers.kitty_graphics, answers.typed)


@contextmanager
def stdout_elsewhere() -> Iterator[None]:
    """File descriptor 1 points at /dev/null meanwhile (it is not a terminal, so nothing asks it questions)."""
    for stream in (sys.stdout, sys.__stdout__):
        try:
            if stream is not None:
                stream.flush()
        except (ValueError, OSError):
            pass
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def import_image_library(answers: TerminalAnswers) -> None:
    """Import textual-image without its questions to the terminal (they race the keyboard): the cell size goes
    through its environment variables (``TEXTUAL_CELL_WIDTH`` / ``_HEIGHT``); with none known it assumes 10x20."""
    if answers.cell is not None:
        os.environ["TEXTUAL_CELL_WIDTH"], os.environ["TEXTUAL_CELL_HEIGHT"] = (str(n) for n in answers.cell)
    if "textual_image.widget" in sys.modules:
        return
    with stdout_elsewhere():
        import textual_image.widget  # noqa: F401


def terminal_driver(terminal: TextIO | None = None, typed: bytes = b"") -> type[LinuxDriver]:
    """Textual's Linux driver, drawing to ``terminal`` (when fds 1 and 2 point elsewhere: ``tui.quiet``) and reading
    ``typed`` (keys pressed while the terminal was asked its questions) before the keyboard."""
    from textual.drivers.linux_driver import LinuxDriver

    class CapsearchDriver(LinuxDriver):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if terminal is not None:
                self._file = terminal

        def _get_terminal_size(self) -> tuple[int, int]:
            if terminal is not None:
                try:
                    size = os.get_terminal_size(terminal.fileno())
                    return size.columns or 80, size.lines or 25
                except OSError:
                    pass
            return super()._get_terminal_size()

        def run_input_thread(self) -> None:
            """The typed keys first (the input thread starts after the first size event, as the keyboard's would
            come), through the parser Textual reads the keyboard with, then the keyboard."""
            if typed:
                from textual._xterm_parser import XTermParser   # Textual's own reader of terminal input

                parser = XTermParser(self._debug)
                for event in [*parser.feed(typed.decode("utf-8", errors="replace")), *parser.feed("")]:
                    self.process_message(event)
            super().run_input_thread()

    return CapsearchDriver
