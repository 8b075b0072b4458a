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
import threading
from pathlib import Path

import pytest
from counting_tts import Safe, Unsafe
from helpers import load_report, run_cli

from ebook2audio_dask.cluster.local import _slots_per_gpu
from ebook2audio_dask.engines import EngineSpec, load_engine, unload_engines
from ebook2audio_dask.errors import UsageError

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
        "convert",
        str(corpus / FRENCH),
        "-o",
        str(out),
        "--cache",
        str(tmp_path / "chunks"),
        "--engine",
        "espeak",
        "--chapters",
        "1-4",
        "--batch-chars",
        "300",
        "--gpus",
        "0",
        "--slots-per-gpu",
        str(slots),
        "--no-progress",
        env={
            "DASK_DISTRIBUTED__SCHEDULER__PRELOAD": json.dumps(
                [str(HERE / "task_times_preload.py")]
            ),
            "E2A_TEST_TASK_TIMES": str(times),
        },
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


# --------------------------------------------------------------------------- engines and threads
@pytest.mark.parametrize("cls, expected", [(Unsafe, 1), (Safe, 3)])
def test_an_engine_that_is_not_thread_safe_speaks_one_call_at_a_time(cls, expected):
    # both engines are registered by their entry points (tests/plugins/counting_tts.py)
    cls.active = cls.most = 0
    engine = load_engine(EngineSpec.make(cls.name, "v"))
    assert isinstance(engine, cls)
    threads = [threading.Thread(target=engine.synthesize, args=(["a"],)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cls.most == expected
    assert (
        engine.synthesize(["a", "b"])[1].dtype.name == "int16"
    )  # the wrapper returns what it wraps
    unload_engines()


def test_shipped_engines_say_whether_they_are_thread_safe():
    from ebook2audio_dask.engines.coqui import CoquiEngine
    from ebook2audio_dask.engines.espeak import EspeakEngine
    from ebook2audio_dask.engines.piper import PiperEngine

    assert EspeakEngine.thread_safe and PiperEngine.thread_safe
    assert not CoquiEngine.thread_safe  # XTTS seeds torch's global generator
