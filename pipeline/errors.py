"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""
from __future__ import annotations


class CapsearchError(Exception):
    """A failure the user can act on. ``str(err)`` is the whole message: one line, no traceback."""


class ConfigError(CapsearchError):
    """The configuration file or an environment override is invalid."""


class DataError(CapsearchError):
    """A data set cannot be read as a whole (single bad items are recorded, not raised)."""


class ModelLoadError(CapsearchError):
    """A model could not be loaded: gated, no network, not found, or too little memory."""


class StoreError(CapsearchError):
    """The workspace store is missing, too new, or inconsistent."""


class DiskFullError(CapsearchError):
    """The disk (or a file size limit) had no room for a write; nothing half-written was kept."""

    def __init__(self, path: object):
        self.path = path
        super().__init__(f"disk full writing {path}: free space and run again")


def one_line(exc: BaseException) -> str:
    """``TypeName: message`` on one line (the message's whitespace collapsed), or the type name alone."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
