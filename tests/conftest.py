"""Shared pytest set-up.

Every module in tests/fixtures/ is loaded as a pytest plugin, so fixture modules
can be added without editing this file.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.environment import quiet_defaults

# Offline and quiet, before anything imports transformers, huggingface_hub or prefect.
quiet_defaults(offline=True)

_FIXTURES = Path(__file__).parent / "fixtures"
# Fixture modules import helpers from one another (tests.fixtures.text_worlds uses workspaces): rewrite their
# asserts whichever of them is imported first.
pytest.register_assert_rewrite("tests.fixtures")
pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in _FIXTURES.glob("*.py") if p.stem != "__init__"
)
