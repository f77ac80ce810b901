"""Load pretrained models by hub name or local path, and place them on a device.

Every backend (transformers, open_clip, sentence-transformers) loads through
``load_pretrained`` so that a failed load always reaches the user as one clear
``ModelLoadError`` line: gated model, offline without the model in the cache, no
network, unknown name or path, or too little GPU memory.

The hub token is read from the ``HF_TOKEN`` environment variable only; it is never
logged, written, or shown in a message.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from pipeline.config import environment
from pipeline.errors import CapsearchError, ModelLoadError
from pipeline.models.device import free_accelerator_memory, is_oom, resolve_device, resolve_dtype

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

HUB_URL = "https://huggingface.co"


def hub_token() -> str | bool:
    """The token in ``HF_TOKEN``, or False so that no token stored elsewhere on disk is sent."""
    return environment().secret("HF_TOKEN") or False


def is_local_ref(model_id: str) -> bool:
    """True when ``model_id`` names a folder or file on disk rather than a hub repository."""
    if model_id.startswith(("/", "./", "../", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", model_id):
        return True
    if model_id.count("/") > 1 or "\\" in model_id:
        return True
    return Path(model_id).exists()


def load_pretrained(loader: Callable[[str], T], model_id: str, *, what: str) -> T:
    """Call ``loader(ref)`` (a ``from_pretrained``-style function) and explain any failure in one line.

    ``ref`` is ``model_id`` itself for a hub name, or the expanded path for a local folder.
    ``what`` names the model's role for the message, e.g. ``"captioner blip-base"``.
    """
    ref = model_id
    if is_local_ref(model_id):
        path = Path(model_id).expanduser()
        if not path.exists():
            raise ModelLoadError(f"{what}: the local model path '{model_id}' does not exist")
        ref = str(path)
    try:
        return loader(ref)
    except CapsearchError:
        raise
    except Exception as exc:
        if is_oom(exc):
            free_accelerator_memory()
        raise ModelLoadError(explain_load_failure(exc, model_id, what=what)) from exc


def explain_load_failure(exc: BaseException, model_id: str, *, what: str) -> str:
    """One line saying why ``model_id`` could not be loaded and what to do about it."""
    from huggingface_hub import errors as hub_errors
    from huggingface_hub.constants import is_offline_mode

    chain = list(_exception_chain(exc))

    def has(cls: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
        return any(isinstance(e, cls) for e in chain)

    label = f"{what} '{model_id}'"
    pull_hint = (
        f"run `capsearch models pull {model_id}` on a machine with network (or copy its Hugging Face cache, "
        "~/.cache/huggingface/hub, to this machine), then set HF_HUB_OFFLINE=1"
    )
    if any(is_oom(e) for e in chain):
        message = (f"too little GPU memory to load {label}: close other GPU programs, choose a smaller model, "
                   "use dtype float16 or bfloat16, or set device = \"cpu\"")
    elif has(hub_errors.GatedRepoError):
        access = ("the token in HF_TOKEN has no access to it" if environment().secret("HF_TOKEN")
                  else "no HF_TOKEN is set")
        message = (f"{label} is a gated model and {access}: accept its licence at {HUB_URL}/{model_id} "
                   "and set HF_TOKEN to an access token of that account")
    elif has(hub_errors.RepositoryNotFoundError):
        message = (f"{label} was not found on the Hugging Face hub ({HUB_URL}/{model_id}): check the name; "
                   "for a private model set HF_TOKEN")
    elif has(hub_errors.RevisionNotFoundError):
        message = f"{label}: the requested revision does not exist on the hub"
    elif has(hub_errors.OfflineModeIsEnabled) or (has(hub_errors.LocalEntryNotFoundError) and is_offline_mode()):
        message = f"{label} is not in the local Hugging Face cache and offline mode is on (HF_HUB_OFFLINE=1): {pull_hint}"
    elif has(hub_errors.LocalEntryNotFoundError) or _is_connection_error(chain):
        message = f"{label} is not in the local Hugging Face cache and the hub cannot be reached (no network?): {pull_hint}"
    elif has(hub_errors.HFValidationError):
        message = (f"{label} is neither an existing local folder nor a valid hub model name "
                   "(expected 'organisation/name')")
    elif has(hub_errors.RemoteEntryNotFoundError):
        message = f"{label} lacks a file this backend needs: {_first_line(exc)}"
    elif is_local_ref(model_id) and isinstance(exc, (OSError, ValueError)):
        message = f"{label} is not a model folder this backend can load: {_first_line(exc)}"
    else:
        message = f"could not load {label}: {type(exc).__name__}: {_first_line(exc)}"
    return _redact(message)


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_connection_error(chain: list[BaseException]) -> bool:
    names = {type(e).__name__ for e in chain}
    return bool(names & {"ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "ConnectionError",
                         "gaierror", "ConnectionRefusedError"})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.splitlines()[0].split())


def _redact(text: str) -> str:
    token = environment().secret("HF_TOKEN")
    text = " ".join(text.split())
    return text.replace(token, "***") if token else text


def resolve_placement(device: str = "auto", dtype: str = "auto") -> tuple[str, "torch.dtype"]:
    """The concrete (device, torch dtype) for config values; float32 on CPU unless asked otherwise."""
    resolved = resolve_device(device)
    return resolved, resolve_dtype(dtype, resolved)


def place_model(model: Any, device: str, dtype: "torch.dtype | None" = None, *, what: str, model_id: str) -> Any:
    """Move a loaded torch model to ``device`` (and ``dtype``), in eval mode with gradients off.

    Running out of GPU memory here becomes a ``ModelLoadError`` naming the model.
    """
    try:
        model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    except Exception as exc:
        if not is_oom(exc):
            raise
        free_accelerator_memory()
        raise ModelLoadError(explain_load_failure(exc, model_id, what=what)) from exc
    model.eval()
    model.requires_grad_(False)
    return model
