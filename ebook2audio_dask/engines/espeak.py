"""eSpeak NG: small, fast formant synthesis in about a hundred languages.

The engine drives the ``libespeak-ng`` shared library shipped by the
``espeakng-loader`` wheel through :mod:`ctypes` (no command-line program or
system package is needed), with that wheel's ``espeak-ng-data``.

The library keeps one global state per process (current voice, parameters,
output callback) and is not thread-safe, so every call into it goes through
one module-level lock; it is initialised once per process, on first use.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import EngineError, one_line
from .base import Engine, VoiceInfo, module_missing

__all__ = ["EspeakEngine", "locked_library"]

_INSTALL_HINT = "espeakng-loader is not installed: pip install 'ebook2audio_dask[espeak]'"

# Values from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PHONEMES = 0x100  # espeakPHONEMES: [[...]] in the text is phoneme mnemonics
_EE_OK = 0
_PARAM_RATE = 1
_PARAM_PITCH = 3
_BUFFER_MS = 100

#: Settings that change the audio: name -> (espeak parameter, lowest, highest).
_SETTINGS: dict[str, tuple[int, int, int]] = {
    "rate": (_PARAM_RATE, 80, 450),  # words per minute
    "pitch": (_PARAM_PITCH, 0, 100),  # base pitch, 50 = normal
}

# int callback(short *wav, int numsamples, espeak_EVENT *events); the events are
# never read, so they are passed as an opaque pointer.
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _EspeakVoiceStruct(ctypes.Structure):
    """``espeak_VOICE`` (only read, from ``espeak_ListVoices``)."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, NUL-terminated code)*, then a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class _Library:
    """The process's one initialised libespeak-ng.  Use only under :data:`_LOCK`."""

    def default_params(self) -> tuple[int, ...]:
        """Every setting at its default, in ``_SETTINGS`` order (what :meth:`select` takes)."""
        return tuple(self.defaults[name] for name in _SETTINGS)

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise EngineError(_INSTALL_HINT) from None
        lib_path, data_path = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as exc:
            raise EngineError(f"espeak-ng library cannot be loaded: {lib_path}: {exc}") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_GetParameter.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.espeak_GetParameter.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoiceStruct))
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,  # text
            ctypes.c_size_t,  # size
            ctypes.c_uint,  # position
            ctypes.c_int,  # position_type
            ctypes.c_uint,  # end_position
            ctypes.c_uint,  # flags
            ctypes.c_void_p,  # unique_identifier
            ctypes.c_void_p,  # user_data
        ]
        lib.espeak_Synth.restype = ctypes.c_int

        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path.encode("utf-8"), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EngineError(f"espeak-ng cannot initialise with its data at {data_path}")
        self.lib = lib
        self.sample_rate = rate
        self.defaults = {
            name: lib.espeak_GetParameter(param, 0) for name, (param, _, _) in _SETTINGS.items()
        }
        self._pieces: list[bytes] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept: C holds only a raw pointer
        lib.espeak_SetSynthCallback(self._callback)
        self.voices = self._list_voices()
        self._current: tuple[str, tuple[int, ...]] | None = None

    def _collect(self, wav, count, _events) -> int:
        """Synthesis callback: keep the samples, continue (0)."""
        if wav and count > 0:
            self._pieces.append(ctypes.string_at(wav, count * 2))
        return 0

    def _list_voices(self) -> dict[str, tuple[str, str]]:
        """Language code -> (voice identifier, voice name), the best voice per code."""
        best: dict[str, tuple[int, str, str]] = {}
        table = self.lib.espeak_ListVoices(None)
        index = 0
        while table[index]:
            entry = table[index].contents
            index += 1
            identifier = (entry.identifier or b"").decode("utf-8", "replace")
            if not identifier or identifier.startswith("mb/"):  # MBROLA voices need extra programs
                continue
            name = (entry.name or b"").decode("utf-8", "replace")
            pointer = entry.languages
            while pointer:
                priority = ctypes.string_at(pointer, 1)[0]
                if priority == 0:
                    break
                code = ctypes.string_at(pointer + 1)
                pointer += len(code) + 2
                key = code.decode("utf-8", "replace").lower()
                if key and (key not in best or priority < best[key][0]):
                    best[key] = (priority, identifier, name)
        return {code: (identifier, name) for code, (_, identifier, name) in sorted(best.items())}

    def select(self, voice: str, params: tuple[int, ...]) -> None:
        """Make *voice* (an espeak voice name) and *params* current.

        Raises
        ------
        EngineError
            If espeak-ng does not know the voice.
        """
        if self._current == (voice, params):
            return
        self._current = None
        if self.lib.espeak_SetVoiceByName(voice.encode("utf-8")) != _EE_OK:
            raise EngineError(
                f"unknown espeak voice {voice!r}: see EspeakEngine.voices() (e.g. 'en-us', 'fr')"
            )
        for (param, _, _), value in zip(_SETTINGS.values(), params):
            self.lib.espeak_SetParameter(param, value, 0)
        self._current = (voice, params)

    def speak(self, text: str) -> np.ndarray:
        """Synthesise *text* with the current voice; int16 samples."""
        data = text.replace("\0", " ").encode("utf-8") + b"\0"
        flags = _CHARS_UTF8 | (_PHONEMES if "[[" in text else 0)
        self._pieces = []
        status = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, flags, None, None)
        pieces, self._pieces = self._pieces, []
        if status != _EE_OK:
            snippet = one_line(text, 40)
            raise EngineError(f"espeak-ng failed to speak {snippet!r} (error {status})")
        return np.frombuffer(b"".join(pieces), dtype=np.int16).copy()


