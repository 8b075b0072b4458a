"""The functions Dask runs: ``parse → chunk → synthesize → merge``.

Each is a plain function of picklable arguments, so any worker can run it.
Audio never travels through the scheduler or the client: synthesize tasks
write chunk audio to the chunk store and return only keys and sample counts;
the merge task reads the store and writes the M4B.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import config
from ..audio.formats import FinalFile, OutputSpec, PartEncoder, finish_file, normalize_part
from ..audio.m4b import BookTags, ChapterMark, prepare_cover
from ..audio.subtitles import Cue, chunk_cues, format_subtitles
from ..audio.wav import WAV_HEADER_BYTES, decode_wav, encode_wav
from ..engines import LOAD_COUNTS, get_engine_class, load_engine, resolve_spec
from ..engines.base import EngineSpec
from ..errors import BookError, Ebook2AudioError, EngineError, one_line
from ..ingest import read_book
from ..logs import get_logger
from ..model import Book, Pronunciation
from ..storage import ChunkStore
from ..storage.fs import Publication
from ..storage.names import chapter_name, part_name
from ..text.chunk import BookPlan, Pauses, plan_book
from .metrics import digest

__all__ = [
    "BatchResult",
    "ChapterResult",
    "ChunkFailure",
    "LostBatch",
    "MergeResult",
    "PreparedCover",
    "cover_task",
    "length_buckets",
    "merge_task",
    "parse_task",
    "plan_task",
    "prepare_voice_task",
    "seed_for",
    "synthesize_task",
]

logger = get_logger(__name__)


def _scratch_dir() -> str | None:
    """The worker's local directory (Dask removes it, even after a SIGKILL, when the
    next worker starts on the machine); the system's temporary folder elsewhere."""
    try:
        from distributed import get_worker

        return get_worker().local_directory
    except (ValueError, AttributeError):
        return None


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
    model: str | None = None
    max_chars: int | None = None
    speak_titles: bool = True
    pauses: Pauses = field(default_factory=Pauses)
    fallback_language: str = "en"
    routing: tuple[str, ...] = ("piper", "espeak")
    #: Spoken-form features (``text.spoken.FEATURES``); empty: text spoken as written.
    normalize: tuple[str, ...] = ("numbers", "abbreviations", "roman")
    #: User lexicon entries (their content, so a changed lexicon changes the plan).
    lexicon: tuple[Pronunciation, ...] = ()


def plan_task(book: Book, request: PlanRequest) -> BookPlan:
    """Chunk stage: pick the voice, then cut the book into keyed chunks."""
    book = book.select(request.chapters)
    if not any(c.paragraphs for c in book.chapters):
        raise BookError(book.source, "no readable text in the selected chapters")
    spec, language, warnings = resolve_spec(
        request.language or book.language,
        engine=request.engine,
        voice=request.voice,
        model=request.model,
        settings=dict(request.settings),
        fallback_language=request.fallback_language,
        routing=request.routing,
    )
    cls = get_engine_class(spec.engine)
    spec = cls.identify(spec)  # fingerprint model files / reference clips into the keys
    max_chars = min(cls.max_chars, request.max_chars or cls.max_chars)
    plan = plan_book(
        book,
        spec,
        sample_rate=cls.sample_rate_for(spec.voice, spec.model or None),
        max_chars=max_chars,
        language=language,
        pauses=request.pauses,
        speak_titles=request.speak_titles,
        warnings=tuple(warnings),
        normalize=request.normalize,
        lexicon=request.lexicon,
        phoneme_alphabet=cls.phoneme_alphabet,
    )
    if not plan.chunks:
        raise BookError(book.source, "no readable text in the selected chapters")
    return plan


# --------------------------------------------------------------------------- synthesize
def length_buckets(
    items: tuple[tuple[str, str], ...], size: int, spread: float = 1.3, floor: int = 40
) -> list[list[tuple[str, str]]]:
    """Group ``(key, text)`` items into engine batches of similar length.

    Items are sorted by text length and cut into groups of at most *size*; a
    group also ends where the next text is more than *spread* times longer
    than the group's first (texts shorter than *floor* count as *floor*), so
    a padded batch wastes little compute on padding.  With ``size == 1`` the
    items keep their order.
    """
    if size <= 1:
        return [[item] for item in items]
    groups: list[list[tuple[str, str]]] = []
    for item in sorted(items, key=lambda it: len(it[1])):
        current = groups[-1] if groups else None
        if (
            current is None
            or len(current) >= size
            or len(item[1]) > spread * max(len(current[0][1]), floor)
        ):
            groups.append([item])
        else:
            current.append(item)
    return groups


