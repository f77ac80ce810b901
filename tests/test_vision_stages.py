"""The vision stages end to end: embed-images, neighbours, prompts and caption:<name> on the demo world.

Generative captioners and open_clip run through the same configuration and loading code a user
runs, on tiny randomly initialised models saved by the fixtures (their captions are nonsense:
tests compare prompts, token ids and stored rows, never caption wording).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.config_file import update_config_file
from pipeline.datasets.demo import IMAGE_DIR, generate_demo_world
from pipeline.hashing import hash_text
from pipeline.images import open_rgb
from pipeline.keys import image_space
from pipeline.prompts import estimate_tokens, select_captions
from pipeline.snapshots import load_array
from pipeline.stages.ingest import IngestStage
from pipeline.stages.registry import pipeline_stages
from pipeline.stages.run import run_stage
from pipeline.stages.vision import CaptionStage, EmbedImagesStage, NeighboursStage, PromptsStage
from pipeline.status import workspace_status
from tests.fixtures.captioner_configs import SHORT_TEMPLATE, generative_captioners

N_IMAGES = 100
LITE_STAGES = ["ingest", "embed-images", "neighbours", "prompts", "caption"]


@pytest.fixture(scope="module")
def demo_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo-world")
    generate_demo_world(root, n_images=N_IMAGES, seed=7)
    return root


def demo_data(world: Path, n_targets: int = 40) -> dict:
    return {"source": "demo", "path": str(world), "demo_images": N_IMAGES, "demo_seed": 7, "n_targets": n_targets}


def configure(ws, **sections: dict) -> None:
    """Edit the workspace's capsearch.toml, as a user would."""
    update_config_file(ws.config_path, sections)
    ws.reload_config()


def run_all(ws, names=LITE_STAGES, captioners=None) -> dict:
    return {s.label: run_stage(s) for s in pipeline_stages(ws, names, captioners)}


def test_lite_stages_end_to_end_and_a_second_run_computes_nothing(demo_world, workspace_factory):
    ws = workspace_factory(data=demo_data(demo_world))
    reports = run_all(ws)
    assert {k: (r.done, r.failed) for k, r in reports.items()} == {
        "ingest": (100, 0), "embed-images": (100, 0), "neighbours": (40, 0), "prompts": (40, 0),
        "caption:knn-consensus": (40, 0)}
    store = ws.store
    targets = set(store.image_ids("target"))
    references = set(store.image_ids("reference"))
    assert len(targets) == 40 and len(references) == 60

    # image vectors keyed by content hash, exported as a .npy snapshot
    embed = EmbedImagesStage(ws)
    shas = sorted({r.sha256 for r in store.images()})
    assert store.has_vectors(embed.space, shas) == set(shas)
    ids, mat = load_array(store, embed.space)
    assert sorted(ids) == shas and mat.shape == (len(shas), embed.embedder.dim)
    assert np.allclose(np.linalg.norm(mat, axis=1), 1.0, atol=1e-5)

    # k reference photos per target, nearest first; never itself, never another target
    nb = store.neighbours(NeighboursStage(ws).config_hash())
    assert set(nb) == targets
    for target, rows in nb.items():
        assert len(rows) == 5
        assert {n.id for n in rows} <= references and target not in {n.id for n in rows}
        scores = [n.score for n in rows]
        assert scores == sorted(scores, reverse=True)

    # each prompt lists its neighbours' reference captions; kNN consensus picks one of them
    refs = store.reference_db_captions()
    prompts = store.prompts(PromptsStage(ws).config_hash())
    knn = store.captions("knn-consensus", CaptionStage(ws, "knn-consensus").config_hash())
    for target, rows in nb.items():
        listed = [c for _, c in select_captions([refs[n.id] for n in rows])]
        assert all(c in prompts[target].text for c in listed)
        assert knn[target].status == "ok" and knn[target].text in listed
        assert knn[target].settings["rule"] and knn[target].model and knn[target].seconds is not None

    before = (store.conn.execute("SELECT COUNT(*) FROM captions").fetchone()[0], store.vector_spaces())
    again = run_all(ws)
    assert all(r.ran == 0 and r.done == 0 for r in again.values()), again
    assert (store.conn.execute("SELECT COUNT(*) FROM captions").fetchone()[0], store.vector_spaces()) == before


