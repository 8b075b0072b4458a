"""Coqui TTS (``coqui-tts``, imports as ``TTS``) on torch: VITS, XTTS v2 and the rest.

The model is whatever the user has on disk or in a bucket — we never download
weights at run time:

* a **folder** holding ``config.json`` and a checkpoint (``model.pth``,
  ``model_file.pth``, ``best_model.pth``...), e.g. an XTTS v2 or VITS download,
  or a training run's output folder;
* a **checkpoint file** with ``config.json`` beside it;
* any of those as an **fsspec URL** (``s3://models/xtts_v2/``): the folder's
  files are copied once into a local cache (see :func:`~._files.model_cache_dir`);
* a **Coqui model name** (``tts_models/en/ljspeech/vits``) that Coqui's own model
  manager has already downloaded into its cache.

Models load through Coqui's public :class:`TTS.utils.synthesizer.Synthesizer`.
Then:

* **VITS-family** models (VITS, YourTTS, MMS...) run in real batches: texts are
  padded into one forward pass with ``x_lengths``; each row draws its noise
  from its own seed, so a chunk's audio does not depend on its batch-mates.
* **XTTS v2** clones a voice from reference clips (``voice="narrator.wav"``, or
  several clips joined with ``|``, a folder, or a glob).  The speaker
  conditioning is computed once per voice and kept in the chunk store, so
  other workers and later runs load it instead of recomputing it.  XTTS is
  autoregressive: chunks run one after the other on the resident model.
* Any other Coqui model runs one chunk at a time through ``tts_model.synthesize``.

Device: ``cuda`` when torch sees a GPU (a worker started with
``CUDA_VISIBLE_DEVICES=<i>`` sees exactly its own GPU), else ``cpu``;
fp16 autocast on CUDA by default.  ``torch`` and ``TTS`` are imported lazily.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import gc
import hashlib
import io
import json
import os
import re
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import config as e2a_config
from ..errors import EngineError, one_line
from ..logs import get_logger
from ._files import cached_folder, fetch_once, is_remote, local_path, read_json_config
from .base import Engine, EngineSpec, VoiceInfo, module_missing

__all__ = ["CoquiEngine", "ModelFiles", "coqui_cache_dir", "locate_model"]

_LOGGER = get_logger(__name__)

_INSTALL_HINT = (
    "coqui-tts is not installed: pip install torch, then pip install 'ebook2audio_dask[coqui]'"
)
_NO_MODEL = (
    "the coqui engine needs a model: give --model (a folder with config.json and a checkpoint, "
    "a checkpoint file, an fsspec URL or a downloaded Coqui model name) "
    "or set ebook2audio.coqui.model"
)
#: Checkpoint file names Coqui folders use, in the order they are preferred.
_CHECKPOINTS = (
    "model.pth",
    "model_file.pth",
    "best_model.pth",
    "model.pth.tar",
    "model_file.pth.tar",
)
#: Config keys (top level or in ``model_args``) that name files beside the model.
_FILE_KEYS = (
    "speakers_file", "speaker_ids_file", "language_ids_file", "d_vector_file",
    "speaker_encoder_model_path", "speaker_encoder_config_path", "tokenizer_file",
)  # fmt: skip
_MODEL_NAME = re.compile(r"^tts_models/[^/]+/[^/]+/[^/]+$")
#: Settings that change the audio; anything else is refused.
_SETTINGS = frozenset(
    {"language", "length_scale", "noise_scale", "noise_scale_dp", "temperature", "top_k", "top_p",
     "repetition_penalty", "length_penalty", "speed"}
)  # fmt: skip
_XTTS_INFERENCE = ("temperature", "top_k", "top_p", "repetition_penalty", "length_penalty", "speed")
_AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")


def coqui_cache_dir() -> Path:
    """Where Coqui's model manager keeps downloaded models (``tts --model_name``).

    ``$TTS_HOME/tts`` or ``$XDG_DATA_HOME/tts`` if set, else ``~/.local/share/tts``
    (Coqui's own rule on Linux).
    """
    for var in ("TTS_HOME", "XDG_DATA_HOME"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser() / "tts"
    return Path.home() / ".local" / "share" / "tts"


# --------------------------------------------------------------------------- model files
@dataclass(frozen=True)
class ModelFiles:
    """Local files of a Coqui model, ready for Coqui's loader.

    Parameters
    ----------
    source : str
        What the user gave (path, URL or model name).
    folder : pathlib.Path
        Local folder of the model's files.
    config : pathlib.Path
        ``config.json`` (a copy with file paths fixed when they needed it).
    checkpoint : pathlib.Path
        The checkpoint file, or *folder* for models that load from a folder (XTTS).
    """

    source: str
    folder: Path
    config: Path
    checkpoint: Path


def _read_config(source: str) -> dict[str, Any]:
    """Read a Coqui ``config.json`` (local path or fsspec URL)."""
    return read_json_config(source, "coqui model config", "model")


def _split_model(model: str) -> tuple[str, str | None]:
    """``(folder URL, checkpoint name or None)`` of what the user gave."""
    stripped = model.rstrip("/")
    name = stripped.rsplit("/", 1)[-1]
    if name.endswith(".json"):
        return stripped.rsplit("/", 1)[0] if "/" in stripped else ".", None
    if name.endswith((".pth", ".pt", ".tar", ".safetensors")):
        return (stripped.rsplit("/", 1)[0] if "/" in stripped else "."), name
    return stripped, None


def _config_url(model: str) -> str:
    """URL/path of the config of *model* (no files are fetched)."""
    if _MODEL_NAME.match(model) and not os.path.exists(model):
        return str(_manager_folder(model) / "config.json")
    folder, _ = _split_model(model)
    if model.rstrip("/").endswith(".json"):
        return model
    return folder + "/config.json"


def _manager_folder(name: str) -> Path:
    folder = coqui_cache_dir() / name.replace("/", "--")
    if not (folder / "config.json").is_file():
        raise EngineError(
            f"coqui model {name!r} is not downloaded (looked in {folder}); "
            "ebook2audio never downloads at run time: fetch it once with  "
            f"python -c \"from TTS.api import TTS; TTS('{name}')\"  "
            "or give the path of a model folder"
        )
    return folder


def _pick_checkpoint(names: Sequence[str], where: str) -> str:
    for candidate in _CHECKPOINTS:
        if candidate in names:
            return candidate
    others = sorted(
        n for n in names if n.endswith((".pth", ".pt", ".tar")) and n.startswith("checkpoint")
    )
    if others:  # a training folder: the latest checkpoint
        return max(others, key=lambda n: int(re.sub(r"\D", "", n) or 0))
    raise EngineError(
        f"coqui model checkpoint not found in {where} (expected one of {', '.join(_CHECKPOINTS)})"
    )


def _fix_paths(cfg: dict[str, Any], folder: Path) -> bool:
    """Point file paths in *cfg* at the files in *folder* (as Coqui's model manager does).

    Configs are saved with the training machine's absolute paths; a file of
    the same name beside the model wins.  Returns whether anything changed.
    """
    changed = False
    for section in (cfg, cfg.get("model_args") or {}):
        for key in _FILE_KEYS:
            value = section.get(key)
            if not isinstance(value, str) or not value:
                continue
            local = folder / Path(value).name
            if not Path(value).is_file() and local.is_file():
                section[key] = str(local)
                changed = True
    return changed


def locate_model(model: str) -> ModelFiles:
    """Find (and fetch, for a remote model) the files of *model*.

    Parameters
    ----------
    model : str
        Folder, checkpoint file, ``config.json``, fsspec URL of any of them,
        or a Coqui model name already in Coqui's download cache.

    Returns
    -------
    ModelFiles

    Raises
    ------
    EngineError
        Nothing loadable there (one line naming the path and the problem).
    """
    if _MODEL_NAME.match(model) and not os.path.exists(model):
        folder = _manager_folder(model)
        checkpoint_name = None
    else:
        folder_url, checkpoint_name = _split_model(model)
        if is_remote(folder_url, "coqui model"):
            folder = _fetch_remote(model, folder_url, checkpoint_name)
        else:
            folder = local_path(folder_url)
            if not folder.is_dir():
                raise EngineError(f"coqui model not found: {model}")
    config_path = folder / "config.json"
    cfg = _read_config(str(config_path))
    if cfg.get("model") == "xtts":
        checkpoint = folder  # XTTS loads model.pth, vocab.json and speakers from its folder
        if not (folder / (checkpoint_name or "model.pth")).is_file():
            raise EngineError(
                f"coqui model checkpoint not found: {folder / (checkpoint_name or 'model.pth')}"
            )
        if checkpoint_name and checkpoint_name != "model.pth":
            checkpoint = folder / checkpoint_name
    else:
        name = checkpoint_name or _pick_checkpoint([p.name for p in folder.iterdir()], str(folder))
        checkpoint = folder / name
        if not checkpoint.is_file():
            raise EngineError(f"coqui model checkpoint not found: {checkpoint}")
    if _fix_paths(cfg, folder):
        fixed = cached_folder("coqui-configs", str(config_path)) / "config.json"
        fixed.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=fixed.parent, prefix=".part-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(cfg, fh)
        os.replace(tmp, fixed)
        config_path = fixed
    return ModelFiles(model, folder, config_path, checkpoint)


def _fetch_remote(model: str, folder_url: str, checkpoint_name: str | None) -> Path:
    """Copy a remote model folder into the local cache once; return the local folder."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(folder_url)
    try:
        sizes = {str(e["name"]).rsplit("/", 1)[-1]: e.get("size") for e in fs.ls(root, detail=True)}
        names = sorted(sizes)
    except FileNotFoundError:
        raise EngineError(f"coqui model not found: {model}") from None
    except Exception as exc:  # noqa: BLE001 - remote file systems' own errors
        raise EngineError(f"coqui model cannot be listed: {model}: {one_line(exc)}") from None
    if "config.json" not in names:
        raise EngineError(f"coqui model config not found: {folder_url}/config.json")
    cfg = _read_config(folder_url + "/config.json")
    if cfg.get("model") != "xtts" and checkpoint_name is None:
        checkpoint_name = _pick_checkpoint(names, folder_url)

    def wanted(name: str) -> bool:  # the chosen checkpoint, and every non-checkpoint file
        if name.startswith("."):
            return False
        if name == checkpoint_name:
            return True
        is_checkpoint = any(
            fnmatch.fnmatch(name, p) for p in ("model*.pth*", "best_model*", "checkpoint_*")
        )
        return not is_checkpoint or (cfg.get("model") == "xtts" and name == "model.pth")

    folder = cached_folder("coqui-models", folder_url)
    for name in names:  # a file replaced remotely (other size) is fetched again
        local = folder / name
        if local.is_file() and sizes[name] is not None and local.stat().st_size != int(sizes[name]):
            local.unlink()
    fetch_once(
        folder, [(f"{folder_url}/{n}", n) for n in names if wanted(n)], what="coqui model file"
    )
    return folder


@functools.lru_cache(maxsize=32)
def _facts(model: str, declared_language: str | None) -> dict[str, Any]:
    """What a model's files say about it (cached per process; no weights are read)."""
    cfg = _read_config(_config_url(model))
    audio = cfg.get("audio") or {}
    rate = int(audio.get("output_sample_rate") or audio.get("sample_rate") or 22050)
    if cfg.get("model") == "xtts":
        rate = int(audio.get("output_sample_rate") or 24000)
    languages = [str(x) for x in (cfg.get("languages") or [])]
    if not languages:
        match = re.search(r"tts_models(?:/|--)([a-z]{2,3}(?:-[A-Za-z]+)?)(?:/|--)", model)
        if declared_language:
            languages = [str(declared_language)]
        elif match and match.group(1) != "multilingual":
            languages = [match.group(1)]
        elif cfg.get("phoneme_language"):
            languages = [str(cfg["phoneme_language"])]
    return {
        "config": cfg,
        "sample_rate": rate,
        "languages": languages,
        "speakers": _speaker_names(model, cfg),
    }


def _speaker_names(model: str, cfg: Mapping[str, Any]) -> list[str]:
    """Speaker names from the model's speakers file, when it has a readable one."""
    import fsspec

    folder_url = str(_manager_folder(model)) if _MODEL_NAME.match(model) else _split_model(model)[0]
    candidates = []
    for section in (cfg, cfg.get("model_args") or {}):
        for key in ("speakers_file", "speaker_ids_file"):
            if isinstance(section.get(key), str) and section[key]:
                candidates += [folder_url + "/" + Path(section[key]).name, section[key]]
    if cfg.get("model") == "xtts":
        candidates.append(folder_url + "/speakers_xtts.pth")
    for url in candidates:
        try:
            with fsspec.open(url, "rb") as fh:
                data = fh.read()
        except Exception:  # noqa: BLE001 - missing or unreachable: try the next candidate
            continue
        if url.endswith(".json"):
            return sorted(json.loads(data))
        try:
            import torch

            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a speakers file torch cannot read safely: no names
            continue
        if isinstance(loaded, dict):
            return sorted(str(k) for k in loaded)
    return []


def _weights_stamp(model: str) -> str:
    """Names, sizes and modification times of a model's weight files (not their bytes)."""
    import fsspec

    folder_url = str(_manager_folder(model)) if _MODEL_NAME.match(model) else _split_model(model)[0]
    try:
        fs, root = fsspec.core.url_to_fs(folder_url)
        entries = fs.ls(root, detail=True)
    except Exception as exc:  # noqa: BLE001 - missing folder or unreachable store
        raise EngineError(f"coqui model cannot be listed: {model}: {one_line(exc)}") from None
    stamp = []
    for entry in entries:
        name = str(entry["name"]).rsplit("/", 1)[-1]
        if name.endswith((".pth", ".pt", ".tar", ".safetensors")):
            stamp.append(
                (
                    name,
                    entry.get("size"),
                    str(entry.get("mtime") or entry.get("LastModified") or ""),
                )
            )
    return json.dumps(sorted(stamp), default=str)


# --------------------------------------------------------------------------- per-row noise
class _RowNoise:
    """Seeded noise for batched VITS inference, one seed per batch row.

    VITS draws noise twice (duration predictor, prior) with ``torch.randn`` /
    ``torch.randn_like`` over the whole padded batch.  While active, those
    calls in the model's modules get, for each row, noise drawn from that
    row's own generator in fixed-width column blocks: a row's noise over its
    own (unpadded) length is the same whatever its batch-mates or the padding.
    """

    BLOCK = 32

    def __init__(self, torch, seeds: Sequence[int]):
        self._torch = torch
        self._seeds = [int(s) for s in seeds]
        self._calls = 0

    def __getattr__(self, name):  # everything else is torch itself
        return getattr(self._torch, name)

    def _rows(self, shape, dtype, device):
        torch = self._torch
        self._calls += 1
        shape = tuple(int(n) for n in shape)
        middle = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
        width = shape[-1]
        rows = []
        for seed in self._seeds:
            gen = torch.Generator().manual_seed((seed * 1_000_003 + self._calls) % (2**63))
            blocks = -(-width // self.BLOCK)
            noise = torch.cat(
                [torch.randn((middle, self.BLOCK), generator=gen) for _ in range(max(blocks, 1))],
                dim=1,
            )[:, :width]
            rows.append(noise.reshape(shape[1:]))
        return torch.stack(rows).to(device=device, dtype=dtype or torch.float32)

    def randn_like(self, t, *args, **kwargs):
        if t.dim() >= 2 and t.shape[0] == len(self._seeds):
            return self._rows(
                t.shape, kwargs.get("dtype") or t.dtype, kwargs.get("device") or t.device
            )
        return self._torch.randn_like(t, *args, **kwargs)

    def randn(self, *size, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size
        if len(shape) >= 2 and shape[0] == len(self._seeds) and "generator" not in kwargs:
            return self._rows(shape, kwargs.get("dtype"), kwargs.get("device") or "cpu")
        return self._torch.randn(*size, **kwargs)


_PATCH_LOCK = threading.Lock()

#: How many times this process computed an XTTS speaker conditioning (not
#: counting the ones read back from the chunk store).
CONDITIONING_COMPUTED = 0


@contextlib.contextmanager
def _row_noise(model, seeds: Sequence[int]):
    """Route ``torch.randn*`` of *model*'s modules through :class:`_RowNoise`."""
    import sys

    import torch

    modules = {
        sys.modules[type(m).__module__]
        for m in model.modules()
        if getattr(sys.modules.get(type(m).__module__), "torch", None) is torch
    }
    noise = _RowNoise(torch, seeds)
    with _PATCH_LOCK:
        for module in modules:
            module.torch = noise
        try:
            yield noise
        finally:
            for module in modules:
                module.torch = torch


# --------------------------------------------------------------------------- the engine
def _voice_clips(voice: str) -> list[str]:
    """Reference clip URLs of an XTTS voice: ``a.wav|b.wav``, a folder, or a glob."""
    import fsspec

    clips: list[str] = []
    for part in (p.strip() for p in voice.split("|")):
        if not part:
            continue
        fs, path = fsspec.core.url_to_fs(part)
        protocol = part.split("://", 1)[0] + "://" if "://" in part else ""
        if any(ch in path for ch in "*?["):
            found = sorted(fs.glob(path))
        elif fs.isdir(path):
            found = sorted(
                p for p in fs.ls(path, detail=False) if p.lower().endswith(_AUDIO_SUFFIXES)
            )
        else:
            found = [path]
        if not found:
            raise EngineError(f"coqui voice: no audio clips found at {part}")
        clips += [protocol + p if protocol and not p.startswith(protocol) else p for p in found]
    return clips


def _looks_like_clips(voice: str) -> bool:
    lowered = voice.lower()
    return "|" in voice or "/" in voice or os.sep in voice or lowered.endswith(_AUDIO_SUFFIXES)


class CoquiEngine(Engine):
    """Coqui TTS models on torch (CPU or one GPU per worker).

    Parameters
    ----------
    voice : str
        Speaker name of a multi-speaker model or of XTTS's built-in speakers;
        for XTTS, reference clip(s) to clone (path/URL, several joined by
        ``|``, a folder or a glob); ``"default"`` for a single-speaker model.
    settings : mapping, optional
        ``language`` (set from the book by routing), ``length_scale``,
        ``noise_scale``, ``noise_scale_dp`` (VITS), ``temperature``, ``top_k``,
        ``top_p``, ``repetition_penalty``, ``length_penalty``, ``speed`` (XTTS).
    threads : int
        torch CPU threads.
    model : str, optional
        The model (see the module docs); defaults to ``ebook2audio.coqui.model``.
    device : str, optional
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (default from ``ebook2audio.coqui.device``).

    Raises
    ------
    EngineError
        coqui-tts missing, no or bad model, unknown voice or setting.
    """

    name: ClassVar[str] = "coqui"
    max_chars: ClassVar[int] = 250  # XTTS's English limit; VITS is happy with it too
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    uses_model: ClassVar[bool] = True
    seeded: ClassVar[bool] = True
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
        unknown = sorted(set(self.settings) - _SETTINGS)
        if unknown:
            raise EngineError(
                f"unknown coqui setting(s) {', '.join(unknown)}: "
                f"supported are {', '.join(self.setting_names)}"
            )
        self.model_source = model or self.default_model()
        if not self.model_source:
            raise EngineError(_NO_MODEL)
        self.files = locate_model(self.model_source)
        self.device = self._pick_device(device or e2a_config.get("coqui.device"))
        self.precision = self._pick_precision(str(e2a_config.get("coqui.precision")))
        self.batch_size = self._pick_batch_size(e2a_config.get("coqui.batch-size"))
        self._voice_state: Any = None
        self._lock = threading.Lock()
        self._load()

    # -- description ---------------------------------------------------------
    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """Whether torch and coqui-tts can be imported here (nothing is imported)."""
        if module_missing("torch") or module_missing("TTS"):
            return False, _INSTALL_HINT
        return True, ""

    @classmethod
    def default_model(cls) -> str | None:
        """``ebook2audio.coqui.model`` from the dask config."""
        return e2a_config.get("coqui.model") or None

    @classmethod
    def _model_facts(cls, model: str | None) -> dict[str, Any]:
        """Languages, speakers and sample rate read from a model's files (no weights)."""
        model = model or cls.default_model()
        if not model:
            return {}
        return _facts(model, e2a_config.get("coqui.language"))

    @classmethod
    def voices(cls, model: str | None = None) -> list[VoiceInfo]:
        """Speakers of the model (``"default"`` for a single-speaker model).

        Without a model (none given nor configured) the list is empty.  XTTS
        can also clone any voice from reference clips (see the class docs).
        """
        facts = cls._model_facts(model) if (model or cls.default_model()) else {}
        if not facts:
            return []
        languages = facts["languages"]
        lang = languages[0] if len(languages) == 1 else ("mul" if languages else "und")
        names = facts["speakers"] or (["default"] if facts["config"].get("model") != "xtts" else [])
        return [VoiceInfo(n, lang, f"coqui {facts['config'].get('model')} speaker") for n in names]

    @classmethod
    def languages(cls, model: str | None = None) -> list[str]:
        """Languages the model speaks.

        From its config, its model name or ``ebook2audio.coqui.language``.
        """
        facts = cls._model_facts(model) if (model or cls.default_model()) else {}
        return sorted(facts.get("languages", []))

    @classmethod
    def voice_for_language(cls, language: str | None, model: str | None = None) -> str | None:
        """The model's first voice when the model speaks *language*; a model whose
        language is unknown is trusted to speak any (it was configured on purpose)."""
        if not language or not (model or cls.default_model()):
            return None
        facts = cls._model_facts(model)
        spoken = [x.lower() for x in facts["languages"]]
        primary = language.replace("_", "-").lower().split("-")[0]
        if spoken and not any(x == language.lower() or x.split("-")[0] == primary for x in spoken):
            return None
        voices = cls.voices(model)
        return voices[0].id if voices else None

    @classmethod
    def accepts_voice_path(cls, voice: str, model: str | None = None) -> bool:
        """True for reference clips (paths, URLs, folders, globs) — XTTS clones them."""
        return _looks_like_clips(voice)

    @classmethod
    def sample_rate_for(cls, voice: str, model: str | None = None) -> int:
        """Output sample rate from the model's config (22050 for most VITS, 24000 for XTTS)."""
        if not (model or cls.default_model()):
            raise EngineError(_NO_MODEL)
        return int(cls._model_facts(model)["sample_rate"])

    @classmethod
    def identify(cls, spec: EngineSpec) -> EngineSpec:
        """Fingerprint the model and any reference clips.

        The model's config and its weight files' names, sizes and times.
        """
        import dataclasses

        import fsspec

        model = spec.model or cls.default_model() or ""
        digest = hashlib.sha256()
        digest.update(
            json.dumps(cls._model_facts(model).get("config", {}), sort_keys=True).encode()
        )
        digest.update(_weights_stamp(model).encode())
        if _looks_like_clips(spec.voice):
            for clip in _voice_clips(spec.voice):
                try:
                    with fsspec.open(clip, "rb") as fh:
                        digest.update(hashlib.sha256(fh.read()).digest())
                except FileNotFoundError:
                    raise EngineError(f"coqui voice clip not found: {clip}") from None
        return dataclasses.replace(spec, model=model, identity=digest.hexdigest()[:16])

    @classmethod
    def prepares_voice(cls, spec: EngineSpec) -> bool:
        """Reference clips (XTTS cloning) are turned into conditioning once per voice."""
        return _looks_like_clips(spec.voice)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The configured model and the Coqui models already in Coqui's download cache."""
        cache = coqui_cache_dir()
        downloaded = (
            sorted(
                p.name.replace("--", "/")
                for p in cache.glob("tts_models--*")
                if (p / "config.json").is_file()
            )
            if cache.is_dir()
            else []
        )
        info: dict[str, Any] = {"model": cls.default_model(), "downloaded_models": downloaded}
        if not module_missing("torch"):
            try:
                import torch

                info["cuda_devices"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
            except Exception:  # noqa: BLE001  # pragma: no cover - a broken CUDA setup
                info["cuda_devices"] = 0
        return info

    # -- loading --------------------------------------------------------------
    def _pick_device(self, wanted: str) -> str:
        import torch

        wanted = str(wanted).lower()
        if wanted == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError("coqui: device 'cuda' asked for but torch sees no GPU on this worker")
        if wanted not in ("cpu",) and not wanted.startswith("cuda"):
            raise EngineError(f"coqui cannot run on device {wanted!r}: use auto, cpu or cuda")
        return wanted

    def _pick_batch_size(self, wanted: Any) -> int:
        """``auto``: 16 on CUDA; 1 on CPU, where padded batches of a conv-heavy
        vocoder run slower than one text at a time (benchmarks/RESULTS.md)."""
        if str(wanted).lower() == "auto":
            return 16 if self.device.startswith("cuda") else 1
        try:
            return max(1, int(wanted))
        except (TypeError, ValueError):
            raise EngineError(f"coqui batch-size {wanted!r} is not a number nor 'auto'") from None

    def _pick_precision(self, wanted: str) -> str:
        wanted = wanted.lower()
        if wanted == "auto":
            return "fp16" if self.device.startswith("cuda") else "fp32"
        if wanted not in ("fp32", "fp16", "bf16"):
            raise EngineError(f"coqui precision {wanted!r} unknown: use auto, fp32, fp16 or bf16")
        return wanted

    def _load(self) -> None:
        import torch
        from TTS.utils.synthesizer import Synthesizer

        if self.device == "cpu":
            torch.set_num_threads(self.threads)
        try:
            synth = Synthesizer(
                tts_checkpoint=self.files.checkpoint,
                tts_config_path=self.files.config,
                use_cuda=False,
            )
        except EngineError:
            raise
        except Exception as exc:  # Coqui raises whatever its loaders raise
            raise EngineError(
                f"coqui model unreadable: {self.model_source}: {one_line(exc)}"
            ) from exc
        self._synth = synth
        self.model = synth.tts_model
        self.model.to(self.device)
        self.model.eval()  # (XTTS's eval() returns None: no chaining)
        self.kind = str(self.model.config.get("model", type(self.model).__name__)).lower()
        self._sample_rate = int(synth.output_sample_rate)
        self.batched = self.kind != "xtts" and self._batchable()
        if self.kind == "xtts":
            self._sample_rate = int(self.model.config.audio.get("output_sample_rate", 24000))
        if not self.batched:
            self.batch_size = 1
        for name, attr in (
            ("length_scale", "length_scale"),
            ("noise_scale", "inference_noise_scale"),
            ("noise_scale_dp", "inference_noise_scale_dp"),
        ):
            if name in self.settings and hasattr(self.model, attr):
                setattr(self.model, attr, float(self.settings[name]))
        self._speaker = self._speaker_for(self.voice)

    def _batchable(self) -> bool:
        """VITS-family models take padded batches (``x_lengths``) in ``inference``."""
        from TTS.tts.models.vits import Vits

        return isinstance(self.model, Vits)

    def _speaker_for(self, voice: str) -> Any:
        """Check *voice* against the model; what ``synthesize`` needs to speak with it."""
        manager = getattr(self.model, "speaker_manager", None)
        names = list(getattr(manager, "name_to_id", {}) or {}) if manager is not None else []
        if self.kind == "xtts":
            builtin = list(getattr(manager, "speakers", {}) or {}) if manager is not None else []
            if voice in builtin:
                return ("builtin", voice)
            if not _looks_like_clips(voice):
                raise EngineError(
                    "coqui XTTS needs reference audio to clone (--voice clip.wav) "
                    "or a built-in speaker; "
                    f"{voice!r} is neither"
                )
            return ("clips", voice)
        if names:
            if voice not in names:
                shown = ", ".join(sorted(names)[:8]) + (" ..." if len(names) > 8 else "")
                raise EngineError(f"coqui model has no speaker {voice!r} (speakers: {shown})")
            return ("speaker", voice)
        if voice not in ("default", ""):
            raise EngineError(
                f"coqui model has a single speaker: use voice 'default', not {voice!r}"
            )
        return ("speaker", None)

    # -- voices (XTTS conditioning) ----------------------------------------------
    def prepare(self, store) -> None:
        """Load (or compute once and store) the XTTS speaker conditioning.

        Kept in the chunk store as ``<store>/coqui/voices/<id>.npz``, so every
        worker and every later run reuses it.
        """
        if self.kind != "xtts" or self._voice_state is not None:
            return
        with self._lock:
            if self._voice_state is not None:
                return
            kind, voice = self._speaker
            if kind == "builtin":
                latent, embedding = self.model.speaker_manager.speakers[voice].values()
                self._voice_state = (latent, embedding)
                return
            name = self._conditioning_id() + ".npz"
            data = store.read_voice(self.name, name) if store is not None else None
            if data is None:
                global CONDITIONING_COMPUTED
                latent, embedding = self._compute_conditioning()
                CONDITIONING_COMPUTED += 1
                buffer = io.BytesIO()
                np.savez(
                    buffer,
                    gpt_cond_latent=latent.float().cpu().numpy(),
                    speaker_embedding=embedding.float().cpu().numpy(),
                )
                if store is not None:
                    store.write_voice(self.name, name, buffer.getvalue())
                    _LOGGER.info("coqui: stored speaker conditioning %s", name)
            else:
                arrays = np.load(io.BytesIO(data))
                import torch

                latent = torch.from_numpy(arrays["gpt_cond_latent"]).to(self.device)
                embedding = torch.from_numpy(arrays["speaker_embedding"]).to(self.device)
                _LOGGER.info("coqui: reused speaker conditioning %s", name)
            self._voice_state = (latent, embedding)

    def _conditioning_id(self) -> str:
        """Content id of a cloned voice.

        From the clips' bytes, the model and the settings that shape it.
        """
        import fsspec

        digest = hashlib.sha256()
        digest.update(json.dumps(self.model.config.to_dict(), sort_keys=True, default=str).encode())
        for clip in _voice_clips(self.voice):
            with fsspec.open(clip, "rb") as fh:
                digest.update(hashlib.sha256(fh.read()).digest())
        return digest.hexdigest()[:40]

    def _compute_conditioning(self):
        """XTTS speaker conditioning from the reference clips, decoded with ffmpeg."""
        import fsspec
        import torch

        from ..audio import decode_to_pcm

        cfg = self.model.config
        rate = 22050
        clips = []
        for clip in _voice_clips(self.voice):
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "clip"
                try:
                    with fsspec.open(clip, "rb") as src:
                        local.write_bytes(src.read())
                    pcm = decode_to_pcm(local, rate)
                except (OSError, RuntimeError) as exc:
                    raise EngineError(
                        f"coqui voice clip unreadable: {clip}: {one_line(exc)}"
                    ) from None
            audio = torch.from_numpy(pcm.astype(np.float32) / 32768.0).unsqueeze(0)
            clips.append(audio[:, : rate * int(cfg.get("max_ref_len", 30))].to(self.device))
        embeddings = [self.model.get_speaker_embedding(a, rate) for a in clips]
        latent = self.model.get_gpt_cond_latents(
            torch.cat(clips, dim=-1),
            rate,
            length=int(cfg.get("gpt_cond_len", 30)),
            chunk_length=int(cfg.get("gpt_cond_chunk_len", 4)),
        )
        return latent, torch.stack(embeddings).mean(dim=0)

    # -- synthesis ------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """Output sample rate of the loaded model."""
        return self._sample_rate

    def _autocast(self):
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(device_type=device_type, dtype=dtype)

    def synthesize(
        self, texts: Sequence[str], seeds: Sequence[int] | None = None
    ) -> list[np.ndarray]:
        """Speak *texts*; VITS-family models run them as one padded batch.

        Parameters
        ----------
        texts : sequence of str
            Texts of at most :attr:`max_chars` characters.
        seeds : sequence of int, optional
            One seed per text: the same text and seed give the same audio
            (in any batch).  Default: seed 0 for every text.

        Returns
        -------
        list of numpy.ndarray
            One 1-D ``int16`` array per text, in order.
        """
        import torch

        seeds = list(seeds) if seeds is not None else [0] * len(texts)
        out: list[np.ndarray | None] = [None] * len(texts)
        todo = [i for i, t in enumerate(texts) if t and t.strip()]
        for i in set(range(len(texts))) - set(todo):
            out[i] = np.zeros(0, dtype=np.int16)
        if self.kind == "xtts":
            self.prepare(None)
        with torch.inference_mode(), self._autocast():
            if self.batched:  # VITS family, even in batches of 1: same code, same audio
                self._run_batched(texts, seeds, todo, out)
            else:
                for i in todo:
                    out[i] = self._one(texts[i], seeds[i])
        return [np.asarray(a) for a in out]

    def _run_batched(self, texts, seeds, todo, out) -> None:
        import torch

        start, size = 0, self.batch_size
        while start < len(todo):
            group = todo[start : start + size]
            try:
                audio = self._vits_batch([texts[i] for i in group], [seeds[i] for i in group])
            except torch.OutOfMemoryError:
                if size == 1:
                    raise
                size = max(1, size // 2)  # halve and retry the same texts
                self.batch_size = size
                torch.cuda.empty_cache()
                _LOGGER.warning("coqui: out of GPU memory, batch size now %d", size)
                continue
            for i, pcm in zip(group, audio):
                out[i] = pcm
            start += len(group)

    def _tokens(self, text: str) -> list[int]:
        return list(self.model.tokenizer.text_to_ids(text, language=self._language()))

    def _language(self) -> str | None:
        manager = getattr(self.model, "language_manager", None)
        wanted = self.settings.get("language")
        if manager is None or not getattr(manager, "language_names", None):
            return wanted
        names = list(manager.language_names)
        if wanted in names:
            return wanted
        primary = str(wanted or "").split("-")[0]
        return next((n for n in names if n.split("-")[0] == primary), names[0])

    def _vits_batch(self, texts: Sequence[str], seeds: Sequence[int]) -> list[np.ndarray]:
        import torch

        model = self.model
        ids = [self._tokens(t) for t in texts]
        lengths = torch.tensor([len(x) for x in ids], dtype=torch.long, device=self.device)
        padded = torch.zeros((len(ids), int(lengths.max())), dtype=torch.long)
        for row, seq in enumerate(ids):
            padded[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        speaker_id, d_vector = model._get_speaker_id_or_dvector(self._speaker[1], None, None)
        aux = {"x_lengths": lengths, "speaker_ids": None, "d_vectors": None, "language_ids": None}
        if speaker_id is not None:
            aux["speaker_ids"] = speaker_id.reshape(1).repeat(len(ids)).to(self.device)
        if d_vector is not None:
            aux["d_vectors"] = (
                torch.as_tensor(d_vector).reshape(1, -1).repeat(len(ids), 1).to(self.device)
            )
        lang = (
            model._get_language_id(self._language()) if hasattr(model, "_get_language_id") else None
        )
        if lang is not None:
            aux["language_ids"] = torch.full(
                (len(ids),), int(lang), dtype=torch.long, device=self.device
            )
        with _row_noise(model, seeds):
            outputs = model.inference(padded.to(self.device), aux_input=aux)
        wav = outputs["model_outputs"].float()[:, 0, :]
        mask = outputs["y_mask"]
        hop = wav.shape[-1] // mask.shape[-1]
        samples = (mask.sum(dim=(1, 2)).long() * hop).clamp(max=wav.shape[-1]).tolist()
        return [_to_int16(wav[row, : int(n)]) for row, n in enumerate(samples)]

    def _one(self, text: str, seed: int) -> np.ndarray:
        """One text through a model that does not batch (XTTS, Tacotron, Glow-TTS...)."""
        import torch

        torch.manual_seed(int(seed) % (2**63))
        if self.kind == "xtts":
            latent, embedding = self._voice_state
            cfg = self.model.config  # Coqui's tuned defaults, as its own synthesize() uses them
            options = {k: getattr(cfg, k, None) for k in _XTTS_INFERENCE}
            options = {
                k: v
                for k, v in {**options, **self.settings}.items()
                if k in _XTTS_INFERENCE and v is not None
            }
            language = str(self.settings.get("language") or "en")
            language = (
                "zh-cn" if language.lower().startswith("zh") else language.split("-")[0].lower()
            )
            result = self.model.inference(text, language, latent, embedding, **options)
            return _to_int16(torch.as_tensor(result["wav"]))
        result = self.model.synthesize(text, speaker=self._speaker[1], language=self._language())
        return _to_int16(torch.as_tensor(result["wav"]))

    def close(self) -> None:
        """Drop the model and give its memory back (GPU memory included)."""
        self.model = None
        self._synth = None
        self._voice_state = None
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def _to_int16(wav) -> np.ndarray:
    """Float audio in [-1, 1] (any shape) to 1-D ``int16`` (clipped, not normalised)."""
    array = wav.detach().float().cpu().numpy().reshape(-1)
    return np.ascontiguousarray(np.clip(array, -1.0, 1.0) * 32767.0, dtype=np.float32).astype(
        np.int16
    )
