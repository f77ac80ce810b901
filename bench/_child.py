"""Run a command as a child and exit with its status: ``python -m flows.runtime.parent_watch PID bench._child CMD ...``.

Started with ``start_new_session``, the watcher leads a process group holding this module and the command, and
stops the whole group when the benchmark that started it dies, even by SIGKILL (``flows.runtime.parent_watch``), so a
server a benchmark starts (``vllm serve``) never outlives it."""
from __future__ import annotations

import subprocess
import sys

if __name__ == "__main__":
    sys.exit(subprocess.call(sys.argv[1:]))
