"""Ingest: read the data set, check every photo, store images and reference captions, assign splits.

A photo is done when the store holds it as it is on disk (same size and mtime as recorded)
*with* the reference captions the data set gives it now (``images.captions_hash`` and the
number of caption rows): a batch commits photos, captions and problems together, and a photo
whose captions went missing (a store written before batches were one transaction) or changed
is ingested again.

Size and mtime first, the hash when they differ, a decode only when the hash differs: an
unchanged folder is rescanned without opening a photo (its files' sizes and mtimes are what
was recorded), a file whose mtime changed but whose bytes did not (copied back, touched) is
hashed and kept as it was, and only new or changed photos are decoded and checked. Photos
that left the folder are removed from the index by ``finalize`` and listed (store meta
``ingest/removed``, shown by ``capsearch status``) until they come back.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from pipeline.crashpoints import INGEST_BATCH, INGEST_FINALIZE, INGEST_PREPARE, crash_point
from pipeline.datasets import Collection, load_collection
from pipeline.hashing import hash_obj
from pipeline.images import check_image, sha256_photo
from pipeline.progress import StageProgress
from pipeline.splits import SplitItem, assign_splits, split_hash
from pipeline.stages.base import Batch, BatchResult, Stage
from pipeline.store_rows import FileRecord, ImageRow

STAGE = "ingest"
REMOVED_KEY = "ingest/removed"     # store meta: photos that left the collection -> when and what they were


def captions_hash(captions: Sequence[str]) -> str:
    """Identity of a photo's reference captions (what ``images.captions_hash`` records)."""
    return hash_obj(list(captions))


def _same_file(record: FileRecord | None, stat: tuple[int, float] | None) -> bool:
    return (record is not None and stat is not None and record.size == stat[0] and record.mtime is not None
            and abs(record.mtime - stat[1]) < 1e-6)


