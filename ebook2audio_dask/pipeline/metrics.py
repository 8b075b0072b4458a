"""The job's own figures on Dask's dashboard, at ``/metrics`` and as events.

Three channels, all from Dask itself:

* **Fine performance metrics.**  Synthesize and merge tasks call
  :func:`digest` (Dask's ``context_meter.digest_metric``).  Workers send the
  totals to the scheduler with their heartbeats, so they show on the
  dashboard's *Fine Performance Metrics* page (pick the unit: ``characters``,
  ``chunks``, ``audio-seconds`` or ``engine-seconds``), split by task prefix
  and, through the ``ebook2audio``/``<book>`` span tags, by book.
* **Prometheus.**  :class:`JobMetrics`, a scheduler plugin, exports those
  totals plus book counts as ``ebook2audio_*`` metrics on the scheduler's
  ``/metrics`` endpoint (Dask serves it when ``prometheus_client`` is
  installed, which this package requires).
* **Events.**  The client logs ``book-started``, ``book-finished`` and
  ``book-failed`` under the topic :data:`TOPIC` with ``Client.log_event``;
  read them with ``client.get_events("ebook2audio")`` or
  ``client.subscribe_topic("ebook2audio", handler)``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from ..logs import get_logger

__all__ = [
    "TOPIC",
    "UNITS",
    "JobMetrics",
    "digest",
    "ensure_job_metrics",
    "job_totals",
    "log_book_event",
]

logger = get_logger(__name__)

#: The ``log_event`` topic of the job's events.
TOPIC = "ebook2audio"

#: Units of the fine performance metrics the tasks digest (activity names in brackets):
#: characters (synthesized), chunks (synthesized, failed, from-cache),
#: audio-seconds (synthesized: speech the engines made; merged: audio written
#: into audiobooks), engine-seconds (synthesized: time inside engine calls).
UNITS = ("characters", "chunks", "audio-seconds", "engine-seconds")

#: Task-name prefixes whose fine performance metrics are the job's.
_PREFIXES = ("synthesize-", "merge-")


def digest(activity: str, value: float, unit: str) -> None:
    """Record one of the job's figures as a Dask fine performance metric.

    Inside a task, the worker adds it to its metrics (keyed by the task's
    prefix and span) and reports it to the scheduler; outside a task it is
    dropped.  Never raises: metrics must not fail a book.
    """
    if not value:
        return
    try:
        from distributed.metrics import context_meter

        context_meter.digest_metric(activity, float(value), unit)
    except Exception:  # pragma: no cover - defensive
        logger.debug("could not digest %s %s", activity, unit, exc_info=True)


def job_totals(cumulative: dict) -> dict[tuple[str, str], float]:
    """Sum the job's fine performance metrics over tasks.

    Parameters
    ----------
    cumulative : dict
        ``Scheduler.cumulative_worker_metrics`` (or a span's): keys
        ``("execute", prefix, activity, unit)``.

    Returns
    -------
    dict
        ``(activity, unit) -> total`` for the units in :data:`UNITS`.
    """
    out: Counter[tuple[str, str]] = Counter()
    for key, value in list(cumulative.items()):
        if not (isinstance(key, tuple) and len(key) == 4 and key[0] == "execute"):
            continue
        _, prefix, activity, unit = key
        if unit in UNITS and isinstance(prefix, str) and prefix.startswith(_PREFIXES):
            out[(str(activity), unit)] += value
    return dict(out)


class _Collector:
    """The Prometheus collector; one per process, pointed at the live plugin."""

    def __init__(self) -> None:
        self.plugin: JobMetrics | None = None

    def describe(self) -> list:
        return []  # no fixed metrics: nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        plugin = self.plugin
        if plugin is None or plugin.scheduler is None:
            return
        totals = job_totals(plugin.scheduler.cumulative_worker_metrics)
        chars = CounterMetricFamily(
            "ebook2audio_characters", "Characters of text synthesised into speech", labels=["state"]
        )
        chars.add_metric(["synthesized"], totals.get(("synthesized", "characters"), 0.0))
        yield chars
        chunks = CounterMetricFamily(
            "ebook2audio_chunks",
            "Chunks by outcome: synthesized, failed (every attempt failed), "
            "from_cache (found in the chunk store)",
            labels=["state"],
        )
        for state, activity in (
            ("synthesized", "synthesized"),
            ("failed", "failed"),
            ("from_cache", "from-cache"),
        ):
            chunks.add_metric([state], totals.get((activity, "chunks"), 0.0))
        yield chunks
        audio = totals.get(("synthesized", "audio-seconds"), 0.0)
        engine = totals.get(("synthesized", "engine-seconds"), 0.0)
        yield CounterMetricFamily(
            "ebook2audio_audio_seconds", "Seconds of speech the engines produced", value=audio
        )
        yield CounterMetricFamily(
            "ebook2audio_engine_seconds", "Seconds spent inside speech-engine calls", value=engine
        )
        yield GaugeMetricFamily(
            "ebook2audio_real_time_factor",
            "Engine seconds per second of speech produced (lower is faster; 0 before any speech)",
            value=engine / audio if audio else 0.0,
        )
        yield CounterMetricFamily(
            "ebook2audio_output_audio_seconds",
            "Seconds of audio written into finished audiobooks (cached chunks included)",
            value=totals.get(("merged", "audio-seconds"), 0.0),
        )
        books = CounterMetricFamily(
            "ebook2audio_books",
            "Books by event: started (planned, synthesis submitted), finished, "
            "failed (at any stage)",
            labels=["state"],
        )
        counts = dict(plugin.books)
        for state in ("started", "finished", "failed"):
            books.add_metric([state], counts.get(state, 0))
        yield books
        yield GaugeMetricFamily(
            "ebook2audio_books_running",
            "Books started and not yet finished or failed",
            value=len(plugin.running),
        )


_COLLECTOR = _Collector()
_REGISTERED = threading.Lock()
_registered = False


def _register_collector() -> None:
    global _registered
    with _REGISTERED:
        if _registered:
            return
        import prometheus_client

        prometheus_client.REGISTRY.register(_COLLECTOR)
        _registered = True


class JobMetrics(SchedulerPlugin):
    """Scheduler plugin: the job's figures as ``ebook2audio_*`` Prometheus metrics.

    Counts the :data:`TOPIC` events (books started, finished, failed) and,
    at each scrape of the scheduler's ``/metrics``, sums the tasks' fine
    performance metrics (:func:`job_totals`).  Registered by
    :func:`ensure_job_metrics` (:func:`~ebook2audio_dask.run_jobs` does it),
    or on a standalone scheduler with
    ``dask scheduler --preload ebook2audio_dask.pipeline.metrics``.
    """

    name = "ebook2audio-metrics"
    idempotent = True

    def __init__(self) -> None:
        self.scheduler = None
        self.books: Counter[str] = Counter()
        self.running: set[str] = set()

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler
        try:
            _register_collector()
        except Exception:  # pragma: no cover - prometheus_client missing or broken
            logger.warning("ebook2audio metrics are not exported at /metrics", exc_info=True)
        _COLLECTOR.plugin = self

    async def close(self) -> None:
        if _COLLECTOR.plugin is self:
            _COLLECTOR.plugin = None

    def log_event(self, topic: str, msg: Any) -> None:
        if topic == TOPIC and isinstance(msg, dict):
            action = str(msg.get("action", ""))
            if action in ("book-started", "book-finished", "book-failed"):
                self.books[action[len("book-") :]] += 1
                book = str(
                    msg.get("book")
                )  # not "output": a split book's first file is named at the end
                if action == "book-started":
                    self.running.add(book)
                else:
                    self.running.discard(book)


def ensure_job_metrics(client) -> bool:
    """Register :class:`JobMetrics` on *client*'s scheduler (once; later calls do nothing).

    Returns False, with a warning, when the scheduler cannot load it (the
    package is not installed where the scheduler runs): conversions work,
    only the ``ebook2audio_*`` Prometheus metrics are missing.
    """
    try:
        client.register_plugin(JobMetrics())
        return True
    except Exception as exc:  # noqa: BLE001 - the scheduler's own environment
        logger.warning(
            "the scheduler could not load ebook2audio_dask's metrics plugin (%s): no ebook2audio_* "
            "metrics at /metrics; install ebook2audio_dask where the scheduler runs",
            exc,
        )
        return False


def log_book_event(client, action: str, source: str, **fields: Any) -> None:
    """Log one job event (``book-started``, ``book-finished``, ``book-failed``) on the scheduler."""
    msg = {"action": action, "book": source, "time": time.time(), **fields}
    try:
        client.log_event(TOPIC, msg)
    except Exception:
        logger.debug("could not log %s for %s", action, source, exc_info=True)


def dask_setup(server) -> None:
    """Register :class:`JobMetrics` on the scheduler.

    ``dask scheduler --preload ebook2audio_dask.pipeline.metrics`` calls it.
    """
    from distributed import Scheduler

    if isinstance(server, Scheduler):
        server.add_plugin(JobMetrics())
