"""SPICE (Anderson et al., 2016), only where its Stanford CoreNLP models are installed.

pycocoevalcap ships ``spice-1.0.jar`` but downloads the CoreNLP 3.6.0 jars it needs on first use; offline
(and on this project's machines) they are absent, so SPICE is reported as not computed, with the reason,
and nothing is downloaded. Where they are present, the jar runs as pycocoevalcap runs it (``-subset
-silent``), with its input and output files in a private temporary folder.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.caption_metrics.java import JavaError, jar, java_runtime

CORENLP = "stanford-corenlp-3.6.0"


def spice_unavailable() -> str | None:
    """Why SPICE cannot run here (None: it can)."""
    java, why = java_runtime()
    if java is None:
        return why
    lib = jar("spice", "lib")
    missing = [name for name in (f"{CORENLP}.jar", f"{CORENLP}-models.jar") if not (lib / name).exists()]
    if missing:
        return (f"its Stanford CoreNLP {CORENLP.rsplit('-', 1)[-1]} models are not installed (pycocoevalcap "
                f"downloads {', '.join(missing)} into {lib} on first use, which needs the network)")
    return None


def spice(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    """Per-photo SPICE F-scores (NaN where SPICE gives none)."""
    java, why = java_runtime()
    if java is None:
        raise JavaError(f"SPICE needs Java: {why}")
    path = jar("spice", "spice-1.0.jar")
    with tempfile.TemporaryDirectory(prefix="capsearch-spice-") as tmp:
        src, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps([{"image_id": i, "test": h, "refs": list(r)}
                                   for i, (h, r) in enumerate(zip(hypotheses, references))]), encoding="utf-8")
        # SPICE reads files, not stdin, so it would not notice a dead parent: where util-linux's setpriv exists,
        # the kernel kills it when the thread that started it dies (PR_SET_PDEATHSIG), even by SIGKILL.
        guard = [setpriv, "--pdeathsig", "KILL", "--"] if (setpriv := shutil.which("setpriv")) else []
        proc = subprocess.Popen([*guard, java, "-jar", "-Xmx8G", path.name, str(src), "-out", str(out), "-subset",
                                 "-silent"], cwd=path.parent, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            log, _ = proc.communicate()
        finally:
            if proc.poll() is None:          # interrupted: never leave the JVM running
                proc.kill()
                proc.wait()
        if proc.returncode != 0 or not out.exists():
            tail = log.decode(errors="replace").strip()[-600:]
            raise JavaError(f"SPICE failed (exit code {proc.returncode}): {tail}")
        results = json.loads(out.read_text(encoding="utf-8"))
    scores = np.full(len(hypotheses), np.nan)
    for item in results:
        try:
            scores[int(item["image_id"])] = float(item["scores"]["All"]["f"])
        except (KeyError, TypeError, ValueError):
            pass
    return scores