class IngestStage(Stage):
    name = "ingest"
    cheap = True

    def __init__(self, ws, variant: str = ""):
        super().__init__(ws, variant)
        self._collection: Collection | None = None

    def config(self) -> dict[str, Any]:
        d = self.cfg.data
        return {"source": d.source, "path": str(self.ws.data_path()), "captions": d.captions,
                "n_targets": d.n_targets, "seed": d.seed, "official_test_targets": d.official_test_targets,
                "max_image_pixels": d.max_image_pixels}

    @property
    def collection(self) -> Collection:
        """The data set as it is on disk (never generated here: counting must not write a demo world)."""
        if self._collection is None:
            self._collection = load_collection(self.cfg.data, self.ws.data_path(), generate=False)
        return self._collection

    def prepare(self, progress: StageProgress | None = None) -> None:
        if self._collection is None:
            # generating the demo world reports to the same place as this stage (its own bar: "demo-world")
            callback = progress.callback if progress is not None else None
            self._collection = load_collection(self.cfg.data, self.ws.data_path(), callback)
        col = self._collection
        with self.store.transaction():
            self.store.clear_problems(STAGE + "/input")
            if col.problems:
                self.store.record_problems(STAGE + "/input", col.problems)
            crash_point(INGEST_PREPARE)
            self.store.set_meta("collection", {"name": col.name, "root": str(col.root), "benchmark": col.benchmark})
        if col.problems and progress:
            progress.message(f"{len(col.problems)} problems in the data set's caption/split files (see `capsearch status`)", "warning")

    def items(self) -> list[str]:
        return sorted(item.id for item in self.collection.items)

    def _stat(self, image_id: str) -> tuple[int, float] | None:
        item = self._by_id().get(image_id)
        if item is None:
            return None
        if item.stat is not None:       # a photo behind a URL: its listing's size and last-modified time
            return item.stat
        try:
            st = os.stat(item.path)
        except OSError:
            return None
        return st.st_size, st.st_mtime

    def _by_id(self):
        if not hasattr(self, "_index"):
            self._index = self.collection.by_id()
        return self._index

    def done_items(self) -> set[str]:
        """Photos committed as they are on disk, with the reference captions the data set gives them now."""
        by_id = self._by_id()
        with self.store.read():
            records = self.store.file_records()
            stored_captions = self.store.reference_caption_counts()
        done = set()
        for image_id, record in records.items():
            item = by_id.get(image_id)
            if (item is not None and record.captions_hash == captions_hash(item.captions)
                    and stored_captions.get(image_id, 0) == len(item.captions)
                    and _same_file(record, self._stat(image_id))):
                done.add(image_id)
        return done

    def failed_items(self) -> dict[str, str]:
        return {p.item: p.reason for p in self.store.problems(STAGE) if p.severity == "skipped"}

    def settled_items(self, retry_failed: bool = False) -> set[str]:
        """A skipped file is checked again only when it changed on disk (or when asked to retry)."""
        settled = self.done_items()
        if not retry_failed:
            seen = self.store.get_meta("ingest_skipped_stats", {})
            failed = self.failed_items()
            settled |= {i for i, st in seen.items() if i in failed and list(self._stat(i) or ()) == st}
        return settled

    def item_fingerprints(self, ids: list[str]) -> dict[str, str]:
        by_id = self._by_id()
        return {i: repr((self._stat(i), captions_hash(by_id[i].captions) if i in by_id else None)) for i in ids}

    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        by_id = self._by_id()
        max_pixels = self.cfg.data.max_image_pixels
        records = self.store.file_records(batch.ids)        # this batch's rows only: a batch costs its size
        stored = {r.id: r for r in self.store.images(ids=batch.ids)}
        stats_now = {i: self._stat(i) for i in batch.ids}
        # a file unchanged since it was committed is not read again (its captions may still need writing)
        unchanged = {i for i in batch.ids if i in stored and _same_file(records.get(i), stats_now[i])}
        # size or mtime differ: the same bytes (a touched or copied-back file) need no decode, only a new stat
        rehash = [i for i in batch.ids if i in stored and i not in unchanged and stats_now[i] is not None]
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2))) as pool:
            hashes_now = dict(zip(rehash, pool.map(lambda i: _sha256_or_none(by_id[i].path), rehash)))
            unchanged |= {i for i, sha in hashes_now.items() if sha is not None and sha == stored[i].sha256}
            to_check = [i for i in batch.ids if i not in unchanged]
            checks = dict(zip(to_check, pool.map(lambda i: _check(by_id[i], max_pixels), to_check)))
        ok_rows, stats, captions, hashes, bad, repaired, ok_ids = [], {}, {}, {}, [], [], []
        for image_id in batch.ids:
            item = by_id[image_id]
            if image_id in unchanged:
                row, stat = stored[image_id], stats_now[image_id]
                row = ImageRow(row.id, row.path, row.sha256, row.width, row.height, None, item.official_split, row.note)
                note = row.note
            else:
                chk = checks[image_id]
                if not chk.ok:
                    bad.append((image_id, "skipped", chk.reason))
                    continue
                row = ImageRow(image_id, image_id, chk.sha256, chk.width, chk.height, None, item.official_split, chk.note or None)
                stat, note = (chk.size, chk.mtime), chk.note
            ok_ids.append(image_id)
            ok_rows.append(row)
            stats[image_id] = stat
            captions[image_id] = item.captions
            hashes[image_id] = captions_hash(item.captions)
            if note:
                repaired.append((image_id, "repaired", note))
        with self.commit():   # photos, their captions and problems: together or not at all
            if ok_rows:
                self.store.upsert_images(ok_rows, stats, hashes)
                crash_point(INGEST_BATCH)
                self.store.replace_reference_captions(captions)
                self.store.clear_problems(STAGE, ok_ids)
            if bad or repaired:
                self.store.record_problems(STAGE, bad + repaired)
            if bad:
                seen = self.store.get_meta("ingest_skipped_stats", {})
                seen.update({i: list(stats_now[i] or ()) for i, _, _ in bad})
                self.store.set_meta("ingest_skipped_stats", seen)
        if progress:
            for image_id, _, reason in bad:
                progress.message(f"skipped {image_id}: {reason}", "warning")
            progress.advance(len(batch.ids), failures=len(bad))
        return BatchResult(done=len(ok_rows), failed=len(bad))

    def finalize(self, progress: StageProgress | None = None) -> None:
        """Drop photos that left the collection (listing them) and assign the split: one transaction."""
        import time

        by_id = self._by_id()
        rows = {r.id: r for r in self.store.images()}
        stored = sorted(rows)
        gone = sorted(set(stored) - set(by_id))
        usable = [i for i in stored if i in by_id]
        items = [SplitItem(i, bool(by_id[i].captions), by_id[i].official_split, rows[i].sha256) for i in usable]
        removed = {i: r for i, r in (self.store.get_meta(REMOVED_KEY) or {}).items() if i not in rows}
        removed.update({i: {"at": time.time(), "sha256": rows[i].sha256, "split": rows[i].split} for i in gone})
        n_targets = self.cfg.data.n_targets
        captioned = sum(1 for i in items if i.has_captions)
        warning = None
        if captioned == len(items) and n_targets >= captioned:   # a benchmark: targets are drawn from the captioned
            capped = max(1, captioned // 2)
            warning = f"data.n_targets={n_targets} leaves no reference DB among {captioned} captioned photos; used {capped}"
            n_targets = capped
        splits = assign_splits(items, n_targets, self.cfg.data.seed, self.cfg.data.official_test_targets)
        with self.store.transaction():
            if gone:
                self.store.delete_images(gone)
            if removed != (self.store.get_meta(REMOVED_KEY) or {}):
                self.store.set_meta(REMOVED_KEY, removed)
            crash_point(INGEST_FINALIZE)
            if warning:
                self.store.record_problems(STAGE + "/split", [("n_targets", "warning", warning)])
            else:
                self.store.clear_problems(STAGE + "/split")
            self.store.set_splits(splits)
            self.store.set_meta("split_hash", split_hash(splits))
            self.store.set_meta("split_config", {"n_targets": n_targets, "seed": self.cfg.data.seed,
                                                 "official_test_targets": self.cfg.data.official_test_targets})
        if gone and progress:
            progress.message(f"{len(gone)} photos are no longer in the collection and were removed from the index", "warning")


def _check(item, max_pixels: int):  # type: ignore[no-untyped-def]
    """Decode and check a photo; one behind a URL is read once and keeps its listing's size and time."""
    if item.stat is not None:
        return check_image(str(item.path), max_pixels, size=item.stat[0], mtime=item.stat[1])
    return check_image(item.path, max_pixels)


def _sha256_or_none(path) -> str | None:  # type: ignore[no-untyped-def]
    try:
        return sha256_photo(path)
    except Exception:  # noqa: BLE001 - unreadable now (gone, unreachable): decoded and reported by the check
        return None


def removed_photos(store) -> dict[str, dict]:
    """Photos that left the collection since they were ingested: id -> when (``at``), sha256 and split."""
    return dict(sorted((store.get_meta(REMOVED_KEY) or {}).items()))
