"""Any OpenAI-compatible speech server as an engine: ``POST <endpoint>/audio/speech``.

Kokoro-FastAPI, vLLM-Omni (Qwen3-TTS, Orpheus), Chatterbox servers and
OpenAI itself answer the same request: ``{"model", "input", "voice",
"response_format", ...}`` in, audio out.  This engine sends each text of a
batch as one such request, several at once (``ebook2audio.openai.concurrency``
per endpoint, spread over every ``--endpoint``), retries what a server may
answer better later (429 with its ``Retry-After``, 5xx, timeouts, broken
connections, cut-off bodies) with exponential backoff and jitter, and checks
what comes back (a WAV's format and sample rate, raw PCM's length, never
empty).

What the server says depends on the model, the voice and the settings: they
are the content key.  Where it runs (the endpoints) and the API key are not:
they travel in :attr:`EngineSpec.runtime <ebook2audio_dask.engines.base.EngineSpec.runtime>`,
the key inside a :class:`Secret` that never prints.  See docs/engines.md.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hmac
import json
import os
import random
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import tenacity

from .. import config
from ..errors import EngineError, UsageError, one_line
from ..logs import get_logger
from .base import Engine, EngineSpec, VoiceInfo, module_missing

__all__ = ["OpenAIEngine", "Secret", "api_key"]

logger = get_logger(__name__)

_INSTALL_HINT = "requests is not installed: pip install 'ebook2audio_dask[openai]'"

#: Where the API key is looked for, in this order (then ``ebook2audio.openai.api-key``).
KEY_VARIABLES = ("EBOOK2AUDIO_OPENAI_API_KEY", "OPENAI_API_KEY")

#: OpenAI's own voices (any other name is passed to the server as it is).
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
                 "shimmer", "verse")  # fmt: skip

#: ``response_format`` values whose audio can be checked without a decoder.
FORMATS = ("wav", "pcm")

#: Seconds to wait for a connection (the answer's wait is ``openai.timeout``).
CONNECT_TIMEOUT = 10.0

#: Longest wait between two attempts when the server gives no ``Retry-After``.
MAX_BACKOFF = 30.0

#: A WAV data size this large (or 0) is a streamed WAV's "until the end".
_STREAMED_SIZE = 0x7FFFFFFF


class Secret:
    """A string that never shows itself: ``repr``, ``str`` and formatting give ``***``.

    Used for the API key, so that a log line, an exception, a report or a
    task's ``repr`` that happens to hold it prints nothing of it.

    Parameters
    ----------
    value : str
        The secret text; :meth:`reveal` gives it back.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = str(value)

    def reveal(self) -> str:
        """The secret text (only to put it where it is needed: a request header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(
            self._value.encode(), other._value.encode()
        )

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __dask_tokenize__(self) -> str:
        return "Secret"  # no trace of the value in any Dask key


def api_key() -> tuple[Secret | None, str]:
    """The API key of this process and where it came from.

    ``$EBOOK2AUDIO_OPENAI_API_KEY``, then ``$OPENAI_API_KEY``, then the
    ``ebook2audio.openai.api-key`` config value.

    Returns
    -------
    (Secret or None, str)
        The key (``None`` when none is set) and its source's name.
    """
    for name in KEY_VARIABLES:
        if os.environ.get(name, "").strip():
            return Secret(os.environ[name].strip()), f"${name}"
    value = config.get("openai.api-key")
    if value is not None and str(value).strip():
        return Secret(str(value).strip()), "ebook2audio.openai.api-key"
    return None, ""


def _display(url: str) -> str:
    """*url* fit for a message: no user name, password, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def speech_url(endpoint: str) -> str:
    """The speech URL of *endpoint*: its base URL (``http://host:8880/v1``, as
    OpenAI clients take it) + ``/audio/speech``, or the full speech URL as given.

    Raises
    ------
    UsageError
        Not an http(s) URL with a host.
    """
    text = str(endpoint).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"bad --endpoint {one_line(_display(text) if parts.hostname else text, 80)!r}: "
            "use the server's base URL, e.g. http://127.0.0.1:8880/v1"
        )
    path = parts.path.rstrip("/")
    if not path.endswith("/audio/speech"):
        path += "/audio/speech"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _configured_endpoints() -> tuple[str, ...]:
    value = config.get("openai.endpoints") or ()
    if isinstance(value, str):
        value = [value]
    return tuple(speech_url(e) for e in value if str(e).strip())


