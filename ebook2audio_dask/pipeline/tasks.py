"""The functions Dask runs: ``parse → chunk → synthesize → merge``.

Each is a plain function of picklable arguments, so any worker can run it.
Audio never travels through the scheduler or the client: synthesize tasks
write chunk audio to the chunk store and return only keys and sample counts;
the merge task reads the store and writes the M4B.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from .. import config
from ..audio.m4b import BookTags, ChapterMark, encode_m4b
from ..audio.wav import decode_wav, encode_wav
from ..engines import get_engine_class, load_engine, resolve_spec
from ..engines.base import EngineSpec
from ..errors import BookError, Ebook2AudioError
from ..ingest import read_book
from ..model import Book
from ..storage import ChunkStore, publish_file
from ..storage.chunkstore import WAV_HEADER_BYTES
from ..text.chunk import BookPlan, Pauses, plan_book

__all__ = [
    "BatchResult",
    "ChapterResult",
    "MergeResult",
    "parse_task",
    "plan_task",
    "synthesize_task",
    "merge_task",
]

logger = logging.getLogger(__name__)


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:  # not running inside a Dask worker (direct call, tests)
        return "local"


# --------------------------------------------------------------------------- parse
def parse_task(source: str, include_matter: bool, storage_options: dict[str, Any] | None) -> Book:
    """Parse stage: read the book at *source* (any fsspec URL)."""
    return read_book(source, include_matter=include_matter, storage_options=storage_options)


# --------------------------------------------------------------------------- chunk
@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for, as far as the chunk stage is concerned."""

    chapters: tuple[int, ...] | None = None
    engine: str | None = None
    voice: str | None = None
    language: str | None = None
    settings: tuple[tuple[str, Any], ...] = ()
    max_chars: int | None = None
    speak_titles: bool = True
    pauses: Pauses = field(default_factory=Pauses)
    fallback_language: str = "en"
    routing: tuple[str, ...] = ("piper", "espeak")


def plan_task(book: Book, request: PlanRequest) -> BookPlan:
    """Chunk stage: pick the voice, then cut the book into keyed chunks."""
    book = book.select(request.chapters)
    if not any(c.paragraphs for c in book.chapters):
        raise BookError(book.source, "no readable text in the selected chapters")
    spec, language, warnings = resolve_spec(
        request.language or book.language,
        engine=request.engine,
        voice=request.voice,
        settings=dict(request.settings),
        fallback_language=request.fallback_language,
        routing=request.routing,
    )
    cls = get_engine_class(spec.engine)
    max_chars = min(cls.max_chars, request.max_chars or cls.max_chars)
    plan = plan_book(
        book,
        spec,
        sample_rate=cls.sample_rate_for(spec.voice),
        max_chars=max_chars,
        language=language,
        pauses=request.pauses,
        speak_titles=request.speak_titles,
        warnings=tuple(warnings),
    )
    if not plan.chunks:
        raise BookError(book.source, "no readable text in the selected chapters")
    return plan


# --------------------------------------------------------------------------- synthesize
@dataclass(frozen=True)
class BatchResult:
    """What a synthesize task reports back (no audio: that is in the store)."""

    worker: str
    samples: tuple[tuple[str, int], ...]  # (key, n_samples) per chunk written
    synth_s: float
    chars: int


def synthesize_task(
    spec: EngineSpec,
    items: tuple[tuple[str, str], ...],
    store: ChunkStore,
    threads: int = 1,
) -> BatchResult:
    """Synthesize stage: speak a batch of ``(key, text)`` chunks into the store.

    The engine is loaded once per worker process and reused by later tasks.
    Each chunk is written to the store as soon as the engine returns it.
    """
    engine = load_engine(spec, threads)
    samples: list[tuple[str, int]] = []
    synth_s = 0.0
    texts = [text for _, text in items]
    # Engines take a batch; hand them a few chunks at a time so audio reaches the
    # store progressively (an interrupted task loses little).
    step = max(1, int(getattr(engine, "batch_size", 8)))
    for start in range(0, len(items), step):
        keys = [k for k, _ in items[start : start + step]]
        t0 = time.perf_counter()
        audio = engine.synthesize(texts[start : start + step])
        synth_s += time.perf_counter() - t0
        if len(audio) != len(keys):
            raise RuntimeError(f"engine {spec.engine} returned {len(audio)} clips for {len(keys)} texts")
        for key, pcm in zip(keys, audio):
            store.write(spec.engine, key, encode_wav(pcm, engine.sample_rate))
            samples.append((key, int(len(pcm))))
    return BatchResult(
        worker=_worker_address(),
        samples=tuple(samples),
        synth_s=synth_s,
        chars=sum(len(t) for t in texts),
    )


