"""The job's figures: Dask fine performance metrics, ``ebook2audio_*`` Prometheus
metrics at the scheduler's ``/metrics``, ``log_event`` events, and ``ebook2audio report``.

Real conversions (espeak, French, a few chapters) on real schedulers and
workers: distributed's ``gen_cluster`` (in this process, so the scheduler's
state can be read directly) and a ``LocalCluster`` of worker processes whose
scheduler serves ``/metrics`` over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from distributed import Client
from distributed.utils_test import gen_cluster
from helpers import run_cli

# Imported before distributed.utils_test (see tests/test_placement.py).
import ebook2audio_dask as e2a
from ebook2audio_dask.config import DEFAULTS_FILE
from ebook2audio_dask.pipeline.metrics import TOPIC, job_totals
from ebook2audio_dask.pipeline.report import format_summary, summarize_reports

FRENCH = "entre-nous-lectures-francaises.txt"
CHAPTERS = (1, 2, 3)
with open(DEFAULTS_FILE, encoding="utf-8") as _f:
    E2A_DEFAULTS = {"ebook2audio": yaml.safe_load(_f)["ebook2audio"]}


def _options(tmp_path: Path) -> e2a.ConvertOptions:
    return e2a.ConvertOptions(
        output=str(tmp_path / "out"),
        cache=str(tmp_path / "chunks"),
        engine="espeak",
        chapters=CHAPTERS,
        batch_chars=400,
    )


def _wait_for(check, timeout: float = 60.0):
    """Poll *check* (workers send their metrics with heartbeats) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_job_totals_sums_only_the_jobs_units_and_tasks():
    cumulative = {
        ("execute", "synthesize-book-a", "synthesized", "chunks"): 3,
        ("execute", "synthesize-book-b", "synthesized", "chunks"): 4,
        ("execute", "synthesize-book-a", "thread-cpu", "seconds"): 9.0,  # Dask's own
        ("execute", "merge-book-a", "from-cache", "chunks"): 2,
        ("execute", "user-task", "synthesized", "chunks"): 100,  # not ours
        ("get-data", "network", "seconds"): 1.0,
        "latency": 0.1,
    }
    assert job_totals(cumulative) == {("synthesized", "chunks"): 7, ("from-cache", "chunks"): 2}


def test_books_running_counts_each_book_once_until_it_ends():
    from ebook2audio_dask.pipeline.metrics import JobMetrics

    plugin = JobMetrics()
    plugin.log_event(TOPIC, {"action": "book-started", "book": "a.epub", "output": "out/a.m4b"})
    plugin.log_event(TOPIC, {"action": "book-started", "book": "b.epub", "output": "out/b.m4b"})
    plugin.log_event("other-topic", {"action": "book-finished", "book": "a.epub"})
    assert plugin.running == {"a.epub", "b.epub"}
    # a split book's output is its first part, not the name announced at the start
    plugin.log_event(
        TOPIC, {"action": "book-finished", "book": "a.epub", "output": "out/a - Part 1 of 2.m4b"}
    )
    plugin.log_event(TOPIC, {"action": "book-failed", "book": "b.epub", "output": "out/b.m4b"})
    assert plugin.running == set() and dict(plugin.books) == {
        "started": 2,
        "finished": 1,
        "failed": 1,
    }


