"""Model files given as local paths or fsspec URLs.

Engines that load model files (Piper voices, Coqui models) accept a local
path, a ``file://`` URL or any fsspec URL (``s3://``, ``gs://``, ``https://``).
Remote files are copied once into a local cache directory, because ONNX
Runtime and torch read local files; a copy is written under a temporary name
and renamed, so concurrent workers never see half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import EngineError, one_line
from ..logs import get_logger

__all__ = [
    "cached_folder",
    "fetch_once",
    "is_remote",
    "local_path",
    "model_cache_dir",
    "read_json_config",
]

_LOGGER = get_logger(__name__)


def model_cache_dir(kind: str) -> Path:
    """Directory where remote model files of *kind* (e.g. ``"piper-voices"``) are cached.

    ``$EBOOK2AUDIO_DASK_VOICE_CACHE`` if set (all kinds share it), else
    ``$XDG_CACHE_HOME/ebook2audio_dask/<kind>`` (``~/.cache`` by default).

    Parameters
    ----------
    kind : str
        Sub-folder name of the engine's files.

    Returns
    -------
    pathlib.Path
        The directory (not created here).
    """
    explicit = os.environ.get("EBOOK2AUDIO_DASK_VOICE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ebook2audio_dask" / kind


def is_remote(url: str, what: str = "model") -> bool:
    """True when *url* names a file that is not on the local file system.

    Raises
    ------
    EngineError
        Unknown protocol, or its fsspec implementation is not installed.
    """
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    try:
        fs, _ = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise EngineError(f"{what} cannot be opened: {url}: {one_line(exc)}") from None
    return not isinstance(fs, LocalFileSystem)


def local_path(url: str) -> Path:
    """Local path of a local path or ``file://`` URL."""
    import fsspec

    _, path = fsspec.core.url_to_fs(url)
    return Path(path)


def cached_folder(kind: str, url: str) -> Path:
    """The cache folder that holds the local copies fetched for *url*."""
    return model_cache_dir(kind) / hashlib.sha256(url.encode("utf-8")).hexdigest()[:24]


def fetch_once(
    folder: Path, sources: Sequence[tuple[str, str]], *, what: str = "model file"
) -> list[Path]:
    """Copy each ``(url, name)`` of *sources* to ``folder / name`` unless already there.

    Parameters
    ----------
    folder : pathlib.Path
        Local cache folder (see :func:`cached_folder`).
    sources : sequence of (str, str)
        fsspec URL and the local file name to give it.
    what : str
        Words for error messages (``"piper voice file"``).

    Returns
    -------
    list of pathlib.Path
        The local paths, in the order of *sources*.

    Raises
    ------
    EngineError
        A source is missing or cannot be read (nothing half-written is left).
    """
    import fsspec

    paths = []
    for source, name in sources:
        target = folder / name
        paths.append(target)
        if target.exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out, fsspec.open(source, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, target)
        except Exception as exc:  # noqa: BLE001 - remote file systems raise their own error types
            os.unlink(tmp)
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if nothing was cached in it
            if isinstance(exc, FileNotFoundError):
                raise EngineError(f"{what} not found: {source}") from None
            message = one_line(exc)
            raise EngineError(f"{what} cannot be fetched: {source}: {message}") from None
        _LOGGER.info("cached %s %s as %s", what, source, target)
    return paths


def read_json_config(source: str, what: str, required_key: str) -> dict[str, Any]:
    """Read a JSON model config (local path or fsspec URL) that must hold *required_key*.

    Parameters
    ----------
    source : str
        Path or URL of the file.
    what : str
        Words for error messages (``"piper voice config"``).
    required_key : str
        A key every config of this kind has.

    Raises
    ------
    EngineError
        Missing, unreadable, not JSON, or not this kind of config (one line).
    """
    import fsspec

    try:
        with fsspec.open(source, "rt", encoding="utf-8") as fh:
            cfg = json.load(fh)
    except FileNotFoundError:
        raise EngineError(f"{what} not found: {source}") from None
    except Exception as exc:  # noqa: BLE001 - JSON errors, and remote file systems' own error types
        message = one_line(exc)
        raise EngineError(f"{what} unreadable: {source}: {message}") from None
    if not isinstance(cfg, dict) or required_key not in cfg:
        raise EngineError(
            f"{what} unreadable: {source}: no {required_key!r} key, not a config of this kind"
        )
    return cfg
