"""Dead letters: the chunks of a book that could not be synthesised.

A synthesize task reports the chunks the engine failed on every attempt
(:class:`~ebook2audio_dask.pipeline.results.ChunkFailure`); a batch Dask gave
up on (``KilledWorker``) makes dead letters of its chunks missing from the
store.  The merge collects them in a :class:`DeadLetters`, writes the book's
dead-letter file (``<stem>.failures.jsonl``) and, with ``allow_gaps``,
sizes the silence that stands in for each.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import one_line
from ..storage import ChunkStore
from ..text.chunk import BookPlan
from .results import BatchResult, LostBatch

__all__ = ["SECONDS_PER_CHAR", "DeadLetters"]


#: Seconds of speech per character, for sizing a gap before any chunk of the book is known.
SECONDS_PER_CHAR = 0.065


class DeadLetters:
    """The chunks of one book that could not be synthesised, and its dead-letter file.

    One JSON object per failed chunk (one line each): ``book``, ``chunk``
    (its content key), ``chapter`` (index as ``inspect`` numbers it),
    ``chapter_title``, ``occurrences`` (times the text recurs in the book),
    ``chars``, ``text`` (the first 200 characters), ``error`` (one line),
    ``worker``, ``attempts`` and ``time`` (UTC, ISO 8601).

    Parameters
    ----------
    plan : BookPlan
        The book's plan (the failed chunks' texts and chapters).
    store : ChunkStore
        The chunk store (what a lost batch did write).
    chunk_batch : dict
        Index of the batch that makes each chunk (chunks not listed were in the store).
    """

    def __init__(self, plan: BookPlan, store: ChunkStore, chunk_batch: dict[str, int]):
        self.plan = plan
        self.store = store
        self.chunk_batch = chunk_batch
        self.failed: dict[str, dict] = {}

    def _record(self, key: str, error: str, attempts: int, worker: str) -> None:
        if key in self.failed:
            return
        chunks = self.plan.chunks
        first = next(i for i, c in enumerate(chunks) if c.key == key)
        chapter = next(ch for ch in self.plan.chapters if ch.start <= first < ch.stop)
        text = chunks[first].text
        self.failed[key] = {
            "book": self.plan.source,
            "chunk": key,
            "chapter": chapter.index,
            "chapter_title": chapter.title,
            "occurrences": sum(1 for c in chunks if c.key == key),
            "chars": len(text),
            "text": text if len(text) <= 200 else text[:199] + "…",
            "error": error,
            "worker": worker,
            "attempts": attempts,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def batch_done(self, index: int, result: BatchResult | None) -> None:
        """Batch *index* finished: record its failures (its chunks missing from the store
        when its *result* could not be fetched)."""
        if result is not None:
            for f in result.failures:
                self._record(f.key, f.error, f.attempts, f.worker)
            return
        # Finished, but its result could not be fetched: the store says what it made.
        self._missing(
            index, "chunk missing from the store after its synthesize task finished", 1, "unknown"
        )

    def batch_lost(self, index: int, lost: LostBatch) -> None:
        """The batch's task killed its worker too often (KilledWorker)."""
        self._missing(index, lost.error, lost.attempts, lost.worker)

    def _missing(self, index: int, error: str, attempts: int, worker: str) -> None:
        keys = [k for k, i in self.chunk_batch.items() if i == index]
        present = self.store.sizes(self.plan.spec.engine, keys)
        for key in keys:
            if key not in present:
                self._record(key, error, attempts, worker)

    @staticmethod
    def estimate(text: str, chars: int, samples: int, rate: int) -> int:
        """Samples of silence for a failed chunk: its length at the book's speaking rate so far."""
        per_char = samples / chars if chars else SECONDS_PER_CHAR * rate
        return max(1, int(round(per_char * len(text))))

    def gap(self, chunk, start_s: float, duration_s: float) -> dict:
        """The report's entry for the silence standing in for failed *chunk*."""
        record = self.failed[chunk.key]
        return {
            "chunk": chunk.key,
            "chapter": record["chapter"],
            "chapter_title": record["chapter_title"],
            "start_s": round(start_s, 3),
            "duration_s": round(duration_s, 3),
            "error": record["error"],
        }

    def summary(self, url: str | None, *, gaps: bool = False) -> str:
        """One line on the failures (and the dead-letter file *url*), for errors and warnings."""
        n = len(self.failed)
        first = next(iter(self.failed.values()))
        where = f"; see {url}" if url else ""
        lead = (
            f"{n} chunk{'s' if n != 1 else ''} could not be synthesised "
            f"(first: chapter {first['chapter']}, {one_line(first['error'], 100)})"
        )
        if gaps:
            return f"{lead}: silence in their place{where}"
        return f"{lead}{where}; run again to retry them, or use --allow-gaps"

    def data(self) -> bytes:
        """The dead-letter file's content: one JSON object a line."""
        return "".join(
            json.dumps(r, ensure_ascii=False) + "\n" for r in self.failed.values()
        ).encode("utf-8")

    def write(self, url: str | None, storage_options: dict[str, Any] | None) -> None:
        """Write the dead-letter file of a book that fails (published alone, at once)."""
        if not url or not self.failed:
            return
        from ..storage import get_fs, write_bytes_atomic
        from ..storage.retry import with_retries

        fs, path = get_fs(url, storage_options)
        data = self.data()
        with_retries(
            lambda: write_bytes_atomic(fs, path, data), url=url, action="write the dead-letter file"
        )
