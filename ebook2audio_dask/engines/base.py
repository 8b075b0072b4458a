"""The speech-engine interface every engine implements.

An engine turns a *batch* of short texts into 16-bit mono PCM.  Engines are
described on the client by an :class:`EngineSpec` (small, frozen, hashable:
it is part of every chunk's content key) and instantiated on the workers,
once per worker process, by :func:`ebook2audio_dask.engines.load_engine`.
"""

from __future__ import annotations

import abc
import importlib.util
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

__all__ = ["Engine", "EngineSpec", "VoiceInfo", "module_missing"]


def module_missing(name: str) -> bool:
    """True when module *name* cannot be imported (found without importing it).

    Engines use it in :meth:`Engine.availability` to say what to install.
    """
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


@dataclass(frozen=True)
class VoiceInfo:
    """One voice an engine offers.

    Parameters
    ----------
    id : str
        What ``--voice`` takes.
    language : str
        BCP 47 tag of the language the voice speaks (``"en-US"``, ``"fr"``).
    description : str
        Free text for listings.
    """

    id: str
    language: str
    description: str = ""


@dataclass(frozen=True)
class EngineSpec:
    """Which engine and voice speak a book, and with which audio settings.

    Only what changes the audio belongs here (it is hashed into each chunk's
    content key); how the engine runs (threads, device) does not.

    Parameters
    ----------
    engine : str
        Registered engine name, e.g. ``"piper"`` or ``"espeak"``.
    voice : str
        Engine-specific voice id (see ``Engine.voices()``) or, for engines
        that load model files, a path/URL.
    settings : tuple of (str, value) pairs
        Audio-affecting settings (speed, pitch...), sorted by name.
    model : str
        Model folder/file path or URL, for engines that load a model and
        then choose a voice inside it (Coqui); empty otherwise.
    identity : str
        Fingerprint of the files that speak (model config, reference clips),
        filled in by :meth:`Engine.identify` when a book is planned, so
        cached chunks are not reused after those files change.
    runtime : tuple of (str, value) pairs
        How the engine runs, not what it says: server endpoints, concurrency,
        an API key (hidden in a secret).  Gathered on the client by
        :meth:`Engine.runtime_options` when synthesis is submitted and passed
        to the engine's constructor as ``runtime=``; left out of
        :meth:`token`, equality, hashing and ``repr``, so it never changes a
        content key and never shows in a log line.
    """

    engine: str
    voice: str
    settings: tuple[tuple[str, Any], ...] = field(default=())
    model: str = ""
    identity: str = ""
    runtime: tuple[tuple[str, Any], ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def make(
        cls,
        engine: str,
        voice: str,
        settings: Mapping[str, Any] | None = None,
        model: str | None = None,
    ) -> EngineSpec:
        """Build a spec from a settings mapping (sorted so equal specs hash equal)."""
        return cls(engine, voice, tuple(sorted((settings or {}).items())), model or "")

    @property
    def settings_dict(self) -> dict[str, Any]:
        return dict(self.settings)

    def token(self) -> str:
        """Canonical JSON text of the spec, used in content keys."""
        fields = {"engine": self.engine, "voice": self.voice, "settings": self.settings_dict}
        # Only when set, so keys of engines without models stay what they were.
        if self.model:
            fields["model"] = self.model
        if self.identity:
            fields["identity"] = self.identity
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))


