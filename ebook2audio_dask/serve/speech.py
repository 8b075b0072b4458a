"""Text spoken across the cluster: ``POST /v1/audio/speech`` (OpenAI-compatible) and the voice
preview.

:func:`speak` turns a text into one clip the way a book is turned into audio:
the text becomes a one-chapter :class:`~ebook2audio_dask.model.Book`, the
pipeline's planner (:func:`~ebook2audio_dask.pipeline.tasks.plan_task`, on
the cluster) cuts it into content-keyed chunks with the book's sentence
splitting, spoken-form normalisation and chunk sizes, and a
:class:`~ebook2audio_dask.pipeline.graph.BookJob` submits the chunks not yet
in the chunk store as resource-tagged
:func:`~ebook2audio_dask.pipeline.tasks.synthesize_task` batches, sized so
that every synthesize slot of the cluster takes a share.  There is no merge
task: the client reads the clips back from the store and joins them in
order with the configured pauses (:func:`~ebook2audio_dask.pipeline.layout.timeline`).
A second request for the same text, engine, voice and speed synthesises
nothing.

:func:`encode` writes the clip as an OpenAI ``response_format`` (WAV, MP3,
Ogg Opus, FLAC, AAC in ADTS, raw PCM), all at 24 kHz as OpenAI sends
them, with the project's ffmpeg.
:func:`preview` speaks the start of a book (the page's voice preview).
:data:`router` holds the HTTP routes (``POST /v1/audio/speech``,
``GET /v1/models``) that :func:`~ebook2audio_dask.serve.app.create_app`
includes.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from dask.base import tokenize
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from .. import config
from ..audio import FORMATS, WAV_HEADER_BYTES, OutputSpec, decode_wav, encode_wav
from ..audio.ffmpeg import run_ffmpeg, stderr_lines
from ..engines import engine_info, engine_names, resolve_spec
from ..errors import BookError, Ebook2AudioError, EngineError, StorageError, UsageError, one_line
from ..model import Book, Chapter
from ..pipeline.graph import PLAN_PRIORITY, BookJob
from ..pipeline.layout import timeline
from ..pipeline.merge import READ_WINDOW
from ..pipeline.options import ConvertOptions
from ..pipeline.tasks import plan_task
from ..text.chunk import BookPlan
from ..text.segment import split_sentences

__all__ = [
    "OPENAI_MODELS",
    "OPENAI_VOICES",
    "PCM_RATE",
    "PREVIEW_MIN_PARAGRAPH",
    "RESPONSE_FORMATS",
    "SPEECH_CHUNK_CHARS",
    "SPEECH_PRIORITY",
    "SPEECH_TASKS",
    "NoWorkers",
    "SpeechRequest",
    "encode",
    "engine_voice",
    "preview",
    "preview_text",
    "router",
    "speak",
    "speed_settings",
    "text_book",
    "wait_for_workers",
]

#: OpenAI's speech models: they name the server's default engine (``ebook2audio.engine``,
#: else the one routed for the language).
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")

#: OpenAI's voice names: the engine's default voice, unless the engine has a voice of that id.
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
     "verse"}
)  # fmt: skip

#: Sample rate of every ``response_format`` (``pcm``: raw signed 16-bit little-endian mono),
#: as OpenAI's API sends them.
PCM_RATE = 24000

#: ``response_format`` → (media type, row of :data:`~ebook2audio_dask.audio.FORMATS` whose
#: codec and bit rate are used, ffmpeg muxer).  WAV is written without ffmpeg.
RESPONSE_FORMATS: dict[str, tuple[str, str | None, str]] = {
    "mp3": ("audio/mpeg", "mp3", "mp3"),
    "opus": ("audio/ogg", "opus", "ogg"),
    "aac": ("audio/aac", "m4b", "adts"),
    "flac": ("audio/flac", "flac", "flac"),
    "wav": ("audio/wav", "wav", "wav"),
    "pcm": ("audio/pcm", None, "s16le"),
}

#: Dask priority of speech's synthesize tasks: above every book's synthesis (a request
#: waits for its answer; a book does not), below the plans.
SPEECH_PRIORITY = 10**6

#: A text is cut into at least this many synthesize tasks (as its chunks allow; the
#: largest is ``synthesize.batch-chars``), so that the workers share it evenly.
SPEECH_TASKS = 8

#: Longest chunk of a speech request, in characters (or the engine's limit if lower):
#: about a sentence or two, so a text of a few paragraphs is enough chunks for every
#: worker to take a share (a book's chunks are as long as the engine allows).
SPEECH_CHUNK_CHARS = 200

#: Speed settings: engine → (setting, its value at normal speed, lowest, highest, slower
#: is a larger value).  Engines not listed are sped up by ffmpeg's ``atempo`` filter.
_SPEED = {
    "piper": ("length_scale", 1.0, 0.05, 20.0, True),  # the time each phoneme lasts
    "kokoro": ("speed", 1.0, 0.5, 2.0, False),
    "espeak": ("rate", 175, 80, 450, False),  # words per minute
    "openai": ("speed", 1.0, 0.25, 4.0, False),
}


def speed_settings(engine: str, speed: float) -> tuple[dict[str, Any], float]:
    """The engine setting that speaks *speed* times faster, and the factor left for ffmpeg.

    piper: ``length_scale = 1 / speed``; kokoro: ``speed`` (0.5-2); espeak:
    ``rate = 175 * speed`` words per minute (80-450); an OpenAI-compatible
    server: ``speed`` (0.25-4).  What the engine's range cannot reach, and
    the whole speed of any other engine, is left to ffmpeg's ``atempo``
    (pitch kept), applied to the joined clip.

    Returns
    -------
    settings : dict
        Engine settings to add (empty at normal speed); they are part of the
        chunks' content keys.
    tempo : float
        The remaining factor (1.0: none).
    """
    speed = float(speed)
    if not speed > 0:
        raise UsageError(f"speed must be positive, not {speed:g}")
    if abs(speed - 1.0) < 1e-6:
        return {}, 1.0
    if engine not in _SPEED:
        return {}, speed
    name, normal, low, high, inverse = _SPEED[engine]
    wanted = normal / speed if inverse else normal * speed
    value = min(high, max(low, wanted))
    value = int(round(value)) if isinstance(normal, int) else round(value, 4)
    reached = normal / value if inverse else value / normal
    tempo = speed / reached
    return {name: value}, 1.0 if abs(tempo - 1.0) < 0.01 else tempo


def engine_voice(engine: str, voice: str | None) -> str | None:
    """The voice to ask *engine* for: a voice id it lists, or None (its default voice).

    *voice* None or an OpenAI voice name (:data:`OPENAI_VOICES`) that the
    engine has no voice of is its default voice.  Anything else must be one
    of the engine's voice ids (``ebook2audio engines``): a file path or URL
    is refused, since a client of the server must not make it read files.

    Raises
    ------
    UsageError
        The engine has no such voice.
    """
    if voice is None or voice == "":
        return None
    info = engine_info(engine)
    ids = [v["id"] for v in info["voices"]]
    if voice in ids:
        return voice
    if voice.lower() in OPENAI_VOICES:
        return None
    shown = ", ".join(ids[:8]) + (", ..." if len(ids) > 8 else "")
    raise UsageError(
        f"engine {engine} has no voice {voice!r}"
        + (f" (its voices: {shown})" if ids else " (it lists no voices: leave voice out)")
    )


def _routed_engine(engine: str | None, language: str | None) -> str:
    """*engine*, else ``ebook2audio.engine``, else the engine routed for *language*."""
    engine = engine or config.get("engine")
    if engine:
        return str(engine)
    fallback = config.get("fallback-language")
    spec, _, _ = resolve_spec(
        language or fallback, fallback_language=fallback, routing=tuple(config.get("routing"))
    )
    return spec.engine


def text_book(text: str, language: str | None = None, source: str = "speech") -> Book:
    """*text* as a one-chapter, untitled :class:`~ebook2audio_dask.model.Book`.

    Paragraphs are separated by blank lines; the planner normalises the
    white space inside them.
    """
    paragraphs = tuple(p.strip() for p in re.split(r"\n\s*\n", text) if p.strip())
    if not paragraphs:
        raise UsageError("the input has no text to speak")
    return Book(
        source=source,
        title="",
        authors=(),
        language=language,
        chapters=(Chapter(1, "", paragraphs),),
        format="txt",
    )


class _SpeechJob(BookJob):
    """A :class:`BookJob` of a text: its plan submitted from a Book in memory, and no merge.

    Its synthesize batches are submitted by :meth:`BookJob.submit_synthesis`
    (store lookup, batch sizes, resources, retries); the client joins the
    clips (:func:`speak`).
    """

    def __init__(self, client, book: Book, options: ConvertOptions):
        super().__init__(client, book.source, options, priority=SPEECH_PRIORITY, start=False)
        request = options.plan_request()
        request = dataclasses.replace(
            request, max_chars=min(request.max_chars or SPEECH_CHUNK_CHARS, SPEECH_CHUNK_CHARS)
        )
        self.started = time.time()
        self.token = tokenize(book, request, self.started)
        self.stop_event = f"ebook2audio-stop-speech-{self.token}"
        with self.span():
            self.plan = client.submit(
                plan_task,
                book,
                request,
                key=f"chunk-{self.stem}-{self.token}",
                priority=PLAN_PRIORITY,
                pure=False,
            )

    def submit_merge(self) -> None:
        """No merge task: :func:`speak` joins the clips on the client."""


class NoWorkers(Ebook2AudioError):
    """No worker of the cluster offers the resources a synthesize task asks for (503)."""


def wait_for_workers(client, resources: dict[str, float], timeout: float | None = None) -> None:
    """Return once a worker offers *resources*; a request never waits on tasks no worker
    can run (a book fails the same way, after ``cluster.no-workers-timeout``).

    Parameters
    ----------
    client : distributed.Client
        The server's client.
    resources : dict
        What each synthesize task asks for (``BookJob.synth_resources``).
    timeout : float, optional
        Seconds to wait; default ``ebook2audio.cluster.no-workers-timeout`` (0: forever).

    Raises
    ------
    NoWorkers
        None came within *timeout*.
    """
    if timeout is None:
        timeout = float(config.get("cluster.no-workers-timeout"))
    deadline = time.monotonic() + timeout
    while True:
        workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
        if any(
            all((w.get("resources") or {}).get(k, 0) >= v for k, v in resources.items())
            for w in workers
        ):
            return
        if timeout > 0 and time.monotonic() >= deadline:
            wanted = ", ".join(f"{k}={v:g}" for k, v in resources.items()) or "none"
            raise NoWorkers(
                f"no worker of the cluster offers the resources speech needs ({wanted}) "
                f"after {timeout:g} s (ebook2audio.cluster.no-workers-timeout)"
            )
        time.sleep(0.5)


def speak(
    client,
    text: str,
    *,
    engine: str | None = None,
    voice: str | None = None,
    speed: float = 1.0,
    language: str | None = None,
    cache: str | None = None,
    storage_options: dict[str, Any] | None = None,
    engine_threads: int | None = None,
) -> tuple[np.ndarray, int]:
    """Speak *text* on the cluster of *client*; returns ``(int16 samples, sample rate)``.

    The text is planned, synthesised and cached exactly as a book's chapter
    (see the module docstring); its chunks are spoken in parallel by
    synthesize tasks requesting ``synthesize.resources``, at
    :data:`SPEECH_PRIORITY`, in at least :data:`SPEECH_TASKS` batches (as
    its chunks allow); the clips are joined with the configured pauses (no
    pause after the last).

    Parameters
    ----------
    client : distributed.Client
        The cluster's client.
    text : str
        What to say; paragraphs separated by blank lines.
    engine : str, optional
        Engine name; default ``ebook2audio.engine``, else routed by language.
    voice : str, optional
        A voice id of the engine, or an OpenAI voice name (see :func:`engine_voice`).
    speed : float
        1.0 is normal; see :func:`speed_settings`.
    language : str, optional
        BCP 47 tag; default ``ebook2audio.fallback-language``.
    cache : str, optional
        The chunk store's URL (default ``ebook2audio.cache``).
    storage_options : dict, optional
        fsspec options of the chunk store.
    engine_threads : int, optional
        Threads per engine (``synthesize.engine-threads``): the same as the
        server's books, so their loaded engines are reused.

    Raises
    ------
    UsageError
        No text, an unknown voice, a bad speed.
    NoWorkers
        No worker offers the synthesize resources (:func:`wait_for_workers`).
    Ebook2AudioError
        The engine is unavailable or failed on a chunk (every retry spent).
    """
    book = text_book(text, language)
    name = _routed_engine(engine, language)
    voice = engine_voice(name, voice)
    extra, tempo = speed_settings(name, speed)
    options = ConvertOptions(
        output="memory://ebook2audio-speech",
        engine=name,
        voice=voice,
        language=language,
        cache=cache,
        storage_options=storage_options,
        settings=extra or None,
        engine_threads=engine_threads,
        # small batches (down to one chunk each): the workers share even a short text evenly
        batch_chars=min(
            int(config.get("synthesize.batch-chars")), max(1, -(-len(text) // SPEECH_TASKS))
        ),
    )
    job = _SpeechJob(client, book, options)
    try:
        wait_for_workers(client, job.synth_resources())
        job.submit_synthesis()
        plan = job.fetch_plan()
        lengths = {k: (size - WAV_HEADER_BYTES) // 2 for k, size in job.cached_sizes.items()}
        for result in client.gather(job.batches):
            if result.failures:
                failure = result.failures[0]
                raise EngineError(
                    f"the engine failed on a chunk ({failure.attempts} tries): {failure.error}"
                )
            lengths.update(result.samples)
        pcm = _join(plan, job.store, lengths)
    except BaseException:
        job.cancel()
        raise
    finally:
        job.forget()
    if tempo != 1.0:
        pcm = _atempo(pcm, plan.sample_rate, tempo)
    return pcm, plan.sample_rate


def _join(plan: BookPlan, store, lengths: dict[str, int]) -> np.ndarray:
    """The plan's clips read from *store* and laid out with their pauses, none after the last.

    Read a window of chunks at a time (one concurrent request each), so
    memory holds the result and one window.
    """
    rate = plan.sample_rate
    times = timeline(plan, lengths, rate)
    start, n = times[-1]
    out = np.zeros(start + n, dtype=np.int16)
    for i in range(0, len(plan.chunks), READ_WINDOW):
        window = plan.chunks[i : i + READ_WINDOW]
        clips = store.read_many(plan.spec.engine, list(dict.fromkeys(c.key for c in window)))
        for chunk, (start, n) in zip(window, times[i : i + READ_WINDOW]):
            if chunk.key not in clips:
                raise StorageError(f"chunk {chunk.key} is missing from the chunk store")
            samples, clip_rate = decode_wav(clips[chunk.key])
            if clip_rate != rate:
                raise StorageError(f"chunk {chunk.key} in the store is damaged; delete it")
            out[start : start + min(n, len(samples))] = samples[:n]
    return out


def _ffmpeg(pcm: np.ndarray, rate: int, args: list[str], suffix: str) -> bytes:
    """Run ffmpeg on *pcm* (as a WAV input) with output *args*; returns the output file's bytes."""
    with tempfile.TemporaryDirectory(prefix="ebook2audio-speech-") as tmp:
        source, target = Path(tmp) / "in.wav", Path(tmp) / f"out{suffix}"
        source.write_bytes(encode_wav(pcm, rate))
        result = run_ffmpeg(["-y", "-i", str(source), *args, str(target)])
        if result.returncode != 0 or not target.exists():
            lines = stderr_lines(result.stderr)
            raise RuntimeError(f"ffmpeg failed: {lines[-1] if lines else result.returncode}")
        return target.read_bytes()


