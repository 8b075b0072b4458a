"""Kokoro-82M: near-XTTS quality from an 82 M-parameter StyleTTS 2 model, on ONNX Runtime or torch.

The model is whatever the user has on disk or in a bucket (never downloaded at
run time), given by ``--model`` or ``ebook2audio.kokoro.model``:

* a **kokoro-onnx model**: a folder (or the ``.onnx`` file itself) holding
  ``*.onnx`` (inputs ``tokens`` int64 ``[1, N+2]``, ``style`` float32 ``[1, 256]``,
  ``speed`` float32 ``[1]``; output 24 kHz audio), its vocabulary in the model's
  ``kokoro_config`` metadata or in a ``config.json`` beside it, and a voices
  file ``voices*.npz`` / ``voices*.bin`` (name → array ``[510, 1, 256]``).  It
  runs on ONNX Runtime: the CPU provider, or CUDA when ``onnxruntime-gpu`` is
  installed and the worker has a GPU.  The export takes a batch of one, so
  ONNX speaks one text per ``session.run``;
* a **torch model**: a folder with ``*.pth`` + ``config.json`` (as
  ``hexgrad/Kokoro-82M``) and a ``voices/`` folder of ``*.pt`` voice tensors.
  It runs on :class:`~ebook2audio_dask.engines.kokoro_torch.TorchKokoro`, one
  padded batch per length bucket (cuda, mps or cpu);
* any of those as an **fsspec URL** (``s3://models/kokoro/``): the files are
  copied once per worker into ``~/.cache/ebook2audio_dask/kokoro-models``.

``ebook2audio.kokoro.voices`` may name another voices file or folder.

Text becomes phonemes here (G2P): with misaki, Kokoro's own G2P, for English
when it is installed with its spaCy model; otherwise with espeak-ng (the
``espeakng-loader`` wheel the ``espeak`` engine uses), whose IPA is mapped to
the model's vocabulary (symbols it does not have are dropped).  Phonemes
written inline as ``[[IPA]]`` (lexicons, PLS, SSML ``<phoneme>``) go to the
model as they are.  A text over 510 phonemes is spoken in pieces, split at
punctuation or spaces.

Voices are named as in Kokoro (``af_heart``: the first letter is the language,
the second the gender) and may be blended: ``"af_heart:0.7+bf_emma:0.3"``
(weights normalised to sum 1; the normalised blend is what the content key
holds).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import threading
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import config as e2a_config
from ..errors import EngineError, UsageError, one_line
from ..logs import get_logger
from ._files import cached_folder, fetch_once, is_remote
from .base import Engine, EngineSpec, VoiceInfo, module_missing

__all__ = ["KokoroEngine", "KokoroFiles", "locate_model", "parse_blend", "phonemize"]

_LOGGER = get_logger(__name__)

SAMPLE_RATE = 24000
#: Phonemes one forward pass takes (the model's context is 512 with the two pads).
MAX_TOKENS = 510
STYLE_DIM = 256

_INSTALL_HINT = (
    "kokoro needs onnxruntime and espeakng-loader: pip install 'ebook2audio_dask[kokoro]'"
)
_FETCH_HINT = (
    "fetch one once, it is never downloaded at run time: kokoro-onnx's kokoro-v1.0.onnx + "
    "voices-v1.0.bin, or hexgrad/Kokoro-82M (docs/engines.md)"
)
_NO_MODEL = (
    "the kokoro engine needs a model: give --model DIR (or set ebook2audio.kokoro.model); "
    + _FETCH_HINT
)
_TORCH_HINT = (
    "kokoro torch models (.pth) need torch and the kokoro package: "
    "pip install torch, then pip install --no-deps kokoro loguru"
)
#: Settings that change the audio.
_SETTINGS = frozenset({"speed", "language"})
_SPEED_RANGE = (0.5, 2.0)
#: Language of a voice, from the first letter of its name (Kokoro's convention).
VOICE_LANGUAGES = {
    "a": "en-US", "b": "en-GB", "e": "es", "f": "fr", "h": "hi",
    "i": "it", "j": "ja", "p": "pt-BR", "z": "zh",
}  # fmt: skip
_GENDERS = {"f": "female", "m": "male"}
#: espeak-ng voices for the languages whose espeak code differs from the BCP 47 tag.
_ESPEAK_CODES = {"en": "en-us", "fr": "fr-fr", "zh": "cmn", "pt": "pt-br"}
#: Voices routing picks first for their language (the best-rated of Kokoro-82M v1.0's).
_PREFERRED = ("af_heart", "af_bella", "bf_emma", "ef_dora", "ff_siwis", "hf_alpha", "if_sara",
              "jf_alpha", "pf_dora", "zf_xiaobei")  # fmt: skip
#: The accent a bare language tag is spoken in (Kokoro's: American English, Brazilian Portuguese).
_DEFAULT_REGIONS = {"en": "en-US", "pt": "pt-BR"}
#: Output trimmed to its speech (level above the peak minus this), keeping a margin:
#: Kokoro leaves ~0.3 s of silence before and ~0.6 s after a text, and the pipeline
#: puts its own pauses between chunks.
_TRIM_DB = 50.0
_TRIM_MARGIN_S = 0.05
#: Blend weights are kept to 1/_BLEND_UNITS in content keys.
_BLEND_UNITS = 10000
_MODEL_SUFFIXES = (".onnx", ".pth")
_VOICE_FILE_SUFFIXES = (".pt", ".npy")


# --------------------------------------------------------------------------- model files
@dataclass(frozen=True)
class KokoroFiles:
    """Local files of a Kokoro model, ready to load.

    Parameters
    ----------
    source : str
        What the user gave (path or URL).
    model : pathlib.Path
        The ``.onnx`` or ``.pth`` file.
    kind : str
        ``"onnx"`` or ``"torch"``.
    config : pathlib.Path or None
        ``config.json`` beside the model (vocabulary, architecture), if any.
    voices : pathlib.Path
        The voices file (``.npz``/``.bin``) or folder of ``.pt`` files.
    """

    source: str
    model: Path
    kind: str
    config: Path | None
    voices: Path


@dataclass(frozen=True)
class _Layout:
    """Where a model's files are (local paths or URLs), found without fetching them."""

    source: str
    folder: str
    remote: bool
    model: str  # file name in folder
    config: str | None  # file name in folder
    voices: str  # path/URL of the voices file or folder
    voices_remote: bool
    stamp: tuple[tuple[str, Any, str], ...]  # (name, size, mtime) of every file that speaks

    @property
    def kind(self) -> str:
        return "onnx" if self.model.endswith(".onnx") else "torch"

    def url(self, name: str) -> str:
        return f"{self.folder}/{name}"


