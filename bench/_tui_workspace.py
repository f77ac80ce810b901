"""A synthetic 10k-photo workspace for the TUI benchmarks (built once, then reused).

Photos: ``n`` rows (one in ten a reference photo, the rest targets) whose files cycle through a small generated demo world (so previews
draw real photos), each with that photo's five reference captions. Captions of the lite captioner
(``knn-consensus``) are written directly: one of the photo's reference captions plus its number, so
every caption is distinct; the real ``embed-captions`` stage then embeds them with MiniLM. Neighbours
and prompts are not computed (the search and browsing benchmarks do not read them).
"""
from __future__ import annotations

import time
from pathlib import Path

DEFAULT_ROOT = Path("outputs/bench-tui-10k")
WORLD_PHOTOS = 200


def build_workspace(root: Path = DEFAULT_ROOT, n: int = 10_000, *, quiet: bool = False):
    """The workspace at ``root`` with ``n`` searchable target photos (reused when already built)."""
    from pipeline.config_file import update_config_file
    from pipeline.datasets.demo import IMAGE_DIR, TOKEN_FILE, generate_demo_world
    from pipeline.hashing import hash_text
    from pipeline.keys import document_space
    from pipeline.stages.registry import stage_hash
    from pipeline.text_models import build_text_embedder
    from pipeline.stages.run import run_stage
    from pipeline.stages.registry import build_stage
    from pipeline.store_rows import ImageRow
    from pipeline.workspace import Workspace

    root = root.resolve()
    ws_root, world = root / "ws", root / "world"
    update_config_file(ws_root / "capsearch.toml", {"data": {"source": "demo", "path": str(world),
                                                             "demo_images": WORLD_PHOTOS, "n_targets": n}},
                       profile="lite")
    ws = Workspace(ws_root)
    store = ws.store
    if store.get_meta("bench_tui_photos") == n and store.has_space(document_space(build_text_embedder(ws.config).key)):
        return ws
    t0 = time.perf_counter()
    if not (world / TOKEN_FILE).exists():
        generate_demo_world(world, WORLD_PHOTOS)
    refs: dict[str, list[str]] = {}
    for line in (world / TOKEN_FILE).read_text(encoding="utf-8").splitlines():
        key, _, text = line.partition("\t")
        refs.setdefault(key.split("#")[0], []).append(text)
    files = sorted(refs)
    ids = [f"photo_{i:05d}.jpg" for i in range(n)]
    source = {image_id: files[i % len(files)] for i, image_id in enumerate(ids)}
    # one photo in ten is a reference photo: captioning stages apply only where some photo outside the targets has
    # human captions (the kNN-consensus captions below are of every photo, and search covers the whole collection)
    store.upsert_images([ImageRow(i, source[i], hash_text(i, 64), 320, 240, "reference" if k % 10 == 0 else "target")
                         for k, i in enumerate(ids)])
    store.replace_reference_captions({i: refs[source[i]] for i in ids})
    store.set_meta("collection", {"name": "bench", "root": str(world / IMAGE_DIR), "benchmark": True})
    store.put_captions("knn-consensus", stage_hash(ws, "caption", "knn-consensus"), [
        {"image_id": i, "text": f"{refs[source[i]][n_ % 5].rstrip(' .')} , number {n_} .", "status": "ok"}
        for n_, i in enumerate(ids)])
    run_stage(build_stage(ws, "embed-captions", "knn-consensus"))
    store.set_meta("bench_tui_photos", n)
    if not quiet:
        print(f"built a {n}-photo workspace in {time.perf_counter() - t0:.0f} s at {ws_root}")
    return ws
