"""A person's own photo folder, end to end, as a new user runs it: `data folder`, `run`, `status`, `search`,
`search --like`, with real-looking generated photos (``tests/fixtures/collection.py``), some captioned in a
CSV and most not, one stored twice.

What a collection is not: a benchmark. Its uncaptioned photos are the targets, which have no held-out
captions, so the evaluation stages are *not applicable* (not failed); with no caption at all, neither are
the neighbour-based captioners, while the others still run. Search covers every photo by default.
"""
from __future__ import annotations

import json

import pytest

from pipeline.stages.applicability import NO_CAPTIONED_PHOTO, NO_HELD_OUT_CAPTIONS
from tests.fixtures.cli import run_cli
from tests.fixtures.collection import build_photo_folder

pytestmark = pytest.mark.slow

EVALUATION_STAGES = ("caption-metrics", "queries", "evaluate", "report")


def _states(status: dict) -> dict[str, dict]:
    return {s["stage"]: s for s in status["stages"]}


def test_a_partly_captioned_folder_runs_searches_and_finds_by_example(home, capsys, photo_folder, prefect_harness):
    ws = home / "my-workspace"
    folder = photo_folder
    code, out, err = run_cli(capsys, "data", "folder", str(folder.root), "--captions", str(folder.captions),
                             "-w", str(ws))
    assert code == 0, err
    assert f"ingested {len(folder.ids)} photos" in out

    code, out, err = run_cli(capsys, "run", "-w", str(ws))
    assert code == 0, err
    assert "not applicable" in out and "error" not in err.lower()

    code, out, err = run_cli(capsys, "status", "--json", "-w", str(ws))
    assert code == 0, err
    status = json.loads(out)
    states = _states(status)
    for name in EVALUATION_STAGES:
        assert states[name]["state"] == "not applicable" and states[name]["not_applicable"] == NO_HELD_OUT_CAPTIONS
    for name in ("ingest", "embed-images", "neighbours", "prompts", "caption:knn-consensus", "embed-captions:human",
                 "embed-captions:knn-consensus"):
        assert states[name]["state"] == "done", states[name]
    targets = len(folder.uncaptioned) - 1                  # the copy of a captioned photo joins it in the reference DB
    assert status["images"] == {"total": len(folder.ids), "reference": len(folder.captioned) + 1, "target": targets}
    assert states["caption:knn-consensus"]["done"] == targets
    assert status["duplicates"]["identical_photos"] == 1

    code, out, _ = run_cli(capsys, "status", "-w", str(ws))
    assert f"not applicable: {NO_HELD_OUT_CAPTIONS}"[:60] in " ".join(out.split())

    # a captioned photo, found by one of its human captions
    captioned = folder.captioned[5]
    code, out, err = run_cli(capsys, "search", folder.truth[captioned][1], "--json", "-w", str(ws))
    assert code == 0, err
    found = json.loads(out)
    assert found["scope"] == "collection" and found["method"] == "captions"
    assert found["hits"][0]["image_id"] == captioned and found["hits"][0]["matched"] == "human"

    # an uncaptioned photo, found by the caption kNN consensus wrote for it
    uncaptioned = next(i for i in folder.uncaptioned if i != folder.copy)
    code, out, err = run_cli(capsys, "search", _generated_caption(ws, uncaptioned), "--json", "-w", str(ws))
    assert code == 0, err
    hits = {h["image_id"]: h for h in json.loads(out)["hits"]}
    assert uncaptioned in hits and hits[uncaptioned]["matched"] == "knn-consensus"

    # the experiment's view lists targets only
    code, out, err = run_cli(capsys, "search", folder.truth[captioned][1], "--scope", "targets", "--json",
                             "-w", str(ws))
    assert code == 0, err
    assert all(h["image_id"] in folder.uncaptioned for h in json.loads(out)["hits"])

    # more like this photo: its identical copy first, by id and by file path
    for example in (folder.original, str(folder.path(folder.original))):
        code, out, err = run_cli(capsys, "search", "--like", example, "--json", "-w", str(ws))
        assert code == 0, err
        like = json.loads(out)
        assert like["photo"] == folder.original and like["hits"][0]["image_id"] == folder.copy
        assert folder.original not in [h["image_id"] for h in like["hits"]]

    code, out, err = run_cli(capsys, "search", "--like", folder.original, "-w", str(ws))
    assert code == 0 and "photos like" in out and folder.copy.rsplit("/", 1)[-1][:12] in out


def _generated_caption(ws, image_id: str) -> str:
    from pipeline.search_service import stage_hash
    from pipeline.workspace import Workspace

    w = Workspace(ws)
    return w.store.captions("knn-consensus", stage_hash(w, "caption", "knn-consensus"))[image_id].text


def test_a_folder_without_any_caption_runs_what_applies(home, capsys, tmp_path, tiny_blip_dir, prefect_harness):
    """No caption file at all: the neighbour-based stages say why they do not apply, BLIP still captions every
    photo, the run exits 0, and search finds photos by BLIP's captions and by example."""
    folder = build_photo_folder(tmp_path / "uncaptioned", n=12, with_captions=False)
    ws = home / "bare"
    code, _, err = run_cli(capsys, "data", "folder", str(folder.root), "-w", str(ws))
    assert code == 0, err
    from pipeline.config_file import update_config_file

    update_config_file(ws / "capsearch.toml", {
        "captioners": {"enabled": ["knn-consensus", "blip-tiny"],
                       "blip-tiny": {"kind": "blip", "model": str(tiny_blip_dir), "batch_size": 4, "max_new_tokens": 6}},
        "runtime": {"device": "cpu"}, "search": {"hybrid_captioner": "blip-tiny"}})
    code, out, err = run_cli(capsys, "run", "-w", str(ws))
    assert code == 0, err
    code, out, _ = run_cli(capsys, "status", "--json", "-w", str(ws))
    states = _states(json.loads(out))
    for name in ("neighbours", "prompts", "caption:knn-consensus", "embed-captions:knn-consensus"):
        assert states[name]["not_applicable"] == NO_CAPTIONED_PHOTO, states[name]
    for name in EVALUATION_STAGES:
        assert states[name]["state"] == "not applicable"
    assert states["embed-captions:human"]["state"] == "not applicable"
    assert states["caption:blip-tiny"]["state"] == "done" and states["caption:blip-tiny"]["done"] == len(folder.ids)

    from pipeline.search_service import stage_hash
    from pipeline.workspace import Workspace

    w = Workspace(ws)
    blip = w.store.captions("blip-tiny", stage_hash(w, "caption", "blip-tiny"))
    some = folder.ids[3]
    code, out, err = run_cli(capsys, "search", blip[some].text, "--json", "-k", "40", "-w", str(ws))
    assert code == 0, err
    hits = json.loads(out)["hits"]
    assert some in [h["image_id"] for h in hits] and {h["matched"] for h in hits} == {"blip-tiny"}
    code, out, err = run_cli(capsys, "search", "--like", folder.original, "--json", "-w", str(ws))
    assert code == 0, err
    assert json.loads(out)["hits"][0]["image_id"] == folder.copy

    code, out, err = run_cli(capsys, "evaluate", "-w", str(ws))
    assert code == 0 and "not applicable" in out, err
