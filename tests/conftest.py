"""Shared pytest set-up.

Every module in tests/fixtures/ is loaded as a pytest plugin, so fixture modules
can be added without editing this file.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Offline and quiet, before anything imports transformers, huggingface_hub or prefect.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

_FIXTURES = Path(__file__).parent / "fixtures"
# Fixture modules import helpers from one another (tests.fixtures.text_worlds uses workspaces): rewrite their
# asserts whichever of them is imported first.
pytest.register_assert_rewrite("tests.fixtures")
pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in _FIXTURES.glob("*.py") if p.stem != "__init__"
)