def _filtered(pcm: np.ndarray, rate: int, args: list[str]) -> np.ndarray:
    """*pcm* through ffmpeg with output *args* (a filter, a new rate), back as mono int16."""
    data = _ffmpeg(pcm, rate, [*args, "-c:a", "pcm_s16le", "-ac", "1", "-f", "s16le"], ".raw")
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def _atempo(pcm: np.ndarray, rate: int, tempo: float) -> np.ndarray:
    """*pcm* played *tempo* times faster, pitch kept (ffmpeg ``atempo``, chained within 0.5-2)."""
    steps = []
    while tempo > 2.0:
        steps.append(2.0)
        tempo /= 2.0
    while tempo < 0.5:
        steps.append(0.5)
        tempo /= 0.5
    steps.append(tempo)
    chain = ",".join(f"atempo={s:.6f}" for s in steps)
    return _filtered(pcm, rate, ["-af", chain, "-ar", str(rate)])


def encode(pcm: np.ndarray, rate: int, response_format: str) -> tuple[bytes, str]:
    """*pcm* (mono int16 at *rate*) as a file of *response_format*; returns ``(bytes, media type)``.

    Every format is at :data:`PCM_RATE` (24 kHz, resampled by ffmpeg), as
    OpenAI's API sends them (clients such as this project's ``openai``
    engine expect that rate).  ``mp3``, ``opus`` (Ogg), ``flac`` and ``aac``
    (ADTS) use the codec and bit rate of the book formats
    (:data:`~ebook2audio_dask.audio.FORMATS`, ``merge.bitrate``); ``pcm`` is
    raw signed 16-bit little-endian mono.

    Raises
    ------
    UsageError
        An unknown format.
    """
    if response_format not in RESPONSE_FORMATS:
        raise UsageError(
            f"unknown response_format {response_format!r}; choose {', '.join(RESPONSE_FORMATS)}"
        )
    media, row, muxer = RESPONSE_FORMATS[response_format]
    pcm = np.asarray(pcm, dtype=np.int16)
    if rate != PCM_RATE:
        pcm = _filtered(pcm, rate, ["-ar", str(PCM_RATE)])
    if response_format == "wav":
        return encode_wav(pcm, PCM_RATE), media
    if row is None:  # raw PCM
        return pcm.astype("<i2").tobytes(), media
    spec = OutputSpec(format=row, keep_encoded=False)
    if FORMATS[row].aac_coder:
        spec = OutputSpec(format=row, keep_encoded=False, aac_coder=config.get("merge.aac-coder"))
    args = ["-map", "0:a", "-ac", "1", *spec.codec_args(), "-f", muxer]
    return _ffmpeg(pcm, PCM_RATE, args, "." + response_format), media


