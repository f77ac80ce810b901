"""The session's shared demo worlds (tests/fixtures/demo_worlds.py): generated once, copied to be changed, and a
change to a shared one found at the session's end."""
from __future__ import annotations

import pytest

from tests.fixtures.demo_worlds import DemoWorlds


def test_a_world_is_generated_once_copies_are_the_tests_own_and_a_change_to_the_shared_one_is_found(
        tmp_path_factory: pytest.TempPathFactory, tmp_path):
    worlds = DemoWorlds(tmp_path_factory)
    shared = worlds.shared(4, 3)
    assert worlds.shared(4, 3) == shared, "the same size and seed: the same world, not a second one"
    photos = sorted(p for p in shared.rglob("*.jpg"))
    assert len(photos) == 4

    mine = worlds.copy(tmp_path / "mine", 4, 3)
    (mine / photos[0].relative_to(shared)).write_bytes(b"changed")
    (mine / "extra.txt").write_text("mine")
    assert worlds.changed() == [], "changing a copy leaves the shared world as it was"

    photos[1].write_bytes(b"changed")
    (shared / "extra.txt").write_text("oops")
    assert worlds.changed() == [str(photos[1]), f"{shared}/extra.txt"]
