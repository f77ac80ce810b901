"""The time of the caption-metrics stage on 400 targets x 6 captioners (+ the human row), against the COCO
caption evaluation run directly on the same captions.

A temporary lite workspace ingests a generated demo world (800 photos, 400 targets, five human captions
each) and gets a caption for every target from each of the study's six captioners (a seeded choice of
another photo's human caption: real caption text, so METEOR's matching does real work). Two paths on the
same captions, alternating over ``--rounds`` rounds (order reversed every other round; median and range):

* **stage**: ``run_stage(caption-metrics)`` from nothing stored: PTB tokenisation, BLEU-1..4, ROUGE-L,
  CIDEr-D, METEOR (one jar process), copy rate, length and vocabulary for 7 rows, then the summary with
  1000 bootstrap resamples and the paired test for every metric and row;
* **pycocoevalcap**: what its ``COCOEvalCap`` does for each captioner and each of the human row's five
  leave-one-out hold-outs (``PTBTokenizer`` over the captions and references, ``Bleu(4)``, ``Meteor()``,
  ``Rouge()``, ``Cider()``; no SPICE, as offline it cannot run), point estimates only.
"""
from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from bench import Spread, alternating, load_average, machine, ratios, stopwatch

CAPTIONERS = ["vlm-neighbours", "vlm-plain", "blip-base", "blip-large", "vit-gpt2", "knn-consensus"]


def build_workspace(root: Path, n_images: int, n_targets: int):
    from pipeline.config_file import update_config_file
    from pipeline.datasets.demo import generate_demo_world
    from pipeline.stages.registry import stage_hash
    from pipeline.stages.run import run_stage
    from pipeline.stages.registry import build_stage
    from pipeline.workspace import Workspace

    generate_demo_world(root / "world", n_images=n_images)
    update_config_file(root / "ws" / "capsearch.toml",
                       {"data": {"source": "demo", "path": str(root / "world"), "demo_images": n_images,
                                 "n_targets": n_targets},
                        "captioners": {"enabled": CAPTIONERS}}, profile="lite")
    ws = Workspace(root / "ws")
    run_stage(build_stage(ws, "ingest"))
    store = ws.store
    every = [c for caps in store.reference_captions().values() for c in caps]
    targets = store.image_ids("target")
    rng = random.Random(0)
    for name in CAPTIONERS:
        store.put_captions(name, stage_hash(ws, "caption", name),
                           [{"image_id": t, "text": rng.choice(every), "status": "ok"} for t in targets])
    return ws


def run_stage_path(ws) -> tuple[float, float]:
    """(seconds for the whole stage, seconds of its summary) from nothing stored."""
    from pipeline.caption_metrics.storage import load_caption_metrics
    from pipeline.stages.run import run_stage
    from pipeline.stages.registry import build_stage

    ws.store.caption_metrics.delete_all()
    stage = build_stage(ws, "caption-metrics")
    with stopwatch() as t:
        report = run_stage(stage)
    assert report.done == len(CAPTIONERS) + 1, report
    return t[0], load_caption_metrics(ws).seconds


def run_pycocoevalcap(ws) -> float:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from pipeline.caption_metrics.scoring import photos, row_captions

    ph = photos(ws)
    every = {i: [{"caption": c} for c in refs] for i, refs in zip(ph.ids, ph.references)}
    # the captioners against every human caption; the human row once per leave-one-out hold-out
    runs = [(every, {i: [{"caption": c}] for i, c in zip(ph.ids, row_captions(ws, row, ph))}) for row in CAPTIONERS]
    for h in ph.hold_outs():
        ids = [ph.ids[n] for n in h.index]
        runs.append(({i: [{"caption": c} for c in refs] for i, refs in zip(ids, h.references)},
                     {i: [{"caption": c}] for i, c in zip(ids, h.captions)}))
    with stopwatch() as t:
        meteor = Meteor()
        try:
            for gts_raw, res_raw in runs:
                tokenizer = PTBTokenizer()
                gts = tokenizer.tokenize(gts_raw)
                res = tokenizer.tokenize(res_raw)
                for scorer in (Bleu(4), meteor, Rouge(), Cider()):
                    if isinstance(scorer, Bleu):
                        scorer.compute_score(gts, res, verbose=0)
                    else:
                        scorer.compute_score(gts, res)
        finally:
            meteor.meteor_p.stdin.close()
            meteor.meteor_p.kill()
            meteor.meteor_p.wait()
    return t[0]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=800)
    p.add_argument("--targets", type=int, default=400)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (order reversed every other round)")
    args = p.parse_args(argv)
    from pipeline.caption_metrics.java import java_runtime

    print(f"# caption-metrics stage time, {machine()}; java: {java_runtime()[1]}")
    print(f"# {load_average()} at the start")
    with tempfile.TemporaryDirectory() as tmp:
        ws = build_workspace(Path(tmp), args.images, args.targets)
        summary_times: list[float] = []

        def stage() -> float:
            seconds, summary = run_stage_path(ws)
            summary_times.append(summary)
            return seconds

        t = alternating({"stage": stage, "pycocoevalcap": lambda: run_pycocoevalcap(ws)}, args.rounds)
        ws.store.close()
    print(f"caption-metrics stage, {args.targets} targets x {len(CAPTIONERS)} captioners + human, {args.rounds} "
          f"alternating rounds: {Spread.of(t['stage']).show('.1f')} s (summary with 1000 bootstrap resamples "
          f"{Spread.of(summary_times).show('.1f')} s)")
    print(f"pycocoevalcap directly (tokenizer, BLEU, METEOR, ROUGE-L, CIDEr-D; no intervals): "
          f"{Spread.of(t['pycocoevalcap']).show('.1f')} s; ratio stage / pycocoevalcap per round "
          f"{ratios(t['stage'], t['pycocoevalcap']).show('.2f')}")
    print(f"# {load_average()} at the end")


if __name__ == "__main__":
    main()