#: A paragraph shorter than this is a heading or a page number: the preview starts after it.
PREVIEW_MIN_PARAGRAPH = 40


def preview_text(book: Book, limit: int) -> str:
    """The start of *book*'s first chapter with text: whole sentences up to *limit* characters.

    It starts at the chapter's first paragraph of :data:`PREVIEW_MIN_PARAGRAPH`
    characters or more (after its heading lines and page numbers), and holds
    at least one sentence (cut at a word near *limit* when that one is longer).
    """
    for chapter in book.chapters:
        if not chapter.paragraphs:
            continue
        paragraphs = list(chapter.paragraphs)
        first = next(
            (i for i, p in enumerate(paragraphs) if len(p.strip()) >= PREVIEW_MIN_PARAGRAPH), 0
        )
        out = ""
        for paragraph in paragraphs[first:]:
            for sentence in split_sentences(" ".join(paragraph.split()), book.language):
                sentence = sentence.strip()
                if not sentence:
                    continue
                if out and len(out) + 1 + len(sentence) > limit:
                    return out
                out = f"{out} {sentence}".strip()
                if len(out) >= limit:
                    return out if len(out) <= limit else _cut_words(out, limit)
        if out:
            return out
    raise UsageError(f"{book.source}: no text to preview")


def _cut_words(text: str, limit: int) -> str:
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut or text[:limit]


