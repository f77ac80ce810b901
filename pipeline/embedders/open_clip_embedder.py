"""Image (and text) embeddings from any open_clip model.

The model is named as open_clip names it (``ViT-B-32``) with a pretrained tag
(``laion2b_s34b_b79k``), a local weights file, or ``local-dir:/path`` (a folder
with ``open_clip_config.json`` and the weights); ``hf-hub:org/repo`` also works as
the model name. The model is loaded once per process through the shared model
cache; on a GPU the forward pass runs under fp16/bf16 autocast.
"""
from __future__ import annotations

import json
import os
import re
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from pipeline.embedders.loader import FileEmbedding
from pipeline.errors import ModelLoadError
from pipeline.hashing import hash_obj, sha256_file
from pipeline.images import to_rgb

if TYPE_CHECKING:
    from PIL import Image

VERSION = "v1"
LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"

_file_hashes: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """sha256 of a weights file, remembered per (path, size, mtime) so large files are hashed once per process."""
    st = path.stat()
    sig = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if sig not in _file_hashes:
        _file_hashes[sig] = sha256_file(path)
    return _file_hashes[sig]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


class OpenClipEmbedder(FileEmbedding):
    """open_clip image embedder with its text tower (for CLIP text-to-image search)."""

    has_text_tower = True

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "laion2b_s34b_b79k",
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 64,
        num_workers: int = 2,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.pretrained = pretrained or ""
        self.device_spec = device
        self.dtype_spec = dtype
        self.batch_size = batch_size
        self.num_workers = num_workers
        if self.pretrained.startswith(LOCAL_DIR):
            self._name, self._weights = self.pretrained, None
        elif model.startswith((LOCAL_DIR, HF_HUB)):
            self._name, self._weights = model, None
        else:
            if not self.pretrained:
                raise ModelLoadError(
                    f"open_clip model '{model}' needs pretrained weights: a tag, a weights file or local-dir:/path"
                )
            self._name, self._weights = model, self.pretrained

    @property
    def model_id(self) -> str:
        """What the model was loaded from, as a person would write it."""
        return self._name if self._weights is None else f"{self._name}/{self._weights}"

    @cached_property
    def key(self) -> str:  # type: ignore[override]
        """Stable identity: model and weights (tag, or content hash of a local file/folder); not the device."""
        if self._name.startswith(LOCAL_DIR):
            folder = Path(self._name[len(LOCAL_DIR):]).expanduser()
            config = folder / "open_clip_config.json"
            if not config.is_file():
                raise ModelLoadError(f"open_clip local-dir '{folder}' has no open_clip_config.json")
            weights = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pth", ".pt"))
            digest = hash_obj([config.read_text(encoding="utf-8")] + [_file_digest(p) for p in weights], 16)
            return f"openclip-{VERSION}-{_slug(folder.name)}-local-{digest}"
        if self._name.startswith(HF_HUB):
            return f"openclip-{VERSION}-hf-{_slug(self._name[len(HF_HUB):])}"
        assert self._weights is not None
        if os.path.sep in self._weights or os.path.isfile(self._weights):
            path = Path(self._weights).expanduser()
            if not path.is_file():
                raise ModelLoadError(f"open_clip weights file '{path}' does not exist")
            return f"openclip-{VERSION}-{_slug(self._name)}-file-{_file_digest(path)[:16]}"
        return f"openclip-{VERSION}-{_slug(self._name)}-{_slug(self._weights)}"

    @cached_property
    def dim(self) -> int:  # type: ignore[override]
        """Embedding size, read from the model config when it can be (without loading weights)."""
        cfg: dict[str, Any] | None = None
        if self._name.startswith(LOCAL_DIR):
            path = Path(self._name[len(LOCAL_DIR):]).expanduser() / "open_clip_config.json"
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                cfg = raw.get("model_cfg", raw)
            except (OSError, ValueError):
                cfg = None
        elif not self._name.startswith(HF_HUB):
            import open_clip

            cfg = open_clip.get_model_config(self._name)
        if cfg and "embed_dim" in cfg:
            return int(cfg["embed_dim"])
        model, _, tokenizer = self._loaded()
        return int(self._forward(model.encode_text, tokenizer(["a"])).shape[-1])

    @cached_property
    def _device(self) -> str:
        from pipeline.models.device import resolve_device

        return resolve_device(self.device_spec)

    @cached_property
    def _dtype(self) -> Any:
        from pipeline.models.device import resolve_dtype

        return resolve_dtype(self.dtype_spec, self._device)

    def _cache_key(self) -> str:
        return f"open_clip|{self._name}|{self._weights}|{self._device}"

    def _load_ref(self) -> str:
        """What the weights are loaded from, as ``pipeline.models.loading`` names it in messages."""
        if self._name.startswith(LOCAL_DIR):
            return self._name[len(LOCAL_DIR):]
        if self._name.startswith(HF_HUB):
            return self._name[len(HF_HUB):]
        assert self._weights is not None
        if os.path.sep in self._weights or os.path.isfile(self._weights):
            return self._weights
        import open_clip

        hub = (open_clip.get_pretrained_cfg(self._name, self._weights) or {}).get("hf_hub", "")
        return hub.strip("/") or f"{self._name}/{self._weights}"

    def _load(self) -> tuple[Any, Any, Any]:
        import open_clip

        from pipeline.models.loading import load_pretrained

        if not self._name.startswith((LOCAL_DIR, HF_HUB)) and self._name.replace("/", "-") not in open_clip.list_models():
            raise ModelLoadError(
                f"open_clip has no model named '{self._name}' (open_clip.list_models() lists the known names)"
            )
        weights = self._weights
        if weights and os.path.sep not in weights and not os.path.isfile(weights):
            if not open_clip.get_pretrained_cfg(self._name, weights):
                tags = ", ".join(open_clip.list_pretrained_tags_by_model(self._name)) or "none"
                raise ModelLoadError(
                    f"open_clip model '{self._name}' has no pretrained tag '{weights}' and no such weights file exists "
                    f"(its tags: {tags})"
                )

        def create(_ref: str) -> tuple[Any, Any, Any]:
            model, preprocess = open_clip.create_model_from_pretrained(
                self._name, pretrained=self._weights, device=self._device
            )
            return model, preprocess, open_clip.get_tokenizer(self._name)

        model, preprocess, tokenizer = load_pretrained(
            create, self._load_ref(), what=f"open_clip image embedder {self._name}"
        )
        model.eval()
        model.requires_grad_(False)
        return model, preprocess, tokenizer

    def _loaded(self) -> tuple[Any, Any, Any]:
        """(model, preprocess, tokenizer), loaded once per process."""
        from pipeline.models.cache import get_or_load

        return get_or_load(self._cache_key(), self._load)

    def load(self) -> "OpenClipEmbedder":
        """Load the model now (otherwise it is loaded on first use)."""
        self._loaded()
        return self

    def _forward(self, encode: Any, batch: Any) -> np.ndarray:
        import torch

        device_type = self._device.split(":")[0]
        use_autocast = self._dtype != torch.float32 and device_type in ("cuda", "cpu", "mps")
        with torch.inference_mode(), torch.autocast(device_type, dtype=self._dtype, enabled=use_autocast):
            feats = encode(batch.to(self._device, non_blocking=True))
        feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def _embed_tensors(self, tensors: list[Any]) -> np.ndarray:
        import torch

        model = self._loaded()[0]
        return self._forward(model.encode_image, torch.stack(tensors))

    def embed_images(self, images: Sequence["Image.Image"]) -> np.ndarray:
        model, preprocess, _ = self._loaded()
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            tensors = [preprocess(to_rgb(im)) for im in chunk]
            out[start:start + len(chunk)] = self._embed_tensors(tensors)
        return out

    def path_transform(self) -> Any:
        return self._loaded()[1]  # open_clip's preprocess, run in the decoding threads

    def embed_payloads(self, payloads: list[Any]) -> np.ndarray:
        return self._embed_tensors(payloads)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        model, _, tokenizer = self._loaded()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start:start + self.batch_size])
            out[start:start + len(chunk)] = self._forward(model.encode_text, tokenizer(chunk))
        return out

    def settings(self) -> dict[str, Any]:
        return {"kind": "open_clip", "version": VERSION, "model": self._name, "pretrained": self._weights or ""}
