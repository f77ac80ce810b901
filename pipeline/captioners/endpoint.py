"""A VLM captioner whose model runs in a server: any OpenAI-compatible chat-completions endpoint with image input
(vLLM, SGLang, llama.cpp's ``llama-server``, Ollama, LM Studio, a hosted model).

What is sent, per photo, is what the in-process ``VLMCaptioner`` gives its model, so that a server running the
same model with greedy decoding writes the same caption:

- the same user text (``vlm-neighbours``: the photo's prompt, the neighbours' captions in the template;
  ``vlm-plain``: the fixed instruction), after the image, as one user message, with no system message: the
  server applies the model's own chat template to it, as ``VLMCaptioner.chat_text`` does in-process;
- the photo as decoded for the in-process captioner (``open_rgb``, at most 2048 px), as a lossless PNG data URL,
  resized as the model's processor would resize it first (so a 12-megapixel photo is sent at the size the
  model sees, not at 2048 px): the processor's own ``resize`` on the same pixels, used only after a probe showed
  that the processor gives bit-identical pixel values for the resized and the original image (else the photo is
  sent as decoded). With ``endpoint.image_size = N`` no processor is loaded: the photo is sent with its long side
  at most N pixels (for a hosted model or a server whose model has no Hugging Face processor);
- ``max_tokens`` = ``max_new_tokens`` and ``temperature`` 0 (greedy); the answer is cleaned with
  ``clean_caption``, as in-process.

**Feeding the server.** One event loop in a thread of its own, one HTTP client (``httpx``) and one limit of
``endpoint.concurrency`` requests in flight serve every batch of the stage run that is in flight at the time (the
flows run several), so the server's continuous batching always has work; photos are PNG-encoded in a few
threads ahead of their requests. Each request has ``endpoint.timeout`` seconds in all. Retries follow
``pipeline.retry_policy`` (429, 5xx, timeouts and dropped connections; exponential backoff with jitter, or
``Retry-After`` when longer). A malformed, empty or refused answer, or a photo whose tries all failed, is that
photo's failure with the reason (``--retry-failed`` tries it again). A server that cannot be reached once a
photo's tries are spent, or that refuses the request as configured (401, 403, 404: the key, the model name, the
URL), is *unavailable*: the batch keeps what it captioned, the later batches of the run send nothing, and the
stage fails with one line naming the server (the next run captions what is missing).
``cancelled()`` (the run's cancel event: ``x``, ``capsearch cancel``, SIGTERM) is checked every 50 ms and
cancels the requests in flight at once.

**Accounting.** Each photo's prompt and completion tokens (the server's ``usage``), the requests it took and its
time; the stage adds them up per batch and run (``pipeline.stages.outcome.TokenUsage``), with a cost when
``endpoint.price_input`` / ``price_output`` (USD per million tokens) are set.

The API key is ``OPENAI_API_KEY`` from the environment (one of ``pipeline.config.SECRET_NAMES``), read when a batch starts,
kept only in the HTTP client's headers, and never written or put into a message. A server at ``base_url``
needs none unless it was started with one.
"""
from __future__ import annotations

import asyncio
import base64
import io
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from pipeline.captioners.generation import GenerationSettings, check_prompts, clean_caption, to_rgb
from pipeline.captioners.robust import EMPTY, CaptionOutcome
from pipeline.config import environment
from pipeline.errors import CapsearchError, ConfigError, one_line
from pipeline.retry_policy import backoff_delay, retry_after_seconds, retryable_status

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.captioners.vlm import VLMCaptioner
    from pipeline.config import EndpointConfig
    from pipeline.progress import StageProgress

OPENAI_URL = "https://api.openai.com/v1"
API_KEY_ENV = "OPENAI_API_KEY"
# Answers that say the request can never work as configured (a wrong key, model name or URL): the stage stops
# instead of recording every photo as failed. Other 4xx (a photo too large, a prompt too long) are the photo's.
REFUSED_STATUS = frozenset({401, 403, 404})
CANCEL_POLL_SECONDS = 0.05
PNG_COMPRESS_LEVEL = 1      # lossless whatever the level; 1 encodes several times faster than the default 6
JPEG_QUALITY = 90
PROBE_SIDE = 2048           # the probe is as large as the decoded photos get (MAX_CAPTION_SIDE)


class EndpointUnavailable(CapsearchError):
    """The server could not be reached once a photo's tries were spent: the stage stops (what it captioned is kept)."""


