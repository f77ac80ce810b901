"""Photos where they live: a collection in S3 (a moto server started by the test, a real HTTP S3 API).

``capsearch data folder s3://bucket/prefix --captions s3://bucket/captions.csv`` ingests it; rescans are
incremental on the listing's size and last-modified time and on the content hash, as for a local folder;
the stages read each photo from its URL; a photo store that cannot be reached fails each photo with the
reason, quickly, and the run goes on.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from flows.api import run
from pipeline.datasets.demo import generate_demo_world
from pipeline.datasets.flickr8k import load_flickr8k
from pipeline.stages.ingest import removed_photos
from pipeline.workspace import Workspace
from tests.fixtures.cli import run_cli
from tests.fixtures.object_store import free_port

pytestmark = pytest.mark.slow

N_PHOTOS = 24
N_CAPTIONED = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("s3-world")
    generate_demo_world(root, n_images=N_PHOTOS, seed=11)
    return root


def collection(world: Path) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """The demo world's photos by file name, and the captions of the first ``N_CAPTIONED``."""
    items = sorted(load_flickr8k(world, name="demo").items, key=lambda i: i.id)
    photos = {Path(i.path).name: Path(i.path) for i in items}
    captions = {Path(i.path).name: i.captions for i in items[:N_CAPTIONED]}
    return photos, captions


def test_a_collection_in_s3_is_ingested_and_rescanned_incrementally(world, s3_server, tmp_path, monkeypatch, capsys,
                                                                   prefect_harness):
    photos, captions = collection(world)
    photos_url, captions_url = s3_server.upload_collection(photos, captions, "ingest")
    monkeypatch.setenv("CAPSEARCH_HOME", str(tmp_path))
    ws_path = tmp_path / "ws"
    code, out, err = run_cli(capsys, "-w", str(ws_path), "data", "folder", photos_url, "--captions", captions_url)
    assert code == 0, err
    assert f"ingested {N_PHOTOS} photos" in out
    ws = Workspace(ws_path)
    assert ws.config.data.path == photos_url and ws.config.data.captions == captions_url
    store = ws.store
    assert store.count_images() == N_PHOTOS and store.count_images("reference") == N_CAPTIONED
    names = sorted(photos)
    first = {r.id: r for r in store.images()}
    assert first[names[0]].sha256 == hashlib.sha256(photos[names[0]].read_bytes()).hexdigest()

    # unchanged: the listing says so, no photo is read or decoded again
    again = run(ws, ["ingest"]).stage("ingest")
    assert (again.items, again.status) == (0, "completed")

    # one photo replaced by other bytes, one written again with the same bytes (a newer last-modified), one gone
    time.sleep(1.1)          # S3 keeps last-modified to the second
    s3_server.put(f"ingest/photos/{names[1]}", photos[names[5]].read_bytes())
    s3_server.put(f"ingest/photos/{names[2]}", photos[names[2]].read_bytes())
    s3_server.delete(f"ingest/photos/{names[3]}")
    rescan = run(ws, ["ingest"]).stage("ingest")
    assert rescan.items == 2, rescan          # the replaced photo and the rewritten one; nothing else
    now = {r.id: r for r in ws.store.images()}
    assert now[names[1]].sha256 == first[names[5]].sha256
    assert now[names[2]].sha256 == first[names[2]].sha256
    assert names[3] not in now and names[3] in removed_photos(ws.store)
    assert run(ws, ["ingest"]).stage("ingest").items == 0

    # the stages read the photos from their URLs
    embedded = run(ws, ["embed-images", "neighbours", "prompts", "caption"])
    assert embedded.status == "completed"
    assert embedded.stage("embed-images").done == N_PHOTOS - 1
    assert embedded.stage("caption:knn-consensus").done == N_PHOTOS - N_CAPTIONED


def test_an_unreachable_photo_store_fails_each_photo_with_its_reason(world, s3_server, tmp_path, monkeypatch,
                                                                     prefect_harness):
    from tests.fixtures.workspaces import make_workspace

    photos, captions = collection(world)
    photos_url, captions_url = s3_server.upload_collection(photos, captions, "unreachable")
    ws = make_workspace(tmp_path / "ws", data={"source": "folder", "path": photos_url, "captions": captions_url})
    assert run(ws, ["ingest"]).status == "completed"
    closed = free_port()     # nothing listens there: every read is refused
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    t0 = time.monotonic()
    outcome = run(ws, ["embed-images"])
    seconds = time.monotonic() - t0
    embed = outcome.stage("embed-images")
    assert outcome.status == "completed" and embed.failed == N_PHOTOS and embed.done == 0
    assert seconds < 120, f"a photo store that does not answer held the run for {seconds:.0f} s"
    problems = {p.item: p.reason for p in ws.store.problems("embed-images")}
    assert set(problems) == set(photos)
    some = sorted(problems)[0]
    assert f"cannot read {photos_url}/{some}" in problems[some], problems[some]
    # reachable again: the failed photos are computed by a retry, nothing else is lost
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    retried = run(ws, ["embed-images"], retry_failed=True).stage("embed-images")
    assert (retried.done, retried.failed) == (N_PHOTOS, 0)
    assert not ws.store.problems("embed-images")
