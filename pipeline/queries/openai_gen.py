"""Evaluation queries written by a vision-language model behind any OpenAI-compatible chat endpoint.

For each target the photo (downscaled JPEG as a base64 data URL) and one of its own
reference captions (chosen as in ``reference.py``) are sent with a request for JSON
``{"short": ..., "detail": ...}``. ``response_format`` asks for that schema, but servers
may ignore it, so the answer is parsed leniently (code fences and text around the
object are tolerated) and then validated.

Requests run in a thread pool of ``concurrency`` workers sharing one client. The
client's own retries are switched off (``max_retries=0``): this module retries as
``pipeline.retry_policy`` says (408, 409, 429, 5xx, timeouts and connection errors, up
to ``max_retries`` times, exponential backoff with jitter from ``backoff_base`` capped
at ``backoff_max``, or the server's Retry-After when that is longer). Other errors, unreadable photos and invalid answers are not
retried. Every failure ends up in ``QueryResult.error`` with the image id and
reason; nothing is raised per item.

The API key comes from the environment variable ``api_key_env`` only, is read when
a run starts, and is never stored on the object, logged or put into an error. A
local server (``base_url`` set) needs no key.
"""
from __future__ import annotations

import base64
import io
import json
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

from pipeline.backends import QueryRequest, QueryResult
from pipeline.config import environment
from pipeline.errors import ConfigError
from pipeline.hashing import hash_text
from pipeline.progress import ProgressCallback, StageProgress
from pipeline.retry_policy import backoff_delay, retry_after_seconds, retryable_status
from pipeline.queries.reference import check_kinds, choose_caption_index, clean_caption

# USD per million tokens (input, output), OpenAI list prices for standard processing as published in 2025.
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}
NO_KEY_PLACEHOLDER = "no-key-needed"
KIND_INSTRUCTIONS = {
    "short": '"short": 2 to 5 lower-case keywords without punctuation, the way people type into a photo '
             'search box (for example "dog playing snow")',
    "detail": '"detail": one full sentence describing the main subject, what it is doing and where',
}
SYSTEM_PROMPT = "You write queries that people would use to find a given photo in a large photo collection. Answer with one JSON object only."
USER_PROMPT = (
    "Write search queries for this photo.\n{instructions}\n"
    "{caption_line}"
    "Answer with JSON only, exactly these keys: {keys}."
)


def estimate_cost(prompt_tokens: int, completion_tokens: int, model: str) -> float | None:
    """USD cost from ``PRICES_PER_MILLION``; dated snapshots ("gpt-4o-mini-2024-07-18") use their family's
    price; unknown models give None."""
    for name in sorted(PRICES_PER_MILLION, key=len, reverse=True):
        if model == name or re.fullmatch(re.escape(name) + r"-\d{4}-\d{2}-\d{2}", model):
            price_in, price_out = PRICES_PER_MILLION[name]
            return (prompt_tokens * price_in + completion_tokens * price_out) / 1e6
    return None


def usage_line(usage: dict[str, Any]) -> str:
    """One line on a query run's requests, failures, tokens and estimated cost."""
    cost = usage.get("cost_usd")
    money = "cost unknown for this model" if cost is None else f"estimated cost ${cost:.4f}"
    return (f"{usage['requests']} targets, {usage['failures']} failed; {usage['prompt_tokens']} prompt + "
            f"{usage['completion_tokens']} completion tokens ({usage.get('model') or usage.get('generator')}); {money}")


@dataclass(frozen=True)
class UsageSummary:
    requests: int
    failures: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None


def summarise_usage(results: Sequence[QueryResult], model: str) -> UsageSummary:
    """Token totals over results (failed answers that still used tokens included) and their cost."""
    p = sum(r.prompt_tokens for r in results)
    c = sum(r.completion_tokens for r in results)
    return UsageSummary(len(results), sum(r.error is not None for r in results), p, c, estimate_cost(p, c, model))


