"""A workspace: ``outputs/<name>/`` with its configuration, store, arrays and reports.

The capsearch home is ``$CAPSEARCH_HOME`` or the current directory; relative data
paths in the configuration resolve against it, and ``outputs/`` and ``data/``
live under it.
"""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Mapping

from pipeline.config import Config, environment, load_config
from pipeline.store import Store

DEFAULT_WORKSPACE = "outputs/default"
CONFIG_NAME = "capsearch.toml"


def capsearch_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$CAPSEARCH_HOME`` (of ``environ``; default: this process's environment), else the working directory."""
    return Path(environment(environ).home or os.getcwd()).expanduser().resolve()


def resolve_home_path(path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else capsearch_home() / p


def default_workspace_path() -> Path:
    return resolve_home_path(environment().workspace or DEFAULT_WORKSPACE)


class Workspace:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser().resolve() if root is not None else default_workspace_path()

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def db_path(self) -> Path:
        return self.root / "capsearch.db"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def results_dir(self) -> Path:
        """Where Prefect persists task results and cache records (deleted with the workspace)."""
        return self.root / "prefect-results"

    @property
    def exists(self) -> bool:
        return self.db_path.exists() or self.config_path.exists()

    def require(self) -> "Workspace":
        """This workspace, which must exist: only `capsearch init` and `capsearch data ...` create one."""
        if not self.exists:
            from pipeline.errors import StoreError

            hint = "" if self.root.is_dir() else " (the folder does not exist)"
            raise StoreError(f"no workspace at {self.root}{hint}: create one with `capsearch init -w {self.root}` "
                             f"or `capsearch data demo -w {self.root}`, or name an existing one with -w")
        return self

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path)

    def reload_config(self) -> Config:
        self.__dict__.pop("config", None)
        return self.config

    @cached_property
    def store(self) -> Store:
        """The workspace's store; created only in a workspace that has its capsearch.toml (never by a mistyped path)."""
        self.require()
        return Store(self.root, create=self.config_path.exists())

    def data_path(self) -> Path | str:
        """The collection's folder, or its URL prefix as configured (``s3://bucket/prefix``)."""
        from pipeline.locations import is_url

        path = self.config.data.path
        return path if is_url(path) else resolve_home_path(path)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"
