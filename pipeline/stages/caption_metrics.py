"""The ``caption-metrics`` stage: COCO caption metrics, CLIPScore, copy rate per captioner and photo.

Its items are its rows: ``human`` (every human caption of each target scored against the target's others,
averaged over these leave-one-out hold-outs) and every enabled captioner (scored against all of a target's
human captions). Each row is stored under its own hash (``pipeline.caption_metrics.storage``),
so re-running the stage computes only the rows whose inputs changed; all missing rows are computed in one
batch (one tokenizer run, one METEOR process, one CLIP model), which then summarises every row (bootstrap
intervals, paired test against ``evaluate.baseline``) and commits the rows it computed and the summary in
one transaction.

Done-ness is what the store holds: a row is done when it is stored, and when every row is stored but the
current configuration has no summary (a new baseline, or rows kept by a cancelled run) none is, so that
the batch runs again: it reuses the stored rows and writes only the summary.
"""
from __future__ import annotations

from typing import Any

from pipeline.caption_metrics import identity, scoring, storage
from pipeline.caption_metrics.results import RowScores
from pipeline.crashpoints import CAPTION_METRICS_BATCH, crash_point
from pipeline.estimates import CONFIDENCE
from pipeline.progress import StageProgress
from pipeline.applicability import no_held_out_captions
from pipeline.stages.base import Batch, BatchCancelled, BatchResult, Stage


class CaptionMetricsStage(Stage):
    name = identity.STAGE
    batched = False          # the rows to compute run together (shared tokenizer, METEOR and CLIP runs)

    def __init__(self, ws, variant: str = ""):
        super().__init__(ws, variant)
        self._env: scoring.Environment | None = None

    def applicable(self) -> str | None:
        return no_held_out_captions(self.store)

    @property
    def env(self) -> scoring.Environment:
        if self._env is None:
            self._env = scoring.environment(self.ws)
        return self._env

    def rows(self) -> list[str]:
        """``human`` (where targets have two human captions) and every enabled captioner."""
        return identity.rows(self.ws)

    def row_hashes(self) -> dict[str, str]:
        """Each row's identity: what it reads, how it is tokenised, which metrics can run."""
        return identity.row_hashes(self.ws, self.env)

    def config(self) -> dict[str, Any]:
        return identity.summary_config(self.ws, self.row_hashes())

    def _config_hash(self, hashes: dict[str, str]) -> str:
        return identity.summary_hash(self.ws, hashes)

    def items(self) -> list[str]:
        return self.rows()

    def done_items(self) -> set[str]:
        """Rows stored; none while every row is stored but this configuration's summary is not."""
        hashes = self.row_hashes()
        stored = storage.stored_rows(self.store, hashes.values())
        done = {row for row, h in hashes.items() if h in stored}
        if done == set(hashes) and not storage.has_summary(self.store, self._config_hash(hashes)):
            return set()
        return done

    def item_fingerprints(self, ids: list[str]) -> dict[str, str]:
        hashes = self.row_hashes()
        return {i: hashes.get(i, "") for i in ids}

    def run_batch(self, batch: Batch, progress: StageProgress | None = None) -> BatchResult:
        """Score every row not stored yet, summarise all rows, and commit both together."""
        hashes = self.row_hashes()
        config_hash = self._config_hash(hashes)
        stored = storage.stored_rows(self.store, hashes.values())
        todo = [row for row, h in hashes.items() if h not in stored]
        say = progress.message if progress else (lambda text, level="info": None)
        if progress:   # progress in units of work: each metric of each row, the tokenizer run, the summary
            progress.add_work(scoring.count_steps(self.ws, todo, self.env) + 1 - len(batch.ids))
        if todo and self.env.meteor:
            say(f"METEOR not computed: {self.env.meteor}", "warning")
        computed: dict[str, RowScores] = {}

        def done(result: RowScores) -> None:
            computed[result.row] = result
            missing = f", {len(result.missing)} photos without a caption (scored 0)" if result.missing else ""
            say(f"{result.row}: {len(result.ids)} photos scored in {result.seconds:.1f} s{missing}")

        step = (lambda: progress.advance(1)) if progress else None
        scoring.score_rows(self.ws, todo, self.env, say, done, step=step, stop=self.cancelled)
        if len(computed) < len(todo):   # stopped by a cancel between two units of work
            if computed:   # the rows finished before the cancel are kept: the next run computes only the rest
                with self.commit():
                    for row, result in computed.items():
                        storage.put_row(self.store, hashes[row], result)
            raise BatchCancelled(f"cancelled after scoring {len(computed)} of {len(todo)} rows "
                                 f"({', '.join(computed) or 'none'} kept)")
        rows = [computed[row] if row in computed else storage.get_row(self.store, h) for row, h in hashes.items()]
        ev = self.cfg.evaluate
        result = scoring.summarise(config_hash, [r for r in rows if r is not None], self.env,
                                   scoring.photos(self.ws), ev.baseline, ev.n_boot, ev.seed, CONFIDENCE)
        result.row_hashes = {r.row: hashes[r.row] for r in rows if r is not None}
        with self.commit():   # the rows computed here and the summary: together or not at all
            for row, scored in computed.items():
                storage.put_row(self.store, hashes[row], scored)
            crash_point(CAPTION_METRICS_BATCH)
            storage.put_summary(self.store, result)
        if progress:
            progress.advance(1)
            for metrics, reason in result.not_computed():
                progress.message(f"{', '.join(metrics)} not computed: {reason}", "info")
        return BatchResult(done=len(computed), skipped=len([i for i in batch.ids if i not in hashes]))