@functools.lru_cache(maxsize=64)
def _upload_preview(path: str, limit: int) -> tuple[str | None, str]:
    """The language and preview text of the book at *path* (an upload: its file never changes)."""
    from ..ingest import read_book

    book = read_book(path, include_matter=False)
    return book.language, preview_text(book, limit)


def preview(
    client,
    source: Book | dict | str,
    engine: str | None,
    voice: str | None,
    settings,
) -> bytes:
    """A few seconds of speech (WAV bytes) for the page's voice preview, spoken as :func:`speak`.

    Parameters
    ----------
    client : distributed.Client
        The cluster's client.
    source : Book, dict or str
        A parsed :class:`~ebook2audio_dask.model.Book`; an upload as
        ``JobStore.get_upload`` returns it (its ``path`` is read with
        :func:`~ebook2audio_dask.ingest.read_book`); or the text itself (a str).
        A book gives the first sentences of its first chapter with text, up
        to ``settings.preview_chars`` characters, in the book's language.
    engine, voice : str or None
        As for :func:`speak` (None: the defaults).
    settings : ServeSettings
        The server's settings: ``preview_chars``, ``cache``,
        ``storage_options``, ``engine_threads``.

    Raises
    ------
    UsageError
        No text, an upload that could not be read, an unknown voice.
    """
    language = None
    if isinstance(source, dict):
        if source.get("error") or not source.get("path"):
            raise UsageError(f"{source.get('name', 'upload')}: {source.get('error') or 'no file'}")
        language, text = _upload_preview(str(source["path"]), int(settings.preview_chars))
    elif isinstance(source, Book):
        language = source.language
        text = preview_text(source, int(settings.preview_chars))
    else:
        text = str(source)[: int(settings.preview_chars)]
    pcm, rate = speak(
        client,
        text,
        engine=engine,
        voice=voice,
        language=language,
        cache=settings.cache,
        storage_options=settings.storage_options,
        engine_threads=getattr(settings, "engine_threads", None),
    )
    return encode(pcm, rate, "wav")[0]


