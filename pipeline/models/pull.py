"""Download models into the Hugging Face cache ahead of time (``capsearch models pull``).

After a pull, the models load with ``HF_HUB_OFFLINE=1`` on this machine, or on another
one that gets a copy of the cache.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from pipeline.models.loading import explain_load_failure, hub_token, is_local_ref
from pipeline.progress import ProgressCallback, StageProgress

# Weights for other frameworks and export formats that no capsearch backend reads.
IGNORE_PATTERNS = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", "*.mlmodel",
                   "onnx/*", "openvino/*", "coreml/*", "rust_model*", "flax_model*", "tf_model*"]


@dataclass(frozen=True)
class PullResult:
    model_id: str
    status: Literal["downloaded", "cached", "local", "failed"]
    path: str | None = None      # snapshot folder in the cache, or the local folder
    error: str | None = None     # one line, for "failed"
    seconds: float = 0.0


def pull_models(
    model_ids: Sequence[str],
    progress: ProgressCallback | None = None,
    *,
    cache_dir: str | Path | None = None,
) -> list[PullResult]:
    """Download each hub model into the cache; local paths and complete cached snapshots are skipped.

    Never raises for one model: each result says what happened, failures with a one-line reason.
    """
    stage = StageProgress("models-pull", len(model_ids), progress)
    results = []
    for model_id in model_ids:
        started = time.monotonic()
        result = _pull_one(model_id, cache_dir, stage)
        result = PullResult(result.model_id, result.status, result.path, result.error, time.monotonic() - started)
        results.append(result)
        if result.status == "failed":
            stage.message(f"{model_id}: {result.error}", level="error")
        else:
            stage.message(f"{model_id}: {result.status} ({result.path})")
        stage.advance(1, failures=int(result.status == "failed"))
    failed = sum(r.status == "failed" for r in results)
    stage.finish(f"{len(results) - failed} of {len(results)} models ready" + (f", {failed} failed" if failed else ""))
    return results


def _pull_one(model_id: str, cache_dir: str | Path | None, stage: StageProgress) -> PullResult:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import is_offline_mode
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    if is_local_ref(model_id):
        path = Path(model_id).expanduser()
        if path.exists():
            return PullResult(model_id, "local", str(path))
        return PullResult(model_id, "failed", error=f"the local model path '{model_id}' does not exist")
    try:
        path = snapshot_download(model_id, cache_dir=cache_dir, local_files_only=True,
                                 ignore_patterns=IGNORE_PATTERNS, token=hub_token())
        return PullResult(model_id, "cached", path)
    except HFValidationError:
        return PullResult(model_id, "failed",
                          error=f"'{model_id}' is neither an existing local folder nor a valid hub model name")
    except LocalEntryNotFoundError:
        pass
    if is_offline_mode():
        return PullResult(model_id, "failed",
                          error=("not in the Hugging Face cache and offline mode is on (HF_HUB_OFFLINE=1): "
                                 "unset HF_HUB_OFFLINE on a machine with network to download it"))
    stage.message(f"{model_id}: downloading")
    try:
        path = snapshot_download(model_id, cache_dir=cache_dir, ignore_patterns=IGNORE_PATTERNS, token=hub_token())
    except Exception as exc:
        return PullResult(model_id, "failed", error=explain_load_failure(exc, model_id, what="model"))
    return PullResult(model_id, "downloaded", path)