@gen_cluster(
    nthreads=[("127.0.0.1", 1, {"resources": {"GPU": 1}})] * 2, config=E2A_DEFAULTS, timeout=120
)
async def test_fine_metrics_events_and_prometheus_agree_with_the_report(s, a, b, corpus, tmp_path):
    import prometheus_client

    def convert() -> tuple[dict, tuple]:
        with Client(s.address, timeout="20s") as client:
            [result] = e2a.run_jobs(
                [e2a.submit_book(client, str(corpus / FRENCH), _options(tmp_path))]
            )
            assert result.ok, result.error
            return result.report, client.get_events(TOPIC)

    report, events = await asyncio.to_thread(convert)
    totals = report["totals"]
    assert totals["chunks_synthesized"] == totals["unique_chunks"] > 3

    # Events: started (with the plan's figures), then finished (with the report's).
    actions = [(msg["action"], msg["book"]) for _, msg in events]
    assert actions == [
        ("book-started", str(corpus / FRENCH)),
        ("book-finished", str(corpus / FRENCH)),
    ]
    started, finished = events[0][1], events[1][1]
    assert started["chunks"] == totals["chunks"] and started["chars"] == totals["chars"]
    assert started["chunks_from_cache"] == 0 and started["engine"] == "espeak"
    for key in (
        "audio_s",
        "wall_s",
        "rtf",
        "chunks_synthesized",
        "chunks_from_cache",
        "chunks_failed",
    ):
        assert finished[key] == totals[key], key
    assert finished["chapters"] == len(CHAPTERS) and finished["output"] == report["output"]

    # Fine performance metrics reach the scheduler with each worker's heartbeats (not
    # all at once): wait until both the merge's and every synthesize task's have come.
    def arrived():
        fine = job_totals(s.cumulative_worker_metrics)
        done = fine.get(("synthesized", "chunks")) == totals["chunks_synthesized"]
        return done and fine.get(("merged", "audio-seconds"))

    got = await asyncio.to_thread(_wait_for, arrived)
    assert got == pytest.approx(totals["audio_s"], abs=0.01)
    fine = job_totals(s.cumulative_worker_metrics)
    assert fine[("synthesized", "chunks")] == totals["chunks_synthesized"]
    assert fine[("synthesized", "engine-seconds")] == pytest.approx(totals["synth_s"], abs=0.01)
    speech = fine[("synthesized", "audio-seconds")]
    assert 0.5 * totals["audio_s"] < speech < totals["audio_s"]  # the M4B adds pauses
    assert ("from-cache", "chunks") not in fine and ("failed", "chunks") not in fine
    # ... and on the dashboard's per-span view: the book's span is tagged with its stem.
    spans = s.extensions["spans"]
    book_span = spans.merge_by_tags("entre-nous-lectures-francaises")
    assert (
        job_totals(book_span.cumulative_worker_metrics)[("synthesized", "chunks")]
        == totals["chunks_synthesized"]
    )

    # The Prometheus text the scheduler's /metrics serves (same registry, this process).
    text = prometheus_client.generate_latest().decode()
    assert (
        f'ebook2audio_chunks_total{{state="synthesized"}} {float(totals["chunks_synthesized"])}'
        in text
    )
    assert 'ebook2audio_books_total{state="finished"} 1.0' in text
    assert "ebook2audio_books_running 0.0" in text
    rtf = float(
        next(
            line.split()[-1]
            for line in text.splitlines()
            if line.startswith("ebook2audio_real_time_factor")
        )
    )
    assert rtf == pytest.approx(totals["synth_s"] / speech, rel=0.01)

    # A rerun takes every chunk from the store: the merge counts them as cache hits.
    report2, _ = await asyncio.to_thread(convert)
    assert report2["totals"]["chunks_from_cache"] == totals["unique_chunks"]
    hits = await asyncio.to_thread(
        _wait_for, lambda: job_totals(s.cumulative_worker_metrics).get(("from-cache", "chunks"))
    )
    assert hits == totals["unique_chunks"]
    assert (
        job_totals(s.cumulative_worker_metrics)[("synthesized", "chunks")]
        == totals["chunks_synthesized"]
    )