def image_data_url(path: str, max_side: int = 512, quality: int = 85) -> str:
    """The photo as a JPEG data URL, longest side at most ``max_side`` pixels."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def parse_answer(content: str | None, kinds: Sequence[str]) -> dict[str, str]:
    """The queries in a model answer; raises ValueError with the reason when it is unusable."""
    if content is None or not content.strip():
        raise ValueError("the answer is empty")
    start = content.find("{")
    if start < 0:
        raise ValueError(f"the answer is not valid JSON: {_snippet(content)}")
    try:
        data, _ = json.JSONDecoder().raw_decode(content[start:])
    except json.JSONDecodeError:
        raise ValueError(f"the answer is not valid JSON: {_snippet(content)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"the answer is JSON but not an object: {_snippet(content)}")
    out = {}
    for kind in kinds:
        value = data.get(kind)
        if not isinstance(value, str) or not value.strip(" \t\n\"'"):
            raise ValueError(f"the answer has no usable '{kind}' query: {_snippet(content)}")
        out[kind] = " ".join(value.strip(" \t\n\"'").split())
    return out


def _snippet(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    return retry_after_seconds(getattr(response, "headers", None))


def _redact_url(url: str | None) -> str | None:
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class OpenAIQueryGenerator:
    """``QueryGenerator`` calling an OpenAI-compatible chat endpoint with the photo and a reference caption."""

    name = "openai"

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        image_size: int = 512,
        jpeg_quality: int = 85,
        temperature: float = 0.2,
        max_tokens: int = 200,
        response_format: str = "json_schema",
        seed: int = 0,
    ):
        if concurrency < 1:
            raise ConfigError(f"query concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if response_format not in ("json_schema", "json_object", "none"):
            raise ConfigError(f"response_format must be json_schema, json_object or none, got {response_format!r}")
        self.model = model
        self.base_url = base_url or environment().openai_base_url or None
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.image_size = image_size
        self.jpeg_quality = jpeg_quality
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.response_format = response_format
        self.seed = seed
        self._random = random.Random()
        self._api_key()  # fail early, with the variable's name, when no key is available

    def __repr__(self) -> str:
        return f"OpenAIQueryGenerator(model={self.model!r}, base_url={_redact_url(self.base_url)!r})"

    def _api_key(self) -> str:
        key = environment().secret(self.api_key_env)
        if key:
            return key
        if self.base_url:
            return NO_KEY_PLACEHOLDER
        raise ConfigError(
            f"{self.api_key_env} is not set: export it, or set base_url to a local OpenAI-compatible server"
        )

    def settings(self) -> dict[str, Any]:
        return {
            "generator": self.name, "model": self.model, "base_url": _redact_url(self.base_url),
            "temperature": self.temperature, "max_tokens": self.max_tokens, "image_size": self.image_size,
            "jpeg_quality": self.jpeg_quality, "response_format": self.response_format, "seed": self.seed,
            "prompt": hash_text(SYSTEM_PROMPT + USER_PROMPT + json.dumps(KIND_INSTRUCTIONS, sort_keys=True)),
        }

    def messages(self, data_url: str, caption: str | None, kinds: Sequence[str]) -> list[dict[str, Any]]:
        caption_line = f'A person described it as: "{caption}"\n' if caption else ""
        text = USER_PROMPT.format(
            instructions="\n".join(f"- {KIND_INSTRUCTIONS[k]}" for k in kinds),
            caption_line=caption_line, keys=", ".join(f'"{k}"' for k in kinds),
        )
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": data_url}},
            ]},
        ]

    def _response_format(self, kinds: Sequence[str]) -> dict[str, Any] | None:
        if self.response_format == "json_object":
            return {"type": "json_object"}
        if self.response_format == "json_schema":
            schema = {"type": "object", "properties": {k: {"type": "string"} for k in kinds},
                      "required": list(kinds), "additionalProperties": False}
            return {"type": "json_schema", "json_schema": {"name": "search_queries", "strict": True, "schema": schema}}
        return None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        return backoff_delay(attempt, self.backoff_base, self.backoff_max, retry_after, self._random)

    def generate(
        self, requests: Sequence[QueryRequest], kinds: Sequence[str], progress: ProgressCallback | None = None
    ) -> list[QueryResult]:
        import openai

        kinds = check_kinds(kinds)
        key = self._api_key()
        tracker = StageProgress(f"queries:{self.name}", len(requests), progress)
        lock = threading.Lock()
        client = openai.OpenAI(api_key=key, base_url=self.base_url, timeout=self.timeout, max_retries=0)

        def run(request: QueryRequest) -> QueryResult:
            result = self._one(client, request, kinds, key)
            with lock:
                tracker.advance(failures=int(result.error is not None))
                if result.error:
                    tracker.message(result.error, level="warning")
            return result

        try:
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="queries") as pool:
                results = list(pool.map(run, requests))
        finally:
            client.close()
        tracker.finish()
        return results

    def _one(self, client: Any, request: QueryRequest, kinds: list[str], key: str) -> QueryResult:
        import openai

        image_id = request.image_id
        index = choose_caption_index(image_id, request.reference_captions, self.seed)
        caption = clean_caption(request.reference_captions[index]) if index is not None else None
        result = QueryResult(image_id, source_caption_index=index)
        try:
            url = image_data_url(request.image_path, self.image_size, self.jpeg_quality)
        except Exception as exc:
            result.error = f"image {image_id}: cannot read photo {request.image_path}: {exc}"
            return result
        extra: dict[str, Any] = {}
        if (fmt := self._response_format(kinds)) is not None:
            extra["response_format"] = fmt
        for attempt in range(self.max_retries + 1):
            try:
                response = client.chat.completions.create(
                    model=self.model, messages=self.messages(url, caption, kinds),
                    temperature=self.temperature, max_tokens=self.max_tokens, **extra,
                )
                break
            except (openai.APITimeoutError, openai.APIConnectionError, openai.APIStatusError) as exc:
                reason = self._reason(exc, key)
                if not retryable_status(getattr(exc, "status_code", None)) or attempt == self.max_retries:
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    result.error = f"image {image_id}: request failed{tries}: {reason}"
                    return result
                time.sleep(self._delay(attempt, _retry_after(exc)))
            except openai.OpenAIError as exc:
                result.error = f"image {image_id}: request failed: {self._reason(exc, key)}"
                return result
        usage = getattr(response, "usage", None)
        result.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        result.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        try:
            choice = response.choices[0]
            content = choice.message.content
            if content is None and getattr(choice.message, "refusal", None):
                raise ValueError(f"the model refused: {_snippet(choice.message.refusal)}")
            result.queries = parse_answer(content, kinds)
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            truncated = " (cut off at max_tokens)" if _finish_reason(response) == "length" else ""
            result.error = f"image {image_id}: unusable answer from {self.model}: {exc}{truncated}"
        return result

    def _reason(self, exc: Exception, key: str) -> str:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return f"timed out after {self.timeout:g} s"
        status = getattr(exc, "status_code", None)
        text = " ".join(str(getattr(exc, "message", None) or exc).split())[:300]
        if key and key != NO_KEY_PLACEHOLDER:
            text = text.replace(key, "***")
        return f"HTTP {status}: {text}" if status else f"{type(exc).__name__}: {text}"


def _finish_reason(response: Any) -> str | None:
    try:
        return response.choices[0].finish_reason
    except (AttributeError, IndexError, TypeError):
        return None