# --------------------------------------------------------------------------- HTTP
class SpeechRequest(BaseModel):
    """The body of ``POST /v1/audio/speech`` (OpenAI's ``audio.speech.create``)."""

    model: str = Field(
        description="tts-1, tts-1-hd or gpt-4o-mini-tts (the server's default engine), "
        "or an engine name (piper, espeak, kokoro...)",
        max_length=200,
    )
    input: str = Field(description="The text to speak (at most serve.speech-max-chars)")
    voice: str = Field(
        description="A voice id of the engine, or an OpenAI voice name (alloy, echo...: the "
        "engine's default voice)",
        max_length=500,
    )
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(None, description="Accepted and ignored")


def _error(status: int, message: str, *, param: str | None = None, code: str | None = None,
           kind: str = "invalid_request_error") -> JSONResponse:  # fmt: skip
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"message": one_line(message), "type": kind, "param": param, "code": code}
    return JSONResponse({"error": body}, status_code=status, headers={"Cache-Control": "no-store"})


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
    "required": ["error"],
}
_ERRORS = {
    str(status): {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
    for status, text in (
        (400, "Invalid request (OpenAI's error shape)"),
        (404, "Unknown model"),
        (413, "Input longer than serve.speech-max-chars"),
        (500, "The engine failed"),
        (503, "No cluster yet (the server is (re)connecting)"),
    )
}

router = APIRouter(tags=["speech"])


def _usable(info: dict) -> bool:
    """Can the engine of :func:`~ebook2audio_dask.engines.engine_info` *info* speak now?

    Available, and not missing its model (``why`` says what is missing).
    """
    return bool(info["available"]) and not info["why"]


@router.post(
    "/v1/audio/speech",
    summary="Speak a text (OpenAI-compatible)",
    response_class=Response,
    responses={
        200: {
            "description": "The audio",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in dict.fromkeys(m for m, _, _ in RESPONSE_FORMATS.values())
            },
        },
        **_ERRORS,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SpeechRequest.model_json_schema()}},
        }
    },
)
async def create_speech(request: Request) -> Response:
    """``POST /v1/audio/speech``: the text spoken across the cluster, as OpenAI's API answers.

    Long inputs are chunked and spoken in parallel; chunks are cached by
    content key.  Errors use OpenAI's shape (400, 404 unknown model, 413
    input too long, 503 no cluster).
    """
    try:
        body = SpeechRequest.model_validate(await request.json())
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        return _error(400, f"{param or 'body'}: {first.get('msg', 'invalid')}", param=param)
    except ValueError:  # not JSON
        return _error(400, "the body must be a JSON object")
    settings = request.app.state.settings
    if len(body.input) > int(settings.speech_max_chars):
        return _error(
            413,
            f"input is {len(body.input)} characters; this server takes at most "
            f"{settings.speech_max_chars}",
            param="input",
            code="string_above_max_length",
        )
    if not body.input.strip():
        return _error(400, "input has no text to speak", param="input")
    if body.model in OPENAI_MODELS:
        engine = None
    elif body.model in engine_names():
        engine = body.model
    else:
        return _error(
            404,
            f"model {body.model!r} does not exist: use {', '.join(OPENAI_MODELS)} or an engine "
            f"({', '.join(engine_names())})",
            param="model",
            code="model_not_found",
        )
    runner = getattr(request.app.state, "runner", None)
    client = getattr(runner, "client", None)
    if client is None:
        return _error(503, "the cluster is not connected yet; try again", kind="server_error")

    def work() -> tuple[bytes, str]:
        pcm, rate = speak(
            client,
            body.input,
            engine=engine,
            voice=body.voice,
            speed=body.speed,
            cache=settings.cache,
            storage_options=settings.storage_options,
            engine_threads=settings.engine_threads,
        )
        return encode(pcm, rate, body.response_format)

    if engine is not None:
        info = await run_in_threadpool(engine_info, engine)
        if not _usable(info):
            return _error(404, f"model {engine} is not available here: {info['why']}",
                          param="model", code="model_not_found")  # fmt: skip
    try:
        data, media = await run_in_threadpool(work)
    except (UsageError, BookError) as exc:
        message = str(exc).removeprefix("speech: ")
        return _error(400, message, param="voice" if "voice" in message else "input")
    except NoWorkers as exc:
        return _error(503, str(exc), kind="server_error")
    except Exception as exc:  # noqa: BLE001 - the engine failing, the cluster going away
        return _error(500, f"{type(exc).__name__}: {exc}", kind="server_error")
    return Response(data, media_type=media, headers={"Cache-Control": "no-store"})


@router.get("/v1/models", summary="Models (OpenAI-compatible): OpenAI's names and the engines")
async def list_models() -> dict:
    """``GET /v1/models``: OpenAI's speech model names and every engine that can speak here
    (available, with its model when it needs one)."""

    def available() -> list[str]:
        return [n for n in engine_names() if _usable(engine_info(n))]

    names = list(OPENAI_MODELS) + await run_in_threadpool(available)
    return {
        "object": "list",
        "data": [
            {"id": n, "object": "model", "created": 0, "owned_by": "ebook2audio"} for n in names
        ],
    }
