"""The Java programs of the COCO caption evaluation code (``pycocoevalcap``), run as child processes we own.

pycocoevalcap ships the jars (Stanford CoreNLP 3.4.1 for PTB tokenisation, METEOR 1.5, SPICE 1.0) and
starts ``java`` itself, writing temporary files into its own package folder (not writable in a system
install) and leaving the METEOR process to ``__del__``. capsearch runs the same jars with the same
command lines, but:

* every process is started with ``subprocess.Popen`` without ``preexec_fn`` (so it is spawned, never a
  Python-level fork of this threaded process) and with its input on a pipe;
* it is stopped on every exit path (``JavaProcess`` is a context manager: closes stdin, waits briefly,
  kills) and, because both programs read their input from stdin, a child whose parent died (even by
  SIGKILL) reads end-of-file and exits by itself;
* temporary files go to a private temporary folder, never into site-packages;
* stderr is captured and shown only when the program fails.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
from functools import lru_cache
from pathlib import Path
from typing import IO, Sequence

from pipeline.config import environment
from pipeline.errors import CapsearchError

STOP_TIMEOUT = 5.0


class JavaError(CapsearchError):
    """A Java program of the caption evaluation failed (its stderr is in the message)."""


def pycocoevalcap_dir() -> Path:
    """The installed pycocoevalcap package folder (a namespace package: no ``__init__.py``)."""
    import importlib.util

    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise CapsearchError("pycocoevalcap is not installed (pip install pycocoevalcap)")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def jar(*parts: str) -> Path:
    """A file inside the installed pycocoevalcap package (e.g. ``jar("meteor", "meteor-1.5.jar")``)."""
    return pycocoevalcap_dir().joinpath(*parts)


@lru_cache(maxsize=4)
def _java_for(candidate: str) -> tuple[str | None, str]:
    path = shutil.which(candidate)
    if path is None:
        return None, f"no Java runtime: `{candidate}` is not on PATH (install a headless JRE, e.g. default-jre-headless)"
    try:
        done = subprocess.run([path, "-version"], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"`{path} -version` failed: {exc}"
    if done.returncode != 0:
        return None, f"`{path} -version` exited with {done.returncode}: {done.stderr.decode(errors='replace')[:200]}"
    version = (done.stderr or done.stdout).decode(errors="replace").splitlines()
    return path, version[0] if version else "java"


def java_runtime() -> tuple[str | None, str]:
    """(path of a working ``java``, its version line) or (None, why there is none)."""
    return _java_for(environment().java or "java")


def java_path() -> str | None:
    return java_runtime()[0]


class JavaProcess:
    """A Java program with stdin/stdout pipes, stopped when the ``with`` block ends, however it ends."""

    def __init__(self, args: Sequence[str], cwd: Path, name: str):
        java = java_path()
        if java is None:
            raise JavaError(f"{name} needs Java: {java_runtime()[1]}")
        self.name = name
        self.args = [java, *args]
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: list[bytes] = []
        self._stderr_thread: threading.Thread | None = None

    def __enter__(self) -> "JavaProcess":
        self.proc = subprocess.Popen(self.args, cwd=self.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, close_fds=True)
        # Drain stderr in the background so a chatty program never blocks on a full pipe.
        self._stderr_thread = threading.Thread(target=self._drain, args=(self.proc.stderr,),
                                               name=f"{self.name}-stderr", daemon=True)
        self._stderr_thread.start()
        return self

    def _drain(self, pipe: IO[bytes] | None) -> None:
        if pipe is None:
            return
        for line in iter(pipe.readline, b""):
            if len(self._stderr) < 200:
                self._stderr.append(line)

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc is not None and self.proc.stdin is not None
        return self.proc.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout

    def stderr_text(self) -> str:
        return b"".join(self._stderr).decode(errors="replace").strip()

    def fail(self, what: str) -> JavaError:
        """An error naming the program, what went wrong and the end of its stderr."""
        code = self.proc.poll() if self.proc is not None else None
        tail = self.stderr_text()[-600:]
        exit_note = f" (exit code {code})" if code is not None else ""
        return JavaError(f"{self.name}: {what}{exit_note}" + (f": {tail}" if tail else ""))

    def readline(self) -> str:
        line = self.stdout.readline()
        if not line:
            if self._stderr_thread is not None:
                self._stderr_thread.join(timeout=1.0)
            raise self.fail("ended before answering")
        return line.decode("utf-8", errors="replace").rstrip("\n")

    def close(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        try:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        finally:
            # the program has ended: let the stderr thread read to the end before its pipe is closed under
            # it (closing a pipe another thread is reading raises in that thread)
            if self._stderr_thread is not None:
                self._stderr_thread.join(timeout=STOP_TIMEOUT)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:
                        pass

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
        self.close()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.kill()      # interrupted or failed: do not wait for the program to finish its input
