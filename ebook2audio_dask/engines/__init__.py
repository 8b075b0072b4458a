"""Speech engines: the registry, per-worker loading and language routing.

Engines are found through the ``ebook2audio_dask.engines`` entry-point group
(the built-in ``piper`` and ``espeak`` register the same way third-party
engines do)::

    [project.entry-points."ebook2audio_dask.engines"]
    myengine = "mypackage.tts:MyEngine"
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections import Counter
from typing import Any

from .. import plugins
from ..errors import Ebook2AudioError, EngineError, UsageError
from ..logs import get_logger
from .base import Engine, EngineSpec, VoiceInfo

__all__ = [
    "ENTRY_POINT_GROUP",
    "LOAD_COUNTS",
    "Engine",
    "EngineSpec",
    "VoiceInfo",
    "engine_info",
    "engine_names",
    "get_engine_class",
    "load_engine",
    "resolve_spec",
    "unload_engines",
    "with_runtime",
]

logger = get_logger(__name__)

ENTRY_POINT_GROUP = "ebook2audio_dask.engines"

# Used when the package is imported from a source tree that was never installed.
_BUILTIN = {
    "piper": "ebook2audio_dask.engines.piper:PiperEngine",
    "espeak": "ebook2audio_dask.engines.espeak:EspeakEngine",
    "coqui": "ebook2audio_dask.engines.coqui:CoquiEngine",
    "kokoro": "ebook2audio_dask.engines.kokoro:KokoroEngine",
    "openai": "ebook2audio_dask.engines.openai:OpenAIEngine",
}


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, str]:
    return plugins.discover(ENTRY_POINT_GROUP, _BUILTIN)


def engine_names() -> list[str]:
    """Names of every registered engine (installed or not)."""
    return sorted(_registry())


def get_engine_class(name: str) -> type[Engine]:
    """The engine class registered as *name*.

    Raises
    ------
    UsageError
        No engine has that name.
    """
    try:
        target = _registry()[name]
    except KeyError:
        raise UsageError(f"unknown engine {name!r} (known: {', '.join(engine_names())})") from None
    return plugins.load(target)


# One engine instance per (spec, threads) per process: a worker loads a model once
# and keeps it for every task it runs.
_LOADED: dict[tuple[EngineSpec, int], Engine] = {}
# The EngineSpec.runtime each engine of _LOADED was made with (not part of the spec's
# equality): a spec arriving with other runtime options (new endpoints) gets a new engine.
_RUNTIMES: dict[tuple[EngineSpec, int], tuple] = {}
_LOAD_LOCK = threading.Lock()
#: How many times this process loaded each (spec, threads): 1 unless unloaded in between.
LOAD_COUNTS: Counter[tuple[EngineSpec, int]] = Counter()


def load_engine(spec: EngineSpec, threads: int = 1) -> Engine:
    """Return this process's engine for *spec*, loading it on first use.

    A worker's threads share the engine (``cluster.slots-per-gpu`` runs
    several synthesize tasks per worker): an engine class that does not
    declare :attr:`Engine.thread_safe` gets its ``synthesize`` and ``prepare``
    put behind one lock per instance.

    Parameters
    ----------
    spec : EngineSpec
        Engine, voice and settings.
    threads : int
        CPU threads the engine may use.
    """
    ident = (spec, int(threads))
    engine = _LOADED.get(ident)
    if engine is not None and _RUNTIMES.get(ident) == spec.runtime:
        return engine
    with _LOAD_LOCK:
        engine = _LOADED.get(ident)
        if engine is not None and _RUNTIMES.get(ident) != spec.runtime:
            engine.close()  # same voice, other runtime options (endpoints): made again
            engine = None
        if engine is None:
            cls = get_engine_class(spec.engine)
            ok, why = cls.availability()
            if not ok:
                raise EngineError(f"engine {spec.engine!r} is not available: {why}")
            logger.info("loading engine %s voice %s (%d threads)", spec.engine, spec.voice, threads)
            extra: dict = {"model": spec.model} if spec.model else {}
            if spec.runtime:
                extra["runtime"] = dict(spec.runtime)
            engine = cls(spec.voice, spec.settings_dict, threads=threads, **extra)
            if not getattr(cls, "thread_safe", False):
                _serialize(engine)
            _LOADED[ident] = engine
            _RUNTIMES[ident] = spec.runtime
            LOAD_COUNTS[ident] += 1
    return engine


def _serialize(engine: Engine) -> None:
    """Make *engine*'s ``synthesize`` and ``prepare`` take turns.

    One reentrant lock per instance.
    """
    lock = threading.RLock()  # an engine's synthesize may call its own prepare
    for name in ("synthesize", "prepare"):
        method = getattr(engine, name)

        @functools.wraps(method)
        def locked(*args, _method=method, **kwargs):
            with lock:
                return _method(*args, **kwargs)

        setattr(engine, name, locked)


def unload_engines() -> None:
    """Close and forget every engine this process loaded (GPU memory included)."""
    with _LOAD_LOCK:
        for engine in _LOADED.values():
            try:
                engine.close()
            except Exception:  # pragma: no cover - best effort on teardown
                logger.exception("closing engine %s failed", engine)
        _LOADED.clear()
        _RUNTIMES.clear()


def with_runtime(spec: EngineSpec) -> EngineSpec:
    """*spec* with its engine's :meth:`~Engine.runtime_options`, read here (on the client).

    Call it where synthesis is submitted: the options (endpoints, an API key
    in a secret) then travel to the workers inside the spec, without
    changing its content key.
    """
    runtime = get_engine_class(spec.engine).runtime_options()
    return dataclasses.replace(spec, runtime=runtime) if runtime else spec


def _available(name: str) -> type[Engine] | None:
    try:
        cls = get_engine_class(name)
    except Exception:  # noqa: BLE001 - an entry point that cannot import is just unavailable
        return None
    ok, _ = cls.availability()
    return cls if ok else None


def resolve_spec(
    language: str | None,
    *,
    engine: str | None = None,
    voice: str | None = None,
    model: str | None = None,
    settings: dict | None = None,
    fallback_language: str = "en",
    routing: list[str] | tuple[str, ...] = ("piper", "espeak"),
) -> tuple[EngineSpec, str, list[str]]:
    """Pick the engine and voice that speak *language*.

    With no engine given, engines are tried in *routing* order and the first
    installed one with a voice for the language wins (a configured Coqui
    model when it speaks the language, the bundled Piper voice for English,
    espeak-ng for the rest).  A language nobody speaks falls back to
    *fallback_language*, with a warning.

    Parameters
    ----------
    language : str or None
        BCP 47 language of the book.
    engine, voice : str, optional
        Force an engine and/or a voice (a voice id, or a file an engine loads).
    model : str, optional
        Model for engines that load one (Coqui); default from their config.
    settings : dict, optional
        Audio settings for the engine.
    fallback_language : str
    routing : sequence of str

    Returns
    -------
    spec : EngineSpec
    language : str
        The language that will be spoken (after any fallback).
    warnings : list of str
    """
    warnings: list[str] = []
    names = [engine] if engine else list(routing)
    classes = []
    for name in names:
        cls = get_engine_class(name) if engine else _available(name)
        if cls is None:
            continue
        if engine:
            ok, why = cls.availability()
            if not ok:
                raise EngineError(f"engine {engine!r} is not available: {why}")
        if cls.uses_model and not (model or cls.default_model()):
            if engine:
                cls.sample_rate_for("", None)  # raises the engine's own "needs a model" error
            continue  # routing skips a model engine with no model configured
        classes.append(cls)
    if not classes:
        raise EngineError(
            "no speech engine is installed: pip install 'ebook2audio_dask[piper,espeak]'"
        )

    def make(cls, found: str, lang: str | None) -> EngineSpec:
        opts = dict(settings or {})
        if cls.uses_model:
            opts.setdefault("language", lang)
            return EngineSpec.make(cls.name, found, opts, model or cls.default_model())
        return EngineSpec.make(cls.name, found, opts)

    if voice:
        for cls in classes:
            cls_model = model if cls.uses_model else None
            known = {v.id for v in cls.voices(cls_model)}
            if voice in known or cls.accepts_voice_path(voice, cls_model):
                lang = language or fallback_language
                return make(cls, voice, lang), lang, warnings
        raise UsageError(
            f"unknown voice {voice!r} for engine(s) {', '.join(c.name for c in classes)}"
        )

    for lang in (language, fallback_language):
        for cls in classes:
            found = cls.voice_for_language(lang, model if cls.uses_model else None)
            if found:
                if lang != language:
                    warnings.append(
                        f"no installed voice speaks language {language!r}; "
                        f"using {cls.name} voice {found!r} ({lang})"
                    )
                return make(cls, found, lang), lang, warnings
    raise EngineError(
        f"no voice for language {language!r} nor the fallback {fallback_language!r} "
        f"in engine(s) {', '.join(c.name for c in classes)}"
    )


def engine_info(name: str, model: str | None = None) -> dict[str, Any]:
    """What ``ebook2audio engines`` and the server's ``/api/engines`` show of engine *name*.

    Never raises for a broken or unavailable engine: ``available`` is False and
    ``why`` says why.  Keys: ``name``, ``available``, ``why``, ``devices``,
    ``max_chars``, ``languages``, ``voices`` (``{"id", "language"}`` each),
    ``sample_rate``, and for an available engine ``seeded``, ``uses_model``,
    ``model`` and what its :meth:`Engine.describe` adds.
    """
    info: dict[str, Any] = {
        "name": name,
        "available": False,
        "why": "",
        "devices": [],
        "max_chars": None,
        "languages": [],
        "voices": [],
        "sample_rate": None,
    }
    try:
        cls = get_engine_class(name)
    except Exception as exc:  # noqa: BLE001 - a broken plugin is listed, not fatal
        info["why"] = f"cannot import: {exc}"
        return info
    ok, why = cls.availability()
    info.update(
        available=ok,
        why=why,
        devices=list(cls.devices),
        max_chars=cls.max_chars,
        seeded=cls.seeded,
        uses_model=cls.uses_model,
    )
    if not ok:
        return info
    try:
        info.update(cls.describe())
        model = model or (cls.default_model() if cls.uses_model else None)
        if cls.uses_model:
            info["model"] = model
        if cls.uses_model and not model:
            info["why"] = f"no model configured (--model or ebook2audio.{name}.model)"
        voices = cls.voices(model)
        info["voices"] = [{"id": v.id, "language": v.language} for v in voices]
        info["languages"] = cls.languages(model)
        if voices or model:
            info["sample_rate"] = cls.sample_rate_for(voices[0].id if voices else "", model)
    except Ebook2AudioError as exc:  # e.g. a configured model that cannot be read
        info.update(available=False, why=str(exc))
    return info
