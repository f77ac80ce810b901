"""Query generation: the offline reference rule, and the real openai client against a scripted local server."""
from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
from pathlib import Path

import pytest
from PIL import Image

from pipeline.backends import QueryGenerator, QueryRequest
from pipeline.errors import ConfigError
from pipeline.queries.openai_gen import OpenAIQueryGenerator, estimate_cost, parse_answer, summarise_usage
from pipeline.queries.reference import ReferenceQueryGenerator, clean_caption, short_query
from tests.fixtures.openai_server import Reply, fail_then

SECRET = "sk-test-SECRET-0123456789"
CAPTIONS = [
    ["A black dog is running through the snow .", "A dog runs in snow ."],
    ["Two children are playing on a swing set ."],
    ["A man in a red jacket climbs a rock wall ."],
    ["A little girl in a pink dress going into a wooden cabin ."],
    ["A brown horse stands in a green field ."],
    ["Three people are walking along the beach at sunset ."],
]


# ---------------------------------------------------------------- reference queries

@pytest.mark.parametrize("caption,short", [
    ("A black dog is running through the snow .", "black dog running snow"),
    ("A little girl in a pink dress going into a wooden cabin .", "little girl pink dress"),
    ("Two dogs are playing in the grass", "two dogs playing grass"),
    ("The man 's bike is leaning against a wall .", "man bike leaning wall"),
    ("A dog and a dog .", "dog"),
    ("It is there .", "it is there"),
])
def test_short_query_rule(caption, short):
    assert short_query(caption) == short


def test_detail_cleaning():
    assert clean_caption("A black dog is running through the snow .") == "A black dog is running through the snow"
    assert clean_caption("  a man 's hat , red .  ") == "A man's hat, red"


def _requests(tmp_path: Path, captions=CAPTIONS) -> list[QueryRequest]:
    out = []
    for i, caps in enumerate(captions):
        path = tmp_path / f"img{i}.jpg"
        Image.new("RGB", (800, 600), (40 * i, 100, 200 - 30 * i)).save(path)
        out.append(QueryRequest(image_id=f"img{i}", image_path=str(path), reference_captions=list(caps)))
    return out


def test_reference_generator_is_deterministic_and_uses_own_captions(tmp_path):
    many = [QueryRequest(f"id{i}", "", [f"caption {j} of image {i} with a dog" for j in range(5)]) for i in range(40)]
    gen = ReferenceQueryGenerator(seed=0)
    assert isinstance(gen, QueryGenerator)
    first = gen.generate(many, ["short", "detail"])
    assert first == ReferenceQueryGenerator(seed=0).generate(many, ["short", "detail"])
    for req, res in zip(many, first):
        assert res.error is None and res.image_id == req.image_id
        assert res.queries["detail"] == clean_caption(req.reference_captions[res.source_caption_index])
        assert res.queries["short"] == short_query(req.reference_captions[res.source_caption_index])
    assert len({r.source_caption_index for r in first}) > 1          # spread over captions, not always the first
    other = ReferenceQueryGenerator(seed=1).generate(many, ["detail"])
    assert [r.source_caption_index for r in other] != [r.source_caption_index for r in first]
    assert list(other[0].queries) == ["detail"]


def test_reference_generator_reports_targets_without_captions():
    reqs = [QueryRequest("a", "", ["", "  ", "A cat sleeps ."]), QueryRequest("b", "", [])]
    res = ReferenceQueryGenerator().generate(reqs, ["short", "detail"])
    assert res[0].source_caption_index == 2 and res[0].queries == {"short": "cat sleeps", "detail": "A cat sleeps"}
    assert res[1].queries == {} and "image b" in res[1].error and "no reference caption" in res[1].error
    with pytest.raises(ConfigError, match="query kinds"):
        ReferenceQueryGenerator().generate(reqs, ["long"])


# ---------------------------------------------------------------- OpenAI-compatible generator

def _echo(request, attempt) -> Reply:
    """Answer with queries naming the image whose caption is in the prompt."""
    for i, caps in enumerate(CAPTIONS):
        if any(clean_caption(c) in request.text for c in caps):
            return Reply.answer({"short": f"short {i}", "detail": f"Detail for image {i}."})
    return Reply.error(400, "unknown caption")


