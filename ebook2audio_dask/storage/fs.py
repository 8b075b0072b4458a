"""fsspec helpers: every byte the project reads or writes goes through here.

Final files are *published* atomically: they appear at their final path only
once complete (local: write a temporary name in the same folder, then
``os.replace``; object stores: a single PUT / completed multipart upload,
which is atomic by nature).
"""

from __future__ import annotations

import os
import posixpath
import uuid
from typing import Any

import fsspec
from fsspec.core import url_to_fs

__all__ = ["get_fs", "join", "write_bytes_atomic", "publish_file", "stem_of", "is_local"]


def get_fs(url: str, storage_options: dict[str, Any] | None = None):
    """Return ``(filesystem, path)`` for *url* (``~`` expanded for local paths)."""
    if "://" not in url:
        url = os.path.abspath(os.path.expanduser(url))
    return url_to_fs(url, **(storage_options or {}))


def is_local(fs) -> bool:
    """True for the local filesystem."""
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def join(base: str, *parts: str) -> str:
    """Join URL/path parts with ``/`` (fsspec paths are POSIX-style)."""
    return posixpath.join(base.rstrip("/"), *parts)


def stem_of(url: str) -> str:
    """File name without its extension: ``s3://b/x/My Book.epub`` -> ``My Book``."""
    name = posixpath.basename(url.rstrip("/"))
    stem, _ = posixpath.splitext(name)
    return stem or name


def write_bytes_atomic(fs, path: str, data: bytes) -> None:
    """Write *data* to *path* so that *path* never holds a partial file."""
    if is_local(fs):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.part")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        fs.pipe_file(path, data)


def publish_file(local_path: str, url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Move a finished local file to *url* atomically (the local file is consumed)."""
    fs, path = get_fs(url, storage_options)
    if is_local(fs):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.part")
        try:
            # same folder, so the final rename is atomic even across filesystems
            import shutil

            shutil.move(local_path, tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # temp files are 0600; a published file is not
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        fs.makedirs(fs._parent(path), exist_ok=True)
        fs.put_file(local_path, path)
        os.unlink(local_path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def open_url(url: str, mode: str = "rb", storage_options: dict[str, Any] | None = None):
    """``fsspec.open`` with ``~`` expansion for local paths."""
    if "://" not in url:
        url = os.path.expanduser(url)
    return fsspec.open(url, mode, **(storage_options or {}))
