"""Captioning through an OpenAI-compatible server (``backend = "endpoint"``), against a real one.

The server (``tests.fixtures.vlm_server``) is a process of its own that serves the tiny SmolVLM (Idefics3) fixture
model through transformers behind ``/v1/chat/completions``, applying the model's chat template to the OpenAI
messages as vLLM does. The same model runs in-process as ``vlm-neighbours`` and ``vlm-plain``; with greedy
decoding the endpoint captioners must write exactly their captions. Faults are injected on the same server:
429 with Retry-After, 500, a timeout, a dropped connection, truncated JSON, empty content, a refusal, and a
server that goes away in the middle of a run.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flows.api import run
from pipeline.captioners.endpoint import EndpointUnavailable
from pipeline.config_file import update_config_file
from pipeline.datasets.demo import generate_demo_world
from pipeline.errors import ConfigError
from pipeline.stages.base import BatchCancelled
from pipeline.stages.vision import CaptionStage, PromptsStage
from pipeline.status import workspace_status
from pipeline.workspace import Workspace
from tests.fixtures.captioner_configs import SHORT_TEMPLATE
from tests.fixtures.commands import REPO, wait_until
from tests.fixtures.vlm_server import start_vlm_server
from tests.fixtures.workspaces import make_workspace

pytestmark = pytest.mark.slow

N_IMAGES, N_TARGETS = 60, 16
PRICE_IN, PRICE_OUT = 0.15, 0.60          # USD per million tokens (gpt-4o-mini's list prices)
KEY = "sk-test-0123456789abcdef"


def local(model_dir: Path, kind: str) -> dict:
    return {"kind": kind, "model": str(model_dir), "batch_size": 4, "max_new_tokens": 6, "num_beams": 1}


def served(model_dir: Path, kind: str, url: str, **endpoint) -> dict:
    """The same captioner with its model behind ``url`` (fast retries, so the fault tests take seconds)."""
    return {**local(model_dir, kind), "backend": "endpoint",
            "endpoint": {"base_url": url, "concurrency": 4, "timeout": 20, "max_retries": 2, "backoff": 0.01,
                         "backoff_max": 2.0, **endpoint}}


def configure(ws: Workspace, **sections) -> None:
    update_config_file(ws.config_path, sections)
    ws.reload_config()


def copy_of(ws: Workspace, dest: Path) -> Workspace:
    shutil.copytree(ws.root, dest)
    return Workspace(dest)


def captions(ws: Workspace, name: str) -> dict:
    return ws.store.captions(name, CaptionStage(ws, name).config_hash())


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("endpoint-world")
    generate_demo_world(root, n_images=N_IMAGES, seed=7)
    return root


@pytest.fixture(scope="module")
def captioned(world, tiny_smolvlm_dir, vlm_server, tmp_path_factory, prefect_harness):
    """One run of the whole pipeline with each VLM captioner twice: in-process and through the server."""
    folder = tmp_path_factory.mktemp("endpoint-ws")
    template = folder / "short.txt"
    template.write_text(SHORT_TEMPLATE, encoding="utf-8")
    prices = {"price_input": PRICE_IN, "price_output": PRICE_OUT}
    ws = make_workspace(
        folder / "ws", data={"source": "demo", "path": str(world), "demo_images": N_IMAGES, "demo_seed": 7,
                             "n_targets": N_TARGETS},
        prompts={"template": str(template), "per_neighbour": "first"}, orchestration={"batch_size": 4},
        captioners={"enabled": ["vlm-neighbours", "vlm-plain", "vlm-neighbours-server", "vlm-plain-server"],
                    "vlm-neighbours": local(tiny_smolvlm_dir, "vlm-neighbours"),
                    "vlm-plain": local(tiny_smolvlm_dir, "vlm-plain"),
                    "vlm-neighbours-server": served(tiny_smolvlm_dir, "vlm-neighbours", vlm_server.url, **prices),
                    "vlm-plain-server": served(tiny_smolvlm_dir, "vlm-plain", vlm_server.url, **prices)},
        evaluate={"baseline": "vlm-plain"})
    vlm_server.reset()
    events = []
    os.environ["OPENAI_API_KEY"] = KEY
    try:
        outcome = run(ws, progress=events.append)
    finally:
        del os.environ["OPENAI_API_KEY"]
    return ws, outcome, events, vlm_server.stats()


def test_the_endpoint_writes_exactly_the_in_process_captions(captioned, tiny_smolvlm_dir):
    ws, outcome, _events, stats = captioned
    assert outcome.status == "completed"
    prompts = ws.store.prompts(PromptsStage(ws).config_hash())
    for name in ("vlm-neighbours", "vlm-plain"):
        here, there = captions(ws, name), captions(ws, f"{name}-server")
        assert len(here) == N_TARGETS and set(there) == set(here)
        assert all(r.status == "ok" for r in [*here.values(), *there.values()])
        assert {i: r.text for i, r in there.items()} == {i: r.text for i, r in here.items()}
        assert len({r.text for r in here.values()}) > 1           # the photos' captions differ: a real comparison
        assert CaptionStage(ws, name).config_hash() != CaptionStage(ws, f"{name}-server").config_hash()
        assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 and r.attempts == 1 for r in there.values())
        assert all(r.prompt_tokens == r.completion_tokens == 0 for r in here.values())
        assert {r.model for r in there.values()} == {str(tiny_smolvlm_dir)}
    # what went over the wire: per photo one request with the image first, then the prompt the in-process
    # captioner was given, greedy, max_new_tokens; the image as a lossless PNG at the processor's size (64 px)
    seen = stats["seen"]
    assert len(seen) == stats["requests"] == 2 * N_TARGETS
    assert {s["text"] for s in seen} == {p.text for p in prompts.values()} | {"Describe this image in one sentence."}
    for s in seen:
        assert s["roles"] == ["user"] and s["parts"] == [["image_url", "text"]] and s["fault"] is None
        assert s["max_tokens"] == 6 and s["temperature"] == 0 and s["model"] == str(tiny_smolvlm_dir)
        assert s["authorization"] == f"Bearer {KEY}"
        (image,) = s["images"]
        assert image["mime"] == "image/png" and max(image["size"]) == 64
    assert max(stats["batch_sizes"]) > 1                         # requests went out together: the server batched


def test_tokens_and_cost_per_photo_and_per_run(captioned):
    ws, outcome, events, _stats = captioned
    for name in ("vlm-neighbours-server", "vlm-plain-server"):
        rows = captions(ws, name).values()
        p, c = sum(r.prompt_tokens for r in rows), sum(r.completion_tokens for r in rows)
        stage = outcome.stage(f"caption:{name}")
        usage = stage.usage
        assert (usage.photos, usage.requests, usage.prompt_tokens, usage.completion_tokens) == (N_TARGETS, N_TARGETS, p, c)
        assert usage.cost_usd == pytest.approx((p * PRICE_IN + c * PRICE_OUT) / 1e6)
        as_json = stage.as_dict()["usage"]
        assert as_json["tokens"] == p + c and as_json["photos_per_second"] > 0 and as_json["tokens_per_second"] > 0
        # the progress line: tokens with the photos, so tokens/s shows beside photos/s
        last = [e for e in events if e.stage == f"caption:{name}" and e.kind == "advance"][-1]
        assert last.tokens == p + c and last.token_rate > 0
        # the stage run keeps it (the TUI and Prefect artifacts read it from the store or the outcome)
        (run_row,) = [r for r in ws.store.stage_runs(stage="caption") if r.variant == name]
        assert run_row.as_dict()["usage"]["prompt_tokens"] == p
    assert outcome.stage("caption:vlm-plain").usage is None        # in-process: no server, no tokens counted


def test_status_json_and_the_report_show_the_cost(captioned):
    ws, _outcome, _events, _stats = captioned
    report = workspace_status(ws).as_dict()
    stages = {s["stage"]: s for s in report["stages"]}
    rows = captions(ws, "vlm-plain-server").values()
    p, c = sum(r.prompt_tokens for r in rows), sum(r.completion_tokens for r in rows)
    assert stages["caption:vlm-plain-server"]["usage"]["prompt_tokens"] == p
    assert stages["caption:vlm-plain-server"]["usage"]["cost_usd"] == pytest.approx((p * PRICE_IN + c * PRICE_OUT) / 1e6)
    assert "usage" not in stages["caption:vlm-plain"]
    runs = [r for r in report["runs"] if r["stage"] == "caption" and r["variant"] == "vlm-plain-server"]
    assert runs[0]["usage"]["tokens_per_second"] > 0
    metrics = json.loads((ws.reports_dir / "metrics.json").read_text())
    usage = {u["captioner"]: u for u in metrics["caption_usage"]}
    assert set(usage) == {"vlm-neighbours-server", "vlm-plain-server"}
    assert usage["vlm-plain-server"]["stored"]["completion_tokens"] == c
    assert usage["vlm-plain-server"]["last_run"]["photos_per_second"] > 0
    assert "Captioning through a server" in (ws.reports_dir / "index.html").read_text()


def test_the_api_key_is_sent_but_never_written(captioned):
    ws, *_ = captioned
    for path in ws.root.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_a_second_run_sends_nothing(captioned, vlm_server, tmp_path):
    ws = copy_of(captioned[0], tmp_path / "again")
    vlm_server.reset()
    outcome = run(ws, stages=["caption"], captioners=["vlm-plain-server", "vlm-neighbours-server"])
    assert all(s.ran == 0 for s in outcome.stages)
    assert vlm_server.stats()["requests"] == 0


def test_faults_give_their_documented_outcome_and_retry_failed_captions_the_rest(captioned, tiny_smolvlm_dir,
                                                                                vlm_server, tmp_path):
    ws = copy_of(captioned[0], tmp_path / "faults")
    configure(ws, captioners={"enabled": ["vlm-neighbours", "faulty"],
                              "faulty": served(tiny_smolvlm_dir, "vlm-neighbours", vlm_server.url, timeout=60)})
    expected = {i: r.text for i, r in captions(ws, "vlm-neighbours").items()}
    prompts = {i: p.text for i, p in ws.store.prompts(PromptsStage(ws).config_hash()).items()}
    unique = sorted(i for i, text in prompts.items() if list(prompts.values()).count(text) == 1)
    assert len(unique) >= 6
    rate_limited, broken, dropped, truncated, empty, refused = unique[:6]
    vlm_server.reset()
    vlm_server.faults(
        {"kind": "status", "status": 429, "retry_after": 1.0, "match": prompts[rate_limited]},
        {"kind": "status", "status": 500, "times": -1, "match": prompts[broken]},
        {"kind": "drop", "match": prompts[dropped]},
        {"kind": "truncated", "times": -1, "match": prompts[truncated]},
        {"kind": "empty", "times": -1, "match": prompts[empty]},
        {"kind": "refusal", "times": -1, "match": prompts[refused]},
    )
    outcome = run(ws, stages=["caption"], captioners=["faulty"])
    stage = outcome.stage("caption:faulty")
    rows = captions(ws, "faulty")
    assert (stage.status, stage.done, stage.failed) == ("completed", N_TARGETS - 4, 4), \
        {i: r.error for i, r in rows.items() if r.status != "ok"}
    seen = vlm_server.stats()["seen"]
    tries = {i: [s for s in seen if s["text"] == prompts[i]] for i in unique[:6]}
    # retried, then captioned: 429 after its Retry-After (the backoff alone is 0.01 s), a dropped connection
    for item, fault in ((rate_limited, "status"), (dropped, "drop")):
        assert [s["fault"] for s in tries[item]] == [fault, None], tries[item]
        assert rows[item].status == "ok" and rows[item].attempts == 2 and rows[item].text == expected[item]
    assert tries[rate_limited][1]["at"] - tries[rate_limited][0]["at"] >= 0.95
    # 5xx every time: retried max_retries times, then the photo's failure with the reason
    assert len(tries[broken]) == 3
    assert rows[broken].status == "failed" and rows[broken].error == "HTTP 500: scripted 500 (3 tries)"
    # answers that are not captions: recorded at once, never retried
    assert len(tries[truncated]) == len(tries[empty]) == len(tries[refused]) == 1
    assert rows[truncated].status == "failed" and "malformed answer" in rows[truncated].error
    assert "not JSON" in rows[truncated].error
    assert rows[empty].status == "empty" and rows[empty].error == "the captioner returned an empty caption"
    assert rows[refused].status == "failed" and "refused" in rows[refused].error
    for item, row in rows.items():
        if item not in (broken, truncated, empty, refused):
            assert row.status == "ok" and row.text == expected[item]
    counts = CaptionStage(ws, "faulty").counts()
    assert counts.failed == 4 and counts.failures[broken] == rows[broken].error
    # a plain rerun leaves the failures alone; --retry-failed asks again for those four only
    vlm_server.reset()
    assert run(ws, stages=["caption"], captioners=["faulty"]).stage("caption:faulty").ran == 0
    assert vlm_server.stats()["requests"] == 0
    outcome = run(ws, stages=["caption"], captioners=["faulty"], retry_failed=True)
    assert outcome.stage("caption:faulty").done == 4 and vlm_server.stats()["requests"] == 4
    assert {i: r.text for i, r in captions(ws, "faulty").items()} == expected


def test_a_server_that_goes_away_stops_the_stage_and_nothing_captioned_is_lost(captioned, tiny_smolvlm_dir, tmp_path):
    ws = copy_of(captioned[0], tmp_path / "gone")
    expected = {i: r.text for i, r in captions(ws, "vlm-plain").items()}
    server = start_vlm_server(tiny_smolvlm_dir)
    try:
        configure(ws, orchestration={"batch_size": 4, "flow_threads": 1},
                  captioners={"enabled": ["vlm-plain", "doomed"],
                              "doomed": served(tiny_smolvlm_dir, "vlm-plain", server.url, concurrency=1)})
        server.faults({"kind": "exit", "after": 6})    # the 7th request ends the server's process
        started = time.monotonic()
        with pytest.raises(EndpointUnavailable, match=f"the server at {server.url} cannot be reached"):
            run(ws, stages=["caption"], captioners=["doomed"])
        assert time.monotonic() - started < 60
        assert server.proc.wait(timeout=10) == 3
    finally:
        server.stop()
    kept = captions(ws, "doomed")
    assert len(kept) == 6 and all(r.status == "ok" and r.text == expected[i] for i, r in kept.items())
    (last,) = [r for r in ws.store.stage_runs(stage="caption", limit=1)]
    assert last.status == "failed" and "cannot be reached" in last.message
    # the server is back (at another address: moving it changes no configuration hash): only the rest is sent
    again = start_vlm_server(tiny_smolvlm_dir)
    try:
        configure(ws, captioners={"doomed": served(tiny_smolvlm_dir, "vlm-plain", again.url, concurrency=1)})
        assert CaptionStage(ws, "doomed").config_hash() == list(kept.values())[0].config_hash
        outcome = run(ws, stages=["caption"], captioners=["doomed"])
        assert outcome.stage("caption:doomed").done == N_TARGETS - 6
        assert again.stats()["requests"] == N_TARGETS - 6
    finally:
        again.stop()
    assert {i: r.text for i, r in captions(ws, "doomed").items()} == expected


def test_cancel_stops_the_requests_in_flight_at_once(captioned, tiny_smolvlm_dir, vlm_server, tmp_path):
    ws = copy_of(captioned[0], tmp_path / "cancel")
    configure(ws, captioners={"enabled": ["vlm-plain", "hasty"],
                              "hasty": served(tiny_smolvlm_dir, "vlm-plain", vlm_server.url, concurrency=3,
                                              timeout=60)})
    stage = CaptionStage(ws, "hasty")
    stage.cancel_event = threading.Event()
    (batch,) = [b for b in stage.plan() if len(b.ids) == 4][:1]
    vlm_server.reset()
    vlm_server.faults({"kind": "delay", "seconds": 10, "times": -1, "after": 2})   # the first two answer
    raised: list[BaseException] = []

    def work() -> None:
        try:
            stage.run_batch(batch)
        except BaseException as exc:  # noqa: BLE001
            raised.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    wait_until(lambda: vlm_server.stats()["answered"] == 2 and vlm_server.stats()["in_flight"] == 2,
               "two answers and two requests hanging", timeout=60)
    cancelled_at = time.monotonic()
    stage.cancel_event.set()
    worker.join(timeout=10)
    assert not worker.is_alive() and time.monotonic() - cancelled_at < 1.0
    assert len(raised) == 1 and isinstance(raised[0], BatchCancelled)
    kept = captions(ws, "hasty")
    assert len(kept) == 2 and all(r.status == "ok" for r in kept.values())    # what was answered is committed
    wait_until(lambda: vlm_server.stats()["in_flight"] == 0, "the server to see the requests dropped", timeout=40)
    vlm_server.reset()


def test_sigterm_stops_a_capsearch_run_waiting_on_the_server(captioned, tiny_smolvlm_dir, vlm_server, tmp_path,
                                                             process_tag):
    from prefect.settings import PREFECT_API_URL

    ws = copy_of(captioned[0], tmp_path / "sigterm")
    configure(ws, captioners={"enabled": ["vlm-plain", "waiting"],
                              "waiting": served(tiny_smolvlm_dir, "vlm-plain", vlm_server.url, timeout=120)})
    vlm_server.reset()
    vlm_server.faults({"kind": "delay", "seconds": 20, "times": -1})
    env = process_tag.env({**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO)})
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "capsearch", "-w", str(ws.root), "run", "-s", "caption",
                                 "-c", "waiting"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: vlm_server.stats()["in_flight"] >= 1, "requests in flight", timeout=120, proc=proc, out=log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143, log.read_text()
        # it dropped its requests rather than wait for the answers (each is held 20 s): a condition, not a clock,
        # so a loaded machine's slow exit cannot fail it and a run that waits for an answer cannot pass
        assert vlm_server.stats()["answered"] == 0, "the run waited for the server's answer before it stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (last,) = [r for r in ws.store.stage_runs(stage="caption", limit=1)]
    assert last.status == "cancelled"
    wait_until(lambda: vlm_server.stats()["in_flight"] == 0, "the server to see the requests dropped", timeout=40)
    vlm_server.reset()


def test_a_slow_answer_holds_nothing_back_longer_than_its_timeout(tiny_smolvlm_dir, vlm_server, tiny_caption_images):
    from pipeline.captioners.endpoint import EndpointCaptioner
    from pipeline.captioners.vlm import VLMCaptioner
    from pipeline.config import EndpointConfig

    prompts = ["Similar photos:\na dog runs\nWrite one caption for this photo.",
               "Similar photos:\na cat sleeps\nWrite one caption for this photo.",
               "Similar photos:\na man rides\nWrite one caption for this photo."]
    images = tiny_caption_images[:3]
    captioner = EndpointCaptioner("vlm-neighbours", str(tiny_smolvlm_dir), EndpointConfig(
        base_url=vlm_server.url, concurrency=4, timeout=3, max_retries=1, backoff=0.01), max_new_tokens=6)
    captioner.caption_photos(images[:1], prompts[:1])        # the processor loaded, the server warm
    vlm_server.reset()
    vlm_server.faults({"kind": "delay", "seconds": 8, "match": prompts[0]},                 # once: then it answers
                      {"kind": "delay", "seconds": 15, "times": -1, "match": prompts[1]})   # never in time
    started = time.monotonic()
    batch = captioner.caption_photos(images, prompts)
    assert time.monotonic() - started < 12                    # two timeouts of 3 s, not the 15 s answers
    late, never, prompt = batch.outcomes
    expected = VLMCaptioner("vlm-neighbours", str(tiny_smolvlm_dir), device="cpu", max_new_tokens=6).caption(
        [images[0], images[2]], [prompts[0], prompts[2]])
    assert (late.status, late.attempts, late.text) == ("ok", 2, expected[0])
    assert (never.status, never.attempts, never.error) == ("failed", 2, "no answer within 3 s (2 tries)")
    assert (prompt.status, prompt.attempts, prompt.text) == ("ok", 1, expected[1])
    wait_until(lambda: vlm_server.stats()["in_flight"] == 0, "the server to see the requests dropped", timeout=40)
    vlm_server.reset()


def test_a_server_that_refuses_the_request_stops_the_captioner_not_each_photo(tiny_smolvlm_dir, vlm_server,
                                                                              tiny_caption_images):
    from pipeline.captioners.endpoint import EndpointCaptioner
    from pipeline.config import EndpointConfig

    images, prompts = tiny_caption_images[:3], ["Describe this image in one sentence."] * 3
    vlm_server.reset()
    wrong_model = EndpointCaptioner("vlm-plain", str(tiny_smolvlm_dir), EndpointConfig(
        base_url=vlm_server.url, model="no-such-model", backoff=0.01), needs_prompts=False, instruction=prompts[0])
    batch = wrong_model.caption_photos(images)
    assert batch.outcomes == [None, None, None] and not batch.cancelled
    assert batch.unavailable.startswith(f"the server at {vlm_server.url} refused the request (HTTP 404: the model "
                                        "'no-such-model' does not exist)")
    sent = vlm_server.stats()["requests"]
    assert 1 <= sent <= 3                                       # never retried
    assert wrong_model.caption_photos(images).unavailable == batch.unavailable   # later batches send nothing
    assert vlm_server.stats()["requests"] == sent
    vlm_server.faults({"kind": "status", "status": 401, "times": -1})
    bad_key = EndpointCaptioner("vlm-plain", str(tiny_smolvlm_dir), EndpointConfig(base_url=vlm_server.url),
                                needs_prompts=False, instruction=prompts[0])
    assert "refused the request (HTTP 401: scripted 401)" in bad_key.caption_photos(images).unavailable
    vlm_server.reset()


def test_endpoint_settings_are_checked_and_only_what_decides_a_caption_is_hashed(tiny_smolvlm_dir, workspace_factory):
    ws = workspace_factory(captioners={"enabled": ["vlm-plain"], "vlm-plain": local(tiny_smolvlm_dir, "vlm-plain")})
    in_process = CaptionStage(ws, "vlm-plain").config_hash()
    # an in-process captioner's hash is what it was before endpoints existed, whatever its endpoint table says
    configure(ws, captioners={"vlm-plain": {**local(tiny_smolvlm_dir, "vlm-plain"), "backend": "transformers",
                                            "endpoint": {"base_url": "http://x:1/v1", "model": "other"}}})
    assert CaptionStage(ws, "vlm-plain").config_hash() == in_process
    configure(ws, captioners={"vlm-plain": served(tiny_smolvlm_dir, "vlm-plain", "http://127.0.0.1:9/v1")})
    endpoint = CaptionStage(ws, "vlm-plain").config_hash()
    assert endpoint != in_process
    configure(ws, captioners={"vlm-plain": served(tiny_smolvlm_dir, "vlm-plain", "http://10.0.0.2:8000/v1",
                                                  concurrency=64, timeout=5, price_input=1.0)})
    assert CaptionStage(ws, "vlm-plain").config_hash() == endpoint    # where and how fast: the same captions
    configure(ws, captioners={"vlm-plain": served(tiny_smolvlm_dir, "vlm-plain", "http://127.0.0.1:9/v1",
                                                  model="HuggingFaceTB/SmolVLM-256M-Instruct")})
    assert CaptionStage(ws, "vlm-plain").config_hash() != endpoint    # another served model: other captions
    for bad, message in (({"kind": "blip", "backend": "endpoint"}, "is for VLM captioners"),
                         ({**local(tiny_smolvlm_dir, "vlm-plain"), "num_beams": 3, "backend": "endpoint"},
                          "decodes greedily")):
        update_config_file(ws.config_path, {"captioners": {"vlm-plain": bad}})
        with pytest.raises(ConfigError, match=message):
            ws.reload_config()


def test_a_hosted_model_needs_the_key_and_no_processor(tiny_smolvlm_dir, monkeypatch, tiny_caption_images):
    from pipeline.captioners.endpoint import EndpointCaptioner
    from pipeline.config import EndpointConfig

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    hosted = EndpointCaptioner("vlm-plain", "gpt-4o-mini", EndpointConfig(image_size=512, image_format="jpeg"),
                               needs_prompts=False, instruction="Describe this image in one sentence.")
    assert hosted.vlm is None and hosted.base_url == "https://api.openai.com/v1"
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        hosted.caption_photos(tiny_caption_images[:1])
    url = hosted.encode(tiny_caption_images[0].resize((1024, 768)))
    assert url.startswith("data:image/jpeg;base64,")
    assert hosted.cost(1_000_000, 0) is None


def test_config_show_lists_the_endpoint_and_masks_the_key(home, capsys, monkeypatch):
    from tests.fixtures.cli import run_cli

    assert run_cli(capsys, "init", "-w", "ws")[0] == 0
    update_config_file(home / "ws" / "capsearch.toml", {"captioners": {"vlm-plain": {
        "backend": "endpoint", "endpoint": {"base_url": "http://127.0.0.1:8000/v1", "price_input": 0.15}}}})
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("CAPSEARCH_CAPTIONERS__VLM_PLAIN__ENDPOINT__CONCURRENCY", "32")
    code, out, err = run_cli(capsys, "config", "show", "-w", "ws")
    assert code == 0, err
    assert 'backend = "endpoint"' in out and 'base_url = "http://127.0.0.1:8000/v1"' in out
    assert "concurrency = 32" in out and "price_input = 0.15" in out
    assert KEY not in out and "OPENAI_API_KEY: set (" in out
    code, out, _ = run_cli(capsys, "config", "show", "--json", "-w", "ws")
    config = json.loads(out)["config"]["captioners"]
    assert config["vlm-plain"]["endpoint"]["concurrency"] == 32 and "endpoint" not in config["blip-base"]


def test_progress_lines_show_tokens_per_second():
    from capsearch.cli.progress import LineProgress
    from pipeline.progress import ProgressEvent
    from pipeline.runs import StageLive
    from tui.widgets.progress import progress_line

    event = ProgressEvent("caption:vlm-plain-server", "advance", done=10, total=40, started_at=100.0, at=105.0,
                          tokens=5000)
    assert event.rate == 2.0 and event.token_rate == 1000.0
    assert progress_line(event).startswith("10/40 · 2.0/s · 1,000 tok/s · ETA")
    lines = []
    LineProgress(type("Out", (), {"print": lambda self, text, **kw: lines.append(text)})())(event)
    assert lines[0].endswith("caption:vlm-plain-server: 10/40, 2.0/s, 1,000 tok/s")
    live = StageLive("caption:vlm-plain-server", 0, "running", 10, 40, 0, 0, 0, 2.0, "", "info", 100.0, 105.0, 5000)
    assert live.describe() == "caption:vlm-plain-server 10 of 40, 2.0/s, 1,000 tok/s"
    assert live.event().tokens == 5000
    assert progress_line(ProgressEvent("caption:knn-consensus", "advance", done=10, total=40, started_at=100.0,
                                       at=105.0)).count("tok/s") == 0


def test_the_gpu_check_says_why_it_skips_the_vllm_path(tmp_path, monkeypatch):
    from bench import gpu

    monkeypatch.setenv("PATH", str(tmp_path))          # no vllm on it
    monkeypatch.delenv("VLLM", raising=False)
    assert gpu.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--sections", "vllm_endpoint"]) == 0
    section = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))["sections"]["vllm_endpoint"]
    assert section["status"] == "skipped" and "vllm is not installed here" in section["reason"]
    monkeypatch.setenv("VLLM", "/opt/elsewhere/bin/vllm")
    assert gpu.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--sections", "vllm_endpoint"]) == 0
    section = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))["sections"]["vllm_endpoint"]
    assert section == {"status": "skipped", "reason": "vLLM serves on a CUDA GPU; this check runs on cpu",
                       "seconds": section["seconds"]}