@pytest.fixture
def make_gen(chat_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    def make(**kw) -> OpenAIQueryGenerator:
        opts = dict(base_url=chat_server.url, concurrency=4, timeout=5, max_retries=3,
                    backoff_base=0.01, backoff_max=1.0)
        opts.update(kw)
        return OpenAIQueryGenerator(**opts)

    return make


def test_good_answers_are_parsed_and_requests_carry_photo_and_caption(chat_server, make_gen, tmp_path, caplog):
    chat_server.script = _echo
    reqs = _requests(tmp_path)
    gen = make_gen(model="gpt-4o-mini")
    with caplog.at_level(logging.DEBUG):
        results = gen.generate(reqs, ["short", "detail"])
    assert isinstance(gen, QueryGenerator)
    for i, res in enumerate(results):
        assert res.error is None, res.error
        assert res.queries == {"short": f"short {i}", "detail": f"Detail for image {i}."}
        assert res.source_caption_index is not None
        assert (res.prompt_tokens, res.completion_tokens) == (120, 25)
    assert len(chat_server.requests) == len(reqs)
    for rec in chat_server.requests:
        assert rec.path == "/v1/chat/completions" and rec.body["model"] == "gpt-4o-mini"
        assert rec.body["response_format"]["type"] == "json_schema"
        [url] = rec.image_urls
        assert url.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
            assert im.format == "JPEG" and max(im.size) == 512
        assert rec.headers["authorization"] == f"Bearer {SECRET}"
        assert SECRET.encode() not in rec.raw
        assert not any(SECRET in v for k, v in rec.headers.items() if k != "authorization")
    # the caption the generator chose for each image is in that image's prompt
    texts = [rec.text for rec in chat_server.requests]
    for req, res in zip(reqs, results):
        caption = clean_caption(req.reference_captions[res.source_caption_index])
        assert sum(caption in t for t in texts) == 1
    exposed = " ".join([repr(gen), json.dumps(gen.settings()), caplog.text] + [str(r) for r in results])
    assert SECRET not in exposed


def test_rate_limit_is_retried_after_retry_after(chat_server, make_gen, tmp_path):
    chat_server.script = fail_then(1, Reply.error(429, "slow down", retry_after=0.4), _echo)
    results = make_gen().generate(_requests(tmp_path)[:1], ["short"])
    assert results[0].error is None and results[0].queries == {"short": "short 0"}
    first, second = chat_server.requests
    assert second.received_at - first.received_at >= 0.4      # backoff_base is 0.01: the wait came from Retry-After


def test_server_errors_are_retried_up_to_the_limit(chat_server, make_gen, tmp_path):
    chat_server.script = fail_then(2, Reply.error(500, "boom"), _echo)
    ok = make_gen(max_retries=2).generate(_requests(tmp_path)[:2], ["detail"])
    assert [r.error for r in ok] == [None, None] and len(chat_server.requests) == 6

    chat_server.requests.clear()
    chat_server.script = fail_then(5, Reply.error(503, "overloaded"), _echo)
    [failed] = make_gen(max_retries=1).generate(_requests(tmp_path)[2:3], ["detail"])
    assert failed.queries == {} and len(chat_server.requests) == 2
    assert failed.error.startswith("image img2: request failed after 2 attempts: HTTP 503")


def test_client_errors_are_not_retried(chat_server, make_gen, tmp_path):
    chat_server.script = lambda request, attempt: Reply.error(400, "bad image")
    [res] = make_gen().generate(_requests(tmp_path)[:1], ["short"])
    assert len(chat_server.requests) == 1
    assert "image img0" in res.error and "HTTP 400" in res.error and "bad image" in res.error


def test_malformed_answers_are_failures_naming_the_image(chat_server, make_gen, tmp_path):
    answers = {0: "this is not json {", 1: '{"short": "dog"}', 2: "```json\n{\"short\": \"dog snow\", \"detail\": \"A dog.\"}\n```"}

    def script(request, attempt):
        i = next(i for i, caps in enumerate(CAPTIONS) if any(clean_caption(c) in request.text for c in caps))
        return Reply.answer(answers[i], prompt_tokens=100, completion_tokens=10)

    chat_server.script = script
    res = make_gen().generate(_requests(tmp_path)[:3], ["short", "detail"])
    assert res[0].error.startswith("image img0: unusable answer") and "not valid JSON" in res[0].error
    assert "image img1" in res[1].error and "'detail'" in res[1].error
    assert res[2].error is None and res[2].queries == {"short": "dog snow", "detail": "A dog."}
    assert len(chat_server.requests) == 3                        # invalid answers are not retried
    assert summarise_usage(res, "gpt-4o-mini").prompt_tokens == 300   # tokens of failed answers still count


def test_too_slow_answers_time_out(chat_server, make_gen, tmp_path):
    chat_server.script = lambda request, attempt: Reply.answer({"short": "late"}, delay=5)
    start = time.monotonic()
    [res] = make_gen(timeout=0.5, max_retries=0).generate(_requests(tmp_path)[:1], ["short"])
    assert time.monotonic() - start < 4
    assert res.error == "image img0: request failed: timed out after 0.5 s"


def test_a_timed_out_request_is_retried_and_the_retry_answers(chat_server, make_gen, tmp_path):
    slow = Reply.answer({"short": "too late", "detail": "Too late."}, delay=5)
    chat_server.script = fail_then(1, slow, _echo)
    start = time.monotonic()
    [res] = make_gen(timeout=0.5, max_retries=1).generate(_requests(tmp_path)[:1], ["short", "detail"])
    assert time.monotonic() - start < 4, "the retry did not wait for the slow first answer"
    assert res.error is None, res.error
    assert res.queries == {"short": "short 0", "detail": "Detail for image 0."}
    first, second = chat_server.requests
    assert first.text == second.text                      # the same request, sent again
    assert second.received_at - first.received_at >= 0.5  # after the first one timed out


def test_concurrency_is_bounded(chat_server, make_gen, tmp_path):
    chat_server.script = lambda request, attempt: Reply.answer({"short": "q", "detail": "Q."}, delay=0.25)
    reqs = _requests(tmp_path, CAPTIONS * 2)
    res = make_gen(concurrency=3).generate(reqs, ["short", "detail"])
    assert all(r.error is None for r in res) and len(chat_server.requests) == 12
    assert chat_server.max_in_flight == 3


def test_usage_and_cost_are_summed(chat_server, make_gen, tmp_path):
    chat_server.script = _echo
    res = make_gen().generate(_requests(tmp_path), ["short", "detail"])
    summary = summarise_usage(res, "gpt-4o-mini")
    assert (summary.requests, summary.failures, summary.prompt_tokens, summary.completion_tokens) == (6, 0, 720, 150)
    assert summary.cost_usd == pytest.approx((720 * 0.15 + 150 * 0.60) / 1e6)
    assert estimate_cost(1_000_000, 0, "gpt-4o-mini-2024-07-18") == pytest.approx(0.15)
    assert estimate_cost(0, 1_000_000, "gpt-4o") == pytest.approx(10.0)
    assert estimate_cost(10, 10, "my-local-llava") is None


def test_unreadable_photo_is_recorded_without_a_request(chat_server, make_gen, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    [res] = make_gen().generate([QueryRequest("broken", str(bad), ["A cat ."])], ["short"])
    assert res.error.startswith(f"image broken: cannot read photo {bad}") and chat_server.requests == []


def test_api_key_comes_from_the_environment_only(chat_server, monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        OpenAIQueryGenerator()
    chat_server.script = _echo
    [res] = OpenAIQueryGenerator(base_url=chat_server.url, max_retries=0).generate(_requests(tmp_path)[:1], ["short"])
    assert res.error is None
    assert chat_server.requests[0].headers["authorization"] == "Bearer no-key-needed"


def test_parse_answer_is_lenient_about_wrapping_and_strict_about_content():
    assert parse_answer('Sure! {"short": " Dog  snow ", "detail": "A dog."} Hope it helps', ["short"]) == {"short": "Dog snow"}
    for bad in (None, "", "[1, 2]", '{"short": ""}', '{"short": 3}'):
        with pytest.raises(ValueError):
            parse_answer(bad, ["short"])
    assert re.search("not valid JSON", str(pytest.raises(ValueError, parse_answer, "{oops", ["short"]).value))