def seed_for(key: str) -> int:
    """The random seed of a chunk: the first 60 bits of its content key."""
    return int(key[:15], 16)


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


def prepare_voice_task(spec: EngineSpec, store: ChunkStore, threads: int = 1) -> str:
    """Voice stage (only for engines that compute a voice, e.g. XTTS cloning):
    load the engine and compute its voice into the chunk store once, before
    the synthesize tasks that then read it."""
    load_engine(spec, threads).prepare(store)
    return spec.voice


def error_line(exc: BaseException, limit: int = 300) -> str:
    """``"ExceptionType: message"`` on one line, at most *limit* characters (:func:`~ebook2audio_dask.errors.one_line`)."""
    text = one_line(exc, None)
    return one_line(f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text, limit)


def _speak(engine, spec: EngineSpec, group: list[tuple[str, str]]) -> list:
    audio = engine.synthesize([t for _, t in group], seeds=[seed_for(k) for k, _ in group])
    if len(audio) != len(group):
        raise EngineError(
            f"engine {spec.engine} returned {len(audio)} clips for {len(group)} texts"
        )
    return list(audio)


#: Seconds before the n-th retry of a chunk (the last value repeats).
RETRY_PAUSES = (0.2, 1.0, 3.0)


def synthesize_task(
    spec: EngineSpec,
    items: tuple[tuple[str, str], ...],
    store: ChunkStore,
    threads: int = 1,
    voice_ready: str | None = None,
    retries: int = 2,
) -> BatchResult:
    """Synthesize stage: speak a batch of ``(key, text)`` chunks into the store.

    The engine is loaded once per worker process and reused by later tasks.
    Chunks are bucketed by length (:func:`length_buckets`) and handed to the
    engine at most ``engine.batch_size`` at a time (similar lengths pad little
    in a batched model); each chunk's seed comes from its content key, so a
    retry or a rerun gives the same audio.  Each chunk is written to the
    store as soon as the engine returns it.

    When the engine raises, the chunks of that engine call are tried again
    one at a time, each up to *retries* more times after a short pause.  A
    chunk that fails every attempt is not written; it is returned in
    :attr:`BatchResult.failures` (the merge writes it to the book's
    dead-letter file) and the task goes on with the others.  Errors outside
    the engine call (loading the engine, the store) fail the task, which Dask
    then retries.
    """
    engine = load_engine(spec, threads)
    engine.prepare(store)
    samples: list[tuple[str, int]] = []
    failures: list[ChunkFailure] = []
    synth_s = 0.0
    worker = _worker_address()

    def speak(group: list[tuple[str, str]]) -> list:
        """One engine call; its time counts as synthesis time (retry pauses do not)."""
        nonlocal synth_s
        t0 = time.perf_counter()
        try:
            return _speak(engine, spec, group)
        finally:
            synth_s += time.perf_counter() - t0

    def one_by_one(group: list[tuple[str, str]], first: BaseException | None):
        """Speak each chunk alone, with retries; yields ``(key, pcm)`` for those that worked."""
        for key, text in group:
            attempts, error = (1, first) if first is not None else (0, None)
            while attempts <= retries:
                if attempts:
                    time.sleep(RETRY_PAUSES[min(attempts, len(RETRY_PAUSES)) - 1])
                attempts += 1
                try:
                    [pcm] = speak([(key, text)])
                except Exception as exc:  # noqa: BLE001 - an engine may raise anything
                    error = exc
                    logger.warning(
                        "chunk %s: attempt %d failed: %s", key[:12], attempts, error_line(exc)
                    )
                    continue
                yield key, pcm
                break
            else:
                failures.append(ChunkFailure(key, error_line(error), attempts, worker))

    # A rerun of this task (its worker died, or a finished result was lost with
    # its worker) finds the chunks its earlier attempt wrote: they are not redone.
    done = store.sizes(spec.engine, [k for k, _ in items])
    samples.extend((k, (size - WAV_HEADER_BYTES) // 2) for k, size in done.items())
    todo = tuple(item for item in items if item[0] not in done)

    step = max(1, int(getattr(engine, "batch_size", 8)))
    # Hand the engine one batch at a time so audio reaches the store
    # progressively (an interrupted task loses little).
    for group in length_buckets(todo, step, spread=getattr(engine, "length_spread", 1.3)):
        try:
            made = list(zip([k for k, _ in group], speak(group)))
        except Exception as exc:  # noqa: BLE001
            logger.warning(
                "engine %s failed on %d chunk(s): %s", spec.engine, len(group), error_line(exc)
            )
            made = one_by_one(group, exc if len(group) == 1 else None)
        texts = dict(group)
        n = chars = length = 0
        for key, pcm in made:
            store.write(spec.engine, key, encode_wav(pcm, engine.sample_rate))
            samples.append((key, len(pcm)))
            n, chars, length = n + 1, chars + len(texts[key]), length + len(pcm)
        # the dashboard's fine performance metrics and ebook2audio_* at /metrics, as it goes
        digest("synthesized", n, "chunks")
        digest("synthesized", chars, "characters")
        digest("synthesized", length / engine.sample_rate, "audio-seconds")
    digest("synthesized", synth_s, "engine-seconds")
    digest("failed", len(failures), "chunks")
    return BatchResult(
        worker=worker,
        samples=tuple(samples),
        synth_s=synth_s,
        chars=sum(len(t) for _, t in items),
        finished=time.time(),
        engine_loads=LOAD_COUNTS[(spec, int(threads))],
        failures=tuple(failures),
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


def _merge_cancelled(stop_event: str | None = None) -> bool:
    """True once the client no longer wants the running merge task.

    Two signals, either enough: the book's stop :class:`distributed.Event`
    (set by the client when the book fails: explicit, whatever the worker's
    view of the task), and the worker's own state for this task.  Asked once,
    when the merge has staged its files (not polled).
    """
    from distributed import Event, get_worker
    from distributed.worker import thread_state

    try:
        worker = get_worker()
    except ValueError:  # not on a worker
        return False
    if stop_event:
        try:
            if Event(stop_event).is_set():
                return True
        except Exception:  # the scheduler is going away: the task state below decides
            logger.debug("stop event %s unreadable", stop_event, exc_info=True)
    ts = worker.state.tasks.get(getattr(thread_state, "key", None))
    return ts is None or ts.state in ("cancelled", "released", "forgotten")


class _MergeCancelled(BookError):
    """The merge's book is no longer wanted (it failed, or its client went away)."""


@dataclass(frozen=True)
class LostBatch:
    """A synthesize task Dask gave up on (KilledWorker): its chunks not in the store are dead letters."""

    error: str
    attempts: int
    worker: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> LostBatch:
        allowed = int(getattr(exc, "allowed_failures", 3))
        last = getattr(exc, "last_worker", None)
        error = (f"KilledWorker: the worker died {allowed + 1} times running this chunk's synthesize task "
                 "(the engine crashed its process, or it ran out of memory); see the worker logs")  # fmt: skip
        return cls(error, allowed + 1, getattr(last, "address", None) or "unknown")


@dataclass(frozen=True)
class PreparedCover:
    """The book's cover as ffmpeg attaches it (JPEG or PNG), made once per book by :func:`cover_task`."""

    data: bytes
    suffix: str  # ".jpeg", ".png"...

    def write(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / f"cover{self.suffix}"
        path.write_bytes(self.data)
        return path


def cover_task(book: Book) -> PreparedCover | None:
    """Cover stage: the book's cover, checked and converted for ffmpeg (see :func:`~..audio.m4b.prepare_cover`).

    A small result the merge depends on, so the parsed book itself need not
    be kept for the merge.
    """
    if not book.cover:
        return None
    with tempfile.TemporaryDirectory(prefix="ebook2audio-cover-", dir=_scratch_dir()) as tmp:
        path = prepare_cover(bytes(book.cover.data), book.cover.media_type, Path(tmp))
        return None if path is None else PreparedCover(path.read_bytes(), path.suffix)


#: Chunks the merge reads from the store in one (concurrent) request.
READ_WINDOW = 64


def merge_task(
    plan: BookPlan,
    cover: PreparedCover | None,
    batches: tuple[BatchResult | None, ...],
    chunk_batch: dict[str, int],
    store: ChunkStore,
    output_url: str,
    storage_options: dict[str, Any] | None = None,
    bitrate: str | None = None,
    chunk_sizes: dict[str, int] | None = None,
    stop_event: str | None = None,
    *,
    lost: dict[int, LostBatch] | None = None,
    allow_gaps: bool = False,
    failures_url: str | None = None,
    output_spec: OutputSpec | None = None,
) -> MergeResult:
    """Merge stage: chunks + pauses → the book's tagged, chaptered audio file(s) at *output_url*.

    The merge runs once the book's synthesize tasks are done: *batches* are
    their results (Dask hands them over as the task's dependencies, so the
    merge neither occupies a worker nor asks the scheduler anything while
    they run); ``chunk_batch[key]`` says which batch made each chunk, and
    chunks not listed were already in the store (*chunk_sizes* holds their
    sizes, from the client's per-key lookup).  *lost* maps the index of a
    batch Dask gave up on (KilledWorker; ``None`` in *batches*) to why.

    Every chunk's length is then known before anything is read, so the
    chapter times are too: an unsplit book without loudness normalisation is
    encoded in **one** ffmpeg pass that also writes the tags, chapters and
    cover; a split book and ``loudnorm`` (two passes by nature) stream into
    one encoder per file and add the chapters in a fast second pass.  The
    PCM is read from the store in windows and streamed; memory does not grow
    with the book.  The files are only *staged* (at temporary names beside
    their final ones, :class:`~ebook2audio_dask.storage.fs.Publication`):
    the client publishes them together with the book's report, all or
    nothing.

    *output_spec* (:class:`~ebook2audio_dask.audio.formats.OutputSpec`, M4B by
    default) chooses the format, the split (one file per chapter, or parts of
    at most N hours: cut at a chunk's end, at a chapter's start when one is
    close), the ``loudnorm`` filter and the subtitles (cues from the same
    real chunk lengths).  *output_url* is the unsplit file's URL; split files
    are named after it (``<stem>/<NN> - <title>.<ext>``, ``<stem> - Part i of n.<ext>``).

    Chunks that could not be synthesised (the engine failed every attempt, or
    their task killed the worker more often than Dask's ``allowed-failures``)
    are written to the dead-letter file *failures_url* (JSON lines).  Without
    *allow_gaps* the book then fails (nothing is encoded); with it, silence
    of the chunk's estimated length takes its place and the gap is listed in
    the result.

    The encoded audio of an unsplit M4B, MP3 or Opus book is also kept in the
    store under a key made of the chunk keys, pauses and encoder settings
    (``merge.keep-encoded``).  When every chunk was already in the store and
    that audio is there too, nothing is decoded or encoded again: the book is
    only remuxed with its chapters, tags and cover.
    """
    spec = output_spec or OutputSpec(
        bitrate=config.get("merge.bitrate"), aac_coder=config.get("merge.aac-coder", None)
    )
    if bitrate:
        spec = dataclasses.replace(spec, bitrate=bitrate)
    info = spec.info
    rate = plan.sample_rate
    lost = lost or {}
    chunk_sizes = chunk_sizes or {}
    dead = _DeadLetters(plan, store, chunk_batch)
    #: Every chunk's length in samples, known before reading: from the batches and the store's sizes.
    lengths: dict[str, int] = {k: (size - WAV_HEADER_BYTES) // 2 for k, size in chunk_sizes.items()}
    ready = 0.0  # when the last synthesize task of the book finished
    for index, result in enumerate(batches):
        if index in lost:
            dead.batch_lost(index, lost[index])
            continue
        dead.batch_done(index, result)
        if result is not None:
            lengths.update(result.samples)
            ready = max(ready, result.finished)
    ready = ready or time.time()
    for key in dead.failed:
        lengths.pop(key, None)
    if dead.failed and not allow_gaps:
        # Nothing is encoded: the dead-letter file says what is missing; a rerun retries only those.
        dead.write(failures_url, storage_options)
        raise BookError(plan.source, dead.summary(failures_url))
    spoken_chars = sum(len(c.text) for c in plan.chunks if c.key in lengths)
    spoken_samples = sum(lengths[c.key] for c in plan.chunks if c.key in lengths)
    for key in dead.failed:  # silence of the chunk's length at the book's speaking rate
        text = next(c.text for c in plan.chunks if c.key == key)
        lengths[key] = dead.estimate(text, spoken_chars, spoken_samples, rate)
    #: Lengths known for every chunk: the chapter times are known before encoding.
    known = all(c.key in lengths for c in plan.chunks)
    gaps: list[dict] = []
    gap_at: set[int] = set()  # indices of the chunks that are silence
    if dead.failed:
        position = 0
        for i, chunk in enumerate(plan.chunks):
            if chunk.key in dead.failed:
                gaps.append(dead.gap(chunk, position / rate, lengths[chunk.key] / rate))
                gap_at.add(i)
            position += lengths.get(chunk.key, 0) + int(round(chunk.pause_after * rate))
    spoken = [spoken_chars, spoken_samples]  # sizes --split-hours' look-ahead at chapters
    mismatch = [
        not known
    ]  # a chunk's real length differs from the one expected: chapters need a second pass

    buffer: dict[str, bytes] = {}

    def fetch_from(i: int) -> None:
        """Read the next chunks (up to READ_WINDOW) in one concurrent request."""
        keys: list[str] = []
        for later in plan.chunks[i:]:
            if len(keys) >= READ_WINDOW:
                break
            if later.key not in buffer and later.key not in keys and later.key not in dead.failed:
                keys.append(later.key)
        buffer.update(store.read_many(plan.spec.engine, keys))

    def chunk_audio(i: int, chunk) -> bytes:
        """The chunk's PCM (silence for a failed chunk with allow_gaps)."""
        if chunk.key in dead.failed:
            return bytes(2 * lengths[chunk.key])
        if chunk.key not in buffer:
            fetch_from(i)
        try:
            wav = buffer.pop(chunk.key)
        except KeyError:
            raise BookError(
                plan.source, f"chunk {chunk.key} is missing from the chunk store; run again"
            ) from None
        samples, chunk_rate = decode_wav(wav)
        if chunk_rate != rate:
            raise BookError(
                plan.source, f"chunk {chunk.key} in the store is damaged; delete it and retry"
            )
        n = len(samples)
        if lengths.get(chunk.key) != n:
            mismatch[0] = True
        lengths[chunk.key] = n
        return samples.astype("<i2", copy=False).tobytes()

    chapter_at = {ch.start: ch for ch in plan.chapters if ch.stop > ch.start}
    limit = int(spec.split_hours * 3600 * rate) if spec.split == "hours" else None
    parts: list[_Part] = []

    def stream(workdir: str, final: FinalFile | None = None, final_path: str | None = None) -> None:
        """Every chunk and pause into one encoder after the other (one per output file).

        With *final*, the one unsplit file is written finished, at *final_path*, in this one pass.
        """
        encoder: PartEncoder | None = None
        # Loudness: this pass writes lossless FLAC and a meter hears the whole book; each
        # file is then encoded from its FLAC with loudnorm's measured second pass.
        lossless = (
            dataclasses.replace(spec, format="flac", loudnorm=None) if spec.loudnorm else None
        )
        meter = (
            PartEncoder(spec, rate, os.path.join(workdir, "meter"), measure=True)
            if spec.loudnorm
            else None
        )
        position = 0
        try:
            for i, chunk in enumerate(plan.chunks):
                data = chunk_audio(i, chunk)
                n = len(data) // 2
                pause = int(round(chunk.pause_after * rate))
                if encoder is not None and _cut_before(spec, i, position - parts[-1].start, n + pause, limit,
                                                       chapter_at, spoken):  # fmt: skip
                    parts[-1].end = position
                    parts[-1].stop = i
                    encoder.close()
                    encoder = None
                if encoder is None:
                    if final is not None:
                        path = final_path
                    else:
                        path = os.path.join(
                            workdir, f"part-{len(parts) + 1}{'.flac' if lossless else info.ext}"
                        )
                    parts.append(_Part(start=position, first=i, path=path))
                    encoder = PartEncoder(lossless or spec, rate, path, final=final)
                for sink in (encoder, meter) if meter else (encoder,):
                    sink.write(data)
                    if pause:
                        sink.write(bytes(2 * pause))
                position += n + pause
            parts[-1].end = position
            parts[-1].stop = len(plan.chunks)
            encoder.close()
            encoder = None
            if meter is not None:
                meter.close()
                for part in parts:
                    target = part.path[: -len(".flac")] + info.ext
                    normalize_part(spec, rate, part.path, target, meter.measured)
                    os.unlink(part.path)
                    part.path = target
                meter = None
        finally:
            for sink in (encoder, meter):
                if sink is not None:
                    sink.kill()

    tags = BookTags(title=plan.title, authors=plan.authors, language=plan.language)
    keep = bool(config.get("merge.keep-encoded", True)) and info.cache and spec.split is None
    audio_key = encoded_audio_key(plan, spec.bitrate, spec.aac_coder, extra=spec.cache_token())
    reused = False
    one_pass = False
    publication = Publication()
    staged = False
    try:
        with tempfile.TemporaryDirectory(
            prefix="ebook2audio-merge-", dir=_scratch_dir()
        ) as workdir:
            encoded = os.path.join(workdir, f"encoded{info.ext}")
            cover_path = cover.write(workdir) if cover is not None else None
            if keep and not chunk_batch and all(c.key in chunk_sizes for c in plan.chunks):
                reused = store.get_encoded(audio_key, encoded)
            if reused:  # every chunk cached and the audio already encoded: remux only
                total = sum(lengths[c.key] + int(round(c.pause_after * rate)) for c in plan.chunks)
                parts.append(
                    _Part(start=0, first=0, path=encoded, end=total, stop=len(plan.chunks))
                )
            elif known and spec.split is None and spec.loudnorm is None:
                # One pass: the chapter times come from the lengths known already.
                timeline = _timeline(plan, lengths, rate)
                total = (timeline[-1][0] + timeline[-1][1] + int(round(plan.chunks[-1].pause_after * rate))
                         if timeline else 0)  # fmt: skip
                whole = _Part(start=0, first=0, path="", end=total, stop=len(plan.chunks))
                final = FinalFile.make(spec, sample_rate=rate, chapters=_part_marks(plan, timeline, whole, total),
                                       tags=tags, cover_path=cover_path, workdir=Path(workdir))  # fmt: skip
                stream(workdir, final, os.path.join(workdir, f"final-1{info.ext}"))
                one_pass = not mismatch[0]
            else:
                stream(workdir)
            timeline = _timeline(plan, lengths, rate)

            def at(i: int) -> int:
                return timeline[i][0] if i < len(timeline) else parts[-1].end

            chapters = [ChapterResult(ch.index, ch.title, at(ch.start) / rate, at(ch.stop) / rate, ch.chars,
                                      ch.stop - ch.start) for ch in plan.chapters]  # fmt: skip
            audio_s = parts[-1].end / rate
            names = _output_names(output_url, spec, plan, parts)
            outputs: list[dict] = []
            subtitle_files: list[tuple[str, str]] = []
            for n, (part, url) in enumerate(zip(parts, names), 1):
                marks = _part_marks(plan, timeline, part, parts[-1].end)
                title = tags.title
                if spec.split == "chapters":
                    title = chapter_at[part.first].title
                elif spec.split == "hours":
                    title = f"{tags.title} - Part {n} of {len(parts)}"
                part_tags = dataclasses.replace(tags, title=title, album=tags.title,
                                                track=(n, len(parts)) if spec.split else None)  # fmt: skip
                final_path = os.path.join(workdir, f"final-{n}{info.ext}")
                if one_pass:
                    if keep:  # the finished file is the kept audio too (a rerun remuxes it)
                        encoded = final_path
                else:
                    source = part.path
                    if source == final_path:  # one pass with a length that differed: chapters again
                        source = os.path.join(workdir, f"pass1-{n}{info.ext}")
                        os.replace(final_path, source)
                    finish_file(spec, source, final_path, sample_rate=rate, chapters=marks, tags=part_tags,
                                cover_path=cover_path, workdir=Path(workdir))  # fmt: skip
                    if source != encoded:
                        if keep:  # (one file) kept in the store below
                            os.replace(source, encoded)
                        else:
                            os.unlink(source)
                entry = {"url": url, "start_s": round(part.start / rate, 3), "end_s": round(part.end / rate, 3),
                         "duration_s": round((part.end - part.start) / rate, 3),
                         "chapters": [{"title": m.title, "start_s": round(m.start_sample / rate, 3),
                                       "end_s": round(m.end_sample / rate, 3)} for m in marks],
                         "subtitles": None}  # fmt: skip
                if spec.subtitles:
                    cues = _part_cues(plan, timeline, part, gap_at, rate)
                    sub_path = os.path.join(workdir, f"final-{n}.{spec.subtitles}")
                    with open(sub_path, "w", encoding="utf-8", newline="\n") as f:
                        f.write(format_subtitles(cues, spec.subtitles))
                    entry["subtitles"] = sub_url = _with_suffix(url, "." + spec.subtitles)
                    subtitle_files.append((sub_path, sub_url))
                outputs.append(entry)
                if n == 1 and spec.split == "chapters":
                    publication.own_folder(posixpath.dirname(url), storage_options)
                if keep and not reused and not dead.failed and os.path.exists(encoded):
                    try:  # a cache, not the product: a failure here only costs a later rebuild
                        store.put_encoded(audio_key, encoded)
                    except Ebook2AudioError as exc:
                        logger.warning("%s: encoded audio not kept: %s", plan.source, exc)
                publication.stage_file(final_path, url, storage_options)
            for path, url in subtitle_files:
                publication.stage_file(path, url, storage_options)
            if dead.failed and failures_url:
                publication.stage_bytes(dead.data(), failures_url, storage_options)
            elif failures_url:
                publication.stale.append(
                    failures_url
                )  # an earlier run's, gone once this one is published
            if _merge_cancelled(stop_event):  # the book failed meanwhile: nobody will publish these
                raise _MergeCancelled(plan.source, "conversion cancelled")
            staged = True
    except Ebook2AudioError:
        raise
    except Exception as exc:
        raise BookError(plan.source, f"writing {output_url} failed: {exc}") from exc
    finally:
        if not staged:
            publication.discard(storage_options)
    digest("from-cache", len({c.key for c in plan.chunks} & set(chunk_sizes)), "chunks")
    digest("merged", audio_s, "audio-seconds")
    warnings: tuple[str, ...] = ()
    if gaps:
        warnings = (f"{dead.summary(failures_url, gaps=True)}",)
    return MergeResult(
        output=outputs[0]["url"],
        audio_s=audio_s,
        merge_s=max(0.0, time.time() - ready),
        chapters=tuple(chapters),
        audio_reused=reused,
        warnings=warnings,
        gaps=tuple(gaps),
        chunks_failed=len(dead.failed),
        failures_url=failures_url if dead.failed else None,
        outputs=tuple(outputs),
        subtitles=tuple(url for _, url in subtitle_files),
        format=spec.format,
        publication=publication,
        passes=1 if one_pass else 2,
    )


@dataclass
class _Part:
    """One output file: samples ``start..end`` of the book, chunks ``first..stop``, pass-1 audio at *path*."""

    start: int
    first: int
    path: str
    end: int = 0
    stop: int = 0


#: With --split-hours, a part is ended at a chapter's start, rather than in the
#: chapter, when it is at least this share of the limit long and the chapter
#: (estimated from its characters) would not fit.
SPLIT_PREFER_CHAPTER = 0.8


def _cut_before(
    spec: OutputSpec, i: int, in_part: int, n: int, limit: int | None, chapter_at: dict, spoken
) -> bool:
    """Does a new output file start at chunk *i* (*n* samples with its pause; *in_part* samples so far)?"""
    if spec.split == "chapters":
        return i in chapter_at
    if limit is None or in_part == 0:
        return False
    if in_part + n > limit:
        return True
    chapter = chapter_at.get(i)
    if chapter is not None and in_part >= SPLIT_PREFER_CHAPTER * limit:
        per_char = spoken[1] / spoken[0] if spoken[0] else 0.0
        return in_part + chapter.chars * per_char > limit
    return False


def _timeline(plan: BookPlan, lengths: dict[str, int], rate: int) -> list[tuple[int, int]]:
    """(start sample, audio samples) of every chunk in the book."""
    out = []
    position = 0
    for chunk in plan.chunks:
        n = lengths[chunk.key]
        out.append((position, n))
        position += n + int(round(chunk.pause_after * rate))
    return out


def _part_marks(plan: BookPlan, timeline, part: _Part, book_end: int) -> list[ChapterMark]:
    """The chapters in one output file, relative to it; one cut across files is "(continued)"."""
    marks = []
    n = len(plan.chunks)
    for ch in plan.chapters:
        if ch.stop <= ch.start:
            continue
        start = timeline[ch.start][0]
        end = timeline[ch.stop][0] if ch.stop < n else book_end
        lo, hi = max(start, part.start), min(end, part.end)
        if hi <= lo:
            continue
        title = ch.title if start >= part.start else f"{ch.title} (continued)"
        marks.append(ChapterMark(title, lo - part.start, hi - part.start))
    return marks


def _part_cues(plan: BookPlan, timeline, part: _Part, gap_at: set[int], rate: int) -> list[Cue]:
    """Subtitle cues of one output file: each chunk's written text over its audio (not its pause)."""
    cues: list[Cue] = []
    for i in range(part.first, part.stop):
        if i in gap_at:
            continue
        chunk = plan.chunks[i]
        start, n = timeline[i]
        text = getattr(chunk, "display", "") or chunk.text
        cues += chunk_cues(
            text,
            (start - part.start) / rate,
            (start + n - part.start) / rate,
            getattr(plan, "language", None),
        )
    return cues


def _with_suffix(url: str, suffix: str) -> str:
    base, _ = posixpath.splitext(url)
    return base + suffix


def _output_names(
    output_url: str, spec: OutputSpec, plan: BookPlan, parts: list[_Part]
) -> list[str]:
    """URL of each output file (see :func:`merge_task`), every name at most 255 bytes.

    *output_url*'s name is the book's (already fitted) stem and extension;
    split files are named with :mod:`ebook2audio_dask.storage.names`.
    Subtitles swap the extension for ``.srt``/``.vtt``, never longer than
    an audio extension, so their names fit too.
    """
    if spec.split is None:
        return [output_url]
    folder, name = posixpath.split(output_url)
    stem, ext = posixpath.splitext(name)
    if spec.split == "hours":
        return [
            posixpath.join(folder, part_name(stem, n, len(parts), ext))
            for n in range(1, len(parts) + 1)
        ]
    width = max(2, len(str(len(parts))))
    chapter_at = {ch.start: ch for ch in plan.chapters if ch.stop > ch.start}
    return [posixpath.join(folder, stem, chapter_name(f"{n:0{width}d}", chapter_at[p.first].title, ext))
            for n, p in enumerate(parts, 1)]  # fmt: skip


class _ChunksFailed(Exception):
    """Raised into the encoder to stop it at the first chunk that could not be synthesised."""


def _killed_worker(exc: BaseException) -> bool:
    """True for Dask's KilledWorker: the task's worker died ``allowed-failures`` + 1 times."""
    from distributed.scheduler import KilledWorker

    return isinstance(exc, KilledWorker)


#: Seconds of speech per character, for sizing a gap before any chunk of the book is known.
SECONDS_PER_CHAR = 0.065


class _DeadLetters:
    """The chunks of one book that could not be synthesised, and its dead-letter file.

    One JSON object per failed chunk (one line each): ``book``, ``chunk``
    (its content key), ``chapter`` (index as ``inspect`` numbers it),
    ``chapter_title``, ``occurrences`` (times the text recurs in the book),
    ``chars``, ``text`` (the first 200 characters), ``error`` (one line),
    ``worker``, ``attempts`` and ``time`` (UTC, ISO 8601).
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
        record = self.failed[chunk.key]
        return {"chunk": chunk.key, "chapter": record["chapter"], "chapter_title": record["chapter_title"],
                "start_s": round(start_s, 3), "duration_s": round(duration_s, 3), "error": record["error"]}  # fmt: skip

    def summary(self, url: str | None, *, gaps: bool = False) -> str:
        n = len(self.failed)
        first = next(iter(self.failed.values()))
        where = f"; see {url}" if url else ""
        lead = (f"{n} chunk{'s' if n != 1 else ''} could not be synthesised "
                f"(first: chapter {first['chapter']}, {one_line(first['error'], 100)})")  # fmt: skip
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


def encoded_audio_key(
    plan: BookPlan, bitrate: str, coder: str | None, extra: dict[str, Any] | None = None
) -> str:
    """Content key of a book's encoded audio: its chunks and pauses, in order, and the encoder settings.

    *extra*: what else decides the audio (format, loudness targets: see
    :meth:`~ebook2audio_dask.audio.formats.OutputSpec.cache_token`); empty for
    a plain M4B, whose key is unchanged since before formats existed.
    """
    rate = plan.sample_rate
    sequence = [(c.key, int(round(c.pause_after * rate))) for c in plan.chunks]
    body: dict[str, Any] = {
        "v": 1,
        "rate": rate,
        "bitrate": str(bitrate),
        "coder": coder,
        "seq": sequence,
    }
    if extra:
        body["out"] = extra
    payload = json.dumps(body, separators=(",", ":"), sort_keys=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:40]
