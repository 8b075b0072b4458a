"""The functions Dask runs before the merge: ``parse → chunk (+ cover) → synthesize``.

Each is a plain function of picklable arguments, so any worker can run it.
Audio never travels through the scheduler or the client: synthesize tasks
write chunk audio to the chunk store and return only keys and sample counts
(:mod:`~ebook2audio_dask.pipeline.results`); the merge task
(:mod:`~ebook2audio_dask.pipeline.merge`) reads the store and writes the book.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config
from ..audio import WAV_HEADER_BYTES, encode_wav, prepare_cover
from ..engines import LOAD_COUNTS, get_engine_class, load_engine, resolve_spec
from ..engines.base import EngineSpec
from ..errors import BookError, EngineError, one_line
from ..ingest import read_book
from ..logs import get_logger
from ..model import Book, Pronunciation
from ..storage import ChunkStore
from ..text.chunk import BookPlan, Pauses, plan_book
from ..text.spoken import normalize_features
from .coordination import scratch_dir, worker_address
from .metrics import digest
from .results import BatchResult, ChunkFailure, PreparedCover

__all__ = [
    "RETRY_PAUSES",
    "PlanRequest",
    "cover_task",
    "error_line",
    "ingest_settings",
    "length_buckets",
    "parse_task",
    "plan_task",
    "prepare_voice_task",
    "seed_for",
    "synthesize_task",
]

logger = get_logger(__name__)


# --------------------------------------------------------------------------- parse
def parse_task(
    source: str,
    include_matter: bool,
    storage_options: dict[str, Any] | None,
    settings: dict[str, Any] | None = None,
) -> Book:
    """Parse stage: read the book at *source* (any fsspec URL).

    *settings*: the client's ``ingest`` limits (:func:`ingest_settings`), which
    then count on any worker; ``None``: the worker's own configuration.
    """
    with config.applied(settings):
        return read_book(source, include_matter=include_matter, storage_options=storage_options)


def ingest_settings() -> dict[str, Any]:
    """The client's ``ebook2audio.ingest`` section for :func:`parse_task`.

    All but ``ingest.calibre`` (the program's name or path, which is the
    worker machine's own).
    """
    return config.snapshot("ingest", exclude=("calibre",))


# --------------------------------------------------------------------------- chunk
@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for, as far as the chunk stage is concerned.

    Every ``None`` but *chapters*, *language* and *model* is taken from the
    ``ebook2audio`` configuration when the request is made (on the client,
    whose configuration an external cluster's workers do not share): the
    packaged ``ebook2audio.yaml`` is the only default.

    Parameters
    ----------
    chapters : tuple of int, optional
        Chapter indices to plan; all if None.
    engine, voice : str, optional
        ``ebook2audio.engine`` / ``.voice`` (None there: routed by language).
    language : str, optional
        Overrides the book's language.
    settings : tuple of (str, value)
        Engine settings that change the audio.
    model : str, optional
        Model of engines that load one; None: the engine's own default.
    max_chars : int, optional
        ``ebook2audio.chunk.max-chars`` (None there: the engine's limit).
    speak_titles : bool, optional
        ``ebook2audio.chunk.speak-titles``.
    pauses : Pauses, optional
        ``ebook2audio.pauses``.
    fallback_language : str, optional
        ``ebook2audio.fallback-language``.
    routing : tuple of str, optional
        ``ebook2audio.routing``: engines tried in order for the language.
    normalize : tuple of str, optional
        Spoken-form features (``text.spoken.FEATURES``); empty: text spoken as
        written; None: ``ebook2audio.text.*`` (see
        :func:`~ebook2audio_dask.text.spoken.normalize_features`).
    lexicon : tuple of Pronunciation
        User lexicon entries (their content, so a changed lexicon changes the plan).
    sentences : bool
        Give each chunk its sentence ends (for subtitles; see
        :func:`~ebook2audio_dask.text.chunk.plan_book`).
    sentence_chunks : bool
        One sentence per chunk, for read-along books (see
        :func:`~ebook2audio_dask.text.chunk.plan_book`).
    """

    chapters: tuple[int, ...] | None = None
    engine: str | None = None
    voice: str | None = None
    language: str | None = None
    settings: tuple[tuple[str, Any], ...] = ()
    model: str | None = None
    max_chars: int | None = None
    speak_titles: bool | None = None
    pauses: Pauses | None = None
    fallback_language: str | None = None
    routing: tuple[str, ...] | None = None
    normalize: tuple[str, ...] | None = None
    lexicon: tuple[Pronunciation, ...] = ()
    sentences: bool = False
    sentence_chunks: bool = False

    def __post_init__(self) -> None:
        resolved = {
            "engine": lambda: config.get("engine"),
            "voice": lambda: config.get("voice"),
            "max_chars": lambda: config.get("chunk.max-chars"),
            "speak_titles": lambda: bool(config.get("chunk.speak-titles")),
            "pauses": Pauses.from_config,
            "fallback_language": lambda: config.get("fallback-language"),
            "routing": lambda: tuple(config.get("routing")),
            "normalize": normalize_features,
        }
        for name, default in resolved.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default())


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
        sentences=request.sentences,
        sentence_chunks=request.sentence_chunks,
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


def prepare_voice_task(spec: EngineSpec, store: ChunkStore, threads: int = 1) -> str:
    """Voice stage (only for engines that compute a voice, e.g. XTTS cloning):
    load the engine and compute its voice into the chunk store once, before
    the synthesize tasks that then read it."""
    load_engine(spec, threads).prepare(store)
    return spec.voice


def error_line(exc: BaseException, limit: int = 300) -> str:
    """``"ExceptionType: message"`` on one line, at most *limit* characters
    (:func:`~ebook2audio_dask.errors.one_line`)."""
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
    worker = worker_address()

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


# --------------------------------------------------------------------------- cover
def cover_task(book: Book) -> PreparedCover | None:
    """Cover stage: the book's cover, checked and converted for ffmpeg
    (see :func:`~ebook2audio_dask.audio.cover.prepare_cover`).

    A small result the merge depends on, so the parsed book itself need not
    be kept for the merge.
    """
    if not book.cover:
        return None
    with tempfile.TemporaryDirectory(prefix="ebook2audio-cover-", dir=scratch_dir()) as tmp:
        path = prepare_cover(bytes(book.cover.data), book.cover.media_type, Path(tmp))
        return None if path is None else PreparedCover(path.read_bytes(), path.suffix)