def _missing(what: str) -> str:
    return f"kokoro model not found: {what}; {_FETCH_HINT}"


def _url(fs, path: str, remote: bool) -> str:
    return fs.unstrip_protocol(path) if remote else path


def _entry_stamp(entry: Mapping[str, Any]) -> tuple[str, Any, str]:
    name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
    mtime = entry.get("mtime") or entry.get("LastModified") or entry.get("ETag") or ""
    return name, entry.get("size"), str(mtime)


def _list(fs, path: str, what: str) -> dict[str, dict]:
    try:
        return {str(e["name"]).rstrip("/").rsplit("/", 1)[-1]: e for e in fs.ls(path, detail=True)}
    except FileNotFoundError:
        raise EngineError(_missing(what)) from None
    except Exception as exc:  # noqa: BLE001 - remote file systems' own errors
        raise EngineError(f"kokoro model cannot be listed: {what}: {one_line(exc)}") from None


def _pick_model(entries: Mapping[str, dict], where: str) -> str:
    for suffix in _MODEL_SUFFIXES:
        found = sorted(
            n for n, e in entries.items() if n.endswith(suffix) and e.get("type") != "directory"
        )
        if len(found) == 1:
            return found[0]
        if found:
            raise EngineError(
                f"kokoro model: several {suffix} files in {where} ({', '.join(found[:4])}): "
                f"give the one to use, e.g. --model {where.rstrip('/')}/{found[0]}"
            )
    raise EngineError(f"kokoro model: no .onnx or .pth model in {where}; {_FETCH_HINT}")


