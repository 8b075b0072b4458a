"""Several synthesize slots per GPU worker (``--slots-per-gpu``, ``cluster.slots-per-gpu``).

The machine has no GPU: the embedded cluster is given one by name
(``--gpus 0``), which is all :class:`GPULocalCluster` needs (each worker gets
``CUDA_VISIBLE_DEVICES``); the engine is espeak-ng, a real one that ignores it.
When each synthesize task really computed is what the workers themselves
measured, reported to the scheduler and recorded there by a preload
(``tests/task_times_preload.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ebook2audio_dask.cluster.local import _slots_per_gpu
from ebook2audio_dask.errors import UsageError
from helpers import load_report, run_cli

HERE = Path(__file__).resolve().parent
FRENCH = "entre-nous-lectures-francaises.txt"


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of the (start, stop) intervals that overlap."""
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


@pytest.mark.parametrize("slots", [1, 2])
def test_a_gpu_worker_runs_n_synthesize_tasks_at_once(slots, corpus, tmp_path):
    times = tmp_path / "times.jsonl"
    out = tmp_path / "out"
    result = run_cli(
        "convert", str(corpus / FRENCH), "-o", str(out), "--cache", str(tmp_path / "chunks"),
        "--engine", "espeak", "--chapters", "1-4", "--batch-chars", "300", "--gpus", "0",
        "--slots-per-gpu", str(slots), "--no-progress",
        env={"DASK_DISTRIBUTED__SCHEDULER__PRELOAD": json.dumps([str(HERE / "task_times_preload.py")]),
             "E2A_TEST_TASK_TIMES": str(times)},
    )
    assert result.returncode == 0, result.stderr
    report = load_report(out / "entre-nous-lectures-francaises.report.json")
    records = [json.loads(line) for line in times.read_text().splitlines()]
    synth = [r for r in records if r["key"].startswith("synthesize-")]
    assert len(synth) == report["totals"]["synthesize_tasks"] >= 4
    # one GPU: one worker, with N threads and N times the GPU resource
    [worker] = {r["worker"] for r in synth}
    assert set(report["chunks_per_worker"]) == {worker}
    assert {r["nthreads"] for r in synth} == {slots}
    assert all(r["resources"] == {"GPU": slots} for r in synth)
    # what the worker measured: N tasks computing at the same time, never more
    assert _most_at_once([(r["start"], r["stop"]) for r in synth]) == slots


def test_slots_per_gpu_must_be_a_whole_number_of_at_least_one(corpus, tmp_path):
    assert _slots_per_gpu(None) == 1 and _slots_per_gpu(4) == 4 and _slots_per_gpu("3") == 3
    for bad in (0, -1, "two", "1.5"):
        with pytest.raises(UsageError, match="invalid slots per GPU"):
            _slots_per_gpu(bad)
    result = run_cli("convert", str(corpus / FRENCH), "-o", str(tmp_path), "--slots-per-gpu", "0")
    assert result.returncode == 2 and "--slots-per-gpu" in result.stderr
