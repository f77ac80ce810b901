"""Loading models by hub name or path: failures are one clear line; placement; pulling into the cache.

The gated and not-found cases need a hub that answers: a small local HTTP server answers the
way huggingface.co does (status code plus ``X-Error-Code`` header), and a child process with
``HF_ENDPOINT`` pointing at it runs the real loading code, as a user's shell would.
"""
from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.errors import ModelLoadError
from pipeline.models.loading import is_local_ref, load_pretrained, place_model, resolve_placement
from pipeline.models.pull import pull_models
from pipeline.progress import ProgressEvent

REPO = Path(__file__).resolve().parents[1]


def _one_line(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message


def test_missing_local_path_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "blip"
    with pytest.raises(ModelLoadError) as err:
        load_pretrained(lambda ref: pytest.fail("the loader must not run"), str(missing), what="captioner blip-base")
    _one_line(str(err.value))
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)
    assert "captioner blip-base" in str(err.value)


def test_offline_model_not_in_cache_says_how_to_get_it() -> None:
    from transformers import BlipForConditionalGeneration

    started = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        load_pretrained(BlipForConditionalGeneration.from_pretrained, "capsearch-tests/never-cached-model",
                        what="captioner blip-base")
    message = str(err.value)
    _one_line(message)
    assert "capsearch-tests/never-cached-model" in message
    assert "offline" in message and "HF_HUB_OFFLINE=1" in message
    assert "capsearch models pull capsearch-tests/never-cached-model" in message
    assert time.monotonic() - started < 10


def test_folder_without_a_model_is_explained(tmp_path: Path) -> None:
    from transformers import BlipForConditionalGeneration

    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelLoadError) as err:
        load_pretrained(BlipForConditionalGeneration.from_pretrained, str(tmp_path), what="captioner blip-base")
    _one_line(str(err.value))
    assert "not a model folder" in str(err.value) and str(tmp_path) in str(err.value)


def test_malformed_hub_name_is_explained() -> None:
    from transformers import AutoConfig

    with pytest.raises(ModelLoadError) as err:
        load_pretrained(AutoConfig.from_pretrained, "not a model name!", what="captioner vit-gpt2")
    _one_line(str(err.value))
    assert "valid hub model name" in str(err.value)


def test_local_refs_are_told_from_hub_names(tmp_path: Path) -> None:
    assert is_local_ref(str(tmp_path)) and is_local_ref("./models/blip") and is_local_ref("~/models/x")
    assert not is_local_ref("Salesforce/blip-image-captioning-base") and not is_local_ref("gpt2")


def test_out_of_gpu_memory_while_loading_or_placing_is_explained() -> None:
    import torch

    def loader(ref: str):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(ModelLoadError) as err:
        load_pretrained(loader, "HuggingFaceTB/SmolVLM-Instruct", what="captioner vlm-plain")
    _one_line(str(err.value))
    assert "too little GPU memory" in str(err.value) and "HuggingFaceTB/SmolVLM-Instruct" in str(err.value)

    class FullGpu(torch.nn.Linear):  # stands in for a GPU without room for the weights
        def to(self, *args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 900.00 MiB")

    with pytest.raises(ModelLoadError) as err:
        place_model(FullGpu(2, 2), "cuda", torch.float16, what="captioner blip-large", model_id="Salesforce/blip-large")
    assert "too little GPU memory" in str(err.value) and 'device = "cpu"' in str(err.value)


def test_place_model_gives_eval_mode_without_gradients_in_the_dtype() -> None:
    import torch

    device, dtype = resolve_placement("cpu", "auto")
    assert (device, dtype) == ("cpu", torch.float32)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5)).train()
    placed = place_model(model, device, torch.bfloat16, what="test", model_id="local")
    assert not placed.training
    assert all(not p.requires_grad and p.dtype == torch.bfloat16 for p in placed.parameters())


# --- pulling ---------------------------------------------------------------------------------------


