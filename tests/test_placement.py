"""Where the stages run: synthesize only on workers with the requested resources.

The clusters here are distributed's own test clusters
(:func:`distributed.utils_test.gen_cluster`): a real scheduler and real
workers, started in this process on its event loop, each worker advertising
its own resources (``nthreads=[(host, threads, {"resources": {...}}), ...]``).

``gen_cluster`` runs an ``async`` test on the loop that also runs the
scheduler and the workers, but the library's API (:func:`submit_book`,
``BookJob.submit_synthesis``...) is synchronous and drives a *synchronous*
:class:`distributed.Client`.  So each test hands the synchronous part to a
thread (``asyncio.to_thread``): there a normal ``Client(s.address)`` (with its
own IO-loop thread) talks to the scheduler over TCP, exactly as a user's
client would, while the test's loop keeps serving the cluster.  (The other
test helper, ``distributed.utils_test.cluster()``, starts worker *processes*
that all get the same ``worker_kwargs``, so it cannot give workers different
resources.)

Where each task ran is taken from the scheduler itself, by a scheduler plugin
that records, for every task that goes to ``processing``, the worker it was
sent to and the resources it asked for; the library's own account
(``BatchResult.worker``, the report's ``chunks_per_worker``) must agree.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml
from distributed import Client, Event, SchedulerPlugin
from distributed.utils_test import gen_cluster

# Imported before distributed.utils_test: gen_cluster resets dask's configuration to
# what it was when utils_test was imported, and that must include our defaults.
import ebook2audio_dask as e2a
from ebook2audio_dask.config import DEFAULTS_FILE
from ebook2audio_dask.pipeline.results import BatchResult

FRENCH = "entre-nous-lectures-francaises.txt"
#: Four short chapters (~1,600 characters): several synthesize tasks, a few seconds of espeak.
CHAPTERS = (1, 2, 3, 4)
#: The package's defaults, given to every test cluster explicitly (gen_cluster resets
#: dask's config when it starts, so the autouse fixtures' settings do not reach the test).
with open(DEFAULTS_FILE, encoding="utf-8") as _f:
    E2A_DEFAULTS = {"ebook2audio": yaml.safe_load(_f)["ebook2audio"]}


class Placement(SchedulerPlugin):
    """Records, per task key, the worker it was sent to and its resource restrictions."""

    name = "test-placement"

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.ran_on: dict[str, list[str]] = {}
        self.restrictions: dict[str, dict] = {}

    def transition(self, key, start, finish, *args, **kwargs):
        if finish != "processing":
            return
        ts = self.scheduler.tasks[key]
        self.ran_on.setdefault(str(key), []).append(ts.processing_on.address)
        self.restrictions[str(key)] = dict(ts.resource_restrictions or {})

    def stage_keys(self, stage: str) -> list[str]:
        return [k for k in self.ran_on if k.startswith(f"{stage}-")]

    def workers_of(self, stage: str) -> set[str]:
        return {w for k in self.stage_keys(stage) for w in self.ran_on[k]}


def _options(tmp_path: Path, **kwargs) -> e2a.ConvertOptions:
    return e2a.ConvertOptions(
        output=str(tmp_path / "out"),
        cache=str(tmp_path / "chunks"),
        engine="espeak",
        chapters=CHAPTERS,
        batch_chars=400,
        **kwargs,
    )


def _hold(event: Event) -> bool:
    """Occupy a worker thread until *event* is set."""
    return event.wait(timeout=300)


def _computed_on(worker) -> set[str]:
    """Keys the worker was asked to compute (from the worker's own state-machine log)."""
    return {
        str(entry[0]) for entry in worker.state.log if len(entry) > 1 and entry[1] == "compute-task"
    }


def _convert(
    address: str, source: str, options: e2a.ConvertOptions, *, block_on: str | None = None
):
    """Convert one book through the library's synchronous API, in this (non-loop) thread.

    With *block_on* (a worker address), that worker's only thread is held by a
    task that waits on an Event until the book's plan is ready, so that parse
    and chunk cannot run there; synthesis is submitted, then the Event is set.

    Returns ``(report, [BatchResult, ...])``.
    """
    with Client(address, timeout="20s") as client:
        blocker = None
        if block_on is not None:
            event = Event("test-placement-hold", client=client)
            blocker = client.submit(_hold, event, key="hold-gpu", workers=[block_on], pure=False)
            # the holder must be running before the book is submitted
            deadline = time.monotonic() + 120
            while not client.processing(workers=[block_on]).get(block_on):
                assert time.monotonic() < deadline, "the holding task never started"
                time.sleep(0.05)
        job = e2a.submit_book(client, source, options)
        try:
            job.plan.result(timeout=300)
            job.submit_synthesis()
            if blocker is not None:
                event.set()
                assert blocker.result(timeout=300) is True
            job.merge.result(timeout=600)
            batches: list[BatchResult] = [f.result() for f in job.batches]
            report = job.report()
            job.publish(report)
        finally:
            job.release()
    return report, batches


def _check_book(report: dict, batches: list[BatchResult], out: Path) -> None:
    """The book was really converted: espeak French, every chunk synthesised once, an M4B."""
    assert report["engine"] == "espeak" and report["language"] == "fr"
    assert [c["index"] for c in report["chapters"]] == list(CHAPTERS)
    totals = report["totals"]
    assert totals["chunks_from_cache"] == 0
    assert (
        sum(len(b.samples) for b in batches)
        == totals["chunks_synthesized"]
        == totals["unique_chunks"]
        > 0
    )
    assert totals["audio_s"] > 60  # ~1,600 characters of French
    assert (out / "entre-nous-lectures-francaises.m4b").stat().st_size > 10_000


# --------------------------------------------------------------------------- default resources
@gen_cluster(
    nthreads=[
        ("127.0.0.1", 1, {"resources": {"GPU": 1}}),
        ("127.0.0.1", 1, {"resources": {"GPU": 1}}),
        ("127.0.0.1", 2),  # more threads and no resources: attractive for anything unrestricted
    ],
    config=E2A_DEFAULTS,
    timeout=900,
)
async def test_synthesis_runs_only_on_gpu_workers(s, gpu_a, gpu_b, cpu, corpus, tmp_path):
    placement = Placement(s)
    s.add_plugin(placement)
    options = _options(tmp_path)
    report, batches = await asyncio.to_thread(_convert, s.address, str(corpus / FRENCH), options)
    _check_book(report, batches, tmp_path / "out")

    gpu = {gpu_a.address, gpu_b.address}
    synth = placement.stage_keys("synthesize")
    assert len(synth) == len(batches) >= 3  # several tasks, so the placement below means something
    # the scheduler sent every synthesize task to a GPU worker, and the library agrees
    assert placement.workers_of("synthesize") <= gpu, placement.ran_on
    assert {b.worker for b in batches} <= gpu
    assert set(report["chunks_per_worker"]) <= gpu
    assert {b.worker for b in batches} == placement.workers_of("synthesize")
    # they asked for the configured resources; the other stages asked for none
    assert all(placement.restrictions[k] == {"GPU": 1} for k in synth)
    for stage in ("parse", "chunk", "cover", "merge"):
        [key] = placement.stage_keys(stage)
        assert placement.restrictions[key] == {}, (key, placement.restrictions[key])
    # the workers' own logs tell the same story
    assert set(synth) == {
        k for w in (gpu_a, gpu_b) for k in _computed_on(w) if k.startswith("synthesize-")
    }
    assert not any(k.startswith("synthesize-") for k in _computed_on(cpu))


@gen_cluster(
    nthreads=[("127.0.0.1", 1, {"resources": {"GPU": 1}}), ("127.0.0.1", 1)],
    config=E2A_DEFAULTS,
    timeout=900,
)
async def test_unrestricted_stages_run_on_a_worker_without_resources(s, gpu, cpu, corpus, tmp_path):
    """parse, chunk and cover are free to use a CPU-only worker (not only *may*: here they do).

    The GPU worker's one thread is held while the book is parsed and planned,
    so those tasks can only go to the CPU-only worker.  (The merge, which
    asks for no resources either, goes wherever Dask finds it cheapest once
    the batches are done.)  Synthesis waits for the GPU worker rather than
    use the idle CPU-only one.
    """
    placement = Placement(s)
    s.add_plugin(placement)
    options = _options(tmp_path)
    report, batches = await asyncio.to_thread(
        _convert, s.address, str(corpus / FRENCH), options, block_on=gpu.address
    )
    _check_book(report, batches, tmp_path / "out")
    assert placement.ran_on["hold-gpu"] == [gpu.address]
    for stage in ("parse", "chunk", "cover"):
        assert placement.workers_of(stage) == {cpu.address}, (stage, placement.ran_on)
    [merge] = placement.stage_keys("merge")
    assert placement.restrictions[merge] == {}
    assert placement.workers_of("synthesize") == {gpu.address}, placement.ran_on
    assert {b.worker for b in batches} == {gpu.address}
    assert report["chunks_per_worker"] == {gpu.address: report["totals"]["chunks_synthesized"]}


# --------------------------------------------------------------------------- custom resources
@pytest.mark.parametrize(
    "resources, allowed",
    [
        pytest.param({"GPU": 2}, {1}, id="GPU=2-needs-the-big-worker"),
        pytest.param({"TTS": 1}, {2}, id="other-resource-name"),
        pytest.param({"GPU": 1}, {0, 1}, id="GPU=1-either-gpu-worker"),
    ],
)
@gen_cluster(
    nthreads=[
        ("127.0.0.1", 1, {"resources": {"GPU": 1}}),
        ("127.0.0.1", 1, {"resources": {"GPU": 2}}),
        ("127.0.0.1", 1, {"resources": {"TTS": 1}}),
        ("127.0.0.1", 1),
    ],
    config=E2A_DEFAULTS,
    timeout=900,
)
async def test_custom_resources_go_only_to_workers_with_enough(
    s, w_gpu1, w_gpu2, w_tts, w_cpu, resources, allowed, corpus, tmp_path
):
    workers = [w_gpu1, w_gpu2, w_tts, w_cpu]
    placement = Placement(s)
    s.add_plugin(placement)
    options = _options(tmp_path, resources=resources)
    report, batches = await asyncio.to_thread(_convert, s.address, str(corpus / FRENCH), options)
    _check_book(report, batches, tmp_path / "out")

    permitted = {workers[i].address for i in allowed}
    synth = placement.stage_keys("synthesize")
    assert synth and all(placement.restrictions[k] == resources for k in synth)
    assert placement.workers_of("synthesize") <= permitted, placement.ran_on
    assert {b.worker for b in batches} <= permitted
    assert set(report["chunks_per_worker"]) <= permitted
    for stage in ("parse", "chunk", "cover", "merge"):
        [key] = placement.stage_keys(stage)
        assert placement.restrictions[key] == {}