def _voices_location(
    fs, folder: str, entries: Mapping[str, dict], remote: bool
) -> tuple[str, bool, list]:
    """The voices file/folder: ``ebook2audio.kokoro.voices``, else found beside the model."""
    import fsspec

    configured = e2a_config.get("kokoro.voices")
    if configured:
        vremote = is_remote(str(configured), "kokoro voices")
        vfs, vpath = fsspec.core.url_to_fs(str(configured))
        try:
            info = vfs.info(vpath)
        except FileNotFoundError:
            raise EngineError(
                f"kokoro voices not found: {configured} (ebook2audio.kokoro.voices)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - remote file systems' own errors
            raise EngineError(
                f"kokoro voices cannot be read: {configured}: {one_line(exc)}"
            ) from None
        stamps = [_entry_stamp(info)]
        if info.get("type") == "directory":
            stamps += [_entry_stamp(e) for e in _list(vfs, vpath, str(configured)).values()]
        return str(configured), vremote, stamps
    files = sorted(
        n for n, e in entries.items()
        if n.startswith("voices") and n.endswith((".npz", ".bin")) and e.get("type") != "directory"
    )  # fmt: skip
    if files:
        return _url(fs, f"{folder}/{files[0]}", remote), remote, [_entry_stamp(entries[files[0]])]
    if "voices" in entries and entries["voices"].get("type") == "directory":
        inner = _list(fs, f"{folder}/voices", f"{folder}/voices")
        stamps = [_entry_stamp(e) for n, e in sorted(inner.items()) if n.endswith(".pt")]
        if stamps:
            return _url(fs, f"{folder}/voices", remote), remote, stamps
    raise EngineError(
        f"kokoro voices not found beside the model in {_url(fs, folder, remote)}: "
        "expected voices*.npz, "
        "voices*.bin or a voices/ folder of .pt files (or set ebook2audio.kokoro.voices)"
    )


def _layout(model: str) -> _Layout:
    """Find a model's files (nothing is fetched)."""
    import fsspec

    remote = is_remote(model, "kokoro model")
    fs, path = fsspec.core.url_to_fs(model)
    path = path.rstrip("/") or "/"
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise EngineError(_missing(model)) from None
    except Exception as exc:  # noqa: BLE001 - remote file systems' own errors
        raise EngineError(f"kokoro model cannot be read: {model}: {one_line(exc)}") from None
    if info.get("type") == "directory":
        folder, chosen = path, None
    else:
        folder, _, chosen = path.rpartition("/")
        if not chosen.endswith(_MODEL_SUFFIXES):
            raise EngineError(
                f"kokoro model: {model} is not a .onnx or .pth model file nor a folder"
            )
    entries = _list(fs, folder, model)
    chosen = chosen or _pick_model(entries, _url(fs, folder, remote))
    config = "config.json" if "config.json" in entries else None
    if chosen.endswith(".pth") and config is None:
        where = _url(fs, folder, remote)
        raise EngineError(
            f"kokoro model config not found: {where}/config.json (torch models need it)"
        )
    voices, voices_remote, voice_stamps = _voices_location(fs, folder, entries, remote)
    stamp = [_entry_stamp(entries[chosen])] + voice_stamps
    if config:
        stamp.insert(1, _entry_stamp(entries[config]))
    return _Layout(
        model, _url(fs, folder, remote), remote, chosen, config, voices, voices_remote, tuple(stamp)
    )


def _fetch(folder: Path, sources: Sequence[tuple[str, str, Any]], what: str) -> None:
    """Copy ``(url, name, size)`` into *folder* once (again when the cached size differs)."""
    for _, name, size in sources:
        local = folder / name
        if local.is_file() and size is not None and local.stat().st_size != int(size):
            local.unlink()
    fetch_once(folder, [(url, name) for url, name, _ in sources], what=what)


def _local_voices(layout: _Layout) -> Path:
    """The voices file/folder on the local disk (fetched once when remote)."""
    import fsspec

    if not layout.voices_remote:
        return Path(fsspec.core.url_to_fs(layout.voices)[1])
    fs, path = fsspec.core.url_to_fs(layout.voices)
    folder = cached_folder("kokoro-models", layout.voices)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if fs.isdir(path):
        entries = _list(fs, path, layout.voices)
        pts = [
            (fs.unstrip_protocol(e["name"]), n, e.get("size"))
            for n, e in sorted(entries.items())
            if n.endswith(".pt")
        ]
        _fetch(folder / name, pts, "kokoro voice file")
        return folder / name
    _fetch(folder, [(layout.voices, name, fs.info(path).get("size"))], "kokoro voices file")
    return folder / name


def locate_model(model: str) -> KokoroFiles:
    """Find (and fetch once, for a remote model) the files of *model*.

    Parameters
    ----------
    model : str
        Folder, ``.onnx``/``.pth`` file, or an fsspec URL of either.

    Returns
    -------
    KokoroFiles

    Raises
    ------
    EngineError
        Nothing loadable there (one line naming the path and how to fetch a model).
    """
    import fsspec

    layout = _layout(model)
    if layout.remote:
        fs, folder_path = fsspec.core.url_to_fs(layout.folder)
        entries = _list(fs, folder_path, layout.folder)
        names = [layout.model] + ([layout.config] if layout.config else [])
        local_folder = cached_folder("kokoro-models", layout.folder)
        sources = [(layout.url(n), n, entries[n].get("size")) for n in names]
        _fetch(local_folder, sources, "kokoro model file")
    else:
        local_folder = Path(layout.folder)
    config = local_folder / layout.config if layout.config else None
    return KokoroFiles(
        model, local_folder / layout.model, layout.kind, config, _local_voices(layout)
    )


def _read_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineError(f"kokoro model config unreadable: {path}: {one_line(exc)}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("vocab"), dict):
        raise EngineError(f"kokoro model config unreadable: {path}: no 'vocab' mapping")
    return cfg


# --------------------------------------------------------------------------- voices
def _voice_names(voices: Path) -> list[str]:
    """Voice names in a voices file (``.npz``/``.bin``) or folder of ``.pt`` files."""
    if voices.is_dir():
        return sorted(p.stem for p in voices.glob("*.pt"))
    try:
        with np.load(voices) as archive:
            return sorted(archive.files)
    except Exception as exc:  # noqa: BLE001 - not a zip, or a pickled array numpy refuses
        raise EngineError(f"kokoro voices file unreadable: {voices}: {one_line(exc)}") from None


def _as_pack(array: Any, where: str) -> np.ndarray:
    pack = np.asarray(array, dtype=np.float32)
    if pack.ndim < 1 or pack.shape[-1] != STYLE_DIM or pack.size < STYLE_DIM:
        raise EngineError(
            f"kokoro voice {where} is not a voice pack "
            f"(shape {tuple(pack.shape)}, expected [N, 1, 256])"
        )
    return pack.reshape(-1, STYLE_DIM)


def _load_pt(path: Path, where: str) -> np.ndarray:
    if module_missing("torch"):
        raise EngineError(
            f"kokoro voice {where} is a torch .pt file: pip install torch, or use a voices .npz"
        )
    import torch

    try:
        tensor = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises its own types for bad files
        raise EngineError(f"kokoro voice file unreadable: {path}: {one_line(exc)}") from None
    return _as_pack(tensor.float().numpy() if hasattr(tensor, "numpy") else tensor, where)


def _load_voice(name: str, voices: Path) -> np.ndarray:
    """One voice pack ``[rows, 256]``: a name in *voices*, or a ``.pt``/``.npy`` path/URL."""
    if name.endswith(_VOICE_FILE_SUFFIXES) and (
        "/" in name or os.sep in name or os.path.exists(name)
    ):
        local = _local_voice_file(name)
        if name.endswith(".npy"):
            try:
                return _as_pack(np.load(local, allow_pickle=False), name)
            except ValueError as exc:
                raise EngineError(
                    f"kokoro voice file unreadable: {name}: {one_line(exc)}"
                ) from None
        return _load_pt(local, name)
    if voices.is_dir():
        path = voices / f"{name}.pt"
        if not path.is_file():
            raise EngineError(f"kokoro voice {name!r} not found in {voices}")
        return _load_pt(path, name)
    with np.load(voices) as archive:
        if name not in archive.files:
            known = ", ".join(sorted(archive.files)[:8])
            raise EngineError(f"kokoro voice {name!r} not in {voices} (voices: {known})")
        return _as_pack(archive[name], name)


def _local_voice_file(url: str) -> Path:
    import fsspec

    if not is_remote(url, "kokoro voice"):
        path = Path(fsspec.core.url_to_fs(url)[1])
        if not path.is_file():
            raise EngineError(f"kokoro voice file not found: {url}")
        return path
    name = url.rstrip("/").rsplit("/", 1)[-1]
    folder = cached_folder("kokoro-models", url)
    fetch_once(folder, [(url, name)], what="kokoro voice file")
    return folder / name


def parse_blend(voice: str) -> list[tuple[str, float]]:
    """Parse a voice blend, weights normalised.

    ``"af_heart:0.7+bf_emma:0.3"`` → ``[("af_heart", 0.7), ("bf_emma", 0.3)]``.
    A part without a weight weighs 1; the same voice named twice adds up; parts
    are sorted by name, so the same blend written in another order is the same.

    Raises
    ------
    UsageError
        An empty part, or a weight that is not a positive number.
    """
    weights: dict[str, float] = {}
    for part in voice.split("+"):
        part = part.strip()
        name, sep, raw = part.rpartition(":")
        weight = 1.0
        if sep and not raw.startswith("//"):
            try:
                weight = float(raw)
            except ValueError:
                name = part  # a colon that is part of the name (a URL...)
        else:
            name = part
        name = name.strip()
        if not name:
            raise UsageError(f"kokoro voice blend {voice!r} has an empty part")
        if not (weight > 0 and np.isfinite(weight)):
            raise UsageError(
                f"kokoro voice blend {voice!r}: weights must be positive numbers, not {raw!r}"
            )
        weights[name] = weights.get(name, 0.0) + weight
    total = sum(weights.values())
    return [(name, weights[name] / total) for name in sorted(weights)]


def canonical_voice(voice: str) -> str:
    """The normalised spelling of a voice or blend (what content keys hold).

    Weights are kept to 1/10000 (largest remainders, so they still sum to 1 and
    the spelling of a canonical blend is itself); a part whose weight rounds to
    nothing is left out.
    """
    blend = parse_blend(voice)
    exact = [weight * _BLEND_UNITS for _, weight in blend]
    units = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (units[i] - exact[i], i))
    for i in by_remainder[: _BLEND_UNITS - sum(units)]:
        units[i] += 1
    parts = [(name, n) for (name, _), n in zip(blend, units) if n]
    if len(parts) == 1:
        return parts[0][0]
    return "+".join(f"{name}:{n / _BLEND_UNITS:g}" for name, n in parts)


def voice_language(name: str) -> str:
    """BCP 47 language of a Kokoro voice name from its first letter (``"und"`` if unknown)."""
    stem = Path(name).stem if name.endswith(_VOICE_FILE_SUFFIXES) else name
    if len(stem) < 3 or stem[2] != "_":
        return "und"
    return VOICE_LANGUAGES.get(stem[:1].lower(), "und")


# --------------------------------------------------------------------------- G2P
_PUNCT = ';:,.!?¡¿—…"«»“”()'
_PUNCT_RUN = re.compile(r"(\s*[" + re.escape(_PUNCT) + r"]+\s*)")
_PHONEME_MARKUP = re.compile(r"\[\[(.*?)\]\]", re.S)
_LANG_FLAG = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)*\)")
_TEXT_TO_PHONEMES_IPA = 0x02  # espeakPHONEMES_IPA
_CHARS_UTF8 = 1