def _hub_cache_entry(cache: Path, repo_id: str, files: dict[str, str]) -> Path:
    """A snapshot in the Hugging Face cache layout (what a finished download leaves behind)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, text in files.items():
        (snapshot / name).write_text(text)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_pull_skips_local_paths_and_cached_models_and_explains_offline(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    snapshot = _hub_cache_entry(cache, "capsearch-tests/cached-model", {"config.json": "{}"})
    local = tmp_path / "my-model"
    local.mkdir()
    events: list[ProgressEvent] = []
    started = time.monotonic()
    results = pull_models(
        [str(local), "capsearch-tests/cached-model", "capsearch-tests/not-cached-model", str(tmp_path / "gone")],
        events.append, cache_dir=cache,
    )
    assert time.monotonic() - started < 10
    by_id = {r.model_id: r for r in results}
    assert by_id[str(local)].status == "local" and by_id[str(local)].path == str(local)
    assert by_id["capsearch-tests/cached-model"].status == "cached"
    assert Path(by_id["capsearch-tests/cached-model"].path) == snapshot
    offline = by_id["capsearch-tests/not-cached-model"]
    assert offline.status == "failed" and "HF_HUB_OFFLINE" in offline.error
    _one_line(offline.error)
    assert by_id[str(tmp_path / "gone")].status == "failed"
    assert [e.kind for e in events][0] == "start" and events[-1].kind == "finish"
    assert events[-1].done == 4 and events[-1].failures == 2
    assert any(e.level == "error" and "capsearch-tests/not-cached-model" in e.message for e in events)


# --- a hub that answers: gated and missing repositories, and the token ------------------------------


class _FakeHub(http.server.ThreadingHTTPServer):
    """Answers every request like huggingface.co answers for a gated (401) or unknown (404) repository."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                hub.authorizations.append(self.headers.get("Authorization"))
                gated = "gated" in self.path
                self.send_response(401 if gated else 404)
                self.send_header("X-Error-Code", "GatedRepo" if gated else "RepoNotFound")
                self.send_header("X-Error-Message", "Access to this model is restricted." if gated
                                 else "Repository not found")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = _answer

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def fake_hub():
    hub = _FakeHub()
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    yield hub
    hub.shutdown()
    hub.server_close()


CHILD = """
import json
from pipeline.errors import ModelLoadError
from pipeline.captioners.blip import BlipCaptioner
from pipeline.models.pull import pull_models
out = {}
for model_id in ("org/gated-model", "org/missing-model"):
    try:
        BlipCaptioner("blip-base", model_id, device="cpu").model
    except ModelLoadError as exc:
        out[model_id] = str(exc)
out["pull"] = [r.error for r in pull_models(["org/gated-model"])]
print(json.dumps(out))
"""


def _run_child(fake_hub: _FakeHub, tmp_path: Path, token: str | None) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{fake_hub.server_address[1]}", HF_HOME=str(tmp_path / "hf"),
               HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(REPO))
    (tmp_path / "hf").mkdir(exist_ok=True)
    (tmp_path / "hf" / "token").write_text("hf_storedOnDiskNotToBeUsed")  # a token from `hf auth login`
    if token:
        env["HF_TOKEN"] = token
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout + done.stderr


def test_gated_and_missing_models_name_the_fix_and_the_token_stays_secret(fake_hub: _FakeHub, tmp_path: Path) -> None:
    secret = "hf_SecretTokenForTheTest123"
    out, logs = _run_child(fake_hub, tmp_path, token=secret)

    gated = out["org/gated-model"]
    _one_line(gated)
    assert "gated" in gated and "https://huggingface.co/org/gated-model" in gated
    assert "licence" in gated and "HF_TOKEN" in gated
    missing = out["org/missing-model"]
    _one_line(missing)
    assert "not found" in missing and "org/missing-model" in missing
    assert "https://huggingface.co/org/gated-model" in out["pull"][0]

    assert f"Bearer {secret}" in fake_hub.authorizations      # the token from HF_TOKEN was sent ...
    assert secret not in logs and secret not in json.dumps(out)  # ... and never printed


def test_only_the_environment_token_is_used(fake_hub: _FakeHub, tmp_path: Path) -> None:
    out, _ = _run_child(fake_hub, tmp_path, token=None)
    assert "no HF_TOKEN is set" in out["org/gated-model"]
    assert fake_hub.authorizations and not any(fake_hub.authorizations)
