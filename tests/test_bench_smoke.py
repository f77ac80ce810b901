"""The benchmarks' own machinery: the GPU check's report and the scale benchmark's growth exponents.

Speed is never asserted here (benchmarks measure it); these check that the scripts a GPU machine or a
release check would run produce the report they promise, on this CPU, in seconds.
"""
from __future__ import annotations

import json

import pytest

from bench import Spread, alternating, growth_exponent


def test_alternating_reverses_the_order_every_other_round():
    calls: list[str] = []
    out = alternating({"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert out == {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0)


def test_growth_exponent_reads_linear_and_quadratic_costs():
    sizes = [1_000, 10_000, 100_000]
    assert abs(growth_exponent(sizes, [0.5 * n for n in sizes]) - 1.0) < 1e-9
    assert abs(growth_exponent(sizes, [1e-6 * n * n for n in sizes]) - 2.0) < 1e-9


def test_gpu_check_on_a_cpu_writes_every_section_it_was_asked_for(tmp_path, capsys):
    from bench import gpu

    code = gpu.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--sections",
                     "environment,image_embedding,oom_halving"])
    assert code == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    sections = report["sections"]
    assert list(sections) == ["environment", "image_embedding", "oom_halving"]
    assert sections["environment"]["status"] == "ok" and sections["environment"]["device"] == "cpu"
    embed = sections["image_embedding"]
    assert embed["status"] == "ok", embed
    assert embed["items"] == 16 and embed["one_at_a_time_per_s"] > 0 and embed["batched_per_s"] > 0
    assert sections["oom_halving"] == {"status": "skipped",
                                       "reason": "needs a CUDA GPU (torch.cuda.is_available() is False)"}
    table = (tmp_path / "gpu_check.md").read_text(encoding="utf-8")
    assert "| image_embedding |" in table and "| oom_halving |" in table and "skipped" in table


def test_gpu_check_refuses_cuda_where_torch_sees_none(tmp_path, capsys):
    import torch

    from bench import gpu

    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA GPU here: the refusal is for machines without one")
    assert gpu.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "gpu_check.json").exists()


def test_scale_benchmark_reports_an_exponent_per_stage_and_a_rescan_that_reads_nothing(tmp_path):
    from bench import scale

    report = scale.main(["--sizes", "60,180", "--steps", "ingest,ingest rescan", "--root", str(tmp_path)])
    steps = report["steps"]
    assert [steps[n]["ingest"]["done"] for n in (60, 180)] == [60, 180]
    assert [steps[n]["ingest rescan"]["done"] for n in (60, 180)] == [0, 0]      # nothing changed: no batch
    assert set(report["time_exponents"]) == {"ingest", "ingest rescan"}
    assert all(isinstance(e, float) for e in report["time_exponents"].values())