@dataclass
class EndpointBatch:
    """A batch's answers: one outcome per photo, ``None`` for a photo that was not captioned because the run was
    cancelled or the server became unavailable first (it is neither done nor failed: the next run captions it)."""
    outcomes: list[CaptionOutcome | None] = field(default_factory=list)
    requests: int = 0                   # requests sent, retries included
    cancelled: bool = False
    unavailable: str | None = None      # why the server could not be reached


def redact_url(url: str) -> str:
    """``url`` without user name or password (a URL may carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _snippet(text: str, limit: int = 100) -> str:
    text = " ".join(str(text).split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


@dataclass
class _Try:
    """How one request ended."""
    status: int | None = None           # HTTP status (None: no answer: a timeout or a dropped connection)
    payload: Any = None                 # the parsed JSON of a 200 answer
    reason: str = ""                    # why it failed, in words
    retry_after: float | None = None
    unreachable: bool = False           # the connection failed (refused, reset): the server may be gone


class EndpointCaptioner:
    """``pipeline.backends.Captioner`` for a VLM behind an OpenAI-compatible server (see the module)."""

    kind = "endpoint"

    def __init__(self, name: str, model_id: str, endpoint: "EndpointConfig", *, needs_prompts: bool = True,
                 instruction: str = "", max_new_tokens: int = 64):
        """``model_id``: the Hugging Face model (hub name or folder) the server serves: its processor sizes the photos
        and counts prompt tokens (not loaded with ``endpoint.image_size`` set). The served name is
        ``endpoint.model`` or ``model_id``."""
        self.name = name
        self.endpoint = endpoint
        self.served_model = endpoint.model or model_id
        self.model_id = self.served_model           # what the caption rows record as their model
        self.processor_model = model_id if endpoint.image_size == 0 else ""
        self.needs_prompts = needs_prompts
        self.instruction = instruction
        self.generation = GenerationSettings(max_new_tokens=max_new_tokens).validate(name)
        self.base_url = (endpoint.base_url or OPENAI_URL).rstrip("/")
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._users = 0
        self._unavailable: str | None = None
        self._presize_checked = False
        self._presize: Callable[["Image.Image"], "Image.Image"] | None = None
        self._random = random.Random()

    def __repr__(self) -> str:
        return f"EndpointCaptioner(name={self.name!r}, model={self.served_model!r}, url={redact_url(self.base_url)!r})"

    # -- what it is ------------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": "endpoint", "model": self.served_model,
                               "max_new_tokens": self.generation.max_new_tokens, "temperature": 0,
                               "image_size": self.endpoint.image_size or "processor",
                               "image_format": self.endpoint.image_format}
        if not self.needs_prompts:
            out["instruction"] = self.instruction
        return out

    def user_text(self, prompt: str | None) -> str:
        """The text sent with the photo: the prompt, or the fixed instruction of a plain captioner."""
        return prompt if self.needs_prompts else self.instruction   # type: ignore[return-value]

    @cached_property
    def vlm(self) -> "VLMCaptioner | None":
        """The in-process captioner of the same model, for its processor only (its weights are never loaded)."""
        if not self.processor_model:
            return None
        from pipeline.captioners.vlm import VLMCaptioner

        return VLMCaptioner(self.name, self.processor_model, needs_prompts=self.needs_prompts,
                            instruction=self.instruction, device="cpu", max_new_tokens=self.generation.max_new_tokens)

    @property
    def unavailable(self) -> str | None:
        """Why the server could not be reached in this stage run (None: it could, or nobody tried yet)."""
        return self._unavailable

    # -- the prompt budget, for the prompts stage (as VLMCaptioner; only with the model's processor here) --------
    def _processor_vlm(self) -> "VLMCaptioner":
        if self.vlm is None:
            raise ConfigError(f"captioner {self.name}: endpoint.image_size is set, so no processor of the model is "
                              "loaded here to count its tokens")
        return self.vlm

    def count_prompt_tokens(self, text: str) -> int:
        return self._processor_vlm().count_prompt_tokens(text)

    @property
    def max_prompt_tokens(self) -> int:
        """What the model's context leaves for the prompt, with the image and the answer."""
        return self._processor_vlm().max_prompt_tokens

    # -- the photo --------------------------------------------------------------------------------------
    def _presizer(self) -> Callable[["Image.Image"], "Image.Image"] | None:
        """The processor's first resize, if the processor gives the same pixel values for its output as for the
        original (checked once, on a probe as large as decoded photos get); else None: send photos as decoded."""
        with self._lock:
            if self._presize_checked:
                return self._presize
            self._presize_checked = True
            if self.vlm is None:
                return None
            self._presize = _checked_presizer(self.vlm.processor.image_processor)
            return self._presize

    def encode(self, image: "Image.Image") -> str:
        """The photo as the data URL sent to the server (see the module)."""
        from PIL import Image

        if self.endpoint.image_size:
            image = image.copy()
            image.thumbnail((self.endpoint.image_size, self.endpoint.image_size), Image.Resampling.LANCZOS)
        elif (presize := self._presizer()) is not None:
            image = presize(image)
        buf = io.BytesIO()
        if self.endpoint.image_format == "jpeg":
            image.save(buf, format="JPEG", quality=JPEG_QUALITY)
            mime = "image/jpeg"
        else:
            image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
            mime = "image/png"
        return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")

    def messages(self, data_url: str, prompt: str | None) -> list[dict[str, Any]]:
        """The chat messages for one photo: the image, then the user text, as the in-process chat template has them."""
        return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}},
                                             {"type": "text", "text": self.user_text(prompt)}]}]

    def _drop(self) -> Sequence[str]:
        return self.vlm.tokenizer.all_special_tokens if self.vlm is not None else ()

    # -- captioning -------------------------------------------------------------------------------------
    def caption(self, images: Sequence["Image.Image"], prompts: Sequence[str | None] | None = None,
                neighbour_captions: Sequence[Sequence[str]] | None = None) -> list[str]:
        """``Captioner.caption``: one caption per image; raises for the first photo that got none."""
        batch = self.caption_photos(images, prompts)
        texts = []
        for i, outcome in enumerate(batch.outcomes):
            if outcome is None or outcome.status != "ok":
                reason = batch.unavailable or (outcome.error if outcome else "not captioned")
                raise RuntimeError(f"{self.name}: image {i}: {reason}")
            texts.append(outcome.text)
        return texts

    def caption_photos(self, images: Sequence["Image.Image"], prompts: Sequence[str | None] | None = None, *,
                       progress: "StageProgress | None" = None, cancelled: Callable[[], bool] | None = None,
                       names: Sequence[str] | None = None) -> EndpointBatch:
        """Every photo's outcome (see ``EndpointBatch``); per-photo failures are outcomes, never raised.

        ``progress`` advances per photo (with its tokens); ``names`` name photos in its messages."""
        rgb = to_rgb(images)
        checked = check_prompts(prompts, len(rgb), captioner=self.name, required=self.needs_prompts)
        if not rgb:
            return EndpointBatch()
        if self._unavailable is not None:
            return EndpointBatch([None] * len(rgb), unavailable=self._unavailable)
        if self.vlm is not None:
            self._presizer()    # loads the processor (and probes it) here, not in the event loop
        names = list(names) if names is not None else [f"image {i}" for i in range(len(rgb))]
        with self._open_session() as session:
            job = _BatchJob(self, session, rgb, checked, names, progress, cancelled or (lambda: False))
            return session.run(job.run())

    @contextmanager
    def _open_session(self) -> Iterator["_Session"]:
        """The session every batch in flight shares; the last batch out closes it (so nothing lingers after a run)."""
        with self._lock:
            if self._session is None:
                self._session = _Session(self)
            self._users += 1
            session = self._session
        try:
            yield session
        finally:
            with self._lock:
                self._users -= 1
                last = self._users == 0
                if last:
                    self._session = None
            if last:
                session.close()

    def _api_key(self) -> str | None:
        key = _key_from_environment()
        if key is None and not self.endpoint.base_url:
            raise ConfigError(f"captioner {self.name}: OPENAI_API_KEY is not set: export it, or set "
                              "endpoint.base_url to your own server (e.g. http://127.0.0.1:8000/v1)")
        return key

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for these tokens at the configured prices (None when no price is set)."""
        price_in, price_out = self.endpoint.price_input, self.endpoint.price_output
        if not price_in and not price_out:
            return None
        return (prompt_tokens * price_in + completion_tokens * price_out) / 1e6

    def _mark_unavailable(self, reason: str) -> None:
        with self._lock:
            if self._unavailable is None:
                self._unavailable = reason


class _Session:
    """An event loop in a thread of its own, the HTTP client, the request limit and the encoding threads."""

    def __init__(self, captioner: EndpointCaptioner):
        import httpx

        cfg = captioner.endpoint
        key = captioner._api_key()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"endpoint-{captioner.name}", daemon=True)
        self.thread.start()
        self.encoders = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1),
                                           thread_name_prefix=f"endpoint-{captioner.name}-encode")

        async def open_client() -> tuple[Any, asyncio.Semaphore]:
            client = httpx.AsyncClient(
                headers={"Authorization": f"Bearer {key}"} if key else {},
                timeout=httpx.Timeout(cfg.timeout),
                limits=httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency))
            return client, asyncio.Semaphore(cfg.concurrency)

        self.client, self.slots = self.run(open_client())

    def run(self, coro: Any) -> Any:
        """Run ``coro`` on the session's loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        try:
            self.run(self.client.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            if not self.thread.is_alive():
                self.loop.close()
            self.encoders.shutdown(wait=True, cancel_futures=True)


class _BatchJob:
    """One batch's photos, as tasks on the session's loop."""

    def __init__(self, captioner: EndpointCaptioner, session: _Session, images: list["Image.Image"],
                 prompts: list[str | None], names: list[str], progress: "StageProgress | None",
                 cancelled: Callable[[], bool]):
        self.c = captioner
        self.session = session
        self.images = images
        self.prompts = prompts
        self.names = names
        self.progress = progress
        self.cancelled = cancelled
        self.requests = 0
        self.url = captioner.base_url + "/chat/completions"

    async def run(self) -> EndpointBatch:
        tasks = [asyncio.create_task(self.photo(i)) for i in range(len(self.images))]
        pending = set(tasks)
        cancelled = False
        while pending:
            _done, pending = await asyncio.wait(pending, timeout=CANCEL_POLL_SECONDS)
            if pending and (self.cancelled() or self.c.unavailable is not None):
                cancelled = self.c.unavailable is None
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                break
        outcomes = [t.result() if t.done() and not t.cancelled() and t.exception() is None else None for t in tasks]
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()   # a bug of ours, not a server's answer
        return EndpointBatch(outcomes, self.requests, cancelled, self.c.unavailable)

    async def photo(self, i: int) -> CaptionOutcome | None:
        c = self.c
        loop = asyncio.get_running_loop()
        try:
            data_url = await loop.run_in_executor(self.session.encoders, c.encode, self.images[i])
        except Exception as exc:  # noqa: BLE001 - a photo that cannot be encoded is its failure
            return self.settle(i, CaptionOutcome("", "failed", f"cannot encode the photo: {one_line(exc)}", 0.0, 0))
        body = {"model": c.served_model, "messages": c.messages(data_url, self.prompts[i]),
                "max_tokens": c.generation.max_new_tokens, "temperature": 0, "n": 1}
        started = time.monotonic()
        tokens = [0, 0]
        attempt = 0
        while True:
            if c.unavailable is not None:
                return None
            async with self.session.slots:
                self.requests += 1
                result = await self.request(body)
            if result.status == 200:
                return self.settle(i, self.answer(result.payload, tokens, started, attempt + 1))
            if retryable_status(result.status) and attempt < c.endpoint.max_retries:
                await asyncio.sleep(backoff_delay(attempt, c.endpoint.backoff, c.endpoint.backoff_max,
                                                  result.retry_after, c._random))
                attempt += 1
                continue
            tries = f" ({attempt + 1} tries)" if attempt else ""
            if result.unreachable:
                c._mark_unavailable(f"the server at {redact_url(c.base_url)} cannot be reached: {result.reason}{tries}")
                return None
            if result.status in REFUSED_STATUS:   # the key, the model name or the URL is wrong: not this photo's fault
                c._mark_unavailable(f"the server at {redact_url(c.base_url)} refused the request ({result.reason}): "
                                    "check OPENAI_API_KEY, endpoint.model and endpoint.base_url")
                return None
            return self.settle(i, CaptionOutcome("", "failed", f"{result.reason}{tries}", time.monotonic() - started,
                                                 attempt + 1, *tokens))

    async def request(self, body: dict[str, Any]) -> _Try:
        import httpx

        c = self.c
        try:
            async with asyncio.timeout(c.endpoint.timeout):
                response = await self.session.client.post(self.url, json=body)
        except (TimeoutError, httpx.TimeoutException):
            return _Try(reason=f"no answer within {c.endpoint.timeout:g} s")
        except (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
            return _Try(reason=f"connection failed ({_scrub(one_line(exc), c)})", unreachable=True)
        except httpx.HTTPError as exc:
            return _Try(reason=f"request failed ({_scrub(one_line(exc), c)})")
        if response.status_code != 200:
            return _Try(response.status_code, reason=f"HTTP {response.status_code}: {_error_text(response, c)}",
                        retry_after=retry_after_seconds(response.headers))
        try:
            return _Try(200, response.json())
        except ValueError:
            return _Try(200, _Malformed(f"the answer is not JSON: {_snippet(response.text)}"))

    def answer(self, payload: Any, tokens: list[int], started: float, attempts: int) -> CaptionOutcome:
        """A 200 answer's caption, or why it is none (malformed, empty, refused): never retried."""
        c = self.c
        seconds = time.monotonic() - started
        if isinstance(payload, _Malformed):
            return CaptionOutcome("", "failed", f"malformed answer from {c.served_model}: {payload.reason}", seconds,
                                  attempts, *tokens)
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if isinstance(usage, dict):
            tokens[0] += _count(usage.get("prompt_tokens"))
            tokens[1] += _count(usage.get("completion_tokens"))
        try:
            message = payload["choices"][0]["message"]
            content, refusal = message.get("content"), message.get("refusal")
        except (KeyError, IndexError, TypeError, AttributeError):
            return CaptionOutcome("", "failed", f"malformed answer from {c.served_model}: no choices[0].message: "
                                  f"{_snippet(payload)}", seconds, attempts, *tokens)
        if refusal:
            return CaptionOutcome("", "failed", f"{c.served_model} refused: {_snippet(refusal)}", seconds, attempts,
                                  *tokens)
        if content is not None and not isinstance(content, str):
            return CaptionOutcome("", "failed", f"malformed answer from {c.served_model}: content is "
                                  f"{type(content).__name__}, not text", seconds, attempts, *tokens)
        text = clean_caption(content or "", drop=c._drop())
        if not text:
            said = f" (it answered {_snippet(content)})" if content and content.strip() else ""
            return CaptionOutcome("", "empty", f"{EMPTY}{said}", seconds, attempts, *tokens)
        return CaptionOutcome(text, "ok", None, seconds, attempts, *tokens)

    def settle(self, i: int, outcome: CaptionOutcome) -> CaptionOutcome:
        if self.progress is not None:
            if outcome.status != "ok":
                self.progress.message(f"{self.c.name}: {self.names[i]} {outcome.status}: {outcome.error}", "warning")
            self.progress.advance(1, failures=int(outcome.status != "ok"),
                                  tokens=outcome.prompt_tokens + outcome.completion_tokens)
        return outcome


def _count(value: Any) -> int:
    """A token count from a server's ``usage`` (0 where it gives none, or not a number)."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class _Malformed:
    reason: str


def _key_from_environment() -> str | None:
    """``OPENAI_API_KEY``: from the environment only, never a setting."""
    return environment().secret(API_KEY_ENV)


def _scrub(text: str, captioner: EndpointCaptioner) -> str:
    """``text`` without the API key (a server may echo a header) or credentials of the URL."""
    key = _key_from_environment()
    if key:
        text = text.replace(key, "***")
    return text.replace(captioner.base_url, redact_url(captioner.base_url))


def _error_text(response: Any, captioner: EndpointCaptioner) -> str:
    """The message of an error answer (OpenAI's ``{"error": {"message": ...}}``, else the body), on one line."""
    try:
        data = response.json()
        message = data.get("error", {}).get("message") if isinstance(data.get("error"), dict) else data.get("error")
        text = str(message or data)
    except (ValueError, AttributeError):
        text = response.text or response.reason_phrase
    return _scrub(" ".join(str(text).split())[:200], captioner)


def _checked_presizer(image_processor: Any) -> Callable[["Image.Image"], "Image.Image"] | None:
    """``image_processor``'s resize to its ``size``, when the processor gives bit-identical pixel values for a probe
    and for the probe so resized; None otherwise (or when it has no such step)."""
    try:
        import numpy as np
        import torch
        from PIL import Image
        from transformers.image_utils import SizeDict

        size = dict(getattr(image_processor, "size", None) or {})
        resample = getattr(image_processor, "resample", None)
        if not size or not hasattr(image_processor, "resize"):
            return None

        def presize(image: "Image.Image") -> "Image.Image":
            tensor = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
            out = image_processor.resize(tensor, SizeDict(**size), resample=resample)
            if not isinstance(out, torch.Tensor) or out.dtype != torch.uint8:
                raise TypeError("the processor's resize does not give 8-bit pixels")
            return Image.fromarray(out.permute(1, 2, 0).contiguous().numpy(), "RGB")

        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:PROBE_SIDE * 3 // 4, 0:PROBE_SIDE]
        pixels = np.stack([(x * 7 + y * 3) % 256, (x * y) % 251, rng.integers(0, 256, x.shape)], axis=-1)
        probe = Image.fromarray(pixels.astype("uint8"), "RGB")
        whole = image_processor(images=[probe], return_tensors="pt")["pixel_values"]
        resized = image_processor(images=[presize(probe)], return_tensors="pt")["pixel_values"]
        return presize if whole.shape == resized.shape and torch.equal(whole, resized) else None
    except Exception:  # noqa: BLE001 - a processor without such a step: photos go as decoded
        return None