def _lists(ws, config_hash: str) -> dict[str, list[tuple[str, int]]]:
    """Each photo's neighbour ids and duplicate kinds, nearest first (scores left out: the same product can
    differ in its last bit when the DB matrix around it differs)."""
    return {t: [(n.id, n.duplicate) for n in ns] for t, ns in ws.store.neighbours(config_hash).items()}


def test_a_new_split_reuses_every_image_vector_and_recomputes_only_the_lists_it_changes(demo_world, workspace_factory):
    """40 targets become 30 (the other 10 join the reference DB): no photo is embedded again, the neighbours'
    configuration is unchanged (the reference DB is not part of it), and exactly the targets whose neighbour
    list the 10 new reference photos change are computed again, ending where a clean workspace does."""
    ws = workspace_factory(data=demo_data(demo_world))
    run_all(ws, ["ingest", "embed-images", "neighbours"])
    old_hash = NeighboursStage(ws).config_hash()
    before = _lists(ws, old_hash)
    configure(ws, data={"n_targets": 30})
    run_stage(IngestStage(ws))
    assert run_stage(EmbedImagesStage(ws)).ran == 0
    stage = NeighboursStage(ws)
    assert stage.config_hash() == old_hash
    recomputed = run_stage(stage).done

    clean = workspace_factory(data=demo_data(demo_world, 30))
    run_all(clean, ["ingest", "embed-images", "neighbours"])
    expected = _lists(clean, old_hash)
    targets = set(clean.store.image_ids("target"))
    assert len(targets) == 30 and {t: v for t, v in _lists(ws, old_hash).items() if t in targets} == expected
    changed = {t for t in targets if before.get(t) != expected[t]}
    assert 0 < len(changed) < 30 and recomputed == len(changed)


def test_prompt_template_changes_prompts_and_vlm_hashes_but_not_neighbours(demo_world, workspace_factory, tmp_path):
    ws = workspace_factory(data=demo_data(demo_world))
    run_all(ws, ["ingest", "embed-images", "neighbours", "prompts"])
    hashes = {s: CaptionStage(ws, s).config_hash() for s in ("vlm-neighbours", "vlm-plain", "blip-base", "knn-consensus")}
    nb_hash, prompts_hash = NeighboursStage(ws).config_hash(), PromptsStage(ws).config_hash()

    template = tmp_path / "my-template.txt"
    template.write_text(SHORT_TEMPLATE, encoding="utf-8")
    configure(ws, prompts={"template": str(template)})
    assert NeighboursStage(ws).config_hash() == nb_hash
    assert PromptsStage(ws).config_hash() != prompts_hash
    after = {s: CaptionStage(ws, s).config_hash() for s in hashes}
    assert after["vlm-neighbours"] != hashes["vlm-neighbours"]
    assert {s: after[s] for s in ("vlm-plain", "blip-base", "knn-consensus")} == {
        s: hashes[s] for s in ("vlm-plain", "blip-base", "knn-consensus")}

    reports = run_all(ws, ["neighbours", "prompts"])
    assert reports["neighbours"].ran == 0 and reports["prompts"].done == 40
    new = ws.store.prompts(PromptsStage(ws).config_hash())
    old = ws.store.prompts(prompts_hash)
    assert all(p.text.startswith("Similar photos:") for p in new.values())
    assert not any(p.text.startswith("Similar photos:") for p in old.values())


