"""Rescanning an unchanged photo folder: what a nightly run costs when nothing changed (10k photos).

A folder of small JPEGs (160x120, gradient and noise, ~8 KB each), 60 % of them captioned in a CSV, is
ingested once; then, in alternating rounds on the same folder:

* **unchanged rescan**: the ingest stage again (``run_stage``: walk the folder, read the CSV, stat every
  file and compare size and mtime with what the store recorded, assign the split): no photo is opened;
* **unchanged rescan, through Prefect**: the same as ``capsearch run -s ingest`` runs it (``flows.api.run``:
  a flow run, cached batch tasks);
* **touched**: every file's mtime moved (a copy that kept the bytes): each file is hashed, none decoded;
* **full read**: the first ingest into a fresh store, what a tool that re-reads every photo does (decode
  and hash each file): the baseline.

With ``--pipeline``, the whole pipeline is then run once on the folder (embeddings, neighbours, kNN-consensus
captions, caption embeddings: minutes) and timed again on the unchanged folder, as the nightly deployment
runs it when nothing changed (``flows.api.run``, every stage, nothing computed).

Reports medians and ranges over the rounds, and the load average (the machine may be shared), with the
ratio full read / rescan.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench import machine


def make_folder(root: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:120, 0:160]
    for i in range(n):
        sub = root / f"{2015 + i % 9}" / f"{1 + i % 12:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        base = np.stack([(x * (i % 7 + 1)) % 256, (y * (i % 5 + 2)) % 256, ((x + y) * (i % 3 + 1)) % 256], axis=-1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(sub / f"IMG_{i:05d}.jpg", quality=85)
    captions = root / "captions.csv"
    with open(captions, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "caption"])
        for i in range(n):
            if i % 5 < 3:
                writer.writerow([f"{2015 + i % 9}/{1 + i % 12:02d}/IMG_{i:05d}.jpg", f"photo number {i} of a pattern"])
    return captions


def workspace(root: Path, folder: Path, captions: Path):
    from pipeline.config_file import update_config_file
    from pipeline.workspace import Workspace

    update_config_file(root / "capsearch.toml", {"data": {"source": "folder", "path": str(folder),
                                                          "captions": str(captions)}})
    return Workspace(root)


def ingest(ws) -> float:
    from pipeline.stages.run import run_stage
    from pipeline.stages.ingest import IngestStage

    t0 = time.perf_counter()
    run_stage(IngestStage(ws))
    return time.perf_counter() - t0


def ingest_flow(ws) -> float:
    from flows.api import run

    t0 = time.perf_counter()
    summary = run(ws, ["ingest"])
    seconds = time.perf_counter() - t0
    assert summary.stages[0].items == 0, "the rescan computed something"
    return seconds


def touch_all(folder: Path, shift: float) -> None:
    for path in folder.rglob("*.jpg"):
        st = path.stat()
        os.utime(path, (st.st_atime, st.st_mtime + shift))


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} s ({min(values):.2f}-{max(values):.2f})"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-flow", action="store_true", help="skip the rescan through Prefect")
    p.add_argument("--pipeline", action="store_true", help="also time the whole pipeline on the unchanged folder")
    args = p.parse_args(argv)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    print(f"# rescan of an unchanged folder, {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "photos"
        t0 = time.perf_counter()
        captions = make_folder(folder, args.photos)
        size = sum(p.stat().st_size for p in folder.rglob("*.jpg"))
        print(f"{args.photos:,} photos ({size / 1e6:.0f} MB) written in {time.perf_counter() - t0:.0f} s; "
              f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        ws = workspace(tmp / "ws", folder, captions)
        first = ingest(ws)
        rescans, flows, touched, full = [], [], [], []
        if not args.no_flow:
            ingest_flow(ws)                                   # starts Prefect's temporary server once
        for r in range(args.rounds):
            rescans.append(ingest(ws))
            if not args.no_flow:
                flows.append(ingest_flow(ws))
            touch_all(folder, 10.0 * (r + 1))
            touched.append(ingest(ws))
            fresh = workspace(tmp / f"fresh{r}", folder, captions)
            full.append(ingest(fresh))
            print(f"round {r + 1}: rescan {rescans[-1]:.2f} s" + (f", through Prefect {flows[-1]:.2f} s" if flows else "")
                  + f", touched {touched[-1]:.2f} s, full read {full[-1]:.2f} s", flush=True)
        print(f"first ingest (full read) {first:.1f} s")
        print(f"unchanged rescan (ingest stage)          {spread(rescans)}")
        if flows:
            print(f"unchanged rescan (capsearch run -s ingest) {spread(flows)}")
        print(f"every mtime changed (hashed, not decoded) {spread(touched)}")
        print(f"full read (decode and hash every photo)  {spread(full)}")
        print(f"ratio full read / unchanged rescan: {statistics.median(full) / statistics.median(rescans):.1f}x")
        if args.pipeline:
            whole_pipeline(ws, args.rounds)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def whole_pipeline(ws, rounds: int) -> None:
    from flows.api import run

    t0 = time.perf_counter()
    first = run(ws)
    print(f"whole pipeline, first run: {time.perf_counter() - t0:.0f} s ({first.status}; "
          + ", ".join(f"{o.stage} {o.items}" for o in first.stages if o.items) + ")", flush=True)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        again = run(ws)
        times.append(time.perf_counter() - t0)
        computed = {o.stage: o.items for o in again.stages if o.items}
        assert not computed, f"the unchanged run computed {computed}"
    print(f"whole pipeline on the unchanged folder (nothing computed)  {spread(times)}")


if __name__ == "__main__":
    main()