def _espeak_phonemes(text: str, voice: str) -> str:
    """IPA of *text* from espeak-ng (``espeak_TextToPhonemes``), one clause at a time."""
    from . import espeak

    data = ctypes.create_string_buffer(text.replace("\0", " ").encode("utf-8"))
    pointer = ctypes.c_void_p(ctypes.addressof(data))
    clauses = []
    with espeak.locked_library() as library:
        lib = library.lib
        lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        library.select(voice, library.default_params())
        while pointer.value:
            out = lib.espeak_TextToPhonemes(
                ctypes.byref(pointer), _CHARS_UTF8, _TEXT_TO_PHONEMES_IPA
            )
            if out:
                clauses.append(out.decode("utf-8", "replace"))
    return _LANG_FLAG.sub("", " ".join(c.strip() for c in clauses if c.strip()))


def _espeak_voice(language: str) -> str:
    """The espeak-ng voice that phonemises *language* (BCP 47)."""
    from . import espeak

    tag = language.replace("_", "-").lower()
    primary = tag.split("-")[0]
    with espeak.locked_library() as library:
        table = library.voices
    for code in (_ESPEAK_CODES.get(tag, ""), tag, _ESPEAK_CODES.get(primary, ""), primary):
        if code and code in table:
            return table[code][0]
    raise EngineError(
        f"kokoro: espeak-ng cannot phonemise language {language!r} (no espeak-ng voice for it)"
    )


def _english_fixes(phonemes: str, american: bool) -> str:
    """espeak-ng's English IPA in the symbols Kokoro was trained on (as kokoro.js does)."""
    ps = phonemes.replace("ʲ", "j").replace("r", "ɹ").replace("x", "k").replace("ɬ", "l")
    ps = re.sub(r"(?<=[a-zɹː])(?=hˈʌndɹɪd)", " ", ps)
    ps = re.sub(r" z(?=[;:,.!?¡¿—…\"«»“” ]*$)", "z", ps)
    if american:
        ps = re.sub(r"(?<=nˈaɪn)ti(?!ː)", "di", ps)
    return ps


def _misaki_ready() -> bool:
    """misaki's English G2P and the spaCy model it needs are installed (it would download it)."""
    return not any(module_missing(name) for name in ("misaki", "spacy", "en_core_web_sm"))


def g2p_backend(language: str) -> str:
    """``"misaki"`` or ``"espeak-ng"``: what phonemises *language* here.

    See ``ebook2audio.kokoro.g2p``.
    """
    wanted = str(e2a_config.get("kokoro.g2p")).lower()
    english = language.lower().split("-")[0] == "en"
    if wanted not in ("auto", "misaki", "espeak"):
        raise EngineError(f"kokoro g2p {wanted!r} unknown: use auto, misaki or espeak")
    if wanted == "misaki":
        if not english:
            raise EngineError(f"kokoro: misaki G2P is used for English only, not {language!r}")
        if not _misaki_ready():
            raise EngineError(
                "kokoro: g2p misaki asked for but misaki[en] or spaCy's en_core_web_sm "
                "is not installed"
            )
        return "misaki"
    return "misaki" if wanted == "auto" and english and _misaki_ready() else "espeak-ng"