_LOCK = threading.Lock()
_LIBRARY: _Library | None = None


def _library() -> _Library:
    """The initialised library.  Call with :data:`_LOCK` held."""
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = _Library()
    return _LIBRARY


@contextlib.contextmanager
def locked_library() -> Iterator[_Library]:
    """The process's one libespeak-ng, for the ``with`` block only, under its lock.

    For other users of the same library (Kokoro's G2P asks it for phonemes):
    libespeak-ng keeps one global state, so every call must hold the lock.
    The object has ``lib`` (the ctypes library), ``voices``, ``defaults`` and
    ``default_params()`` (every setting at its default, for ``select``).
    """
    with _LOCK:
        yield _library()


def _bcp47(code: str) -> str:
    """espeak language code -> BCP 47 casing (``en-gb-x-rp`` -> ``en-GB-x-rp``)."""
    parts = code.split("-")
    out = [parts[0]]
    private = False
    for part in parts[1:]:
        private = private or part == "x"
        out.append(part.upper() if len(part) == 2 and part.isalpha() and not private else part)
    return "-".join(out)


class EspeakEngine(Engine):
    """eSpeak NG text-to-speech through ctypes.

    Parameters
    ----------
    voice : str
        A language code from :meth:`voices` (``"en-us"``, ``"fr"``, ``"ar"``;
        case-insensitive), optionally with an espeak variant (``"fr+f3"``), or
        any other name espeak-ng accepts (``"gmw/en-US"``).
    settings : mapping, optional
        ``rate`` (words per minute, 80-450, default 175) and ``pitch``
        (0-100, default 50).
    threads : int
        Ignored: eSpeak NG runs on the calling thread, one synthesis per
        process at a time.

    Raises
    ------
    EngineError
        espeakng-loader missing, unknown voice, or an unknown/invalid setting.
    """

    name: ClassVar[str] = "espeak"
    max_chars: ClassVar[int] = 600
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    #: espeak-ng takes its own phoneme mnemonics between ``[[`` and ``]]``.
    phoneme_alphabet: ClassVar[str | None] = "espeak"
    #: Every call into the library holds the module lock, one text at a time.
    thread_safe: ClassVar[bool] = True
    #: Names of the audio settings this engine understands.
    setting_names: ClassVar[tuple[str, ...]] = tuple(sorted(_SETTINGS))

    def __init__(self, voice: str, settings: Mapping[str, Any] | None = None, threads: int = 1):
        super().__init__(voice, settings, threads)
        ok, why = self.availability()
        if not ok:
            raise EngineError(why)
        self._params = self._check_settings(self.settings)
        with _LOCK:
            library = _library()
            self._espeak_voice = self._espeak_name(voice, library)
            library.select(self._espeak_voice, self._resolved_params(library))
            self._sample_rate = library.sample_rate

    # -- description ------------------------------------------------------
    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """Whether ``espeakng-loader`` (library and data) is installed.

        Returns
        -------
        (bool, str)
            ``(True, "")`` or ``(False, reason with the pip command)``.
        """
        return (False, _INSTALL_HINT) if module_missing("espeakng_loader") else (True, "")

    @classmethod
    def voices(cls, model: str | None = None) -> list[VoiceInfo]:
        """One voice per language code espeak-ng speaks (MBROLA voices excluded).

        Returns
        -------
        list of VoiceInfo
            Sorted by id; ``id`` is the espeak language code (``"en-gb"``),
            ``language`` its BCP 47 form (``"en-GB"``).  Empty when
            espeakng-loader is missing.
        """
        if not cls.availability()[0]:
            return []
        with _LOCK:
            table = _library().voices
        return [
            VoiceInfo(code, _bcp47(code), f"{name} ({identifier})")
            for code, (identifier, name) in table.items()
        ]

    @classmethod
    def sample_rate_for(cls, voice: str, model: str | None = None) -> int:
        """Sample rate of espeak-ng's output (the same for every voice).

        Parameters
        ----------
        voice : str
            Ignored.

        Returns
        -------
        int
            22050.
        """
        if not cls.availability()[0]:
            return 22050
        with _LOCK:
            return _library().sample_rate

    # -- helpers -------------------------------------------------------------
    @staticmethod
    def _check_settings(settings: Mapping[str, Any]) -> dict[str, int]:
        unknown = sorted(set(settings) - set(_SETTINGS))
        if unknown:
            raise EngineError(
                f"unknown espeak setting(s) {', '.join(unknown)}: "
                f"supported are {', '.join(sorted(_SETTINGS))}"
            )
        params: dict[str, int] = {}
        for key, value in settings.items():
            if value is None:
                continue
            _, low, high = _SETTINGS[key]
            try:
                number = int(round(float(value)))
            except (TypeError, ValueError):
                raise EngineError(f"espeak setting {key} must be a number, not {value!r}") from None
            if not low <= number <= high:
                raise EngineError(
                    f"espeak setting {key} must be within {low}-{high}, not {value!r}"
                )
            params[key] = number
        return params

    def _resolved_params(self, library: _Library) -> tuple[int, ...]:
        """Every parameter's value (defaults filled in), in ``_SETTINGS`` order."""
        return tuple(self._params.get(name, library.defaults[name]) for name in _SETTINGS)

    @staticmethod
    def _espeak_name(voice: str, library: _Library) -> str:
        """The name to pass to ``espeak_SetVoiceByName`` for *voice*.

        Language codes are mapped to the identifier of their best voice,
        because espeak-ng finds only some codes (``fr``, not ``fr-fr``) by name.
        """
        base, plus, variant = voice.strip().partition("+")
        entry = library.voices.get(base.lower())
        return (entry[0] if entry else base) + plus + variant

    # -- synthesis ----------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """Sample rate (Hz) of the arrays :meth:`synthesize` returns (22050)."""
        return self._sample_rate

    def synthesize(
        self, texts: Sequence[str], seeds: Sequence[int] | None = None
    ) -> list[np.ndarray]:
        """Speak each text.

        Parameters
        ----------
        texts : sequence of str
            Plain texts (no SSML) of at most :attr:`max_chars` characters;
            espeak phoneme mnemonics between ``[[`` and ``]]`` are spoken as
            given (``"[[h@l'oU]] world"``).
        seeds : sequence of int, optional
            Ignored: espeak-ng cannot be seeded.  Its output depends slightly on
            what the process spoke before (the phase of its pitch flutter is
            process-global state); see docs/engines.md.

        Returns
        -------
        list of numpy.ndarray
            One 1-D ``int16`` array per text, in order; empty for a blank text.

        Raises
        ------
        EngineError
            If espeak-ng fails on a text.
        """
        out: list[np.ndarray] = []
        for text in texts:
            if not text or not text.strip():
                out.append(np.zeros(0, dtype=np.int16))
                continue
            # One text per lock hold, so engines in other threads can interleave.
            with _LOCK:
                library = _library()
                library.select(self._espeak_voice, self._resolved_params(library))
                out.append(library.speak(text))
        return out
