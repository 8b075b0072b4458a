"""What the tasks return: small, picklable records (no audio, no book text).

A synthesize task returns a :class:`BatchResult` (its chunks' keys and
sample counts; the audio is in the chunk store), the cover task a
:class:`PreparedCover`, the merge task a :class:`MergeResult`.  The client
reads them to write the book's report; the merge reads the batches'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..storage.fs import Publication

__all__ = [
    "BatchResult",
    "ChapterResult",
    "ChunkFailure",
    "LostBatch",
    "MergeResult",
    "PreparedCover",
]


@dataclass(frozen=True)
class ChunkFailure:
    """A chunk the engine could not speak, after all its attempts (a dead letter)."""

    key: str
    error: str  # one line: "ExceptionType: message"
    attempts: int
    worker: str


@dataclass(frozen=True)
class BatchResult:
    """What a synthesize task reports back (no audio: that is in the store)."""

    worker: str
    samples: tuple[tuple[str, int], ...]  # (key, n_samples) per chunk written
    synth_s: float
    chars: int
    finished: float = 0.0  # wall-clock time (time.time()) the batch ended
    engine_loads: int = 0  # times this worker process has loaded this engine+model
    failures: tuple[ChunkFailure, ...] = ()  # chunks that failed every attempt (not in the store)


@dataclass(frozen=True)
class LostBatch:
    """A synthesize task Dask gave up on (KilledWorker): its chunks not in the store are
    dead letters."""

    error: str
    attempts: int
    worker: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> LostBatch:
        """The lost batch that Dask's ``KilledWorker`` *exc* describes."""
        allowed = int(getattr(exc, "allowed_failures", 3))
        last = getattr(exc, "last_worker", None)
        error = (
            f"KilledWorker: the worker died {allowed + 1} times running this chunk's "
            "synthesize task (the engine crashed its process, or it ran out of memory); "
            "see the worker logs"
        )
        return cls(error, allowed + 1, getattr(last, "address", None) or "unknown")


@dataclass(frozen=True)
class PreparedCover:
    """The book's cover as ffmpeg attaches it (JPEG or PNG), made once per book by
    :func:`~ebook2audio_dask.pipeline.tasks.cover_task`."""

    data: bytes
    suffix: str  # ".jpeg", ".png"...

    def write(self, folder: str | os.PathLike) -> Path:
        """Write the cover into *folder* (as ``cover<suffix>``); returns its path."""
        path = Path(folder) / f"cover{self.suffix}"
        path.write_bytes(self.data)
        return path


@dataclass(frozen=True)
class ChapterResult:
    """One chapter in the merged book: its times in seconds, characters and chunks."""

    index: int
    title: str
    start_s: float
    end_s: float
    chars: int
    chunks: int


@dataclass(frozen=True)
class MergeResult:
    """What the merge task reports: ``merge_s`` is the time it needed after
    the last chunk it waited for was synthesised (the merge's own cost)."""

    output: str
    audio_s: float
    merge_s: float
    chapters: tuple[ChapterResult, ...]
    warnings: tuple[str, ...] = ()
    audio_reused: bool = False  # remuxed from encoded audio kept in the store
    #: Silences that stand in for chunks that could not be synthesised
    #: (``allow_gaps``): dicts with chunk, chapter, start_s, duration_s, error.
    gaps: tuple[dict, ...] = ()
    chunks_failed: int = 0  # unique chunks in the dead-letter file
    failures_url: str | None = None  # the dead-letter file, when there were failures
    #: Every file written: dicts with url, start_s, end_s (in the book), duration_s,
    #: chapters (title, start_s, end_s, relative to the file) and subtitles (URL or None).
    outputs: tuple[dict, ...] = ()
    subtitles: tuple[str, ...] = ()  # subtitle files written, in output order
    format: str = "m4b"
    #: The files above (and the dead-letter file, with gaps) at temporary names
    #: beside their final ones: the client publishes them with the report.
    publication: Publication | None = None
    #: ffmpeg passes over the audio: 1 when the finished file was written as it was encoded.
    passes: int = 2
    #: The read-along EPUB (``--readalong``): its url and sentences, overlaid, unmatched,
    #: documents (:class:`~ebook2audio_dask.readalong.overlays.ReadAlongStats`); else None.
    readalong: dict | None = None