class _G2P:
    """Text (with ``[[IPA]]`` markup) → token ids of one language, in pieces of at most 510."""

    def __init__(self, language: str, vocab: Mapping[str, int]):
        self.language = language
        self.vocab = dict(vocab)
        self.backend = g2p_backend(language)
        self.american = language.lower() != "en-gb"
        self.english = language.lower().split("-")[0] == "en"
        self._lock = threading.Lock()
        self._misaki: Callable[[str], str] | None = None
        if self.backend == "misaki":
            self._misaki = self._load_misaki()
        else:
            self._espeak = _espeak_voice(language)

    def _load_misaki(self) -> Callable[[str], str]:
        try:
            import espeakng_loader
            from misaki import en, espeak
            from phonemizer.backend.espeak.wrapper import EspeakWrapper

            EspeakWrapper.set_library(espeakng_loader.get_library_path())
            EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
            british = not self.american
            fallback = espeak.EspeakFallback(british=british)
            g2p = en.G2P(trf=False, british=british, fallback=fallback)
        except Exception as exc:  # noqa: BLE001 - misaki, spaCy, phonemizer: their own types
            raise EngineError(
                f"kokoro: misaki G2P cannot load: {one_line(exc)} "
                "(set ebook2audio.kokoro.g2p: espeak)"
            ) from None
        return lambda text: g2p(text)[0]

    def _text(self, text: str) -> str:
        """Phonemes of plain text (no markup), punctuation kept."""
        if not text.strip():
            return " " if text else ""
        if self._misaki is not None:
            with self._lock:
                return self._misaki(text)
        out = []
        for i, piece in enumerate(_PUNCT_RUN.split(text)):
            if i % 2:  # punctuation, with the spaces around it
                out.append(piece)
            elif piece.strip():
                phonemes = _espeak_phonemes(piece, self._espeak)
                out.append(_english_fixes(phonemes, self.american) if self.english else phonemes)
        return "".join(out)

    def phonemes(self, text: str) -> str:
        """The phonemes of *text* in the model's vocabulary (unknown symbols dropped)."""
        parts = []
        for i, piece in enumerate(_PHONEME_MARKUP.split(text)):
            if i % 2:
                ipa = piece.replace("g", "ɡ")
                parts.append(f" {_english_fixes(ipa, self.american) if self.english else ipa} ")
            else:
                parts.append(self._text(piece))
        return re.sub(r"\s+", " ", self._in_vocab("".join(parts))).strip()

    def _in_vocab(self, phonemes: str) -> str:
        """*phonemes* in the vocabulary's symbols: a symbol it lacks is tried decomposed
        (``ẽ`` → ``e`` + combining tilde), else dropped; ``ç`` stays whole."""
        out = []
        for ch in phonemes:
            if ch in self.vocab or ch.isspace():
                out.append(ch)
            else:
                out.extend(p for p in unicodedata.normalize("NFD", ch) if p in self.vocab)
        return "".join(out)

    def tokens(self, text: str) -> list[list[int]]:
        """Token ids of *text*, in pieces of at most :data:`MAX_TOKENS`.

        See :func:`split_phonemes`.
        """
        phonemes = self.phonemes(text)
        return [[self.vocab[ch] for ch in piece] for piece in split_phonemes(phonemes)]


def split_phonemes(phonemes: str, limit: int = MAX_TOKENS) -> list[str]:
    """Cut *phonemes* into pieces of at most *limit* symbols: after a sentence end,
    else a clause mark, else a space, else hard."""
    pieces = []
    rest = phonemes.strip()
    while len(rest) > limit:
        window = rest[: limit + 1]
        cut = -1
        for marks in (".!?", ";:,—…", " "):
            cut = max(window.rfind(m) for m in marks)
            if cut > 0:
                break
        cut = cut + 1 if cut > 0 else limit
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return [p for p in pieces if p]


def phonemize(text: str, language: str, vocab: Mapping[str, int]) -> str:
    """The phonemes Kokoro speaks for *text* in *language* (``[[IPA]]`` markup kept as given).

    Parameters
    ----------
    text : str
    language : str
        BCP 47 tag (``en-US``, ``fr``...).
    vocab : mapping
        The model's symbol → id vocabulary (``config.json``'s ``vocab``).
    """
    return _G2P(language, vocab).phonemes(text)


