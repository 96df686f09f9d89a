"""bench/gpu_train.py stays runnable (CPU smoke run with the tiny model, both runners), and the
training summary records PyTorch's peak GPU memory when the process used CUDA."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types

import pytest

from conftest import EXAMPLES, ROOT

from qwen_factory_kit.post.training import cuda_peak_memory, summarize, summary_lines


def fake_torch(monkeypatch, *, used: bool) -> None:
    cuda = types.SimpleNamespace(is_available=lambda: used, is_initialized=lambda: used,
                                 max_memory_allocated=lambda: 14 * 2**30, max_memory_reserved=lambda: 15.5 * 2**30)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))


def test_summary_holds_pytorch_peak_gpu_memory_when_cuda_was_used(tmp_path, monkeypatch):
    fake_torch(monkeypatch, used=True)
    s = summarize(tmp_path, [{"step": 1, "loss": 2.0}], plot=False)
    assert s["peak_gpu_memory_allocated_gb"] == 14.0 and s["peak_gpu_memory_reserved_gb"] == 15.5
    assert json.loads((tmp_path / "qfk_summary.json").read_text())["peak_gpu_memory_reserved_gb"] == 15.5
    assert "peak GPU memory (PyTorch): 14.0 GB allocated, 15.5 GB reserved" in summary_lines(s)


def test_summary_has_no_gpu_memory_without_cuda(tmp_path, monkeypatch):
    fake_torch(monkeypatch, used=False)
    assert cuda_peak_memory() == {}
    s = summarize(tmp_path, [{"step": 1, "loss": 2.0}], plot=False)
    assert "peak_gpu_memory_allocated_gb" not in s and not any("GPU memory" in line for line in summary_lines(s))


def test_bench_lists_cases_and_rejects_unknown_ones():
    bench = [sys.executable, str(ROOT / "bench" / "gpu_train.py")]
    listed = subprocess.run([*bench, "--list-cases"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "4b-lora-liger-packing" in listed.stdout and "1.7b-qlora-mt" in listed.stdout
    bad = subprocess.run([*bench, "--cases", "4b-nope"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown case(s) 4b-nope" in bad.stderr


@pytest.mark.slow
def test_gpu_bench_smoke_run_on_cpu_with_both_runners(tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_train.py"), "--tiny", "--steps", "2", "--cases", "4b-lora",
                        "--runner", "qfk,lf", "--out", str(out), "--data", str(EXAMPLES / "medical_r1" / "rows.jsonl")],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    report = json.loads((out / "gpu_bench.json").read_text())
    runs = {r["runner"]: r for r in report["runs"]}
    assert set(runs) == {"qfk", "lf"} and report["machine"]["llamafactory"] and "cuda" in report["machine"]
    for r in runs.values():
        assert r["exit_code"] == 0 and r["case"] == "4b-lora" and r["steps"] == 2
        assert math.isfinite(r["effective_tokens_per_sec"]) and r["effective_tokens_per_sec"] > 0
        assert r["tokens_per_sec_ratio"] == 1.0 and r["wall_s"] > 0
        assert "use_cpu=true" in r["command"] and "max_steps=2" in r["command"]
    assert runs["qfk"]["command"].split()[1:4] == ["-m", "qwen_factory_kit", "train"]
    assert runs["lf"]["command"].split()[1:4] == ["-m", "llamafactory.cli", "train"]
    assert "4B lora as emitted" in p.stdout and "x emitted" in p.stdout
