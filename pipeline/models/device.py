"""Device and dtype placement shared by every model backend."""
from __future__ import annotations

from typing import Any

DEVICES = ("auto", "cuda", "cpu", "mps")
DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_device(spec: str = "auto") -> str:
    """Map a config value (auto|cuda|cpu|mps, or cuda:N) to a concrete torch device string."""
    import torch

    spec = (spec or "auto").lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        from pipeline.errors import ModelLoadError

        raise ModelLoadError(f"device '{spec}' was asked for but no CUDA GPU is visible; set device = \"auto\" or \"cpu\"")
    return spec


def resolve_dtype(spec: str, device: str) -> Any:
    """Map a config dtype to a torch dtype: auto is bfloat16 on capable GPUs, float16 on other GPUs, float32 on CPU."""
    import torch

    spec = (spec or "auto").lower()
    if spec == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device == "mps":
            return torch.float16
        return torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[spec]
    except KeyError:
        from pipeline.errors import ConfigError

        raise ConfigError(f"dtype '{spec}' is not one of {', '.join(DTYPES)}") from None


def is_oom(exc: BaseException) -> bool:
    """True for a CUDA (or MPS) out-of-memory error, whatever class the torch version raises."""
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    text = str(exc).lower()
    return "out of memory" in text and ("cuda" in text or "mps" in text)


def free_accelerator_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - best effort
        pass