# --------------------------------------------------------------------------- runtimes
def _gpu_visible() -> bool:
    """Whether this worker sees a GPU (its ``CUDA_VISIBLE_DEVICES``, else the driver's tools)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return visible.strip() not in ("", "-1", "none", "NoDevFiles")
    return shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0")


class OnnxKokoro:
    """A kokoro-onnx export on ONNX Runtime; the same calls as ``TorchKokoro``.

    Parameters
    ----------
    model_path : str
        The ``.onnx`` file.
    device : str
        ``"auto"`` (CUDA when ONNX Runtime offers it and the worker has a GPU),
        ``"cpu"`` or ``"cuda"``.
    threads : int
        ONNX Runtime intra-op threads (inter-op: 1).
    """

    def __init__(self, model_path: str, device: str = "auto", threads: int = 1):
        import onnxruntime

        available = onnxruntime.get_available_providers()
        gpu = "CUDAExecutionProvider" in available and _gpu_visible()
        if device == "cuda" and not gpu:
            raise EngineError(
                "kokoro: device 'cuda' asked for but ONNX Runtime offers no "
                "CUDAExecutionProvider here or the worker sees no GPU "
                "(pip install onnxruntime-gpu)"
            )
        if device not in ("auto", "cpu", "cuda"):
            raise EngineError(f"kokoro ONNX models run on auto, cpu or cuda, not {device!r}")
        self.device = "cuda" if gpu and device != "cpu" else "cpu"
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device == "cuda":
            providers.insert(0, ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}))
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(
                model_path, sess_options=opts, providers=providers
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises its own (non-OSError) types
            raise EngineError(f"kokoro model unreadable: {model_path}: {one_line(exc)}") from None
        types = {
            "tensor(float)": np.float32,
            "tensor(float16)": np.float16,
            "tensor(int32)": np.int32,
            "tensor(int64)": np.int64,
            "tensor(double)": np.float64,
        }
        self._dtypes = {i.name: types.get(i.type, np.float32) for i in self.session.get_inputs()}
        self._tokens = "input_ids" if "input_ids" in self._dtypes else "tokens"
        if not {self._tokens, "style", "speed"} <= set(self._dtypes):
            raise EngineError(
                f"kokoro model {model_path} is not a kokoro-onnx export "
                f"(inputs {', '.join(self._dtypes)}; expected tokens, style, speed)"
            )

    def vocab(self) -> dict[str, int] | None:
        """The vocabulary in the model's ``kokoro_config`` metadata, if it has one."""
        raw = self.session.get_modelmeta().custom_metadata_map.get("kokoro_config")
        try:
            vocab = json.loads(raw)["vocab"] if raw else None
        except (ValueError, KeyError, TypeError):
            return None
        return vocab if isinstance(vocab, dict) else None

    def speak(
        self, tokens: list[list[int]], styles: list[np.ndarray], speed: float
    ) -> list[np.ndarray]:
        """Speak each token list with its style row.

        One ``session.run`` per text: the kokoro-onnx export takes a batch of one.
        """
        speed_value = speed if np.dtype(self._dtypes["speed"]).kind == "f" else max(1, round(speed))
        out = []
        for ids, style in zip(tokens, styles):
            feeds = {
                self._tokens: np.array([[0, *ids, 0]], dtype=self._dtypes[self._tokens]),
                "style": np.asarray(style, dtype=self._dtypes["style"]).reshape(1, STYLE_DIM),
                "speed": np.array([speed_value], dtype=self._dtypes["speed"]),
            }
            audio = self.session.run(None, feeds)[0]
            out.append(np.asarray(audio, dtype=np.float32).reshape(-1))
        return out

    def close(self) -> None:
        """Drop the session."""
        self.session = None


# --------------------------------------------------------------------------- the engine
@functools.lru_cache(maxsize=16)
def _listed_voices(model: str, voices_setting: str | None) -> tuple[str, ...]:
    """Voice names of a model's voices file.

    Cached per process; fetches the voices, not the model.
    """
    return tuple(_voice_names(_local_voices(_layout(model))))