class Engine(abc.ABC):
    """Base class of speech engines.

    Subclasses set :attr:`name` and :attr:`max_chars`, implement the class
    methods that describe them (usable without loading a model) and
    :meth:`synthesize`.

    Parameters
    ----------
    voice : str
        Voice id or model path/URL.
    settings : mapping
        Audio-affecting settings (see :class:`EngineSpec`).
    threads : int
        CPU threads the engine may use.  Workers are sized so that
        ``threads * workers <= cores``.
    """

    #: Registered name (``--engine``).
    name: ClassVar[str] = ""
    #: Longest text one ``synthesize`` item may hold; the chunker obeys it.
    max_chars: ClassVar[int] = 400
    #: Devices the engine can run on.
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    #: True for engines that load a model (``EngineSpec.model``) and pick a voice in it.
    uses_model: ClassVar[bool] = False
    #: True when a seed makes the audio reproducible (see :meth:`synthesize`).
    seeded: ClassVar[bool] = False
    #: True when one instance may run :meth:`synthesize` and :meth:`prepare`
    #: in several threads at once.  A worker loads each engine once and its
    #: threads share it (``cluster.slots-per-gpu`` > 1 runs several synthesize
    #: tasks per worker): :func:`~ebook2audio_dask.engines.load_engine` puts
    #: the calls of an engine that is not thread-safe behind one lock per
    #: instance, so its tasks overlap only outside the engine (store I/O).
    thread_safe: ClassVar[bool] = False
    #: How the engine takes phonemes inline in its text, or ``None`` when it
    #: cannot: ``"ipa"`` (``[[ipa]]``, Piper) or ``"espeak"`` (``[[mnemonics]]``,
    #: espeak-ng's phoneme notation).  Lexicon and EPUB pronunciations given as
    #: phonemes are written into chunk texts this way (see docs/text.md).
    phoneme_alphabet: ClassVar[str | None] = None

    def __init__(self, voice: str, settings: Mapping[str, Any] | None = None, threads: int = 1):
        self.voice = voice
        self.settings = dict(settings or {})
        self.threads = max(1, int(threads))

    #: How many texts :meth:`synthesize` runs at once; the synthesize task
    #: hands over this many (sorted by length) per call.
    batch_size: int = 8
    #: How much longer than the first text of a call another may be and still
    #: join the call (``spread`` of :func:`~ebook2audio_dask.pipeline.tasks.length_buckets`):
    #: a padded batch wastes little compute.  Engines that speak each text on
    #: its own (a remote server) take ``math.inf``: every call is full.
    length_spread: float = 1.3

    # -- description (no model loaded) -------------------------------------
    @classmethod
    @abc.abstractmethod
    def availability(cls) -> tuple[bool, str]:
        """``(True, "")`` when the engine can run here, else ``(False, why)``."""

    @classmethod
    @abc.abstractmethod
    def voices(cls, model: str | None = None) -> list[VoiceInfo]:
        """Voices available without downloading anything (in *model*, for
        engines that use one)."""

    @classmethod
    def default_model(cls) -> str | None:
        """The model used when none is given (engines with :attr:`uses_model`)."""
        return None

    @classmethod
    def languages(cls, model: str | None = None) -> list[str]:
        """Languages the engine's voices speak."""
        return sorted({v.language for v in cls.voices(model)})

    @classmethod
    def voice_for_language(cls, language: str | None, model: str | None = None) -> str | None:
        """The voice to use for *language* (BCP 47), or ``None`` if none speaks it.

        Matches the full tag first (``en-GB``), then the primary subtag (``en``).
        """
        if not language:
            return None
        lang = language.replace("_", "-").lower()
        voices = cls.voices(model)
        for v in voices:
            if v.language.lower() == lang:
                return v.id
        primary = lang.split("-")[0]
        for v in voices:
            if v.language.lower().split("-")[0] == primary:
                return v.id
        return None

    @classmethod
    def accepts_voice_path(cls, voice: str, model: str | None = None) -> bool:
        """True when *voice* is a file path/URL this engine can load (a model,
        or reference audio to clone).

        Engines that only know named voices keep the default (``False``).
        """
        return False

    @classmethod
    @abc.abstractmethod
    def sample_rate_for(cls, voice: str, model: str | None = None) -> int:
        """Sample rate (Hz) of the audio *voice* produces, without loading it."""

    @classmethod
    def identify(cls, spec: EngineSpec) -> EngineSpec:
        """*spec* with :attr:`EngineSpec.identity` filled in (called once per book plan).

        Engines whose audio depends on files behind a path (a model folder,
        reference clips) return a fingerprint of them, so chunk keys change
        when the files do.  The default leaves *spec* as it is.
        """
        return spec

    @classmethod
    def runtime_options(cls) -> tuple[tuple[str, Any], ...]:
        """Options of how the engine runs, read on the client (see :attr:`EngineSpec.runtime`).

        Called where a conversion is checked and where its synthesis is
        submitted; what it returns travels to the workers with the spec and
        reaches the constructor as ``runtime=`` (only when not empty).  The
        default is ``()``: the engine takes nothing from the client.

        Raises
        ------
        UsageError
            The options are missing or wrong (e.g. a server engine with no
            endpoint), on one line.
        """
        return ()

    @classmethod
    def prepares_voice(cls, spec: EngineSpec) -> bool:
        """True when :meth:`prepare` computes something costly for *spec*'s voice
        (XTTS speaker conditioning): the graph then runs it once, as its own
        task, before the synthesize tasks."""
        return False

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Extra facts for ``ebook2audio engines`` (e.g. the configured model)."""
        return {}

    # -- synthesis (on a worker) ---------------------------------------------
    @property
    @abc.abstractmethod
    def sample_rate(self) -> int:
        """Sample rate (Hz) of the arrays :meth:`synthesize` returns."""

    @abc.abstractmethod
    def synthesize(
        self, texts: Sequence[str], seeds: Sequence[int] | None = None
    ) -> list[np.ndarray]:
        """Speak each text; return one 1-D ``int16`` mono array per text, in order.

        *seeds* (one per text, derived from the chunk's content key) make the
        random parts of neural models reproducible: the same text and seed
        give the same audio, whatever batch the text is in.  Engines without
        randomness (or without a way to seed it) ignore them.
        """

    def prepare(self, store) -> None:  # noqa: B027 - an optional hook: does nothing here
        """Called by each synthesize task before :meth:`synthesize`, with the
        chunk store (:class:`~ebook2audio_dask.storage.ChunkStore`), for engines
        that keep computed voices there.  Default: nothing."""

    def close(self) -> None:  # noqa: B027 - an optional hook: does nothing here
        """Release the model (called when a worker drops the engine)."""
