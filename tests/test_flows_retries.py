"""Retries: a network stage is retried with backoff when its server fails; a user error is not retried."""
from __future__ import annotations

import pytest

from flows.api import run
from pipeline.errors import ConfigError
from tests.fixtures.openai_server import Reply
from tests.fixtures.workspaces import make_workspace
from tests.fixtures.flow_stages import N_IMAGES, N_TARGETS, ChatStage, demo_data, outputs, spec, task_runs


@pytest.fixture
def ws(demo_world, tmp_path, chat_server, prefect_harness, monkeypatch):
    # the older short names of orchestration.flow_retry_delay / flow_retries (tests/test_config.py: both names)
    monkeypatch.setenv("CAPSEARCH_FLOW_RETRY_DELAY", "0.05")
    monkeypatch.setenv("CAPSEARCH_FLOW_RETRIES", "3")
    ws = make_workspace(tmp_path / "ws", data=demo_data(demo_world), orchestration={"batch_size": 64},
                        queries={"base_url": chat_server.url, "model": "test-model"})
    run(ws, ["ingest"])
    return ws


def test_network_stage_survives_a_server_that_fails_twice(ws, chat_server):
    failures = {"left": 2}

    def script(request, attempt):
        if failures["left"] > 0:
            failures["left"] -= 1
            return Reply.error(503, "overloaded")
        return Reply.answer(f"answer to {request.text}")

    chat_server.script = script
    summary = run(ws, [spec(ChatStage)])
    outcome = summary.stage(ChatStage.name)
    assert outcome.status == "completed" and outcome.ran == outcome.batches == 1
    answers = outputs(ws, ChatStage.name)
    assert len(answers) == N_TARGETS
    assert all(v == f"answer to describe {k}" for k, v in answers.items())
    assert len(chat_server.requests) == N_TARGETS + 2
    (task,) = task_runs([outcome.flow_run_id], expected=1)
    assert task.state.name == "Completed" and task.run_count == 3


def test_a_configuration_error_is_not_retried(ws, chat_server, monkeypatch):
    class NoKeyError(ConfigError):
        pass

    calls = []

    def refuse(self, item):
        calls.append(item)
        raise NoKeyError("OPENAI_API_KEY is not set")

    monkeypatch.setattr(ChatStage, "value", refuse)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        run(ws, [spec(ChatStage)])
    runs = ws.store.stage_runs(ChatStage.name)
    assert runs[0].status == "failed" and "OPENAI_API_KEY" in runs[0].message
    assert len(calls) == 1, "the batch ran once: no retry for an error the user has to fix"


@pytest.mark.asyncio
async def test_a_failed_run_raises_also_where_an_event_loop_runs(ws, monkeypatch):
    """A notebook or an async program calls run() from a thread that runs an event loop: Prefect then hands back
    coroutines for results, and a failed run must still raise, not read as completed."""
    def refuse(self, item):
        raise ConfigError("OPENAI_API_KEY is not set")

    monkeypatch.setattr(ChatStage, "value", refuse)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        run(ws, [spec(ChatStage)])
    assert ws.store.stage_runs(ChatStage.name)[0].status == "failed"