def test_over_long_prompts_are_trimmed_with_a_warning_that_status_lists(demo_world, workspace_factory):
    ws = workspace_factory(data=demo_data(demo_world), prompts={"max_tokens": 200})
    run_all(ws, ["ingest", "embed-images", "neighbours", "prompts"])
    stage = PromptsStage(ws)
    assert stage.config()["token_budget"]["counter"].startswith("words")
    rows = ws.store.prompts(stage.config_hash())
    assert len(rows) == 40
    assert all(estimate_tokens(r.text) <= 200 for r in rows.values())
    trimmed = {i for i, r in rows.items() if r.trimmed}
    assert trimmed and all("max_tokens=200" in rows[i].warning for i in trimmed)
    listed = {p.item for p in workspace_status(ws).problems if p.stage == "prompts" and p.severity == "warning"}
    assert listed == trimmed


def test_a_photo_corrupted_after_ingest_is_recorded_and_the_rest_goes_on(demo_world, workspace_factory, tmp_path):
    world = tmp_path / "world"
    shutil.copytree(demo_world, world)
    ws = workspace_factory(data=demo_data(world, n_targets=10))
    run_stage(IngestStage(ws))
    victim = ws.store.image_ids("target")[3]
    photo = world / IMAGE_DIR / victim
    good_bytes = photo.read_bytes()
    photo.write_bytes(good_bytes[: len(good_bytes) // 3])

    reports = run_all(ws, ["embed-images", "neighbours", "prompts", "caption"])
    assert (reports["embed-images"].done, reports["embed-images"].failed) == (N_IMAGES - 1, 1)
    reason = EmbedImagesStage(ws).failed_items()[victim]
    assert "cannot decode" in reason and "truncated" in reason
    for stage in pipeline_stages(ws, ["neighbours", "prompts", "caption"]):
        counts = stage.counts()
        assert reports[stage.label].done == 9 and (counts.done, counts.failed) == (9, 1), stage.label
        assert reason in counts.failures[victim]
    status = workspace_status(ws)
    assert any(p.item == victim and p.stage == "embed-images" for p in status.problems)

    # not retried unless asked; once the photo is back, a retry completes every stage
    assert run_stage(EmbedImagesStage(ws)).ran == 0
    photo.write_bytes(good_bytes)
    assert run_stage(EmbedImagesStage(ws), retry_failed=True).done == 1
    again = run_all(ws, ["neighbours", "prompts", "caption"])
    assert all(r.done == 1 for r in again.values())
    assert all(s.counts().failed == 0 for s in pipeline_stages(ws, LITE_STAGES))


def test_vlm_neighbours_captioner_sees_the_neighbour_captions(demo_world, workspace_factory, tiny_smolvlm_dir, tmp_path):
    from pipeline.models import cache

    template = tmp_path / "short.txt"
    template.write_text(SHORT_TEMPLATE, encoding="utf-8")
    ws = workspace_factory(data=demo_data(demo_world, n_targets=6),
                           prompts={"template": str(template), "per_neighbour": "first"},
                           captioners=generative_captioners(vlm_neighbours=tiny_smolvlm_dir,
                                                            vlm_plain=tiny_smolvlm_dir))
    run_all(ws, ["ingest", "embed-images", "neighbours"])

    stage = CaptionStage(ws, "vlm-neighbours")
    captioner = stage.captioner
    cache.evict(captioner.cache_key)
    loads = cache.load_counts.get(captioner.cache_key, 0)
    prompts_stage = PromptsStage(ws)
    assert prompts_stage.config()["token_budget"] == {
        "counter": "tokenizer", "model": str(tiny_smolvlm_dir), "max_tokens": "model context", "max_new_tokens": 6}
    run_stage(prompts_stage)
    assert cache.load_counts.get(captioner.cache_key, 0) == loads  # counting tokens loads the tokenizer, not the model
    prompts = ws.store.prompts(prompts_stage.config_hash())
    assert len(prompts) == 6
    assert all(captioner.count_prompt_tokens(p.text) <= captioner.max_prompt_tokens for p in prompts.values())

    report = run_stage(stage)
    assert report.done == 6 and report.failed == 0
    rows = ws.store.captions("vlm-neighbours", stage.config_hash())
    nb = ws.store.neighbours(NeighboursStage(ws).config_hash())
    refs = ws.store.reference_db_captions()
    for target, row in rows.items():
        prompt = prompts[target].text
        assert row.prompt_id == prompts[target].prompt_id and row.model == str(tiny_smolvlm_dir)
        image = open_rgb(demo_world / IMAGE_DIR / target)
        inputs = captioner.prepare_inputs([image], [prompt])
        seen = captioner.tokenizer.decode(inputs["input_ids"][0])
        assert all(refs[n.id][0].strip() in seen for n in nb[target])
        assert row.text == captioner.caption([image], [prompt])[0]  # the batch gave what this prompt gives alone
    assert run_stage(CaptionStage(ws, "vlm-neighbours")).ran == 0

    # vlm-plain: the same model with one fixed instruction instead of the neighbours
    plain_stage = CaptionStage(ws, "vlm-plain")
    assert plain_stage.captioner.cache_key == captioner.cache_key  # one loaded model serves both
    assert run_stage(plain_stage).done == 6
    plain = ws.store.captions("vlm-plain", plain_stage.config_hash())
    instruction = "Describe this image in one sentence."
    for target, row in plain.items():
        assert row.prompt_id == hash_text(instruction)
        assert row.text == captioner.caption([open_rgb(demo_world / IMAGE_DIR / target)], [instruction])[0]
    assert any(plain[t].text != rows[t].text for t in rows)  # the neighbour prompt steers the output
    assert cache.load_counts[captioner.cache_key] == loads + 1  # loaded once for both stages


def test_blip_and_vit_gpt2_caption_stages(demo_world, workspace_factory, tiny_blip_dir, tiny_vit_gpt2_dir):
    ws = workspace_factory(data=demo_data(demo_world, n_targets=6),
                           captioners=generative_captioners(blip_base=tiny_blip_dir, vit_gpt2=tiny_vit_gpt2_dir))
    run_stage(IngestStage(ws))
    for name, folder in (("blip-base", tiny_blip_dir), ("vit-gpt2", tiny_vit_gpt2_dir)):
        stage = CaptionStage(ws, name)
        assert "prompts" not in stage.config() and "neighbours" not in stage.config()
        report = run_stage(stage)
        rows = ws.store.captions(name, stage.config_hash())
        assert set(rows) == set(ws.store.image_ids("target"))
        assert report.done == sum(r.status == "ok" for r in rows.values()) >= 5
        for row in rows.values():
            assert row.model == str(folder) and row.settings["max_new_tokens"] == 6 and row.seconds > 0
            assert row.status == "ok" or row.error
        assert run_stage(CaptionStage(ws, name)).ran == 0


def test_open_clip_embed_images_stage(demo_world, workspace_factory, tiny_open_clip):
    from pipeline.embedders.open_clip_embedder import OpenClipEmbedder

    ws = workspace_factory(data=demo_data(demo_world, n_targets=20),
                           image_embedder={"name": "open_clip", "model": tiny_open_clip.model,
                                           "pretrained": tiny_open_clip.weights_file, "num_workers": 2, "batch_size": 16},
                           runtime={"device": "cpu"})
    run_stage(IngestStage(ws))
    stage = EmbedImagesStage(ws)
    assert stage.uses_gpu is False and stage.space.startswith("image/openclip-")
    assert run_stage(stage).done == N_IMAGES
    assert run_stage(NeighboursStage(ws)).done == 20
    rows = ws.store.images()[:4]
    keys, vecs = ws.store.get_vectors(image_space(stage.embedder.key), [r.sha256 for r in rows])
    direct = OpenClipEmbedder(tiny_open_clip.model, tiny_open_clip.weights_file, device="cpu").embed_images(
        [open_rgb(demo_world / IMAGE_DIR / r.path) for r in rows])
    assert vecs.shape == (4, tiny_open_clip.embed_dim) and np.allclose(vecs, direct, atol=1e-5)
    assert run_stage(EmbedImagesStage(ws)).ran == 0