def _number(key: str, kind: type, least: float = 0) -> Any:
    """``ebook2audio.openai.<key>`` as *kind*, more than *least* (at least 0 for ``retries``)."""
    value = config.get(f"openai.{key}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if (
        number is None
        or isinstance(value, bool)
        or number < least
        or (number == least and key != "retries")
    ):
        raise UsageError(
            f"ebook2audio.openai.{key} must be a {'whole ' if kind is int else ''}number "
            f"above {least:g}, not {value!r}"
        )
    return number


class _Transient(EngineError):
    """An answer worth asking again (throttled, server error, timeout, cut-off body)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _cause(exc: BaseException) -> str:
    """What went wrong below a requests error (urllib3's reason, without its object's repr)."""
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    text = str(getattr(inner, "reason", None) or inner)
    head, sep, rest = text.partition(">: ")
    return rest if sep and head.startswith("<") else text


def _wav_samples(data: bytes) -> tuple[np.ndarray, int]:
    """Mono ``int16`` samples and the sample rate of a WAV answer.

    16-bit PCM and 32-bit float WAVs are read, several channels mixed down;
    a streamed WAV (data size 0 or ``0xFFFFFFFF``: "until the end") is read
    to the end of the body.

    Raises
    ------
    _Transient
        The body is cut short (its header announces more than arrived).
    EngineError
        Not a WAV file, or a sample format other than 16-bit PCM / 32-bit float.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise EngineError(f"the answer is not a WAV file (it starts with {data[:16]!r})")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        kind, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if kind == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise _Transient("the WAV answer is cut short in its header")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == 0xFFFE and size >= 26 and body + 26 <= len(data):  # WAVE_FORMAT_EXTENSIBLE
                tag = int.from_bytes(data[body + 24 : body + 26], "little")
            fmt = (tag, max(1, channels), rate, bits)
        elif kind == b"data":
            if fmt is None:
                raise EngineError("the WAV answer has no format chunk before its audio")
            tag, channels, rate, bits = fmt
            available = len(data) - body
            if size == 0 or size >= _STREAMED_SIZE:
                size = available
            elif size > available:
                raise _Transient(
                    f"the WAV answer is cut short: {available} of {size} bytes of audio arrived"
                )
            if tag == 1 and bits == 16:
                frame = 2 * channels
                samples = np.frombuffer(data, "<i2", (size // frame) * channels, body).astype(
                    np.float32
                )
            elif tag == 3 and bits == 32:
                frame = 4 * channels
                floats = np.frombuffer(data, "<f4", (size // frame) * channels, body)
                samples = np.clip(np.nan_to_num(floats), -1.0, 1.0) * 32767.0
            else:
                raise EngineError(f"the WAV answer holds {bits}-bit audio of format {tag}: "
                                  "16-bit PCM or 32-bit float are read")  # fmt: skip
            if channels > 1:
                samples = samples.reshape(-1, channels).mean(axis=1)
            return np.round(samples).astype(np.int16), rate
        pos = body + size + (size & 1)
    raise _Transient("the WAV answer is cut short: it has no audio data")


class _Balancer:
    """Request slots over the endpoints: *limit* at once on each, the least busy first."""

    def __init__(self, n: int, limit: int):
        self._busy = [0] * n
        self._limit = limit
        self._next = 0
        self._cond = threading.Condition()
        #: Requests sent to each endpoint (attempts, retries included).
        self.sent = [0] * n

    def acquire(self, avoid: int | None = None) -> int:
        """Wait for a free slot; return its endpoint's index (not *avoid* when another is free)."""
        n = len(self._busy)
        with self._cond:
            while True:
                free = [i for i in range(n) if self._busy[i] < self._limit]
                if free:
                    choices = [i for i in free if i != avoid] or free
                    i = min(choices, key=lambda j: (self._busy[j], (j - self._next) % n))
                    self._next = (i + 1) % n
                    self._busy[i] += 1
                    self.sent[i] += 1
                    return i
                self._cond.wait()

    def release(self, i: int) -> None:
        with self._cond:
            self._busy[i] -= 1
            self._cond.notify()


class OpenAIEngine(Engine):
    """An OpenAI-compatible ``/v1/audio/speech`` server, many requests at once.

    Parameters
    ----------
    voice : str
        The server's voice name (``alloy``, Kokoro-FastAPI's ``af_heart`` or
        ``af_bella+af_sky``...): any name, the server decides.
    settings : mapping, optional
        Fields added to each request: ``speed``, ``instructions``,
        ``response_format`` (``wav``, the default, or ``pcm``), or whatever
        else the server takes (``lang_code``...).  ``language`` (the book's,
        set by the planner) is part of the content key but not sent.
    threads : int
        Ignored: the work is the server's.
    model : str, optional
        The server's model name (``tts-1``, ``kokoro``, a vLLM served model);
        default ``ebook2audio.openai.model``.
    runtime : mapping, optional
        ``endpoints`` (speech URLs), ``concurrency``, ``timeout``,
        ``retries``, ``retry-seconds`` and ``api-key`` (a :class:`Secret`),
        as :meth:`runtime_options` read them on the client.  Missing: read
        here, from this process's configuration and environment.

    Raises
    ------
    EngineError
        requests missing, no model, a bad setting.
    UsageError
        No endpoint configured, or a bad one.
    """

    name: ClassVar[str] = "openai"
    #: OpenAI takes up to 4096 characters; shorter requests retry cheaply and cache finely.
    max_chars: ClassVar[int] = 1000
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    uses_model: ClassVar[bool] = True
    #: Each text is its own request: a call takes as many as it can keep busy.
    length_spread: float = float("inf")

    def __init__(
        self,
        voice: str,
        settings: Mapping[str, Any] | None = None,
        threads: int = 1,
        *,
        model: str | None = None,
        runtime: Mapping[str, Any] | None = None,
    ):
        super().__init__(voice, settings, threads)
        ok, why = self.availability()
        if not ok:
            raise EngineError(why)
        self.model = model or self.default_model() or ""
        if not self.model:
            raise EngineError("the openai engine needs the server's model name: --model NAME "
                              "(or ebook2audio.openai.model), e.g. tts-1 or kokoro")  # fmt: skip
        options = dict(runtime or {}) or dict(self.runtime_options())
        self._urls: tuple[str, ...] = tuple(options["endpoints"])
        self._shown = tuple(_display(u) for u in self._urls)
        self._timeout = float(options["timeout"])
        self._retries = int(options["retries"])
        self._retry_seconds = float(options["retry-seconds"])
        key = options.get("api-key")
        self._key: Secret | None = key if isinstance(key, Secret) and key else api_key()[0]
        self._format = str(self.settings.get("response_format") or "wav").lower()
        if self._format not in FORMATS:
            raise EngineError(f"openai setting response_format must be {' or '.join(FORMATS)} "
                              f"(audio this engine can check), not {self._format!r}")  # fmt: skip
        speed = self.settings.get("speed")
        number = isinstance(speed, (int, float)) and not isinstance(speed, bool)
        if speed is not None and not (number and speed > 0):
            raise EngineError(f"openai setting speed must be a positive number, not {speed!r}")
        fields = {k: v for k, v in self.settings.items() if k != "language" and v is not None}
        self._body = {
            **fields,
            "model": self.model,
            "voice": voice,
            "response_format": self._format,
        }
        self._headers = {"User-Agent": "ebook2audio_dask"}
        if self._key:
            self._headers["Authorization"] = f"Bearer {self._key.reveal()}"
        self._sample_rate = self.sample_rate_for(voice, self.model)
        concurrency = int(options["concurrency"])
        slots = concurrency * len(self._urls)
        self._balancer = _Balancer(len(self._urls), concurrency)
        self._pool = ThreadPoolExecutor(slots, thread_name_prefix="openai-speech")
        #: Texts handed over per call: enough to keep every slot busy through its tail.
        self.batch_size = 4 * slots
        self._local = threading.local()
        self._sessions: list[Any] = []
        self._lock = threading.Lock()
        #: Audio of the texts that succeeded in a call that failed as a whole: the
        #: synthesize task then asks for its texts one by one, and gets these back.
        self._salvage: dict[str, np.ndarray] = {}
        #: Set once a server refused the key: later requests fail at once, unsent.
        self._refused: str | None = None

    def __repr__(self) -> str:
        return (
            f"OpenAIEngine(model={self.model!r}, voice={self.voice!r}, "
            f"endpoints={list(self._shown)!r})"
        )

    # -- description ------------------------------------------------------
    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """Whether ``requests`` (the HTTP client) is installed."""
        return (False, _INSTALL_HINT) if module_missing("requests") else (True, "")

    @classmethod
    def voices(cls, model: str | None = None) -> list[VoiceInfo]:
        """OpenAI's own voices (``mul``: they speak any language); any other
        name the server knows works too (:meth:`accepts_voice_path`)."""
        return [
            VoiceInfo(v, "mul", "OpenAI voice (servers may map or refuse it)")
            for v in OPENAI_VOICES
        ]

    @classmethod
    def voice_for_language(cls, language: str | None, model: str | None = None) -> str | None:
        """``ebook2audio.openai.voice`` (default ``alloy``) for any language:
        the server's voice is chosen by name, not by the book."""
        if not language:
            return None
        return str(config.get("openai.voice") or "alloy")

    @classmethod
    def accepts_voice_path(cls, voice: str, model: str | None = None) -> bool:
        """Any voice name: only the server knows its voices."""
        return bool(str(voice).strip())

    @classmethod
    def default_model(cls) -> str | None:
        """``ebook2audio.openai.model`` (``tts-1``)."""
        value = config.get("openai.model")
        return str(value) if value else None

    @classmethod
    def sample_rate_for(cls, voice: str, model: str | None = None) -> int:
        """``ebook2audio.openai.sample-rate`` (24000, OpenAI's and Kokoro's rate).

        A WAV answer at another rate is refused with an error saying which
        rate to configure: audio is never resampled behind your back.
        """
        return int(_number("sample-rate", int))

    @classmethod
    def identify(cls, spec: EngineSpec) -> EngineSpec:
        """The sample rate joins the content key: chunks cached at another rate are not reused."""
        return dataclasses.replace(
            spec, identity=f"{cls.sample_rate_for(spec.voice, spec.model)} Hz"
        )

    @classmethod
    def runtime_options(cls) -> tuple[tuple[str, Any], ...]:
        """Endpoints, concurrency, timeouts, retries and the API key, read here.

        The key (see :func:`api_key`) is included, as a :class:`Secret`,
        unless ``ebook2audio.openai.send-key`` is false: workers then use
        their own environment's key.

        Raises
        ------
        UsageError
            No endpoint (``--endpoint`` / ``ebook2audio.openai.endpoints``),
            a bad one, or a bad number.
        """
        endpoints = _configured_endpoints()
        if not endpoints:
            raise UsageError(
                "the openai engine needs a server: --endpoint URL (repeatable; or "
                "ebook2audio.openai.endpoints), e.g. http://127.0.0.1:8880/v1"
            )
        options: list[tuple[str, Any]] = [
            ("endpoints", endpoints),
            ("concurrency", _number("concurrency", int)),
            ("timeout", _number("timeout", float)),
            ("retries", _number("retries", int)),
            ("retry-seconds", _number("retry-seconds", float)),
        ]
        if config.get("openai.send-key"):
            key, _ = api_key()
            if key:
                options.append(("api-key", key))
        return tuple(options)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Configured endpoints (shown without credentials) and where the API key comes from."""
        try:
            endpoints = [_display(u) for u in _configured_endpoints()]
        except UsageError as exc:
            endpoints = [f"({exc})"]
        _, source = api_key()
        return {"endpoints": endpoints, "api_key": f"set ({source})" if source else "not set"}

    # -- synthesis ----------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """Sample rate (Hz) of the arrays :meth:`synthesize` returns."""
        return self._sample_rate

    @property
    def requests_sent(self) -> list[int]:
        """Requests sent to each endpoint so far (every attempt counts)."""
        return list(self._balancer.sent)

    def synthesize(
        self, texts: Sequence[str], seeds: Sequence[int] | None = None
    ) -> list[np.ndarray]:
        """Speak each text: one request per text, all of them at once (up to
        ``concurrency`` per endpoint).

        Parameters
        ----------
        texts : sequence of str
            Plain texts of at most :attr:`max_chars` characters.
        seeds : sequence of int, optional
            Ignored: the speech API takes no seed.

        Returns
        -------
        list of numpy.ndarray
            One 1-D ``int16`` array per text, in order; empty for a blank text.

        Raises
        ------
        EngineError
            A text failed every attempt, or failed at once (4xx other than
            429, a refused key, audio in the wrong format or at the wrong
            rate); the first such error, after every request of the call ended.
        """
        out: list[np.ndarray | None] = [None] * len(texts)
        jobs = {}
        for i, text in enumerate(texts):
            if not text or not text.strip():
                out[i] = np.zeros(0, dtype=np.int16)
                continue
            with self._lock:
                kept = self._salvage.pop(text, None)
            if kept is not None:
                out[i] = kept
            else:
                jobs[i] = self._pool.submit(self._speak, text)
        error: BaseException | None = None
        for i, job in jobs.items():
            try:
                out[i] = job.result()
            except Exception as exc:  # noqa: BLE001 - raised below, after every request ended
                error = error or exc
        if error is not None:
            with self._lock:
                if len(self._salvage) > 4 * self.batch_size:
                    self._salvage.clear()
                self._salvage.update((texts[i], out[i]) for i in jobs if out[i] is not None)
            raise error
        return out  # type: ignore[return-value]

    def _session(self):
        """This thread's HTTP session (kept alive between requests)."""
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = requests.Session()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _speak(self, text: str) -> np.ndarray:
        """One text, with retries of transient failures (on another endpoint when there is one)."""
        last: list[int | None] = [None]

        def stop(state: tenacity.RetryCallState) -> bool:
            if state.attempt_number > self._retries:
                return True
            after = getattr(state.outcome.exception(), "retry_after", None) or 0.0
            return state.seconds_since_start + after > self._retry_seconds

        def wait(state: tenacity.RetryCallState) -> float:
            after = getattr(state.outcome.exception(), "retry_after", None)
            if after is not None:  # the server said when: then, plus a little jitter
                return after + random.uniform(0, min(1.0, 0.1 * after + 0.05))
            return random.uniform(0, min(MAX_BACKOFF, 0.5 * 2 ** (state.attempt_number - 1)))

        def log(state: tenacity.RetryCallState) -> None:
            logger.info(
                "openai: %s; attempt %d of %d failed, next in %.1f s",
                state.outcome.exception(),
                state.attempt_number,
                self._retries + 1,
                state.next_action.sleep,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            stop=stop,
            wait=wait,
            before_sleep=log,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                index = self._balancer.acquire(avoid=last[0])
                try:
                    return self._request(index, text)
                except _Transient:
                    last[0] = index
                    raise
                finally:
                    self._balancer.release(index)
        raise AssertionError("unreachable")  # pragma: no cover - tenacity returns or raises

    def _request(self, index: int, text: str) -> np.ndarray:
        """One POST to endpoint *index*; the audio, or why not."""
        import requests

        shown = self._shown[index]
        if self._refused:
            raise EngineError(self._refused)
        try:
            response = self._session().post(
                self._urls[index], json=dict(self._body, input=text), headers=self._headers,
                timeout=(CONNECT_TIMEOUT, self._timeout),
            )  # fmt: skip
            body = response.content
        except requests.Timeout:
            raise _Transient(f"{shown}: no answer within {self._timeout:g} s") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:  # fmt: skip
            raise _Transient(
                f"{shown}: {type(exc).__name__}: {self._scrub(_cause(exc), 120)}"
            ) from None
        except requests.RequestException as exc:
            raise EngineError(
                f"{shown}: {type(exc).__name__}: {self._scrub(_cause(exc), 120)}"
            ) from None
        status = response.status_code
        if status in (401, 403):
            how = ""
            if not self._key:
                how = (
                    " (no API key is set: $OPENAI_API_KEY or $EBOOK2AUDIO_OPENAI_API_KEY"
                    " or ebook2audio.openai.api-key)"
                )
            self._refused = f"{shown}: the server refused the API key (HTTP {status}){how}"
            raise EngineError(self._refused)
        if status == 429 or status == 408 or status >= 500:
            reason = f"HTTP {status}" + (f": {self._message(body)}" if body else "")
            raise _Transient(f"{shown}: {reason}", _retry_after(response.headers))
        if status != 200:
            hint = " (is the endpoint the server's base URL, e.g. http://host:8880/v1?)"
            hint = hint if status == 404 else ""
            raise EngineError(
                f"{shown}: HTTP {status} for model {self.model!r}, voice {self.voice!r}: "
                f"{self._message(body)}{hint}"
            )
        return self._audio(shown, body, len(text))

    def _audio(self, shown: str, body: bytes, chars: int) -> np.ndarray:
        """The samples of a 200 answer, checked."""
        if not body:
            raise _Transient(f"{shown}: empty answer for a text of {chars} characters")
        if self._format == "pcm":
            if len(body) % 2:
                raise _Transient(
                    f"{shown}: the PCM answer is cut short ({len(body)} bytes, an odd number)"
                )
            samples = np.frombuffer(body, "<i2").astype(np.int16)
        else:
            try:
                samples, rate = _wav_samples(body)
            except EngineError as exc:
                raise type(exc)(f"{shown}: {exc}") from None
            if rate != self._sample_rate:
                raise EngineError(
                    f"{shown} sent {rate} Hz audio, but ebook2audio.openai.sample-rate is "
                    f"{self._sample_rate}: set it to {rate} (the server's rate)"
                )
        if not len(samples):
            raise _Transient(f"{shown}: no audio in the answer for a text of {chars} characters")
        return samples

    def _message(self, body: bytes) -> str:
        """The server's error text, one safe line.

        OpenAI's ``{"error": {"message"}}`` or the body.
        """
        text = body.decode("utf-8", "replace")
        try:
            data = json.loads(text)
            error = data.get("error", data) if isinstance(data, dict) else data
            if isinstance(error, dict):
                error = error.get("message") or error.get("detail") or error
            text = str(error)
        except ValueError:
            pass
        return self._scrub(text, 160)

    def _scrub(self, text: object, limit: int) -> str:
        """*text* on one line, without the API key should a server echo it."""
        line = str(text)
        if self._key:
            line = line.replace(self._key.reveal(), "***")
        return one_line(line, limit)

    def close(self) -> None:
        """Stop the request threads and close the connections."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