# --------------------------------------------------------------------------- merge
@dataclass(frozen=True)
class ChapterResult:
    index: int
    title: str
    start_s: float
    end_s: float
    chars: int
    chunks: int


@dataclass(frozen=True)
class MergeResult:
    output: str
    audio_s: float
    merge_s: float
    chapters: tuple[ChapterResult, ...]
    warnings: tuple[str, ...] = ()


def _samples_per_chunk(
    plan: BookPlan, batches: list[BatchResult], cached_sizes: dict[str, int]
) -> dict[str, int]:
    counts = {key: (size - WAV_HEADER_BYTES) // 2 for key, size in cached_sizes.items()}
    for batch in batches:
        counts.update(batch.samples)
    missing = [c.key for c in plan.chunks if c.key not in counts]
    if missing:
        raise BookError(plan.source, f"{len(missing)} chunk(s) missing from the chunk store")
    return counts


def merge_task(
    book: Book,
    plan: BookPlan,
    batches: list[BatchResult],
    cached_sizes: dict[str, int],
    store: ChunkStore,
    output_url: str,
    storage_options: dict[str, Any] | None = None,
    bitrate: str | None = None,
) -> MergeResult:
    """Merge stage: chunks + pauses → one chaptered, tagged M4B at *output_url*.

    PCM is streamed chunk by chunk into ffmpeg, so memory does not grow with
    the book.  ffmpeg writes a local temporary file that is then published to
    *output_url* in one atomic step.
    """
    t0 = time.perf_counter()
    rate = plan.sample_rate
    counts = _samples_per_chunk(plan, batches, cached_sizes)
    pause = {c.key: int(round(c.pause_after * rate)) for c in plan.chunks}

    marks: list[ChapterMark] = []
    chapters: list[ChapterResult] = []
    position = 0
    for ch in plan.chapters:
        start = position
        for chunk in plan.chunks[ch.start : ch.stop]:
            position += counts[chunk.key] + int(round(chunk.pause_after * rate))
        marks.append(ChapterMark(ch.title, start, position))
        chapters.append(
            ChapterResult(ch.index, ch.title, start / rate, position / rate, ch.chars, ch.stop - ch.start)
        )

    def pcm():
        for chunk in plan.chunks:
            samples, chunk_rate = decode_wav(store.read(plan.spec.engine, chunk.key))
            if chunk_rate != rate or len(samples) != counts[chunk.key]:
                raise BookError(plan.source, f"chunk {chunk.key} in the store is damaged; delete it and retry")
            yield samples.astype("<i2", copy=False).tobytes()
            if pause[chunk.key]:
                yield bytes(2 * pause[chunk.key])

    cover = book.cover
    tags = BookTags(title=plan.title, authors=plan.authors, language=plan.language)
    fd, tmp = tempfile.mkstemp(suffix=".m4b", prefix="ebook2audio-")
    os.close(fd)
    try:
        audio_s = encode_m4b(
            pcm(),
            sample_rate=rate,
            chapters=marks,
            tags=tags,
            out_path=tmp,
            cover=cover.data if cover else None,
            cover_media_type=cover.media_type if cover else None,
            bitrate=bitrate or config.get("merge.bitrate"),
            aac_coder=config.get("merge.aac-coder", None),
        )
        publish_file(tmp, output_url, storage_options)
    except Ebook2AudioError:
        raise
    except Exception as exc:
        raise BookError(plan.source, f"writing {output_url} failed: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return MergeResult(
        output=output_url,
        audio_s=audio_s,
        merge_s=time.perf_counter() - t0,
        chapters=tuple(chapters),
    )
