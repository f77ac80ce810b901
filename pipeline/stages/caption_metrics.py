"""The ``caption-metrics`` stage: COCO caption metrics, CLIPScore, copy rate per captioner and photo.

Its items are its rows: ``human`` (one held-out human caption of each target scored against the others)
and every enabled captioner. Each row is stored under its own hash (``pipeline.caption_metrics.storage``),
so re-running the stage computes only the rows whose inputs changed; all missing rows are computed in one
batch (one tokenizer run, one METEOR process, one CLIP model). ``finalize`` writes the summary (bootstrap
intervals, paired test against ``evaluate.baseline``) once per stage configuration.
"""
from __future__ import annotations

from typing import Any

from pipeline.caption_metrics import scoring, storage
from pipeline.caption_metrics.results import HUMAN
from pipeline.evaluation import CONFIDENCE
from pipeline.hashing import hash_obj, hash_text
from pipeline.progress import StageProgress
from pipeline.stages.base import Batch, BatchResult, Stage

VERSION = 1


class CaptionMetricsStage(Stage):
    name = "caption-metrics"
    batched = False          # the rows to compute run together (shared tokenizer, METEOR and CLIP runs)

    def __init__(self, ws, target: str = ""):
        super().__init__(ws, target)
        self._env: scoring.Environment | None = None

    def applicable(self) -> str | None:
        from pipeline.stages.applicability import no_held_out_captions

        return no_held_out_captions(self.store)

    @property
    def env(self) -> scoring.Environment:
        if self._env is None:
            self._env = scoring.environment(self.ws)
        return self._env

    def rows(self) -> list[str]:
        """``human`` (where targets have two human captions) and every enabled captioner."""
        human = [HUMAN] if scoring.photos(self.ws).with_references else []
        return [*human, *self.cfg.enabled_captioners()]

    def row_hashes(self) -> dict[str, str]:
        """Each row's identity: what it reads, how it is tokenised, which metrics can run."""
        from pipeline.search_service import stage_hash

        ph = scoring.photos(self.ws)
        common = {"version": VERSION, "env": self.env.as_dict(),
                  "photos": hash_obj([ph.ids, ph.human, ph.references]), "images": self._image_fingerprint(ph.ids)}
        out = {}
        for row in self.rows():
            ident: dict[str, Any] = dict(common, row=row)
            if row != HUMAN:
                caps = scoring.row_captions(self.ws, row, ph.ids, ph.human)
                ident.update(caption_stage=stage_hash(self.ws, "caption", row),
                             captions=hash_obj([hash_text(c) for c in caps]))
            out[row] = hash_obj(ident)
        return out

    def _image_fingerprint(self, ids: list[str]) -> str:
        if self.env.clip_key is None:
            return ""
        from pipeline.stages.vision import image_space

        shas = sorted({img.sha256 for img in self.store.images(ids=ids)})
        return hash_obj(sorted(self.store.has_vectors(image_space(self.env.clip_key), shas)))

    def config(self) -> dict[str, Any]:
        ev = self.cfg.evaluate
        return {"rows": self.row_hashes(), "baseline": ev.baseline, "n_boot": ev.n_boot, "seed": ev.seed,
                "confidence": CONFIDENCE, "version": VERSION}

    def items(self) -> list[str]:
        return self.rows()

    def done_items(self) -> set[str]:
        return {row for row, h in self.row_hashes().items() if storage.has_row(self.store, h)}

    def item_fingerprints(self, ids: list[str]) -> dict[str, str]:
        hashes = self.row_hashes()
        return {i: hashes.get(i, "") for i in ids}

    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        hashes = self.row_hashes()
        say = progress.message if progress else (lambda text, level="info": None)
        rows = [r for r in batch.ids if r in hashes]
        if self.env.meteor:
            say(f"METEOR not computed: {self.env.meteor}", "warning")
        finished: list[str] = []

        def done(result) -> None:
            storage.put_row(self.store, hashes[result.row], result)
            finished.append(result.row)
            missing = f", {len(result.missing)} photos without a caption (scored 0)" if result.missing else ""
            say(f"{result.row}: {len(result.ids)} photos scored in {result.seconds:.1f} s{missing}")
            if progress:
                progress.advance(1)

        scoring.score_rows(self.ws, rows, self.env, say, done)
        return BatchResult(done=len(finished), skipped=len(batch.ids) - len(rows))

    def finalize(self, progress: StageProgress | None = None) -> None:
        config_hash = self.config_hash()
        if storage.get_summary(self.store, config_hash) is not None:
            self.store.set_meta(f"{storage.PREFIX}/latest", config_hash)
            return
        hashes = self.row_hashes()
        rows = []
        for row, h in hashes.items():
            got = storage.get_row(self.store, h)
            if got is not None:
                rows.append(got)
        ev = self.cfg.evaluate
        result = scoring.summarise(config_hash, rows, self.env, scoring.photos(self.ws), ev.baseline, ev.n_boot,
                                   ev.seed, CONFIDENCE)
        result.row_hashes = {r.row: hashes[r.row] for r in rows}
        storage.put_summary(self.store, result)
        if progress:
            for metrics, reason in result.not_computed():
                progress.message(f"{', '.join(metrics)} not computed: {reason}", "info")


STAGES: dict[str, type[Stage]] = {"caption-metrics": CaptionMetricsStage}