class KokoroEngine(Engine):
    """Kokoro-82M (ONNX Runtime or torch).

    Parameters
    ----------
    voice : str
        A voice of the model's voices file (``"af_heart"``), a ``.pt``/``.npy``
        voice file, or a blend ``"af_heart:0.7+bf_emma:0.3"``.
    settings : mapping, optional
        ``speed`` (0.5-2.0, default 1.0) and ``language`` (BCP 47, set from
        the book by routing: the G2P language).
    threads : int
        ONNX Runtime intra-op threads, or torch CPU threads.
    model : str, optional
        The model (see the module docs); default ``ebook2audio.kokoro.model``.
    device : str, optional
        ``"auto"``, ``"cpu"``, ``"cuda"`` (``"mps"``: torch only); default
        ``ebook2audio.kokoro.device``.

    Raises
    ------
    EngineError
        onnxruntime/espeakng-loader missing, no or bad model, unknown voice or setting.
    """

    name: ClassVar[str] = "kokoro"
    max_chars: ClassVar[int] = 300
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    uses_model: ClassVar[bool] = True
    #: Lexicon and SSML phonemes reach the model as IPA between ``[[`` and ``]]``.
    phoneme_alphabet: ClassVar[str | None] = "ipa"
    #: One instance may speak in several threads at once (``--slots-per-gpu``): ONNX
    #: Runtime sessions and TorchKokoro.speak run concurrently, espeak-ng and misaki
    #: G2P are called under locks.
    thread_safe: ClassVar[bool] = True
    setting_names: ClassVar[tuple[str, ...]] = tuple(sorted(_SETTINGS))

    def __init__(
        self,
        voice: str,
        settings: Mapping[str, Any] | None = None,
        threads: int = 1,
        *,
        model: str | None = None,
        device: str | None = None,
    ):
        super().__init__(voice, settings, threads)
        ok, why = self.availability()
        if not ok:
            raise EngineError(why)
        self.speed = self._check_settings(self.settings)
        self.model_source = model or self.default_model()
        if not self.model_source:
            raise EngineError(_NO_MODEL)
        self.files = locate_model(self.model_source)
        wanted_device = str(device or e2a_config.get("kokoro.device")).lower()
        self._config = _read_config(self.files.config) if self.files.config else None
        if self.files.kind == "onnx":
            self.runtime: Any = OnnxKokoro(str(self.files.model), wanted_device, self.threads)
            vocab = self.runtime.vocab() or (self._config or {}).get("vocab")
            if not vocab:
                raise EngineError(
                    f"kokoro model vocab not found: {self.files.model} has no kokoro_config "
                    "metadata and no config.json beside it "
                    "(put hexgrad/Kokoro-82M's config.json there)"
                )
        else:
            self.runtime = self._torch_runtime(wanted_device)
            vocab = self._config["vocab"]
        self.device = str(getattr(self.runtime, "device", wanted_device))
        self.batch_size = self._pick_batch_size(e2a_config.get("kokoro.batch-size"))
        self.blend = parse_blend(voice)
        self._style = self._blend_style()
        self.language = self._g2p_language()
        self._g2p = _G2P(self.language, vocab)

    # -- description ---------------------------------------------------------
    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """Whether onnxruntime and espeakng-loader can be imported here (nothing is imported)."""
        if module_missing("onnxruntime") or module_missing("espeakng_loader"):
            return False, _INSTALL_HINT
        return True, ""

    @classmethod
    def default_model(cls) -> str | None:
        """``ebook2audio.kokoro.model`` from the dask config."""
        return e2a_config.get("kokoro.model") or None

    @classmethod
    def voices(cls, model: str | None = None) -> list[VoiceInfo]:
        """The voices of the model's voices file (empty without a model).

        Returns
        -------
        list of VoiceInfo
            ``id`` the voice name, ``language`` from its first letter
            (``a`` = en-US, ``b`` = en-GB, ``e`` = es, ``f`` = fr, ``h`` = hi,
            ``i`` = it, ``j`` = ja, ``p`` = pt-BR, ``z`` = zh).
        """
        model = model or cls.default_model()
        if not model:
            return []
        names = _listed_voices(model, e2a_config.get("kokoro.voices"))
        out = []
        for name in names:
            gender = _GENDERS.get(name[1:2], "") if len(name) > 2 else ""
            what = f"kokoro voice, {gender}" if gender else "kokoro voice"
            out.append(VoiceInfo(name, voice_language(name), what))
        return out

    @classmethod
    def voice_for_language(cls, language: str | None, model: str | None = None) -> str | None:
        """A voice of the model for *language* (full tag first, then the primary subtag),
        the best-rated one when the model has it (``af_heart`` for English...).

        A model whose files cannot be read has no voice here (routing goes on to
        the next engine, with a warning); ``--engine kokoro`` reports the error.
        """
        if not language or not (model or cls.default_model()):
            return None
        try:
            voices = cls.voices(model)
        except EngineError as exc:
            _LOGGER.warning("kokoro skipped by routing: %s", exc)
            return None
        wanted = _DEFAULT_REGIONS.get(language.lower(), language).replace("_", "-").lower()
        for match in (
            lambda v: v.language.lower() == wanted,
            lambda v: v.language.lower().split("-")[0] == wanted.split("-")[0],
        ):
            found = [v.id for v in voices if match(v)]
            if found:
                rank = {name: i for i, name in enumerate(_PREFERRED)}
                return min(found, key=lambda n: (rank.get(n, len(rank)), n))
        return None

    @classmethod
    def accepts_voice_path(cls, voice: str, model: str | None = None) -> bool:
        """True for a blend of known voices, or a ``.pt``/``.npy`` voice file (path or URL)."""
        blend = parse_blend(voice)
        known = {v.id for v in cls.voices(model)}
        return all(name in known or name.endswith(_VOICE_FILE_SUFFIXES) for name, _ in blend)

    @classmethod
    def sample_rate_for(cls, voice: str, model: str | None = None) -> int:
        """24000 (every Kokoro-82M voice).

        Raises
        ------
        EngineError
            No model given nor configured (the message says how to fetch one).
        """
        if not (model or cls.default_model()):
            raise EngineError(_NO_MODEL)
        return SAMPLE_RATE

    @classmethod
    def identify(cls, spec: EngineSpec) -> EngineSpec:
        """Canonical voice and settings, and a fingerprint of the model, voices and G2P.

        The fingerprint holds the names, sizes and modification times of the
        model, its ``config.json`` and the voices file (or ``.pt`` voices), and
        which G2P phonemises the language, so chunk keys change when any of
        them does.
        """
        model = spec.model or cls.default_model() or ""
        if not model:
            raise EngineError(_NO_MODEL)
        if "://" not in model:
            model = os.path.abspath(os.path.expanduser(model))
        settings = dict(spec.settings)
        speed = cls._check_settings(settings)
        if "speed" in settings:
            settings["speed"] = speed
        voice = canonical_voice(spec.voice)
        layout = _layout(model)
        digest = hashlib.sha256(json.dumps(layout.stamp, default=str).encode())
        for name, _ in parse_blend(voice):
            if name.endswith(_VOICE_FILE_SUFFIXES):
                digest.update(hashlib.sha256(_local_voice_file(name).read_bytes()).digest())
        language = cls._language_for(settings.get("language"), parse_blend(voice))
        digest.update(f"g2p={g2p_backend(language)}:{language}".encode())
        return dataclasses.replace(
            spec, voice=voice, settings=tuple(sorted(settings.items())), model=model,
            identity=digest.hexdigest()[:16],
        )  # fmt: skip

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The configured model, G2P for English, and ONNX Runtime's providers."""
        info: dict[str, Any] = {"model": cls.default_model(), "g2p_english": g2p_backend("en-US")}
        with contextlib.suppress(Exception):
            import onnxruntime

            info["onnx_providers"] = onnxruntime.get_available_providers()
        return info

    # -- helpers --------------------------------------------------------------
    @staticmethod
    def _check_settings(settings: Mapping[str, Any]) -> float:
        """Refuse unknown settings; the speed (default 1.0)."""
        unknown = sorted(set(settings) - _SETTINGS)
        if unknown:
            raise EngineError(
                f"unknown kokoro setting(s) {', '.join(unknown)}: "
                f"supported are {', '.join(sorted(_SETTINGS))}"
            )
        value = settings.get("speed")
        if value is None:
            return 1.0
        try:
            speed = float(value)
        except (TypeError, ValueError):
            raise EngineError(f"kokoro setting speed must be a number, not {value!r}") from None
        low, high = _SPEED_RANGE
        if not low <= speed <= high:
            raise EngineError(f"kokoro setting speed must be within {low}-{high}, not {value!r}")
        return speed

    @staticmethod
    def _language_for(book_language: str | None, blend: Sequence[tuple[str, float]]) -> str:
        """The G2P language: the book's.

        In the (heaviest) voice's accent when they share a language.
        """
        main = max(blend, key=lambda item: item[1])[0] if blend else ""
        voice_lang = voice_language(main)
        book = str(book_language or "").replace("_", "-")
        if not book or book.lower() == "und":
            return voice_lang if voice_lang != "und" else "en-US"
        if voice_lang != "und" and voice_lang.split("-")[0].lower() == book.split("-")[0].lower():
            return voice_lang
        return _DEFAULT_REGIONS.get(book.lower(), book)

    def _g2p_language(self) -> str:
        return self._language_for(self.settings.get("language"), self.blend)

    def _torch_runtime(self, device: str):
        try:
            from .kokoro_torch import TorchKokoro
        except ImportError:
            raise EngineError(_TORCH_HINT) from None
        try:
            return TorchKokoro.shared(  # one copy per process for every voice and blend
                str(self.files.model), self._config, device=device, threads=self.threads
            )
        except EngineError:
            raise
        except ImportError:
            raise EngineError(_TORCH_HINT) from None
        except Exception as exc:  # noqa: BLE001 - torch and kokoro raise their own types
            message = one_line(exc)
            raise EngineError(f"kokoro model unreadable: {self.files.model}: {message}") from None

    def _pick_batch_size(self, wanted: Any) -> int:
        """Texts per :meth:`synthesize` call: ``auto`` is the torch backend's own choice, else 8."""
        if str(wanted).lower() == "auto":
            return int(getattr(self.runtime, "batch_size", 8)) if self.files.kind == "torch" else 8
        try:
            return max(1, int(wanted))
        except (TypeError, ValueError):
            raise EngineError(f"kokoro batch-size {wanted!r} is not a number nor 'auto'") from None

    def _blend_style(self) -> np.ndarray:
        """The weighted sum of the blend's voice packs, ``[rows, 256]``."""
        packs = [(_load_voice(name, self.files.voices), weight) for name, weight in self.blend]
        rows = min(len(pack) for pack, _ in packs)
        style = np.zeros((rows, STYLE_DIM), dtype=np.float32)
        for pack, weight in packs:
            style += np.float32(weight) * pack[:rows]
        return style

    def style_for(self, n_tokens: int) -> np.ndarray:
        """The style vector for a text of *n_tokens* phonemes (row ``n - 1`` of the voice pack)."""
        return self._style[max(0, min(n_tokens, len(self._style)) - 1)]

    # -- synthesis ------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """24000 Hz."""
        return SAMPLE_RATE

    def tokens(self, text: str) -> list[list[int]]:
        """Token ids of *text* in pieces of at most 510 (what :meth:`synthesize` speaks)."""
        return self._g2p.tokens(text)

    def synthesize(
        self, texts: Sequence[str], seeds: Sequence[int] | None = None
    ) -> list[np.ndarray]:
        """Speak each text.

        Parameters
        ----------
        texts : sequence of str
            Texts of at most :attr:`max_chars` characters; ``[[IPA]]`` is
            spoken as given.  A text over 510 phonemes is spoken in pieces
            whose audio is joined.
        seeds : sequence of int, optional
            Ignored: Kokoro's inference is deterministic.

        Returns
        -------
        list of numpy.ndarray
            One 1-D ``int16`` array per text (24 kHz), in order; empty for a
            text with nothing to say.

        Raises
        ------
        EngineError
            The model failed on a text.
        """
        pieces: list[list[int]] = []
        owners: list[int] = []
        for index, text in enumerate(texts):
            for ids in self._g2p.tokens(text or ""):
                pieces.append(ids)
                owners.append(index)
        audio: list[np.ndarray] = []
        if pieces:
            styles = [self.style_for(len(ids)) for ids in pieces]
            try:
                audio = self.runtime.speak(pieces, styles, self.speed)
            except EngineError:
                raise
            except Exception as exc:  # ORT / torch errors
                snippet = one_line(next(t for t in texts if t and t.strip()), 40)
                raise EngineError(f"kokoro failed to speak {snippet!r}: {one_line(exc)}") from exc
        parts: list[list[np.ndarray]] = [[] for _ in texts]
        for owner, wav in zip(owners, audio):
            parts[owner].append(trim(np.asarray(wav, dtype=np.float32).reshape(-1)))
        return [_to_int16(np.concatenate(p)) if p else np.zeros(0, dtype=np.int16) for p in parts]

    def close(self) -> None:
        """Release the model (GPU memory included)."""
        if self.runtime is not None:
            self.runtime.close()
        self.runtime = None


def trim(wav: np.ndarray, frame: int = 240) -> np.ndarray:
    """*wav* without the silence before and after its speech (a 50 ms margin kept).

    Speech is where a 10 ms frame's RMS is within :data:`_TRIM_DB` of the
    loudest frame's.
    """
    if len(wav) < 2 * frame:
        return wav
    n = len(wav) // frame
    rms = np.sqrt(np.mean(np.square(wav[: n * frame].reshape(n, frame), dtype=np.float64), axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-_TRIM_DB / 20))
    if not len(loud) or rms.max() == 0:
        return wav[:0]
    margin = int(_TRIM_MARGIN_S * SAMPLE_RATE)
    return wav[max(0, loud[0] * frame - margin) : min(len(wav), (loud[-1] + 1) * frame + margin)]


def _to_int16(wav: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] to ``int16`` (clipped, not normalised)."""
    return (np.clip(wav, -1.0, 1.0) * 32767.0).astype(np.int16)