def _scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_endpoint_over_http_and_report_command(corpus, tmp_path):
    """Worker processes, the scheduler's real /metrics, then ``ebook2audio report``."""
    out = tmp_path / "out"
    bad = tmp_path / "missing.epub"
    with e2a.local_cluster(n_workers=2, engine_threads=1) as cluster, Client(cluster) as client:
        url = client.dashboard_link.replace("/status", "/metrics")
        results = e2a.convert(
            [str(corpus / FRENCH), str(bad)],
            str(out),
            client=client,
            engine="espeak",
            chapters=CHAPTERS,
            cache=str(tmp_path / "chunks"),
        )
        ok, failed = results
        assert ok.ok and not failed.ok
        totals = ok.report["totals"]
        metrics = _wait_for(  # each worker's figures come with its own heartbeats
            lambda: (
                (m := _scrape(url)).get("ebook2audio_output_audio_seconds_total")
                and m.get('ebook2audio_chunks_total{state="synthesized"}')
                == totals["chunks_synthesized"]
                and m
            )
        )
        failed_events = [m for _, m in client.get_events(TOPIC) if m["action"] == "book-failed"]
    assert metrics['ebook2audio_books_total{state="started"}'] == 1.0
    assert metrics['ebook2audio_books_total{state="finished"}'] == 1.0
    assert metrics['ebook2audio_books_total{state="failed"}'] == 1.0
    assert metrics['ebook2audio_chunks_total{state="synthesized"}'] == totals["chunks_synthesized"]
    assert metrics["ebook2audio_output_audio_seconds_total"] == pytest.approx(
        totals["audio_s"], abs=0.01
    )
    assert metrics["ebook2audio_engine_seconds_total"] == pytest.approx(totals["synth_s"], abs=0.01)
    # Dask's own Prometheus metrics are served too (prometheus_client is a dependency).
    assert any(name.startswith("dask_scheduler_workers") for name in metrics)
    assert [m["book"] for m in failed_events] == [str(bad)] and "not found" in failed_events[0][
        "error"
    ]

    # `ebook2audio report`: one row per book from the reports, plus a book that
    # failed with a dead-letter file, and a report that cannot be read.
    (out / "lost-book.failures.jsonl").write_text('{"chunk": "a"}\n{"chunk": "b"}\n')
    summary = summarize_reports(str(out))
    [done, lost] = summary["books"]
    assert done["book"] == "entre-nous-lectures-francaises" and done["status"] == "done"
    assert done["chapters"] == len(CHAPTERS) and done["audio_s"] == totals["audio_s"]
    assert done["chunks_from_cache"] == 0 and done["chunks"] == totals["unique_chunks"]
    assert lost == {**lost, "book": "lost-book", "status": "failed", "chunks_failed": 2}
    assert summary["totals"]["books"] == 2 and summary["totals"]["failed"] == 1
    assert summary["totals"]["wall_s"] == pytest.approx(totals["wall_s"], abs=1.0)
    table = format_summary(summary)
    row = next(line for line in table.splitlines() if line.startswith("entre-nous"))
    m, s = divmod(round(totals["audio_s"]), 60)
    assert (
        f"0:{m:02d}:{s:02d}" in row
        and f"0/{totals['unique_chunks']}" in row
        and f"{totals['rtf']:.3f}" in row
    )

    proc = run_cli("report", str(out))
    assert proc.returncode == 1, proc.stderr  # a book failed
    assert proc.stdout.strip() == table and proc.stderr == ""
    (out / "broken.report.json").write_text("{not json")
    proc = run_cli("report", str(out), "--json")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert [r["book"] for r in data["books"]] == ["entre-nous-lectures-francaises", "lost-book"]
    assert data["problems"] == [
        f"{out}/broken.report.json: not a readable report "
        "(JSONDecodeError: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))"
    ]
    (out / "broken.report.json").unlink()
    (out / "lost-book.failures.jsonl").unlink()
    proc = run_cli("report", str(out))
    assert proc.returncode == 0 and "1/1 done" in proc.stdout
    proc = run_cli("report", str(tmp_path / "chunks-nowhere"))
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == f"error: {tmp_path / 'chunks-nowhere'}: no such folder"
    )
    (tmp_path / "empty").mkdir()
    proc = run_cli("report", str(tmp_path / "empty"))
    assert (
        proc.returncode == 2
        and "no *.report.json here" in proc.stderr
        and "Traceback" not in proc.stderr
    )
