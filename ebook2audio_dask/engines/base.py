"""The speech-engine interface every engine implements.

An engine turns a *batch* of short texts into 16-bit mono PCM.  Engines are
described on the client by an :class:`EngineSpec` (small, frozen, hashable:
it is part of every chunk's content key) and instantiated on the workers,
once per worker process, by :func:`ebook2audio_dask.engines.load_engine`.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

__all__ = ["Engine", "EngineSpec", "VoiceInfo"]


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
    """

    engine: str
    voice: str
    settings: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def make(cls, engine: str, voice: str, settings: Mapping[str, Any] | None = None) -> "EngineSpec":
        """Build a spec from a settings mapping (sorted so equal specs hash equal)."""
        return cls(engine, voice, tuple(sorted((settings or {}).items())))

    @property
    def settings_dict(self) -> dict[str, Any]:
        return dict(self.settings)

    def token(self) -> str:
        """Canonical JSON text of the spec, used in content keys."""
        return json.dumps(
            {"engine": self.engine, "voice": self.voice, "settings": self.settings_dict},
            sort_keys=True,
            separators=(",", ":"),
        )


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

    def __init__(self, voice: str, settings: Mapping[str, Any] | None = None, threads: int = 1):
        self.voice = voice
        self.settings = dict(settings or {})
        self.threads = max(1, int(threads))

    # -- description (no model loaded) -------------------------------------
    @classmethod
    @abc.abstractmethod
    def availability(cls) -> tuple[bool, str]:
        """``(True, "")`` when the engine can run here, else ``(False, why)``."""

    @classmethod
    @abc.abstractmethod
    def voices(cls) -> list[VoiceInfo]:
        """Voices available without downloading anything."""

    @classmethod
    def languages(cls) -> list[str]:
        """Languages the engine's voices speak."""
        return sorted({v.language for v in cls.voices()})

    @classmethod
    def voice_for_language(cls, language: str | None) -> str | None:
        """The voice to use for *language* (BCP 47), or ``None`` if none speaks it.

        Matches the full tag first (``en-GB``), then the primary subtag (``en``).
        """
        if not language:
            return None
        lang = language.replace("_", "-").lower()
        voices = cls.voices()
        for v in voices:
            if v.language.lower() == lang:
                return v.id
        primary = lang.split("-")[0]
        for v in voices:
            if v.language.lower().split("-")[0] == primary:
                return v.id
        return None

    @classmethod
    def accepts_voice_path(cls, voice: str) -> bool:
        """True when *voice* is a model file path/URL this engine can load.

        Engines that only know named voices keep the default (``False``).
        """
        return False

    @classmethod
    @abc.abstractmethod
    def sample_rate_for(cls, voice: str) -> int:
        """Sample rate (Hz) of the audio *voice* produces, without loading it."""

    # -- synthesis (on a worker) ---------------------------------------------
    @property
    @abc.abstractmethod
    def sample_rate(self) -> int:
        """Sample rate (Hz) of the arrays :meth:`synthesize` returns."""

    @abc.abstractmethod
    def synthesize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Speak each text; return one 1-D ``int16`` mono array per text, in order."""

    def close(self) -> None:
        """Release the model (called when a worker drops the engine)."""
