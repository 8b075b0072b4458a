"""``benchmarks/gpu_check.py`` keeps working: its ``--quick`` mode on the CPU (tiny models, every
section)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _bench_run():
    """``benchmarks/run.py`` as a module (it records gpu_check's figures in RESULTS.md)."""
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT))  # fmt: skip


@pytest.mark.slow
def test_quick_mode_runs_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = _run("--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert json.loads(result.stdout.strip().splitlines()[-1]) == data
    assert data["mode"] == "quick" and data["device"] == "cpu" and data["measured"] is True
    # Kokoro: the same texts one per pass and in buckets, the same speech
    k = data["kokoro"]
    assert k["single"]["passes"] == k["texts"] > k["batched"]["passes"] >= 1
    assert k["single"]["audio_s"] == k["batched"]["audio_s"] > 0
    assert k["agree"]["max_duration_diff_frames"] <= 1 and k["agree"]["min_correlation"] >= 0.99
    assert k["single"]["gpu_util"] is None  # no nvidia-smi here
    # slots: one worker with N threads and N x GPU; N tasks at once, one model load
    for row, n in zip(data["slots"], (1, 2)):
        assert (
            row["slots"] == n
            and row["worker_threads"] == n
            and row["worker_resources"] == {"GPU": n}
        )
        assert row["most_tasks_at_once"] == n and row["model_loads"] == [1] and row["audio_s"] > 0
    # Coqui VITS (coqui-tts is part of the dev install): batched and single speak the same length
    c = data["coqui"]
    assert c["chunks"] > 0 and c["audio_s_single"] == c["audio_s_batched"] > 0
    # placement: a worker per (named) GPU, each with its own CUDA_VISIBLE_DEVICES
    p = data["placement"]
    assert sorted(w["CUDA_VISIBLE_DEVICES"] for w in p["workers"]) == ["0", "1"]
    assert p["distinct_gpus"] and p["tasks_saw_their_workers_gpu"]
    assert sum(p["tasks_per_worker"].values()) == 8
    # run.py turns the JSON into RESULTS.md rows, keeping the machine and date it was measured on
    rows = {row["key"]: row for row in _bench_run().gpu_figures(data)}
    assert {
        "kokoro_gpu.single",
        "kokoro_gpu.batched",
        "kokoro_gpu.throughput",
        "kokoro_gpu.slots1",
        "kokoro_gpu.slots2",
        "kokoro_gpu.busy",
        "coqui_gpu.batched",
        "gpu.placement",
    } <= set(rows)
    batched = rows["kokoro_gpu.batched"]
    assert batched["ratio"] == k["ratio"] and batched["target"] == "≥ 4.00"
    assert all(
        row["machine"] == data["machine"] and row["date"] == data["date"] for row in rows.values()
    )


def test_without_a_gpu_the_full_check_says_not_measured(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the full check would run")
    result = _run("--out", str(tmp_path / "x.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "x.json").read_text())
    assert data["measured"] is False and "no CUDA GPU" in data["why"] and data["mode"] == "full"
    bench = _bench_run()
    rows = bench.gpu_figures(data)
    assert rows and all(row["value"] == bench.NOT_MEASURED and row["pass"] is None for row in rows)
    assert [row["target"] for row in rows][:4] == ["≥ 4", "≥ 1000", "≥ 90", "≥ 3"]


def test_the_wheel_list_pins_every_wheel():
    result = _run("--wheels", timeout=120)
    wheels = result.stdout.split()
    assert (
        result.returncode == 0 and "kokoro==0.9.4" in wheels and "distributed==2026.8.0" in wheels
    )
    assert all("==" in w for w in wheels) and len(wheels) == len(set(wheels))
