"""Export a sentence-transformers model to ONNX for the light query encoder (``pipeline.query_encoder``).

Runs where torch and the model are loaded anyway (the embed-captions stage; the first search that had to
load sentence-transformers). The whole model (transformer, pooling, any dense layers) is exported for one
text, by the TorchScript exporter or, where that fails (Gemma 3), by torch.export's; its tokenizer is saved
from the loaded model (so lower-casing, special tokens and truncation are the
ones sentence-transformers applies). Before it is kept, the export must reproduce sentence-transformers on
probe texts: the same token ids, and vectors within 1e-6 cosine. What cannot be exported that way (a
model whose pooling leaves the prompt out, inputs other than token ids, a tracer failure) is recorded in
``failed.json`` with the reason and the library versions, so it is not tried again until they change, and
search keeps using sentence-transformers.

The folder is built under a temporary name and renamed into place, so a reader sees a whole export or none.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from pipeline.atomic import fsync_dir
from pipeline.query_encoder import (DATA_FILE, FAILED, INPUTS, MANIFEST, MODEL_FILE, TOKENIZER_FILE,
                                    EncoderUnavailable, Manifest, OnnxQueryEncoder, file_record,
                                    remove_stale_temporaries)

if TYPE_CHECKING:
    from pipeline.text_embedding import SentenceTransformerEmbedder

MIN_COSINE = 1 - 1e-6
OPSET = 17                         # the TorchScript exporter's
DYNAMO_OPSET = 18                  # torch.export's (its lowest)
OUTPUT = "query_vector"            # not "embedding": torch.export's graph may already name a value so
# Short, long (past any truncation), odd characters, a lone word: what a person types into search.
PROBES = (
    "a red car on the beach",
    "Two DOGS play in the snow!",
    "x",
    "a café in Zürich — naïve 🐶 emoji, numbers 12345 and a hyphenated-word",
    " ".join(["a very long query that goes on"] * 80),
)


class ExportFailed(Exception):
    """The model cannot be exported so that it gives sentence-transformers' vectors (the message says why);
    ``by_any`` when no exporter could (the model itself is of a kind the light encoder does not run)."""

    def __init__(self, reason: str, by_any: bool = False):
        super().__init__(reason)
        self.by_any = by_any


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("torch", "transformers", "sentence-transformers", "onnx", "onnxscript", "onnxruntime", "tokenizers"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = ""
    return out


EXPORTERS = ("torchscript", "torch.export")
QUICK = ("torchscript",)           # what a search may try while a person waits (seconds; torch.export: minutes)


def export_state(folder: Path, key: str, thorough: bool = False, exporters: tuple[str, ...] = EXPORTERS) -> str:
    """'ready' (an export of ``key`` whose files have the manifest's sizes, or with ``thorough`` its checksums
    too and opens), 'failed' (recorded for these library versions) or 'missing'. Without ``thorough``: a stat
    or two (search checks the checksums when it opens the export, and exports it again when they differ)."""
    try:
        if thorough:
            OnnxQueryEncoder(folder, key)
            return "ready"
        manifest = Manifest.read(folder)
        if manifest.key == key and all((folder / name).stat().st_size == rec["size"]
                                       for name, rec in manifest.files.items()):
            return "ready"
    except (EncoderUnavailable, OSError):
        pass
    try:
        failed = json.loads((folder / FAILED).read_text(encoding="utf-8"))
        if failed.get("versions") == versions() and set(exporters) <= set(failed.get("tried", EXPORTERS)):
            return "failed"
    except (OSError, ValueError, AttributeError):
        pass
    return "missing"


def ensure_exported(embedder: "SentenceTransformerEmbedder", folder: Path,
                    on_notice: Callable[[str], None] | None = None, thorough: bool = False,
                    exporters: tuple[str, ...] = EXPORTERS) -> str:
    """Export ``embedder``'s model into ``folder`` with the first of ``exporters`` that works, unless an export
    (``thorough``: one whose checksums hold), or a recorded failure of those exporters for these library
    versions, is there; returns the state afterwards. A failure is told through ``on_notice`` once."""
    state = export_state(folder, embedder.key, thorough, exporters)
    if state != "missing":
        return state
    try:
        export_query_encoder(embedder, folder, exporters)
        return "ready"
    except ExportFailed as exc:
        _record_failure(folder, str(exc), EXPORTERS if exc.by_any else exporters)
        if on_notice:
            later = "" if exc.by_any or set(EXPORTERS) <= set(exporters) else \
                " (the embed-captions stage tries torch.export too)"
            on_notice(f"light query encoder for {embedder.model_name} cannot be exported: {exc}{later}; "
                      "search uses sentence-transformers")
        return "failed"


def _record_failure(folder: Path, reason: str, tried: tuple[str, ...]) -> None:
    from pipeline.atomic import write_text

    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / FAILED, json.dumps({"reason": reason, "versions": versions(), "tried": list(tried)},
                                               indent=2))
    except OSError:
        pass


def _loaded_parts(embedder: "SentenceTransformerEmbedder") -> tuple[Any, Any, str]:
    """(the SentenceTransformer, its tokenizer module, the query prompt) or ExportFailed."""
    model = embedder.model
    prompt = embedder.query_prompt or ""
    first = model[0]
    tokenizer = getattr(first, "tokenizer", None)
    if tokenizer is None or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ExportFailed("its first module has no fast tokenizer", by_any=True)
    if prompt and any(getattr(m, "include_prompt", True) is False for m in model):
        raise ExportFailed("its pooling leaves the prompt's tokens out", by_any=True)
    return model, first, prompt


def _features(model: Any, text: str, prompt: str) -> dict[str, Any]:
    features = model.preprocess([text], prompt=prompt or None)
    tensors = {k: v for k, v in features.items() if hasattr(v, "shape")}
    unknown = sorted(set(tensors) - set(INPUTS))
    if unknown:
        raise ExportFailed(f"its inputs include {', '.join(unknown)}", by_any=True)
    return tensors


def export_query_encoder(embedder: "SentenceTransformerEmbedder", folder: Path,
                         exporters: tuple[str, ...] = EXPORTERS) -> Manifest:
    """Trace the model, save it with its tokenizer, check both against sentence-transformers, and move the
    folder into place. The TorchScript exporter first (a second or two: BERT-like models), then torch.export's
    (slower, but it follows models the tracer cannot, such as Gemma 3's EmbeddingGemma). Raises ExportFailed
    with each exporter's reason."""
    import torch

    model, first, prompt = _loaded_parts(embedder)
    sample = _features(model, PROBES[0], prompt)
    names = tuple(n for n in INPUTS if n in sample)
    max_length = getattr(first, "max_seq_length", None) or getattr(model, "max_seq_length", None)

    class OneText(torch.nn.Module):
        def __init__(self, st: Any):
            super().__init__()
            self.st = st

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return self.st({"modality": "text", **{n: given[n] for n in names}})["sentence_embedding"]

    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(parent)
    tmp = parent / f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    reasons = []
    try:
        chosen = {"torchscript": _torchscript, "torch.export": _torch_export}
        for exporter in (chosen[name] for name in exporters):
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                exporter(OneText(model), tuple(sample[n] for n in names), names, tmp / "traced.onnx", max_length)
                _weights_apart(tmp / "traced.onnx", tmp)
                manifest = _finish(embedder, model, first, prompt, names, max_length, tmp)
                break
            except ExportFailed as exc:
                reasons.append(f"{exporter.__doc__}: {exc}")
        else:
            raise ExportFailed("; ".join(reasons))
        for name in os.listdir(tmp):
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        _move_into_place(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _exporting(run: Callable[[], None], model: Any) -> None:
    """Run an exporter on the model in eval mode, quietly; any failure becomes ExportFailed with its first line."""
    import contextlib
    import io
    import warnings

    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            run()
    except Exception as exc:  # noqa: BLE001 - any tracer or exporter failure is a reason to try another or fall back
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExportFailed(f"{type(exc).__name__}: {first}") from None
    finally:
        model.train(was_training)


def _torchscript(module: Any, args: tuple, names: tuple[str, ...], target: Path, max_length: int | None) -> None:
    """torch.onnx.export (TorchScript)"""
    import torch

    _exporting(lambda: torch.onnx.export(
        module, args, str(target), input_names=list(names), output_names=[OUTPUT], opset_version=OPSET,
        dynamo=False, dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, OUTPUT: {0: "batch"}}),
        module.st)


def _torch_export(module: Any, args: tuple, names: tuple[str, ...], target: Path, max_length: int | None) -> None:
    """torch.onnx.export (torch.export)"""
    import torch

    tokens = torch.export.Dim("tokens", min=2, max=int(max_length) if max_length else 8192)
    _exporting(lambda: torch.onnx.export(
        module, args, str(target), input_names=list(names), output_names=[OUTPUT], opset_version=DYNAMO_OPSET,
        dynamo=True, dynamic_shapes=tuple({1: tokens} for _ in names), external_data=True, verbose=False),
        module.st)


def _finish(embedder: "SentenceTransformerEmbedder", model: Any, first: Any, prompt: str, names: tuple[str, ...],
            max_length: int | None, tmp: Path) -> Manifest:
    """The tokenizer and the manifest beside the exported model, then the check against sentence-transformers."""
    backend = first.tokenizer.backend_tokenizer.__class__.from_str(first.tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    if max_length:
        backend.enable_truncation(max_length=int(max_length))
    else:
        backend.no_truncation()
    backend.save(str(tmp / TOKENIZER_FILE))
    manifest = Manifest(key=embedder.key, model=embedder.model_name, query_prompt=prompt, inputs=names,
                        dim=int(model.get_embedding_dimension()),
                        files={n: file_record(tmp / n) for n in (MODEL_FILE, DATA_FILE, TOKENIZER_FILE)})
    (tmp / MANIFEST).write_text(json.dumps(manifest.as_dict(), indent=2), encoding="utf-8")
    _check(embedder, model, prompt, names, tmp)
    return manifest


def _weights_apart(traced: Path, folder: Path) -> None:
    """The traced model as ``MODEL_FILE`` with every weight in ``DATA_FILE`` (the traced files are removed)."""
    import onnx

    model = onnx.load(str(traced))              # with any external data the exporter wrote beside it
    onnx.save_model(model, str(folder / MODEL_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_FILE, size_threshold=1024)   # small constants (shapes, axes) stay inline
    for leftover in set(os.listdir(folder)) - {MODEL_FILE, DATA_FILE}:
        path = folder / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _check(embedder: "SentenceTransformerEmbedder", model: Any, prompt: str, names: tuple[str, ...],
           folder: Path) -> None:
    """The export must give sentence-transformers' token ids and vectors on every probe."""
    try:
        light = OnnxQueryEncoder(folder, embedder.key)
    except EncoderUnavailable as exc:
        raise ExportFailed(str(exc)) from None
    expected = embedder.embed_queries(list(PROBES))
    got = light.embed_queries(list(PROBES))
    for text, want, have in zip(PROBES, expected, got):
        ids = [int(i) for i in _features(model, text, prompt)["input_ids"][0].tolist()]
        mine = light.tokenizer.encode(prompt + text).ids
        if ids != mine:
            raise ExportFailed(f"its tokenizer, saved, gives other token ids for {text[:40]!r}")
        cosine = float(np.dot(want, have))
        if not cosine >= MIN_COSINE:
            raise ExportFailed(f"the exported model's vector for {text[:40]!r} differs (cosine {cosine:.7f})")


def _move_into_place(tmp: Path, folder: Path) -> None:
    """Rename the finished export to ``folder``; a sound export already there (another process) wins."""
    if folder.exists():
        if export_state(folder, Manifest.read(tmp).key, thorough=True) == "ready":
            return
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.rename(tmp, folder)
    except OSError:
        if export_state(folder, Manifest.read(tmp).key, thorough=True) != "ready":
            raise
        return
    fsync_dir(folder.parent)
